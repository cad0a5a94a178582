// xenbus's FDO over the Xen platform PCI device: START_DEVICE (hypervisor pages, upcall on the
// PCI INTx line, xenstore ring, watch thread, unplug), BusRelations from device/vbd and
// device/vif, REMOVE; and the grant / event-channel / xenstore services children use.
#include <new>

#include "bus.h"
#include "pvio/xen/grant_table.h"

namespace pvio::windows::xenbus {

namespace {

void log(ULONG level, PCSTR msg) { DbgPrintEx(DPFLTR_IHVDRIVER_ID, level, "xenbus: %s\n", msg); }

LONG errno_of(xs::XsError e) {
  switch (e) {
    case xs::XsError::None: return 0;
    case xs::XsError::NoEnt: return -kXenENOENT;
    case xs::XsError::Inval: return -kXenEINVAL;
    case xs::XsError::NoMem: return -kXenENOMEM;
    case xs::XsError::NoSpc: return -kXenENOSPC;
    case xs::XsError::Acces: return -13;
    case xs::XsError::Exist: return -17;
    case xs::XsError::TooBig: return -7;  // E2BIG
    default: return -kXenEIO;
  }
}

// ---- upcall: ISR at DIRQL, DPC at DISPATCH_LEVEL ----

template <class T>
T xchg(T* p, T v) {
  return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL);
}

// The 2-level scan (Xen's xen.h, "event channel upcalls"): clear upcall_pending first so a
// port set pending during the scan raises a new upcall, take the selector, then take each
// pending unmasked port's bit and leave it to the DPC. Returns whether anything was ours (the
// INTx line may be shared).
bool take_pending_ports(Fdo* fdo) {
  xen::shared_info* s = fdo->pages.shared_info;
  xen::vcpu_info& v = s->vcpu_info[0];
  if (xchg(&v.evtchn_upcall_pending, std::uint8_t{0}) == 0) return false;
  bool any = false;
  xen::xen_ulong_t sel = xchg(&v.evtchn_pending_sel, xen::xen_ulong_t{0});
  while (sel != 0) {
    const unsigned w = static_cast<unsigned>(__builtin_ctzll(sel));
    sel &= sel - 1;
    const xen::xen_ulong_t mask = __atomic_load_n(&s->evtchn_mask[w], __ATOMIC_ACQUIRE);
    const xen::xen_ulong_t taken =
        __atomic_fetch_and(&s->evtchn_pending[w], mask, __ATOMIC_ACQ_REL) & ~mask;
    if (taken == 0) continue;
    __atomic_fetch_or(&fdo->dpc_pending[w], taken, __ATOMIC_ACQ_REL);
    any = true;
  }
  if (any) KeInsertQueueDpc(&fdo->dpc, nullptr, nullptr);
  return true;
}

BOOLEAN isr(PKINTERRUPT, PVOID ctx) {
  auto* fdo = static_cast<Fdo*>(ctx);
  // Out of D0 the device is not ours to touch: a shared line's other device interrupted.
  if (__atomic_load_n(&fdo->powered, __ATOMIC_ACQUIRE) == 0) return FALSE;
  return take_pending_ports(fdo) ? TRUE : FALSE;
}

// Both run at the ISR's DIRQL under its lock (KeSynchronizeExecution), so no scan is in
// progress when the flag changes.
BOOLEAN mark_powered_down(PVOID ctx) {
  __atomic_store_n(&static_cast<Fdo*>(ctx)->powered, 0, __ATOMIC_RELEASE);
  return TRUE;
}
// Back in D0: the events that arrived meanwhile are still pending in shared_info (no route
// raised the line for them); take them now as the ISR would.
BOOLEAN mark_powered_up_and_scan(PVOID ctx) {
  auto* fdo = static_cast<Fdo*>(ctx);
  __atomic_store_n(&fdo->powered, 1, __ATOMIC_RELEASE);
  take_pending_ports(fdo);
  return TRUE;
}

void upcall_dpc(PKDPC, PVOID ctx, PVOID, PVOID) {
  auto* fdo = static_cast<Fdo*>(ctx);
  for (unsigned w = 0; w < xen::kBitsPerEvtchnWord; ++w) {
    xen::xen_ulong_t bits = xchg(&fdo->dpc_pending[w], xen::xen_ulong_t{0});
    while (bits != 0) {
      const evtchn_port_t port = w * xen::kBitsPerEvtchnWord +
                                 static_cast<unsigned>(__builtin_ctzll(bits));
      bits &= bits - 1;
      const KIRQL old = KeAcquireSpinLockRaiseToDpc(&fdo->port_lock);
      PVIO_EVTCHN_CALLBACK* cb = fdo->port_callback[port];
      PVOID cb_ctx = fdo->port_context[port];
      KeReleaseSpinLock(&fdo->port_lock, old);
      if (cb != nullptr) cb(cb_ctx, port);
    }
  }
}

// The xenstore port: wake the requester waiting for its reply and the watch thread.
void store_port_fired(PVOID ctx, ULONG) {
  auto* fdo = static_cast<Fdo*>(ctx);
  KeSetEvent(&fdo->store_event, 0, FALSE);
  KeSetEvent(&fdo->watch_kick, 0, FALSE);
}

// ---- xenstore ring client seam ----
void store_notify(void* ctx) {
  auto* fdo = static_cast<Fdo::StoreSeam*>(ctx)->fdo;
  hv_evtchn_send(fdo->pages.store_port);
}
void store_wait(void* ctx) {
  auto* fdo = static_cast<Fdo::StoreSeam*>(ctx)->fdo;
  LARGE_INTEGER t;
  t.QuadPart = -10 * 1000 * 100;  // 100 ms: the client re-checks the ring on every return
  KeWaitForSingleObject(&fdo->store_event, Executive, KernelMode, FALSE, &t);
}
bool store_abandoned(void* ctx) {
  return __atomic_load_n(&static_cast<Fdo::StoreSeam*>(ctx)->fdo->stopping, __ATOMIC_ACQUIRE) != 0;
}

// After a request: watch events the client queued meanwhile are for the watch thread.
void kick_watch_thread(Fdo* fdo) { KeSetEvent(&fdo->watch_kick, 0, FALSE); }

// The locked directory reader enumerate() needs.
struct LockedStore {
  Fdo* fdo;
  xs::XsError directory(const char* path, char* buf, std::size_t cap, std::size_t* len) {
    fdo->store_lock.lock();
    const xs::XsError e = fdo->store->directory(path, buf, cap, len);
    fdo->store_lock.unlock();
    kick_watch_thread(fdo);
    return e;
  }
};

constexpr char kDeviceWatchToken[] = "xenbus-device";

void watch_token(std::uint32_t i, char* out) {
  const char prefix[] = "xenbus-w";
  std::size_t n = 0;
  for (; prefix[n] != '\0'; ++n) out[n] = prefix[n];
  char digits[12];
  std::size_t d = 0;
  do {
    digits[d++] = static_cast<char>('0' + i % 10);
    i /= 10;
  } while (i != 0);
  while (d > 0) out[n++] = digits[--d];
  out[n] = '\0';
}

// Token "xenbus-w<i>" to watch index; -1 for anything else.
int watch_index(const char* token) {
  const char prefix[] = "xenbus-w";
  std::size_t n = 0;
  for (; prefix[n] != '\0'; ++n)
    if (token[n] != prefix[n]) return -1;
  if (token[n] == '\0') return -1;
  std::uint32_t v = 0;
  for (; token[n] != '\0'; ++n) {
    if (token[n] < '0' || token[n] > '9' || v >= kMaxWatches) return -1;
    v = v * 10 + static_cast<std::uint32_t>(token[n] - '0');
  }
  return v < kMaxWatches ? static_cast<int>(v) : -1;
}

// The watch thread: takes queued watch events from the ring client, marks the watches they
// name, and calls the marked callbacks at PASSIVE_LEVEL, one at a time. A change under
// device/ asks the PnP manager to re-enumerate.
void watch_thread(PVOID ctx) {
  auto* fdo = static_cast<Fdo*>(ctx);
  fdo->watch_thread_object = PsGetCurrentThread();
  static char path[kWatchPathMax * 2];
  static char token[32];
  while (__atomic_load_n(&fdo->stopping, __ATOMIC_ACQUIRE) == 0) {
    LARGE_INTEGER t;
    t.QuadPart = -10 * 1000 * 100;
    KeWaitForSingleObject(&fdo->watch_kick, Executive, KernelMode, FALSE, &t);
    // Out of D0 the children are powered down too: their watch events wait in the ring
    // client's queue until the bus is back in D0.
    if (__atomic_load_n(&fdo->powered, __ATOMIC_ACQUIRE) == 0) continue;
    bool rescan = false;
    fdo->watch_lock.lock();
    fdo->store_lock.lock();
    while (fdo->store->read_watch(path, sizeof path, token, sizeof token, false)) {
      const int i = watch_index(token);
      if (i >= 0 && fdo->watches[i].used) fdo->watches[i].fire = true;
      bool device = true;
      for (std::size_t n = 0; kDeviceWatchToken[n] != '\0' || token[n] != '\0'; ++n)
        if (kDeviceWatchToken[n] != token[n]) device = false;
      if (device) rescan = true;
    }
    fdo->store_lock.unlock();
    // Callbacks run without the watch lock (they may watch and unwatch themselves);
    // running_watch tells an unwatch on another thread to wait for the one in progress.
    for (Watch& w : fdo->watches) {
      if (!w.used || !w.fire) continue;
      w.fire = false;
      PVIO_WATCH_CALLBACK* cb = w.callback;
      PVOID cb_ctx = w.context;
      __atomic_store_n(&fdo->running_watch, &w, __ATOMIC_RELEASE);
      fdo->watch_lock.unlock();
      cb(cb_ctx, w.path);
      fdo->watch_lock.lock();
      __atomic_store_n(&fdo->running_watch, static_cast<Watch*>(nullptr), __ATOMIC_RELEASE);
      KeSetEvent(&fdo->watch_idle, 0, FALSE);
    }
    fdo->watch_lock.unlock();
    if (rescan && fdo->started) {
      ++fdo->rescans;
      IoInvalidateDeviceRelations(fdo->pdo, BusRelations);
    }
  }
  KeSetEvent(&fdo->watch_thread_done, 0, FALSE);
  PsTerminateSystemThread(STATUS_SUCCESS);
}

// ---- START_DEVICE, in its steps ----

void grant_table_init(Fdo* fdo) {
  const std::uint32_t n = fdo->pages.nr_grant_entries;
  fdo->grant_next = static_cast<grant_ref_t*>(
      ExAllocatePoolWithTag(NonPagedPoolNx, n * sizeof(grant_ref_t), kPoolTag));
  KeInitializeSpinLock(&fdo->grant_lock);
  fdo->grant_free_head = kInvalidGrantRef;
  if (fdo->grant_next == nullptr) return;
  for (std::uint32_t r = n; r-- > gnttab::GNTTAB_NR_RESERVED_ENTRIES;) {
    fdo->grant_next[r] = fdo->grant_free_head;
    fdo->grant_free_head = r;
  }
}

// The INTx line from the translated resources, connected to the ISR; then Xen is told to
// raise it (HVM_PARAM_CALLBACK_IRQ type 1) with the PCI address of this device.
NTSTATUS connect_upcall(Fdo* fdo, PCM_RESOURCE_LIST translated) {
  const CM_PARTIAL_RESOURCE_DESCRIPTOR* irq = nullptr;
  if (translated != nullptr) {
    for (ULONG f = 0; f < translated->Count && irq == nullptr; ++f) {
      const CM_PARTIAL_RESOURCE_LIST& l = translated->List[f].PartialResourceList;
      for (ULONG i = 0; i < l.Count; ++i)
        if (l.PartialDescriptors[i].Type == CmResourceTypeInterrupt) {
          irq = &l.PartialDescriptors[i];
          break;
        }
    }
  }
  if (irq == nullptr) {
    log(DPFLTR_ERROR_LEVEL, "no interrupt resource: the platform device has no INTx line");
    return STATUS_DEVICE_NOT_READY;
  }
  KeInitializeDpc(&fdo->dpc, &upcall_dpc, fdo);
  const KIRQL level = static_cast<KIRQL>(irq->u.Interrupt.Level);
  NTSTATUS st = IoConnectInterrupt(
      &fdo->interrupt, &isr, fdo, nullptr, irq->u.Interrupt.Vector, level, level,
      (irq->Flags & CM_RESOURCE_INTERRUPT_LATCHED) ? Latched : LevelSensitive,
      irq->ShareDisposition == CmResourceShareShared, irq->u.Interrupt.Affinity, FALSE);
  if (!NT_SUCCESS(st)) return st;

  ULONG bus = 0, address = 0, got = 0;
  st = IoGetDeviceProperty(fdo->pdo, DevicePropertyBusNumber, sizeof bus, &bus, &got);
  if (NT_SUCCESS(st))
    st = IoGetDeviceProperty(fdo->pdo, DevicePropertyAddress, sizeof address, &address, &got);
  if (!NT_SUCCESS(st)) return st;
  // DevicePropertyAddress on PCI: device in the high word, function in the low word. The
  // platform device's interrupt pin is INTA (its config space says 1).
  fdo->callback_via = callback_via_pci_intx(0, static_cast<std::uint8_t>(bus),
                                            static_cast<std::uint8_t>(address >> 16),
                                            static_cast<std::uint8_t>(address), 0);
  if (hv_set_callback_via(fdo->callback_via) != 0) return STATUS_UNSUCCESSFUL;
  return STATUS_SUCCESS;
}

NTSTATUS connect_store(Fdo* fdo) {
  KeInitializeEvent(&fdo->store_event, SynchronizationEvent, FALSE);
  KeInitializeEvent(&fdo->watch_kick, SynchronizationEvent, FALSE);
  KeInitializeEvent(&fdo->watch_thread_done, NotificationEvent, FALSE);
  KeInitializeEvent(&fdo->watch_idle, SynchronizationEvent, FALSE);
  fdo->store_lock.init();
  fdo->watch_lock.init();
  void* mem = ExAllocatePoolWithTag(NonPagedPoolNx, sizeof(xs::GuestClient<8>), kPoolTag);
  if (mem == nullptr) return STATUS_INSUFFICIENT_RESOURCES;
  fdo->store = new (mem) xs::GuestClient<8>(
      fdo->pages.store, xs::GuestPlatform{&fdo->store_seam, &store_notify, &store_wait,
                                          &store_abandoned});
  {
    const KIRQL old = KeAcquireSpinLockRaiseToDpc(&fdo->port_lock);
    fdo->port_callback[fdo->pages.store_port] = &store_port_fired;
    fdo->port_context[fdo->pages.store_port] = fdo;
    KeReleaseSpinLock(&fdo->port_lock, old);
  }
  hv_evtchn_unmask(fdo->pages.store_port);

  char buf[16];
  std::size_t len = 0;
  fdo->store_lock.lock();
  if (fdo->store->read("domid", buf, sizeof buf - 1, &len) == xs::XsError::None) {
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < len && buf[i] >= '0' && buf[i] <= '9'; ++i) v = v * 10 + (buf[i] - '0');
    fdo->own_domid = static_cast<domid_t>(v);
  }
  const xs::XsError e = fdo->store->watch("device", kDeviceWatchToken);
  fdo->store_lock.unlock();
  if (e != xs::XsError::None) {
    log(DPFLTR_ERROR_LEVEL, "xenstore does not answer on the ring");
    return STATUS_DEVICE_NOT_READY;
  }
  const NTSTATUS st = PsCreateSystemThread(&fdo->watch_thread, THREAD_ALL_ACCESS, nullptr,
                                           nullptr, nullptr, &watch_thread, fdo);
  if (!NT_SUCCESS(st)) fdo->watch_thread = nullptr;
  return st;
}

