// DPDK for pvio-netback: the EAL, started once per process with no hugepages, no PCI scan and
// a per-process file prefix, so it needs no host set-up; and the packet mbuf pool.
#pragma once

#include <rte_mbuf.h>

#include <string>

namespace pvio::netback {

struct DpdkOptions {
  unsigned memory_mb = 256;    // -m: anonymous memory for the pool and rings
  unsigned nr_mbufs = 16383;   // packet pool size (2 KiB data room each)
  std::string log_level = "error";
};

// Starts the EAL (idempotent; later calls ignore their options) and restores the calling
// thread's CPU affinity, which rte_eal_init pins to one core. Throws std::runtime_error.
void dpdk_init(const DpdkOptions& options = {});
rte_mempool* packet_pool();
// Monotonic nanoseconds (steady clock), the switch's and the datapath's time base.
std::uint64_t now_ns();

// Completes a pending L4 checksum (RTE_MBUF_F_TX_*_CKSUM with l2_len/l3_len set) in software
// and clears the request flags. Returns false when the headers are not in the first segment.
bool complete_l4_checksum(rte_mbuf* m);
// Finds the L3/L4 headers of an Ethernet frame and marks its L4 checksum as pending
// (NETTXF_csum_blank). False when the frame is not TCP/UDP over IPv4/IPv6.
bool mark_checksum_pending(rte_mbuf* m);

// Marks a TCP packet larger than one segment for segmentation (a netif GSO extra): the
// checksum is pending (mark_checksum_pending first), RTE_MBUF_F_TX_TCP_SEG, l4_len and
// tso_segsz = mss. False when the packet is not TCP over the IP version of `v6`.
bool mark_tcp_segmentation(rte_mbuf* m, bool v6, std::uint16_t mss);
// Cuts a packet marked for segmentation into MSS-sized TCP segments with complete headers and
// checksums (IPv4 total length, id and header checksum; IPv6 payload length; TCP sequence
// numbers, FIN/PSH on the last segment only, CWR on the first only). Writes at most `max`
// new mbufs to `out` and returns how many, or -1 (no mbufs, too many segments, bad headers).
// `m` is left to the caller.
int segment_tcp(const rte_mbuf* m, rte_mbuf** out, unsigned max);

}  // namespace pvio::netback
