// Xenstore for the user-mode blkfront binding: the guest ring client on the domain's
// xenstore page, and the Dom0 socket client for set-ups without a ring-serving daemon.
#include "pvio/blkfront_user/xenstore_access.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
  explicit RingXenstore(domain::Domain& dom) : dom_(dom), port_(dom.xenstore_port()) {
    event_fd_ = evtchn::eventfd_create(true);
    const int efd = event_fd_;
    dom_.set_handler(port_, [efd](evtchn_port_t) { evtchn::eventfd_signal(efd); });
    // Same layout as the domain's page type (both are xs_wire.h's struct).
    auto* page = reinterpret_cast<xs::xenstore_domain_interface*>(dom.xenstore_interface());
    client_ = std::make_unique<Client>(page, xs::GuestPlatform{this, &notify_cb, &wait_cb});
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

  domain::Domain& dom_;
  evtchn_port_t port_;
  int event_fd_ = -1;
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

}  // namespace

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
