// Xenstore for the user-mode blkfront binding: the guest ring client on the domain's
// xenstore page, and the Dom0 socket client for set-ups without a ring-serving daemon.
#include "pvio/blkfront_user/xenstore_access.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <functional>
#include <mutex>
#include <vector>

#include "pvio/blkfront/platform.h"
#include "pvio/domain/domain.h"
#include "pvio/event_channel/notifier.h"
#include "pvio/xenstore/client.h"
#include "pvio/xenstore/guest_client.h"

namespace pvio::blkfront::user {
namespace {

int xen_errno(xs::XsError e) {
  switch (e) {
    case xs::XsError::None: return 0;
    case xs::XsError::Inval: return -XEN_EINVAL;
    case xs::XsError::Acces: return -13;  // EACCES
    case xs::XsError::Exist: return -17;  // EEXIST
    case xs::XsError::NoEnt: return -XEN_ENOENT;
    case xs::XsError::NoMem: return -XEN_ENOMEM;
    case xs::XsError::NoSpc: return -XEN_ENOSPC;
    case xs::XsError::Again: return -XEN_EAGAIN;
    case xs::XsError::Busy: return -XEN_EBUSY;
    case xs::XsError::Perm: return -XEN_EPERM;
    case xs::XsError::TooBig: return -7;  // E2BIG
    default: return -XEN_EIO;
  }
}

void drain_eventfd(int fd) {
  std::uint64_t v;
  while (::read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v)) {
  }
}

// The guest's xenstore ring page, as a frontend inside the guest uses it (xs_wire.h).
class RingXenstore final : public XenstoreAccess {
 public:
  // `also_kick` (optional) runs on the domain loop thread at every xenstore event.
  explicit RingXenstore(domain::Domain& dom, std::function<void()> also_kick = nullptr)
      : dom_(dom), port_(dom.xenstore_port()) {
    event_fd_ = evtchn::eventfd_create(true);
    const int efd = event_fd_;
    dom_.set_handler(port_, [efd, also_kick](evtchn_port_t) {
      evtchn::eventfd_signal(efd);
      if (also_kick) also_kick();
    });
    // Same layout as the domain's page type (both are xs_wire.h's struct).
    auto* page = reinterpret_cast<xs::xenstore_domain_interface*>(dom.xenstore_interface());
    xs::GuestPlatform pf{this, &notify_cb, &wait_cb};
    pf.abandoned = &abandoned_cb;
    client_ = std::make_unique<Client>(page, pf);
  }
  // Requests waiting for xenstored, and later ones, fail with -EIO.
  void abandon() {
    abandoned_.store(true, std::memory_order_release);
    evtchn::eventfd_signal(event_fd_);
  }
  ~RingXenstore() override {
    dom_.set_handler(port_, nullptr);
    ::close(event_fd_);
  }

  int read(const char* path, std::string* out) override {
    std::size_t len = 0;
    const xs::XsError e = client_->read(path, buf_, sizeof buf_, &len);
    if (e != xs::XsError::None) return xen_errno(e);
    out->assign(buf_, len);
    return 0;
  }
  int write(const char* path, const char* value) override {
    return xen_errno(client_->write(path, value, std::strlen(value)));
  }
  int remove(const char* path) override { return xen_errno(client_->rm(path)); }
  int watch(const char* path, const char* token) override {
    return xen_errno(client_->watch(path, token));
  }
  int unwatch(const char* path, const char* token) override {
    return xen_errno(client_->unwatch(path, token));
  }
  int drain_events() override {
    int n = 0;
    while (client_->read_watch(path_, sizeof path_, token_, sizeof token_, false)) ++n;
    const unsigned lost = client_->lost_events();
    if (lost != lost_seen_) {
      n += static_cast<int>(lost - lost_seen_);
      lost_seen_ = lost;
    }
    return n;
  }
  void wait(int timeout_ms) override {
    pollfd p{event_fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) > 0) drain_eventfd(event_fd_);
  }
  int event_fd() const override { return event_fd_; }

 private:
  using Client = xs::GuestClient<16>;
  static void notify_cb(void* ctx) {
    auto* self = static_cast<RingXenstore*>(ctx);
    self->dom_.send(self->port_);
  }
  // The ring client blocks here for the daemon's answer; bounded so a vanished daemon shows
  // up as a stuck request, not a lost wake-up.
  static void wait_cb(void* ctx) {
    auto* self = static_cast<RingXenstore*>(ctx);
    pollfd p{self->event_fd_, POLLIN, 0};
    // Watch events that come with this kick are queued by the client and found by
    // drain_events() without a kick of their own.
    if (::poll(&p, 1, 100) > 0) drain_eventfd(self->event_fd_);
  }

  static bool abandoned_cb(void* ctx) {
    return static_cast<RingXenstore*>(ctx)->abandoned_.load(std::memory_order_acquire);
  }

  domain::Domain& dom_;
  evtchn_port_t port_;
  int event_fd_ = -1;
  std::atomic<bool> abandoned_{false};
  std::unique_ptr<Client> client_;
  unsigned lost_seen_ = 0;
  char buf_[xs::XENSTORE_PAYLOAD_MAX + 1];
  char path_[xs::XENSTORE_PAYLOAD_MAX + 1];
  char token_[xs::XENSTORE_PAYLOAD_MAX + 1];
};

