// xenbus.sys: the WDM function driver of the Xen platform PCI device (5853:0001) and bus
// driver of its children, one PDO per device/vbd/<id> and device/vif/<id>. The FDO owns
// the domain's Xen state: shared_info and its event-channel bits (an ISR on the PCI INTx
// line scans them, a DPC calls the per-port callbacks), the grant table, the xenstore ring
// client (requests from PASSIVE_LEVEL callers, one at a time) and a watch thread. A child
// hands these out through the xen_interface.h table.
#pragma once

#include <cstdint>

#include "enumerate.h"
#include "hypervisor.h"
#include "pvio/windows/xen_interface.h"
#include "pvio/wdk/wdm.h"
#include "pvio/xenstore/guest_client.h"

namespace pvio::windows::xenbus {

inline constexpr ULONG kPoolTag = 0x73427850;  // 'PxBs'
inline constexpr std::uint32_t kMaxPorts = xen::kBitsPerEvtchnWord * xen::kBitsPerEvtchnWord;
inline constexpr std::uint32_t kMaxWatches = 64;
inline constexpr std::uint32_t kWatchPathMax = 256;

enum class DeviceRole : std::uint32_t { Fdo = 0x46445842, Pdo = 0x50445842 };

struct Fdo;

struct Pdo {
  DeviceRole role = DeviceRole::Pdo;
  PDEVICE_OBJECT self = nullptr;
  Fdo* bus = nullptr;
  Child child{};
  DEVICE_POWER_STATE device_power = PowerDeviceD0;
  bool present = true;   // still listed under device/; reported in BusRelations
  bool reported_missing = false;
  volatile LONG interface_refs = 0;
};

struct Watch {
  char path[kWatchPathMax];
  PVIO_WATCH_CALLBACK* callback = nullptr;
  PVOID context = nullptr;
  bool used = false;
  bool fire = false;  // an event arrived for this watch's token
};

// A KEVENT (SynchronizationEvent, initially signalled) used as a mutex at PASSIVE_LEVEL: the
// kernel's FAST_MUTEX would be the same with more imports.
struct PassiveLock {
  KEVENT ev;
  void init() { KeInitializeEvent(&ev, SynchronizationEvent, TRUE); }
  void lock() { KeWaitForSingleObject(&ev, Executive, KernelMode, FALSE, nullptr); }
  void unlock() { KeSetEvent(&ev, 0, FALSE); }
};

struct Fdo {
  DeviceRole role = DeviceRole::Fdo;
  PDEVICE_OBJECT self = nullptr;
  PDEVICE_OBJECT pdo = nullptr;    // the PCI PDO
  PDEVICE_OBJECT lower = nullptr;  // the next device in the stack
  bool started = false;
  XenPages pages{};
  domid_t own_domid = kDomidSelf;

  // ---- power: the FDO owns the device's power policy ----
  DEVICE_POWER_STATE device_power = PowerDeviceD0;
  // 0 in D1..D3: the ISR then leaves shared_info alone (the INTx line may be shared) and the
  // watch thread holds watch events back. Changed only under the interrupt's lock.
  volatile LONG powered = 1;

  // ---- upcall ----
  PKINTERRUPT interrupt = nullptr;
  KDPC dpc;
  xen::xen_ulong_t dpc_pending[xen::kBitsPerEvtchnWord];  // ports the ISR took for the DPC
  PVIO_EVTCHN_CALLBACK* port_callback[kMaxPorts];
  PVOID port_context[kMaxPorts];
  KSPIN_LOCK port_lock;  // port_callback / port_context against the DPC
  std::uint64_t callback_via = 0;

  // ---- grant table: refs below 8 are reserved (GNTTAB_NR_RESERVED_ENTRIES) ----
  KSPIN_LOCK grant_lock;
  grant_ref_t grant_free_head = kInvalidGrantRef;
  grant_ref_t* grant_next = nullptr;  // free list links, nr_grant_entries long

  // ---- xenstore ----
  struct StoreSeam {
    Fdo* fdo;
  } store_seam{this};
  KEVENT store_event;  // SynchronizationEvent: the store port fired
  KEVENT watch_kick;   // SynchronizationEvent: wake the watch thread
  PassiveLock store_lock;
  xs::GuestClient<8>* store = nullptr;
  PassiveLock watch_lock;  // the watch table
  Watch* volatile running_watch = nullptr;
  KEVENT watch_idle;  // SynchronizationEvent: a callback returned
  PETHREAD watch_thread_object = nullptr;
  Watch watches[kMaxWatches];
  HANDLE watch_thread = nullptr;
  KEVENT watch_thread_done;
  volatile LONG stopping = 0;

  // ---- children ----
  PassiveLock child_lock;
  Pdo* children[kMaxChildren];
  std::uint32_t nr_children = 0;
  std::uint32_t rescans = 0;  // device/ watch events that led to IoInvalidateDeviceRelations
};

// driver.cc
NTSTATUS xenbus_driver_entry(PDRIVER_OBJECT driver);
DRIVER_ADD_DEVICE xenbus_add_device;
DRIVER_DISPATCH xenbus_dispatch_pnp;

// fdo.cc
NTSTATUS fdo_pnp(Fdo* fdo, PIRP irp);
// Event channels and xenstore for children (IRQL rules of xen_interface.h).
LONG bus_evtchn_alloc_unbound(Fdo* fdo, domid_t remote, PVIO_EVTCHN_CALLBACK* cb, PVOID ctx,
                              evtchn_port_t* port);
void bus_evtchn_close(Fdo* fdo, evtchn_port_t port);
LONG bus_grant_access(Fdo* fdo, domid_t domid, std::uint64_t gfn, bool ro, grant_ref_t* ref);
bool bus_end_access(Fdo* fdo, grant_ref_t ref);
LONG bus_xs_read(Fdo* fdo, PCSTR path, PCHAR buf, ULONG cap, PULONG len);
LONG bus_xs_write(Fdo* fdo, PCSTR path, PCSTR value);
LONG bus_xs_remove(Fdo* fdo, PCSTR path);
LONG bus_xs_watch(Fdo* fdo, PCSTR path, PVIO_WATCH_CALLBACK* cb, PVOID ctx, PVOID* handle);
void bus_xs_unwatch(Fdo* fdo, PVOID handle);

// The upcall while the device leaves and re-enters D0 (PASSIVE_LEVEL; no-ops before START).
void fdo_power_down(Fdo* fdo);
void fdo_power_up(Fdo* fdo);

// power.cc: IRP_MJ_POWER for the FDO (passed down; the policy owner's D-IRPs) and the PDOs.
DRIVER_DISPATCH xenbus_dispatch_power;
NTSTATUS fdo_power(Fdo* fdo, PIRP irp);
NTSTATUS pdo_power(Pdo* pdo, PIRP irp);

// pdo.cc
NTSTATUS pdo_pnp(Pdo* pdo, PIRP irp);
Pdo* pdo_create(Fdo* fdo, const Child& c);
void pdo_destroy(Pdo* pdo);

// Xen errno values the interface returns (negated).
inline constexpr LONG kXenENOENT = 2, kXenEIO = 5, kXenENOMEM = 12, kXenEINVAL = 22,
                      kXenENOSPC = 28, kXenENAMETOOLONG = 36;

}  // namespace pvio::windows::xenbus
