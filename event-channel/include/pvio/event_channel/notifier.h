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
  // Neither is owned: the shared_info mapping and the upcall eventfd outlive this.
  UpcallNotifier(shared_info* si, int upcall_fd) : si_(si), upcall_fd_(upcall_fd) {}
  void notify(evtchn_port_t port) override;
  void upcall() override;

 private:
  shared_info* si_;
  int upcall_fd_;
};

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
