// Shared request/response ring with exactly the memory layout and notification rules of Xen's
// public io/ring.h, for frontends (FrontRing) and backends (BackRing).
//
// Freestanding: no exceptions, no heap, no libc beyond freestanding headers, so the same code
// runs in Dom0 services, the bare-metal test guest and kernel-mode drivers.
//
// Trust: the shared page belongs to both ends and the other end is untrusted. Its producer
// index is read once per check, compared with what the ring can hold, and a claim of more
// outstanding entries than that is reported as RingError::BadProducerIndex (the caller
// disconnects). Entries are copied out once into private memory before anyone looks at them.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "pvio/xen/io/ring.h"

namespace pvio::ring {

// Xen's SHARED_RING_INIT: indices to 0, event thresholds to 1, pads zeroed. Done by the
// frontend, which owns the ring page, before it grants the page to the backend.
inline void shared_ring_init(void* sring) {
  auto* h = static_cast<SringHeader*>(sring);
  std::memset(h, 0, sizeof(*h));
  h->req_event = 1;
  h->rsp_event = 1;
  std::atomic_thread_fence(std::memory_order_release);
}

enum class RingError : std::uint8_t {
  None = 0,
  BadProducerIndex,  // the other end's producer index is impossible: too far ahead or backwards
};

// Outcome of a check on the other end's producer index: a count, or a protocol error.
struct RingCheck {
  std::uint32_t count = 0;
  RingError error = RingError::None;
  constexpr bool ok() const { return error == RingError::None; }
  constexpr explicit operator bool() const { return ok() && count != 0; }
};

namespace detail {

inline RingIdx load_acquire(const RingIdx& idx) {
  return std::atomic_ref<RingIdx>(const_cast<RingIdx&>(idx)).load(std::memory_order_acquire);
}
inline RingIdx load_relaxed(const RingIdx& idx) {
  return std::atomic_ref<RingIdx>(const_cast<RingIdx&>(idx)).load(std::memory_order_relaxed);
}
inline void store_release(RingIdx& idx, RingIdx v) {
  std::atomic_ref<RingIdx>(idx).store(v, std::memory_order_release);
}
inline void store_relaxed(RingIdx& idx, RingIdx v) {
  std::atomic_ref<RingIdx>(idx).store(v, std::memory_order_relaxed);
}
// Xen's xen_mb(): the store of our producer (or event) index must be globally visible before
// we read the other end's event (or producer) index, or a wake-up can be lost.
inline void full_barrier() { std::atomic_thread_fence(std::memory_order_seq_cst); }

// Copy one entry out of shared memory into private memory exactly once (RING_COPY_*): the
// compiler barrier stops it from re-reading the shared slot in place of the copy.
template <typename T>
inline void copy_once(T& dst, const void* src) {
  static_assert(std::is_trivially_copyable_v<T>);
  std::memcpy(&dst, src, sizeof(T));
#if defined(__GNUC__) || defined(__clang__)
  // Tell the compiler `dst` may have changed behind its back, so it cannot re-derive it from
  // the shared slot; cheaper than a full compiler barrier, which would also force our private
  // indices out to memory on every entry.
  asm volatile("" : "+m"(dst));
#else
  std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

// Xen's notify rule for RING_PUSH_*_AND_CHECK_NOTIFY: notify iff the event index lies in the
// half-open window (old, new] of entries just published.
constexpr bool needs_notify(RingIdx old_prod, RingIdx new_prod, RingIdx event) {
  return static_cast<RingIdx>(new_prod - event) < static_cast<RingIdx>(new_prod - old_prod);
}

}  // namespace detail

// Frontend view: produces requests, consumes responses.
template <typename Req, typename Rsp>
class FrontRing {
 public:
  using Entry = SringEntry<Req, Rsp>;
  static_assert(std::is_trivially_copyable_v<Req> && std::is_trivially_copyable_v<Rsp>);

  FrontRing() = default;

