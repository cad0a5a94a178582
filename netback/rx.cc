// Switch -> guest (Linux xen-netback's rx.c): take packets from the vif's inbound ring, consume
// as many rx requests as each needs, grant-copy the bytes into the posted buffers with one
// GNTTABOP_copy batch per pass, and answer each request in its own slot.
#include <algorithm>
#include <cstring>

#include "pvio/netback/dpdk.h"
#include "vif_queue.h"

namespace pvio::netback {
namespace {

constexpr std::uint32_t kPage = 4096;

}  // namespace

// Data slots of 4 KiB, plus the GSO extra slot after the first (netif.h: an rx response
// flagged NETRXF_extra_info is followed by a netif_extra_info in the next slot).
unsigned VifQueue::rx_slots_needed(const rte_mbuf* m) const {
  const unsigned data = std::max<unsigned>(1, (m->pkt_len + kPage - 1) / kPage);
  return data + ((m->ol_flags & RTE_MBUF_F_TX_TCP_SEG) ? 1 : 0);
}

// A GSO packet for a frontend that cannot take it (no feature-gso-tcpv4/6, no sg, or no
// checksum offload): the head of the backlog is replaced by its TCP segments.
bool VifQueue::rx_segment_head() {
  rte_mbuf* m = rx_backlog_[rx_backlog_head_];
  rte_mbuf* segs[64];
  const int n = segment_tcp(m, segs, 64);
  rte_pktmbuf_free(m);
  if (n <= 0) {
    drops_[static_cast<std::size_t>(Drop::GsoUnsupported)].add();
    ++rx_backlog_head_;
    return false;
  }
  rx_segmented_.add();
  rx_backlog_[rx_backlog_head_] = segs[n - 1];
  rx_backlog_.insert(rx_backlog_.begin() + rx_backlog_head_, segs, segs + n - 1);
  return true;
}

// Consumes the rx requests for `m` and queues its copy ops and responses. False when the
// frontend has not posted enough buffers yet (the packet waits).
bool VifQueue::rx_deliver(rte_mbuf* m) {
  const unsigned need = rx_slots_needed(m);
  const ring::RingCheck c = rx_.unconsumed_requests();
  if (!c.ok()) {
    ring_errors_.add();
    fatal("rx ring: impossible producer index");
    return false;
  }
  if (c.count < need) return false;

  std::uint16_t flags = 0;
  if (m->ol_flags & RTE_MBUF_F_TX_L4_MASK) {
    if (cfg_.csum_offload) {
      // NETRXF_csum_blank: the checksum field holds the pseudo-header sum only; the frontend
      // must not verify it (netif.h requires data_validated with it).
      flags = netif::kRxfCsumBlank | netif::kRxfDataValidated;
    } else {
      complete_l4_checksum(m);  // before the bytes are copied out
      flags = netif::kRxfDataValidated;
    }
  } else if (m->ol_flags & RTE_MBUF_F_RX_L4_CKSUM_GOOD) {
    flags = netif::kRxfDataValidated;
  }

  const bool gso = (m->ol_flags & RTE_MBUF_F_TX_TCP_SEG) != 0;
  if (gso) flags |= netif::kRxfExtraInfo;
  const unsigned data_slots = need - (gso ? 1 : 0);
  const rte_mbuf* seg = m;
  std::uint32_t seg_off = 0;
  std::uint32_t left = m->pkt_len;
  for (unsigned s = 0; s < data_slots; ++s) {
    netif::netif_rx_request req;
    rx_.consume_request(req);  // the only read of this slot
    const std::uint32_t in_slot = std::min(left, kPage);
    std::uint32_t done = 0;
    while (done < in_slot) {
      while (seg_off == seg->data_len) {
        seg = seg->next;
        seg_off = 0;
      }
      const auto* src = rte_pktmbuf_mtod_offset(seg, const std::uint8_t*, seg_off);
      const auto src_addr = reinterpret_cast<std::uintptr_t>(src);
      std::uint32_t n = std::min(in_slot - done, seg->data_len - seg_off);
      n = std::min(n, kPage - static_cast<std::uint32_t>(src_addr & (kPage - 1)));
      gnttab::gnttab_copy op{};
      op.source = gnttab::gnttab_copy_ptr::local(src);
      op.dest = gnttab::gnttab_copy_ptr::gref(req.gref, cfg_.frontend_domid,
                                              static_cast<std::uint16_t>(done));
      op.len = static_cast<std::uint16_t>(n);
      op.flags = gnttab::GNTCOPY_dest_gref;
      rx_ops_.push_back(op);
      done += n;
      seg_off += n;
    }
    left -= in_slot;
    netif::netif_rx_response r{};
    r.id = req.id;
    r.offset = 0;
    r.flags = static_cast<std::uint16_t>((s == 0 ? flags : 0) |
                                         (s + 1 < data_slots ? netif::kRxfMoreData : 0));
    r.status = static_cast<std::int16_t>(in_slot);
    rx_rsps_.push_back(RxRsp{r, false});
    if (s == 0 && gso) {
      // The GSO extra takes the next request's slot; its buffer is not used.
      netif::netif_rx_request unused;
      rx_.consume_request(unused);
      netif::netif_extra_info e{};
      e.type = netif::kExtraTypeGso;
      e.u.gso.size = m->tso_segsz;
      e.u.gso.type = (m->ol_flags & RTE_MBUF_F_TX_IPV6) ? netif::kGsoTypeTcpv6 : netif::kGsoTypeTcpv4;
      netif::netif_rx_response as_rsp;
      static_assert(sizeof(as_rsp) == sizeof(e));
      std::memcpy(&as_rsp, &e, sizeof e);
      rx_rsps_.push_back(RxRsp{as_rsp, true});
    }
  }
  if (gso) rx_gso_.add();
  rx_packets_.add();
  rx_bytes_.add(m->pkt_len);
  return true;
}

bool VifQueue::rx_round() {
  if (broken()) return false;
  rte_ring* in = vif_.inbound(index_);
  // Refill the backlog from the inbound ring.
  if (rx_backlog_head_ == rx_backlog_.size()) {
    rx_backlog_.clear();
    rx_backlog_head_ = 0;
  }
  if (rx_backlog_.size() - rx_backlog_head_ < cfg_.burst) {
    rte_mbuf* burst[64];
    const unsigned want = std::min<unsigned>(64, cfg_.burst);
    const unsigned n = rte_ring_sc_dequeue_burst(in, reinterpret_cast<void**>(burst), want, nullptr);
    rx_backlog_.insert(rx_backlog_.end(), burst, burst + n);
  }
  if (rx_backlog_head_ == rx_backlog_.size()) return false;

  rx_ops_.clear();
  rx_rsps_.clear();
  rx_done_.clear();
  unsigned packets = 0;
  rx_stalled_ = false;
  while (rx_backlog_head_ < rx_backlog_.size() && packets < cfg_.burst) {
    rte_mbuf* m = rx_backlog_[rx_backlog_head_];
    if (m->ol_flags & RTE_MBUF_F_TX_TCP_SEG) {
      const bool v6 = (m->ol_flags & RTE_MBUF_F_TX_IPV6) != 0;
      const bool takes_gso = cfg_.sg && cfg_.csum_offload && (v6 ? cfg_.gso_tcpv6 : cfg_.gso_tcpv4);
      if (!takes_gso) {
        rx_segment_head();
        continue;
      }
    }
    if (rx_slots_needed(m) > 1 && !cfg_.sg) {
      // Without feature-sg each packet must fit one buffer.
      drops_[static_cast<std::size_t>(Drop::NoRxBuffers)].add();
      rte_pktmbuf_free(m);
      ++rx_backlog_head_;
      continue;
    }
    if (!rx_deliver(m)) {
      if (broken()) break;
      rx_stalled_ = true;
      break;
    }
    rx_done_.push_back(m);
    ++rx_backlog_head_;
    ++packets;
  }
  if (!rx_ops_.empty()) mapper_->copy(rx_ops_);
  for (const gnttab::gnttab_copy& op : rx_ops_) {
    if (op.status != gnttab::GNTST_okay) {
      // An rx buffer we may not write (not granted, granted to another domain, read-only).
      grant_errors_.add();
      fatal("rx: buffer grant refused");
      break;
    }
  }
  for (rte_mbuf* m : rx_done_) rte_pktmbuf_free(m);
  rx_done_.clear();
  if (broken()) return false;
  for (const RxRsp& r : rx_rsps_) rx_.produce_response(r.rsp);
  if (!rx_rsps_.empty()) rx_rsp_pending_ = true;
  push_and_notify();
  return packets != 0;
}

}  // namespace pvio::netback
