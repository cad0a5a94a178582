// xenbus's side of the driver interface, for the host: a child PDO (one device/vbd/<id> or
// device/vif/<id>) that answers IRP_MN_QUERY_INTERFACE(GUID_PVIO_XEN_INTERFACE) with the
// interface of xen_interface.h, implemented over a user-mode pvio domain: its grant table,
// its event channels (callbacks run at DISPATCH_LEVEL on the domain's loop thread, as from
// xenbus's upcall DPC) and its xenstore ring (served by the real pvio-xenstored; watch
// callbacks run at PASSIVE_LEVEL on one watch thread). The IRQL contract of the interface is
// checked on every call.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pvio/windows/xen_interface.h"

namespace pvio::domain {
class Domain;
}
namespace pvio::blkfront::user {
class SharedRingXenstore;
class XenstoreAccess;
}  // namespace pvio::blkfront::user

namespace pvio::windows::test {

class XenBusChild {
 public:
  // `shared`: the domain's xenstore ring when several children of one domain exist (one ring,
  // one port handler); nullptr: the child opens the ring itself.
  XenBusChild(domain::Domain& dom, PVIO_XEN_DEVICE_KIND kind, ULONG devid,
              blkfront::user::SharedRingXenstore* shared = nullptr);
  ~XenBusChild();
  XenBusChild(const XenBusChild&) = delete;
  XenBusChild& operator=(const XenBusChild&) = delete;

  PDEVICE_OBJECT pdo() const { return pdo_; }
  int references() const { return refs_.load(); }
  std::size_t watches();
  // What the driver holds through the interface now: grants given and not yet ended, event
  // channels allocated and not yet closed.
  int live_grants() const { return grants_.load(); }
  int open_ports() const { return ports_.load(); }

 private:
  struct Watch {
    std::string path;
    std::string token;
    PVIO_WATCH_CALLBACK* callback;
    PVOID context;
  };
  NTSTATUS dispatch(PIRP irp);
  void watch_loop();
  void fill(PVIO_XEN_INTERFACE* out);

  static LONG grant_access(PVOID ctx, USHORT domid, ULONG64 gfn, BOOLEAN ro, PULONG ref);
  static BOOLEAN end_access(PVOID ctx, ULONG ref);
  static LONG alloc_unbound(PVOID ctx, USHORT remote, PVIO_EVTCHN_CALLBACK* cb, PVOID cb_ctx,
                            PULONG port);
  static VOID evtchn_close(PVOID ctx, ULONG port);
  static VOID notify(PVOID ctx, ULONG port);
  static LONG xs_read(PVOID ctx, PCSTR path, PCHAR buf, ULONG cap, PULONG len);
  static LONG xs_write(PVOID ctx, PCSTR path, PCSTR value);
  static LONG xs_remove(PVOID ctx, PCSTR path);
  static LONG xs_watch(PVOID ctx, PCSTR path, PVIO_WATCH_CALLBACK* cb, PVOID cb_ctx, PVOID* handle);
  static VOID xs_unwatch(PVOID ctx, PVOID handle);

  domain::Domain& dom_;
  PVIO_XEN_DEVICE_KIND kind_;
  ULONG devid_;
  PDEVICE_OBJECT pdo_ = nullptr;
  std::atomic<int> refs_{0};
  std::atomic<int> grants_{0};
  std::atomic<int> ports_{0};
  std::unique_ptr<blkfront::user::SharedRingXenstore> own_shared_;
  blkfront::user::SharedRingXenstore* shared_ = nullptr;
  std::unique_ptr<blkfront::user::XenstoreAccess> xs_;
  std::mutex grant_mu_;  // the domain's grant table is not synchronised
  std::mutex watch_mu_;
  std::vector<std::unique_ptr<Watch>> watches_;
  std::atomic<unsigned> next_token_{0};
  std::atomic<bool> stop_{false};
  std::thread watch_thread_;
};

}  // namespace pvio::windows::test
