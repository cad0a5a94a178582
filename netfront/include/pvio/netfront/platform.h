// The platform seam of the netfront core: everything the freestanding core needs from the
// environment it runs in (bare-metal guest kernel, user-mode guest, Windows NDIS driver). One
// abstract class of pure virtuals; no RTTI, no exceptions, no allocation behind the core's back.
//
// Conventions as blkfront's seam: calls return 0 or a negative Xen errno value
// (public/errno.h), never throw, and may be called from the datapath. The core serialises its
// own calls: a binding needs no locking for a single Netfront.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pvio/xen/xen.h"

namespace pvio::netfront {

// Xen errno values used by the seam and the core (public/errno.h).
inline constexpr int XEN_EPERM = 1;
inline constexpr int XEN_ENOENT = 2;
inline constexpr int XEN_EIO = 5;
inline constexpr int XEN_EAGAIN = 11;
inline constexpr int XEN_ENOMEM = 12;
inline constexpr int XEN_EBUSY = 16;
inline constexpr int XEN_ENODEV = 19;
inline constexpr int XEN_EINVAL = 22;
inline constexpr int XEN_ENOSPC = 28;
inline constexpr int XEN_ENAMETOOLONG = 36;
inline constexpr int XEN_EPROTO = 71;
inline constexpr int XEN_EOPNOTSUPP = 95;
inline constexpr int XEN_ETIMEDOUT = 110;

// One 4 KiB guest page: frame number and where the core reaches it.
struct GuestPage {
  std::uint64_t gfn = 0;
  void* addr = nullptr;
};

enum class LogLevel : std::uint8_t { Debug, Info, Warn, Error };

class Platform {
 public:
  // Guest memory, one page at a time. Only called while connecting/disconnecting.
  virtual bool alloc_page(GuestPage& out) = 0;
  virtual void free_page(const GuestPage& page) = 0;

  // Grant table: kInvalidGrantRef when full; end_access fails (false) while the backend still
  // has the frame mapped (gnttab_end_foreign_access_ref).
  virtual grant_ref_t grant_access(domid_t domid, std::uint64_t gfn, bool readonly) = 0;
  virtual bool end_access(grant_ref_t ref) = 0;

  // Event channels: EVTCHNOP_alloc_unbound for `remote`, EVTCHNOP_close, EVTCHNOP_send.
  virtual int evtchn_alloc_unbound(domid_t remote, evtchn_port_t& port) = 0;
  virtual void evtchn_close(evtchn_port_t port) = 0;
  virtual void notify(evtchn_port_t port) = 0;

  // Xenstore. Relative paths are under the guest's home (/local/domain/<domid>). read copies
  // the value and a NUL into buf (-ENOSPC if it does not fit) and sets len to the value length.
  // remove deletes the node and its children (-ENOENT if absent).
  virtual int xs_read(const char* path, char* buf, std::size_t cap, std::size_t& len) = 0;
  virtual int xs_write(const char* path, const char* value) = 0;
  virtual int xs_remove(const char* path) = 0;
  // xs_watch fires once at once, as XS_WATCH does; xs_wait blocks until a watch of this
  // Netfront fired since the last xs_wait, or timeout_ms passes (-ETIMEDOUT).
  virtual int xs_watch(const char* path) = 0;
  virtual void xs_unwatch(const char* path) = 0;
  virtual int xs_wait(std::uint32_t timeout_ms) = 0;

  virtual void log(LogLevel level, const char* msg) = 0;

 protected:
  Platform() = default;
  // Not virtual: the core never deletes a Platform (no operator delete when freestanding).
  ~Platform() = default;
  Platform(const Platform&) = default;
  Platform& operator=(const Platform&) = default;
};

}  // namespace pvio::netfront
