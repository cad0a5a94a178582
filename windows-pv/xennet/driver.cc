// xennet's DriverEntry: registers the NDIS 6 miniport whose adapters are PV NICs
// (control.cc, datapath.cc). NDIS calls back through the MiniportXxx handlers below.
#include <cstring>
#include <new>

#include "adapter.h"

using pvio::windows::xennet::Adapter;

namespace {

constexpr ULONG kPoolTag = 0x74656E58;  // 'Xnet'
NDIS_HANDLE g_driver_handle = nullptr;

Adapter* adapter(NDIS_HANDLE ctx) { return static_cast<Adapter*>(ctx); }

NDIS_STATUS set_options(NDIS_HANDLE, NDIS_HANDLE) { return NDIS_STATUS_SUCCESS; }

// NDIS has no device extension for a miniport: the adapter lives in non-paged pool.
NDIS_STATUS initialize_ex(NDIS_HANDLE handle, NDIS_HANDLE, PNDIS_MINIPORT_INIT_PARAMETERS) {
  void* mem = ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(Adapter), kPoolTag);
  if (mem == nullptr) return NDIS_STATUS_RESOURCES;
  auto* a = new (mem) Adapter();
  const NDIS_STATUS st = a->initialize(handle);
  if (st != NDIS_STATUS_SUCCESS) {
    a->~Adapter();
    ExFreePoolWithTag(mem, kPoolTag);
  }
  return st;
}
VOID halt_ex(NDIS_HANDLE ctx, NDIS_HALT_ACTION) {
  Adapter* a = adapter(ctx);
  a->halt();
  a->~Adapter();
  ExFreePoolWithTag(a, kPoolTag);
}
VOID unload(PDRIVER_OBJECT) { NdisMDeregisterMiniportDriver(g_driver_handle); }
NDIS_STATUS pause(NDIS_HANDLE ctx, PNDIS_MINIPORT_PAUSE_PARAMETERS) { return adapter(ctx)->pause(); }
NDIS_STATUS restart(NDIS_HANDLE ctx, PNDIS_MINIPORT_RESTART_PARAMETERS) {
  return adapter(ctx)->restart();
}
NDIS_STATUS oid_request(NDIS_HANDLE ctx, PNDIS_OID_REQUEST req) {
  return adapter(ctx)->oid_request(req);
}
VOID send_nbls(NDIS_HANDLE ctx, PNET_BUFFER_LIST nbls, NDIS_PORT_NUMBER, ULONG flags) {
  adapter(ctx)->send(nbls, flags);
}
VOID return_nbls(NDIS_HANDLE ctx, PNET_BUFFER_LIST nbls, ULONG flags) {
  adapter(ctx)->return_nbls(nbls, flags);
}
// Sends are on the ring within microseconds or wait for ring space in order: none is
// cancellable, which the contract allows (a miniport may ignore cancellation).
VOID cancel_send(NDIS_HANDLE, PVOID) {}
VOID pnp_event(NDIS_HANDLE, PNET_DEVICE_PNP_EVENT) {}
VOID shutdown_ex(NDIS_HANDLE, NDIS_SHUTDOWN_ACTION) {}
// OIDs are answered synchronously: nothing to cancel.
VOID cancel_oid(NDIS_HANDLE, PVOID) {}

}  // namespace

extern "C" NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path) {
  NDIS_MINIPORT_DRIVER_CHARACTERISTICS c;
  std::memset(&c, 0, sizeof c);
  c.Header.Type = NDIS_OBJECT_TYPE_MINIPORT_DRIVER_CHARACTERISTICS;
  c.Header.Revision = NDIS_MINIPORT_DRIVER_CHARACTERISTICS_REVISION_1;
  c.Header.Size = NDIS_SIZEOF_MINIPORT_DRIVER_CHARACTERISTICS_REVISION_1;
  c.MajorNdisVersion = 6;
  c.MinorNdisVersion = 20;  // Windows 7 / Server 2008 R2 and later
  c.MajorDriverVersion = 1;
  c.MinorDriverVersion = 0;
  c.SetOptionsHandler = &set_options;
  c.InitializeHandlerEx = &initialize_ex;
  c.HaltHandlerEx = &halt_ex;
  c.UnloadHandler = &unload;
  c.PauseHandler = &pause;
  c.RestartHandler = &restart;
  c.OidRequestHandler = &oid_request;
  c.SendNetBufferListsHandler = &send_nbls;
  c.ReturnNetBufferListsHandler = &return_nbls;
  c.CancelSendHandler = &cancel_send;
  c.DevicePnPEventNotifyHandler = &pnp_event;
  c.ShutdownHandlerEx = &shutdown_ex;
  c.CancelOidRequestHandler = &cancel_oid;
  return NdisMRegisterMiniportDriver(driver, registry_path, nullptr, &c, &g_driver_handle);
}
