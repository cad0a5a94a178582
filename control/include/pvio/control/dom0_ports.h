// The Dom0 half of a ControlBackend, shared by user-mode domains and pvio-hv: per attached
// client, a port table for the service's (domain 0's) ports and a kick eventfd per bound port.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "pvio/control/server.h"
#include "pvio/control/socket.h"
#include "pvio/event_channel/notifier.h"
#include "pvio/event_channel/port_table.h"

namespace pvio::control {

// Not thread-safe: the owner serialises calls with those on the guest's port table, which
// the clients' tables link into.
class Dom0Ports {
 public:
  // Told when a guest port gets (`assign`) or loses the kick eventfd of the Dom0 port bound
  // to it, so a VMM can turn the guest's doorbell write for it into that eventfd (ioeventfd).
  using KickRoute = std::function<void(evtchn_port_t guest_port, int kick_fd, bool assign)>;

  explicit Dom0Ports(KickRoute route = {}) : route_(std::move(route)) {}
  ~Dom0Ports() { clear(); }
  Dom0Ports(const Dom0Ports&) = delete;
  Dom0Ports& operator=(const Dom0Ports&) = delete;

  void attach(ClientId id);
  // BIND_INTERDOMAIN of client `id` to `remote_port` in `guest_ports`.
  BindResult bind_interdomain(ClientId id, evtchn::PortTable& guest_ports,
                              evtchn_port_t remote_port);
  // UNBIND: -ENOTCONN for an unknown client, -EINVAL unless `local_port` is bound.
  int unbind(ClientId id, evtchn_port_t local_port);
  // The client detached or was dropped: closes all its channels.
  void detach(ClientId id);
  void clear();
  std::size_t size() const { return clients_.size(); }

  // The kick eventfd of the client port `dom0_port` that is bound to `guest_port`, or -1.
  int kick_fd(evtchn_port_t dom0_port, evtchn_port_t guest_port) const;

 private:
  struct Client {
    evtchn::EventfdDoorbell doorbell;
    std::unique_ptr<evtchn::PortTable> table;  // the service's (domain 0's) ports
    std::vector<UniqueFd> kicks;               // indexed by its local port
  };
  int close_port(Client& c, evtchn_port_t local_port);
  void close_all(Client& c);

  KickRoute route_;
  std::map<ClientId, Client> clients_;
};

}  // namespace pvio::control
