// pvio-xenstored's event loop: a unix stream socket for Dom0 clients (libxenstore's
// XENSTORED_PATH protocol), single threaded on epoll, feeding the Server.
#pragma once

#include <map>
#include <memory>
#include <string>

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
};

}  // namespace pvio::xs