void stop_bus(Fdo* fdo) {
  __atomic_store_n(&fdo->stopping, 1, __ATOMIC_RELEASE);
  if (fdo->watch_thread != nullptr) {
    KeSetEvent(&fdo->watch_kick, 0, FALSE);
    KeWaitForSingleObject(&fdo->watch_thread_done, Executive, KernelMode, FALSE, nullptr);
    ZwClose(fdo->watch_thread);
    fdo->watch_thread = nullptr;
  }
  if (fdo->callback_via != 0) hv_set_callback_via(0);
  if (fdo->interrupt != nullptr) {
    IoDisconnectInterrupt(fdo->interrupt);
    fdo->interrupt = nullptr;
    KeFlushQueuedDpcs();
  }
  if (fdo->store != nullptr) {
    fdo->store->~GuestClient();
    ExFreePoolWithTag(fdo->store, kPoolTag);
    fdo->store = nullptr;
  }
  if (fdo->grant_next != nullptr) {
    ExFreePoolWithTag(fdo->grant_next, kPoolTag);
    fdo->grant_next = nullptr;
  }
  if (fdo->pages.shared_info != nullptr) hv_disconnect();
  fdo->pages = XenPages{};
  fdo->started = false;
}

NTSTATUS start_bus(Fdo* fdo, PIRP irp) {
  NTSTATUS st = hv_connect(&fdo->pages);
  if (!NT_SUCCESS(st)) {
    log(DPFLTR_ERROR_LEVEL, "Xen not found or its pages could not be mapped");
    return st;
  }
  grant_table_init(fdo);
  if (fdo->grant_next == nullptr) return STATUS_INSUFFICIENT_RESOURCES;
  st = connect_upcall(fdo, IoGetCurrentIrpStackLocation(irp)->Parameters.StartDevice.AllocatedResourcesTranslated);
  if (NT_SUCCESS(st)) st = connect_store(fdo);
  if (!NT_SUCCESS(st)) return st;
  const UnplugOutcome u = hv_unplug_emulated_devices();
  DbgPrintEx(DPFLTR_IHVDRIVER_ID, DPFLTR_INFO_LEVEL, "xenbus: unplug mask %u (%s)\n",
             static_cast<unsigned>(u.mask), u.reason);
  fdo->started = true;
  return STATUS_SUCCESS;
}

