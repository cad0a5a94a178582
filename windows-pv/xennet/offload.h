// xennet's task offloads as NDIS sees them: what the connection lets the adapter do (the
// hardware capabilities), what is enabled now, their NDIS_OFFLOAD form and the parsing of
// OID_TCP_OFFLOAD_PARAMETERS / OID_OFFLOAD_ENCAPSULATION requests (freestanding, no allocation).
#pragma once

#include <cstdint>

#include "pvio/netfront/netfront.h"
#include "pvio/wdk/ndis.h"

namespace pvio::windows::xennet {

// One flag per offload NDIS can switch on its own.
struct Offloads {
  bool ip4_csum_tx = false, ip4_csum_rx = false;
  bool tcp4_tx = false, tcp4_rx = false, udp4_tx = false, udp4_rx = false;
  bool tcp6_tx = false, tcp6_rx = false, udp6_tx = false, udp6_rx = false;
  bool lso_v1 = false, lso_v2_ip4 = false, lso_v2_ip6 = false;
};

// The largest TCP payload of one LSO packet: a netif packet is at most 65535 bytes
// (XEN_NETIF_MAX_TX_SIZE) including Ethernet (with a VLAN tag), IP and TCP headers with options.
inline constexpr ULONG kLsoMaxOffloadSize = 65535 - 18 - 60 - 60;
inline constexpr ULONG kLsoMinSegmentCount = 2;

// What the negotiated connection supports. The IPv4 header checksum is computed by xennet
// itself; L4 checksums on transmit need the backend's checksum offload (netif csum_blank),
// IPv6 ones feature-ipv6-csum-offload; receive validation is netif's data_validated /
// csum_blank; LSO needs feature-gso-tcpv4 / -tcpv6.
Offloads hardware_offloads(const netfront::Negotiated& n);

// `on` as an NDIS_OFFLOAD (revision 2); `ip4` / `ip6` false (encapsulation switched off by
// OID_OFFLOAD_ENCAPSULATION) report that IP version's offloads as off.
void to_ndis_offload(const Offloads& on, bool ip4, bool ip6, NDIS_OFFLOAD& out);

// OID_TCP_OFFLOAD_PARAMETERS: validates `buf` (its own copy) and computes the new enabled set
// from `cur`; nothing changes unless NDIS_STATUS_SUCCESS. INVALID_LENGTH (needed set) for a
// short buffer, INVALID_DATA for a bad header or an undefined value, NOT_SUPPORTED for
// enabling an offload `hw` lacks (IPsec, connection offload and RSC are never offered).
NDIS_STATUS parse_offload_parameters(const void* buf, ULONG len, const Offloads& hw,
                                     const Offloads& cur, Offloads& next, ULONG& read,
                                     ULONG& needed);

// OID_OFFLOAD_ENCAPSULATION: only IEEE 802.3 framing exists here. INVALID_PARAMETER for another
// type switched on (the documented answer when no offload supports it).
NDIS_STATUS parse_offload_encapsulation(const void* buf, ULONG len, bool& ip4, bool& ip6,
                                        ULONG& read, ULONG& needed);

}  // namespace pvio::windows::xennet
