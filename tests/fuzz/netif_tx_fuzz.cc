// libFuzzer target over netback tx packet parsing: any run of published slots (requests and
// extra-info slots alike) must give a typed result without reading past the slots it was
// given, and a parsed packet must satisfy every rule the datapath relies on.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "pvio/netback/tx_request.h"

namespace {

using namespace pvio;
using namespace pvio::netback;

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::size_t n = size / sizeof(netif::netif_tx_request);
  // Exactly as many slots as the input holds, on the heap, so ASan sees any read past them.
  std::vector<netif::netif_tx_request> slots(n);
  if (n != 0) std::memcpy(slots.data(), data, n * sizeof(netif::netif_tx_request));
  ParsedTxPacket p;
  const TxError e = parse_tx_packet(slots, p);
  check(static_cast<std::size_t>(e) < kTxErrorCount);
  if (tx_error_is_fatal(e)) return 0;
  // Malformed or good: the slots to answer are consumed ones, in ring order.
  check(p.nr_slots >= 1 && p.nr_slots <= n && p.nr_slots <= kMaxPacketSlots);
  check(!p.slot[0].extra);
  if (e != TxError::None || p.mcast_add || p.mcast_del) return 0;
  // A good packet: fragments inside their pages, sizes adding up to the packet's, a first
  // fragment that holds the Ethernet header, a valid GSO description if any.
  check(p.nr_frags >= 1 && p.nr_frags <= p.nr_slots);
  std::uint32_t total = 0;
  for (std::uint32_t i = 0; i < p.nr_frags; ++i) {
    check(std::uint32_t{p.frag[i].offset} + p.frag[i].size <= 4096);
    total += p.frag[i].size;
  }
  check(total == p.length);
  check(p.frag[0].size >= kEthHeaderLen);
  if (p.gso_type != netif::kGsoTypeNone) {
    check(p.gso_type == netif::kGsoTypeTcpv4 || p.gso_type == netif::kGsoTypeTcpv6);
    check(p.gso_size != 0);
  }
  return 0;
}