// ---- PnP plumbing ----

NTSTATUS signal_completion(PDEVICE_OBJECT, PIRP, PVOID ctx) {
  KeSetEvent(static_cast<PKEVENT>(ctx), 0, FALSE);
  return STATUS_MORE_PROCESSING_REQUIRED;  // the IRP is ours again
}

// Sends the IRP down the stack and waits for the lower drivers to finish with it.
NTSTATUS forward_and_wait(Fdo* fdo, PIRP irp) {
  KEVENT done;
  KeInitializeEvent(&done, NotificationEvent, FALSE);
  IoCopyCurrentIrpStackLocationToNext(irp);
  IoSetCompletionRoutine(irp, &signal_completion, &done, TRUE, TRUE, TRUE);
  if (IofCallDriver(fdo->lower, irp) == STATUS_PENDING)
    KeWaitForSingleObject(&done, Executive, KernelMode, FALSE, nullptr);
  return irp->IoStatus.Status;
}

NTSTATUS pass_down(Fdo* fdo, PIRP irp) {
  IoSkipCurrentIrpStackLocation(irp);
  return IofCallDriver(fdo->lower, irp);
}

NTSTATUS complete(PIRP irp, NTSTATUS st, ULONG_PTR info = 0) {
  irp->IoStatus.Status = st;
  irp->IoStatus.Information = info;
  IoCompleteRequest(irp, IO_NO_INCREMENT);
  return st;
}

