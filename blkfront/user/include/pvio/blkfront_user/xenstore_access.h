// How a user-mode guest reaches xenstore. The real path is the guest's xenstore ring page
// (RingXenstore: the freestanding GuestClient on the domain's ring, woken by the domain's
// xenstore event channel). SocketXenstore talks xs_wire on pvio-xenstored's unix socket
// instead, with Dom0's rights, for set-ups where no daemon serves the guest's ring.
//
// Threading: an XenstoreAccess is used from one thread (the blkfront core thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "pvio/xen/xen.h"

namespace pvio::domain {
class Domain;
}
namespace pvio::xs {
class Client;
}

namespace pvio::blkfront::user {

class XenstoreAccess {
 public:
  virtual ~XenstoreAccess() = default;
  // Paths not starting with '/' are relative to the guest's home /local/domain/<domid>.
  // Each call returns 0 or a negative Xen errno.
  virtual int read(const char* path, std::string* out) = 0;
  virtual int write(const char* path, const char* value) = 0;
  virtual int remove(const char* path) = 0;
  virtual int watch(const char* path, const char* token) = 0;
  virtual int unwatch(const char* path, const char* token) = 0;
  // Takes every watch event that arrived, without blocking; returns how many (events lost
  // to a full queue count too: the caller rescans anyway).
  virtual int drain_events() = 0;
  // Waits until drain_events() may find something, at most timeout_ms, and consumes the
  // wake-up (wait(0) after event_fd() polled readable). Spurious returns are fine.
  virtual void wait(int timeout_ms) = 0;
  // A file descriptor that becomes readable when events may be waiting, or -1 (then the
  // caller polls drain_events() periodically).
  virtual int event_fd() const = 0;
};

// The guest's ring page and xenstore event channel of `dom` (served once a xenstored has
// attached to the domain and bound the port). Installs the handler of the xenstore port.
std::unique_ptr<XenstoreAccess> make_ring_xenstore(domain::Domain& dom);

// One guest ring shared by several users in one process (a user-mode domain's blkfront,
// netfront and its control/shutdown watch, each on its own thread). Requests are serialised
// on the single ring client; every user is woken at every xenstore event and rescans its own
// nodes, as drain_events() asks of callers anyway. The views must not outlive this object.
class SharedRingXenstore {
 public:
  explicit SharedRingXenstore(domain::Domain& dom);  // installs the xenstore port's handler
  ~SharedRingXenstore();
  SharedRingXenstore(const SharedRingXenstore&) = delete;
  SharedRingXenstore& operator=(const SharedRingXenstore&) = delete;
  std::unique_ptr<XenstoreAccess> open();  // one view per user thread
  // The process is going away: a request still waiting for xenstored, and any later one,
  // fails with -EIO instead of waiting for a daemon that may never answer.
  void abandon();

  struct State;

 private:
  std::shared_ptr<State> s_;
};

// pvio-xenstored's unix socket; relative paths are resolved against /local/domain/<domid>.
// nullptr if the socket cannot be reached.
std::unique_ptr<XenstoreAccess> make_socket_xenstore(const std::string& socket_path,
                                                     domid_t domid);

}  // namespace pvio::blkfront::user
