// The guest's xenstore ring as a unix socket on the host: bytes a client writes go into the
// ring's req[] as this domain's requests, replies and watch events from rsp[] go back to the
// client. So any xs_wire client (our xs::Client, Debian's xenstore-* with XENSTORED_PATH)
// can act as the guest, over the guest's real ring and event channel, for tests and
// debugging. One client at a time; the relay owns the domain's xenstore port handler, so it
// cannot share the ring with an in-process frontend's xenstore client.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include "pvio/control/socket.h"
#include "pvio/domain/domain.h"

namespace pvio::domain {

class XenstoreRelay {
 public:
  // Listens on `socket_path` (mode 0600) and serves from a thread of its own; `dom` must
  // outlive the relay and run its loop. 0 or -errno.
  static int start(Domain& dom, const std::string& socket_path,
                   std::unique_ptr<XenstoreRelay>* out);
  ~XenstoreRelay();  // stops the thread, removes the socket
  XenstoreRelay(const XenstoreRelay&) = delete;
  XenstoreRelay& operator=(const XenstoreRelay&) = delete;

 private:
  explicit XenstoreRelay(Domain& dom) : dom_(dom) {}
  void serve();
  bool pump(int client);  // false once the client is gone

  Domain& dom_;
  std::string path_;
  control::UniqueFd listen_;
  control::UniqueFd event_;  // the daemon raised our xenstore port
  control::UniqueFd stop_;
  std::string to_ring_;      // client bytes the ring had no room for yet
  std::string from_ring_;    // reply bytes not yet a whole message
  std::thread thread_;
};

}  // namespace pvio::domain