// BusRelations: re-read device/vbd and device/vif, create PDOs for new children, and report
// every present child (plus what lower filters reported). Children gone from xenstore are left
// out; the PnP manager then removes them.
NTSTATUS bus_relations(Fdo* fdo, PIRP irp) {
  static ChildList now;  // PnP IRPs for one device are serialised
  LockedStore ls{fdo};
  if (!enumerate(ls, now, xs::XsError::None, xs::XsError::NoEnt)) return pass_down(fdo, irp);
  fdo->child_lock.lock();
  for (std::uint32_t i = 0; i < fdo->nr_children; ++i)
    fdo->children[i]->present = now.contains(fdo->children[i]->child);
  for (std::uint32_t i = 0; i < now.count; ++i) {
    bool known = false;
    for (std::uint32_t j = 0; j < fdo->nr_children; ++j)
      known |= fdo->children[j]->child == now.items[i] && fdo->children[j]->present;
    if (known || fdo->nr_children == kMaxChildren) continue;
    Pdo* p = pdo_create(fdo, now.items[i]);
    if (p != nullptr) fdo->children[fdo->nr_children++] = p;
  }
  const auto* prev = reinterpret_cast<PDEVICE_RELATIONS>(irp->IoStatus.Information);
  const ULONG prev_count = prev != nullptr ? prev->Count : 0;
  ULONG present = 0;
  for (std::uint32_t i = 0; i < fdo->nr_children; ++i) present += fdo->children[i]->present;
  const SIZE_T bytes = offsetof(DEVICE_RELATIONS, Objects) +
                       sizeof(PDEVICE_OBJECT) * (prev_count + present + 1);
  auto* rel = static_cast<PDEVICE_RELATIONS>(ExAllocatePoolWithTag(NonPagedPoolNx, bytes, kPoolTag));
  if (rel == nullptr) {
    fdo->child_lock.unlock();
    return complete(irp, STATUS_INSUFFICIENT_RESOURCES);
  }
  rel->Count = 0;
  for (ULONG i = 0; i < prev_count; ++i) rel->Objects[rel->Count++] = prev->Objects[i];
  for (std::uint32_t i = 0; i < fdo->nr_children; ++i) {
    Pdo* p = fdo->children[i];
    if (!p->present) {
      p->reported_missing = true;
      continue;
    }
    ObfReferenceObject(p->self);  // the PnP manager dereferences what it is given
    rel->Objects[rel->Count++] = p->self;
  }
  fdo->child_lock.unlock();
  if (prev != nullptr) ExFreePoolWithTag(const_cast<PDEVICE_RELATIONS>(prev), 0);
  irp->IoStatus.Status = STATUS_SUCCESS;
  irp->IoStatus.Information = reinterpret_cast<ULONG_PTR>(rel);
  return pass_down(fdo, irp);
}

}  // namespace