  // FRONT_RING_ATTACH: `sring` is the (already initialised) shared area of `bytes` bytes;
  // `start` is where the private indices begin (0 for a new ring).
  bool attach(void* sring, std::size_t bytes, RingIdx start = 0) {
    nr_ents_ = ring_size<Req, Rsp>(bytes);
    if (sring == nullptr || nr_ents_ == 0) return false;
    sring_ = static_cast<SringHeader*>(sring);
    entries_ = reinterpret_cast<Entry*>(static_cast<std::uint8_t*>(sring) + sizeof(SringHeader));
    req_prod_pvt_ = req_prod_pushed_ = start;
    rsp_cons_ = start;
    return true;
  }
  // XEN_FRONT_RING_INIT: initialise the shared header, then attach at 0.
  bool init(void* sring, std::size_t bytes) {
    if (sring == nullptr || bytes <= sizeof(SringHeader)) return false;
    shared_ring_init(sring);
    return attach(sring, bytes, 0);
  }

  std::uint32_t size() const { return nr_ents_; }
  std::uint32_t free_requests() const { return nr_ents_ - (req_prod_pvt_ - rsp_cons_); }
  bool full() const { return free_requests() == 0; }
  RingIdx req_prod_pvt() const { return req_prod_pvt_; }
  RingIdx rsp_cons() const { return rsp_cons_; }
  SringHeader* sring() const { return sring_; }

  // Slot for the next request, to be filled in place (large requests are built directly in
  // the shared page, as Xen's RING_GET_REQUEST + req_prod_pvt++ does). Caller checks full().
  Req* next_request() { return &entries_[req_prod_pvt_++ & (nr_ents_ - 1)].req; }
  // Copy `req` into the next slot. Returns false when the ring is full.
  bool produce_request(const Req& req) {
    if (full()) return false;
    std::memcpy(next_request(), &req, sizeof(Req));
    return true;
  }

  // RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: publish the private producer; true when the backend
  // asked to be notified about one of the entries just published (req_event).
  bool push_requests() {
    // Only this end writes req_prod, so the last value we published is what Xen's macro
    // re-reads from the shared page; keeping it privately saves a load of the contended line.
    const RingIdx old_prod = req_prod_pushed_;
    const RingIdx new_prod = req_prod_pushed_ = req_prod_pvt_;
    detail::store_release(sring_->req_prod, new_prod);
    detail::full_barrier();
    return detail::needs_notify(old_prod, new_prod, detail::load_relaxed(sring_->req_event));
  }
  // RING_PUSH_REQUESTS: publish without the notify decision.
  void push_requests_no_check() {
    req_prod_pushed_ = req_prod_pvt_;
    detail::store_release(sring_->req_prod, req_prod_pvt_);
  }

  // Responses published by the backend and not yet consumed. More responses than requests
  // outstanding is a protocol error (RING_RESPONSE_PROD_OVERFLOW, but against what we
  // actually posted rather than the ring size).
  RingCheck unconsumed_responses() const {
    const RingIdx rsp_prod = detail::load_acquire(sring_->rsp_prod);
    const std::uint32_t avail = rsp_prod - rsp_cons_;
    if (avail > req_prod_pvt_ - rsp_cons_) return {0, RingError::BadProducerIndex};
    return {avail, RingError::None};
  }
  // Copy the next response out of the ring. Caller has seen unconsumed_responses() > 0.
  void consume_response(Rsp& out) {
    detail::copy_once(out, &entries_[rsp_cons_++ & (nr_ents_ - 1)].rsp);
  }

  // RING_FINAL_CHECK_FOR_RESPONSES: before sleeping, ask for a notification on the next
  // response (rsp_event = rsp_cons + 1) and look once more to close the race.
  RingCheck final_check_for_responses() {
    RingCheck c = unconsumed_responses();
    if (!c.ok() || c.count != 0) return c;
    detail::store_relaxed(sring_->rsp_event, rsp_cons_ + 1);
    detail::full_barrier();
    return unconsumed_responses();
  }

 private:
  SringHeader* sring_ = nullptr;
  Entry* entries_ = nullptr;
  RingIdx req_prod_pvt_ = 0;
  RingIdx req_prod_pushed_ = 0;
  RingIdx rsp_cons_ = 0;
  std::uint32_t nr_ents_ = 0;
};

// Backend view: consumes requests, produces responses.
template <typename Req, typename Rsp>
class BackRing {
 public:
  using Entry = SringEntry<Req, Rsp>;
  static_assert(std::is_trivially_copyable_v<Req> && std::is_trivially_copyable_v<Rsp>);

