// The user-mode blkfront binding: the Platform seam over a pvio::domain::Domain, and the core
// thread that serialises every call into the (single-threaded) blkfront core.
#include "pvio/blkfront_user/device.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>

#include "pvio/domain/domain.h"
#include "pvio/event_channel/notifier.h"

namespace pvio::blkfront::user {

namespace {
constexpr char kWatchToken[] = "blkfront";
// The Device whose core lock this thread holds (completion callbacks and nested calls run
// with it held, on the core thread or on the domain loop thread).
thread_local Device* tls_core_owner = nullptr;
}  // namespace

// Marks this thread as the holder of the device's core lock while in scope.
class Device::CoreOwner {
 public:
  explicit CoreOwner(Device& d) : prev_(tls_core_owner) { tls_core_owner = &d; }
  ~CoreOwner() { tls_core_owner = prev_; }
  CoreOwner(const CoreOwner&) = delete;
  CoreOwner& operator=(const CoreOwner&) = delete;

 private:
  Device* prev_;
};

// The seam. Every call comes from a thread holding the core lock (the core calls it).
class Device::DomainPlatform final : public Platform {
 public:
  DomainPlatform(Device& dev, domain::Domain& dom, XenstoreAccess& xs)
      : dev_(dev), dom_(dom), xs_(xs) {}

  // The domain's allocator only hands out fresh pages; runs freed on disconnect are kept
  // here by size and reused on the next connection.
  bool alloc_pages(unsigned order, GuestPages& out) override {
    auto& fl = free_[order];
    std::uint64_t gfn = 0;
    if (!fl.empty()) {
      gfn = fl.back();
      fl.pop_back();
    } else if (dom_.alloc_pages(std::uint64_t{1} << order, &gfn) != 0) {
      return false;
    }
    out.gfn = gfn;
    out.addr = dom_.page(gfn);
    return out.addr != nullptr;
  }
  void free_pages(unsigned order, const GuestPages& pages) override {
    free_[order].push_back(pages.gfn);
  }

  grant_ref_t grant_access(domid_t domid, std::uint64_t gfn, bool readonly) override {
    return dom_.grant_table().grant_access(domid, gfn, readonly);
  }
  bool end_access(grant_ref_t ref) override { return dom_.grant_table().end_access(ref); }

  int evtchn_alloc_unbound(domid_t remote, evtchn_port_t& port) override {
    Device* dev = &dev_;
    const evtchn::PortResult r =
        dom_.alloc_unbound(remote, [dev](evtchn_port_t) { dev->ring_event(); });
    if (r.rc != 0) return r.rc;
    port = r.port;
    return 0;
  }
  void evtchn_close(evtchn_port_t port) override { dom_.close(port); }
  void notify(evtchn_port_t port) override { dom_.send(port); }

  int xs_read(const char* path, char* buf, std::size_t cap, std::size_t& len) override {
    std::string v;
    const int rc = xs_.read(path, &v);
    if (rc != 0) return rc;
    if (v.size() + 1 > cap) return -XEN_ENOSPC;
    std::memcpy(buf, v.data(), v.size());
    buf[v.size()] = '\0';
    len = v.size();
    return 0;
  }
  int xs_write(const char* path, const char* value) override { return xs_.write(path, value); }
  int xs_remove(const char* path) override { return xs_.remove(path); }
  int xs_watch(const char* path) override { return xs_.watch(path, kWatchToken); }
  void xs_unwatch(const char* path) override { xs_.unwatch(path, kWatchToken); }
  int xs_wait(std::uint32_t timeout_ms) override {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      if (xs_.drain_events() > 0) return 0;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) return -XEN_ETIMEDOUT;
      xs_.wait(static_cast<int>(left < 50 ? left : 50));
    }
  }

  void log(LogLevel level, const char* msg) override {
    switch (level) {
      case LogLevel::Debug: spdlog::debug("blkfront: {}", msg); break;
      case LogLevel::Info: spdlog::info("blkfront: {}", msg); break;
      case LogLevel::Warn: spdlog::warn("blkfront: {}", msg); break;
      case LogLevel::Error: spdlog::error("blkfront: {}", msg); break;
    }
  }

 private:
  Device& dev_;
  domain::Domain& dom_;
  XenstoreAccess& xs_;
  std::map<unsigned, std::vector<std::uint64_t>> free_;
};

