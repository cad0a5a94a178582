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

#include <chrono>
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

}  // namespace pvio::netback
