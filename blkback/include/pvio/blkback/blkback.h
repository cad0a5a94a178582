// The block backend's datapath for one virtual block device (Linux xen-blkback's blkback.c is
// the model): per queue, consume a batch of requests from the shared ring, parse them, map
// their grants (or take them from the persistent-grant cache), hand them to the I/O engine in
// one batch, and answer on the ring with one push and at most one notification per batch.
//
// The datapath never touches xenstore: the control plane (xenbus.h) negotiates the features
// and ring references and builds a DeviceConfig. Set-up errors throw; once running, guest
// errors are answered on the ring and counted, and a broken ring stops that device only.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pvio/blkback/io_engine.h"
#include "pvio/blkback/request.h"
#include "pvio/event_channel/notifier.h"
#include "pvio/grant_table/guest_memory.h"
#include "pvio/xen/xen.h"

namespace pvio::blkback {

// One queue: a ring of 2^ring_page_order pages granted by the frontend and an event channel.
struct QueueConfig {
  std::vector<grant_ref_t> ring_refs;  // ring-ref / ring-refN, 1 << ring_page_order entries
  int kick_fd = -1;                    // readable when the frontend notified us (not owned)
  evtchn::Notifier* notifier = nullptr;  // raises `notify_port` towards the frontend
  evtchn_port_t notify_port = 0;       // the port as the notifier knows it
};

struct DeviceConfig {
  domid_t frontend_domid = 0;
  domid_t backend_domid = 0;
  const GuestMemory* memory = nullptr;          // the frontend domain's memory, outlives the device
  std::vector<std::uint64_t> grant_table_gfns;  // the frontend's grant-table frames

  std::string engine = "auto";  // auto, uring, aio, sync, null (make_engine)
  BackingOptions backing;
  unsigned max_in_flight = 64;  // ring requests in service per queue (and engine queue depth)

  // Negotiated features. Discard is offered only when the backing supports it.
  bool persistent = false;
  unsigned max_persistent_grants = 1056;
  unsigned max_indirect_segments = 0;  // 0: no indirect requests
  bool flush = true;
  bool barrier = true;
  bool discard = true;

  // The frontend's request layout (its `protocol` key); x86_32 rings are converted on copy.
  BlkifProtocol protocol = BlkifProtocol::X86_64;

  std::vector<QueueConfig> queues;  // at least one
  unsigned threads = 0;             // worker threads serving the queues (round robin); 0: one per queue, at most one per host CPU
  // After work, a worker keeps looking at its rings and completions for this long before it
  // sleeps on the event channels (0: sleep at once). While it polls, the frontend is not asked
  // for doorbells.
  unsigned poll_us = 0;

  // Called once, from a worker thread, when a queue's ring turned out broken (the frontend
  // published an impossible producer index). The device stops serving that ring.
  std::function<void(unsigned queue)> on_ring_error;
};

struct DeviceStats {
  std::uint64_t requests = 0;      // requests consumed from the rings
  std::uint64_t responses = 0;     // responses written
  std::uint64_t error_responses = 0;  // of which not BLKIF_RSP_OKAY
  std::uint64_t reads = 0, writes = 0, flushes = 0, barriers = 0, discards = 0, indirect = 0;
  std::uint64_t invalid[kRequestErrorCount] = {};  // parse errors by RequestError
  std::uint64_t grant_errors = 0;  // requests refused because a data grant would not map
  std::uint64_t io_errors = 0;     // requests whose engine I/O failed or came back short
  std::uint64_t batches = 0;       // engine submissions
  std::uint64_t notifications = 0; // events sent to the frontend
  std::uint64_t ring_errors = 0;   // rings stopped for a bad producer index
  std::uint64_t persistent_hits = 0, persistent_misses = 0;
  std::uint64_t wakeups = 0;       // times a worker woke from its event channels
  std::uint64_t polled = 0;        // times a polling worker found work without an event
  std::uint64_t poll_budget_ns = 0;  // the adaptive polling budget after the last sleep
  std::uint64_t invalid_total() const {
    std::uint64_t n = 0;
    for (std::uint64_t v : invalid) n += v;
    return n;
  }
};

class Queue;  // per-ring state, private to blkback.cc

class Device {
 public:
  // Opens the backing (one engine per queue), maps every ring. Throws std::system_error or
  // std::invalid_argument when that fails (bad ring refs included).
  explicit Device(DeviceConfig config);
  // Stops the workers, waits for the I/O in flight, answers it, and unmaps every grant.
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // Starts the worker threads. Requests already on the rings are served at once.
  void start();
  // Stops the workers and completes everything in flight (idempotent).
  void stop();

  const BackingInfo& backing() const;
  // The engine serving the queues (what `auto` resolved to).
  std::string_view engine_name() const;
  std::uint64_t nr_sectors() const { return limits_.nr_sectors; }
  const DiskLimits& limits() const { return limits_; }
  unsigned nr_queues() const { return static_cast<unsigned>(queues_.size()); }
  bool ring_broken(unsigned queue) const;
  bool any_ring_broken() const;
  DeviceStats stats() const;

 private:
  void worker(unsigned index);

  DeviceConfig config_;
  DiskLimits limits_;
  std::vector<std::unique_ptr<Queue>> queues_;
  std::vector<std::thread> threads_;
  std::atomic<std::uint64_t> wakeups_{0}, polled_{0}, poll_budget_ns_{0};
  std::atomic<bool> stopping_{false};
  int stop_fd_ = -1;
  bool running_ = false;
};

}  // namespace pvio::blkback