Device::Device(domain::Domain& dom, std::unique_ptr<XenstoreAccess> xs, const DeviceConfig& cfg)
    : dom_(dom), xs_(std::move(xs)), cfg_(cfg) {
  platform_ = std::make_unique<DomainPlatform>(*this, dom_, *xs_);
  const std::size_t bytes = Blkfront::storage_bytes(cfg_.limits);
  storage_raw_ = std::make_unique<std::uint8_t[]>(bytes + 16);
  auto* aligned = reinterpret_cast<std::uint8_t*>(
      (reinterpret_cast<std::uintptr_t>(storage_raw_.get()) + 15) & ~std::uintptr_t{15});
  core_ = std::make_unique<Blkfront>(*platform_, cfg_.devid, cfg_.limits, aligned, bytes);
  wake_fd_ = evtchn::eventfd_create(true);
  core_thread_ = std::thread([this] { core_loop(); });
}

Device::~Device() {
  const XenbusState st = state();
  if (!closed_ && st != XenbusState::Unknown && st != XenbusState::Closed) close(5000);
  stop_.store(true);
  wake();
  core_thread_.join();
  ::close(wake_fd_);
}

void Device::wake() { evtchn::eventfd_signal(wake_fd_); }

bool Device::owns_core() const { return tls_core_owner == this; }

// Domain loop thread, on an upcall for one of our ports. The responses are served right here
// when the core is free, so a batch of responses costs no hand-over to the core thread (and
// the completions' resubmissions go straight back on the ring from here). When the core
// thread holds the core (a submission batch, a handshake waiting on xenstore), it gets the
// event instead: the flag is set before the try, so the holder or the woken core thread
// always sees it.
void Device::ring_event() {
  ring_pending_.store(true, std::memory_order_release);
  if (stop_.load(std::memory_order_relaxed) || !core_mu_.try_lock()) {
    wake();
    return;
  }
  {
    CoreOwner owner(*this);
    while (ring_pending_.exchange(false, std::memory_order_acq_rel)) core_->handle_all_events();
  }
  core_mu_.unlock();
}

void Device::run_on_core(const std::function<void()>& fn) {
  if (owns_core()) {
    fn();
    return;
  }
  struct Call {
    const std::function<void()>* fn;
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
  } call{&fn, {}, {}, false};
  auto* wrapper = new std::function<void()>([&call] {
    (*call.fn)();
    std::lock_guard lk(call.m);
    call.done = true;
    call.cv.notify_one();
  });
  {
    std::lock_guard lk(mu_);
    calls_.push_back(wrapper);
  }
  wake();
  std::unique_lock lk(call.m);
  call.cv.wait(lk, [&] { return call.done; });
}

int Device::connect(std::uint32_t timeout_ms) {
  int rc = 0;
  run_on_core([&] {
    rc = core_->start();
    if (rc == 0) rc = core_->connect(timeout_ms);
  });
  return rc;
}

int Device::close(std::uint32_t timeout_ms) {
  int rc = 0;
  run_on_core([&] { rc = core_->close(timeout_ms); });
  closed_ = true;
  return rc;
}

void Device::submit(BlockIo* io) {
  // From a completion callback (the core lock is held): the core accepts nested submits.
  if (owns_core()) {
    core_->submit(io);
    return;
  }
  bool was_empty;
  {
    std::lock_guard lk(mu_);
    was_empty = submissions_.empty();
    submissions_.push_back(io);
  }
  // The core thread reads the eventfd before it takes the queue, so one wake-up per
  // empty->non-empty transition is enough.
  if (was_empty) wake();
}

