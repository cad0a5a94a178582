// A vif and its queues (Linux xen-netback's interface.c): ring mapping, the per-queue thread
// (poll while busy, sleep on the event channels when idle), notifications and statistics.
#include <rte_lcore.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <stdexcept>

#include "ctrl.h"
#include "pvio/netback/dpdk.h"
#include "vif_queue.h"

namespace pvio::netback {

VifQueue::VifQueue(Vif& vif, unsigned index)
    : vif_(vif), cfg_(vif.config_), index_(index), reader_(vif.switch_.register_reader()) {
  mapper_ = std::make_unique<gnttab::GrantMapper>(cfg_.frontend_domid, cfg_.backend_domid,
                                                  *cfg_.memory, cfg_.grant_table_gfns);
  try {
    map_rings();
  } catch (...) {
    vif_.switch_.unregister_reader(reader_);
    throw;
  }
  tx_pending_.reserve(256);
  tx_ops_.reserve(1024);
  rx_ops_.reserve(1024);
  rx_backlog_.reserve(256);
}

VifQueue::~VifQueue() {
  for (std::size_t i = rx_backlog_head_; i < rx_backlog_.size(); ++i)
    rte_pktmbuf_free(rx_backlog_[i]);
  if (tx_mapped_) mapper_->unmap(tx_handle_);
  if (rx_mapped_) mapper_->unmap(rx_handle_);
  vif_.switch_.unregister_reader(reader_);
}

// Each ring is one page (netif has no multi-page rings). A restarted backend resumes where the
// responses stand, as Linux's BACK_RING_ATTACH does on reconnect; a fresh ring has 0.
void VifQueue::map_rings() {
  const VifQueueConfig& qc = cfg_.queues[index_];
  auto map_one = [&](grant_ref_t ref, const char* what, gnttab::grant_handle_t* handle,
                     bool* mapped) -> void* {
    const gnttab::MapResult r = mapper_->map(ref, /*readonly=*/false);
    if (r.status != gnttab::GNTST_okay)
      throw std::invalid_argument(std::string(what) + " " + std::to_string(ref) +
                                  " does not map: " + gnttab::status_string(r.status));
    *handle = r.handle;
    *mapped = true;
    return r.addr;
  };
  void* tx = map_one(qc.tx_ring_ref, "tx-ring-ref", &tx_handle_, &tx_mapped_);
  void* rx = map_one(qc.rx_ring_ref, "rx-ring-ref", &rx_handle_, &rx_mapped_);
  auto start = [](void* sring) {
    return std::atomic_ref<ring::RingIdx>(static_cast<ring::SringHeader*>(sring)->rsp_prod)
        .load(std::memory_order_acquire);
  };
  if (!tx_.attach(tx, ring::kPageSize, start(tx)) || !rx_.attach(rx, ring::kPageSize, start(rx)))
    throw std::invalid_argument("cannot attach the rings");
}

void VifQueue::fatal(const std::string& why) {
  if (broken_.exchange(true, std::memory_order_acq_rel)) return;
  if (cfg_.on_fatal) cfg_.on_fatal(index_, why);
}

// One push per ring and pass, and at most one event per channel: the frontend's rsp_event
// decides (RING_PUSH_RESPONSES_AND_CHECK_NOTIFY).
void VifQueue::push_and_notify() {
  const VifQueueConfig& qc = cfg_.queues[index_];
  bool tx_notify = false, rx_notify = false;
  if (tx_rsp_pending_) {
    tx_rsp_pending_ = false;
    tx_notify = tx_.push_responses();
  }
  if (rx_rsp_pending_) {
    rx_rsp_pending_ = false;
    rx_notify = rx_.push_responses();
  }
  if (qc.notifier == nullptr) return;
  if (tx_notify) {
    qc.notifier->notify(qc.tx_port);
    notifications_.add();
  }
  if (rx_notify && !(tx_notify && qc.rx_port == qc.tx_port)) {
    qc.notifier->notify(qc.rx_port);
    notifications_.add();
  }
}

bool VifQueue::final_check() {
  if (broken()) return false;
  if (tx_slot_count_ > 0 && !credit_blocked_) return true;
  if (!credit_blocked_) {
    const ring::RingCheck c = tx_.final_check_for_requests();
    if (!c.ok()) {
      ring_errors_.add();
      fatal("tx ring: impossible producer index");
      return false;
    }
    if (c.count != 0) return true;
  }
  if (rx_stalled_) {
    // Waiting for rx buffers: ask for an event on the next posted request (feature-rx-notify).
    const ring::RingCheck c = rx_.final_check_for_requests();
    if (!c.ok()) {
      ring_errors_.add();
      fatal("rx ring: impossible producer index");
      return false;
    }
    if (c.count >= rx_slots_needed(rx_backlog_[rx_backlog_head_])) return true;
    return false;
  }
  std::atomic<bool>& sleeping = vif_.sleeping(index_);
  sleeping.store(true, std::memory_order_seq_cst);
  if (rx_backlog_head_ < rx_backlog_.size() || rte_ring_count(vif_.inbound(index_)) != 0) {
    sleeping.store(false, std::memory_order_relaxed);
    return true;
  }
  return false;
}

std::int64_t VifQueue::sleep_limit_ns(std::uint64_t now) const {
  std::int64_t limit = -1;
  if (credit_blocked_)
    limit = next_credit_ns_ > now ? static_cast<std::int64_t>(next_credit_ns_ - now) : 0;
  // Without feature-rx-notify the frontend never tells us about new rx buffers.
  if (rx_stalled_ && !cfg_.rx_notify) {
    const auto poll = static_cast<std::int64_t>(cfg_.rx_poll_ns);
    limit = limit < 0 ? poll : std::min(limit, poll);
  }
  return limit;
}

void VifQueue::add_stats(VifQueueStats& s) const {
  s.tx_packets += tx_packets_.get();
  s.tx_bytes += tx_bytes_.get();
  s.rx_packets += rx_packets_.get();
  s.rx_bytes += rx_bytes_.get();
  s.tx_mcast += tx_mcast_.get();
  s.tx_gso += tx_gso_.get();
  s.rx_gso += rx_gso_.get();
  s.rx_segmented += rx_segmented_.get();
  s.grant_errors += grant_errors_.get();
  s.ring_errors += ring_errors_.get();
  s.notifications += notifications_.get();
  s.credit_waits += credit_waits_.get();
  for (std::size_t i = 0; i < kTxErrorCount; ++i) s.tx_errors[i] += tx_errors_[i].get();
  for (std::size_t i = 0; i < kDropCount; ++i) s.drops[i] += drops_[i].get();
}

// ---- Vif ----

Vif::Vif(VifConfig config, Switch& sw)
    : Port(config.name, static_cast<unsigned>(config.queues.size())),
      config_(std::move(config)),
      switch_(sw) {
  if (config_.memory == nullptr) throw std::invalid_argument("VifConfig.memory is null");
  if (config_.burst == 0 || config_.burst > 64) throw std::invalid_argument("burst must be 1..64");
  hash_ = std::make_unique<HashConfig>();
  if (config_.ctrl_ring) ctrl_ = std::make_unique<CtrlRing>(config_, *hash_);
  for (unsigned q = 0; q < config_.queues.size(); ++q)
    queues_.push_back(std::make_unique<VifQueue>(*this, q));
  stop_fd_ = evtchn::eventfd_create(/*nonblocking=*/true);
  if (stop_fd_ < 0) throw std::runtime_error("eventfd");
}

Vif::~Vif() {
  stop();
  queues_.clear();
  ctrl_.reset();
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

void Vif::start() {
  if (running_) return;
  running_ = true;
  switch_.attach(*this);
  stop_.store(false);
  for (unsigned q = 0; q < queues_.size(); ++q) threads_.emplace_back([this, q] { worker(q); });
}

void Vif::stop() {
  if (!running_) return;
  stop_.store(true);
  evtchn::eventfd_signal(stop_fd_);
  for (auto& t : threads_) t.join();
  threads_.clear();
  switch_.detach(*this);
  running_ = false;
  std::uint64_t v;
  [[maybe_unused]] const ssize_t r = ::read(stop_fd_, &v, sizeof v);
}

bool Vif::broken() const {
  return std::any_of(queues_.begin(), queues_.end(), [](const auto& q) { return q->broken(); });
}

std::vector<VifQueueStats> Vif::stats() const {
  std::vector<VifQueueStats> out(queues_.size());
  for (std::size_t q = 0; q < queues_.size(); ++q) {
    queues_[q]->add_stats(out[q]);
    for (std::size_t d = 0; d < kDropCount; ++d)  // drops counted by the switch on our port
      if (q == 0) out[q].drops[d] += drop_count(static_cast<Drop>(d));
  }
  return out;
}

VifQueueStats Vif::total_stats() const {
  VifQueueStats t;
  for (unsigned q = 0; q < queues_.size(); ++q) queues_[q]->add_stats(t);
  for (std::size_t d = 0; d < kDropCount; ++d) t.drops[d] += drop_count(static_cast<Drop>(d));
  return t;
}

bool Vif::wants_multicast(const MacAddr& dst) const {
  if (!config_.multicast_control) return true;
  static constexpr MacAddr kBroadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  if (dst == kBroadcast) return true;
  std::uint64_t key = 0;
  for (std::uint8_t b : dst) key = (key << 8) | b;
  key |= 1ull << 63;
  for (const auto& e : mcast_)
    if (e.load(std::memory_order_relaxed) == key) return true;
  return false;
}

unsigned Vif::select_queue(const rte_mbuf* m) const {
  std::uint32_t h = 0;
  if (!flow_hash(*hash_, m, &h)) return Port::select_queue(m);
  // netif.h SET_HASH_MAPPING: the hash indexes the table modulo its size; without a table the
  // queue is the hash modulo the number of queues (xenvif_select_queue).
  const std::uint32_t size = hash_->mapping_size.load(std::memory_order_relaxed);
  const std::uint32_t q = size != 0 ? hash_->mapping[h % size].load(std::memory_order_relaxed)
                                    : h % nr_queues();
  return q < nr_queues() ? q : 0;
}

std::uint64_t Vif::ctrl_requests() const { return ctrl_ ? ctrl_->requests() : 0; }

void Vif::worker(unsigned qi) {
  // An lcore id gives this thread its own mempool cache: mbuf allocation stays off the
  // pool's shared ring.
  const bool registered = rte_thread_register() == 0;
  VifQueue& q = *queues_[qi];
  const VifQueueConfig& qc = config_.queues[qi];
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return;
  auto add = [ep](int fd) {
    if (fd < 0) return;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  };
  add(stop_fd_);
  add(qc.tx_kick_fd);
  if (qc.rx_kick_fd != qc.tx_kick_fd) add(qc.rx_kick_fd);
  add(wake_fd(qi));
  CtrlRing* ctrl = qi == 0 ? ctrl_.get() : nullptr;
  if (ctrl != nullptr && config_.ctrl_kick_fd != qc.tx_kick_fd && config_.ctrl_kick_fd != qc.rx_kick_fd)
    add(config_.ctrl_kick_fd);
  std::string ctrl_error;

  std::uint64_t last_work = now_ns();
  std::uint64_t idle_polls = 0;
  epoll_event evs[8];
  while (!stop_.load(std::memory_order_relaxed)) {
    bool work = false;
    if (!q.broken()) {
      work |= q.tx_round();
      work |= q.rx_round();
      if (ctrl != nullptr) {
        work |= ctrl->round(&ctrl_error);
        if (!ctrl_error.empty()) q.fatal(ctrl_error);
      }
    }
    if (work) {
      idle_polls = 0;
      continue;
    }
    // Idle: keep polling for spin_ns (the clock is read every 64 polls, not on each).
    if (idle_polls++ == 0) last_work = now_ns();
    if ((idle_polls & 63) != 0) {
      __builtin_ia32_pause();
      continue;
    }
    const std::uint64_t now = now_ns();
    if (!q.broken()) {
      if (now - last_work < config_.spin_ns) continue;
      if (q.final_check() || (ctrl != nullptr && ctrl->final_check(&ctrl_error))) {
        idle_polls = 0;
        continue;
      }
      if (!ctrl_error.empty()) q.fatal(ctrl_error);
    }
    const std::int64_t limit = q.broken() ? -1 : q.sleep_limit_ns(now);
    timespec ts{};
    timespec* tp = nullptr;
    if (limit >= 0) {
      ts.tv_sec = limit / 1'000'000'000;
      ts.tv_nsec = limit % 1'000'000'000;
      tp = &ts;
    }
    const int n = ::epoll_pwait2(ep, evs, 8, tp, nullptr);
    sleeping(qi).store(false, std::memory_order_relaxed);
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.fd == stop_fd_) continue;
      std::uint64_t v;
      [[maybe_unused]] const ssize_t r = ::read(evs[i].data.fd, &v, sizeof v);
    }
    idle_polls = 0;
  }
  ::close(ep);
  if (registered) rte_thread_unregister();
}

}  // namespace pvio::netback
