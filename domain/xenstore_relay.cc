// The guest's xenstore ring relayed to a host unix socket; see xenstore_relay.h.
#include "pvio/domain/xenstore_relay.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "pvio/event_channel/notifier.h"
#include "pvio/xen/io/xs_wire.h"

namespace pvio::domain {
namespace {

using xs::XENSTORE_RING_IDX;

XENSTORE_RING_IDX load_acquire(const XENSTORE_RING_IDX* p) {
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
void store_release(XENSTORE_RING_IDX* p, XENSTORE_RING_IDX v) {
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

void drain(int fd) {
  std::uint64_t v;
  while (::read(fd, &v, sizeof v) == static_cast<ssize_t>(sizeof v)) {
  }
}

constexpr std::size_t kMaxBuffered = 64 * 1024;

}  // namespace

int XenstoreRelay::start(Domain& dom, const std::string& socket_path,
                         std::unique_ptr<XenstoreRelay>* out) {
  std::unique_ptr<XenstoreRelay> r(new XenstoreRelay(dom));
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof(addr.sun_path)) return -ENAMETOOLONG;
  r->listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!r->listen_) return -errno;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  struct stat st{};
  if (::lstat(socket_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(socket_path.c_str());
  if (::bind(r->listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) return -errno;
  r->path_ = socket_path;
  ::chmod(socket_path.c_str(), 0600);
  if (::listen(r->listen_.get(), 8) != 0) return -errno;
  r->event_.reset(evtchn::eventfd_create(true));
  r->stop_.reset(evtchn::eventfd_create(true));
  if (!r->event_ || !r->stop_) return -EMFILE;
  const int efd = r->event_.get();
  if (int rc = dom.set_handler(dom.xenstore_port(),
                               [efd](evtchn_port_t) { evtchn::eventfd_signal(efd); });
      rc != 0)
    return rc;
  r->thread_ = std::thread([p = r.get()] { p->serve(); });
  *out = std::move(r);
  return 0;
}

XenstoreRelay::~XenstoreRelay() {
  if (thread_.joinable()) {
    evtchn::eventfd_signal(stop_.get());
    thread_.join();
  }
  if (event_) dom_.set_handler(dom_.xenstore_port(), nullptr);
  if (!path_.empty()) ::unlink(path_.c_str());
}

void XenstoreRelay::serve() {
  xs::xenstore_domain_interface* page = dom_.xenstore_interface();
  // Our own copies of the indices the guest side produces; see xs_wire.h for who owns which.
  XENSTORE_RING_IDX req_prod = load_acquire(&page->req_prod);
  XENSTORE_RING_IDX rsp_cons = load_acquire(&page->rsp_cons);
  control::UniqueFd client;
  bool broken = false;  // the daemon's indices made no sense: stop touching the ring
  for (;;) {
    pollfd pfd[3] = {{stop_.get(), POLLIN, 0}, {event_.get(), POLLIN, 0}, {-1, 0, 0}};
    if (!client) {
      pfd[2] = {listen_.get(), POLLIN, 0};
    } else if (to_ring_.size() < kMaxBuffered) {
      pfd[2] = {client.get(), POLLIN, 0};
    }
    if (::poll(pfd, 3, -1) < 0 && errno != EINTR) return;
    if (pfd[0].revents != 0) return;
    if (pfd[1].revents != 0) drain(event_.get());
    if (pfd[2].revents != 0) {
      if (!client) {
        client.reset(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      } else {
        char buf[16384];
        const ssize_t n = ::read(client.get(), buf, sizeof buf);
        if (n > 0) {
          to_ring_.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
          client.reset();
          to_ring_.clear();
        }
      }
    }
    if (broken) continue;

    bool kick = false;
    // Requests: as much as the daemon has room for.
    const XENSTORE_RING_IDX req_cons = load_acquire(&page->req_cons);
    if (req_prod - req_cons > xs::XENSTORE_RING_SIZE) {
      broken = true;
      continue;
    }
    while (!to_ring_.empty()) {
      const XENSTORE_RING_IDX used = req_prod - load_acquire(&page->req_cons);
      const std::uint32_t space = xs::XENSTORE_RING_SIZE - std::min(used, xs::XENSTORE_RING_SIZE);
      if (space == 0) break;
      const std::uint32_t off = xs::MASK_XENSTORE_IDX(req_prod);
      const std::size_t n =
          std::min<std::size_t>({space, xs::XENSTORE_RING_SIZE - off, to_ring_.size()});
      std::memcpy(page->req + off, to_ring_.data(), n);
      to_ring_.erase(0, n);
      req_prod += static_cast<XENSTORE_RING_IDX>(n);
      store_release(&page->req_prod, req_prod);
      kick = true;
    }
    // Replies and watch events: take all, pass on whole messages.
    for (;;) {
      const XENSTORE_RING_IDX avail = load_acquire(&page->rsp_prod) - rsp_cons;
      if (avail > xs::XENSTORE_RING_SIZE) {
        broken = true;
        break;
      }
      if (avail == 0) break;
      const std::uint32_t off = xs::MASK_XENSTORE_IDX(rsp_cons);
      const std::uint32_t n = std::min(avail, xs::XENSTORE_RING_SIZE - off);
      from_ring_.append(page->rsp + off, n);
      rsp_cons += n;
      store_release(&page->rsp_cons, rsp_cons);
      kick = true;
    }
    while (from_ring_.size() >= sizeof(xs::xsd_sockmsg)) {
      xs::xsd_sockmsg hdr;
      std::memcpy(&hdr, from_ring_.data(), sizeof hdr);
      if (hdr.len > xs::XENSTORE_PAYLOAD_MAX) {
        broken = true;
        break;
      }
      const std::size_t whole = sizeof hdr + hdr.len;
      if (from_ring_.size() < whole) break;
      // With no client connected (or a client that left) the message is dropped: the ring
      // must keep moving so the daemon is never stuck on us.
      if (client && !write_all(client.get(), from_ring_.data(), whole)) client.reset();
      from_ring_.erase(0, whole);
    }
    if (kick) dom_.send(dom_.xenstore_port());
  }
}

}  // namespace pvio::domain
