// How pvio-xenstored reaches a guest's xenstore ring: on XS_INTRODUCE(domid, gfn, port) it
// attaches to the domain over the domain control protocol, maps the ring page, binds the
// event channel and puts the kick fd and the control connection on the daemon's loop. The
// domain hanging up (it died) or corrupting its ring releases it, firing @releaseDomain.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "pvio/xen/xen.h"
#include "pvio/xenstore/daemon.h"
#include "pvio/xenstore/server.h"

namespace pvio::xs {

struct ConnectorStats {
  uint64_t attached = 0;       // INTRODUCEs that reached the ring
  uint64_t refused = 0;        // unreachable domain, wrong gfn, port not bindable
  uint64_t hangups = 0;        // control connection closed by the domain
  uint64_t corrupt_rings = 0;  // rings dropped for bad indices or messages
};

class ControlDomainConnector final : public DomainConnector {
 public:
  // Where domain `domid`'s control socket is.
  using SocketPathFn = std::function<std::string(domid_t)>;

  // Registers itself with `server`; `daemon` runs the fds. Empty `socket_path`:
  // control::domain_socket_path ($PVIO_RUN_DIR/domain-<domid>.sock ...).
  ControlDomainConnector(Server& server, Daemon& daemon, SocketPathFn socket_path = {});
  ~ControlDomainConnector() override;
  ControlDomainConnector(const ControlDomainConnector&) = delete;
  ControlDomainConnector& operator=(const ControlDomainConnector&) = delete;

  // DomainConnector: nullptr (the server answers EINVAL) when the domain's socket cannot be
  // reached or attached, `gfn` is not the xenstore gfn the domain reports, or `port` cannot be
  // bound.
  std::unique_ptr<RingTransport> connect(domid_t domid, uint64_t gfn, evtchn_port_t port) override;

  const ConnectorStats& stats() const { return stats_; }

 private:
  class DomainRing;
  // A ring found dead on the loop: release it once no handler is on the stack.
  void release_later(domid_t domid, uint64_t generation);

  Server& server_;
  Daemon& daemon_;
  SocketPathFn socket_path_;
  // domid -> generation of its live DomainRing, so a late release never hits a successor.
  std::map<domid_t, uint64_t> live_;
  uint64_t next_generation_ = 1;
  ConnectorStats stats_;
};

}  // namespace pvio::xs