// Leaving D0: once the flag is cleared under the interrupt's lock no ISR scans shared_info
// any more; then Xen stops raising the INTx line (a level-triggered line nobody claims would
// storm) and the DPC's last run ends. Events arriving now stay pending in shared_info.
void fdo_power_down(Fdo* fdo) {
  if (!fdo->started || fdo->interrupt == nullptr) return;
  KeSynchronizeExecution(fdo->interrupt, &mark_powered_down, fdo);
  hv_set_callback_via(0);
  KeFlushQueuedDpcs();
}

// Back in D0 (the lower drivers have powered the device up): the route again, then what
// arrived meanwhile, and the watch thread catches up.
void fdo_power_up(Fdo* fdo) {
  if (!fdo->started || fdo->interrupt == nullptr) {
    __atomic_store_n(&fdo->powered, 1, __ATOMIC_RELEASE);
    return;
  }
  hv_set_callback_via(fdo->callback_via);
  KeSynchronizeExecution(fdo->interrupt, &mark_powered_up_and_scan, fdo);
  kick_watch_thread(fdo);
}

NTSTATUS fdo_pnp(Fdo* fdo, PIRP irp) {
  PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
  switch (sl->MinorFunction) {
    case IRP_MN_START_DEVICE: {
      // Lower drivers (PCI) start first; the resources are theirs to grant.
      NTSTATUS st = forward_and_wait(fdo, irp);
      if (NT_SUCCESS(st)) {
        st = start_bus(fdo, irp);
        if (!NT_SUCCESS(st)) stop_bus(fdo);
      }
      return complete(irp, st, irp->IoStatus.Information);
    }
    case IRP_MN_QUERY_DEVICE_RELATIONS:
      if (sl->Parameters.QueryDeviceRelations.Type == BusRelations && fdo->started)
        return bus_relations(fdo, irp);
      return pass_down(fdo, irp);
    case IRP_MN_SURPRISE_REMOVAL:
      irp->IoStatus.Status = STATUS_SUCCESS;
      return pass_down(fdo, irp);
    case IRP_MN_REMOVE_DEVICE: {
      // Children still present are removed with their parent (a PDO not reported missing
      // lives until the bus goes).
      fdo->child_lock.lock();
      for (std::uint32_t i = 0; i < fdo->nr_children; ++i) pdo_destroy(fdo->children[i]);
      fdo->nr_children = 0;
      fdo->child_lock.unlock();
      stop_bus(fdo);
      irp->IoStatus.Status = STATUS_SUCCESS;
      const NTSTATUS st = pass_down(fdo, irp);
      IoDetachDevice(fdo->lower);
      PDEVICE_OBJECT self = fdo->self;
      fdo->~Fdo();
      IoDeleteDevice(self);
      return st;
    }
    default:
      return pass_down(fdo, irp);
  }
}

