// The PV disk of the test guest: the bare-metal binding of blkfront's Platform seam (pages from
// the guest allocator, grants from the guest's GrantTable, event channels by hypercall and
// doorbell, xenstore over the ring page) and a small polled/halting event loop around the core.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pvio/blkfront/blkfront.h"
#include "pvio/blkfront/platform.h"

namespace pvio::guest {

// What the guest did during a run that costs a VM exit (or an interrupt) on the PV path.
struct PvCounters {
  uint64_t doorbells = 0;  // EVTCHNOP_send as a doorbell write: one exit, handled in KVM
  uint64_t hlts = 0;       // waits that halted the vCPU: one exit each
  uint64_t polls = 0;      // handle_event calls while waiting
  uint64_t doorbell_cycles = 0;  // TSC cycles spent in doorbell writes (the exit's cost)
};

class BareMetalPlatform final : public blkfront::Platform {
 public:
  bool init(uint64_t tsc_khz);  // xen_init must have run; connects the xenstore ring client

  bool alloc_pages(unsigned order, blkfront::GuestPages& out) override;
  void free_pages(unsigned order, const blkfront::GuestPages& pages) override;
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
  void log(blkfront::LogLevel level, const char* msg) override;

  PvCounters counters;
  uint64_t khz() const { return khz_; }

 private:
  uint64_t khz_ = 1000000;
};

class PvDisk {
 public:
  // Starts blkfront on device/vbd/<devid> and waits up to timeout_ms for Connected. Prints why
  // not and returns false on failure.
  bool open(uint64_t tsc_khz, uint32_t devid, const blkfront::Limits& limits,
            uint32_t timeout_ms);
  blkfront::Blkfront& front() { return *front_; }
  BareMetalPlatform& platform() { return platform_; }
  uint64_t sectors() const { return front_->disk().sectors; }

  void submit(blkfront::BlockIo* io) { front_->submit(io); }
  // Consumes responses (completion callbacks run here). With `wait`, when nothing completed,
  // spins for up to poll_cycles TSC cycles and then halts until the next upcall. When nothing
  // completed it also follows the backend's state (a restarted backend closes the device and
  // offers it again): I/Os in flight are kept and resubmitted on the new connection.
  // The spin adapts between 0 and poll_cycles as KVM's halt polling does (set_adaptive(false):
  // always poll_cycles): a halt that ended within poll_cycles would have been caught by a
  // longer spin, so the budget doubles (from 10 us); a longer one halves it.
  void process(bool wait, uint64_t poll_cycles);
  void set_adaptive(bool on) { adaptive_ = on; }
  uint64_t spin_budget_cycles() const { return budget_; }
  // Synchronous single I/O on `pages` (for the cross-check modes). Returns the I/O's status.
  blkfront::IoStatus rw_sync(bool write, uint64_t sector, uint32_t nr_sectors, void* buf);
  blkfront::IoStatus flush_sync();
  // A watch fired (or a failed handshake step is due again): advance the handshake. True when
  // it ran backend_changed(). process() calls it; a caller that waits its own way (one queue
  // per vCPU) calls it from the vCPU that owns xenstore.
  bool follow_backend();

 private:
  void probe_access_cost(uint64_t khz);

  BareMetalPlatform platform_;
  blkfront::Blkfront* front_ = nullptr;
  evtchn_port_t port_ = 0;
  bool adaptive_ = true;
  uint64_t budget_ = ~uint64_t{0};  // the spin budget in TSC cycles (starts at the maximum)
  uint64_t halt_floor_ = ~uint64_t{0};  // the shortest halt seen: what a halt costs by itself
  bool backend_pending_ = false;  // a watch fired during a backoff
  uint64_t retry_at_ = 0;         // TSC of the next try after a failed step; 0: none due
};

}  // namespace pvio::guest
