// The network backend's datapath for one vif (Linux xen-netback's interface.c/netback.c/rx.c
// are the model): per queue one tx and one rx ring granted by the frontend, served by one
// thread that polls while busy and sleeps on the event channels when idle. Tx packets are
// parsed once (tx_request.h), grant-copied into mbufs and handed to the switch; packets the
// switch delivers to the vif are grant-copied into the rx buffers the frontend posted.
//
// The datapath never touches xenstore: the control plane (xenbus.h) negotiates and builds a
// VifConfig. Set-up errors throw; once running, malformed packets are answered on the ring and
// counted, and a protocol violation stops that vif only (on_fatal tells the control plane).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pvio/event_channel/notifier.h"
#include "pvio/grant_table/guest_memory.h"
#include "pvio/netback/switch.h"
#include "pvio/netback/tx_request.h"
#include "pvio/xen/xen.h"

namespace pvio::netback {

struct VifQueueConfig {
  grant_ref_t tx_ring_ref = 0;
  grant_ref_t rx_ring_ref = 0;
  // One event channel (tx_kick_fd == rx_kick_fd, tx_port == rx_port) or split ones.
  int tx_kick_fd = -1;  // readable when the frontend notified us (not owned)
  int rx_kick_fd = -1;
  evtchn::Notifier* notifier = nullptr;
  evtchn_port_t tx_port = 0;  // as the notifier knows them
  evtchn_port_t rx_port = 0;
};

struct VifConfig {
  std::string name;  // vif<domid>.<devid>
  domid_t frontend_domid = 0;
  domid_t backend_domid = 0;
  const GuestMemory* memory = nullptr;          // outlives the vif
  std::vector<std::uint64_t> grant_table_gfns;  // the frontend's grant-table frames
  MacAddr mac{};                                // the only source MAC the guest may use

  // What the frontend negotiated.
  bool rx_notify = true;         // feature-rx-notify; without it the rx ring is polled
  bool sg = false;               // feature-sg: packets may span several rx buffers
  bool csum_offload = true;      // !feature-no-csum-offload: rx packets may carry csum_blank
  bool multicast_control = false;  // request-multicast-control
  bool gso_tcpv4 = false;        // feature-gso-tcpv4: rx packets may carry a GSO extra
  bool gso_tcpv6 = false;        // feature-gso-tcpv6

  // Credit limit (the `rate` key): credit_bytes per credit_usec; 0 bytes means unlimited.
  std::uint64_t credit_bytes = 0;
  std::uint64_t credit_usec = 0;

  unsigned burst = 64;             // packets per ring pass
  std::uint64_t spin_ns = 50'000;  // busy-poll this long after the last work before sleeping
  std::uint64_t rx_poll_ns = 1'000'000;  // rx ring re-check period without feature-rx-notify

  std::vector<VifQueueConfig> queues;  // 1..kMaxQueues

  // Control ring (feature-ctrl-ring), served by queue 0's thread; optional.
  bool ctrl_ring = false;
  grant_ref_t ctrl_ring_ref = 0;
  int ctrl_kick_fd = -1;        // may equal a queue's kick fd
  evtchn_port_t ctrl_port = 0;  // through queues[0].notifier

  // Called once, from a datapath thread, on a protocol violation; the vif stops serving.
  std::function<void(unsigned queue, const std::string& why)> on_fatal;
};

struct VifQueueStats {
  std::uint64_t tx_packets = 0, tx_bytes = 0;   // guest -> switch
  std::uint64_t rx_packets = 0, rx_bytes = 0;   // switch -> guest
  std::uint64_t tx_errors[kTxErrorCount] = {};  // answered NETIF_RSP_ERROR (or fatal), by cause
  std::uint64_t tx_mcast = 0;                   // multicast add/del control requests
  std::uint64_t tx_gso = 0, rx_gso = 0;         // GSO packets taken / delivered as such
  std::uint64_t rx_segmented = 0;               // GSO packets cut into segments for this vif
  std::uint64_t drops[kDropCount] = {};
  std::uint64_t grant_errors = 0;               // grant copies refused (fatal)
  std::uint64_t ring_errors = 0;                // impossible producer index (fatal)
  std::uint64_t notifications = 0;
  std::uint64_t credit_waits = 0;               // times tx stopped for the credit limit
  std::uint64_t tx_error_total() const {
    std::uint64_t n = 0;
    for (std::size_t i = 1; i < kTxErrorCount; ++i) n += tx_errors[i];
    return n;
  }
};

class VifQueue;  // per-queue state, private to the datapath
class CtrlRing;
struct HashConfig;

class Vif : public Port {
 public:
  // Maps every ring. Throws std::invalid_argument / std::system_error when that fails.
  Vif(VifConfig config, Switch& sw);
  // Detaches from the switch, stops the threads, unmaps the rings.
  ~Vif() override;

  void start();  // attaches to the switch and starts one thread per queue
  void stop();   // idempotent

  bool broken() const;
  std::vector<VifQueueStats> stats() const;
  VifQueueStats total_stats() const;
  const VifConfig& config() const { return config_; }
  bool wants_multicast(const MacAddr& dst) const override;
  unsigned select_queue(const rte_mbuf* m) const override;
  std::uint64_t ctrl_requests() const;

 private:
  friend class VifQueue;
  void worker(unsigned q);

  VifConfig config_;
  Switch& switch_;
  std::unique_ptr<HashConfig> hash_;
  std::unique_ptr<CtrlRing> ctrl_;
  std::vector<std::unique_ptr<VifQueue>> queues_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  int stop_fd_ = -1;
  bool running_ = false;
  // Subscribed multicast groups (XEN_NETBK_MCAST_MAX = 64 in Linux), written by the queue
  // threads' tx path, read by forwarding threads: one word per entry, 0 when free.
  std::array<std::atomic<std::uint64_t>, 64> mcast_{};
};

}  // namespace pvio::netback
