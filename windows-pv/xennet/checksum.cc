// Internet checksums for xennet's offload mapping (see checksum.h).
#include "checksum.h"

namespace pvio::windows::xennet {

namespace {
std::uint16_t be16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>(p[0] << 8 | p[1]);
}
constexpr std::uint16_t kEthIpv4 = 0x0800;
constexpr std::uint16_t kEthIpv6 = 0x86DD;
constexpr std::uint16_t kEthVlan = 0x8100;
}  // namespace

L4Info find_l4(const std::uint8_t* f, std::uint32_t len, std::uint32_t frame_len) {
  L4Info r;
  std::uint32_t off = 12;
  if (len < off + 2) return r;
  std::uint16_t type = be16(f + off);
  off += 2;
  if (type == kEthVlan) {
    if (len < off + 4) return r;
    type = be16(f + off + 2);
    off += 4;
  }
  r.ip_offset = off;
  if (type == kEthIpv4) {
    if (len < off + 20 || (f[off] >> 4) != 4) return r;
    const std::uint32_t ihl = (f[off] & 0x0F) * 4u;
    const std::uint32_t total = be16(f + off + 2);
    if (ihl < 20 || len < off + ihl || total < ihl || off + total > frame_len) return r;
    // A fragment carries no complete L4 segment.
    if ((be16(f + off + 6) & 0x3FFF) != 0) return r;
    r.proto = f[off + 9];
    r.l4_offset = off + ihl;
    r.l4_len = total - ihl;
  } else if (type == kEthIpv6) {
    if (len < off + 40 || (f[off] >> 4) != 6) return r;
    r.ipv6 = true;
    r.proto = f[off + 6];
    r.l4_offset = off + 40;
    r.l4_len = be16(f + off + 4);
    if (r.l4_offset + r.l4_len > frame_len) return r;
  } else {
    return r;
  }
  if (r.proto == kIpProtoTcp) {
    r.csum_offset = r.l4_offset + 16;
    if (r.l4_len < 20) return r;
  } else if (r.proto == kIpProtoUdp) {
    r.csum_offset = r.l4_offset + 6;
    if (r.l4_len < 8) return r;
  } else {
    return r;
  }
  r.ok = r.csum_offset + 2 <= len;
  return r;
}

std::uint32_t csum_add(std::uint32_t sum, const std::uint8_t* p, std::uint32_t len) {
  std::uint64_t s = sum;
  std::uint32_t i = 0;
  for (; i + 1 < len; i += 2) s += static_cast<std::uint32_t>(p[i] << 8 | p[i + 1]);
  if (i < len) s += static_cast<std::uint32_t>(p[i] << 8);
  while (s >> 32) s = (s & 0xFFFFFFFFu) + (s >> 32);
  return static_cast<std::uint32_t>(s);
}

std::uint16_t csum_fold(std::uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xFFFF) + (sum >> 16);
  return static_cast<std::uint16_t>(sum);
}

std::uint16_t pseudo_header_sum(const std::uint8_t* f, const L4Info& l4) {
  std::uint32_t s = 0;
  if (l4.ipv6) {
    s = csum_add(s, f + l4.ip_offset + 8, 32);  // source and destination addresses
  } else {
    s = csum_add(s, f + l4.ip_offset + 12, 8);
  }
  s += l4.proto;
  s += l4.l4_len;
  return csum_fold(s);
}

bool complete_partial_checksum(std::uint8_t* f, std::uint32_t len, L4Info& l4) {
  l4 = find_l4(f, len, len);
  if (!l4.ok || l4.l4_offset + l4.l4_len > len) return false;
  // The field holds the pseudo-header sum: summing the segment over it gives the full sum.
  std::uint16_t c = static_cast<std::uint16_t>(~csum_fold(csum_add(0, f + l4.l4_offset, l4.l4_len)));
  if (c == 0 && l4.proto == kIpProtoUdp) c = 0xFFFF;  // RFC 768: 0 means "no checksum"
  f[l4.csum_offset] = static_cast<std::uint8_t>(c >> 8);
  f[l4.csum_offset + 1] = static_cast<std::uint8_t>(c);
  return true;
}

void ipv4_header_checksum(std::uint8_t* f, const L4Info& l4) {
  std::uint8_t* ip = f + l4.ip_offset;
  const std::uint32_t ihl = (ip[0] & 0x0F) * 4u;
  ip[10] = ip[11] = 0;
  const std::uint16_t c = static_cast<std::uint16_t>(~csum_fold(csum_add(0, ip, ihl)));
  ip[10] = static_cast<std::uint8_t>(c >> 8);
  ip[11] = static_cast<std::uint8_t>(c);
}

bool ipv4_header_ok(const std::uint8_t* f, std::uint32_t len, const L4Info& l4) {
  const std::uint8_t* ip = f + l4.ip_offset;
  if (l4.ip_offset + 20 > len) return false;
  const std::uint32_t ihl = (ip[0] & 0x0F) * 4u;
  if (ihl < 20 || l4.ip_offset + ihl > len) return false;
  return csum_fold(csum_add(0, ip, ihl)) == 0xFFFF;
}

bool fix_lso_lengths(std::uint8_t* f, std::uint32_t len, std::uint32_t frame_len) {
  std::uint32_t off = 12;
  if (len < off + 2) return false;
  std::uint16_t type = be16(f + off);
  off += 2;
  if (type == kEthVlan) {
    if (len < off + 4) return false;
    type = be16(f + off + 2);
    off += 4;
  }
  if (frame_len < off) return false;
  const std::uint32_t ip_len = frame_len - off;
  if (type == kEthIpv4) {
    if (len < off + 20 || ip_len > 0xFFFF) return false;
    f[off + 2] = static_cast<std::uint8_t>(ip_len >> 8);
    f[off + 3] = static_cast<std::uint8_t>(ip_len);
    return true;
  }
  if (type == kEthIpv6) {
    if (len < off + 40 || ip_len < 40 || ip_len - 40 > 0xFFFF) return false;
    f[off + 4] = static_cast<std::uint8_t>((ip_len - 40) >> 8);
    f[off + 5] = static_cast<std::uint8_t>(ip_len - 40);
    return true;
  }
  return false;
}

}  // namespace pvio::windows::xennet
