// The user-mode binding of the blkfront core: one PV disk of a user-mode guest domain
// (pvio::domain::Domain). The Platform seam is implemented over the domain (its RAM, grant
// table and event channels) and an XenstoreAccess. The core is single-threaded, so every call
// into it holds the core lock: the core thread (fed by a submission queue, so any number of
// threads may submit I/O concurrently; it also runs the handshake and xenstore watches) or,
// for ring events, the domain loop thread itself, which serves the responses in place when
// the core is free instead of handing them over:
//
//   domain loop thread --(ring upcall, core free)--> handle_all_events() in place
//                      --(ring upcall, core busy)--> wake eventfd --> core thread
//   submitters ---------(BlockIo queue)-----------> wake eventfd --> core thread
//
// Completion callbacks (BlockIo::done) run with the core lock held, on the core thread or on
// the domain loop thread; they may resubmit (straight into the core) and must not block.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "pvio/blkfront/blkfront.h"
#include "pvio/blkfront_user/xenstore_access.h"

namespace pvio::domain {
class Domain;
}

namespace pvio::blkfront::user {

struct DeviceConfig {
  std::uint32_t devid = 51712;  // xvda
  Limits limits;
};

class Device {
 public:
  // Starts the core thread; the device is not connected until connect().
  Device(domain::Domain& dom, std::unique_ptr<XenstoreAccess> xs, const DeviceConfig& cfg);
  ~Device();  // closes the device (if connected) and stops the core thread
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  // start() + the XenBus handshake, on the core thread. 0 or a negative Xen errno.
  int connect(std::uint32_t timeout_ms);
  // Orderly close; outstanding I/Os complete with NoDevice.
  int close(std::uint32_t timeout_ms);

  // Asynchronous: thread-safe; io->done runs on the core thread.
  void submit(BlockIo* io);

  // Blocking helpers for any thread. Offsets and lengths in bytes, multiples of 512. Data is
  // copied through the core's granted pool pages.
  IoStatus read(std::uint64_t offset, void* buf, std::size_t len);
  IoStatus write(std::uint64_t offset, const void* buf, std::size_t len);
  IoStatus flush();
  IoStatus discard(std::uint64_t offset, std::uint64_t len);

  // Snapshots taken on the core thread.
  DiskInfo disk();
  Negotiated negotiated();
  Stats stats();
  XenbusState state();
  std::uint64_t size_bytes() { return disk().sectors * 512; }

  // Guest pages for zero-copy I/O (BlockIo::pages): `n` contiguous pages of domain RAM that
  // stay allocated for the device's lifetime. 0 or -ENOMEM.
  int alloc_data_pages(std::uint32_t n, std::vector<DataPage>* out);

  // Runs fn on the core thread and waits for it.
  void run_on_core(const std::function<void()>& fn);

 private:
  class DomainPlatform;
  class CoreOwner;
  void core_loop();
  static std::chrono::milliseconds retry_delay(std::uint32_t failures_in_a_row);
  void wake();
  void ring_event();      // domain loop thread: an upcall on one of the rings' ports
  bool owns_core() const;  // this thread holds core_mu_ for this device
  IoStatus run_sync(BlockIo& io);

  domain::Domain& dom_;
  std::unique_ptr<XenstoreAccess> xs_;
  DeviceConfig cfg_;
  std::unique_ptr<DomainPlatform> platform_;
  std::unique_ptr<std::uint8_t[]> storage_raw_;
  std::unique_ptr<Blkfront> core_;

  std::mutex core_mu_;  // held by whoever calls into core_ (and xs_ for it)
  int wake_fd_ = -1;
  std::atomic<bool> ring_pending_{false};
  std::atomic<bool> stop_{false};
  bool closed_ = false;  // close() was called (the destructor does not repeat it)
  std::mutex mu_;  // guards submissions_, calls_
  std::vector<BlockIo*> submissions_;
  std::vector<std::function<void()>*> calls_;
  std::thread core_thread_;
};

}  // namespace pvio::blkfront::user
