// Uplinks: DPDK ethdev ports attached to the switch next to the vifs (netback/ports/). A kind
// names the DPDK virtual device: `tap:NAME` (net_tap, a host TAP interface NAME, so the host
// stack sees the guests), `af_packet:IFACE` (net_af_packet on a host interface),
// `memif:SOCKET` (net_memif server on a unix socket), `null` (net_null sink, for benchmarks)
// or `none`.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "pvio/netback/switch.h"

namespace pvio::netback {

struct UplinkSpec {
  std::string kind;  // tap, af_packet, memif, none
  std::string arg;   // interface name or socket path
};
// "kind[:arg]"; false for an unknown kind or a missing argument.
bool parse_uplink(const std::string& s, UplinkSpec* out);
// The DPDK vdev name and devargs for a spec (ports/kinds.cc). Throws std::invalid_argument.
std::pair<std::string, std::string> uplink_devargs(const UplinkSpec& spec);

struct UplinkStats {
  std::uint64_t rx_packets = 0, rx_bytes = 0;  // from the device into the switch
  std::uint64_t tx_packets = 0, tx_bytes = 0;  // from the switch out of the device
  std::uint64_t drops[kDropCount] = {};
};

// One ethdev with one rx and one tx queue. Its own thread takes rx bursts into the switch; what
// the switch sends to it goes out from the forwarding thread itself (send_direct, the tx queue
// under a lock: no hand-off to another thread and no wake-up per batch), GSO segmented and
// partial checksums completed first.
class EthdevPort : public Port {
 public:
  // Creates the vdev, configures and starts it, attaches to the switch and starts the thread.
  // Throws std::runtime_error.
  EthdevPort(const UplinkSpec& spec, Switch& sw, std::uint64_t spin_ns = 20'000);
  ~EthdevPort() override;

  std::uint16_t port_id() const { return port_id_; }
  UplinkStats stats() const;
  bool send_direct(rte_mbuf** pkts, unsigned n) override;

 private:
  void worker();
  // Segments / completes checksums, then tx bursts; frees what the device did not take.
  // The caller holds tx_lock_.
  void transmit(rte_mbuf** pkts, unsigned n);

  Switch& switch_;
  std::string vdev_;
  std::uint16_t port_id_ = 0;
  std::uint64_t spin_ns_;
  int rx_intr_fd_ = -1;  // the device's rx queue 0 interrupt eventfd (memif), or -1: polled
  std::atomic_flag tx_lock_ = ATOMIC_FLAG_INIT;
  std::unique_ptr<rte_mbuf*[]> tx_scratch_;        // segments of one batch (under tx_lock_)
  std::unique_ptr<std::uint32_t[]> tx_len_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  Counter rx_packets_, rx_bytes_, tx_packets_, tx_bytes_;
};

}  // namespace pvio::netback
