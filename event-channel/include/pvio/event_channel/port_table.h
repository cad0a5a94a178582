// One domain's event-channel port table with Xen's numbering and EVTCHNOP semantics
// (xen/common/event_channel.c): port 0 reserved, lowest free port first, 2-level limit of
// NR_EVENT_CHANNELS ports, errors as Xen's negative errno values.
//
// An interdomain channel links two tables (both in this process: the domain's own table and
// the table of the Dom0 service attached to it). Delivery to a table's domain goes through
// its Notifier. Not thread-safe: the owner serialises calls on linked tables.
#pragma once

#include <cstdint>
#include <memory>

#include "pvio/event_channel/notifier.h"
#include "pvio/xen/event_channel.h"

namespace pvio::evtchn {

enum class ChannelState : std::uint8_t { Free, Reserved, Unbound, Interdomain, Virq };

struct PortResult {
  int rc = 0;                // 0 or -errno
  evtchn_port_t port = 0;    // valid when rc == 0
};

// EVTCHNOP_status's answer (struct evtchn_status without the IN fields).
struct ChannelStatus {
  std::uint32_t status = kEvtchnStatClosed;  // EVTCHNSTAT_*
  std::uint32_t vcpu = 0;
  domid_t remote_dom = 0;         // unbound: who may bind; interdomain: the peer
  evtchn_port_t remote_port = 0;  // interdomain only
  std::uint32_t virq = 0;         // virq only
};

class PortTable {
 public:
  // `si`: this domain's shared_info (for unmask/close), may be null for a Dom0 table.
  // `delivery`: raises events on this domain's ports; may be null (events are dropped).
  PortTable(domid_t domid, shared_info* si, Notifier* delivery);
  ~PortTable();  // closes every channel, returning linked peers to unbound
  PortTable(const PortTable&) = delete;
  PortTable& operator=(const PortTable&) = delete;

  domid_t domid() const { return domid_; }
  void set_delivery(Notifier* n) { delivery_ = n; }
  Notifier* delivery() const { return delivery_; }

  // EVTCHNOP_alloc_unbound with dom = this domain. remote_dom may be DOMID_SELF.
  PortResult alloc_unbound(domid_t remote_dom);
  // EVTCHNOP_bind_interdomain issued by `local`'s domain for <remote's domain, remote_port>.
  // -EINVAL unless that port is unbound and accepts `local`'s domid.
  static PortResult bind_interdomain(PortTable& local, PortTable& remote, evtchn_port_t remote_port);
  // EVTCHNOP_bind_virq for vCPU 0: a new port that the hypervisor raises with raise_virq.
  // -EEXIST if `virq` is already bound, -EINVAL for an unknown virq.
  PortResult bind_virq(std::uint32_t virq);
  // The hypervisor raises `virq` on its port (if bound): pending bit, then the upcall.
  void raise_virq(std::uint32_t virq);
  // EVTCHNOP_close: -EINVAL for invalid, free or reserved ports.
  int close(evtchn_port_t port);
  // EVTCHNOP_send: interdomain raises the peer's port; unbound drops silently (returns 0).
  int send(evtchn_port_t port);
  // EVTCHNOP_unmask on this domain's shared_info; re-raises a held event.
  int unmask(evtchn_port_t port);
  // EVTCHNOP_status: -EINVAL for an invalid port.
  int status(evtchn_port_t port, ChannelStatus* out) const;

  ChannelState state(evtchn_port_t port) const;

 private:
  static constexpr std::uint32_t kNrVirqs = NR_VIRQS;
  struct Channel {
    ChannelState state = ChannelState::Free;
    std::uint32_t virq = 0;
    domid_t remote_dom = 0;
    evtchn_port_t remote_port = 0;
    PortTable* peer = nullptr;
  };
  static bool valid(evtchn_port_t port) { return port < kNrEventChannels; }
  int get_free_port();  // -ENOSPC when full
  void free_channel(evtchn_port_t port);

  domid_t domid_;
  shared_info* si_;
  Notifier* delivery_;
  std::unique_ptr<Channel[]> channels_;
  evtchn_port_t virq_port_[kNrVirqs] = {};  // 0: not bound
};

}  // namespace pvio::evtchn