// Backoff after a failed handshake step: 10 ms doubling to 1 s. Without it a backend that
// keeps failing us (a table out of grants, a backend that crashes on connect) turns the
// Closing -> Closed -> Initialising -> InitWait round into a tight loop through xenstore.
std::chrono::milliseconds Device::retry_delay(std::uint32_t failures_in_a_row) {
  constexpr std::uint32_t kFirstMs = 10, kMaxMs = 1000;
  std::uint32_t ms = kFirstMs;
  for (std::uint32_t i = 1; i < failures_in_a_row && ms < kMaxMs; ++i) ms *= 2;
  return std::chrono::milliseconds(ms < kMaxMs ? ms : kMaxMs);
}

void Device::core_loop() {
  using Clock = std::chrono::steady_clock;
  constexpr std::uint32_t kLoudAfter = 8;  // failures in a row before the error line
  std::vector<BlockIo*> subs;
  std::vector<std::function<void()>*> calls;
  auto last_xs_poll = Clock::now();
  auto retry_at = Clock::time_point{};
  bool retry_pending = false;     // a backoff ran: look at the backend once it is over
  std::uint32_t seen_failures = 0;
  while (!stop_.load()) {
    const auto before = Clock::now();
    const bool backing_off = before < retry_at;
    pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {xs_->event_fd(), POLLIN, 0}};
    const bool xs_polled = xs_->event_fd() < 0;
    // Without an event fd for xenstore, look at it every 50 ms. While backing off, xenstore
    // events stay queued (its fd would keep poll() readable): only submissions wake us.
    int timeout = xs_polled ? 50 : -1;
    if (backing_off)
      timeout = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(retry_at - before).count() + 1);
    const int n = ::poll(fds, (xs_polled || backing_off) ? 1 : 2, timeout);
    if (n < 0 && errno != EINTR) break;
    if (fds[0].revents & POLLIN) {
      std::uint64_t v;
      [[maybe_unused]] const ssize_t r = ::read(wake_fd_, &v, sizeof v);
    }
    std::lock_guard core_lock(core_mu_);
    CoreOwner owner(*this);
    {
      std::lock_guard lk(mu_);
      subs.swap(submissions_);
      calls.swap(calls_);
    }
    for (auto* c : calls) {
      (*c)();
      delete c;
    }
    calls.clear();
    for (BlockIo* io : subs) core_->submit(io);
    subs.clear();
    if (ring_pending_.exchange(false, std::memory_order_acq_rel)) core_->handle_all_events();

    const auto now = Clock::now();
    if (now < retry_at) continue;
    bool check_xs = false;
    const bool after_backoff = retry_pending;
    retry_pending = false;
    if (after_backoff) {
      check_xs = true;
    } else if (!xs_polled && !backing_off && (fds[1].revents & POLLIN)) {
      check_xs = true;
    } else if (xs_polled && now - last_xs_poll >= std::chrono::milliseconds(50)) {
      check_xs = true;
    }
    if (xs_polled && check_xs) last_xs_poll = now;
    if (!xs_polled && check_xs) xs_->wait(0);
    // Watch events can also be queued by the ring client while a request was in flight.
    // backend_changed() talks to xenstore itself, and events that arrive meanwhile are
    // queued by the client without a wake-up of their own: drain again until quiet. After a
    // backoff the backend is looked at once even without an event: the one that ended the
    // last attempt was consumed by it.
    if ((check_xs || !xs_polled) && core_->state() != XenbusState::Unknown) {
      bool look = after_backoff;
      while (xs_->drain_events() > 0) look = true;
      while (look) {
        core_->backend_changed();
        // Back off; events that come meanwhile wait in the client.
        if (core_->failures_in_a_row() > seen_failures) break;
        look = false;
        while (xs_->drain_events() > 0) look = true;
      }
    }
    const std::uint32_t failures = core_->failures_in_a_row();
    if (failures > seen_failures) {
      const auto delay = retry_delay(failures);
      retry_at = Clock::now() + delay;
      retry_pending = true;
      if (failures == kLoudAfter)
        spdlog::error("blkfront: device {}: handshake failed {} times in a row; retrying every "
                      "{} ms at most until the backend connects",
                      cfg_.devid, failures, retry_delay(~0u).count());
    }
    seen_failures = failures;
  }
  // Whatever is still queued never reached the core.
  std::lock_guard core_lock(core_mu_);
  CoreOwner owner(*this);
  std::lock_guard lk(mu_);
  for (BlockIo* io : submissions_) {
    io->status = IoStatus::NoDevice;
    if (io->done) io->done(io);
  }
  submissions_.clear();
  for (auto* c : calls_) {
    (*c)();
    delete c;
  }
  calls_.clear();
}

