// Event-channel port table: Xen's EVTCHNOP semantics over an in-process table.
#include "pvio/event_channel/port_table.h"

#include <cerrno>

#include "pvio/event_channel/two_level.h"

namespace pvio::evtchn {

PortTable::PortTable(domid_t domid, shared_info* si, Notifier* delivery)
    : domid_(domid), si_(si), delivery_(delivery), channels_(new Channel[kNrEventChannels]) {
  // Xen's evtchn_init allocates port 0 and marks it ECS_RESERVED so 0 never names a channel.
  channels_[0].state = ChannelState::Reserved;
}

PortTable::~PortTable() {
  for (evtchn_port_t p = 1; p < kNrEventChannels; ++p) {
    if (channels_[p].state == ChannelState::Unbound ||
        channels_[p].state == ChannelState::Interdomain || channels_[p].state == ChannelState::Virq)
      close(p);
  }
}

int PortTable::get_free_port() {
  for (evtchn_port_t p = 0; p < kNrEventChannels; ++p)
    if (channels_[p].state == ChannelState::Free) return static_cast<int>(p);
  return -ENOSPC;
}

void PortTable::free_channel(evtchn_port_t port) {
  // evtchn_free: clear the pending bit so a later re-bind starts clean.
  if (si_ != nullptr) two_level::clear_pending(*si_, port);
  channels_[port] = Channel{};
}

PortResult PortTable::alloc_unbound(domid_t remote_dom) {
  const int p = get_free_port();
  if (p < 0) return {p, 0};
  Channel& c = channels_[p];
  c.state = ChannelState::Unbound;
  c.remote_dom = remote_dom == kDomidSelf ? domid_ : remote_dom;
  return {0, static_cast<evtchn_port_t>(p)};
}

PortResult PortTable::bind_interdomain(PortTable& local, PortTable& remote,
                                       evtchn_port_t remote_port) {
  if (!valid(remote_port)) return {-EINVAL, 0};
  Channel& rc = remote.channels_[remote_port];
  if (rc.state != ChannelState::Unbound || rc.remote_dom != local.domid_) return {-EINVAL, 0};
  const int lp = local.get_free_port();
  if (lp < 0) return {lp, 0};
  Channel& lc = local.channels_[lp];
  lc.state = ChannelState::Interdomain;
  lc.remote_dom = remote.domid_;
  lc.remote_port = remote_port;
  lc.peer = &remote;
  rc.state = ChannelState::Interdomain;
  rc.remote_dom = local.domid_;
  rc.remote_port = static_cast<evtchn_port_t>(lp);
  rc.peer = &local;
  // Xen raises the new local port once so a notification sent before the bind is not lost.
  if (local.delivery_ != nullptr) local.delivery_->notify(static_cast<evtchn_port_t>(lp));
  return {0, static_cast<evtchn_port_t>(lp)};
}

PortResult PortTable::bind_virq(std::uint32_t virq) {
  if (virq >= kNrVirqs) return {-EINVAL, 0};
  if (virq_port_[virq] != 0) return {-EEXIST, 0};
  const int p = get_free_port();
  if (p < 0) return {p, 0};
  channels_[p].state = ChannelState::Virq;
  channels_[p].virq = virq;
  virq_port_[virq] = static_cast<evtchn_port_t>(p);
  return {0, static_cast<evtchn_port_t>(p)};
}

void PortTable::raise_virq(std::uint32_t virq) {
  if (virq >= kNrVirqs || virq_port_[virq] == 0 || delivery_ == nullptr) return;
  delivery_->notify(virq_port_[virq]);
}

int PortTable::close(evtchn_port_t port) {
  if (!valid(port)) return -EINVAL;
  Channel& c = channels_[port];
  switch (c.state) {
    case ChannelState::Free:
    case ChannelState::Reserved:
      return -EINVAL;
    case ChannelState::Unbound:
      break;
    case ChannelState::Virq:
      virq_port_[c.virq] = 0;
      break;
    case ChannelState::Interdomain: {
      // The peer's end goes back to unbound, accepting a new bind from this domain.
      Channel& pc = c.peer->channels_[c.remote_port];
      pc.state = ChannelState::Unbound;
      pc.remote_dom = domid_;
      pc.remote_port = 0;
      pc.peer = nullptr;
      break;
    }
  }
  free_channel(port);
  return 0;
}

int PortTable::send(evtchn_port_t port) {
  if (!valid(port)) return -EINVAL;
  const Channel& c = channels_[port];
  switch (c.state) {
    case ChannelState::Interdomain:
      if (c.peer->delivery_ != nullptr) c.peer->delivery_->notify(c.remote_port);
      return 0;
    case ChannelState::Unbound:
      return 0;  // "silently drop" (evtchn_send)
    default:
      return -EINVAL;
  }
}

int PortTable::unmask(evtchn_port_t port) {
  if (!valid(port)) return -EINVAL;
  if (si_ != nullptr && two_level::unmask(*si_, port) && delivery_ != nullptr) delivery_->upcall();
  return 0;
}

int PortTable::status(evtchn_port_t port, ChannelStatus* out) const {
  if (!valid(port)) return -EINVAL;
  const Channel& c = channels_[port];
  ChannelStatus s;
  switch (c.state) {
    case ChannelState::Free:
    case ChannelState::Reserved:
      s.status = kEvtchnStatClosed;
      break;
    case ChannelState::Unbound:
      s.status = kEvtchnStatUnbound;
      s.remote_dom = c.remote_dom;
      break;
    case ChannelState::Interdomain:
      s.status = kEvtchnStatInterdomain;
      s.remote_dom = c.remote_dom;
      s.remote_port = c.remote_port;
      break;
    case ChannelState::Virq:
      s.status = kEvtchnStatVirq;
      s.virq = c.virq;
      break;
  }
  *out = s;
  return 0;
}

ChannelState PortTable::state(evtchn_port_t port) const {
  return valid(port) ? channels_[port].state : ChannelState::Free;
}

}  // namespace pvio::evtchn
