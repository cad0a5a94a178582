// Parsing of one netif tx packet (first request, extra-info slots, NETTXF_more_data fragments)
// into a typed, validated value. The datapath copies the published slots out of the shared ring
// once into private memory and hands that copy here; the result is a ParsedTxPacket or a
// TxError in one of Linux xen-netback's two tiers: malformed packets are answered with
// NETIF_RSP_ERROR on every slot and the vif keeps running; protocol violations disable the vif.
// Nothing after parse_tx_packet() looks at guest-written bytes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "pvio/xen/io/netif.h"

namespace pvio::netback {

// Linux xen-netback's fatal_skb_slots default (FATAL_SKB_SLOTS_DEFAULT): a packet with more
// than this many slots after the first is considered malicious.
inline constexpr unsigned kFatalSlots = 20;
// Distinct extra-info types a packet may carry (GSO, mcast add, mcast del, hash).
inline constexpr unsigned kMaxExtras = netif::kExtraTypeMax - 1;
// Ring slots one packet can occupy before the parser gives up with a fatal error.
inline constexpr unsigned kMaxPacketSlots = 1 + kMaxExtras + kFatalSlots;
inline constexpr unsigned kEthHeaderLen = 14;  // ETH_HLEN

enum class TxError : std::uint8_t {
  None = 0,
  // Malformed packet: NETIF_RSP_ERROR for each slot, the vif keeps running.
  TooManySlots,        // more than XEN_NETBK_LEGACY_SLOTS_MAX slots after the first, not fatal
  FragmentTooBig,      // a fragment larger than what is left of the packet size
  TooShort,            // the first slot holds less than an Ethernet header
  // Protocol violations: the vif is disabled (error node, Closing).
  FatalSlots,          // more than kFatalSlots slots after the first
  Incomplete,          // the packet claims more slots than the frontend published
  CrossesPage,         // offset + size past the 4 KiB page
  BadExtraType,        // extra-info type 0 or past XEN_NETIF_EXTRA_TYPE_MAX
  TooManyExtras,       // more extra-info slots than there are extra types
  ZeroGsoSize,         // GSO extra with size 0
  BadGsoType,          // GSO type neither TCPv4 nor TCPv6
  Count_,
};
inline constexpr std::size_t kTxErrorCount = static_cast<std::size_t>(TxError::Count_);
const char* tx_error_name(TxError e);
constexpr bool tx_error_is_fatal(TxError e) { return e >= TxError::FatalSlots; }

// One data fragment: bytes inside one granted frame.
struct TxFragment {
  grant_ref_t gref = 0;
  std::uint16_t offset = 0;
  std::uint16_t size = 0;
};

// What a ring slot consumed by the packet gets as its response.
struct TxSlot {
  std::uint16_t id = 0;  // the request's id; meaningless for extra slots
  bool extra = false;    // extra-info slots are answered with NETIF_RSP_NULL
};

struct ParsedTxPacket {
  std::uint32_t nr_slots = 0;  // ring slots consumed, in ring order
  std::array<TxSlot, kMaxPacketSlots> slot;
  std::uint32_t nr_frags = 0;  // data fragments; frag[0] is the first slot's own data
  std::array<TxFragment, kFatalSlots + 1> frag;
  std::uint32_t length = 0;  // the packet's size (first request's size field)
  bool csum_blank = false;      // NETTXF_csum_blank: the L4 checksum is still to be computed
  bool data_validated = false;  // NETTXF_data_validated
  std::uint8_t gso_type = netif::kGsoTypeNone;  // from a GSO extra
  std::uint16_t gso_size = 0;
  bool mcast_add = false, mcast_del = false;  // control packets: no data is sent
  std::array<std::uint8_t, 6> mcast_addr{};
};

// Parses the packet that starts at slots[0]. `slots` are private copies of every request the
// frontend has published from there on (extra-info slots are reinterpreted from their bytes).
// On success and on a non-fatal error, out.nr_slots says how many slots the packet took and
// out.slot what to answer in each; on a fatal error the ring is not to be touched again.
TxError parse_tx_packet(std::span<const netif::netif_tx_request> slots, ParsedTxPacket& out);

}  // namespace pvio::netback