namespace {
struct SyncWaiter {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
};
void sync_done(BlockIo* io) {
  auto* w = static_cast<SyncWaiter*>(io->cookie);
  std::lock_guard lk(w->m);
  w->done = true;
  w->cv.notify_one();
}
}  // namespace

IoStatus Device::run_sync(BlockIo& io) {
  SyncWaiter w;
  io.done = &sync_done;
  io.cookie = &w;
  submit(&io);
  std::unique_lock lk(w.m);
  w.cv.wait(lk, [&] { return w.done; });
  return io.status;
}

IoStatus Device::read(std::uint64_t offset, void* buf, std::size_t len) {
  if (offset % 512 != 0 || len % 512 != 0 || len == 0 || len / 512 > 0xFFFFFFFFu)
    return IoStatus::Invalid;
  BlockIo io;
  io.op = Op::Read;
  io.sector = offset / 512;
  io.nr_sectors = static_cast<std::uint32_t>(len / 512);
  io.buffer = buf;
  return run_sync(io);
}

IoStatus Device::write(std::uint64_t offset, const void* buf, std::size_t len) {
  if (offset % 512 != 0 || len % 512 != 0 || len == 0 || len / 512 > 0xFFFFFFFFu)
    return IoStatus::Invalid;
  BlockIo io;
  io.op = Op::Write;
  io.sector = offset / 512;
  io.nr_sectors = static_cast<std::uint32_t>(len / 512);
  io.buffer = const_cast<void*>(buf);  // the core only reads a write's buffer
  return run_sync(io);
}

IoStatus Device::flush() {
  BlockIo io;
  io.op = Op::Flush;
  return run_sync(io);
}

IoStatus Device::discard(std::uint64_t offset, std::uint64_t len) {
  if (offset % 512 != 0 || len % 512 != 0 || len == 0) return IoStatus::Invalid;
  // nr_sectors is 32 bits in a BlockIo: larger ranges go as several discards.
  constexpr std::uint64_t kChunk = std::uint64_t{1} << 30;
  for (std::uint64_t done = 0; done < len; done += kChunk) {
    const std::uint64_t n = len - done < kChunk ? len - done : kChunk;
    BlockIo io;
    io.op = Op::Discard;
    io.sector = (offset + done) / 512;
    io.nr_sectors = static_cast<std::uint32_t>(n / 512);
    if (const IoStatus st = run_sync(io); st != IoStatus::Ok) return st;
  }
  return IoStatus::Ok;
}

DiskInfo Device::disk() {
  DiskInfo d;
  run_on_core([&] { d = core_->disk(); });
  return d;
}
Negotiated Device::negotiated() {
  Negotiated n;
  run_on_core([&] { n = core_->negotiated(); });
  return n;
}
Stats Device::stats() {
  Stats s;
  run_on_core([&] { s = core_->stats(); });
  return s;
}
XenbusState Device::state() {
  XenbusState s = XenbusState::Unknown;
  run_on_core([&] { s = core_->state(); });
  return s;
}

int Device::alloc_data_pages(std::uint32_t n, std::vector<DataPage>* out) {
  std::uint64_t gfn = 0;
  if (n == 0) return -XEN_EINVAL;
  if (const int rc = dom_.alloc_pages(n, &gfn); rc != 0) return rc;
  out->clear();
  for (std::uint32_t i = 0; i < n; ++i) out->push_back(DataPage{gfn + i, dom_.page(gfn + i)});
  return 0;
}

}  // namespace pvio::blkfront::user
