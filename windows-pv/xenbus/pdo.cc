// xenbus's child PDOs: one per device/vbd/<id> or device/vif/<id>. Their PnP identity is what
// xenvbd.inf and xennet.inf match (enumerate.h); QUERY_INTERFACE hands out the
// xen_interface.h table over the bus's grant table, event channels and xenstore.
#include <new>

#include "bus.h"

namespace pvio::windows::xenbus {

namespace {

Fdo* bus_of(PVOID ctx) { return static_cast<Pdo*>(ctx)->bus; }

void iface_reference(PVOID ctx) { __atomic_add_fetch(&static_cast<Pdo*>(ctx)->interface_refs, 1, __ATOMIC_ACQ_REL); }
void iface_dereference(PVOID ctx) { __atomic_sub_fetch(&static_cast<Pdo*>(ctx)->interface_refs, 1, __ATOMIC_ACQ_REL); }

LONG grant_access(PVOID ctx, USHORT domid, ULONG64 gfn, BOOLEAN ro, PULONG ref) {
  grant_ref_t r = 0;
  const LONG rc = bus_grant_access(bus_of(ctx), domid, gfn, ro != 0, &r);
  if (rc == 0) *ref = r;
  return rc;
}
BOOLEAN end_access(PVOID ctx, ULONG ref) { return bus_end_access(bus_of(ctx), ref) ? TRUE : FALSE; }
LONG alloc_unbound(PVOID ctx, USHORT remote, PVIO_EVTCHN_CALLBACK* cb, PVOID cb_ctx, PULONG port) {
  evtchn_port_t p = 0;
  const LONG rc = bus_evtchn_alloc_unbound(bus_of(ctx), remote, cb, cb_ctx, &p);
  if (rc == 0) *port = p;
  return rc;
}
VOID evtchn_close(PVOID ctx, ULONG port) { bus_evtchn_close(bus_of(ctx), port); }
VOID evtchn_notify(PVOID, ULONG port) { hv_evtchn_send(port); }
LONG xs_read(PVOID ctx, PCSTR path, PCHAR buf, ULONG cap, PULONG len) {
  return bus_xs_read(bus_of(ctx), path, buf, cap, len);
}
LONG xs_write(PVOID ctx, PCSTR path, PCSTR value) { return bus_xs_write(bus_of(ctx), path, value); }
LONG xs_remove(PVOID ctx, PCSTR path) { return bus_xs_remove(bus_of(ctx), path); }
LONG xs_watch(PVOID ctx, PCSTR path, PVIO_WATCH_CALLBACK* cb, PVOID cb_ctx, PVOID* handle) {
  return bus_xs_watch(bus_of(ctx), path, cb, cb_ctx, handle);
}
VOID xs_unwatch(PVOID ctx, PVOID handle) { bus_xs_unwatch(bus_of(ctx), handle); }

NTSTATUS complete(PIRP irp, NTSTATUS st, ULONG_PTR info) {
  irp->IoStatus.Status = st;
  irp->IoStatus.Information = info;
  IoCompleteRequest(irp, IO_NO_INCREMENT);
  return st;
}

// A REG_MULTI_SZ (two NULs at the end) or REG_SZ of UTF-16 from ASCII, in pool the PnP
// manager frees.
NTSTATUS id_string(PIRP irp, const char* ascii, std::size_t len, bool multi) {
  const std::size_t chars = len + 1 + (multi ? 1 : 0);
  auto* w = static_cast<WCHAR*>(ExAllocatePoolWithTag(NonPagedPoolNx, chars * sizeof(WCHAR), kPoolTag));
  if (w == nullptr) return complete(irp, STATUS_INSUFFICIENT_RESOURCES, 0);
  for (std::size_t i = 0; i < len; ++i) w[i] = static_cast<WCHAR>(static_cast<unsigned char>(ascii[i]));
  for (std::size_t i = len; i < chars; ++i) w[i] = 0;
  return complete(irp, STATUS_SUCCESS, reinterpret_cast<ULONG_PTR>(w));
}

NTSTATUS query_id(Pdo* pdo, PIRP irp) {
  char buf[32];
  std::size_t n = 0;
  switch (IoGetCurrentIrpStackLocation(irp)->Parameters.QueryId.IdType) {
    case BusQueryDeviceID:
      n = hardware_id(pdo->child.kind, buf, sizeof buf);
      return id_string(irp, buf, n, false);
    case BusQueryHardwareIDs:
      n = hardware_id(pdo->child.kind, buf, sizeof buf);
      return id_string(irp, buf, n, true);
    case BusQueryInstanceID:
      n = instance_id(pdo->child, buf, sizeof buf);
      return id_string(irp, buf, n, false);
    default:
      return complete(irp, irp->IoStatus.Status, irp->IoStatus.Information);
  }
}

NTSTATUS query_capabilities(Pdo* pdo, PIRP irp) {
  PDEVICE_CAPABILITIES c = IoGetCurrentIrpStackLocation(irp)->Parameters.DeviceCapabilities.Capabilities;
  if (c == nullptr || c->Version != 1 || c->Size < sizeof(DEVICE_CAPABILITIES))
    return complete(irp, STATUS_INVALID_PARAMETER, 0);
  // Instance IDs are device numbers, unique on this bus; a backend may go away at any time.
  c->Flags |= DEVCAP_UNIQUE_ID | DEVCAP_SILENT_INSTALL | DEVCAP_SURPRISE_REMOVAL_OK;
  c->Address = pdo->child.devid;
  c->UINumber = pdo->child.devid;
  // Power: D0 while the system works, D3 in every sleep state; no D1/D2, no wake.
  c->DeviceState[PowerSystemWorking] = PowerDeviceD0;
  for (int s = PowerSystemSleeping1; s < PowerSystemMaximum; ++s) c->DeviceState[s] = PowerDeviceD3;
  c->SystemWake = PowerSystemUnspecified;
  c->DeviceWake = PowerDeviceUnspecified;
  return complete(irp, STATUS_SUCCESS, 0);
}

NTSTATUS query_interface(Pdo* pdo, PIRP irp) {
  auto& q = IoGetCurrentIrpStackLocation(irp)->Parameters.QueryInterface;
  if (q.InterfaceType == nullptr || !(*q.InterfaceType == GUID_PVIO_XEN_INTERFACE))
    return complete(irp, irp->IoStatus.Status, irp->IoStatus.Information);
  if (q.Version != PVIO_XEN_INTERFACE_VERSION || q.Size < sizeof(PVIO_XEN_INTERFACE) ||
      q.Interface == nullptr || pdo->bus == nullptr || !pdo->bus->started)
    return complete(irp, STATUS_INVALID_PARAMETER, 0);
  auto* out = reinterpret_cast<PVIO_XEN_INTERFACE*>(q.Interface);
  __builtin_memset(out, 0, sizeof *out);
  out->Header.Size = sizeof *out;
  out->Header.Version = PVIO_XEN_INTERFACE_VERSION;
  out->Header.Context = pdo;
  out->Header.InterfaceReference = &iface_reference;
  out->Header.InterfaceDereference = &iface_dereference;
  out->Kind = pdo->child.kind;
  out->DeviceId = pdo->child.devid;
  out->OwnDomid = pdo->bus->own_domid;
  out->GrantAccess = &grant_access;
  out->EndAccess = &end_access;
  out->EvtchnAllocUnbound = &alloc_unbound;
  out->EvtchnClose = &evtchn_close;
  out->EvtchnNotify = &evtchn_notify;
  out->XsRead = &xs_read;
  out->XsWrite = &xs_write;
  out->XsRemove = &xs_remove;
  out->XsWatch = &xs_watch;
  out->XsUnwatch = &xs_unwatch;
  iface_reference(pdo);  // the provider references what it hands out (wdm: INTERFACE)
  return complete(irp, STATUS_SUCCESS, 0);
}

}  // namespace

Pdo* pdo_create(Fdo* fdo, const Child& c) {
  PDEVICE_OBJECT dev = nullptr;
  if (!NT_SUCCESS(IoCreateDevice(fdo->self->DriverObject, sizeof(Pdo), nullptr,
                                 FILE_DEVICE_BUS_EXTENDER,
                                 FILE_AUTOGENERATED_DEVICE_NAME | FILE_DEVICE_SECURE_OPEN, FALSE,
                                 &dev)))
    return nullptr;
  auto* pdo = new (dev->DeviceExtension) Pdo();
  pdo->self = dev;
  pdo->bus = fdo;
  pdo->child = c;
  dev->Flags |= DO_BUS_ENUMERATED_DEVICE | DO_POWER_PAGABLE;
  dev->Flags &= ~DO_DEVICE_INITIALIZING;
  return pdo;
}

void pdo_destroy(Pdo* pdo) {
  PDEVICE_OBJECT dev = pdo->self;
  pdo->~Pdo();
  IoDeleteDevice(dev);
}

NTSTATUS pdo_pnp(Pdo* pdo, PIRP irp) {
  PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
  switch (sl->MinorFunction) {
    case IRP_MN_START_DEVICE:
    case IRP_MN_QUERY_REMOVE_DEVICE:
    case IRP_MN_CANCEL_REMOVE_DEVICE:
    case IRP_MN_STOP_DEVICE:
    case IRP_MN_SURPRISE_REMOVAL:
      return complete(irp, STATUS_SUCCESS, 0);
    case IRP_MN_QUERY_ID:
      return query_id(pdo, irp);
    case IRP_MN_QUERY_CAPABILITIES:
      return query_capabilities(pdo, irp);
    case IRP_MN_QUERY_INTERFACE:
      return query_interface(pdo, irp);
    case IRP_MN_QUERY_DEVICE_RELATIONS:
      if (sl->Parameters.QueryDeviceRelations.Type == TargetDeviceRelation) {
        auto* rel = static_cast<PDEVICE_RELATIONS>(
            ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(DEVICE_RELATIONS), kPoolTag));
        if (rel == nullptr) return complete(irp, STATUS_INSUFFICIENT_RESOURCES, 0);
        ObfReferenceObject(pdo->self);
        rel->Count = 1;
        rel->Objects[0] = pdo->self;
        return complete(irp, STATUS_SUCCESS, reinterpret_cast<ULONG_PTR>(rel));
      }
      return complete(irp, irp->IoStatus.Status, irp->IoStatus.Information);
    case IRP_MN_REMOVE_DEVICE: {
      // A child reported missing goes now; one still present stays until its bus is removed
      // (a PnP rule for bus drivers: the PDO lives while the device is there).
      Fdo* fdo = pdo->bus;
      if (pdo->reported_missing && fdo != nullptr) {
        fdo->child_lock.lock();
        for (std::uint32_t i = 0; i < fdo->nr_children; ++i) {
          if (fdo->children[i] != pdo) continue;
          fdo->children[i] = fdo->children[--fdo->nr_children];
          break;
        }
        fdo->child_lock.unlock();
        complete(irp, STATUS_SUCCESS, 0);
        pdo_destroy(pdo);
        return STATUS_SUCCESS;
      }
      return complete(irp, STATUS_SUCCESS, 0);
    }
    default:
      // A PDO completes what it does not handle with the status it came with.
      return complete(irp, irp->IoStatus.Status, irp->IoStatus.Information);
  }
}

}  // namespace pvio::windows::xenbus
