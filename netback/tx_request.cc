// parse_tx_packet(): the checks of Linux xen-netback's xenvif_tx_build_gops, xenvif_get_extras,
// xenvif_count_requests and xenvif_set_skb_gso, in their order, on private copies of the slots.
#include "pvio/netback/tx_request.h"

#include <cstring>

namespace pvio::netback {
namespace {

constexpr std::uint32_t kPageSize = 4096;

}  // namespace

const char* tx_error_name(TxError e) {
  switch (e) {
    case TxError::None: return "none";
    case TxError::TooManySlots: return "too-many-slots";
    case TxError::FragmentTooBig: return "fragment-too-big";
    case TxError::TooShort: return "too-short";
    case TxError::FatalSlots: return "fatal-slot-count";
    case TxError::Incomplete: return "incomplete";
    case TxError::CrossesPage: return "crosses-page";
    case TxError::BadExtraType: return "bad-extra-type";
    case TxError::TooManyExtras: return "too-many-extras";
    case TxError::ZeroGsoSize: return "zero-gso-size";
    case TxError::BadGsoType: return "bad-gso-type";
    case TxError::Count_: break;
  }
  return "unknown";
}

TxError parse_tx_packet(std::span<const netif::netif_tx_request> slots, ParsedTxPacket& out) {
  out.nr_slots = 0;
  out.nr_frags = 0;
  out.gso_type = netif::kGsoTypeNone;
  out.gso_size = 0;
  out.mcast_add = out.mcast_del = false;
  if (slots.empty()) return TxError::Incomplete;

  const netif::netif_tx_request first = slots[0];
  out.slot[out.nr_slots++] = TxSlot{first.id, false};
  out.length = first.size;
  out.csum_blank = (first.flags & netif::kTxfCsumBlank) != 0;
  out.data_validated = (first.flags & netif::kTxfDataValidated) != 0;

  // Extra-info slots follow the first request while XEN_NETIF_EXTRA_FLAG_MORE is set
  // (netif.h "extra info"); each occupies a whole slot and is answered NETIF_RSP_NULL.
  bool have_gso = false;
  netif::netif_extra_info gso{};
  if (first.flags & netif::kTxfExtraInfo) {
    std::uint8_t more = netif::kExtraFlagMore;
    unsigned n = 0;
    while (more & netif::kExtraFlagMore) {
      if (out.nr_slots >= slots.size()) return TxError::Incomplete;  // "Missing extra info"
      if (n++ == kMaxExtras) return TxError::TooManyExtras;
      netif::netif_extra_info extra;
      static_assert(sizeof(extra) <= sizeof(netif::netif_tx_request));
      std::memcpy(&extra, &slots[out.nr_slots], sizeof(extra));
      out.slot[out.nr_slots++] = TxSlot{0, true};
      if (extra.type == netif::kExtraTypeNone || extra.type >= netif::kExtraTypeMax)
        return TxError::BadExtraType;
      // A later extra of the same type replaces an earlier one, as in xenvif_get_extras.
      switch (extra.type) {
        case netif::kExtraTypeGso: have_gso = true; gso = extra; break;
        case netif::kExtraTypeMcastAdd:
          out.mcast_add = true;
          std::memcpy(out.mcast_addr.data(), extra.u.mcast.addr, 6);
          break;
        case netif::kExtraTypeMcastDel:
          out.mcast_del = true;
          std::memcpy(out.mcast_addr.data(), extra.u.mcast.addr, 6);
          break;
        default: break;  // hash: accepted, not used
      }
      more = extra.flags;
    }
  }
  // A multicast control request carries no packet: it is answered on its own, and what follows
  // it on the ring is the next packet (xenvif_tx_build_gops handles it before counting slots).
  if (out.mcast_add || out.mcast_del) return TxError::None;

  // Fragments (xenvif_count_requests): first.size is the whole packet; each further slot's size
  // is taken off it, so what remains is the first slot's own data.
  std::uint32_t first_size = first.size;
  TxError drop = TxError::None;
  unsigned frags = 0;
  bool more_data = (first.flags & netif::kTxfMoreData) != 0;
  // `frags` counts the slots after the first, as `slots` does in xenvif_count_requests.
  while (more_data) {
    if (out.nr_slots >= slots.size()) return TxError::Incomplete;
    if (frags >= kFatalSlots) return TxError::FatalSlots;
    if (drop == TxError::None && frags >= netif::kNetbkLegacySlotsMax) drop = TxError::TooManySlots;
    const netif::netif_tx_request txp = slots[out.nr_slots];
    out.slot[out.nr_slots++] = TxSlot{txp.id, false};
    ++frags;
    if (drop == TxError::None && txp.size > first_size) drop = TxError::FragmentTooBig;
    if (std::uint32_t{txp.offset} + txp.size > kPageSize) return TxError::CrossesPage;
    if (drop == TxError::None) {
      first_size -= txp.size;
      out.frag[1 + out.nr_frags++] = TxFragment{txp.gref, txp.offset, txp.size};
    }
    more_data = (txp.flags & netif::kTxfMoreData) != 0;
  }
  if (drop != TxError::None) {
    out.nr_frags = 0;
    return drop;
  }
  if (first_size < kEthHeaderLen) {
    out.nr_frags = 0;
    return TxError::TooShort;
  }
  if (std::uint32_t{first.offset} + first_size > kPageSize) return TxError::CrossesPage;
  out.frag[0] = TxFragment{first.gref, first.offset, static_cast<std::uint16_t>(first_size)};
  ++out.nr_frags;

  if (have_gso) {
    if (gso.u.gso.size == 0) return TxError::ZeroGsoSize;
    if (gso.u.gso.type != netif::kGsoTypeTcpv4 && gso.u.gso.type != netif::kGsoTypeTcpv6)
      return TxError::BadGsoType;
    out.gso_type = gso.u.gso.type;
    out.gso_size = gso.u.gso.size;
  }
  return TxError::None;
}

}  // namespace pvio::netback
