// The host's xenbus child PDO and its driver interface over a pvio domain (see xen_bus.h).
#include "xen_bus.h"

#include <cstring>

#include "kernel.h"
#include "pvio/blkfront/platform.h"
#include "pvio/blkfront_user/xenstore_access.h"
#include "pvio/domain/domain.h"

namespace pvio::windows::test {

namespace {
void interface_reference(PVOID ctx) { ++*static_cast<std::atomic<int>*>(ctx); }
void interface_dereference(PVOID ctx) {
  if (--*static_cast<std::atomic<int>*>(ctx) < 0) violation("interface dereferenced more often than referenced");
}
}  // namespace

XenBusChild::XenBusChild(domain::Domain& dom, PVIO_XEN_DEVICE_KIND kind, ULONG devid,
                         blkfront::user::SharedRingXenstore* shared)
    : dom_(dom), kind_(kind), devid_(devid) {
  if (shared == nullptr) {
    own_shared_ = std::make_unique<blkfront::user::SharedRingXenstore>(dom);
    shared = own_shared_.get();
  }
  shared_ = shared;
  xs_ = shared_->open();
  pdo_ = create_device([this](PDEVICE_OBJECT, PIRP irp) { return dispatch(irp); });
  watch_thread_ = std::thread([this] { watch_loop(); });
}

XenBusChild::~XenBusChild() {
  stop_.store(true);
  watch_thread_.join();
  if (refs_.load() != 0) violation("xenbus child removed while its interface is referenced");
  delete_device(pdo_);
  if (own_shared_) own_shared_->abandon();
  xs_.reset();
  own_shared_.reset();
}

std::size_t XenBusChild::watches() {
  std::lock_guard lk(watch_mu_);
  return watches_.size();
}

// The PDO's IRP_MJ_PNP dispatch: QUERY_INTERFACE for our GUID; anything else keeps the
// status the sender put in (a PDO completes IRPs it does not handle unchanged).
NTSTATUS XenBusChild::dispatch(PIRP irp) {
  PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
  if (sl->MajorFunction == IRP_MJ_PNP && sl->MinorFunction == IRP_MN_QUERY_INTERFACE) {
    auto& q = sl->Parameters.QueryInterface;
    if (q.InterfaceType != nullptr && *q.InterfaceType == GUID_PVIO_XEN_INTERFACE) {
      if (q.Version != PVIO_XEN_INTERFACE_VERSION || q.Size < sizeof(PVIO_XEN_INTERFACE) ||
          q.Interface == nullptr) {
        complete_irp(irp, STATUS_INVALID_PARAMETER);
        return STATUS_INVALID_PARAMETER;
      }
      fill(reinterpret_cast<PVIO_XEN_INTERFACE*>(q.Interface));
      // The provider references the interface before handing it out (wdm: INTERFACE).
      interface_reference(&refs_);
      complete_irp(irp, STATUS_SUCCESS);
      return STATUS_SUCCESS;
    }
  }
  const NTSTATUS st = irp->IoStatus.Status;
  complete_irp(irp, st);
  return st;
}

void XenBusChild::fill(PVIO_XEN_INTERFACE* out) {
  std::memset(out, 0, sizeof *out);
  out->Header.Size = sizeof *out;
  out->Header.Version = PVIO_XEN_INTERFACE_VERSION;
  out->Header.Context = this;
  out->Header.InterfaceReference = [](PVOID ctx) {
    interface_reference(&static_cast<XenBusChild*>(ctx)->refs_);
  };
  out->Header.InterfaceDereference = [](PVOID ctx) {
    interface_dereference(&static_cast<XenBusChild*>(ctx)->refs_);
  };
  out->Kind = kind_;
  out->DeviceId = devid_;
  out->OwnDomid = dom_.domid();
  out->GrantAccess = &grant_access;
  out->EndAccess = &end_access;
  out->EvtchnAllocUnbound = &alloc_unbound;
  out->EvtchnClose = &evtchn_close;
  out->EvtchnNotify = &notify;
  out->XsRead = &xs_read;
  out->XsWrite = &xs_write;
  out->XsRemove = &xs_remove;
  out->XsWatch = &xs_watch;
  out->XsUnwatch = &xs_unwatch;
}

LONG XenBusChild::grant_access(PVOID ctx, USHORT domid, ULONG64 gfn, BOOLEAN ro, PULONG ref) {
  require_irql(DISPATCH_LEVEL, "xen GrantAccess");
  auto* self = static_cast<XenBusChild*>(ctx);
  std::lock_guard lk(self->grant_mu_);
  const grant_ref_t r = self->dom_.grant_table().grant_access(domid, gfn, ro != 0);
  if (r == kInvalidGrantRef) return -blkfront::XEN_ENOSPC;
  ++self->grants_;
  *ref = r;
  return 0;
}

BOOLEAN XenBusChild::end_access(PVOID ctx, ULONG ref) {
  require_irql(DISPATCH_LEVEL, "xen EndAccess");
  auto* self = static_cast<XenBusChild*>(ctx);
  std::lock_guard lk(self->grant_mu_);
  if (!self->dom_.grant_table().end_access(ref)) return FALSE;
  --self->grants_;
  return TRUE;
}

LONG XenBusChild::alloc_unbound(PVOID ctx, USHORT remote, PVIO_EVTCHN_CALLBACK* cb, PVOID cb_ctx,
                                PULONG port) {
  require_irql(PASSIVE_LEVEL, "xen EvtchnAllocUnbound");
  auto* self = static_cast<XenBusChild*>(ctx);
  const evtchn::PortResult r = self->dom_.alloc_unbound(remote, [cb, cb_ctx](evtchn_port_t p) {
    AtIrql dispatch(DISPATCH_LEVEL);  // xenbus runs channel callbacks from its upcall DPC
    cb(cb_ctx, p);
  });
  if (r.rc != 0) return r.rc;
  ++self->ports_;
  *port = r.port;
  return 0;
}

VOID XenBusChild::evtchn_close(PVOID ctx, ULONG port) {
  require_irql(PASSIVE_LEVEL, "xen EvtchnClose");
  auto* self = static_cast<XenBusChild*>(ctx);
  self->dom_.close(port);
  --self->ports_;
}

VOID XenBusChild::notify(PVOID ctx, ULONG port) {
  require_irql(DISPATCH_LEVEL, "xen EvtchnNotify");
  static_cast<XenBusChild*>(ctx)->dom_.send(port);
}

LONG XenBusChild::xs_read(PVOID ctx, PCSTR path, PCHAR buf, ULONG cap, PULONG len) {
  require_irql(PASSIVE_LEVEL, "xen XsRead");
  std::string v;
  const int rc = static_cast<XenBusChild*>(ctx)->xs_->read(path, &v);
  if (rc != 0) return rc;
  if (v.size() + 1 > cap) return -blkfront::XEN_ENOSPC;
  std::memcpy(buf, v.data(), v.size());
  buf[v.size()] = '\0';
  *len = static_cast<ULONG>(v.size());
  return 0;
}

LONG XenBusChild::xs_write(PVOID ctx, PCSTR path, PCSTR value) {
  require_irql(PASSIVE_LEVEL, "xen XsWrite");
  return static_cast<XenBusChild*>(ctx)->xs_->write(path, value);
}

LONG XenBusChild::xs_remove(PVOID ctx, PCSTR path) {
  require_irql(PASSIVE_LEVEL, "xen XsRemove");
  return static_cast<XenBusChild*>(ctx)->xs_->remove(path);
}

LONG XenBusChild::xs_watch(PVOID ctx, PCSTR path, PVIO_WATCH_CALLBACK* cb, PVOID cb_ctx,
                           PVOID* handle) {
  require_irql(PASSIVE_LEVEL, "xen XsWatch");
  auto* self = static_cast<XenBusChild*>(ctx);
  auto w = std::make_unique<Watch>();
  w->path = path;
  // Unique per child: children of one domain share its xenstore ring.
  w->token = "xenbus-" + std::to_string(self->kind_) + "-" + std::to_string(self->devid_) + "-" +
             std::to_string(self->next_token_++);
  w->callback = cb;
  w->context = cb_ctx;
  Watch* raw = w.get();
  {
    std::lock_guard lk(self->watch_mu_);
    self->watches_.push_back(std::move(w));
  }
  const int rc = self->xs_->watch(path, raw->token.c_str());
  if (rc != 0) {
    std::lock_guard lk(self->watch_mu_);
    std::erase_if(self->watches_, [&](const auto& p) { return p.get() == raw; });
    return rc;
  }
  *handle = raw;
  return 0;
}

VOID XenBusChild::xs_unwatch(PVOID ctx, PVOID handle) {
  require_irql(PASSIVE_LEVEL, "xen XsUnwatch");
  auto* self = static_cast<XenBusChild*>(ctx);
  std::unique_ptr<Watch> gone;
  {
    std::lock_guard lk(self->watch_mu_);
    for (auto& p : self->watches_) {
      if (p.get() != handle) continue;
      gone = std::move(p);
      std::erase(self->watches_, nullptr);
      break;
    }
  }
  if (!gone) {
    violation("XsUnwatch of a watch that is not registered");
    return;
  }
  self->xs_->unwatch(gone->path.c_str(), gone->token.c_str());
}

// xenbus's watch thread: every xenstore event wakes every watch of this child (the callbacks
// rescan what they watch, so a spurious call is harmless). PASSIVE_LEVEL, one at a time.
void XenBusChild::watch_loop() {
  while (!stop_.load()) {
    xs_->wait(50);
    if (xs_->drain_events() == 0) continue;
    std::vector<std::pair<PVIO_WATCH_CALLBACK*, std::pair<PVOID, std::string>>> calls;
    {
      std::lock_guard lk(watch_mu_);
      for (const auto& w : watches_) calls.push_back({w->callback, {w->context, w->path}});
    }
    for (auto& [cb, arg] : calls) {
      if (current_irql() != PASSIVE_LEVEL) violation("watch thread not at PASSIVE_LEVEL");
      cb(arg.first, arg.second.c_str());
    }
  }
}

}  // namespace pvio::windows::test
