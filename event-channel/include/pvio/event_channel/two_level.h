// Xen's 2-level event-channel operations on a shared_info page: the sender's side
// (evtchn_2l_set_pending / evtchn_2l_unmask in xen/common/event_2l.c) and the guest's upcall
// scan (xen_evtchn_do_upcall in Linux's drivers/xen/events/events_2l.c).
//
// Freestanding (no OS calls, no allocation), so guests, Dom0 services and the hypervisor share
// it. The page is shared with an untrusted peer: every bit operation is a single atomic on
// one word, ports are range-checked, and nothing read from the page is used as an index
// except after masking to the array size.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

#include "pvio/xen/event_channel.h"

namespace pvio::evtchn::two_level {

namespace detail {
inline std::atomic_ref<xen_ulong_t> word(xen_ulong_t& w) { return std::atomic_ref<xen_ulong_t>(w); }
inline xen_ulong_t bit(evtchn_port_t port) { return xen_ulong_t{1} << (port % kBitsPerWord); }

// Returns the old value of the bit.
inline bool test_and_set(xen_ulong_t* words, unsigned idx) {
  const xen_ulong_t b = xen_ulong_t{1} << (idx % kBitsPerWord);
  return (word(words[idx / kBitsPerWord]).fetch_or(b, std::memory_order_seq_cst) & b) != 0;
}
inline bool test_and_clear(xen_ulong_t* words, unsigned idx) {
  const xen_ulong_t b = xen_ulong_t{1} << (idx % kBitsPerWord);
  return (word(words[idx / kBitsPerWord]).fetch_and(~b, std::memory_order_seq_cst) & b) != 0;
}
inline bool test(xen_ulong_t* words, unsigned idx) {
  const xen_ulong_t b = xen_ulong_t{1} << (idx % kBitsPerWord);
  return (word(words[idx / kBitsPerWord]).load(std::memory_order_seq_cst) & b) != 0;
}

// vcpu_mark_events_pending: true when upcall_pending went 0 -> 1, i.e. the vCPU must be kicked.
inline bool mark_events_pending(vcpu_info& v) {
  return std::atomic_ref<std::uint8_t>(v.evtchn_upcall_pending)
             .exchange(1, std::memory_order_seq_cst) == 0;
}
}  // namespace detail

inline bool port_valid(evtchn_port_t port) { return port < kNrEventChannels; }

// evtchn_2l_set_pending for vCPU 0. Returns true when an upcall must be delivered (the port was
// newly pending, not masked, its selector bit newly set and upcall_pending newly set).
// *newly, when given, says whether the pending bit itself was newly set (what wakes a
// SCHEDOP_poll on the port, masked or not).
inline bool set_pending(shared_info& s, evtchn_port_t port, bool* newly = nullptr) {
  if (newly != nullptr) *newly = false;
  if (!port_valid(port)) return false;
  if (detail::test_and_set(s.evtchn_pending, port)) return false;
  if (newly != nullptr) *newly = true;
  if (detail::test(s.evtchn_mask, port)) return false;
  if (detail::test_and_set(&s.vcpu_info[0].evtchn_pending_sel, port / kBitsPerWord)) return false;
  return detail::mark_events_pending(s.vcpu_info[0]);
}

inline void mask(shared_info& s, evtchn_port_t port) {
  if (port_valid(port)) detail::test_and_set(s.evtchn_mask, port);
}

// evtchn_2l_unmask: clear the mask; an event that arrived while masked is re-raised. Returns
// true when an upcall must be delivered.
inline bool unmask(shared_info& s, evtchn_port_t port) {
  if (!port_valid(port)) return false;
  if (!detail::test_and_clear(s.evtchn_mask, port)) return false;
  if (!detail::test(s.evtchn_pending, port)) return false;
  if (detail::test_and_set(&s.vcpu_info[0].evtchn_pending_sel, port / kBitsPerWord)) return false;
  return detail::mark_events_pending(s.vcpu_info[0]);
}

// SCHEDOP_poll without a busy wait, across processes. Xen wakes a vCPU polling a port when
// the port becomes pending (evtchn_check_pollers). Here the poller is pvio-hv's vCPU thread and
// the sender may be a Dom0 service in another process, so they meet in the page that holds
// shared_info (shared by both through the guest's memory file):
//  - pvio's word after the ABI structure counts the threads polling (a pvio extension: Xen
//    defines nothing past shared_info, and a guest that writes it only changes its own
//    wake-ups or costs its own senders a wake call);
//  - a poller sleeps on the 32-bit futex word that holds its port's pending bit;
//  - a sender that newly set a pending bit wakes that word when pollers are counted.
// Both take these only on a whole 4 KiB page that begins with shared_info.
inline constexpr std::size_t kPollWaitersOffset = 4096 - 64;
static_assert(sizeof(shared_info) <= kPollWaitersOffset, "pvio's poll word follows shared_info");
inline std::uint32_t* poll_waiters(shared_info& page) {
  return reinterpret_cast<std::uint32_t*>(reinterpret_cast<unsigned char*>(&page) + kPollWaitersOffset);
}
// The 32-bit word of evtchn_pending holding `port`'s bit (x86 is little-endian), and that bit.
inline std::uint32_t* pending_futex_word(shared_info& s, evtchn_port_t port) {
  return reinterpret_cast<std::uint32_t*>(s.evtchn_pending) + (port % kNrEventChannels) / 32;
}
inline std::uint32_t pending_futex_bit(evtchn_port_t port) { return std::uint32_t{1} << (port % 32); }

inline void clear_pending(shared_info& s, evtchn_port_t port) {
  if (port_valid(port)) detail::test_and_clear(s.evtchn_pending, port);
}
inline bool is_pending(shared_info& s, evtchn_port_t port) {
  return port_valid(port) && detail::test(s.evtchn_pending, port);
}
inline bool is_masked(shared_info& s, evtchn_port_t port) {
  return port_valid(port) && detail::test(s.evtchn_mask, port);
}

// The guest's upcall: clear upcall_pending before looking (so a later set_pending raises a new
// upcall, no lost wake-up), swap the selector to 0, and for each selected word handle the
// ports that are pending and not masked, clearing each pending bit before its handler runs.
// Repeats while upcall_pending was set again during the scan, as Linux does. Returns the number
// of handler calls.
template <typename Handler>
unsigned do_upcall(shared_info& s, Handler&& handle) {
  vcpu_info& v = s.vcpu_info[0];
  unsigned handled = 0;
  do {
    std::atomic_ref<std::uint8_t>(v.evtchn_upcall_pending).store(0, std::memory_order_seq_cst);
    xen_ulong_t sel = detail::word(v.evtchn_pending_sel).exchange(0, std::memory_order_seq_cst);
    while (sel != 0) {
      const unsigned w = static_cast<unsigned>(std::countr_zero(sel));
      sel &= sel - 1;
      xen_ulong_t bits = detail::word(s.evtchn_pending[w]).load(std::memory_order_seq_cst) &
                         ~detail::word(s.evtchn_mask[w]).load(std::memory_order_seq_cst);
      while (bits != 0) {
        const unsigned b = static_cast<unsigned>(std::countr_zero(bits));
        bits &= bits - 1;
        const evtchn_port_t port = w * kBitsPerWord + b;
        // Only a pending bit we cleared ourselves is an event (the sender may race with us).
        if (!detail::test_and_clear(s.evtchn_pending, port)) continue;
        handle(port);
        ++handled;
      }
    }
  } while (std::atomic_ref<std::uint8_t>(v.evtchn_upcall_pending).load(std::memory_order_seq_cst));
  return handled;
}

}  // namespace pvio::evtchn::two_level
