// The e1000's wire: an AF_PACKET socket on a host interface, normally the TAP interface that
// pvio-netback serves as an uplink (`--uplink tap:NAME`), so emulated and PV NICs meet in the
// same switch. Frames the guest transmits are sent on the socket from the vCPU thread; one
// thread receives frames into the RX ring and runs the moderation timers, both under the VM's
// device lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <thread>

#include "pvio/hypervisor/devices/e1000.h"

namespace pvio::hv {

class E1000Uplink {
 public:
  E1000Uplink() = default;
  ~E1000Uplink();
  E1000Uplink(const E1000Uplink&) = delete;
  E1000Uplink& operator=(const E1000Uplink&) = delete;

  // Binds a packet socket to `ifname` (which must exist; it is brought up). Returns 0 or
  // -errno; `why` says what failed.
  int open(const std::string& ifname, std::string* why);
  // Sends one frame (non-blocking; a full socket buffer drops it and counts it).
  void send(std::span<const std::uint8_t> frame);
  // Starts the receive/timer thread for `nic`, taking `lock` around every device call.
  void start(E1000* nic, std::mutex* lock);
  void stop();
  // The NIC was unplugged: the receive thread ends at its next wake-up and nothing more is
  // sent. Does not wait (the caller may hold the device lock the thread needs); stop() joins.
  void detach();

  std::uint64_t tx_dropped() const { return tx_dropped_.load(std::memory_order_relaxed); }

 private:
  void run();
  int fd_ = -1;
  int stop_fd_ = -1;  // eventfd that ends the thread
  E1000* nic_ = nullptr;
  std::mutex* lock_ = nullptr;
  std::thread thread_;
  std::atomic<std::uint64_t> tx_dropped_{0};
  std::atomic<bool> detached_{false};
};

}  // namespace pvio::hv
