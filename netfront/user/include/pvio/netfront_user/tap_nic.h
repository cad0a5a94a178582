// The user-mode binding of the netfront core: one PV NIC of a user-mode guest domain
// (pvio::domain::Domain), exposed on the host as a TAP interface with IFF_VNET_HDR, so the
// Linux stack (ip, ping, iperf3) runs over the ring, grants and event channels, and GSO and
// checksum offload pass through in both directions:
//
//   TAP read (virtio_net_hdr + frame) --> Netfront::send --> tx ring --> backend
//   backend --> rx ring --> Netfront rx handler --> TAP writev (virtio_net_hdr + rx pages)
//
// The core is single-threaded; every call into it holds the core lock. The NIC thread runs
// the XenBus handshake (xenstore watches) and reads the TAP; ring upcalls are served on the
// domain loop thread when the core is free, else handed to the NIC thread (as blkfront/user).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pvio/blkfront_user/xenstore_access.h"
#include "pvio/netfront/netfront.h"

namespace pvio::domain {
class Domain;
}

namespace pvio::netfront::user {

using XenstoreAccess = blkfront::user::XenstoreAccess;

struct TapConfig {
  std::uint32_t devid = 0;  // device/vif/<devid>
  std::string ifname;       // TAP name; empty: pvnet<domid>.<devid>
  Limits limits;
};

struct TapStats {
  Stats core;
  std::uint64_t tap_rx_dropped = 0;  // frames read from the TAP that could not be sent
  std::uint64_t tap_tx_dropped = 0;  // received packets the TAP refused or we could not parse
};

class TapNic {
 public:
  // Creates the TAP interface (down; the user configures it) and starts the NIC thread,
  // which connects once the toolstack has written the vif nodes, and reconnects whenever
  // the backend comes back. Throws std::system_error if the TAP cannot be created.
  TapNic(domain::Domain& dom, std::unique_ptr<XenstoreAccess> xs, const TapConfig& cfg);
  ~TapNic();  // closes the device (if connected) and removes the TAP
  TapNic(const TapNic&) = delete;
  TapNic& operator=(const TapNic&) = delete;

  const std::string& ifname() const { return ifname_; }
  bool carrier();
  XenbusState state();
  TapStats stats();

 private:
  class DomainPlatform;
  void nic_loop();
  void wake();
  void ring_event();
  void handle_events_locked();
  void on_carrier_change_locked();
  void read_tap_locked();
  bool send_frame_locked(const std::uint8_t* buf, std::size_t len, bool more);
  static void rx_cb(void* cookie, const RxPacket& pkt);
  void deliver(const RxPacket& pkt);

  domain::Domain& dom_;
  std::unique_ptr<XenstoreAccess> xs_;
  TapConfig cfg_;
  std::string ifname_;
  int tap_fd_ = -1;
  std::unique_ptr<DomainPlatform> platform_;
  std::unique_ptr<std::uint8_t[]> storage_raw_;
  std::unique_ptr<Netfront> core_;

  std::mutex core_mu_;
  int wake_fd_ = -1;
  std::atomic<bool> ring_pending_{false};
  std::atomic<bool> stop_{false};
  bool carrier_ = false;         // as last told to the TAP (TUNSETCARRIER)
  std::vector<std::uint8_t> held_;  // a frame the tx ring had no room for
  std::vector<std::uint8_t> buf_;
  TapStats extra_;
  std::thread nic_thread_;
};

}  // namespace pvio::netfront::user
