// EAL start-up, the packet pool, and the software checksum helpers the datapath needs where a
// destination cannot take a partial checksum.
#include "pvio/netback/dpdk.h"

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_tcp.h>
#include <rte_udp.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace pvio::netback {
namespace {

std::once_flag g_once;
rte_mempool* g_pool = nullptr;
std::string g_error;

void init_once(const DpdkOptions& o) {
  cpu_set_t saved;
  CPU_ZERO(&saved);
  const bool have_affinity = sched_getaffinity(0, sizeof(saved), &saved) == 0;
  // --no-huge: anonymous memory; --no-shconf: no runtime files; the file prefix keeps two
  // services (or a service and a test) from meeting in /var/run/dpdk anyway.
  std::vector<std::string> args = {"pvio-netback",
                                   "--no-huge",
                                   "--no-pci",
                                   "--no-shconf",
                                   "-m",
                                   std::to_string(o.memory_mb),
                                   "--file-prefix=pvio-netback-" + std::to_string(::getpid()),
                                   "--log-level=*:" + o.log_level,
                                   "-l",
                                   "0"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  if (rte_eal_init(static_cast<int>(argv.size()), argv.data()) < 0) {
    g_error = "rte_eal_init failed: " + std::string(rte_strerror(rte_errno));
    return;
  }
  if (have_affinity) sched_setaffinity(0, sizeof(saved), &saved);
  g_pool = rte_pktmbuf_pool_create("pvio_netback_pkts", o.nr_mbufs, 256, 0,
                                   RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
  if (g_pool == nullptr) g_error = "cannot create the packet pool: " + std::string(rte_strerror(rte_errno));
}

}  // namespace

void dpdk_init(const DpdkOptions& options) {
  std::call_once(g_once, init_once, options);
  if (g_pool == nullptr) throw std::runtime_error(g_error);
}

rte_mempool* packet_pool() { return g_pool; }

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
}

bool mark_checksum_pending(rte_mbuf* m) {
  const std::uint32_t len = rte_pktmbuf_data_len(m);
  if (len < sizeof(rte_ether_hdr)) return false;
  const auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
  std::uint32_t l3 = sizeof(rte_ether_hdr);
  std::uint8_t proto = 0;
  std::uint32_t l3_len = 0;
  std::uint64_t ip_flag = 0;
  if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) {
    if (len < l3 + sizeof(rte_ipv4_hdr)) return false;
    const auto* ip = rte_pktmbuf_mtod_offset(m, const rte_ipv4_hdr*, l3);
    l3_len = rte_ipv4_hdr_len(ip);
    if (l3_len < sizeof(rte_ipv4_hdr)) return false;
    // A fragment's L4 header is not in this frame.
    if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK))
      return false;
    proto = ip->next_proto_id;
    ip_flag = RTE_MBUF_F_TX_IPV4;
  } else if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6)) {
    if (len < l3 + sizeof(rte_ipv6_hdr)) return false;
    const auto* ip = rte_pktmbuf_mtod_offset(m, const rte_ipv6_hdr*, l3);
    l3_len = sizeof(rte_ipv6_hdr);  // extension headers are not offloaded
    proto = ip->proto;
    ip_flag = RTE_MBUF_F_TX_IPV6;
  } else {
    return false;
  }
  std::uint64_t l4_flag = 0;
  std::uint32_t l4_min = 0;
  if (proto == IPPROTO_TCP) {
    l4_flag = RTE_MBUF_F_TX_TCP_CKSUM;
    l4_min = sizeof(rte_tcp_hdr);
  } else if (proto == IPPROTO_UDP) {
    l4_flag = RTE_MBUF_F_TX_UDP_CKSUM;
    l4_min = sizeof(rte_udp_hdr);
  } else {
    return false;
  }
  if (len < l3 + l3_len + l4_min) return false;
  m->l2_len = l3;
  m->l3_len = l3_len;
  m->ol_flags |= ip_flag | l4_flag;
  return true;
}

bool complete_l4_checksum(rte_mbuf* m) {
  const std::uint64_t l4 = m->ol_flags & RTE_MBUF_F_TX_L4_MASK;
  if (l4 == 0) return true;
  const std::uint32_t l4_off = m->l2_len + m->l3_len;
  const std::uint32_t field = l4 == RTE_MBUF_F_TX_TCP_CKSUM ? offsetof(rte_tcp_hdr, cksum)
                                                            : offsetof(rte_udp_hdr, dgram_cksum);
  if (rte_pktmbuf_data_len(m) < l4_off + field + 2) return false;
  auto* sum = rte_pktmbuf_mtod_offset(m, std::uint16_t*, l4_off + field);
  *sum = 0;
  std::uint16_t v;
  if (m->ol_flags & RTE_MBUF_F_TX_IPV4) {
    v = rte_ipv4_udptcp_cksum_mbuf(m, rte_pktmbuf_mtod_offset(m, const rte_ipv4_hdr*, m->l2_len),
                                   static_cast<std::uint16_t>(l4_off));
  } else {
    v = rte_ipv6_udptcp_cksum_mbuf(m, rte_pktmbuf_mtod_offset(m, const rte_ipv6_hdr*, m->l2_len),
                                   static_cast<std::uint16_t>(l4_off));
  }
  *sum = v;
  m->ol_flags &= ~(RTE_MBUF_F_TX_L4_MASK | RTE_MBUF_F_TX_IPV4 | RTE_MBUF_F_TX_IPV6);
  m->ol_flags |= RTE_MBUF_F_RX_L4_CKSUM_GOOD;
  return true;
}

