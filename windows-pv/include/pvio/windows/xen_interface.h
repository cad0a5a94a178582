// The interface xenbus hands its child devices (one per device/vbd/<id> and device/vif/<id>)
// in answer to IRP_MN_QUERY_INTERFACE with GUID_PVIO_XEN_INTERFACE: grant table, event
// channels and xenstore of this guest, plus the child's own identity. It is a plain C table of
// function pointers (INTERFACE header first, as every PnP interface), so xenvbd and xennet
// import nothing from xenbus.sys.
//
// IRQL contract (enforced by the test environment on the host):
//   grant_access, end_access, evtchn_notify          <= DISPATCH_LEVEL
//   evtchn_alloc_unbound, evtchn_close, xs_*, *watch  PASSIVE_LEVEL
//   an event channel callback runs at DISPATCH_LEVEL (from xenbus's upcall DPC);
//   a watch callback runs at PASSIVE_LEVEL on xenbus's watch thread, one at a time.
// Return values are 0 or a negative Xen errno, as the frontend cores' Platform seams.
#pragma once

#include "pvio/wdk/wdm.h"

// {5e0b2d91-7c43-4c1e-9a0d-3f6b1f0e7a52}
inline constexpr GUID GUID_PVIO_XEN_INTERFACE = {
    0x5e0b2d91, 0x7c43, 0x4c1e, {0x9a, 0x0d, 0x3f, 0x6b, 0x1f, 0x0e, 0x7a, 0x52}};
inline constexpr USHORT PVIO_XEN_INTERFACE_VERSION = 1;

typedef VOID PVIO_EVTCHN_CALLBACK(PVOID Context, ULONG Port);
typedef VOID PVIO_WATCH_CALLBACK(PVOID Context, PCSTR Path);

enum PVIO_XEN_DEVICE_KIND : ULONG { PvioXenVbd = 1, PvioXenVif = 2 };

typedef struct _PVIO_XEN_INTERFACE {
  INTERFACE Header;
  // The child: its kind and its number under device/vbd or device/vif.
  PVIO_XEN_DEVICE_KIND Kind;
  ULONG DeviceId;
  USHORT OwnDomid;  // DOMID_SELF when unknown; grants name the backend's domid

  LONG (*GrantAccess)(PVOID Context, USHORT Domid, ULONG64 Gfn, BOOLEAN ReadOnly, PULONG Ref);
  BOOLEAN (*EndAccess)(PVOID Context, ULONG Ref);

  LONG (*EvtchnAllocUnbound)(PVOID Context, USHORT Remote, PVIO_EVTCHN_CALLBACK* Callback,
                             PVOID CallbackContext, PULONG Port);
  VOID (*EvtchnClose)(PVOID Context, ULONG Port);
  VOID (*EvtchnNotify)(PVOID Context, ULONG Port);

  // Relative paths are under /local/domain/<own domid>. XsRead copies the value and a NUL
  // into Buffer and sets *Length to the value's length (-ENOSPC when it does not fit).
  LONG (*XsRead)(PVOID Context, PCSTR Path, PCHAR Buffer, ULONG Capacity, PULONG Length);
  LONG (*XsWrite)(PVOID Context, PCSTR Path, PCSTR Value);
  LONG (*XsRemove)(PVOID Context, PCSTR Path);
  // One watch per call; it fires once at once (XS_WATCH), then on every change at or below
  // Path. *Handle identifies it for XsUnwatch.
  LONG (*XsWatch)(PVOID Context, PCSTR Path, PVIO_WATCH_CALLBACK* Callback,
                  PVOID CallbackContext, PVOID* Handle);
  VOID (*XsUnwatch)(PVOID Context, PVOID Handle);
} PVIO_XEN_INTERFACE, *PPVIO_XEN_INTERFACE;