// ---- services for children ----

LONG bus_evtchn_alloc_unbound(Fdo* fdo, domid_t remote, PVIO_EVTCHN_CALLBACK* cb, PVOID ctx,
                              evtchn_port_t* port) {
  evtchn_port_t p = 0;
  const long rc = hv_evtchn_alloc_unbound(remote, &p);
  if (rc != 0) return static_cast<LONG>(rc);
  if (p >= kMaxPorts) {
    hv_evtchn_close(p);
    return -kXenENOSPC;
  }
  const KIRQL old = KeAcquireSpinLockRaiseToDpc(&fdo->port_lock);
  fdo->port_callback[p] = cb;
  fdo->port_context[p] = ctx;
  KeReleaseSpinLock(&fdo->port_lock, old);
  hv_evtchn_unmask(p);
  *port = p;
  return 0;
}

void bus_evtchn_close(Fdo* fdo, evtchn_port_t port) {
  if (port >= kMaxPorts) return;
  hv_evtchn_close(port);
  const KIRQL old = KeAcquireSpinLockRaiseToDpc(&fdo->port_lock);
  fdo->port_callback[port] = nullptr;
  fdo->port_context[port] = nullptr;
  KeReleaseSpinLock(&fdo->port_lock, old);
  // A DPC already past the lookup may still call the old callback once: flush it.
  KeFlushQueuedDpcs();
}

