// blkfront control plane: the XenBus handshake with the backend as Linux xen-blkfront runs it
// (talk_to_blkback, blkfront_connect, blkback_changed, blkfront_closing), feature negotiation,
// ring pages and event channels, and reconnection after the backend goes away. Never touches
// ring contents: that is blkfront.cc.
#include <cstring>
#include <new>

#include "impl.h"

namespace pvio::blkfront {

namespace {
constexpr const char* kProtocol = "x86_64-abi";  // XEN_IO_PROTO_ABI_X86_64
constexpr std::uint64_t kDomidFirstReserved = 0x7FF0;
}  // namespace

std::size_t Blkfront::storage_bytes(const Limits& l) {
  std::uint32_t nq = l.max_queues == 0 ? 1 : l.max_queues;
  if (nq > kMaxQueues) nq = kMaxQueues;
  std::uint32_t order = l.max_ring_page_order;
  if (order > ring::kMaxRingPageOrder) order = ring::kMaxRingPageOrder;
  const std::uint32_t rs =
      ring::ring_size<blkif::blkif_request, blkif::blkif_response>(ring::ring_bytes(order));
  std::uint32_t max_segs = blkif::kMaxSegmentsPerRequest;
  std::uint32_t ipp = 0;
  if (l.max_indirect_segments > blkif::kMaxSegmentsPerRequest) {
    max_segs = l.max_indirect_segments;
    const std::uint32_t cap =
        blkif::kMaxIndirectPagesPerRequest * blkif::kSegmentsPerIndirectPage;
    if (max_segs > cap) max_segs = cap;
    ipp = (max_segs + blkif::kSegmentsPerIndirectPage - 1) / blkif::kSegmentsPerIndirectPage;
  }
  using detail::align16;
  std::size_t per_queue = align16(sizeof(Shadow) * rs) +
                          align16(sizeof(Seg) * std::size_t{rs} * max_segs) +
                          align16(sizeof(PoolPage) * std::size_t{rs} * ipp) +
                          align16(sizeof(PoolPage) * l.pool_pages) +
                          align16(sizeof(std::uint32_t) * l.pool_pages);
  return align16(sizeof(Queue) * nq) + per_queue * nq;
}

Blkfront::Blkfront(Platform& platform, std::uint32_t devid, const Limits& limits, void* storage,
                   std::size_t storage_len)
    : pf_(platform),
      devid_(devid),
      limits_(limits),
      storage_(static_cast<std::uint8_t*>(storage)),
      storage_len_(storage_len) {
  if (limits_.max_queues == 0) limits_.max_queues = 1;
  if (limits_.max_queues > kMaxQueues) limits_.max_queues = kMaxQueues;
  if (limits_.max_ring_page_order > ring::kMaxRingPageOrder)
    limits_.max_ring_page_order = ring::kMaxRingPageOrder;
  const std::uint32_t cap = blkif::kMaxIndirectPagesPerRequest * blkif::kSegmentsPerIndirectPage;
  if (limits_.max_indirect_segments > cap) limits_.max_indirect_segments = cap;
  if (reinterpret_cast<std::uintptr_t>(storage_) & 15) storage_len_ = 0;  // refuse misaligned
  detail::PathBuf p("device/vbd/");
  p.add_uint(devid_);
  std::memcpy(front_path_, p.c_str(), std::strlen(p.c_str()) + 1);
}

Blkfront::~Blkfront() {
  if (started_ && backend_path_[0] != '\0') {
    detail::PathBuf w(backend_path_);
    w.add("/state");
    pf_.xs_unwatch(w.c_str());
  }
  teardown_datapath();
}

void* Blkfront::carve(std::size_t bytes) {
  bytes = detail::align16(bytes);
  if (storage_ == nullptr || bytes > storage_len_ - carve_off_ || carve_off_ > storage_len_)
    return nullptr;
  void* p = storage_ + carve_off_;
  carve_off_ += bytes;
  return p;
}

void Blkfront::logf(LogLevel l, const char* a, const char* b, std::uint64_t n) {
  char msg[256];
  std::size_t len = 0;
  auto put = [&](const char* s) {
    while (*s != '\0' && len + 1 < sizeof(msg)) msg[len++] = *s++;
  };
  put("blkfront ");
  put(front_path_);
  put(": ");
  put(a);
  if (b != nullptr) {
    put(" ");
    put(b);
  }
  if (n != ~0ull) {
    char num[24];
    detail::format_uint(num, sizeof(num), n);
    put(" ");
    put(num);
  }
  msg[len] = '\0';
  pf_.log(l, msg);
}

// ---- xenstore helpers ----

int Blkfront::read_state(const char* dir, XenbusState& out) {
  detail::PathBuf p(dir);
  p.add("/state");
  if (!p.ok()) return -XEN_ENAMETOOLONG;
  char v[16];
  std::size_t len = 0;
  out = XenbusState::Unknown;
  const int rc = pf_.xs_read(p.c_str(), v, sizeof(v), len);
  if (rc != 0) return rc;
  // Anything that is not a state reads as Unknown, as xenbus_read_driver_state.
  if (!xs::xenbus_parse_state(v, len, &out)) out = XenbusState::Unknown;
  return 0;
}

int Blkfront::switch_state(XenbusState s) {
  char v[4];
  detail::format_uint(v, sizeof(v), static_cast<std::uint64_t>(s));
  const int rc = write_front("state", v);
  if (rc == 0) state_ = s;
  return rc;
}

int Blkfront::write_front(const char* key, const char* value) {
  detail::PathBuf p(front_path_);
  p.add("/").add(key);
  if (!p.ok()) return -XEN_ENAMETOOLONG;
  return pf_.xs_write(p.c_str(), value);
}

int Blkfront::write_front_uint(const char* key, std::uint64_t v) {
  char s[24];
  detail::format_uint(s, sizeof(s), v);
  return write_front(key, s);
}

// A missing node gives `dflt`; a present but malformed one is an error (-EINVAL), since the
// value came from another domain and guessing would be worse than refusing.
int Blkfront::read_backend_uint(const char* key, std::uint64_t& out, std::uint64_t dflt) {
  detail::PathBuf p(backend_path_);
  p.add("/").add(key);
  if (!p.ok()) return -XEN_ENAMETOOLONG;
  char v[32];
  std::size_t len = 0;
  const int rc = pf_.xs_read(p.c_str(), v, sizeof(v), len);
  if (rc == -XEN_ENOENT) {
    out = dflt;
    return 0;
  }
  if (rc != 0) return rc;
  if (!detail::parse_uint(v, len, out)) {
    logf(LogLevel::Warn, "malformed backend node", key);
    return -XEN_EINVAL;
  }
  return 0;
}

// ---- handshake ----

int Blkfront::start() {
  if (started_) return 0;
  detail::PathBuf p(front_path_);
  p.add("/backend");
  std::size_t len = 0;
  int rc = pf_.xs_read(p.c_str(), backend_path_, sizeof(backend_path_), len);
  if (rc != 0) {
    backend_path_[0] = '\0';
    logf(LogLevel::Error, "cannot read backend path");
    return rc;
  }
  if (len == 0 || backend_path_[0] != '/' || std::strlen(backend_path_) != len) {
    backend_path_[0] = '\0';
    return -XEN_EINVAL;
  }
  detail::PathBuf q(front_path_);
  q.add("/backend-id");
  char v[16];
  rc = pf_.xs_read(q.c_str(), v, sizeof(v), len);
  std::uint64_t id = 0;
  if (rc != 0) return rc;
  if (!detail::parse_uint(v, len, id) || id >= kDomidFirstReserved) return -XEN_EINVAL;
  backend_id_ = static_cast<domid_t>(id);

  rc = switch_state(XenbusState::Initialising);
  if (rc != 0) return rc;
  detail::PathBuf w(backend_path_);
  w.add("/state");
  rc = pf_.xs_watch(w.c_str());
  if (rc != 0) return rc;
  started_ = true;
  return 0;
}

int Blkfront::backend_changed() {
  if (!started_) return -XEN_ENODEV;
  XenbusState bs = XenbusState::Unknown;
  int rc = read_state(backend_path_, bs);
  if (rc != 0 && rc != -XEN_ENOENT) return rc;

  // A datapath protocol error waits for the backend to acknowledge our Closing.
  if (broken_ && state_ == XenbusState::Connected) request_disconnect();

  switch (bs) {
    case XenbusState::InitWait:
      if (closing_ || suspended_) return 0;
      if (state_ != XenbusState::Initialising && state_ != XenbusState::Closed) return 0;
      rc = talk_to_backend();
      break;
    case XenbusState::Connected:
      if (closing_ || suspended_ || broken_ || state_ == XenbusState::Connected ||
          state_ == XenbusState::Closing)
        return 0;
      // The backend may have reached Connected before we saw InitWait (Linux does the same).
      if (state_ != XenbusState::Initialised) {
        rc = talk_to_backend();
        if (rc != 0) break;
      }
      rc = connect_datapath();
      break;
    case XenbusState::Closing:
    case XenbusState::Closed:
      if (state_ != XenbusState::Closed) {
        backend_gone(bs == XenbusState::Closing ? "backend closing" : "backend closed");
        rc = switch_state(XenbusState::Closed);
      }
      if (closing_) {
        fail_all(IoStatus::NoDevice);
      } else if (!suspended_ && bs == XenbusState::Closed && state_ == XenbusState::Closed) {
        // Both ends closed: offer to reconnect; blkback answers Initialising with InitWait
        // ("prepare for reconnect"), and a restarted backend starts at InitWait anyway.
        rc = switch_state(XenbusState::Initialising);
      }
      return rc;
    default:
      return 0;
  }
  if (rc != 0) {
    ++stats_.handshake_failures;
    ++failures_in_a_row_;
    logf(LogLevel::Error, "handshake step failed, errno", nullptr,
         static_cast<std::uint64_t>(-rc));
    teardown_datapath();
    reset_active();
    switch_state(XenbusState::Closing);
  }
  return rc;
}

int Blkfront::remove_front_keys() {
  // Keys of an earlier connection: the new one may use a different ring layout.
  static constexpr const char* kKeys[] = {"ring-ref", "ring-page-order", "event-channel",
                                          "multi-queue-num-queues"};
  for (const char* k : kKeys) {
    detail::PathBuf p(front_path_);
    p.add("/").add(k);
    pf_.xs_remove(p.c_str());
  }
  for (std::uint32_t i = 0; i < kMaxRingPages; ++i) {
    detail::PathBuf p(front_path_);
    p.add("/ring-ref").add_uint(i);
    pf_.xs_remove(p.c_str());
  }
  for (std::uint32_t i = 0; i < kMaxQueues; ++i) {
    detail::PathBuf p(front_path_);
    p.add("/queue-").add_uint(i);
    pf_.xs_remove(p.c_str());
  }
  return 0;
}

// talk_to_blkback: negotiate ring size and queues, build rings, publish them, Initialised.
int Blkfront::talk_to_backend() {
  teardown_datapath();  // a half-done earlier attempt
  reset_active();
  std::uint64_t order = 0, queues = 1;
  int rc = read_backend_uint("max-ring-page-order", order, 0);
  if (rc != 0) return rc;
  rc = read_backend_uint("multi-queue-max-queues", queues, 1);
  if (rc != 0) return rc;
  if (order > limits_.max_ring_page_order) order = limits_.max_ring_page_order;
  if (queues == 0) queues = 1;
  if (queues > limits_.max_queues) queues = limits_.max_queues;

  neg_ = Negotiated{};
  neg_.nr_queues = static_cast<std::uint32_t>(queues);
  neg_.ring_page_order = static_cast<std::uint32_t>(order);
  neg_.ring_size = ring::ring_size<blkif::blkif_request, blkif::blkif_response>(
      ring::ring_bytes(neg_.ring_page_order));
  if (!carve_queues(neg_.nr_queues, neg_.ring_size)) return -XEN_ENOMEM;
  rc = setup_rings();
  if (rc != 0) return rc;

  if (ever_connected_) remove_front_keys();
  const bool mq = neg_.nr_queues > 1;
  if (mq) {
    rc = write_front_uint("multi-queue-num-queues", neg_.nr_queues);
    if (rc != 0) return rc;
  }
  if (neg_.ring_page_order > 0) {
    rc = write_front_uint("ring-page-order", neg_.ring_page_order);
    if (rc != 0) return rc;
  }
  for (std::uint32_t qi = 0; qi < neg_.nr_queues; ++qi) {
    Queue& q = queues_[qi];
    char prefix[32] = "";
    if (mq) {
      detail::PathBuf pre("queue-");
      pre.add_uint(qi).add("/");
      std::memcpy(prefix, pre.c_str(), std::strlen(pre.c_str()) + 1);
    }
    const std::uint32_t pages = 1u << neg_.ring_page_order;
    for (std::uint32_t i = 0; i < pages; ++i) {
      detail::PathBuf key(prefix);
      key.add("ring-ref");
      if (neg_.ring_page_order > 0) key.add_uint(i);
      rc = write_front_uint(key.c_str(), q.ring_refs[i]);
      if (rc != 0) return rc;
    }
    detail::PathBuf key(prefix);
    key.add("event-channel");
    rc = write_front_uint(key.c_str(), q.port);
    if (rc != 0) return rc;
  }
  rc = write_front("protocol", kProtocol);
  if (rc != 0) return rc;
  rc = write_front("feature-persistent", limits_.use_persistent ? "1" : "0");
  if (rc != 0) return rc;
  return switch_state(XenbusState::Initialised);
}

int Blkfront::setup_rings() {
  const std::uint32_t pages = 1u << neg_.ring_page_order;
  for (std::uint32_t qi = 0; qi < nr_queues_; ++qi) {
    Queue& q = queues_[qi];
    if (!pf_.alloc_pages(neg_.ring_page_order, q.ring_pages)) return -XEN_ENOMEM;
    q.ring_allocated = true;
    for (std::uint32_t i = 0; i < kMaxRingPages; ++i) q.ring_refs[i] = kInvalidGrantRef;
    // SHARED_RING_INIT before the backend can see the pages.
    if (!q.ring.init(q.ring_pages.addr, ring::ring_bytes(neg_.ring_page_order)))
      return -XEN_EINVAL;
    for (std::uint32_t i = 0; i < pages; ++i) {
      q.ring_refs[i] = pf_.grant_access(backend_id_, q.ring_pages.gfn + i, false);
      if (q.ring_refs[i] == kInvalidGrantRef) return -XEN_ENOSPC;
    }
    const int rc = pf_.evtchn_alloc_unbound(backend_id_, q.port);
    if (rc != 0) return rc;
    q.port_valid = true;
  }
  rings_up_ = true;
  return 0;
}

void Blkfront::free_rings() {
  if (queues_ == nullptr) return;
  const std::uint32_t pages = 1u << neg_.ring_page_order;
  for (std::uint32_t qi = 0; qi < nr_queues_; ++qi) {
    Queue& q = queues_[qi];
    if (q.port_valid) pf_.evtchn_close(q.port);
    q.port_valid = false;
    bool leaked = false;
    for (std::uint32_t i = 0; i < pages && i < kMaxRingPages; ++i) {
      if (q.ring_refs[i] == kInvalidGrantRef) continue;
      if (!pf_.end_access(q.ring_refs[i])) {
        leaked = true;
        ++stats_.grants_leaked;
      }
      q.ring_refs[i] = kInvalidGrantRef;
    }
    // A ring page the backend still maps must never be reused (gnttab_end_foreign_access
    // would defer the free; we cannot, so we keep it).
    if (q.ring_allocated && !leaked) pf_.free_pages(neg_.ring_page_order, q.ring_pages);
    q.ring_allocated = false;
  }
}

// blkfront_connect: read the disk and the features, size the tables, Connected, resubmit.
int Blkfront::connect_datapath() {
  std::uint64_t sectors = 0, info = 0, ssize = 512, pssize = 0;
  std::uint64_t flush = 0, barrier = 0, discard = 0, gran = 0, align = 0, secure = 0;
  std::uint64_t persistent = 0, indirect = 0;
  detail::PathBuf sp(backend_path_);
  sp.add("/sectors");
  char v[32];
  std::size_t len = 0;
  int rc = pf_.xs_read(sp.c_str(), v, sizeof(v), len);
  if (rc != 0) return rc;
  if (!detail::parse_uint(v, len, sectors)) return -XEN_EINVAL;
  if ((rc = read_backend_uint("info", info, 0)) != 0 ||
      (rc = read_backend_uint("sector-size", ssize, 512)) != 0 ||
      (rc = read_backend_uint("physical-sector-size", pssize, ssize)) != 0 ||
      (rc = read_backend_uint("feature-flush-cache", flush, 0)) != 0 ||
      (rc = read_backend_uint("feature-barrier", barrier, 0)) != 0 ||
      (rc = read_backend_uint("feature-discard", discard, 0)) != 0 ||
      (rc = read_backend_uint("discard-granularity", gran, 0)) != 0 ||
      (rc = read_backend_uint("discard-alignment", align, 0)) != 0 ||
      (rc = read_backend_uint("discard-secure", secure, 0)) != 0 ||
      (rc = read_backend_uint("feature-persistent", persistent, 0)) != 0 ||
      (rc = read_backend_uint("feature-max-indirect-segments", indirect, 0)) != 0)
    return rc;
  if (ssize < 512 || ssize > 4096 || (ssize & (ssize - 1)) != 0) return -XEN_EINVAL;
  if (sectors > (~std::uint64_t{0} >> 9)) return -XEN_EINVAL;
  disk_.sectors = sectors;
  disk_.sector_size = static_cast<std::uint32_t>(ssize);
  disk_.physical_sector_size =
      pssize >= ssize && pssize <= 65536 ? static_cast<std::uint32_t>(pssize) : disk_.sector_size;
  disk_.info = static_cast<std::uint32_t>(info);
  neg_.flush_cache = flush != 0;
  neg_.barrier = barrier != 0;
  neg_.discard = discard != 0;
  neg_.discard_secure = discard != 0 && secure != 0;
  neg_.discard_granularity = gran <= 0xFFFFFFFFu ? static_cast<std::uint32_t>(gran) : 0;
  neg_.discard_alignment = align <= 0xFFFFFFFFu ? static_cast<std::uint32_t>(align) : 0;
  neg_.persistent = limits_.use_persistent && persistent != 0;
  neg_.max_indirect_segments = 0;
  if (indirect > blkif::kMaxSegmentsPerRequest &&
      limits_.max_indirect_segments > blkif::kMaxSegmentsPerRequest) {
    neg_.max_indirect_segments = static_cast<std::uint32_t>(
        indirect < limits_.max_indirect_segments ? indirect : limits_.max_indirect_segments);
  }
  max_segs_ = neg_.max_indirect_segments ? neg_.max_indirect_segments
                                         : blkif::kMaxSegmentsPerRequest;
  indirect_per_req_ = neg_.max_indirect_segments
                          ? (max_segs_ + blkif::kSegmentsPerIndirectPage - 1) /
                                blkif::kSegmentsPerIndirectPage
                          : 0;
  if (!carve_tables()) return -XEN_ENOMEM;
  if (!setup_pools()) return -XEN_ENOMEM;

  rc = switch_state(XenbusState::Connected);
  if (rc != 0) return rc;
  if (ever_connected_) {
    ++stats_.reconnects;
    stats_.resubmitted_ios += active_count_;
    logf(LogLevel::Info, "reconnected, resubmitting I/Os:", nullptr, active_count_);
  }
  ever_connected_ = true;
  failures_in_a_row_ = 0;
  broken_ = false;
  requeue_active();
  kick_all();
  return 0;
}

// The backend went away (or we closed): stop the datapath, end every grant, keep the I/Os.
void Blkfront::backend_gone(const char* why) {
  logf(LogLevel::Info, why);
  teardown_datapath();
  reset_active();
  broken_ = false;  // the broken ring is gone; the next one starts clean
}

void Blkfront::teardown_datapath() {
  if (queues_ != nullptr) {
    free_pools();  // ends request grants first, then the pools
    free_rings();
    for (std::uint32_t qi = 0; qi < nr_queues_; ++qi) queues_[qi].~Queue();
  }
  queues_ = nullptr;
  nr_queues_ = 0;
  rings_up_ = false;
  carve_off_ = 0;
}

void Blkfront::reset_active() {
  // Every accepted I/O is redone from its first sector on the next connection: a request the
  // old backend may or may not have executed is simply executed again (reads and writes of the
  // same data are idempotent), so nothing acknowledged is lost and nothing stays outstanding.
  for (BlockIo* io = active_head_; io != nullptr; io = io->priv.next) {
    io->priv.built = 0;
    io->priv.outstanding = 0;
    io->priv.started = false;
    io->priv.all_built = false;
    io->priv.error = IoStatus::Ok;
    io->priv.next_pending = nullptr;
  }
}

void Blkfront::request_disconnect() {
  if (state_ == XenbusState::Connected || state_ == XenbusState::Initialised) {
    logf(LogLevel::Warn, "disconnecting after a protocol error");
    switch_state(XenbusState::Closing);
  }
}

void Blkfront::fail_all(IoStatus st) {
  ++depth_;
  while (active_head_ != nullptr) finish_io(active_head_, st);
  --depth_;
}

int Blkfront::connect(std::uint32_t timeout_ms) {
  int rc = start();
  if (rc != 0) return rc;
  for (;;) {
    rc = backend_changed();
    if (rc != 0) return rc;
    if (state_ == XenbusState::Connected) return 0;
    rc = pf_.xs_wait(timeout_ms);
    if (rc != 0) return rc;
  }
}

int Blkfront::close(std::uint32_t timeout_ms) {
  closing_ = true;
  if (!started_) {
    fail_all(IoStatus::NoDevice);
    return 0;
  }
  if (state_ != XenbusState::Closed) {
    int rc = switch_state(XenbusState::Closing);
    if (rc != 0) return rc;
  }
  for (;;) {
    int rc = backend_changed();
    if (rc != 0) return rc;
    if (state_ == XenbusState::Closed) break;
    rc = pf_.xs_wait(timeout_ms);
    if (rc != 0) {
      // The backend never answered: end what we can and close anyway.
      teardown_datapath();
      switch_state(XenbusState::Closed);
      fail_all(IoStatus::NoDevice);
      return rc;
    }
  }
  fail_all(IoStatus::NoDevice);
  return 0;
}

int Blkfront::suspend(std::uint32_t timeout_ms) {
  if (!started_ || closing_) return -XEN_ENODEV;
  suspended_ = true;
  int rc = 0;
  if (state_ != XenbusState::Closed) rc = switch_state(XenbusState::Closing);
  while (rc == 0) {
    // Backend Closing / Closed: it has unmapped the ring (blkback disconnects before it
    // leaves Connected), so ending our grants succeeds; backend_changed() tears down.
    rc = backend_changed();
    if (rc != 0) break;
    XenbusState bs = XenbusState::Unknown;
    const int r = read_state(backend_path_, bs);
    // Done when both ends are Closed (what resume() starts from, as Linux's blkfront_restore),
    // or when the backend is gone or was restarted (its node missing, or a fresh InitWait).
    if (state_ == XenbusState::Closed &&
        (r == -XEN_ENOENT || bs == XenbusState::Closed || bs == XenbusState::InitWait ||
         bs == XenbusState::Initialising || bs == XenbusState::Unknown))
      return 0;
    rc = pf_.xs_wait(timeout_ms);
  }
  // The backend never answered: end what we can and stay Closed; the I/Os are kept.
  teardown_datapath();
  reset_active();
  switch_state(XenbusState::Closed);
  return rc;
}

int Blkfront::resume(std::uint32_t timeout_ms) {
  if (closing_) return -XEN_ENODEV;
  suspended_ = false;
  // From Closed / Closed, backend_changed() offers Initialising and blkback answers InitWait;
  // from a restarted backend's InitWait it talks to it at once.
  return connect(timeout_ms);
}

evtchn_port_t Blkfront::queue_port(std::uint32_t q) const {
  return (queues_ != nullptr && q < nr_queues_ && queues_[q].port_valid) ? queues_[q].port : 0;
}

bool Blkfront::carve_queues(std::uint32_t nr_queues, std::uint32_t ring_size) {
  carve_off_ = 0;
  void* mem = carve(sizeof(Queue) * nr_queues);
  if (mem == nullptr) return false;
  queues_ = static_cast<Queue*>(mem);
  for (std::uint32_t i = 0; i < nr_queues; ++i) new (&queues_[i]) Queue();
  nr_queues_ = nr_queues;
  for (std::uint32_t i = 0; i < nr_queues; ++i) {
    Queue& q = queues_[i];
    void* s = carve(sizeof(Shadow) * ring_size);
    if (s == nullptr) return false;
    q.shadow = static_cast<Shadow*>(s);
    for (std::uint32_t k = 0; k < ring_size; ++k) {
      new (&q.shadow[k]) Shadow();
      q.shadow[k].next_free = k + 1;
    }
    q.shadow_free = 0;
    q.shadow_used = 0;
  }
  return true;
}

}  // namespace pvio::blkfront
