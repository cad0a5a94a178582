// netfront receive path: rx buffers (one granted page each) are posted with id == ring index,
// responses are taken in ring order and gathered into packets (NETRXF_more_data chains, an
// extra-info slot after the first when NETRXF_extra_info is set), checked, handed to the
// binding, and the ring is refilled. Never touches xenstore.
#include "impl.h"

namespace pvio::netfront {

namespace {
constexpr std::uint32_t kMask = kRingSize - 1;
}  // namespace

// xennet_alloc_rx_buffers: post every free buffer whose turn it is. Buffers are posted in
// ring order, so the next request's slot is the one whose buffer must be free.
void Netfront::rx_refill(Queue& q) {
  if (!rings_up_ || broken_) return;
  bool posted = false;
  while (!q.rx.full()) {
    const std::uint32_t idx = q.rx.req_prod_pvt() & kMask;
    RxSlot& b = q.rxs[idx];
    if (b.state != RxSlot::State::Free || b.page.addr == nullptr) break;
    // The backend copies received data into the page: grant it writable.
    b.gref = pf_.grant_access(backend_id_, b.page.gfn, false);
    if (b.gref == kInvalidGrantRef) break;
    b.state = RxSlot::State::Posted;
    netif::netif_rx_request req{};
    req.id = static_cast<std::uint16_t>(idx);
    req.gref = b.gref;
    q.rx.produce_request(req);
    posted = true;
  }
  if (!posted) return;
  // With feature-rx-notify the backend waits for new buffers on req_event; before it is
  // connected the kick at Connected covers whatever was posted.
  if (q.rx.push_requests() && backend_connected_once_) {
    pf_.notify(q.rx_port_valid ? q.rx_port : q.tx_port);
    ++stats_.notifications;
  }
}

void Netfront::rx_process(Queue& q) {
  for (;;) {
    ring::RingCheck c = q.rx.unconsumed_responses();
    if (!c.ok()) return datapath_broken("rx: bad response producer index");
    for (std::uint32_t i = 0; i < c.count; ++i) {
      const std::uint32_t idx = q.rx.rsp_cons() & kMask;
      netif::netif_rx_response rsp;
      q.rx.consume_response(rsp);  // one copy; only the copy is looked at
      if (!rx_slot(q, idx, rsp)) return;
    }
    rx_refill(q);
    // RING_FINAL_CHECK_FOR_RESPONSES: re-arm rsp_event, then look once more.
    c = q.rx.final_check_for_responses();
    if (!c.ok()) return datapath_broken("rx: bad response producer index");
    if (c.count == 0) return;
  }
}

// One response slot. False when the device went broken.
bool Netfront::rx_slot(Queue& q, std::uint32_t idx, const netif::netif_rx_response& rsp) {
  RxSlot& b = q.rxs[idx];
  // Ring accounting (no more responses than requests) already guarantees the slot was
  // posted; the check costs nothing and keeps a state bug from becoming a use-after-free.
  if (b.state != RxSlot::State::Posted) {
    datapath_broken("rx: response for a buffer that is not posted, slot", idx);
    return false;
  }
  // The backend has answered: it must have released the page (netif.h; Linux's
  // xennet_get_responses refuses a grant the backend still holds).
  if (!pf_.end_access(b.gref)) {
    b.gref = kInvalidGrantRef;
    b.state = RxSlot::State::Free;
    b.page = GuestPage{};  // given up: never reused while the backend may map it
    ++stats_.grants_leaked;
    datapath_broken("rx: grant still in use by the backend, slot", idx);
    return false;
  }
  b.gref = kInvalidGrantRef;

  if (q.pend_extra) {
    // An extra-info slot takes a response slot (and its buffer) of its own (netif.h "rx
    // response ... extra info"); its buffer carries no data.
    b.state = RxSlot::State::Free;
    netif::netif_extra_info ex;
    static_assert(sizeof(ex) == sizeof(rsp));
    std::memcpy(&ex, &rsp, sizeof(ex));
    if (ex.type == netif::kExtraTypeGso) {
      if (ex.u.gso.size == 0 ||
          (ex.u.gso.type != netif::kGsoTypeTcpv4 && ex.u.gso.type != netif::kGsoTypeTcpv6)) {
        q.pend_bad = true;
      } else {
        q.pend_offload.gso_type = ex.u.gso.type;
        q.pend_offload.gso_size = ex.u.gso.size;
      }
    } else if (ex.type == netif::kExtraTypeNone || ex.type >= netif::kExtraTypeMax) {
      q.pend_bad = true;  // multicast and hash extras are accepted and ignored
    }
    q.pend_extra = (ex.flags & netif::kExtraFlagMore) != 0;
    if (!q.pend_extra && !q.pend_more) rx_deliver(q);
    return true;
  }

  // A data slot answers the request posted in it, whose id was the slot index.
  if (rsp.id != idx) {
    b.state = RxSlot::State::Free;
    datapath_broken("rx: response id does not match its slot, id", rsp.id);
    return false;
  }
  if (!q.pend_active) {
    q.pend_active = true;
    q.pend_bad = false;
    q.pend_n = 0;
    q.pend_offload = Offload{};
    q.pend_offload.csum_blank = (rsp.flags & netif::kRxfCsumBlank) != 0;
    q.pend_offload.data_validated = (rsp.flags & netif::kRxfDataValidated) != 0;
    q.pend_extra = (rsp.flags & netif::kRxfExtraInfo) != 0;
    // We never asked for GSO prefixes (feature-gso-*-prefix): a backend sending them is
    // confused, and the packet cannot be interpreted.
    if (rsp.flags & netif::kRxfGsoPrefix) q.pend_bad = true;
  } else if (rsp.flags & netif::kRxfExtraInfo) {
    q.pend_bad = true;  // only a packet's first slot may announce extras
  }
  q.pend_more = (rsp.flags & netif::kRxfMoreData) != 0;
  const std::int32_t status = rsp.status;
  if (status < 0 || std::uint32_t{rsp.offset} + static_cast<std::uint32_t>(status) > kPageSize) {
    // xennet_get_responses: an error or a piece beyond the page drops the packet.
    q.pend_bad = true;
    b.state = RxSlot::State::Free;
  } else if (q.pend_n == kMaxSlotsPerPacket) {
    q.pend_bad = true;  // more slots than any packet may take
    b.state = RxSlot::State::Free;
  } else {
    b.state = RxSlot::State::Held;
    q.pend_idx[q.pend_n] = static_cast<std::uint16_t>(idx);
    q.pend_off[q.pend_n] = rsp.offset;
    q.pend_len[q.pend_n] = static_cast<std::uint16_t>(status);
    ++q.pend_n;
  }
  if (!q.pend_extra && !q.pend_more) rx_deliver(q);
  return true;
}

// The packet is complete: hand it over (or count it as dropped), then free its buffers.
void Netfront::rx_deliver(Queue& q) {
  RxFrag frags[kMaxSlotsPerPacket];
  std::uint32_t total = 0, n = 0;
  for (std::uint32_t i = 0; i < q.pend_n; ++i) {
    if (q.pend_len[i] == 0) continue;
    frags[n].data = static_cast<const std::uint8_t*>(q.rxs[q.pend_idx[i]].page.addr) +
                    q.pend_off[i];
    frags[n].len = q.pend_len[i];
    total += q.pend_len[i];
    ++n;
  }
  if (q.pend_bad || total == 0 || total > netif::kMaxTxSize) {
    ++stats_.rx_errors;
  } else {
    RxPacket pkt;
    pkt.frags = frags;
    pkt.nr_frags = n;
    pkt.len = total;
    pkt.offload = q.pend_offload;
    pkt.queue = static_cast<std::uint16_t>(&q - queues_);
    ++stats_.rx_packets;
    stats_.rx_bytes += total;
    if (pkt.offload.gso_type != netif::kGsoTypeNone) ++stats_.rx_gso;
    if (rx_handler_ != nullptr) rx_handler_(rx_cookie_, pkt);
  }
  for (std::uint32_t i = 0; i < q.pend_n; ++i) q.rxs[q.pend_idx[i]].state = RxSlot::State::Free;
  q.pend_active = q.pend_more = q.pend_extra = q.pend_bad = false;
  q.pend_n = 0;
}

// Teardown: end every grant; a page the backend still maps is given up, not freed.
void Netfront::rx_release_all(Queue& q) {
  for (RxSlot& b : q.rxs) {
    bool lost = false;
    if (b.gref != kInvalidGrantRef && !pf_.end_access(b.gref)) {
      lost = true;
      ++stats_.grants_leaked;
    }
    b.gref = kInvalidGrantRef;
    b.state = RxSlot::State::Free;
    if (!lost && b.page.addr != nullptr) pf_.free_page(b.page);
    b.page = GuestPage{};
  }
  q.pend_active = q.pend_more = q.pend_extra = q.pend_bad = false;
  q.pend_n = 0;
}

}  // namespace pvio::netfront