// grant_table.h: write frame and domid, then (after a write barrier) flags, so the backend
// never sees a permitted entry with stale contents.
LONG bus_grant_access(Fdo* fdo, domid_t domid, std::uint64_t gfn, bool ro, grant_ref_t* ref) {
  const KIRQL old = KeAcquireSpinLockRaiseToDpc(&fdo->grant_lock);
  const grant_ref_t r = fdo->grant_free_head;
  if (r != kInvalidGrantRef) fdo->grant_free_head = fdo->grant_next[r];
  KeReleaseSpinLock(&fdo->grant_lock, old);
  if (r == kInvalidGrantRef) return -kXenENOSPC;
  gnttab::grant_entry_v1& e = fdo->pages.grant_entries[r];
  e.domid = domid;
  e.frame = static_cast<std::uint32_t>(gfn);
  __atomic_store_n(&e.flags,
                   static_cast<std::uint16_t>(gnttab::GTF_permit_access | (ro ? gnttab::GTF_readonly : 0)),
                   __ATOMIC_RELEASE);
  *ref = r;
  return 0;
}

// The entry can be revoked only while the backend has it neither mapped for reading nor for
// writing: a compare-exchange of the flags to 0 against exactly what we wrote.
bool bus_end_access(Fdo* fdo, grant_ref_t ref) {
  if (ref < gnttab::GNTTAB_NR_RESERVED_ENTRIES || ref >= fdo->pages.nr_grant_entries) return false;
  gnttab::grant_entry_v1& e = fdo->pages.grant_entries[ref];
  std::uint16_t flags = __atomic_load_n(&e.flags, __ATOMIC_ACQUIRE);
  do {
    if (flags & (gnttab::GTF_reading | gnttab::GTF_writing)) return false;
  } while (!__atomic_compare_exchange_n(&e.flags, &flags, std::uint16_t{0}, false,
                                        __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
  const KIRQL old = KeAcquireSpinLockRaiseToDpc(&fdo->grant_lock);
  fdo->grant_next[ref] = fdo->grant_free_head;
  fdo->grant_free_head = ref;
  KeReleaseSpinLock(&fdo->grant_lock, old);
  return true;
}

LONG bus_xs_read(Fdo* fdo, PCSTR path, PCHAR buf, ULONG cap, PULONG len) {
  if (cap == 0) return -kXenENOSPC;
  std::size_t n = 0;
  fdo->store_lock.lock();
  const xs::XsError e = fdo->store->read(path, buf, cap - 1, &n);
  fdo->store_lock.unlock();
  kick_watch_thread(fdo);
  if (e == xs::XsError::TooBig) return -kXenENOSPC;
  if (e != xs::XsError::None) return errno_of(e);
  buf[n] = '\0';
  *len = static_cast<ULONG>(n);
  return 0;
}

LONG bus_xs_write(Fdo* fdo, PCSTR path, PCSTR value) {
  fdo->store_lock.lock();
  const xs::XsError e = fdo->store->write(path, value, __builtin_strlen(value));
  fdo->store_lock.unlock();
  kick_watch_thread(fdo);
  return errno_of(e);
}

LONG bus_xs_remove(Fdo* fdo, PCSTR path) {
  fdo->store_lock.lock();
  const xs::XsError e = fdo->store->rm(path);
  fdo->store_lock.unlock();
  kick_watch_thread(fdo);
  return errno_of(e);
}

LONG bus_xs_watch(Fdo* fdo, PCSTR path, PVIO_WATCH_CALLBACK* cb, PVOID ctx, PVOID* handle) {
  const std::size_t n = __builtin_strlen(path);
  if (n >= kWatchPathMax) return -kXenENAMETOOLONG;
  fdo->watch_lock.lock();
  std::uint32_t i = 0;
  while (i < kMaxWatches && fdo->watches[i].used) ++i;
  if (i == kMaxWatches) {
    fdo->watch_lock.unlock();
    return -kXenENOSPC;
  }
  Watch& w = fdo->watches[i];
  __builtin_memcpy(w.path, path, n + 1);
  w.callback = cb;
  w.context = ctx;
  w.fire = false;
  w.used = true;
  char token[24];
  watch_token(i, token);
  fdo->store_lock.lock();
  const xs::XsError e = fdo->store->watch(path, token);
  fdo->store_lock.unlock();
  if (e != xs::XsError::None) w.used = false;
  fdo->watch_lock.unlock();
  kick_watch_thread(fdo);
  if (e != xs::XsError::None) return errno_of(e);
  *handle = &w;
  return 0;
}

// Waits for the watch's callback if it is running on the watch thread (unless called from
// that callback), so after this returns the callback is never called again.
void bus_xs_unwatch(Fdo* fdo, PVOID handle) {
  auto* w = static_cast<Watch*>(handle);
  const std::uint32_t i = static_cast<std::uint32_t>(w - fdo->watches);
  if (i >= kMaxWatches) return;
  fdo->watch_lock.lock();
  if (w->used) {
    char token[24];
    watch_token(i, token);
    fdo->store_lock.lock();
    fdo->store->unwatch(w->path, token);
    fdo->store_lock.unlock();
    w->used = false;
    w->fire = false;
  }
  const bool on_watch_thread = PsGetCurrentThread() == fdo->watch_thread_object;
  while (!on_watch_thread && __atomic_load_n(&fdo->running_watch, __ATOMIC_ACQUIRE) == w) {
    fdo->watch_lock.unlock();
    KeWaitForSingleObject(&fdo->watch_idle, Executive, KernelMode, FALSE, nullptr);
    fdo->watch_lock.lock();
  }
  fdo->watch_lock.unlock();
}

}  // namespace pvio::windows::xenbus
