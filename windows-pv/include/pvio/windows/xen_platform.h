// The frontend cores' Platform seam over xenbus's interface (xen_interface.h), written once
// for xenvbd (blkfront) and xennet (netfront): grants, event channels, xenstore and watches go
// through the child's PVIO_XEN_INTERFACE, log lines to DbgPrintEx. The two cores' seams differ
// only in the memory call (blkfront takes runs of 2^order pages, netfront single pages), so a
// driver derives a final class that adds that one override over contiguous_pages() below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pvio/wdk/wdm.h"
#include "pvio/windows/xen_interface.h"
#include "pvio/xen/xen.h"

namespace pvio::windows {

// Zeroed, physically contiguous pages and their first frame: in an HVM guest guest frames are
// physical pages. nullptr when there is no memory. PASSIVE_LEVEL.
inline void* contiguous_pages(SIZE_T bytes, std::uint64_t* gfn) {
  PHYSICAL_ADDRESS low, high, boundary;
  low.QuadPart = 0;
  high.QuadPart = -1;
  boundary.QuadPart = 0;
  void* va = MmAllocateContiguousMemorySpecifyCache(bytes, low, high, boundary, MmCached);
  if (va == nullptr) return nullptr;
  std::memset(va, 0, bytes);
  *gfn = static_cast<std::uint64_t>(MmGetPhysicalAddress(va).QuadPart) >> 12;
  return va;
}
inline void free_contiguous_pages(void* va) { MmFreeContiguousMemory(va); }

// What a driver binds the seam to: its interface table, the callbacks xenbus calls for its
// event channels and watches (with `context`), and the event its watch callback sets (what
// xs_wait waits for). `name` prefixes log lines ("xenvbd 51712: ...").
struct XenBinding {
  PVIO_XEN_INTERFACE* xen;
  PVIO_EVTCHN_CALLBACK* on_event;
  PVIO_WATCH_CALLBACK* on_watch;
  PVOID context;
  PKEVENT watch_event;
  const char* name;
};

// Platform: blkfront::Platform or netfront::Platform; Level: that core's LogLevel.
template <class Platform, class Level>
class XenInterfacePlatform : public Platform {
 public:
  explicit XenInterfacePlatform(const XenBinding& b) : b_(b) {}

  grant_ref_t grant_access(domid_t domid, std::uint64_t gfn, bool readonly) override {
    ULONG ref = 0;
    if (x().GrantAccess(ctx(), domid, gfn, readonly, &ref) != 0) return kInvalidGrantRef;
    return ref;
  }
  bool end_access(grant_ref_t ref) override { return x().EndAccess(ctx(), ref) != 0; }
  int evtchn_alloc_unbound(domid_t remote, evtchn_port_t& port) override {
    ULONG p = 0;
    const LONG rc = x().EvtchnAllocUnbound(ctx(), remote, b_.on_event, b_.context, &p);
    if (rc == 0) port = p;
    return rc;
  }
  void evtchn_close(evtchn_port_t port) override { x().EvtchnClose(ctx(), port); }
  void notify(evtchn_port_t port) override { x().EvtchnNotify(ctx(), port); }
  int xs_read(const char* path, char* buf, std::size_t cap, std::size_t& len) override {
    ULONG n = 0;
    const LONG rc = x().XsRead(ctx(), path, buf, static_cast<ULONG>(cap), &n);
    len = n;
    return rc;
  }
  int xs_write(const char* path, const char* value) override { return x().XsWrite(ctx(), path, value); }
  int xs_remove(const char* path) override { return x().XsRemove(ctx(), path); }
  // The cores name watches by path; xenbus by handle.
  int xs_watch(const char* path) override {
    for (Watch& w : watches_) {
      if (w.handle != nullptr) continue;
      const std::size_t n = std::strlen(path);
      if (n >= kPathMax) return -kXenENAMETOOLONG;
      std::memcpy(w.path, path, n + 1);
      return x().XsWatch(ctx(), path, b_.on_watch, b_.context, &w.handle);
    }
    return -kXenENOSPC;
  }
  void xs_unwatch(const char* path) override {
    for (Watch& w : watches_) {
      if (w.handle == nullptr || std::strcmp(w.path, path) != 0) continue;
      x().XsUnwatch(ctx(), w.handle);
      w.handle = nullptr;
    }
  }
  int xs_wait(std::uint32_t timeout_ms) override {
    LARGE_INTEGER t;
    t.QuadPart = -static_cast<LONGLONG>(timeout_ms) * 10000;  // 100 ns units, relative
    const NTSTATUS st = KeWaitForSingleObject(b_.watch_event, Executive, KernelMode, FALSE, &t);
    return st == STATUS_TIMEOUT ? -kXenETIMEDOUT : 0;
  }
  void log(Level level, const char* msg) override {
    const ULONG l = level == Level::Error  ? DPFLTR_ERROR_LEVEL
                    : level == Level::Warn ? DPFLTR_WARNING_LEVEL
                                           : DPFLTR_INFO_LEVEL;
    DbgPrintEx(DPFLTR_IHVDRIVER_ID, l, "%s %u: %s\n", b_.name,
               static_cast<unsigned>(b_.xen->DeviceId), msg);
  }

 protected:
  ~XenInterfacePlatform() = default;

 private:
  // Xen errno values (public/errno.h), as both cores define them.
  static constexpr int kXenENOSPC = 28, kXenENAMETOOLONG = 36, kXenETIMEDOUT = 110;
  // The cores watch one path (the backend's state); room for one more.
  static constexpr std::uint32_t kMaxWatches = 2;
  static constexpr std::uint32_t kPathMax = 128;
  struct Watch {
    PVOID handle = nullptr;
    char path[kPathMax] = {};
  };
  PVIO_XEN_INTERFACE& x() { return *b_.xen; }
  PVOID ctx() { return b_.xen->Header.Context; }

  XenBinding b_;
  Watch watches_[kMaxWatches];
};

}  // namespace pvio::windows
