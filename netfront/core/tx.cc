// netfront transmit path: a packet is copied into the queue's tx pages, one ring slot per
// 4 KiB, each page granted read-only to the backend; the first slot carries the whole packet
// size and the checksum flags, a GSO packet has its extra-info slot right after it (netif.h
// "tx request ... extra info"). Responses give the ids back; the grant must be free again by
// then. Never touches xenstore.
#include "impl.h"

namespace pvio::netfront {

const char* tx_status_name(TxStatus s) {
  switch (s) {
    case TxStatus::Ok: return "Ok";
    case TxStatus::Busy: return "Busy";
    case TxStatus::Invalid: return "Invalid";
    case TxStatus::NotSupported: return "NotSupported";
    case TxStatus::NoDevice: return "NoDevice";
  }
  return "?";
}

std::uint32_t Netfront::tx_space(std::uint32_t qi) const {
  if (!rings_up_ || broken_ || qi >= nr_queues_) return 0;
  const Queue& q = queues_[qi];
  const std::uint32_t ring = q.tx.free_requests();
  return ring < q.tx_free_count ? ring : q.tx_free_count;
}

TxStatus Netfront::send(const TxPacket& pkt) {
  if (!rings_up_ || broken_ || state_ != XenbusState::Connected) return TxStatus::NoDevice;
  std::uint64_t total = 0;
  for (std::uint32_t i = 0; i < pkt.nr_frags; ++i) {
    if (pkt.frags[i].data == nullptr && pkt.frags[i].len != 0) return TxStatus::Invalid;
    total += pkt.frags[i].len;
  }
  // netif_tx_request.size of the first slot is the packet size: 16 bits (XEN_NETIF_MAX_TX_SIZE).
  if (total == 0 || total > netif::kMaxTxSize) return TxStatus::Invalid;
  const Offload& off = pkt.offload;
  const bool gso = off.gso_type != netif::kGsoTypeNone;
  if (gso) {
    if (off.gso_size == 0) return TxStatus::Invalid;
    if (off.gso_type == netif::kGsoTypeTcpv4 ? !neg_.gso_tcpv4
        : off.gso_type == netif::kGsoTypeTcpv6 ? !neg_.gso_tcpv6
                                                : true)
      return TxStatus::NotSupported;
  }
  if ((off.csum_blank || gso) && !neg_.csum) return TxStatus::NotSupported;
  const std::uint32_t slots = static_cast<std::uint32_t>((total + kPageSize - 1) / kPageSize);
  if (slots > 1 && !neg_.sg) return TxStatus::NotSupported;
  Queue& q = queues_[pkt.queue % nr_queues_];
  if (q.tx.free_requests() < slots + (gso ? 1u : 0u) || q.tx_free_count < slots) {
    ++stats_.tx_busy;
    return TxStatus::Busy;
  }

  // Grant first, publish later: if the table is full nothing reaches the ring.
  std::uint16_t ids[kMaxSlotsPerPacket];
  for (std::uint32_t s = 0; s < slots; ++s) {
    const std::uint16_t id = q.tx_free[--q.tx_free_count];
    TxSlot& t = q.txs[id];
    // The backend only reads transmit data: grant read-only.
    t.gref = pf_.grant_access(backend_id_, t.page.gfn, true);
    if (t.gref == kInvalidGrantRef) {
      q.tx_free[q.tx_free_count++] = id;
      for (std::uint32_t k = 0; k < s; ++k) {
        pf_.end_access(q.txs[ids[k]].gref);  // never published: cannot be mapped
        q.txs[ids[k]].gref = kInvalidGrantRef;
        q.tx_free[q.tx_free_count++] = ids[k];
      }
      ++stats_.tx_busy;
      return TxStatus::Busy;
    }
    t.in_use = true;
    ids[s] = id;
  }

  // Gather the frags into the pages.
  std::uint32_t fi = 0, fo = 0;
  for (std::uint32_t s = 0; s < slots; ++s) {
    auto* dst = static_cast<std::uint8_t*>(q.txs[ids[s]].page.addr);
    std::uint32_t room = kPageSize;
    while (room > 0 && fi < pkt.nr_frags) {
      const std::uint32_t left = pkt.frags[fi].len - fo;
      const std::uint32_t n = left < room ? left : room;
      std::memcpy(dst, static_cast<const std::uint8_t*>(pkt.frags[fi].data) + fo, n);
      dst += n;
      room -= n;
      fo += n;
      if (fo == pkt.frags[fi].len) {
        ++fi;
        fo = 0;
      }
    }
  }

  std::uint16_t first_flags = 0;
  // A GSO packet's checksum is always partial (xennet_start_xmit sets both for
  // CHECKSUM_PARTIAL); data_validated alone says the sender already checked it.
  if (off.csum_blank || gso) first_flags |= netif::kTxfCsumBlank | netif::kTxfDataValidated;
  else if (off.data_validated) first_flags |= netif::kTxfDataValidated;
  std::uint32_t remaining = static_cast<std::uint32_t>(total);
  for (std::uint32_t s = 0; s < slots; ++s) {
    const std::uint32_t len = remaining < kPageSize ? remaining : kPageSize;
    netif::netif_tx_request req{};
    req.gref = q.txs[ids[s]].gref;
    req.offset = 0;
    req.id = ids[s];
    req.flags = s + 1 < slots ? netif::kTxfMoreData : 0;
    // First slot: size is the whole packet; the others carry their own length.
    req.size = static_cast<std::uint16_t>(s == 0 ? total : len);
    if (s == 0) {
      req.flags |= first_flags;
      if (gso) req.flags |= netif::kTxfExtraInfo;
    }
    q.txs[ids[s]].cookie = s == 0 ? pkt.cookie : nullptr;
    q.tx.produce_request(req);
    if (s == 0 && gso) {
      netif::netif_extra_info extra{};
      extra.type = netif::kExtraTypeGso;
      extra.flags = 0;
      extra.u.gso.size = off.gso_size;
      extra.u.gso.type = off.gso_type;
      extra.u.gso.pad = 0;
      extra.u.gso.features = 0;
      std::memcpy(q.tx.next_request(), &extra, sizeof(extra));
    }
    remaining -= len;
  }
  ++stats_.tx_packets;
  stats_.tx_bytes += total;
  stats_.tx_slots += slots;
  q.tx_unpublished = true;
  if (!pkt.more) tx_publish(q);
  return TxStatus::Ok;
}

// RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: one send for the batch, and none if the backend is
// still consuming (req_event outside what was just published).
void Netfront::tx_publish(Queue& q) {
  if (!q.tx_unpublished) return;
  q.tx_unpublished = false;
  if (q.tx.push_requests()) {
    pf_.notify(q.tx_port);
    ++stats_.notifications;
  }
}

void Netfront::push_tx() {
  if (!rings_up_ || broken_) return;
  for (std::uint32_t qi = 0; qi < nr_queues_; ++qi) tx_publish(queues_[qi]);
}

// xennet_tx_buf_gc: give back every id the backend answered.
void Netfront::tx_reclaim(Queue& q) {
  for (;;) {
    ring::RingCheck c = q.tx.unconsumed_responses();
    if (!c.ok()) return datapath_broken("tx: bad response producer index");
    for (std::uint32_t i = 0; i < c.count; ++i) {
      netif::netif_tx_response rsp;
      q.tx.consume_response(rsp);  // one copy; only the copy is looked at
      // The slot of an extra-info request is answered with NETIF_RSP_NULL and no id.
      if (rsp.status == netif::kRspNull) continue;
      if (rsp.id >= kRingSize || !q.txs[rsp.id].in_use)
        return datapath_broken("tx: response with bad id", rsp.id);
      TxSlot& t = q.txs[rsp.id];
      void* const cookie = t.cookie;
      t.cookie = nullptr;
      // The backend must be done with the page when it answers (netif.h; Linux's
      // xennet_tx_buf_gc calls it "grant still in use by backend domain").
      if (!pf_.end_access(t.gref)) {
        t.gref = kInvalidGrantRef;
        t.in_use = false;
        t.page = GuestPage{};  // given up: never reused while the backend may map it
        ++stats_.grants_leaked;
        if (cookie != nullptr && tx_done_ != nullptr) tx_done_(tx_done_cookie_, cookie, false);
        return datapath_broken("tx: grant still in use by the backend, id", rsp.id);
      }
      t.gref = kInvalidGrantRef;
      t.in_use = false;
      q.tx_free[q.tx_free_count++] = rsp.id;
      if (rsp.status != netif::kRspOkay) ++stats_.tx_errors;
      if (cookie != nullptr && tx_done_ != nullptr)
        tx_done_(tx_done_cookie_, cookie, rsp.status == netif::kRspOkay);
    }
    // RING_FINAL_CHECK_FOR_RESPONSES: re-arm rsp_event, then look once more.
    c = q.tx.final_check_for_responses();
    if (!c.ok()) return datapath_broken("tx: bad response producer index");
    if (c.count == 0) return;
  }
}

// Teardown: end every grant; a page the backend still maps is given up, not freed.
void Netfront::tx_release_all(Queue& q) {
  for (TxSlot& t : q.txs) {
    if (t.cookie != nullptr && tx_done_ != nullptr) tx_done_(tx_done_cookie_, t.cookie, false);
    t.cookie = nullptr;
    bool lost = false;
    if (t.gref != kInvalidGrantRef && !pf_.end_access(t.gref)) {
      lost = true;
      ++stats_.grants_leaked;
    }
    t.gref = kInvalidGrantRef;
    t.in_use = false;
    if (!lost && t.page.addr != nullptr) pf_.free_page(t.page);
    t.page = GuestPage{};
  }
  q.tx_free_count = 0;
}

void Netfront::datapath_broken(const char* why, std::uint64_t n) {
  ++stats_.protocol_errors;
  logf(LogLevel::Error, why, nullptr, n);
  broken_ = true;
  request_disconnect();  // control plane: Closing; the next handshake brings the device back
}

void Netfront::handle_event(std::uint32_t qi) {
  if (!rings_up_ || broken_ || qi >= nr_queues_) return;
  ++depth_;
  Queue& q = queues_[qi];
  tx_reclaim(q);
  if (!broken_) rx_process(q);
  --depth_;
}

void Netfront::handle_all_events() {
  for (std::uint32_t qi = 0; qi < nr_queues_; ++qi) handle_event(qi);
}

}  // namespace pvio::netfront