  BackRing() = default;

  // BACK_RING_ATTACH: the frontend initialised the page; the backend never re-initialises it.
  bool attach(void* sring, std::size_t bytes, RingIdx start = 0) {
    nr_ents_ = ring_size<Req, Rsp>(bytes);
    if (sring == nullptr || nr_ents_ == 0) return false;
    sring_ = static_cast<SringHeader*>(sring);
    entries_ = reinterpret_cast<Entry*>(static_cast<std::uint8_t*>(sring) + sizeof(SringHeader));
    rsp_prod_pvt_ = rsp_prod_pushed_ = start;
    req_cons_ = start;
    return true;
  }

  std::uint32_t size() const { return nr_ents_; }
  RingIdx req_cons() const { return req_cons_; }
  RingIdx rsp_prod_pvt() const { return rsp_prod_pvt_; }
  SringHeader* sring() const { return sring_; }

  // Requests published by the frontend and not yet consumed. A producer index claiming more
  // unanswered requests than the ring holds (RING_REQUEST_PROD_OVERFLOW) is a protocol error:
  // it is never used as a count.
  RingCheck unconsumed_requests() const {
    const RingIdx req_prod = detail::load_acquire(sring_->req_prod);
    const std::uint32_t unanswered = req_prod - rsp_prod_pvt_;
    const std::uint32_t consumed = req_cons_ - rsp_prod_pvt_;
    // Too far ahead, or moved back behind what we already consumed.
    if (unanswered > nr_ents_ || unanswered < consumed) return {0, RingError::BadProducerIndex};
    return {unanswered - consumed, RingError::None};
  }
  // Copy the next request out of the ring (RING_COPY_REQUEST). The copy is the only thing the
  // caller may look at: the guest can rewrite the slot at any time.
  void consume_request(Req& out) {
    detail::copy_once(out, &entries_[req_cons_++ & (nr_ents_ - 1)].req);
  }
  // Raw slot address for the request at index `idx`, for callers that must copy a different
  // type out of the same slot (e.g. blkif_request_discard). Copy with copy_request_as().
  template <typename T>
  void copy_request_as(RingIdx idx, T& out) const {
    static_assert(sizeof(T) <= sizeof(Entry));
    detail::copy_once(out, &entries_[idx & (nr_ents_ - 1)]);
  }
  void skip_request() { ++req_cons_; }

  // Slot for the next response, filled in place; or copy one in with produce_response().
  Rsp* next_response() { return &entries_[rsp_prod_pvt_++ & (nr_ents_ - 1)].rsp; }
  void produce_response(const Rsp& rsp) { std::memcpy(next_response(), &rsp, sizeof(Rsp)); }

  // RING_PUSH_RESPONSES_AND_CHECK_NOTIFY.
  bool push_responses() {
    const RingIdx old_prod = rsp_prod_pushed_;  // see FrontRing::push_requests
    const RingIdx new_prod = rsp_prod_pushed_ = rsp_prod_pvt_;
    detail::store_release(sring_->rsp_prod, new_prod);
    detail::full_barrier();
    return detail::needs_notify(old_prod, new_prod, detail::load_relaxed(sring_->rsp_event));
  }
  void push_responses_no_check() {
    rsp_prod_pushed_ = rsp_prod_pvt_;
    detail::store_release(sring_->rsp_prod, rsp_prod_pvt_);
  }

  // RING_FINAL_CHECK_FOR_REQUESTS.
  RingCheck final_check_for_requests() {
    RingCheck c = unconsumed_requests();
    if (!c.ok() || c.count != 0) return c;
    detail::store_relaxed(sring_->req_event, req_cons_ + 1);
    detail::full_barrier();
    return unconsumed_requests();
  }

 private:
  SringHeader* sring_ = nullptr;
  Entry* entries_ = nullptr;
  RingIdx rsp_prod_pvt_ = 0;
  RingIdx rsp_prod_pushed_ = 0;
  RingIdx req_cons_ = 0;
  std::uint32_t nr_ents_ = 0;
};

}  // namespace pvio::ring
