// Dom0 xenstore client over a unix socket; see client.h.
#include "pvio/xenstore/client.h"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

namespace pvio::xs {
namespace {

std::vector<std::string> split_nul(std::string_view s) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i < s.size(); ++i)
    if (s[i] == '\0') {
      out.emplace_back(s.substr(start, i - start));
      start = i + 1;
    }
  return out;
}

std::string z(std::string_view s) {
  std::string r(s);
  r.push_back('\0');
  return r;
}

int connect_socket(const std::string& socket_path) {
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    errno = ENAMETOOLONG;
    return -1;
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int e = errno;
    ::close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

}  // namespace

std::unique_ptr<Client> Client::connect(const std::string& socket_path) {
  const int fd = connect_socket(socket_path);
  if (fd < 0) return nullptr;
  return std::unique_ptr<Client>(new Client(fd, socket_path));
}

Client::~Client() {
  if (fd_ >= 0) ::close(fd_);
}

void Client::enable_reconnect(ReconnectPolicy policy) { reconnect_ = policy; }

bool Client::reconnect() {
  if (!reconnect_) return false;
  // Everything of the old connection goes: its fd, a half-read message, unread bytes.
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  reader_.reset();
  inbuf_.clear();
  inbuf_head_ = 0;
  spdlog::warn("xenstore: lost the connection to {}; reconnecting", path_);
  const auto start = std::chrono::steady_clock::now();
  int delay = reconnect_->first_delay_ms;
  while (true) {
    const int fd = connect_socket(path_);
    if (fd >= 0) {
      fd_ = fd;
      lost_ = false;
      // Watches live in the daemon per connection: register them again. Each fires once on
      // registration, which tells the owner to re-read its state.
      std::size_t ok = 0;
      for (const auto& [path, token] : watches_) {
        std::string payload = path + '\0' + token + '\0';
        if (request_once(MsgType::XS_WATCH, payload, 0).ok()) ++ok;
      }
      if (lost_) continue;  // the daemon went again at once
      ++reconnects_;
      spdlog::info("xenstore: reconnected to {} after {} ms; {} of {} watches registered again",
                   path_,
                   std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - start).count(),
                   ok, watches_.size());
      return true;
    }
    if (std::chrono::steady_clock::now() - start >
        std::chrono::milliseconds(reconnect_->give_up_ms)) {
      spdlog::error("xenstore: no daemon at {} for {} ms; giving up", path_,
                    reconnect_->give_up_ms);
      lost_ = true;
      reconnect_.reset();  // lost for good: later calls fail at once
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    delay = std::min(delay * 2, reconnect_->max_delay_ms);
  }
}

bool Client::receive(int timeout_ms, xsd_sockmsg& hdr, std::string& payload) {
  while (true) {
    if (inbuf_head_ < inbuf_.size()) {
      std::span<const char> in(inbuf_.data() + inbuf_head_, inbuf_.size() - inbuf_head_);
      std::size_t before = in.size();
      auto st = reader_.feed(in);
      inbuf_head_ += before - in.size();
      if (st == MessageReader::Status::Corrupt) {
        lost_ = true;  // the stream cannot be resynchronised
        return false;
      }
      if (st == MessageReader::Status::Message) {
        hdr = reader_.header();
        payload.assign(reader_.payload().data(), reader_.payload().size());
        reader_.reset();
        return true;
      }
    }
    inbuf_.clear();
    inbuf_head_ = 0;
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return false;  // timeout
    if (r < 0) {
      lost_ = true;
      return false;
    }
    char buf[8192];
    ssize_t n = ::read(fd_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      lost_ = true;  // EOF or a socket error: the daemon is gone
      return false;
    }
    inbuf_.assign(buf, static_cast<std::size_t>(n));
  }
}

void Client::queue_event(std::string_view payload) {
  auto parts = split_nul(payload);
  if (parts.size() >= 2) events_.push_back({parts[0], parts[1]});
}

Result<std::string> Client::request(MsgType type, std::string_view payload, uint32_t tx) {
  if (lost_ && !reconnect()) return {XsError::Io, {}};
  while (true) {
    Result<std::string> r = request_once(type, payload, tx);
    if (!lost_ || !reconnect_) {
      if (r.ok() && type == MsgType::XS_WATCH) {
        // Remember it for a reconnection (path and token are the payload's two strings).
        auto parts = split_nul(payload);
        if (parts.size() == 2) watches_.emplace_back(parts[0], parts[1]);
      } else if (r.ok() && type == MsgType::XS_UNWATCH) {
        auto parts = split_nul(payload);
        if (parts.size() == 2)
          std::erase(watches_, std::make_pair(parts[0], parts[1]));
      }
      return r;
    }
    // The daemon went away before answering. A transaction died with the connection: its
    // owner must start again, exactly as after a conflict. Anything else is sent again (a
    // repeated WRITE, MKDIR or RM leaves the same tree).
    if (!reconnect()) return {XsError::Io, {}};
    if (tx != 0) return {XsError::Again, {}};
  }
}

