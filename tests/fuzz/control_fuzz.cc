// libFuzzer target: the domain control protocol parser. The first input byte chooses how many
// fds "arrived" with the message; the rest is the datagram.
#include <cstddef>
#include <cstdint>
#include <span>

#include "pvio/control/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t nr_fds = data[0] % 4;
  const pvio::control::Parsed p = pvio::control::parse_message(std::span(data + 1, size - 1), nr_fds);
  // A message that parses must be one of the fixed sizes and carry a known type.
  if (p.error == pvio::control::ParseError::None) {
    if (size - 1 < sizeof(pvio::control::MsgHeader) || size - 1 > pvio::control::kMaxMessageSize)
      __builtin_trap();
  }
  (void)pvio::control::parse_error_status(p.error);
  return 0;
}
