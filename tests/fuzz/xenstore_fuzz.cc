// libFuzzer target: arbitrary bytes as an xs_wire stream from Dom0 or a guest, through the
// stream framer, the request parser and the store. Every reply must be a well-formed message.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string_view>

#include "pvio/xenstore/protocol.h"
#include "pvio/xenstore/server.h"

namespace {

using namespace pvio::xs;

// Checks the framing of everything the server sends.
class CheckingSink final : public Connection {
 public:
  void send(std::string_view m) override {
    if (m.size() < sizeof(xsd_sockmsg)) std::abort();
    xsd_sockmsg h;
    std::memcpy(&h, m.data(), sizeof(h));
    if (h.len != m.size() - sizeof(h) || h.len > XENSTORE_PAYLOAD_MAX) std::abort();
  }
  std::size_t pending_output() const override { return 0; }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  Server server;
  CheckingSink dom0_sink, guest_sink;
  ConnId dom0 = server.attach(0, &dom0_sink);
  ConnId guest = server.attach(5, &guest_sink);
  // Give the guest a home so its relative paths reach real nodes.
  std::string_view mk("/local/domain/5\0", 16);
  xsd_sockmsg h{static_cast<uint32_t>(MsgType::XS_MKDIR), 1, 0, static_cast<uint32_t>(mk.size())};
  server.handle(dom0, h, std::span<const char>(mk.data(), mk.size()));
  std::string_view perm("/local/domain/5\0n5\0", 19);
  h = {static_cast<uint32_t>(MsgType::XS_SET_PERMS), 2, 0, static_cast<uint32_t>(perm.size())};
  server.handle(dom0, h, std::span<const char>(perm.data(), perm.size()));

  // First byte picks the speaker; the rest is its byte stream.
  ConnId who = (data[0] & 1) ? guest : dom0;
  MessageReader reader;
  std::span<const char> in(reinterpret_cast<const char*>(data + 1), size - 1);
  while (!in.empty()) {
    auto st = reader.feed(in);
    if (st == MessageReader::Status::Corrupt) break;  // the transport drops the connection
    if (st == MessageReader::Status::NeedMore) break;
    server.handle(who, reader.header(), reader.payload());
    reader.reset();
  }
  return 0;
}