class SocketXenstore final : public XenstoreAccess {
 public:
  SocketXenstore(std::unique_ptr<xs::Client> c, domid_t domid)
      : client_(std::move(c)), home_("/local/domain/" + std::to_string(domid)) {}

  int read(const char* path, std::string* out) override {
    auto r = client_->read(abs(path));
    if (!r.ok()) return xen_errno(r.error);
    *out = std::move(r.value);
    return 0;
  }
  int write(const char* path, const char* value) override {
    return xen_errno(client_->write(abs(path), value));
  }
  int remove(const char* path) override { return xen_errno(client_->rm(abs(path))); }
  int watch(const char* path, const char* token) override {
    return xen_errno(client_->watch(abs(path), token));
  }
  int unwatch(const char* path, const char* token) override {
    return xen_errno(client_->unwatch(abs(path), token));
  }
  int drain_events() override {
    int n = pending_;
    pending_ = 0;
    while (client_->read_watch(0)) ++n;
    return n;
  }
  void wait(int timeout_ms) override {
    if (auto ev = client_->read_watch(timeout_ms)) ++pending_;
  }
  int event_fd() const override { return -1; }

 private:
  std::string abs(const char* path) const {
    return path[0] == '/' ? std::string(path) : home_ + "/" + path;
  }
  std::unique_ptr<xs::Client> client_;
  std::string home_;
  int pending_ = 0;
};

class SharedView;

}  // namespace

// The one ring client, a lock serialising the users' requests on it, and the users' event fds,
// each kicked at every xenstore event so every user rescans.
struct SharedRingXenstore::State {
  std::mutex mu;  // one request at a time on the ring
  std::unique_ptr<RingXenstore> ring;
  std::mutex views_mu;
  std::vector<SharedView*> views;
};

namespace {

class SharedView final : public XenstoreAccess {
 public:
  explicit SharedView(std::shared_ptr<SharedRingXenstore::State> s)
      : s_(std::move(s)), event_fd_(evtchn::eventfd_create(true)) {
    std::lock_guard g(s_->views_mu);
    s_->views.push_back(this);
  }
  ~SharedView() override {
    {
      std::lock_guard g(s_->views_mu);
      std::erase(s_->views, this);
    }
    ::close(event_fd_);
  }

  int read(const char* path, std::string* out) override {
    std::lock_guard g(s_->mu);
    return s_->ring->read(path, out);
  }
  int write(const char* path, const char* value) override {
    std::lock_guard g(s_->mu);
    return s_->ring->write(path, value);
  }
  int remove(const char* path) override {
    std::lock_guard g(s_->mu);
    return s_->ring->remove(path);
  }
  int watch(const char* path, const char* token) override {
    std::lock_guard g(s_->mu);
    return s_->ring->watch(path, token);
  }
  int unwatch(const char* path, const char* token) override {
    std::lock_guard g(s_->mu);
    return s_->ring->unwatch(path, token);
  }
  // The ring's events are taken by whichever user drains first and counted for all of them.
  int drain_events() override {
    int n = 0;
    {
      std::lock_guard g(s_->mu);
      n = s_->ring->drain_events();
    }
    if (n > 0) {
      std::lock_guard g(s_->views_mu);
      for (SharedView* v : s_->views) v->pending_.fetch_add(n, std::memory_order_relaxed);
    }
    return pending_.exchange(0, std::memory_order_relaxed);
  }
  void wait(int timeout_ms) override {
    pollfd p{event_fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) > 0) drain_eventfd(event_fd_);
  }
  int event_fd() const override { return event_fd_; }

  void kick() { evtchn::eventfd_signal(event_fd_); }

 private:
  std::shared_ptr<SharedRingXenstore::State> s_;
  int event_fd_;
  std::atomic<int> pending_{0};
};

}  // namespace

SharedRingXenstore::SharedRingXenstore(domain::Domain& dom) : s_(std::make_shared<State>()) {
  State* st = s_.get();
  s_->ring = std::make_unique<RingXenstore>(dom, [st] {
    std::lock_guard g(st->views_mu);
    for (SharedView* v : st->views) v->kick();
  });
}

SharedRingXenstore::~SharedRingXenstore() = default;

std::unique_ptr<XenstoreAccess> SharedRingXenstore::open() {
  return std::make_unique<SharedView>(s_);
}

void SharedRingXenstore::abandon() { s_->ring->abandon(); }

std::unique_ptr<XenstoreAccess> make_ring_xenstore(domain::Domain& dom) {
  return std::make_unique<RingXenstore>(dom);
}

std::unique_ptr<XenstoreAccess> make_socket_xenstore(const std::string& socket_path,
                                                     domid_t domid) {
  auto c = xs::Client::connect(socket_path);
  if (!c) return nullptr;
  return std::make_unique<SocketXenstore>(std::move(c), domid);
}

}  // namespace pvio::blkfront::user
