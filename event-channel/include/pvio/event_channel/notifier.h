// How an event reaches the domain that owns the destination port. One interface, two
// deliveries (and their KVM counterparts):
//  - UpcallNotifier, towards a guest: set the port pending in the guest's shared_info, then,
//    when Xen would kick the vCPU, signal the domain's upcall eventfd (in the KVM VMM that
//    eventfd is an irqfd injecting the upcall vector).
//  - EventfdDoorbell, towards Dom0: one eventfd per destination port that the Dom0 service
//    polls (in the KVM VMM, an ioeventfd on the doorbell register with datamatch = port).
#pragma once

#include <cstdint>
#include <vector>

#include "pvio/xen/event_channel.h"

namespace pvio::evtchn {

class Notifier {
 public:
  virtual ~Notifier() = default;
  // Raise an event on `port` of the destination domain.
  virtual void notify(evtchn_port_t port) = 0;
  // Wake the destination to rescan without a new event (EVTCHNOP_unmask re-raising a held
  // event). Destinations without a shared_info have nothing to rescan.
  virtual void upcall() {}
};

// Add 1 to an eventfd (a full counter, EAGAIN, is already a pending wake-up). Returns false
// only on a real error such as a closed fd.
bool eventfd_signal(int fd);
// Blocking read of an eventfd: returns the count consumed, 0 on error.
std::uint64_t eventfd_wait(int fd);
// New non-semaphore eventfd with CLOEXEC (and NONBLOCK when asked); -errno on failure.
int eventfd_create(bool nonblocking);

class UpcallNotifier final : public Notifier {
 public:
  // Neither is owned: the shared_info mapping and the upcall eventfd outlive this. With
  // `wake_pollers`, `si` must begin a whole 4 KiB page (the guest's shared_info page), and a
  // port newly set pending also wakes a SCHEDOP_poll waiting on it (two_level::poll_waiters).
  UpcallNotifier(shared_info* si, int upcall_fd, bool wake_pollers = false)
      : si_(si), upcall_fd_(upcall_fd), wake_pollers_(wake_pollers) {}
  void notify(evtchn_port_t port) override;
  void upcall() override;

 private:
  shared_info* si_;
  int upcall_fd_;
  bool wake_pollers_;
};

// SCHEDOP_poll's two halves (two_level.h, "SCHEDOP_poll without a busy wait"). The poller
// waits up to timeout_ns for `port` to become pending in the shared_info page `si`: true when
// it is. May return false early (a signal, another port of the same word); the caller rechecks.
bool wait_pending(shared_info& si, evtchn_port_t port, std::int64_t timeout_ns);
// The sender: wake pollers of the word holding `port`, if any are counted.
void wake_pollers(shared_info& si, evtchn_port_t port);

class EventfdDoorbell final : public Notifier {
 public:
  // Route events on `port` to `fd` (not owned); -1 removes the route.
  void set(evtchn_port_t port, int fd);
  int fd(evtchn_port_t port) const;
  // Events for a port without a route are dropped, as Xen drops sends to an unbound port.
  void notify(evtchn_port_t port) override;

 private:
  std::vector<int> fds_;
};

}  // namespace pvio::evtchn
