// xennet's task offloads in NDIS's terms (see offload.h).
#include "offload.h"

#include <cstring>

namespace pvio::windows::xennet {

Offloads hardware_offloads(const netfront::Negotiated& n) {
  Offloads o;
  o.ip4_csum_tx = o.ip4_csum_rx = true;
  o.tcp4_rx = o.udp4_rx = o.tcp6_rx = o.udp6_rx = true;
  o.tcp4_tx = o.udp4_tx = n.csum;
  o.tcp6_tx = o.udp6_tx = n.ipv6_csum;
  // netfront's GSO packets are csum_blank: no LSO without checksum offload.
  o.lso_v1 = o.lso_v2_ip4 = n.gso_tcpv4 && n.csum;
  o.lso_v2_ip6 = n.gso_tcpv6 && n.ipv6_csum;
  return o;
}

void to_ndis_offload(const Offloads& on, bool ip4, bool ip6, NDIS_OFFLOAD& out) {
  std::memset(&out, 0, sizeof out);
  out.Header.Type = NDIS_OBJECT_TYPE_OFFLOAD;
  out.Header.Revision = NDIS_OFFLOAD_REVISION_2;
  out.Header.Size = NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_2;
  constexpr ULONG k8023 = NDIS_ENCAPSULATION_IEEE_802_3;
  auto& c = out.Checksum;
  // find_l4 parses IPv4 options and TCP headers of any length, no IPv6 extension headers.
  c.IPv4Transmit.IpOptionsSupported = c.IPv4Transmit.TcpOptionsSupported = NDIS_OFFLOAD_SUPPORTED;
  c.IPv4Transmit.TcpChecksum = ip4 && on.tcp4_tx;
  c.IPv4Transmit.UdpChecksum = ip4 && on.udp4_tx;
  c.IPv4Transmit.IpChecksum = ip4 && on.ip4_csum_tx;
  c.IPv4Receive.IpOptionsSupported = c.IPv4Receive.TcpOptionsSupported = NDIS_OFFLOAD_SUPPORTED;
  c.IPv4Receive.TcpChecksum = ip4 && on.tcp4_rx;
  c.IPv4Receive.UdpChecksum = ip4 && on.udp4_rx;
  c.IPv4Receive.IpChecksum = ip4 && on.ip4_csum_rx;
  c.IPv6Transmit.TcpOptionsSupported = NDIS_OFFLOAD_SUPPORTED;
  c.IPv6Transmit.TcpChecksum = ip6 && on.tcp6_tx;
  c.IPv6Transmit.UdpChecksum = ip6 && on.udp6_tx;
  c.IPv6Receive.TcpOptionsSupported = NDIS_OFFLOAD_SUPPORTED;
  c.IPv6Receive.TcpChecksum = ip6 && on.tcp6_rx;
  c.IPv6Receive.UdpChecksum = ip6 && on.udp6_rx;
  if (c.IPv4Transmit.TcpChecksum || c.IPv4Transmit.UdpChecksum || c.IPv4Transmit.IpChecksum)
    c.IPv4Transmit.Encapsulation = k8023;
  if (c.IPv4Receive.TcpChecksum || c.IPv4Receive.UdpChecksum || c.IPv4Receive.IpChecksum)
    c.IPv4Receive.Encapsulation = k8023;
  if (c.IPv6Transmit.TcpChecksum || c.IPv6Transmit.UdpChecksum) c.IPv6Transmit.Encapsulation = k8023;
  if (c.IPv6Receive.TcpChecksum || c.IPv6Receive.UdpChecksum) c.IPv6Receive.Encapsulation = k8023;
  if (ip4 && on.lso_v1) {
    out.LsoV1.IPv4.Encapsulation = k8023;
    out.LsoV1.IPv4.MaxOffLoadSize = kLsoMaxOffloadSize;
    out.LsoV1.IPv4.MinSegmentCount = kLsoMinSegmentCount;
    out.LsoV1.IPv4.TcpOptions = out.LsoV1.IPv4.IpOptions = NDIS_OFFLOAD_SUPPORTED;
  }
  if (ip4 && on.lso_v2_ip4) {
    out.LsoV2.IPv4.Encapsulation = k8023;
    out.LsoV2.IPv4.MaxOffLoadSize = kLsoMaxOffloadSize;
    out.LsoV2.IPv4.MinSegmentCount = kLsoMinSegmentCount;
  }
  if (ip6 && on.lso_v2_ip6) {
    out.LsoV2.IPv6.Encapsulation = k8023;
    out.LsoV2.IPv6.MaxOffLoadSize = kLsoMaxOffloadSize;
    out.LsoV2.IPv6.MinSegmentCount = kLsoMinSegmentCount;
    out.LsoV2.IPv6.TcpOptionsSupported = NDIS_OFFLOAD_SUPPORTED;
  }
}

namespace {

// A checksum setting (NDIS_OFFLOAD_PARAMETERS_*): false for an undefined value.
bool apply_csum(UCHAR v, bool hw_tx, bool hw_rx, bool& tx, bool& rx, bool& unsupported) {
  switch (v) {
    case NDIS_OFFLOAD_PARAMETERS_NO_CHANGE: return true;
    case NDIS_OFFLOAD_PARAMETERS_TX_RX_DISABLED: tx = rx = false; return true;
    case NDIS_OFFLOAD_PARAMETERS_TX_ENABLED_RX_DISABLED: tx = true; rx = false; break;
    case NDIS_OFFLOAD_PARAMETERS_RX_ENABLED_TX_DISABLED: tx = false; rx = true; break;
    case NDIS_OFFLOAD_PARAMETERS_TX_RX_ENABLED: tx = rx = true; break;
    default: return false;
  }
  if ((tx && !hw_tx) || (rx && !hw_rx)) unsupported = true;
  return true;
}

// An on/off setting (LSO: 1 off, 2 on): false for an undefined value.
bool apply_switch(UCHAR v, bool hw, bool& on, bool& unsupported) {
  if (v == 0) return true;
  if (v == 1) {
    on = false;
    return true;
  }
  if (v != 2) return false;
  on = true;
  if (!hw) unsupported = true;
  return true;
}

// A setting of an offload xennet never offers: `max` is its highest defined value.
bool never_on(UCHAR v, UCHAR max, bool& unsupported) {
  if (v > max) return false;
  if (v > 1) unsupported = true;
  return true;
}

}  // namespace

NDIS_STATUS parse_offload_parameters(const void* buf, ULONG len, const Offloads& hw,
                                     const Offloads& cur, Offloads& next, ULONG& read,
                                     ULONG& needed) {
  read = 0;
  needed = 0;
  if (buf == nullptr || len < NDIS_SIZEOF_OFFLOAD_PARAMETERS_REVISION_1) {
    needed = NDIS_SIZEOF_OFFLOAD_PARAMETERS_REVISION_1;
    return NDIS_STATUS_INVALID_LENGTH;
  }
  // One copy of what the caller handed in; later revisions' extra members are not ours.
  NDIS_OFFLOAD_PARAMETERS p;
  std::memset(&p, 0, sizeof p);
  std::memcpy(&p, buf, len < sizeof p ? len : sizeof p);
  const USHORT need = p.Header.Revision >= NDIS_OFFLOAD_PARAMETERS_REVISION_3
                          ? NDIS_SIZEOF_OFFLOAD_PARAMETERS_REVISION_3
                      : p.Header.Revision == NDIS_OFFLOAD_PARAMETERS_REVISION_2
                          ? NDIS_SIZEOF_OFFLOAD_PARAMETERS_REVISION_2
                          : NDIS_SIZEOF_OFFLOAD_PARAMETERS_REVISION_1;
  if (p.Header.Type != NDIS_OBJECT_TYPE_DEFAULT || p.Header.Revision < NDIS_OFFLOAD_PARAMETERS_REVISION_1 ||
      p.Header.Size < need)
    return NDIS_STATUS_INVALID_DATA;
  if (len < p.Header.Size) {
    needed = p.Header.Size;
    return NDIS_STATUS_INVALID_LENGTH;
  }
  if (p.Header.Revision < NDIS_OFFLOAD_PARAMETERS_REVISION_2) p.IPsecV2 = p.IPsecV2IPv4 = 0;
  if (p.Header.Revision < NDIS_OFFLOAD_PARAMETERS_REVISION_3)
    p.RscIPv4 = p.RscIPv6 = p.EncapsulatedPacketTaskOffload = p.EncapsulationTypes = 0;

  Offloads n = cur;
  bool unsupported = false;
  const bool ok =
      apply_csum(p.IPv4Checksum, hw.ip4_csum_tx, hw.ip4_csum_rx, n.ip4_csum_tx, n.ip4_csum_rx, unsupported) &&
      apply_csum(p.TCPIPv4Checksum, hw.tcp4_tx, hw.tcp4_rx, n.tcp4_tx, n.tcp4_rx, unsupported) &&
      apply_csum(p.UDPIPv4Checksum, hw.udp4_tx, hw.udp4_rx, n.udp4_tx, n.udp4_rx, unsupported) &&
      apply_csum(p.TCPIPv6Checksum, hw.tcp6_tx, hw.tcp6_rx, n.tcp6_tx, n.tcp6_rx, unsupported) &&
      apply_csum(p.UDPIPv6Checksum, hw.udp6_tx, hw.udp6_rx, n.udp6_tx, n.udp6_rx, unsupported) &&
      apply_switch(p.LsoV1, hw.lso_v1, n.lso_v1, unsupported) &&
      apply_switch(p.LsoV2IPv4, hw.lso_v2_ip4, n.lso_v2_ip4, unsupported) &&
      apply_switch(p.LsoV2IPv6, hw.lso_v2_ip6, n.lso_v2_ip6, unsupported) &&
      never_on(p.IPsecV1, NDIS_OFFLOAD_PARAMETERS_IPSECV1_AH_AND_ESP_ENABLED, unsupported) &&
      never_on(p.TcpConnectionIPv4, NDIS_OFFLOAD_PARAMETERS_CONNECTION_OFFLOAD_ENABLED, unsupported) &&
      never_on(p.TcpConnectionIPv6, NDIS_OFFLOAD_PARAMETERS_CONNECTION_OFFLOAD_ENABLED, unsupported) &&
      never_on(p.IPsecV2, NDIS_OFFLOAD_PARAMETERS_IPSECV2_AH_AND_ESP_ENABLED, unsupported) &&
      never_on(p.IPsecV2IPv4, NDIS_OFFLOAD_PARAMETERS_IPSECV2_AH_AND_ESP_ENABLED, unsupported) &&
      never_on(p.RscIPv4, NDIS_OFFLOAD_PARAMETERS_RSC_ENABLED, unsupported) &&
      never_on(p.RscIPv6, NDIS_OFFLOAD_PARAMETERS_RSC_ENABLED, unsupported) &&
      never_on(p.EncapsulatedPacketTaskOffload, 2, unsupported);
  if (!ok) return NDIS_STATUS_INVALID_DATA;
  if (unsupported) return NDIS_STATUS_NOT_SUPPORTED;
  next = n;
  read = p.Header.Size;
  return NDIS_STATUS_SUCCESS;
}

NDIS_STATUS parse_offload_encapsulation(const void* buf, ULONG len, bool& ip4, bool& ip6,
                                        ULONG& read, ULONG& needed) {
  read = 0;
  needed = 0;
  if (buf == nullptr || len < NDIS_SIZEOF_OFFLOAD_ENCAPSULATION_REVISION_1) {
    needed = NDIS_SIZEOF_OFFLOAD_ENCAPSULATION_REVISION_1;
    return NDIS_STATUS_INVALID_LENGTH;
  }
  NDIS_OFFLOAD_ENCAPSULATION e;
  std::memcpy(&e, buf, sizeof e);
  if (e.Header.Type != NDIS_OBJECT_TYPE_OFFLOAD_ENCAPSULATION ||
      e.Header.Revision < NDIS_OFFLOAD_ENCAPSULATION_REVISION_1 ||
      e.Header.Size < NDIS_SIZEOF_OFFLOAD_ENCAPSULATION_REVISION_1)
    return NDIS_STATUS_INVALID_DATA;
  bool n4 = ip4, n6 = ip6;
  struct Side {
    ULONG enabled, type;
    bool& out;
  } sides[] = {{e.IPv4.Enabled, e.IPv4.EncapsulationType, n4},
               {e.IPv6.Enabled, e.IPv6.EncapsulationType, n6}};
  for (Side& s : sides) {
    if (s.enabled == NDIS_OFFLOAD_SET_NO_CHANGE) continue;
    if (s.enabled == NDIS_OFFLOAD_SET_OFF) {
      s.out = false;
    } else if (s.enabled == NDIS_OFFLOAD_SET_ON) {
      if (s.type != NDIS_ENCAPSULATION_IEEE_802_3) return NDIS_STATUS_INVALID_PARAMETER;
      s.out = true;
    } else {
      return NDIS_STATUS_INVALID_DATA;
    }
  }
  ip4 = n4;
  ip6 = n6;
  read = NDIS_SIZEOF_OFFLOAD_ENCAPSULATION_REVISION_1;
  return NDIS_STATUS_SUCCESS;
}

}  // namespace pvio::windows::xennet
