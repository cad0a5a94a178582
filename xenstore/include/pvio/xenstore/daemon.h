// pvio-xenstored's event loop: a unix stream socket for Dom0 clients (libxenstore's
// XENSTORED_PATH protocol), single threaded on epoll, feeding the Server. Guest rings add
// their event-channel and control-socket fds through add_fd().
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "pvio/xenstore/server.h"

namespace pvio::xs {

class Daemon {
 public:
  // Binds and listens on `socket_path` (replacing a stale socket file). Throws
  // std::system_error on failure: start-up is the only place that may.
  Daemon(Server& server, std::string socket_path);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Runs until `stop_fd` (e.g. a signalfd for SIGTERM) becomes readable.
  void run(int stop_fd);
  const std::string& socket_path() const { return path_; }

  // Calls `on_event(epoll events)` on the loop whenever `fd` is readable or hung up. The fd
  // stays owned by the caller, who calls remove_fd() before closing it. Both are safe from
  // inside a handler. false if epoll refuses the fd.
  bool add_fd(int fd, std::function<void(uint32_t)> on_event);
  void remove_fd(int fd);
  // Runs `fn` on the loop after the current round of events (or at the next one), when no
  // handler is on the stack: the place to destroy what a handler found dead.
  void defer(std::function<void()> fn);

 private:
  class SocketConn;
  void accept_clients();
  void on_readable(SocketConn& c);
  void close_conn(int fd);

  Server& server_;
  std::string path_;
  int listen_fd_ = -1;
  int epoll_fd_ = -1;
  std::map<int, std::unique_ptr<SocketConn>> conns_;
  std::map<int, std::shared_ptr<std::function<void(uint32_t)>>> fds_;
  std::vector<std::function<void()>> deferred_;
  int defer_fd_ = -1;  // eventfd: wakes the loop when work is deferred from outside a round
};

}  // namespace pvio::xs
