// ControlServer: accept, parse once, answer; protocol errors drop only the offending client.
#include "pvio/control/server.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <type_traits>

namespace pvio::control {

namespace {
constexpr std::uint64_t kListenKey = 0;

template <typename T>
T reply_to(MsgType type, std::uint32_t request_id) {
  T m;
  std::memset(&m, 0, sizeof(m));
  m.hdr = make_header(type, sizeof(T), request_id);
  return m;
}
}  // namespace

ControlServer::ControlServer(ControlBackend& backend)
    : backend_(backend), epoll_(::epoll_create1(EPOLL_CLOEXEC)) {}

ControlServer::~ControlServer() {
  while (!clients_.empty()) drop(clients_.begin()->first);
  if (listen_ && !path_.empty()) ::unlink(path_.c_str());
}

int ControlServer::listen(const std::string& path) {
  if (!epoll_) return -EMFILE;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) return -ENAMETOOLONG;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  UniqueFd s(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!s) return -errno;
  ::unlink(path.c_str());
  if (::bind(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return -errno;
  if (::listen(s.get(), 16) != 0) return -errno;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kListenKey;
  if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, s.get(), &ev) != 0) return -errno;
  listen_ = std::move(s);
  path_ = path;
  return 0;
}

void ControlServer::dispatch() {
  epoll_event evs[16];
  for (;;) {
    const int n = ::epoll_wait(epoll_.get(), evs, 16, 0);
    if (n <= 0) return;
    for (int i = 0; i < n; ++i) {
      const std::uint64_t key = evs[i].data.u64;
      if (key == kListenKey) {
        accept_all();
        continue;
      }
      auto it = clients_.find(key);
      if (it == clients_.end()) continue;  // dropped earlier in this batch
      if (!handle(key, it->second)) drop(key);
    }
  }
}

void ControlServer::accept_all() {
  for (;;) {
    const int fd = ::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) return;
    const ClientId id = next_id_++;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
      ::close(fd);
      continue;
    }
    clients_[id].sock.reset(fd);
  }
}

void ControlServer::drop(ClientId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  if (it->second.attached) backend_.client_dropped(id);
  ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.sock.get(), nullptr);
  clients_.erase(it);
}

bool ControlServer::handle(ClientId id, Client& c) {
  Received r = recv_message(c.sock.get());
  if (r.rc == -EAGAIN || r.rc == -EWOULDBLOCK) return true;
  if (r.rc <= 0) return false;  // closed or broken
  const Parsed p = parse_received(r);
  // Every fd that arrived is closed when `r` goes: no message sent to the domain carries any.
  if (p.error != ParseError::None) {
    auto e = reply_to<ErrorReply>(MsgType::Error, p.request_id);
    e.status = parse_error_status(p.error);
    e.bad_type = p.type;
    send_message(c.sock.get(), e);
    return false;
  }
  const int sock = c.sock.get();
  if (const auto* m = std::get_if<AttachRequest>(&p.msg)) {
    auto rep = reply_to<AttachReply>(MsgType::AttachReply, p.request_id);
    const DomainDescription d = backend_.describe();
    if (c.attached) {
      rep.status = -EALREADY;
    } else if (m->domid != d.domid) {
      rep.status = -ESRCH;  // this socket serves another domain
    } else if (d.regions.empty() || d.regions.size() > kMaxRegions ||
               d.grant_frame_gfns.size() > kMaxGrantFrames) {
      rep.status = -EIO;
    }
    if (rep.status != 0) return send_message(sock, rep) == 0;
    rep.domid = d.domid;
    rep.nr_regions = static_cast<std::uint32_t>(d.regions.size());
    for (std::size_t i = 0; i < d.regions.size(); ++i) rep.regions[i] = d.regions[i];
    rep.nr_grant_frames = static_cast<std::uint32_t>(d.grant_frame_gfns.size());
    for (std::size_t i = 0; i < d.grant_frame_gfns.size(); ++i)
      rep.grant_frame_gfns[i] = d.grant_frame_gfns[i];
    rep.shared_info_gfn = d.shared_info_gfn;
    rep.xenstore_gfn = d.xenstore_gfn;
    rep.xenstore_port = d.xenstore_port;
    const int maptrack = backend_.client_attached(id);
    if (maptrack < 0) {
      auto refuse = reply_to<AttachReply>(MsgType::AttachReply, p.request_id);
      refuse.status = maptrack;
      return send_message(sock, refuse) == 0;
    }
    const int fds[3] = {d.memfd, d.upcall_fd, maptrack};
    if (send_message(sock, rep, fds) != 0) {
      backend_.client_gone(id);
      return false;
    }
    c.attached = true;
    return true;
  }
  if (const auto* m = std::get_if<BindInterdomainRequest>(&p.msg)) {
    auto rep = reply_to<BindInterdomainReply>(MsgType::BindInterdomainReply, p.request_id);
    rep.remote_port = m->remote_port;
    if (!c.attached) {
      rep.status = -ENOTCONN;
      return send_message(sock, rep) == 0;
    }
    const BindResult b = backend_.bind_interdomain(id, m->remote_port);
    rep.status = b.status;
    if (b.status != 0) {
      rep.remote_port = 0;
      return send_message(sock, rep) == 0;
    }
    rep.local_port = b.local_port;
    const int fds[1] = {b.kick_fd};
    return send_message(sock, rep, fds) == 0;
  }
  if (const auto* m = std::get_if<UnbindRequest>(&p.msg)) {
    auto rep = reply_to<UnbindReply>(MsgType::UnbindReply, p.request_id);
    rep.local_port = m->local_port;
    rep.status = c.attached ? backend_.unbind(id, m->local_port) : -ENOTCONN;
    return send_message(sock, rep) == 0;
  }
  if (std::holds_alternative<DetachRequest>(p.msg)) {
    auto rep = reply_to<DetachReply>(MsgType::DetachReply, p.request_id);
    rep.status = c.attached ? 0 : -ENOTCONN;
    if (c.attached) {
      backend_.client_gone(id);
      c.attached = false;
    }
    send_message(sock, rep);
    return false;  // DETACH ends the connection
  }
  // A reply type sent to the server is well-formed but not a request.
  auto e = reply_to<ErrorReply>(MsgType::Error, p.request_id);
  e.status = -EOPNOTSUPP;
  e.bad_type = p.type;
  send_message(sock, e);
  return false;
}

}  // namespace pvio::control
