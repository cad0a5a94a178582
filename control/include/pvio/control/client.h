// The Dom0-service side of the control protocol: attach to one domain and get its memory as a
// ready GuestMemory (memfd regions mapped MAP_SHARED), its shared_info, grant-frame and
// xenstore gfns and its upcall eventfd; bind the guest's unbound ports and exchange events.
// Blocking request/reply; one thread at a time.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "pvio/control/protocol.h"
#include "pvio/control/socket.h"
#include "pvio/event_channel/notifier.h"
#include "pvio/xen/event_channel.h"
#include "pvio/grant_table/active_table.h"
#include "pvio/grant_table/guest_memory.h"

namespace pvio::control {

class ControlClient {
 public:
  // Connects to `socket_path` and attaches to `domid`. 0 or -errno (-ESRCH: the socket serves
  // another domain; -EPROTO and friends: the domain answered with a malformed reply).
  // `timeout_ms` > 0 bounds every wait on the domain (connect, each reply, this and later
  // requests): a domain that accepts and never answers gives -ETIMEDOUT instead of blocking
  // its caller for ever. 0 waits as long as it takes.
  static int attach(const std::string& socket_path, domid_t domid,
                    std::unique_ptr<ControlClient>* out, int timeout_ms = 0);
  ~ControlClient();  // unmaps the memory; the domain sees the connection close
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  domid_t domid() const { return domid_; }
  const GuestMemory& memory() const { return memory_; }
  evtchn::shared_info* shared_info() const { return shared_info_; }
  std::uint64_t shared_info_gfn() const { return shared_info_gfn_; }
  std::span<const std::uint64_t> grant_frame_gfns() const { return grant_frame_gfns_; }
  std::uint64_t xenstore_gfn() const { return xenstore_gfn_; }
  evtchn_port_t xenstore_port() const { return xenstore_port_; }
  int upcall_fd() const { return upcall_fd_.get(); }
  // The connection to the domain, for a caller's event loop: it hangs up when the domain
  // dies. Nothing arrives on it unasked; the client itself reads only replies it waits for.
  int socket_fd() const { return sock_.get(); }

  // BIND_INTERDOMAIN to the guest's `remote_port`: our local port, and its kick eventfd
  // (kick_fd(local)) becomes readable when the guest sends. 0 or -errno.
  int bind_interdomain(evtchn_port_t remote_port, evtchn_port_t* local_port);
  int unbind(evtchn_port_t local_port);
  // Event to the guest on our bound `local_port`: set_pending on the guest's shared_info, then
  // the upcall eventfd if the guest must be woken. -EINVAL for a port we have not bound.
  int notify(evtchn_port_t local_port);
  int kick_fd(evtchn_port_t local_port) const;
  evtchn_port_t remote_port(evtchn_port_t local_port) const;
  // Clean DETACH; the connection is closed afterwards. 0 or -errno.
  int detach();

 private:
  ControlClient() = default;
  template <typename Req>
  int request(Req& req, Parsed* reply, Received* raw);

  struct Binding {
    evtchn_port_t remote_port;
    UniqueFd kick;
  };
  struct Mapping {
    void* addr;
    std::size_t len;
  };

  UniqueFd sock_;
  UniqueFd upcall_fd_;
  domid_t domid_ = 0;
  GuestMemory memory_;
  std::vector<Mapping> mappings_;
  evtchn::shared_info* shared_info_ = nullptr;
  std::uint64_t shared_info_gfn_ = 0;
  std::vector<std::uint64_t> grant_frame_gfns_;
  std::uint64_t xenstore_gfn_ = 0;
  evtchn_port_t xenstore_port_ = 0;
  std::map<evtchn_port_t, Binding> bindings_;
  std::uint32_t next_request_id_ = 1;
  std::unique_ptr<evtchn::UpcallNotifier> to_guest_;
  // The active grant table every mapper of this domain in this process shares (held so it
  // lives, with our maptrack page set, as long as the attachment).
  std::shared_ptr<gnttab::ActiveGrantTable> active_;
};

}  // namespace pvio::control
