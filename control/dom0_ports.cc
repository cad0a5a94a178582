// Dom0Ports: the service ports, kick eventfds and bind/unbind of attached control clients.
#include "pvio/control/dom0_ports.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>

namespace pvio::control {

Dom0Ports::~Dom0Ports() {
  for (auto& entry : clients_) close_all(entry.second);
}

Dom0Ports::MaptrackPage::~MaptrackPage() {
  if (words != nullptr) ::munmap(words, gnttab::kMaptrackBytes);
}

int Dom0Ports::client_attached(ClientId id) {
  MaptrackPage page;
  page.fd.reset(::memfd_create("pvio-maptrack", MFD_CLOEXEC));
  if (!page.fd || ::ftruncate(page.fd.get(), gnttab::kMaptrackBytes) != 0) return -ENOMEM;
  void* m = ::mmap(nullptr, gnttab::kMaptrackBytes, PROT_READ | PROT_WRITE, MAP_SHARED,
                   page.fd.get(), 0);
  if (m == MAP_FAILED) return -ENOMEM;
  page.words = static_cast<std::uint64_t*>(m);
  std::lock_guard lk(mu_);
  Client& c = clients_[id];
  c.table = std::make_unique<evtchn::PortTable>(0, nullptr, &c.doorbell);
  c.maptrack = std::move(page);
  return c.maptrack.fd.get();
}

BindResult Dom0Ports::bind_interdomain(ClientId id, evtchn_port_t remote_port) {
  std::lock_guard lk(mu_);
  auto it = clients_.find(id);
  if (it == clients_.end()) return {-ENOTCONN, 0, -1};
  Client& c = it->second;
  UniqueFd kick(evtchn::eventfd_create(false));
  if (!kick) return {-EMFILE, 0, -1};
  const evtchn::PortResult r = evtchn::PortTable::bind_interdomain(*c.table, guest_ports_,
                                                                   remote_port);
  if (r.rc != 0) return {r.rc, 0, -1};
  if (c.kicks.size() <= r.port) c.kicks.resize(r.port + 1);
  c.doorbell.set(r.port, kick.get());
  if (route_) route_(remote_port, kick.get(), true);
  c.kicks[r.port] = std::move(kick);
  // Xen sets the new local port pending on bind so an event sent on the unbound port before
  // is not lost; here that is one kick.
  c.doorbell.notify(r.port);
  return {0, r.port, c.kicks[r.port].get()};
}

int Dom0Ports::unbind(ClientId id, evtchn_port_t local_port) {
  std::lock_guard lk(mu_);
  auto it = clients_.find(id);
  if (it == clients_.end()) return -ENOTCONN;
  Client& c = it->second;
  if (c.table->state(local_port) != evtchn::ChannelState::Interdomain ||
      local_port >= c.kicks.size() || !c.kicks[local_port])
    return -EINVAL;
  return close_port(c, local_port);
}

void Dom0Ports::client_gone(ClientId id) {
  std::lock_guard lk(mu_);
  remove_client(id);
}

void Dom0Ports::client_dropped(ClientId id) {
  // One critical section: whoever sees the client gone (attached size) sees its pins released.
  std::lock_guard lk(mu_);
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  if (dropped_) {
    std::vector<gnttab::Maptrack> live;
    for (const auto& [other, c] : clients_)
      if (other != id) live.emplace_back(c.maptrack.words);
    dropped_(gnttab::Maptrack(it->second.maptrack.words), live);
  }
  remove_client(id);
}

bool Dom0Ports::remove_client(ClientId id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return false;
  close_all(it->second);
  clients_.erase(it);  // the table's destructor returns remaining guest ports to unbound
  return true;
}

int Dom0Ports::kick_fd(evtchn_port_t dom0_port, evtchn_port_t guest_port) const {
  for (const auto& [id, c] : clients_) {
    (void)id;
    evtchn::ChannelStatus st;
    if (dom0_port < c.kicks.size() && c.kicks[dom0_port] &&
        c.table->status(dom0_port, &st) == 0 && st.remote_port == guest_port)
      return c.kicks[dom0_port].get();
  }
  return -1;
}

int Dom0Ports::close_port(Client& c, evtchn_port_t local_port) {
  evtchn::ChannelStatus st;
  if (route_ && c.table->status(local_port, &st) == 0 &&
      st.status == evtchn::kEvtchnStatInterdomain)
    route_(st.remote_port, c.kicks[local_port].get(), false);
  const int rc = c.table->close(local_port);
  c.doorbell.set(local_port, -1);
  c.kicks[local_port].reset();
  return rc;
}

void Dom0Ports::close_all(Client& c) {
  for (evtchn_port_t p = 1; p < c.kicks.size(); ++p)
    if (c.kicks[p]) close_port(c, p);
}

}  // namespace pvio::control
