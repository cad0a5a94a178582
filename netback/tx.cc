// Guest -> switch (Linux xen-netback's netback.c): copy the published tx slots out once, parse
// each packet, grant-copy its fragments into an mbuf chain with one GNTTABOP_copy batch per
// pass, answer every slot, and forward the packets.
#include <rte_ether.h>

#include <algorithm>
#include <cstring>

#include "pvio/netback/dpdk.h"
#include "vif_queue.h"

namespace pvio::netback {
namespace {

constexpr std::uint32_t kPage = 4096;

}  // namespace

void VifQueue::tx_respond(const TxSlot* slots, std::uint32_t n, std::int16_t status) {
  for (std::uint32_t i = 0; i < n; ++i) {
    netif::netif_tx_response r{};
    r.id = slots[i].id;
    // Extra-info slots are answered NETIF_RSP_NULL (netif.h, "extra info").
    r.status = slots[i].extra ? netif::kRspNull : status;
    tx_.produce_response(r);
  }
  tx_rsp_pending_ = true;
}

// Linux's tx_credit_exceeded: the credit refills to credit_bytes every credit_usec; a packet
// bigger than what is left waits for the refill, except that a full bucket lets one packet
// through whatever its size.
bool VifQueue::tx_credit_ok(std::uint32_t size, std::uint64_t now) {
  if (cfg_.credit_bytes == 0) return true;
  if (now >= next_credit_ns_) {
    remaining_credit_ = cfg_.credit_bytes;
    next_credit_ns_ = now + cfg_.credit_usec * 1000;
  }
  if (size <= remaining_credit_ || remaining_credit_ == cfg_.credit_bytes) {
    remaining_credit_ -= std::min<std::uint64_t>(size, remaining_credit_);
    credit_blocked_ = false;
    return true;
  }
  if (!credit_blocked_) credit_waits_.add();
  credit_blocked_ = true;
  return false;
}

void VifQueue::mcast_update(const ParsedTxPacket& p) {
  std::uint64_t key = 1ull << 63;
  for (std::uint8_t b : p.mcast_addr) key = (key << 8) | b;
  key |= 1ull << 63;
  auto& table = vif_.mcast_;
  if (p.mcast_del) {
    for (auto& e : table)
      if (e.load(std::memory_order_relaxed) == key) e.store(0, std::memory_order_relaxed);
  }
  if (p.mcast_add) {
    for (auto& e : table)
      if (e.load(std::memory_order_relaxed) == key) return;
    for (auto& e : table) {
      std::uint64_t zero = 0;
      if (e.compare_exchange_strong(zero, key)) return;
    }
  }
}

// An mbuf chain for p.length bytes with one grant-copy op per piece of a fragment that fits
// both one mbuf segment and one local page (GNTTABOP_copy never crosses a page on either end).
rte_mbuf* VifQueue::tx_build(const ParsedTxPacket& p) {
  rte_mempool* pool = packet_pool();
  const std::uint32_t room = rte_pktmbuf_data_room_size(pool) - RTE_PKTMBUF_HEADROOM;
  const std::uint32_t nseg = (p.length + room - 1) / room;
  rte_mbuf* segs[64];
  if (nseg == 0 || nseg > 64 || rte_pktmbuf_alloc_bulk(pool, segs, nseg) != 0) return nullptr;
  for (std::uint32_t i = 0; i < nseg; ++i) {
    const std::uint32_t len = std::min(room, p.length - i * room);
    segs[i]->data_len = static_cast<std::uint16_t>(len);
    if (i > 0) segs[i - 1]->next = segs[i];
  }
  rte_mbuf* head = segs[0];
  head->nb_segs = static_cast<std::uint16_t>(nseg);
  head->pkt_len = p.length;

  std::uint32_t seg = 0, seg_off = 0;
  for (std::uint32_t f = 0; f < p.nr_frags; ++f) {
    const TxFragment& fr = p.frag[f];
    std::uint32_t done = 0;
    while (done < fr.size) {
      auto* dst = rte_pktmbuf_mtod_offset(segs[seg], std::uint8_t*, seg_off);
      const auto dst_addr = reinterpret_cast<std::uintptr_t>(dst);
      std::uint32_t n = fr.size - done;
      n = std::min(n, room - seg_off);
      n = std::min(n, kPage - static_cast<std::uint32_t>(dst_addr & (kPage - 1)));
      gnttab::gnttab_copy op{};
      op.source = gnttab::gnttab_copy_ptr::gref(fr.gref, cfg_.frontend_domid,
                                                static_cast<std::uint16_t>(fr.offset + done));
      op.dest = gnttab::gnttab_copy_ptr::local(dst);
      op.len = static_cast<std::uint16_t>(n);
      op.flags = gnttab::GNTCOPY_source_gref;
      tx_ops_.push_back(op);
      done += n;
      seg_off += n;
      if (seg_off == room) {
        ++seg;
        seg_off = 0;
      }
    }
  }
  return head;
}

// Offload metadata from the request flags and extras, once the bytes are private.
bool VifQueue::tx_finish_mbuf(rte_mbuf* m, const TxPending& t) {
  m->ol_flags = 0;
  if (t.csum_blank || t.gso_type != netif::kGsoTypeNone) {
    // The frontend left the L4 checksum to us (CHECKSUM_PARTIAL; a GSO packet always needs
    // it): find it now; each egress either passes it on (a vif that accepts csum_blank) or
    // completes it in software.
    if (!mark_checksum_pending(m)) {
      drops_[static_cast<std::size_t>(Drop::ChecksumSetup)].add();
      return false;
    }
  } else if (t.data_validated) {
    m->ol_flags |= RTE_MBUF_F_RX_L4_CKSUM_GOOD;
  }
  if (t.gso_type != netif::kGsoTypeNone) {
    // xenvif_set_skb_gso: TCPv4 or TCPv6 with an MSS; the headers must say the same.
    if (!mark_tcp_segmentation(m, t.gso_type == netif::kGsoTypeTcpv6, t.gso_size)) {
      drops_[static_cast<std::size_t>(Drop::ChecksumSetup)].add();
      return false;
    }
    tx_gso_.add();
  }
  // Only the configured MAC may be used as a source (Linux leaves this to the bridge's
  // filters; here the switch is ours).
  const auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
  if (std::memcmp(eth->src_addr.addr_bytes, cfg_.mac.data(), 6) != 0) {
    drops_[static_cast<std::size_t>(Drop::SpoofedSource)].add();
    return false;
  }
  return true;
}

bool VifQueue::tx_round() {
  if (broken()) return false;
  const ring::RingCheck c = tx_.unconsumed_requests();
  if (!c.ok()) {
    ring_errors_.add();
    fatal("tx ring: impossible producer index");
    return false;
  }
  // Copy every newly published slot once; only the copies are looked at from here on.
  for (std::uint32_t i = 0; i < c.count && tx_slot_count_ < tx_slots_.size(); ++i)
    tx_.consume_request(tx_slots_[tx_slot_count_++]);
  if (tx_slot_count_ == 0) return false;

  const std::uint64_t now = cfg_.credit_bytes ? now_ns() : 0;
  std::uint32_t used = 0;
  unsigned packets = 0;
  tx_pending_.clear();
  tx_ops_.clear();
  while (used < tx_slot_count_ && packets < cfg_.burst) {
    if (!tx_credit_ok(tx_slots_[used].size, now)) break;
    const TxError err = parse_tx_packet(std::span(tx_slots_.data() + used, tx_slot_count_ - used),
                                        parsed_);
    ++packets;
    if (err != TxError::None) {
      tx_errors_[static_cast<std::size_t>(err)].add();
      if (tx_error_is_fatal(err)) {
        // The packets already copied in this pass are dropped with the vif.
        for (TxPending& t : tx_pending_) rte_pktmbuf_free(t.m);
        tx_pending_.clear();
        fatal(std::string("tx: ") + tx_error_name(err));
        return false;
      }
      tx_respond(parsed_.slot.data(), parsed_.nr_slots, netif::kRspError);
      used += parsed_.nr_slots;
      continue;
    }
    used += parsed_.nr_slots;
    if (parsed_.mcast_add || parsed_.mcast_del) {
      if (cfg_.multicast_control) mcast_update(parsed_);
      tx_mcast_.add();
      tx_respond(parsed_.slot.data(), parsed_.nr_slots, netif::kRspOkay);
      continue;
    }
    const std::uint32_t first_op = static_cast<std::uint32_t>(tx_ops_.size());
    rte_mbuf* m = tx_build(parsed_);
    if (m == nullptr) {
      tx_ops_.resize(first_op);
      drops_[static_cast<std::size_t>(Drop::NoMbuf)].add();
      tx_respond(parsed_.slot.data(), parsed_.nr_slots, netif::kRspDropped);
      continue;
    }
    TxPending t;
    t.m = m;
    t.first_op = first_op;
    t.nr_ops = static_cast<std::uint32_t>(tx_ops_.size()) - first_op;
    t.nr_slots = parsed_.nr_slots;
    t.csum_blank = parsed_.csum_blank;
    t.data_validated = parsed_.data_validated;
    t.gso_type = parsed_.gso_type;
    t.gso_size = parsed_.gso_size;
    std::copy_n(parsed_.slot.begin(), parsed_.nr_slots, t.slot.begin());
    tx_pending_.push_back(t);
  }
  // Unparsed copies move to the front for the next pass.
  std::memmove(tx_slots_.data(), tx_slots_.data() + used,
               (tx_slot_count_ - used) * sizeof(netif::netif_tx_request));
  tx_slot_count_ -= used;

  if (!tx_ops_.empty()) mapper_->copy(tx_ops_);
  tx_out_.clear();
  for (TxPending& t : tx_pending_) {
    bool ok = true;
    for (std::uint32_t i = 0; i < t.nr_ops; ++i)
      ok &= tx_ops_[t.first_op + i].status == gnttab::GNTST_okay;
    if (!ok) {
      // A fragment grant that is not ours to read is a protocol violation for this vif.
      grant_errors_.add();
      for (TxPending& u : tx_pending_) rte_pktmbuf_free(u.m);
      tx_pending_.clear();
      fatal("tx: fragment grant refused");
      return false;
    }
  }
  for (TxPending& t : tx_pending_) {
    tx_respond(t.slot.data(), t.nr_slots, netif::kRspOkay);
    if (!tx_finish_mbuf(t.m, t)) {
      rte_pktmbuf_free(t.m);
      continue;
    }
    tx_packets_.add();
    tx_bytes_.add(t.m->pkt_len);
    tx_out_.push_back(t.m);
  }
  tx_pending_.clear();
  // Responses first: the frontend may reuse the pages as soon as it sees them, and the data
  // is already private.
  push_and_notify();
  if (!tx_out_.empty())
    vif_.switch_.forward(reader_, vif_, tx_out_.data(), static_cast<unsigned>(tx_out_.size()));
  return packets != 0;
}

}  // namespace pvio::netback
