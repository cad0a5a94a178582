// pvio-netback's control plane (Linux xen-netback's xenbus.c is the model): watches
// /local/domain/0/backend/vif/<domid>/<devid>, publishes the backend's features in one
// transaction, reads the frontend's ring references, event channels and features, attaches to
// the domain through the domain control protocol and runs one datapath Vif per connected vif,
// each a port of the service's learning switch. It never touches a ring.
//
// Handshake per vif: probe -> uplink port (backend `uplink` key), feature nodes,
// hotplug-status, InitWait; frontend Connected -> read keys, map rings, bind event channels ->
// Connected; frontend Closing/Closed -> stop the datapath, Closing -> Closed; frontend back to
// Initialising -> InitWait again. A protocol violation on the datapath -> `error` node,
// datapath stopped, Closing (xenbus_dev_fatal). A restarted service that finds a vif it did not
// connect itself Connected switches it to Closing, so the frontend reconnects.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "pvio/netback/dpdk.h"
#include "pvio/xen/xen.h"

namespace pvio::xs {
class Client;
}

namespace pvio::netback {

struct ServiceOptions {
  std::string xenstore_socket;
  // How long the service waits for a restarted pvio-xenstored (reconnecting with backoff)
  // before it gives up and exits with an error.
  int xenstore_give_up_ms = 30000;
  unsigned max_queues = 4;  // multi-queue-max-queues
  // Uplinks shared by every vif ("tap:NAME", "af_packet:IFACE", "memif:SOCKET").
  std::vector<std::string> uplinks;
  // A vif's own uplink when its backend has no `uplink` key: "tap" (a TAP interface named
  // after the vif) or "none".
  std::string default_vif_uplink = "none";
  std::string stats_file;  // rewritten every second when set
  DpdkOptions dpdk;
  // Where a domain's control socket is; default: control::domain_socket_path(domid).
  std::function<std::string(domid_t)> domain_socket;
};

class VifDevice;  // one backend/vif/<domid>/<devid>, private to xenbus.cc
class Switch;
class EthdevPort;

class NetbackService {
 public:
  // Starts DPDK, creates the shared uplinks, connects to xenstore and sets the watch. Throws
  // std::runtime_error when it cannot.
  explicit NetbackService(ServiceOptions options);
  ~NetbackService();
  NetbackService(const NetbackService&) = delete;
  NetbackService& operator=(const NetbackService&) = delete;

  int run();  // serves watch events until stop(); returns 0
  void stop() { stop_.store(true, std::memory_order_relaxed); }  // async-signal-safe
  void rescan();
  std::size_t connected_vifs() const { return connected_.load(std::memory_order_relaxed); }
  Switch& learning_switch() { return *switch_; }
  // The stats of every vif and uplink, one line each (what the stats file holds).
  std::string stats_text() const;

 private:
  void write_stats();

  ServiceOptions opts_;
  std::unique_ptr<Switch> switch_;
  std::vector<std::unique_ptr<EthdevPort>> uplinks_;
  std::unique_ptr<xs::Client> xs_;
  std::map<std::pair<domid_t, std::uint32_t>, std::unique_ptr<VifDevice>> vifs_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> fatal_pending_{false};
  std::atomic<std::size_t> connected_{0};
};

}  // namespace pvio::netback
