// The domain side of the control protocol: accepts Dom0 services on a unix socket, answers
// ATTACH with the domain's memory and pages, BIND_INTERDOMAIN/UNBIND through the domain's
// port tables, DETACH. A malformed message gets an ErrorReply and drops that client only.
//
// Single-threaded: dispatch() does all the work; its epoll fd can sit in the owner's loop.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>

#include "pvio/control/protocol.h"
#include "pvio/control/socket.h"

namespace pvio::control {

using ClientId = std::uint64_t;

// What ATTACH hands out. The fds stay owned by the backend (the server passes copies).
struct DomainDescription {
  domid_t domid = 0;
  int memfd = -1;
  int upcall_fd = -1;
  std::span<const RegionDesc> regions;
  std::span<const std::uint64_t> grant_frame_gfns;
  std::uint64_t shared_info_gfn = 0;
  std::uint64_t xenstore_gfn = 0;
  evtchn_port_t xenstore_port = 0;
};

struct BindResult {
  int status = 0;              // 0 or -errno (Xen's EVTCHNOP_bind_interdomain values)
  evtchn_port_t local_port = 0;
  int kick_fd = -1;            // owned by the backend, passed to the client on success
};

// Implemented by the domain: its port tables and resources, per attached client.
class ControlBackend {
 public:
  virtual ~ControlBackend() = default;
  virtual DomainDescription describe() = 0;
  // A client is being attached: returns the fd of its maptrack page (sent with the reply and
  // kept by the backend), or -errno to refuse.
  virtual int client_attached(ClientId) = 0;
  virtual BindResult bind_interdomain(ClientId, evtchn_port_t remote_port) = 0;
  virtual int unbind(ClientId, evtchn_port_t local_port) = 0;
  // The client detached or was dropped: close all its channels.
  virtual void client_gone(ClientId) = 0;
  // The client's connection closed while attached, without DETACH: the service died (or broke
  // the protocol) and never released what it held in the domain.
  virtual void client_dropped(ClientId id) { client_gone(id); }
};

class ControlServer {
 public:
  explicit ControlServer(ControlBackend& backend);
  ~ControlServer();  // drops every client and removes the socket
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Binds and listens on `path` (a stale socket file there is replaced). 0 or -errno.
  int listen(const std::string& path);
  // Readable whenever dispatch() has work.
  int epoll_fd() const { return epoll_.get(); }
  // Handles every ready connection and message without blocking.
  void dispatch();
  std::size_t client_count() const { return clients_.size(); }
  const std::string& path() const { return path_; }

 private:
  struct Client {
    UniqueFd sock;
    bool attached = false;
  };
  void accept_all();
  // Returns false when the client must be dropped.
  bool handle(ClientId id, Client& c);
  void drop(ClientId id);

  ControlBackend& backend_;
  UniqueFd epoll_;
  UniqueFd listen_;
  std::string path_;
  std::map<ClientId, Client> clients_;
  ClientId next_id_ = 1;
};

}  // namespace pvio::control
