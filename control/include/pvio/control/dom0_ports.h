// The ControlBackend of a domain, shared by user-mode domains and pvio-hv: per attached Dom0
// service, a port table for its (domain 0's) ports and a kick eventfd per bound port; the
// domain itself only describes what ATTACH hands out.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "pvio/control/server.h"
#include "pvio/control/socket.h"
#include "pvio/event_channel/notifier.h"
#include "pvio/event_channel/port_table.h"
#include "pvio/grant_table/maptrack.h"

namespace pvio::control {

class Dom0Ports final : public ControlBackend {
 public:
  // Told when a guest port gets (`assign`) or loses the kick eventfd of the Dom0 port bound
  // to it, so a VMM can turn the guest's doorbell write for it into that eventfd (ioeventfd).
  using KickRoute = std::function<void(evtchn_port_t guest_port, int kick_fd, bool assign)>;

  // The clients' tables link into `guest_ports`, so every call on them holds `mu`, the mutex
  // the domain holds around its own calls on `guest_ports`. `describe` is called without it.
  Dom0Ports(std::mutex& mu, evtchn::PortTable& guest_ports,
            std::function<DomainDescription()> describe, KickRoute route = {})
      : mu_(mu), guest_ports_(guest_ports), describe_(std::move(describe)),
        route_(std::move(route)) {}
  // Closes every client's channels; the caller holds `mu`.
  ~Dom0Ports() override;
  Dom0Ports(const Dom0Ports&) = delete;
  Dom0Ports& operator=(const Dom0Ports&) = delete;

  // The caller holds `mu`.
  std::size_t size() const { return clients_.size(); }
  // The kick eventfd of the client port `dom0_port` that is bound to `guest_port`, or -1.
  // The caller holds `mu`.
  int kick_fd(evtchn_port_t dom0_port, evtchn_port_t guest_port) const;

  // Called (with `mu` held) after a service's connection dropped without DETACH (it was
  // killed): the owner releases the grant pins it left, as Xen does for a dead mapping domain,
  // with gnttab::release_dead_mapper(dead, live, 0, ...): `dead` is the service's maptrack
  // page, `live` those of the services still attached, whose pins must stay.
  using DroppedFn = std::function<void(const gnttab::Maptrack& dead,
                                       std::span<const gnttab::Maptrack> live)>;
  void on_dropped(DroppedFn fn) { dropped_ = std::move(fn); }

 private:
  // One client's maptrack page: a memfd the client maps too, and our mapping of it.
  struct MaptrackPage {
    MaptrackPage() = default;
    MaptrackPage(MaptrackPage&& o) noexcept : fd(std::move(o.fd)), words(o.words) { o.words = nullptr; }
    MaptrackPage& operator=(MaptrackPage&& o) noexcept {
      std::swap(fd, o.fd);
      std::swap(words, o.words);
      return *this;
    }
    ~MaptrackPage();
    UniqueFd fd;
    std::uint64_t* words = nullptr;
  };
  struct Client {
    MaptrackPage maptrack;
    evtchn::EventfdDoorbell doorbell;
    std::unique_ptr<evtchn::PortTable> table;  // the service's (domain 0's) ports
    std::vector<UniqueFd> kicks;               // indexed by its local port
  };

  // ControlBackend (the control server's thread).
  DomainDescription describe() override { return describe_(); }
  int client_attached(ClientId id) override;
  BindResult bind_interdomain(ClientId id, evtchn_port_t remote_port) override;
  // -ENOTCONN for an unknown client, -EINVAL unless `local_port` is bound.
  int unbind(ClientId id, evtchn_port_t local_port) override;
  void client_gone(ClientId id) override;
  void client_dropped(ClientId id) override;

  // Closes the client's channels and forgets it; false if unknown. The caller holds `mu`.
  bool remove_client(ClientId id);
  int close_port(Client& c, evtchn_port_t local_port);
  void close_all(Client& c);

  std::mutex& mu_;
  evtchn::PortTable& guest_ports_;
  std::function<DomainDescription()> describe_;
  KickRoute route_;
  DroppedFn dropped_;
  std::map<ClientId, Client> clients_;
};

}  // namespace pvio::control
