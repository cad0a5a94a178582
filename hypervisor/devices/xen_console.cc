// PV console backend: the ring protocol of xen/include/public/io/console.h. The guest produces
// out[] (out_prod) and consumes in[] (in_cons); the backend owns out_cons and in_prod. Each
// index the guest controls is read once per pass and checked before any byte is copied.
#include "pvio/hypervisor/devices/xen_console.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "pvio/event_channel/notifier.h"

namespace pvio::hv {

namespace {

constexpr std::uint32_t kOutSize = sizeof(xen::xencons_interface::out);
constexpr std::uint32_t kInSize = sizeof(xen::xencons_interface::in);
constexpr std::size_t kMaxPendingIn = 4096;
enum : std::uint64_t { kKeyKick = 1, kKeyStop, kKeyListen, kKeyClient };

std::uint32_t load_acquire(std::uint32_t& v) {
  return std::atomic_ref<std::uint32_t>(v).load(std::memory_order_acquire);
}
void store_release(std::uint32_t& v, std::uint32_t x) {
  std::atomic_ref<std::uint32_t>(v).store(x, std::memory_order_release);
}

void write_all(int fd, const char* p, std::size_t n) {
  while (fd >= 0 && n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

}  // namespace

XenConsole::XenConsole(xen::xencons_interface* ring, std::function<void()> notify_guest, int log_fd)
    : ring_(ring), notify_guest_(std::move(notify_guest)), log_fd_(log_fd) {}

XenConsole::~XenConsole() { stop(); }

int XenConsole::start(const std::string& socket_path) {
  kick_fd_.reset(evtchn::eventfd_create(true));
  stop_fd_.reset(evtchn::eventfd_create(true));
  if (!kick_fd_ || !stop_fd_) return -EMFILE;
  if (!socket_path.empty()) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path.size() >= sizeof(addr.sun_path)) return -ENAMETOOLONG;
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
    listen_fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!listen_fd_) return -errno;
    ::unlink(socket_path.c_str());
    if (::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listen_fd_.get(), 1) != 0)
      return -errno;
    socket_path_ = socket_path;
  }
  thread_ = std::thread([this] { loop(); });
  return 0;
}

void XenConsole::kick() {
  if (kick_fd_) evtchn::eventfd_signal(kick_fd_.get());
}

void XenConsole::stop() {
  if (!thread_.joinable()) return;
  evtchn::eventfd_signal(stop_fd_.get());
  thread_.join();
  drain_output();  // what the guest wrote last
  if (!socket_path_.empty()) ::unlink(socket_path_.c_str());
}

ConsoleStats XenConsole::stats() const {
  return {bytes_out_.load(), bytes_in_.load(), invalid_rings_.load(), clients_.load()};
}

void XenConsole::loop() {
  control::UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (!ep) return;
  auto watch = [&](int fd, std::uint64_t key) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = key;
    ::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev);
  };
  watch(kick_fd_.get(), kKeyKick);
  watch(stop_fd_.get(), kKeyStop);
  if (listen_fd_) watch(listen_fd_.get(), kKeyListen);
  // Output written before the first kick (Mini-OS writes without notifying until its
  // console is up) is picked up by the first pass.
  drain_output();
  for (;;) {
    epoll_event evs[4];
    const int n = ::epoll_wait(ep.get(), evs, 4, -1);
    if (n < 0 && errno != EINTR) return;
    for (int i = 0; i < n; ++i) {
      switch (evs[i].data.u64) {
        case kKeyStop:
          return;
        case kKeyKick: {
          std::uint64_t v;
          (void)!::read(kick_fd_.get(), &v, sizeof(v));
          drain_output();
          feed_input();  // the guest may have made room in in[]
          break;
        }
        case kKeyListen: {
          const bool had = static_cast<bool>(client_fd_);
          accept_client();
          if (!had && client_fd_) watch(client_fd_.get(), kKeyClient);
          break;
        }
        case kKeyClient: {
          char buf[512];
          const ssize_t r = ::read(client_fd_.get(), buf, sizeof(buf));
          if (r <= 0) {
            ::epoll_ctl(ep.get(), EPOLL_CTL_DEL, client_fd_.get(), nullptr);
            client_fd_.reset();
            pending_in_.clear();
            break;
          }
          if (pending_in_.size() < kMaxPendingIn) pending_in_.append(buf, static_cast<std::size_t>(r));
          feed_input();
          break;
        }
      }
    }
  }
}

void XenConsole::accept_client() {
  const int fd = ::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) return;
  // One console client at a time, as xenconsoled serves one pty per domain: a second one is
  // told and turned away.
  if (client_fd_) {
    static const char busy[] = "pvio-hv: console already attached\r\n";
    write_all(fd, busy, sizeof(busy) - 1);
    ::close(fd);
    return;
  }
  client_fd_.reset(fd);
  ++clients_;
}

void XenConsole::drain_output() {
  xen::xencons_interface& r = *ring_;
  const std::uint32_t cons = load_acquire(r.out_cons);
  const std::uint32_t prod = load_acquire(r.out_prod);
  const std::uint32_t avail = prod - cons;
  if (avail == 0) return;
  if (avail > kOutSize) {
    // The guest moved out_prod more than a ring past out_cons: nothing in between is
    // meaningful. Skip to its producer so the ring can work again.
    ++invalid_rings_;
    store_release(r.out_cons, prod);
    return;
  }
  char buf[kOutSize];
  for (std::uint32_t i = 0; i < avail; ++i) buf[i] = r.out[(cons + i) & (kOutSize - 1)];
  store_release(r.out_cons, prod);
  notify_guest_();  // room in out[]
  bytes_out_ += avail;
  write_all(log_fd_, buf, avail);
  if (client_fd_) write_all(client_fd_.get(), buf, avail);
}

void XenConsole::feed_input() {
  if (pending_in_.empty()) return;
  xen::xencons_interface& r = *ring_;
  const std::uint32_t cons = load_acquire(r.in_cons);
  const std::uint32_t prod = load_acquire(r.in_prod);
  const std::uint32_t used = prod - cons;
  if (used > kInSize) {  // in_cons moved past in_prod: the guest corrupted its ring
    ++invalid_rings_;
    return;
  }
  const std::uint32_t n = std::min<std::uint32_t>(kInSize - used,
                                                  static_cast<std::uint32_t>(pending_in_.size()));
  if (n == 0) return;
  for (std::uint32_t i = 0; i < n; ++i) r.in[(prod + i) & (kInSize - 1)] = pending_in_[i];
  store_release(r.in_prod, prod + n);
  pending_in_.erase(0, n);
  bytes_in_ += n;
  notify_guest_();
}

}  // namespace pvio::hv