bool mark_tcp_segmentation(rte_mbuf* m, bool v6, std::uint16_t mss) {
  const std::uint64_t want_ip = v6 ? RTE_MBUF_F_TX_IPV6 : RTE_MBUF_F_TX_IPV4;
  if ((m->ol_flags & want_ip) == 0 || (m->ol_flags & RTE_MBUF_F_TX_L4_MASK) != RTE_MBUF_F_TX_TCP_CKSUM)
    return false;
  const auto* tcp = rte_pktmbuf_mtod_offset(m, const rte_tcp_hdr*, m->l2_len + m->l3_len);
  const std::uint32_t l4_len = (tcp->data_off >> 4) * 4u;
  if (l4_len < sizeof(rte_tcp_hdr) || m->l2_len + m->l3_len + l4_len > rte_pktmbuf_data_len(m))
    return false;
  m->l4_len = l4_len;
  m->tso_segsz = mss;
  m->ol_flags |= RTE_MBUF_F_TX_TCP_SEG;
  return true;
}

int segment_tcp(const rte_mbuf* m, rte_mbuf** out, unsigned max) {
  const std::uint32_t hdr = m->l2_len + m->l3_len + m->l4_len;
  const std::uint32_t mss = m->tso_segsz;
  if (mss == 0 || hdr > rte_pktmbuf_data_len(m) || m->pkt_len < hdr) return -1;
  const std::uint32_t payload = m->pkt_len - hdr;
  const std::uint32_t nseg = payload == 0 ? 1 : (payload + mss - 1) / mss;
  const std::uint32_t room = rte_pktmbuf_data_room_size(packet_pool()) - RTE_PKTMBUF_HEADROOM;
  if (nseg > max || hdr + mss > room) return -1;  // one mbuf per segment
  const bool v4 = (m->ol_flags & RTE_MBUF_F_TX_IPV4) != 0;
  const auto* tcp0 = rte_pktmbuf_mtod_offset(m, const rte_tcp_hdr*, m->l2_len + m->l3_len);
  const std::uint32_t seq0 = rte_be_to_cpu_32(tcp0->sent_seq);
  const std::uint8_t flags0 = tcp0->tcp_flags;
  std::uint16_t id0 = 0;
  if (v4) id0 = rte_be_to_cpu_16(rte_pktmbuf_mtod_offset(m, const rte_ipv4_hdr*, m->l2_len)->packet_id);
  if (rte_pktmbuf_alloc_bulk(packet_pool(), out, nseg) != 0) return -1;
  for (std::uint32_t i = 0; i < nseg; ++i) {
    const std::uint32_t off = i * mss;
    const std::uint32_t len = payload == 0 ? 0 : std::min(mss, payload - off);
    rte_mbuf* s = out[i];
    auto* d = reinterpret_cast<std::uint8_t*>(rte_pktmbuf_append(s, static_cast<std::uint16_t>(hdr + len)));
    std::memcpy(d, rte_pktmbuf_mtod(m, const std::uint8_t*), hdr);
    if (len != 0) {
      // Copies into d + hdr when the range spans segments, else points into m.
      const void* src = rte_pktmbuf_read(m, hdr + off, len, d + hdr);
      if (src != d + hdr) std::memcpy(d + hdr, src, len);
    }
    s->l2_len = m->l2_len;
    s->l3_len = m->l3_len;
    s->ol_flags = m->ol_flags & ~RTE_MBUF_F_TX_TCP_SEG;
    if (v4) {
      auto* ip = reinterpret_cast<rte_ipv4_hdr*>(d + m->l2_len);
      ip->total_length = rte_cpu_to_be_16(static_cast<std::uint16_t>(m->l3_len + m->l4_len + len));
      ip->packet_id = rte_cpu_to_be_16(static_cast<std::uint16_t>(id0 + i));
      ip->hdr_checksum = 0;
      ip->hdr_checksum = rte_ipv4_cksum(ip);
    } else {
      auto* ip = reinterpret_cast<rte_ipv6_hdr*>(d + m->l2_len);
      ip->payload_len = rte_cpu_to_be_16(static_cast<std::uint16_t>(m->l3_len - sizeof(rte_ipv6_hdr) + m->l4_len + len));
    }
    auto* tcp = reinterpret_cast<rte_tcp_hdr*>(d + m->l2_len + m->l3_len);
    tcp->sent_seq = rte_cpu_to_be_32(seq0 + off);
    std::uint8_t f = flags0;
    if (i + 1 < nseg) f &= static_cast<std::uint8_t>(~(RTE_TCP_FIN_FLAG | RTE_TCP_PSH_FLAG));
    if (i > 0) f &= static_cast<std::uint8_t>(~RTE_TCP_CWR_FLAG);
    tcp->tcp_flags = f;
    complete_l4_checksum(s);
  }
  return static_cast<int>(nseg);
}

}  // namespace pvio::netback
