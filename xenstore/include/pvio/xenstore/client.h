// Dom0 xenstore client over the daemon's unix socket: blocking request/reply, with watch
// events that arrive meanwhile kept in a queue for read_watch().
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pvio/xen/xen.h"
#include "pvio/xenstore/protocol.h"
#include "pvio/xen/io/xs_wire.h"

namespace pvio::xs {

template <typename T>
struct Result {
  XsError error = XsError::None;
  T value{};
  bool ok() const { return error == XsError::None; }
};

struct WatchEvent {
  std::string path;
  std::string token;
};

class Client {
 public:
  // nullptr (errno set) if the socket cannot be reached.
  static std::unique_ptr<Client> connect(const std::string& socket_path);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  Result<std::string> read(std::string_view path, uint32_t tx = 0);
  XsError write(std::string_view path, std::string_view value, uint32_t tx = 0);
  XsError mkdir(std::string_view path, uint32_t tx = 0);
  XsError rm(std::string_view path, uint32_t tx = 0);
  Result<std::vector<std::string>> directory(std::string_view path, uint32_t tx = 0);
  Result<std::vector<NodePerm>> get_perms(std::string_view path, uint32_t tx = 0);
  XsError set_perms(std::string_view path, const std::vector<NodePerm>& perms, uint32_t tx = 0);
  XsError watch(std::string_view path, std::string_view token);
  XsError unwatch(std::string_view path, std::string_view token);
  Result<uint32_t> transaction_start();
  XsError transaction_end(uint32_t tx, bool commit);
  XsError introduce(domid_t domid, uint64_t gfn, evtchn_port_t port);
  XsError release(domid_t domid);
  Result<std::string> get_domain_path(domid_t domid);
  Result<bool> is_domain_introduced(domid_t domid);

  // Any request: the reply payload, or the error the daemon answered. EIO if the connection
  // broke.
  Result<std::string> request(MsgType type, std::string_view payload, uint32_t tx = 0);

  // The next watch event: queued ones first, else waits up to timeout_ms (-1: forever).
  std::optional<WatchEvent> read_watch(int timeout_ms);
  // False once the daemon closed the connection (or it broke): every later call fails at once,
  // so a caller looping on read_watch() must stop or reconnect instead of spinning.
  bool connected() const { return !lost_; }
  std::size_t queued_watch_events() const { return events_.size(); }

 private:
  explicit Client(int fd) : fd_(fd) {}
  // Reads one message; false on EOF/error/timeout.
  bool receive(int timeout_ms, xsd_sockmsg& hdr, std::string& payload);
  void queue_event(std::string_view payload);

  int fd_;
  bool lost_ = false;
  uint32_t next_req_ = 1;
  MessageReader reader_;
  std::string inbuf_;
  std::size_t inbuf_head_ = 0;
  std::deque<WatchEvent> events_;
};

}  // namespace pvio::xs
