// User-mode domain: memfd memory, Xen's per-domain pages, port table, control server, loop.
#include "pvio/domain/domain.h"

#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "pvio/control/run_dir.h"
#include "pvio/event_channel/two_level.h"

namespace pvio::domain {

namespace {
constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kKeyServer = 1, kKeyUpcall = 2, kKeyStop = 3;

int make_dirs(const std::string& dir) {
  for (std::size_t i = 1; i <= dir.size(); ++i) {
    if (i != dir.size() && dir[i] != '/') continue;
    const std::string part = dir.substr(0, i);
    if (::mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) return -errno;
  }
  return 0;
}
}  // namespace

int Domain::create(const DomainConfig& cfg, std::unique_ptr<Domain>* out) {
  if (cfg.domid == 0 || cfg.domid >= control::kDomidFirstReserved) return -EINVAL;
  if (cfg.nr_grant_frames == 0 || cfg.nr_grant_frames > control::kMaxGrantFrames) return -EINVAL;
  const std::uint64_t fixed_pages = kFirstGrantFrameGfn + cfg.nr_grant_frames;
  if (cfg.memory_bytes % kPage != 0 || cfg.memory_bytes / kPage <= fixed_pages) return -EINVAL;

  std::unique_ptr<Domain> d(new Domain());
  d->domid_ = cfg.domid;
  d->memory_bytes_ = cfg.memory_bytes;
  const std::string name = "pvio-domain-" + std::to_string(cfg.domid);
  d->memfd_.reset(::memfd_create(name.c_str(), MFD_CLOEXEC));
  if (!d->memfd_) return -errno;
  if (::ftruncate(d->memfd_.get(), static_cast<off_t>(cfg.memory_bytes)) != 0) return -errno;
  void* m = ::mmap(nullptr, cfg.memory_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                   d->memfd_.get(), 0);
  if (m == MAP_FAILED) return -errno;
  d->mem_ = static_cast<std::uint8_t*>(m);
  d->memory_.add_region(0, cfg.memory_bytes, d->mem_);
  d->region_ = control::RegionDesc{0, cfg.memory_bytes, 0};

  // The memfd starts zeroed: an all-zero shared_info has nothing pending or masked, and an
  // all-zero grant frame holds only invalid (flags 0) entries.
  d->shared_info_ = reinterpret_cast<evtchn::shared_info*>(d->page(kSharedInfoGfn));
  d->xenstore_ = reinterpret_cast<xenstore_domain_interface*>(d->page(kXenstoreGfn));
  for (std::uint32_t i = 0; i < cfg.nr_grant_frames; ++i) {
    d->grant_frame_gfns_.push_back(kFirstGrantFrameGfn + i);
    d->grant_frames_.push_back(
        reinterpret_cast<gnttab::grant_entry_v1*>(d->page(kFirstGrantFrameGfn + i)));
  }
  d->grant_free_.resize(std::size_t{cfg.nr_grant_frames} * gnttab::kEntriesPerFrame);
  d->grant_table_ = std::make_unique<gnttab::GrantTable>(
      d->grant_frames_.data(), cfg.nr_grant_frames, d->grant_free_.data(),
      static_cast<std::uint32_t>(d->grant_free_.size()));
  // As the toolstack does: the xenstore page is granted to Dom0 in its reserved ref.
  if (!d->grant_table_->grant_access_ref(gnttab::GNTTAB_RESERVED_XENSTORE, 0, kXenstoreGfn, false))
    return -EIO;
  d->next_free_gfn_ = fixed_pages;

  d->upcall_fd_.reset(evtchn::eventfd_create(true));
  d->stop_fd_.reset(evtchn::eventfd_create(true));
  d->epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
  if (!d->upcall_fd_ || !d->stop_fd_ || !d->epoll_) return -EMFILE;
  d->upcall_ = std::make_unique<evtchn::UpcallNotifier>(d->shared_info_, d->upcall_fd_.get());
  d->ports_ = std::make_unique<evtchn::PortTable>(cfg.domid, d->shared_info_, d->upcall_.get());
  d->handlers_.resize(evtchn::kNrEventChannels);

  // As the toolstack does at domain build: the store port, unbound and offered to Dom0.
  const evtchn::PortResult xs = d->ports_->alloc_unbound(0);
  if (xs.rc != 0) return xs.rc;
  d->xenstore_port_ = xs.port;

  const std::string path = cfg.socket_path.empty() ? control::domain_socket_path(cfg.domid)
                                                   : cfg.socket_path;
  if (const auto slash = path.rfind('/'); slash != std::string::npos && slash > 0) {
    if (int rc = make_dirs(path.substr(0, slash)); rc != 0) return rc;
  }
  d->dom0_ports_ = std::make_unique<control::Dom0Ports>(d->mu_, *d->ports_,
                                                        [dp = d.get()] { return dp->describe(); });
  // A killed backend never unmaps: the busy bits it left would keep the frontend from ever
  // ending those grants (and the table runs dry after a few restarts). Every Dom0 service is
  // domain 0, so the dead service's maptrack page says which bits were its own; bits another
  // attached service also holds stay.
  d->dom0_ports_->on_dropped([dp = d.get()](const gnttab::Maptrack& dead,
                                            std::span<const gnttab::Maptrack> live) {
    const std::uint32_t n = gnttab::release_dead_mapper(
        dead, live, 0, [dp](grant_ref_t ref) { return dp->grant_table_->shared_entry(ref); });
    if (n != 0) dp->released_grants_.fetch_add(n, std::memory_order_relaxed);
  });
  d->server_ = std::make_unique<control::ControlServer>(*d->dom0_ports_);
  if (int rc = d->server_->listen(path); rc != 0) return rc;

  const std::pair<int, std::uint64_t> watch[] = {
      {d->server_->epoll_fd(), kKeyServer}, {d->upcall_fd_.get(), kKeyUpcall},
      {d->stop_fd_.get(), kKeyStop}};
  for (const auto& [fd, key] : watch) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = key;
    if (::epoll_ctl(d->epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return -errno;
  }
  *out = std::move(d);
  return 0;
}

Domain::~Domain() {
  // Order matters: the server's clients own Dom0 tables linked into ports_, and the tables
  // clear pending bits in shared_info, which lives in the memory unmapped last.
  server_.reset();
  {
    std::lock_guard lk(mu_);
    dom0_ports_.reset();
    ports_.reset();
  }
  if (mem_ != nullptr) ::munmap(mem_, memory_bytes_);
}

int Domain::alloc_pages(std::uint64_t n, std::uint64_t* gfn) {
  std::lock_guard lk(mu_);
  const std::uint64_t total = memory_bytes_ / kPage;
  if (n == 0 || n > total - next_free_gfn_) return -ENOMEM;
  *gfn = next_free_gfn_;
  next_free_gfn_ += n;
  return 0;
}

evtchn::PortResult Domain::alloc_unbound(domid_t remote_dom, Handler handler) {
  std::lock_guard lk(mu_);
  const evtchn::PortResult r = ports_->alloc_unbound(remote_dom);
  if (r.rc == 0) handlers_[r.port] = std::move(handler);
  return r;
}

int Domain::set_handler(evtchn_port_t port, Handler handler) {
  std::lock_guard lk(mu_);
  if (port >= evtchn::kNrEventChannels || port == 0) return -EINVAL;
  handlers_[port] = std::move(handler);
  return 0;
}

int Domain::send(evtchn_port_t port) {
  std::lock_guard lk(mu_);
  return ports_->send(port);
}

int Domain::close(evtchn_port_t port) {
  std::lock_guard lk(mu_);
  const int rc = ports_->close(port);
  if (rc == 0) handlers_[port] = nullptr;
  return rc;
}

void Domain::mask(evtchn_port_t port) { evtchn::two_level::mask(*shared_info_, port); }

int Domain::unmask(evtchn_port_t port) {
  std::lock_guard lk(mu_);
  return ports_->unmask(port);
}

int Domain::status(evtchn_port_t port, evtchn::ChannelStatus* out) const {
  std::lock_guard lk(mu_);
  return ports_->status(port, out);
}

std::size_t Domain::attached_clients() const {
  std::lock_guard lk(mu_);
  return dom0_ports_->size();
}

void Domain::stop() { evtchn::eventfd_signal(stop_fd_.get()); }

int Domain::run() {
  // A stop() that came before run() ends it at once: it is not drained here.
  for (;;) {
    const int rc = run_once(-1);
    if (rc == 1) return 0;
    if (rc < 0) return rc;
  }
}

int Domain::run_once(int timeout_ms) {
  epoll_event evs[4];
  const int n = ::epoll_wait(epoll_.get(), evs, 4, timeout_ms);
  if (n < 0) return errno == EINTR ? 0 : -errno;
  bool stop_requested = false;
  for (int i = 0; i < n; ++i) {
    switch (evs[i].data.u64) {
      case kKeyServer: server_->dispatch(); break;
      case kKeyUpcall: handle_upcall(); break;
      case kKeyStop: {
        std::uint64_t v;
        stop_requested = ::read(stop_fd_.get(), &v, sizeof(v)) > 0;
        break;
      }
    }
  }
  return stop_requested ? 1 : 0;
}

void Domain::set_upcall_hook(std::function<void()> hook) {
  std::lock_guard lk(mu_);
  upcall_hook_ = std::move(hook);
}

void Domain::handle_upcall() {
  std::uint64_t v;
  if (::read(upcall_fd_.get(), &v, sizeof(v)) < 0) return;  // spurious (EAGAIN)
  std::function<void()> hook;
  {
    std::lock_guard lk(mu_);
    hook = upcall_hook_;
  }
  if (hook) {
    hook();
    return;
  }
  evtchn::two_level::do_upcall(*shared_info_, [this](evtchn_port_t port) {
    Handler h;
    {
      std::lock_guard lk(mu_);
      h = handlers_[port];
    }
    if (h) h(port);
  });
}

control::DomainDescription Domain::describe() {
  control::DomainDescription d;
  d.domid = domid_;
  d.memfd = memfd_.get();
  d.upcall_fd = upcall_fd_.get();
  d.regions = std::span<const control::RegionDesc>(&region_, 1);
  d.grant_frame_gfns = grant_frame_gfns_;
  d.shared_info_gfn = kSharedInfoGfn;
  d.xenstore_gfn = kXenstoreGfn;
  d.xenstore_port = xenstore_port_;
  return d;
}

}  // namespace pvio::domain