Result<std::string> Client::request_once(MsgType type, std::string_view payload, uint32_t tx) {
  uint32_t req_id = next_req_++;
  std::string msg = encode_message(type, req_id, tx, payload);
  std::size_t off = 0;
  while (off < msg.size()) {
    ssize_t n = ::send(fd_, msg.data() + off, msg.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      lost_ = true;
      return {XsError::Io, {}};
    }
    off += static_cast<std::size_t>(n);
  }
  xsd_sockmsg hdr{};
  std::string reply;
  while (receive(-1, hdr, reply)) {
    if (hdr.type == static_cast<uint32_t>(MsgType::XS_WATCH_EVENT)) {
      queue_event(reply);
      continue;
    }
    if (hdr.req_id != req_id) continue;  // a stale reply: not ours
    if (hdr.type == static_cast<uint32_t>(MsgType::XS_ERROR))
      return {xs_error_from_name(reply.data(), reply.size()), {}};
    return {XsError::None, std::move(reply)};
  }
  return {XsError::Io, {}};
}

std::optional<WatchEvent> Client::read_watch(int timeout_ms) {
  if (events_.empty()) {
    xsd_sockmsg hdr{};
    std::string payload;
    while (events_.empty()) {
      if (lost_ && !reconnect()) return std::nullopt;
      if (!receive(timeout_ms, hdr, payload)) {
        if (lost_ && reconnect_) continue;  // reconnect; the watches' first events follow
        return std::nullopt;
      }
      if (hdr.type == static_cast<uint32_t>(MsgType::XS_WATCH_EVENT)) queue_event(payload);
    }
  }
  WatchEvent e = std::move(events_.front());
  events_.pop_front();
  return e;
}

Result<std::string> Client::read(std::string_view path, uint32_t tx) {
  return request(MsgType::XS_READ, z(path), tx);
}

XsError Client::write(std::string_view path, std::string_view value, uint32_t tx) {
  return request(MsgType::XS_WRITE, z(path) + std::string(value), tx).error;
}

XsError Client::mkdir(std::string_view path, uint32_t tx) {
  return request(MsgType::XS_MKDIR, z(path), tx).error;
}

XsError Client::rm(std::string_view path, uint32_t tx) {
  return request(MsgType::XS_RM, z(path), tx).error;
}

Result<std::vector<std::string>> Client::directory(std::string_view path, uint32_t tx) {
  auto r = request(MsgType::XS_DIRECTORY, z(path), tx);
  if (!r.ok()) return {r.error, {}};
  return {XsError::None, split_nul(r.value)};
}

Result<std::vector<NodePerm>> Client::get_perms(std::string_view path, uint32_t tx) {
  auto r = request(MsgType::XS_GET_PERMS, z(path), tx);
  if (!r.ok()) return {r.error, {}};
  std::vector<NodePerm> perms;
  for (const auto& s : split_nul(r.value)) {
    auto p = parse_perm(s);
    if (!p) return {XsError::Io, {}};
    perms.push_back(*p);
  }
  return {XsError::None, std::move(perms)};
}

XsError Client::set_perms(std::string_view path, const std::vector<NodePerm>& perms,
                          uint32_t tx) {
  std::string payload = z(path);
  for (const auto& p : perms) payload += z(format_perm(p));
  return request(MsgType::XS_SET_PERMS, payload, tx).error;
}

XsError Client::watch(std::string_view path, std::string_view token) {
  return request(MsgType::XS_WATCH, z(path) + z(token)).error;
}

XsError Client::unwatch(std::string_view path, std::string_view token) {
  return request(MsgType::XS_UNWATCH, z(path) + z(token)).error;
}

Result<uint32_t> Client::transaction_start() {
  auto r = request(MsgType::XS_TRANSACTION_START, std::string_view("\0", 1));
  if (!r.ok()) return {r.error, 0};
  return {XsError::None, static_cast<uint32_t>(std::strtoul(r.value.c_str(), nullptr, 10))};
}

XsError Client::transaction_end(uint32_t tx, bool commit) {
  return request(MsgType::XS_TRANSACTION_END, z(commit ? "T" : "F"), tx).error;
}

XsError Client::introduce(domid_t domid, uint64_t gfn, evtchn_port_t port) {
  return request(MsgType::XS_INTRODUCE,
                 z(std::to_string(domid)) + z(std::to_string(gfn)) + z(std::to_string(port)))
      .error;
}

XsError Client::release(domid_t domid) {
  return request(MsgType::XS_RELEASE, z(std::to_string(domid))).error;
}

Result<std::string> Client::get_domain_path(domid_t domid) {
  auto r = request(MsgType::XS_GET_DOMAIN_PATH, z(std::to_string(domid)));
  if (r.ok()) r.value = r.value.c_str();
  return r;
}

Result<bool> Client::is_domain_introduced(domid_t domid) {
  auto r = request(MsgType::XS_IS_DOMAIN_INTRODUCED, z(std::to_string(domid)));
  if (!r.ok()) return {r.error, false};
  return {XsError::None, r.value.c_str() == std::string_view("T")};
}

}  // namespace pvio::xs
