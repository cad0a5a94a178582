// pvio-xenstored's unix-socket event loop; see daemon.h.
#include "pvio/xenstore/daemon.h"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <vector>

#include "pvio/xenstore/protocol.h"

namespace pvio::xs {
namespace {

constexpr std::size_t kMaxSocketOutput = 16u << 20;  // a client this far behind is dropped

[[noreturn]] void fail(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

}  // namespace

// One Dom0 client. Output is written straight away; what the socket does not take waits for
// EPOLLOUT. While a client has much unread output its requests are not read (backpressure).
class Daemon::SocketConn final : public Connection {
 public:
  SocketConn(int fd, int epoll_fd) : fd_(fd), epoll_fd_(epoll_fd) {}
  ~SocketConn() override { ::close(fd_); }

  void send(std::string_view m) override {
    if (broken_) return;
    if (pending_output() + m.size() > kMaxSocketOutput) {
      broken_ = true;
      return;
    }
    out_.append(m);
    flush();
  }
  std::size_t pending_output() const override { return out_.size() - head_; }

  void flush() {
    while (!broken_ && pending_output() > 0) {
      ssize_t n = ::send(fd_, out_.data() + head_, pending_output(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) {
        broken_ = true;
        break;
      }
      head_ += static_cast<std::size_t>(n);
    }
    if (head_ == out_.size()) {
      out_.clear();
      head_ = 0;
    }
    update_events();
  }

  void update_events() {
    uint32_t want = 0;
    if (pending_output() < Server::kMaxPendingOutput) want |= EPOLLIN;
    if (pending_output() > 0) want |= EPOLLOUT;
    if (want == events_ || broken_) return;
    events_ = want;
    epoll_event ev{};
    ev.events = want;
    ev.data.fd = fd_;
    ::epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd_, &ev);
  }

  int fd_;
  int epoll_fd_;
  ConnId id_ = 0;
  bool broken_ = false;
  uint32_t events_ = EPOLLIN;
  MessageReader reader_;
  std::string out_;
  std::size_t head_ = 0;
};

Daemon::Daemon(Server& server, std::string socket_path)
    : server_(server), path_(std::move(socket_path)) {
  sockaddr_un addr{};
  if (path_.size() >= sizeof(addr.sun_path)) {
    errno = ENAMETOOLONG;
    fail("socket path " + path_);
  }
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) fail("socket");
  struct stat st{};
  if (::lstat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path_.c_str());
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0)
    fail("bind " + path_);
  ::chmod(path_.c_str(), 0600);  // Dom0 clients are privileged: owner only
  if (::listen(listen_fd_, 64) != 0) fail("listen");
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) fail("epoll_create1");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = listen_fd_;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, listen_fd_, &ev) != 0) fail("epoll_ctl");
  defer_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (defer_fd_ < 0) fail("eventfd");
  ev.data.fd = defer_fd_;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, defer_fd_, &ev) != 0) fail("epoll_ctl");
}

bool Daemon::add_fd(int fd, std::function<void(uint32_t)> on_event) {
  if (fd < 0 || fds_.contains(fd) || conns_.contains(fd)) return false;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP;
  ev.data.fd = fd;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) return false;
  fds_.emplace(fd, std::make_shared<std::function<void(uint32_t)>>(std::move(on_event)));
  return true;
}

void Daemon::remove_fd(int fd) {
  if (fds_.erase(fd) == 0) return;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
}

void Daemon::defer(std::function<void()> fn) {
  deferred_.push_back(std::move(fn));
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(defer_fd_, &one, sizeof(one));
}

Daemon::~Daemon() {
  for (auto& [fd, c] : conns_) server_.detach(c->id_);
  conns_.clear();
  for (auto& fn : deferred_) fn();
  deferred_.clear();
  fds_.clear();
  if (defer_fd_ >= 0) ::close(defer_fd_);
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    ::unlink(path_.c_str());
  }
}

void Daemon::accept_clients() {
  while (true) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        spdlog::warn("accept: {}", std::strerror(errno));
      return;
    }
    auto c = std::make_unique<SocketConn>(fd, epoll_fd_);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) continue;
    c->id_ = server_.attach(0, c.get());  // socket clients are Dom0 tools
    spdlog::debug("client fd {} connected (conn {})", fd, c->id_);
    conns_.emplace(fd, std::move(c));
  }
}

void Daemon::on_readable(SocketConn& c) {
  char buf[16384];
  ssize_t n = ::read(c.fd_, buf, sizeof(buf));
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    c.broken_ = true;
    return;
  }
  std::span<const char> in(buf, static_cast<std::size_t>(n));
  while (!in.empty() && !c.broken_) {
    auto st = c.reader_.feed(in);
    if (st == MessageReader::Status::Corrupt) {
      spdlog::warn("conn {}: message longer than {} bytes, dropping connection", c.id_,
                   XENSTORE_PAYLOAD_MAX);
      c.broken_ = true;
      return;
    }
    if (st == MessageReader::Status::NeedMore) break;
    server_.handle(c.id_, c.reader_.header(), c.reader_.payload());
    c.reader_.reset();
  }
}

void Daemon::close_conn(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  ::epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr);
  server_.detach(it->second->id_);
  spdlog::debug("client fd {} closed", fd);
  conns_.erase(it);
}

void Daemon::run(int stop_fd) {
  epoll_event sev{};
  sev.events = EPOLLIN;
  sev.data.fd = stop_fd;
  if (stop_fd >= 0) ::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, stop_fd, &sev);
  std::vector<epoll_event> events(64);
  while (true) {
    int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      spdlog::error("epoll_wait: {}", std::strerror(errno));
      return;
    }
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == stop_fd) return;
      if (fd == listen_fd_) {
        accept_clients();
        continue;
      }
      if (fd == defer_fd_) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(defer_fd_, &v, sizeof(v));
        continue;
      }
      if (auto h = fds_.find(fd); h != fds_.end()) {
        // Hold the handler: it may remove itself.
        std::shared_ptr<std::function<void(uint32_t)>> fn = h->second;
        (*fn)(events[i].events);
        continue;
      }
      auto it = conns_.find(fd);
      if (it == conns_.end()) continue;
      SocketConn& c = *it->second;
      if (events[i].events & EPOLLOUT) c.flush();
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
    }
    // Close what broke during this round, after every handler has returned.
    std::vector<int> dead;
    for (auto& [fd, c] : conns_)
      if (c->broken_) dead.push_back(fd);
    for (int fd : dead) close_conn(fd);
    // Deferred work may defer more; run until quiet.
    while (!deferred_.empty()) {
      std::vector<std::function<void()>> work;
      work.swap(deferred_);
      for (auto& fn : work) fn();
    }
  }
}

}  // namespace pvio::xs
