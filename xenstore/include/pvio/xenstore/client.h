// Dom0 xenstore client over the daemon's unix socket: blocking request/reply, with watch
// events that arrive meanwhile kept in a queue for read_watch(). With reconnection enabled it
// rides through a restart of the daemon: it reconnects with bounded backoff and registers its
// watches again (each then fires once, so the caller re-reads what it watches).
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

// How a client waits for a restarted daemon: the delay between attempts doubles from
// `first_delay_ms` up to `max_delay_ms`; after `give_up_ms` without a daemon it stays lost.
struct ReconnectPolicy {
  int first_delay_ms = 20;
  int max_delay_ms = 500;
  int give_up_ms = 30000;
};

class Client {
 public:
  // nullptr (errno set) if the socket cannot be reached.
  static std::unique_ptr<Client> connect(const std::string& socket_path);
  ~Client();
  // From now on a lost connection is re-established (see ReconnectPolicy): requests outside
  // a transaction are sent again on the new connection, requests in a transaction (which
  // died with the old one) answer EAGAIN, and read_watch() waits through the outage.
  void enable_reconnect(ReconnectPolicy policy = {});
  uint64_t reconnects() const { return reconnects_; }
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
  Client(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  // Sends one request and waits for its reply on the current connection.
  Result<std::string> request_once(MsgType type, std::string_view payload, uint32_t tx);
  // Replaces a lost connection (see ReconnectPolicy); false once it gives up.
  bool reconnect();
  // Reads one message; false on EOF/error/timeout.
  bool receive(int timeout_ms, xsd_sockmsg& hdr, std::string& payload);
  void queue_event(std::string_view payload);

  int fd_;
  std::string path_;
  bool lost_ = false;
  std::optional<ReconnectPolicy> reconnect_;
  uint64_t reconnects_ = 0;
  std::vector<std::pair<std::string, std::string>> watches_;  // registered (path, token)
  uint32_t next_req_ = 1;
  MessageReader reader_;
  std::string inbuf_;
  std::size_t inbuf_head_ = 0;
  std::deque<WatchEvent> events_;
};

}  // namespace pvio::xs
