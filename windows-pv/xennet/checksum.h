// Internet checksums of Ethernet frames for xennet's offload mapping (freestanding, no
// allocation): where the L4 header is, the pseudo-header sum netif's csum_blank expects in the
// checksum field on transmit (as Linux's CHECKSUM_PARTIAL), and completing such a partial
// checksum on receive, which NDIS cannot express (RFC 1071 sums; IPv4 with options, IPv6
// without extension headers, as Linux's skb_checksum_setup).
#pragma once

#include <cstddef>
#include <cstdint>

namespace pvio::windows::xennet {

struct L4Info {
  bool ok = false;
  bool ipv6 = false;
  std::uint8_t proto = 0;          // 6 TCP, 17 UDP
  std::uint32_t ip_offset = 0;     // start of the IP header
  std::uint32_t l4_offset = 0;     // start of the TCP/UDP header
  std::uint32_t l4_len = 0;        // L4 header + payload, from the IP lengths
  std::uint32_t csum_offset = 0;   // the checksum field, from the frame's start
};

inline constexpr std::uint8_t kIpProtoTcp = 6;
inline constexpr std::uint8_t kIpProtoUdp = 17;

// Parses `len` bytes of a frame's start (at least its headers).
L4Info find_l4(const std::uint8_t* frame, std::uint32_t len, std::uint32_t frame_len);

// One's-complement sum of bytes (not folded, not complemented), starting from `sum`.
std::uint32_t csum_add(std::uint32_t sum, const std::uint8_t* p, std::uint32_t len);
std::uint16_t csum_fold(std::uint32_t sum);
// The pseudo-header sum (addresses, protocol, L4 length), folded, not complemented: what a
// partial checksum field holds.
std::uint16_t pseudo_header_sum(const std::uint8_t* frame, const L4Info& l4);
// Completes a partial checksum in place over a contiguous frame. False when the frame is not
// TCP/UDP over IPv4/IPv6 or is truncated.
bool complete_partial_checksum(std::uint8_t* frame, std::uint32_t len, L4Info& l4);
// Recomputes an IPv4 header checksum in place.
void ipv4_header_checksum(std::uint8_t* frame, const L4Info& l4);
// True when the IPv4 header at l4.ip_offset (within `len`) has a correct checksum.
bool ipv4_header_ok(const std::uint8_t* frame, std::uint32_t len, const L4Info& l4);
// An LSO packet's headers (the first `len` bytes of a frame of `frame_len`) as the stack hands
// them over carry no usable IP length (LSOv2 IPv4: total length 0; IPv6: payload length of
// the whole packet at best): writes the lengths of the whole packet, as a netif GSO packet
// carries them. False when the headers are not IPv4/IPv6 or the packet is too long.
bool fix_lso_lengths(std::uint8_t* frame, std::uint32_t len, std::uint32_t frame_len);

}  // namespace pvio::windows::xennet
