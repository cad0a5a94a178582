// The PV NIC of the test guest: the bare-metal binding of netfront's Platform seam (pages from
// the guest allocator, grants from the guest's GrantTable, event channels by hypercall and
// doorbell, xenstore over the shared ring page) and a polled event loop around the core.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pv_disk.h"
#include "pvio/netfront/netfront.h"
#include "pvio/netfront/platform.h"

namespace pvio::guest {

class NetPlatform final : public netfront::Platform {
 public:
  bool init(uint64_t tsc_khz);  // xen_init must have run

  bool alloc_page(netfront::GuestPage& out) override;
  void free_page(const netfront::GuestPage& page) override;
  grant_ref_t grant_access(domid_t domid, uint64_t gfn, bool readonly) override;
  bool end_access(grant_ref_t ref) override;
  int evtchn_alloc_unbound(domid_t remote, evtchn_port_t& port) override;
  void evtchn_close(evtchn_port_t port) override;
  void notify(evtchn_port_t port) override;
  int xs_read(const char* path, char* buf, size_t cap, size_t& len) override;
  int xs_write(const char* path, const char* value) override;
  int xs_remove(const char* path) override;
  int xs_watch(const char* path) override;
  void xs_unwatch(const char* path) override;
  int xs_wait(uint32_t timeout_ms) override;
  void log(netfront::LogLevel level, const char* msg) override;

  PvCounters counters;  // doorbells, halts, polls: what the datapath exits for
  uint64_t khz() const { return khz_; }

 private:
  uint64_t khz_ = 1000000;
};

class PvNic {
 public:
  // Starts netfront on device/vif/<devid> and waits up to timeout_ms for both ends Connected.
  // Prints why not and returns false on failure.
  bool open(uint64_t tsc_khz, uint32_t devid, uint32_t timeout_ms);
  netfront::Netfront& front() { return *front_; }
  NetPlatform& platform() { return platform_; }
  const uint8_t* mac() const { return front_->mac(); }

  // While polling, the backend's notifications are masked in shared_info: an upcall at CPL3
  // costs a trap into the (emulated) kernel, and the poll finds the work anyway.
  void mask_events();
  void unmask_events();
  // One pass over the rings: tx responses reclaimed, received packets handed to the handler.
  void poll();
  // Halts until the backend's next notification on either port unless one came since the
  // last call (ports masked again on return).
  void wait_event();

 private:
  NetPlatform platform_;
  netfront::Netfront* front_ = nullptr;
  evtchn_port_t tx_port_ = 0, rx_port_ = 0;
  uint64_t seen_ = 0;
};

}  // namespace pvio::guest
