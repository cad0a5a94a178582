// pvio-blkback's control plane (Linux xen-blkback's xenbus.c is the model): watches
// /local/domain/0/backend/vbd/<domid>/<devid>, publishes the backend's features, reads the
// frontend's ring references and event channels, attaches to the domain through the domain
// control protocol and runs one datapath Device per connected vbd. It never touches a ring.
//
// Handshake per device: probe -> feature nodes + InitWait; frontend Initialised/Connected ->
// map rings, bind event channels, publish sectors/info/sector-size/flush/barrier/discard ->
// Connected; frontend Closing/Closed -> stop the datapath, Closing -> Closed; frontend back
// to Initialising -> InitWait again; a ring protocol error on the datapath (impossible
// producer index) -> `error` node, datapath stopped, Closing (xenbus_dev_fatal in Linux). A
// restarted service that finds a device it did not connect itself in Connected switches it to
// Closing, so the frontend reconnects and resubmits.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "pvio/xen/xen.h"

namespace pvio::xs {
class Client;
}

namespace pvio::blkback {

struct ServiceOptions {
  std::string xenstore_socket;          // pvio-xenstored's socket
  // How long the service waits for a restarted pvio-xenstored (reconnecting with backoff)
  // before it gives up and exits with an error.
  int xenstore_give_up_ms = 30000;
  std::string engine = "auto";          // default engine; a vbd's "engine" node overrides it
  unsigned threads = 0;                 // worker threads per device; 0: one per queue
  unsigned poll_us = 0;                 // DeviceConfig::poll_us; a vbd's "poll-us" node overrides it
  unsigned max_queues = 4;              // multi-queue-max-queues
  unsigned max_ring_page_order = 4;     // max-ring-page-order
  unsigned max_indirect_segments = 32;  // feature-max-indirect-segments (Linux's default)
  bool persistent = true;               // feature-persistent
  // Where a domain's control socket is; default: control::domain_socket_path(domid).
  std::function<std::string(domid_t)> domain_socket;
};

class Vbd;  // one backend/vbd/<domid>/<devid>, private to xenbus.cc

class BlkbackService {
 public:
  // Connects to xenstore and sets the watch. Throws std::runtime_error when it cannot.
  explicit BlkbackService(ServiceOptions options);
  ~BlkbackService();
  BlkbackService(const BlkbackService&) = delete;
  BlkbackService& operator=(const BlkbackService&) = delete;

  // Serves watch events until stop(). Returns 0.
  int run();
  // Thread- and async-signal-safe.
  void stop() { stop_.store(true, std::memory_order_relaxed); }

  // One reconciliation pass over every vbd (run() does this on each watch event).
  void rescan();
  // Number of vbds whose datapath is running (for tests and status output).
  std::size_t connected_devices() const { return connected_.load(std::memory_order_relaxed); }

 private:
  ServiceOptions opts_;
  std::unique_ptr<xs::Client> xs_;
  std::map<std::pair<domid_t, std::uint32_t>, std::unique_ptr<Vbd>> vbds_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> fatal_pending_{false};  // a datapath reported a broken ring
  std::atomic<std::size_t> connected_{0};
};

}  // namespace pvio::blkback
