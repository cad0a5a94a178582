// ntoskrnl for the host: IRQLs, spin locks, events, pool, contiguous memory over a pvio
// domain's RAM, IRPs, debug output. See kernel.h.
#include "kernel.h"

#include <sched.h>

#include <chrono>
#include <atomic>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <algorithm>
#include <set>
#include <deque>
#include <thread>

#include <pthread.h>

#include "pvio/domain/domain.h"

namespace pvio::windows::test {

namespace {
thread_local KIRQL t_irql = PASSIVE_LEVEL;

std::mutex g_violation_mu;
std::vector<std::string> g_violations;

// Events: state lives in the caller's KEVENT (Header.SignalState; Header.Lock holds the
// EVENT_TYPE); waiters sleep on one environment-wide condition variable.
std::mutex g_event_mu;
std::condition_variable g_event_cv;

std::mutex g_mem_mu;
domain::Domain* g_dom = nullptr;
std::map<std::uint64_t, std::vector<std::uint64_t>> g_free_runs;  // pages -> gfns
std::map<void*, std::uint64_t> g_contiguous;                       // va -> pages
std::atomic<std::size_t> g_allocation_calls{0};

std::mutex g_dev_mu;
struct Device {
  IrpDispatch dispatch;  // for create_device(); IoCreateDevice's go through their driver
  bool driver_owned = false;
  bool deleted = false;
  long refs = 0;
  unsigned bus_invalidations = 0;
  std::map<int, ULONG> properties;
  ULONG power_state[2] = {0, 0};  // by POWER_STATE_TYPE, as set with PoSetPowerState
};
std::map<PDEVICE_OBJECT, std::shared_ptr<Device>> g_devices;
std::set<PIRP> g_live_irps;
std::set<PIRP> g_dispatched_irps;  // live IRPs a driver has received (IofCallDriver)
// Completed IRPs are kept a while before they are freed, so a driver that completes or touches
// one again is reported by the checks (and by the sanitizers' own rules on what it then reads)
// instead of reaching freed memory; the oldest goes when the quarantine is full. Never
// destroyed, so the IRPs still in it at exit stay reachable (not leaks).
std::deque<PIRP>& g_completed_irps = *new std::deque<PIRP>;
constexpr std::size_t kIrpQuarantine = 256;

void free_driver_device(PDEVICE_OBJECT dev) {  // g_dev_mu held
  g_devices.erase(dev);
  std::free(dev);
}

// Interrupts: one record per IoConnectInterrupt; `mu` is the interrupt's spin lock, held
// while its service routine runs (so IoDisconnectInterrupt waits for a running ISR).
struct Interrupt {
  KSERVICE_ROUTINE* isr;
  PVOID ctx;
  ULONG vector;
  KIRQL irql;
  std::mutex mu;
};
std::mutex g_irq_mu;
std::vector<Interrupt*> g_interrupts;

// DPCs: one queue, drained by one thread at DISPATCH_LEVEL (a one-CPU DPC queue).
struct DpcQueue {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<PRKDPC> queue;
  bool running = false;
  bool started = false;
};
DpcQueue& dpcs() {
  static auto* q = new DpcQueue;  // lives as long as the process (its thread does)
  return *q;
}
void dpc_thread() {
  DpcQueue& q = dpcs();
  std::unique_lock lk(q.mu);
  for (;;) {
    q.cv.wait(lk, [&] { return !q.queue.empty(); });
    PRKDPC d = q.queue.front();
    q.queue.pop_front();
    d->DpcData = nullptr;  // dequeued: may be inserted again
    q.running = true;
    lk.unlock();
    {
      AtIrql at(DISPATCH_LEVEL);
      d->DeferredRoutine(d, d->DeferredContext, d->SystemArgument1, d->SystemArgument2);
      if (current_irql() != DISPATCH_LEVEL) violation("a DPC returned at an IRQL other than DISPATCH_LEVEL");
    }
    lk.lock();
    q.running = false;
    q.cv.notify_all();
  }
}

std::atomic<std::size_t> g_system_threads{0};
std::mutex g_thread_mu;
std::set<void*> g_thread_handles;
thread_local char t_thread_identity;

constexpr std::uint64_t kPage = 4096;
}  // namespace

void violation(const std::string& what) {
  std::fprintf(stderr, "WINDOWS KERNEL RULE BROKEN: %s\n", what.c_str());
  std::lock_guard lk(g_violation_mu);
  g_violations.push_back(what);
}
std::vector<std::string> violations() {
  std::lock_guard lk(g_violation_mu);
  return g_violations;
}
void clear_violations() {
  std::lock_guard lk(g_violation_mu);
  g_violations.clear();
}
void require_irql(KIRQL max, const char* routine) {
  if (t_irql > max)
    violation(std::string(routine) + " called at IRQL " + std::to_string(t_irql) +
              " (allowed: <= " + std::to_string(max) + ")");
}

AtIrql::AtIrql(KIRQL level) : old_(t_irql) { t_irql = level; }
AtIrql::~AtIrql() { t_irql = old_; }
KIRQL current_irql() { return t_irql; }
void set_irql(KIRQL level) { t_irql = level; }

void set_guest_memory(domain::Domain* dom) {
  std::lock_guard lk(g_mem_mu);
  g_dom = dom;
  g_free_runs.clear();
  g_contiguous.clear();
}
std::size_t allocation_calls() { return g_allocation_calls.load(); }
void count_allocation() { ++g_allocation_calls; }
std::size_t contiguous_allocations() {
  std::lock_guard lk(g_mem_mu);
  return g_contiguous.size();
}

PDEVICE_OBJECT create_device(IrpDispatch dispatch) {
  // An opaque object: drivers only pass device objects back to the kernel.
  auto* dev = reinterpret_cast<PDEVICE_OBJECT>(new std::uint8_t[0x150]());
  dev->StackSize = 1;  // the bottom of a stack: one location for itself
  std::lock_guard lk(g_dev_mu);
  g_devices[dev] = std::make_shared<Device>();
  g_devices[dev]->dispatch = std::move(dispatch);
  return dev;
}
void delete_device(PDEVICE_OBJECT dev) {
  {
    std::lock_guard lk(g_dev_mu);
    g_devices.erase(dev);
  }
  delete[] reinterpret_cast<std::uint8_t*>(dev);
}

void complete_irp(PIRP irp, NTSTATUS status, ULONG_PTR information) {
  irp->IoStatus.Status = status;
  irp->IoStatus.Information = information;
  IofCompleteRequest(irp, 0);
}

PDEVICE_OBJECT attached_top(PDEVICE_OBJECT dev) {
  while (dev->AttachedDevice != nullptr) dev = dev->AttachedDevice;
  return dev;
}

PnpResult send_pnp(PDEVICE_OBJECT dev, UCHAR minor,
                   const std::function<void(PIO_STACK_LOCATION)>& setup) {
  AtIrql passive(PASSIVE_LEVEL);
  PDEVICE_OBJECT top = attached_top(dev);
  KEVENT done;
  KeInitializeEvent(&done, NotificationEvent, FALSE);
  IO_STATUS_BLOCK iosb{};
  PIRP irp = IoBuildSynchronousFsdRequest(IRP_MJ_PNP, top, nullptr, 0, nullptr, &done, &iosb);
  irp->IoStatus.Status = STATUS_NOT_SUPPORTED;  // the PnP manager's initial status
  PIO_STACK_LOCATION sl = IoGetNextIrpStackLocation(irp);
  sl->MinorFunction = minor;
  if (setup) setup(sl);
  if (IofCallDriver(top, irp) == STATUS_PENDING)
    KeWaitForSingleObject(&done, Executive, KernelMode, FALSE, nullptr);
  return PnpResult{iosb.Status, iosb.Information};
}

void set_device_property(PDEVICE_OBJECT dev, DEVICE_REGISTRY_PROPERTY prop, ULONG value) {
  std::lock_guard lk(g_dev_mu);
  auto it = g_devices.find(dev);
  if (it != g_devices.end()) it->second->properties[prop] = value;
}

unsigned bus_invalidations(PDEVICE_OBJECT dev) {
  std::lock_guard lk(g_dev_mu);
  auto it = g_devices.find(dev);
  return it == g_devices.end() ? 0 : it->second->bus_invalidations;
}

std::size_t live_driver_devices() {
  std::lock_guard lk(g_dev_mu);
  std::size_t n = 0;
  for (const auto& [d, rec] : g_devices) n += rec->driver_owned;
  return n;
}

long object_references(PDEVICE_OBJECT dev) {
  std::lock_guard lk(g_dev_mu);
  auto it = g_devices.find(dev);
  return it == g_devices.end() ? 0 : it->second->refs;
}

bool raise_interrupt(ULONG vector) {
  std::vector<Interrupt*> on_line;
  {
    std::lock_guard lk(g_irq_mu);
    for (Interrupt* i : g_interrupts)
      if (i->vector == vector) on_line.push_back(i);
  }
  bool claimed = false;
  for (Interrupt* i : on_line) {
    std::lock_guard lk(i->mu);
    AtIrql dirql(i->irql);
    claimed |= i->isr(reinterpret_cast<PKINTERRUPT>(i), i->ctx) != 0;
    if (current_irql() != i->irql) violation("an ISR returned at another IRQL");
    if (claimed) break;
  }
  return claimed;
}

std::size_t connected_interrupts() {
  std::lock_guard lk(g_irq_mu);
  return g_interrupts.size();
}

std::size_t system_threads() { return g_system_threads.load(); }

namespace {
std::atomic<std::size_t> g_power_requests{0};

// An IRP_MJ_POWER IRP for `top`'s stack: `extra` locations above it for the sender's own use.
PIRP new_power_irp(PDEVICE_OBJECT top, int stack, UCHAR minor, POWER_STATE_TYPE type, ULONG state,
                   PKEVENT event, PIO_STATUS_BLOCK iosb) {
  const std::size_t bytes = sizeof(IRP) + stack * sizeof(IO_STACK_LOCATION);
  auto* irp = static_cast<PIRP>(std::calloc(1, bytes));
  irp->Size = static_cast<USHORT>(bytes);
  irp->StackCount = static_cast<CHAR>(stack);
  irp->CurrentLocation = static_cast<CHAR>(stack + 1);
  irp->Tail.Overlay.CurrentStackLocation = reinterpret_cast<PIO_STACK_LOCATION>(irp + 1) + stack;
  irp->UserEvent = event;
  irp->UserIosb = iosb;
  PIO_STACK_LOCATION sl = IoGetNextIrpStackLocation(irp);
  sl->MajorFunction = IRP_MJ_POWER;
  sl->MinorFunction = minor;
  sl->DeviceObject = top;
  sl->Parameters.Power.Type = type;
  sl->Parameters.Power.State.DeviceState = static_cast<DEVICE_POWER_STATE>(state);
  sl->Parameters.Power.ShutdownType = state == PowerSystemWorking || type == DevicePowerState
                                          ? PowerActionNone
                                          : PowerActionSleep;
  std::lock_guard lk(g_dev_mu);
  g_live_irps.insert(irp);
  return irp;
}
}  // namespace

NTSTATUS send_power(PDEVICE_OBJECT dev, UCHAR minor, POWER_STATE_TYPE type, ULONG state,
                    NTSTATUS initial) {
  AtIrql passive(PASSIVE_LEVEL);
  PDEVICE_OBJECT top = attached_top(dev);
  KEVENT done;
  KeInitializeEvent(&done, NotificationEvent, FALSE);
  IO_STATUS_BLOCK iosb{};
  // Exactly one location per driver in the stack: a PDO that passes the IRP on has none left.
  PIRP irp = new_power_irp(top, top->StackSize > 0 ? top->StackSize : 1, minor, type, state, &done, &iosb);
  irp->IoStatus.Status = initial;
  PoCallDriver(top, irp);
  // Pending or not, the status is final once the IRP has completed.
  KeWaitForSingleObject(&done, Executive, KernelMode, FALSE, nullptr);
  return iosb.Status;
}

DEVICE_POWER_STATE device_power_state(PDEVICE_OBJECT dev) {
  std::lock_guard lk(g_dev_mu);
  auto it = g_devices.find(dev);
  return it == g_devices.end() ? PowerDeviceUnspecified
                               : static_cast<DEVICE_POWER_STATE>(it->second->power_state[DevicePowerState]);
}

std::size_t power_requests_in_flight() { return g_power_requests.load(); }

}  // namespace pvio::windows::test

using namespace pvio::windows::test;

extern "C" {

KIRQL KeGetCurrentIrql() { return current_irql(); }

KIRQL KeAcquireSpinLockRaiseToDpc(PKSPIN_LOCK lock) {
  require_irql(DISPATCH_LEVEL, "KeAcquireSpinLockRaiseToDpc");
  const KIRQL old = current_irql();
  ULONG_PTR expected = 0;
  while (!__atomic_compare_exchange_n(lock, &expected, 1, false, __ATOMIC_ACQUIRE,
                                      __ATOMIC_RELAXED)) {
    expected = 0;
    sched_yield();
  }
  set_irql(DISPATCH_LEVEL);
  return old;
}

VOID KeReleaseSpinLock(PKSPIN_LOCK lock, KIRQL new_irql) {
  if (current_irql() != DISPATCH_LEVEL) violation("KeReleaseSpinLock below DISPATCH_LEVEL");
  if (__atomic_exchange_n(lock, 0, __ATOMIC_RELEASE) == 0)
    violation("KeReleaseSpinLock of a lock that is not held");
  set_irql(new_irql);
}

VOID KeInitializeEvent(PRKEVENT ev, EVENT_TYPE type, BOOLEAN state) {
  std::lock_guard lk(g_event_mu);
  ev->Header.Lock = type;
  ev->Header.SignalState = state ? 1 : 0;
  ev->Header.WaitListHead.Flink = ev->Header.WaitListHead.Blink = &ev->Header.WaitListHead;
}

LONG KeSetEvent(PRKEVENT ev, LONG, BOOLEAN wait) {
  require_irql(DISPATCH_LEVEL, "KeSetEvent");
  if (wait) require_irql(APC_LEVEL, "KeSetEvent(Wait=TRUE)");
  std::lock_guard lk(g_event_mu);
  const LONG prev = ev->Header.SignalState;
  ev->Header.SignalState = 1;
  g_event_cv.notify_all();
  return prev;
}

VOID KeClearEvent(PRKEVENT ev) {
  std::lock_guard lk(g_event_mu);
  ev->Header.SignalState = 0;
}

NTSTATUS KeWaitForSingleObject(PVOID object, KWAIT_REASON, KPROCESSOR_MODE, BOOLEAN,
                               PLARGE_INTEGER timeout) {
  // A zero timeout is a poll, allowed up to DISPATCH_LEVEL; any real wait needs <= APC_LEVEL.
  const bool poll = timeout != nullptr && timeout->QuadPart == 0;
  require_irql(poll ? DISPATCH_LEVEL : APC_LEVEL, "KeWaitForSingleObject");
  auto* ev = static_cast<PRKEVENT>(object);
  std::unique_lock lk(g_event_mu);
  auto ready = [&] { return ev->Header.SignalState != 0; };
  bool ok;
  if (timeout == nullptr) {
    g_event_cv.wait(lk, ready);
    ok = true;
  } else if (timeout->QuadPart <= 0) {  // relative; zero is the poll ("returns at once")
    const auto d = std::chrono::microseconds(-timeout->QuadPart / 10);
    ok = g_event_cv.wait_for(lk, d, ready);
  } else {
    violation("KeWaitForSingleObject with an absolute timeout (not used by the drivers)");
    ok = ready();
  }
  if (!ok) return STATUS_TIMEOUT;
  if (ev->Header.Lock == SynchronizationEvent) ev->Header.SignalState = 0;  // auto-reset
  return STATUS_SUCCESS;
}

PVOID ExAllocatePoolWithTag(POOL_TYPE type, SIZE_T bytes, ULONG) {
  if (type != NonPagedPool && type != NonPagedPoolNx) {
    violation("ExAllocatePoolWithTag: only non-paged pool is modelled");
    return nullptr;
  }
  require_irql(DISPATCH_LEVEL, "ExAllocatePoolWithTag(NonPagedPool)");
  ++pvio::windows::test::g_allocation_calls;
  return std::aligned_alloc(16, (bytes + 15) & ~SIZE_T{15});
}

VOID ExFreePoolWithTag(PVOID p, ULONG) {
  require_irql(DISPATCH_LEVEL, "ExFreePoolWithTag");
  std::free(p);
}

PVOID MmAllocateContiguousMemorySpecifyCache(SIZE_T bytes, PHYSICAL_ADDRESS, PHYSICAL_ADDRESS,
                                             PHYSICAL_ADDRESS, MEMORY_CACHING_TYPE) {
  require_irql(PASSIVE_LEVEL, "MmAllocateContiguousMemorySpecifyCache");
  ++pvio::windows::test::g_allocation_calls;
  std::lock_guard lk(g_mem_mu);
  if (g_dom == nullptr || bytes == 0) return nullptr;
  const std::uint64_t pages = (bytes + kPage - 1) / kPage;
  std::uint64_t gfn = 0;
  auto& runs = g_free_runs[pages];
  if (!runs.empty()) {
    gfn = runs.back();
    runs.pop_back();
  } else if (g_dom->alloc_pages(pages, &gfn) != 0) {
    return nullptr;
  }
  void* va = g_dom->page(gfn);
  // Contiguous in guest-physical and in the kernel's view: the domain's RAM is one mapping.
  if (va == nullptr || g_dom->page(gfn + pages - 1) != static_cast<std::uint8_t*>(va) + (pages - 1) * kPage)
    return nullptr;
  g_contiguous[va] = pages;
  return va;
}

VOID MmFreeContiguousMemory(PVOID va) {
  require_irql(PASSIVE_LEVEL, "MmFreeContiguousMemory");
  std::lock_guard lk(g_mem_mu);
  auto it = g_contiguous.find(va);
  if (it == g_contiguous.end()) {
    violation("MmFreeContiguousMemory of memory it did not allocate");
    return;
  }
  const std::uint64_t gfn =
      static_cast<std::uint64_t>(static_cast<std::uint8_t*>(va) - g_dom->page(0)) / kPage;
  g_free_runs[it->second].push_back(gfn);
  g_contiguous.erase(it);
}

PHYSICAL_ADDRESS MmGetPhysicalAddress(PVOID va) {
  PHYSICAL_ADDRESS pa;
  pa.QuadPart = 0;
  std::lock_guard lk(g_mem_mu);
  if (g_dom == nullptr) return pa;
  const auto* base = g_dom->page(0);
  const auto* p = static_cast<const std::uint8_t*>(va);
  if (p < base || p >= base + g_dom->memory_bytes()) {
    violation("MmGetPhysicalAddress of an address outside guest RAM");
    return pa;
  }
  pa.QuadPart = p - base;
  return pa;
}

PIRP IoBuildSynchronousFsdRequest(ULONG major, PDEVICE_OBJECT dev, PVOID, ULONG, PLARGE_INTEGER,
                                  PKEVENT event, PIO_STATUS_BLOCK iosb) {
  require_irql(PASSIVE_LEVEL, "IoBuildSynchronousFsdRequest");
  // One location per device in the target's stack (StackSize), at least two as before.
  const int kStack = dev != nullptr && dev->StackSize > 2 ? dev->StackSize : 2;
  const std::size_t bytes = sizeof(IRP) + kStack * sizeof(IO_STACK_LOCATION);
  auto* irp = static_cast<PIRP>(std::calloc(1, bytes));
  irp->Size = static_cast<USHORT>(bytes);
  irp->StackCount = kStack;
  irp->CurrentLocation = kStack + 1;
  // The stack locations follow the IRP; "current" starts one past the last (wdm.h).
  irp->Tail.Overlay.CurrentStackLocation = reinterpret_cast<PIO_STACK_LOCATION>(irp + 1) + kStack;
  irp->UserEvent = event;
  irp->UserIosb = iosb;
  IoGetNextIrpStackLocation(irp)->MajorFunction = static_cast<UCHAR>(major);
  IoGetNextIrpStackLocation(irp)->DeviceObject = dev;
  std::lock_guard lk(pvio::windows::test::g_dev_mu);
  pvio::windows::test::g_live_irps.insert(irp);
  return irp;
}

NTSTATUS IofCallDriver(PDEVICE_OBJECT dev, PIRP irp) {
  PIO_STACK_LOCATION next = IoGetNextIrpStackLocation(irp);
  if (next->MajorFunction == IRP_MJ_PNP) require_irql(PASSIVE_LEVEL, "IofCallDriver(IRP_MJ_PNP)");
  else require_irql(DISPATCH_LEVEL, "IofCallDriver");
  std::shared_ptr<Device> d;
  {
    std::lock_guard lk(pvio::windows::test::g_dev_mu);
    auto it = pvio::windows::test::g_devices.find(dev);
    if (it != pvio::windows::test::g_devices.end()) d = it->second;
    if (pvio::windows::test::g_live_irps.count(irp) == 0)
      violation("IofCallDriver with an IRP that is not outstanding");
  }
  if (irp->CurrentLocation <= 1) {
    violation("IofCallDriver: no stack location left");
    return STATUS_INVALID_PARAMETER;
  }
  {
    std::lock_guard lk(pvio::windows::test::g_dev_mu);
    pvio::windows::test::g_dispatched_irps.insert(irp);
  }
  --irp->CurrentLocation;
  --irp->Tail.Overlay.CurrentStackLocation;
  next->DeviceObject = dev;
  if (!d) {
    violation("IofCallDriver to an unknown device object");
    complete_irp(irp, STATUS_NO_SUCH_DEVICE);
    return STATUS_NO_SUCH_DEVICE;
  }
  if (d->deleted) violation("IofCallDriver to a deleted device object");
  if (d->driver_owned) {
    PDRIVER_DISPATCH fn = dev->DriverObject->MajorFunction[next->MajorFunction];
    if (fn == nullptr) {
      violation("IofCallDriver: the driver has no dispatch routine for this major function");
      complete_irp(irp, STATUS_INVALID_PARAMETER);
      return STATUS_INVALID_PARAMETER;
    }
    return fn(dev, irp);
  }
  return d->dispatch(dev, irp);
}

// The I/O manager's completion (IopfCompleteRequest): each stack location's completion routine,
// from the completing driver's up, with the device object of the driver that set it; one that
// returns STATUS_MORE_PROCESSING_REQUIRED takes the IRP back (it completes it again later).
VOID IofCompleteRequest(PIRP irp, CCHAR) {
  using namespace pvio::windows::test;
  require_irql(DISPATCH_LEVEL, "IoCompleteRequest");
  {
    std::lock_guard lk(g_dev_mu);
    if (g_live_irps.count(irp) == 0) {
      violation("IoCompleteRequest on an IRP that is not outstanding (completed twice?)");
      return;
    }
  }
  if (irp->IoStatus.Status == STATUS_PENDING) violation("IoCompleteRequest with STATUS_PENDING");
  while (irp->CurrentLocation <= irp->StackCount) {
    PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
    PIO_COMPLETION_ROUTINE routine = sl->CompletionRoutine;
    const UCHAR control = sl->Control;
    PVOID ctx = sl->Context;
    ++irp->CurrentLocation;
    ++irp->Tail.Overlay.CurrentStackLocation;
    const bool ok = NT_SUCCESS(irp->IoStatus.Status);
    if (routine == nullptr || !(control & (ok ? SL_INVOKE_ON_SUCCESS : SL_INVOKE_ON_ERROR))) continue;
    PDEVICE_OBJECT upper = irp->CurrentLocation <= irp->StackCount
                               ? IoGetCurrentIrpStackLocation(irp)->DeviceObject
                               : nullptr;
    if (routine(upper, irp, ctx) == STATUS_MORE_PROCESSING_REQUIRED) return;
  }
  {
    std::lock_guard lk(g_dev_mu);
    g_live_irps.erase(irp);
    g_dispatched_irps.erase(irp);
  }
  if (irp->UserIosb != nullptr) *irp->UserIosb = irp->IoStatus;
  PKEVENT ev = irp->UserEvent;
  PIRP oldest = nullptr;
  {
    std::lock_guard lk(g_dev_mu);
    g_completed_irps.push_back(irp);
    if (g_completed_irps.size() > kIrpQuarantine) {
      oldest = g_completed_irps.front();
      g_completed_irps.pop_front();
    }
  }
  std::free(oldest);
  if (ev != nullptr) KeSetEvent(ev, 0, FALSE);
}

// Power IRPs travel like any other; the power manager's rules on top: only power IRPs, and
// never from a PDO (nothing is below it: it must complete what it gets).
NTSTATUS PoCallDriver(PDEVICE_OBJECT dev, PIRP irp) {
  using namespace pvio::windows::test;
  require_irql(DISPATCH_LEVEL, "PoCallDriver");
  if (IoGetNextIrpStackLocation(irp)->MajorFunction != IRP_MJ_POWER)
    violation("PoCallDriver with an IRP that is not IRP_MJ_POWER");
  bool from_driver;
  {
    std::lock_guard lk(g_dev_mu);
    from_driver = g_dispatched_irps.count(irp) != 0;
  }
  // The caller's location, skipped or copied, is the next one: its DeviceObject is the caller.
  PDEVICE_OBJECT caller = from_driver ? IoGetNextIrpStackLocation(irp)->DeviceObject : nullptr;
  if (caller != nullptr && (caller->Flags & DO_BUS_ENUMERATED_DEVICE)) {
    violation("a PDO passed a power IRP down (nothing is below a PDO: it completes it)");
    complete_irp(irp, STATUS_INVALID_PARAMETER);
    return STATUS_INVALID_PARAMETER;
  }
  return IofCallDriver(dev, irp);
}

// The new state must be the one an outstanding SET_POWER IRP asks of this device.
POWER_STATE PoSetPowerState(PDEVICE_OBJECT dev, POWER_STATE_TYPE type, POWER_STATE state) {
  using namespace pvio::windows::test;
  require_irql(DISPATCH_LEVEL, "PoSetPowerState");
  POWER_STATE prev;
  prev.DeviceState = PowerDeviceUnspecified;
  std::lock_guard lk(g_dev_mu);
  bool asked = false;
  for (PIRP irp : g_live_irps) {
    auto* loc = reinterpret_cast<PIO_STACK_LOCATION>(irp + 1);
    for (int i = 0; i < irp->StackCount && !asked; ++i)
      asked = loc[i].DeviceObject == dev && loc[i].MajorFunction == IRP_MJ_POWER &&
              loc[i].MinorFunction == IRP_MN_SET_POWER && loc[i].Parameters.Power.Type == type &&
              static_cast<ULONG>(loc[i].Parameters.Power.State.DeviceState) ==
                  static_cast<ULONG>(state.DeviceState);
  }
  if (!asked)
    violation("PoSetPowerState(" + std::to_string(type) + ", " + std::to_string(state.DeviceState) +
              ") without a SET_POWER IRP for that state at this device");
  auto it = g_devices.find(dev);
  if (it == g_devices.end()) {
    violation("PoSetPowerState of an unknown device");
    return prev;
  }
  prev.DeviceState = static_cast<DEVICE_POWER_STATE>(it->second->power_state[type & 1]);
  it->second->power_state[type & 1] = static_cast<ULONG>(state.DeviceState);
  return prev;
}

// The power manager sends the IRP from its own thread at PASSIVE_LEVEL to the top of the stack,
// then calls the requester back with the final status.
NTSTATUS PoRequestPowerIrp(PDEVICE_OBJECT dev, UCHAR minor, POWER_STATE state,
                           REQUEST_POWER_COMPLETE* cb, PVOID ctx, PIRP* out) {
  using namespace pvio::windows::test;
  require_irql(DISPATCH_LEVEL, "PoRequestPowerIrp");
  if (minor != IRP_MN_SET_POWER && minor != IRP_MN_QUERY_POWER && minor != IRP_MN_WAIT_WAKE)
    return static_cast<NTSTATUS>(0xC00000F0u);  // STATUS_INVALID_PARAMETER_2
  if (state.DeviceState <= PowerDeviceUnspecified || state.DeviceState >= PowerDeviceMaximum) {
    violation("PoRequestPowerIrp with something that is not a device power state");
    return STATUS_INVALID_PARAMETER;
  }
  PDEVICE_OBJECT top = attached_top(dev);
  ++g_power_requests;
  auto* done = new KEVENT;
  KeInitializeEvent(done, NotificationEvent, FALSE);
  auto* iosb = new IO_STATUS_BLOCK{};
  PIRP irp = new_power_irp(top, top->StackSize > 0 ? top->StackSize : 1, minor, DevicePowerState,
                           static_cast<ULONG>(state.DeviceState), done, iosb);
  irp->IoStatus.Status = STATUS_NOT_SUPPORTED;
  if (out != nullptr) *out = irp;
  std::thread([=] {
    {
      AtIrql passive(PASSIVE_LEVEL);
      PoCallDriver(top, irp);
      KeWaitForSingleObject(done, Executive, KernelMode, FALSE, nullptr);
      if (cb != nullptr) cb(dev, minor, state, ctx, iosb);
    }
    delete iosb;
    delete done;
    --g_power_requests;
  }).detach();
  return STATUS_PENDING;
}

BOOLEAN KeSynchronizeExecution(PKINTERRUPT obj, KSYNCHRONIZE_ROUTINE* routine, PVOID ctx) {
  using namespace pvio::windows::test;
  auto* i = reinterpret_cast<Interrupt*>(obj);
  {
    std::lock_guard lk(g_irq_mu);
    if (std::find(g_interrupts.begin(), g_interrupts.end(), i) == g_interrupts.end()) {
      violation("KeSynchronizeExecution with an interrupt that is not connected");
      return FALSE;
    }
  }
  if (current_irql() > i->irql) violation("KeSynchronizeExecution above the interrupt's DIRQL");
  std::lock_guard lk(i->mu);
  AtIrql dirql(i->irql);
  return routine(ctx);
}

NTSTATUS IoCreateDevice(PDRIVER_OBJECT driver, ULONG ext_size, PUNICODE_STRING, ULONG type,
                        ULONG characteristics, BOOLEAN, PDEVICE_OBJECT* out) {
  using namespace pvio::windows::test;
  require_irql(PASSIVE_LEVEL, "IoCreateDevice");
  if (driver == nullptr) {
    violation("IoCreateDevice without a driver object");
    return STATUS_INVALID_PARAMETER;
  }
  auto* dev = static_cast<PDEVICE_OBJECT>(std::calloc(1, sizeof(DEVICE_OBJECT) + ext_size + 16));
  dev->Type = 3;  // IO_TYPE_DEVICE
  dev->Size = sizeof(DEVICE_OBJECT);
  dev->DriverObject = driver;
  dev->DeviceExtension = ext_size != 0 ? reinterpret_cast<std::uint8_t*>(dev + 1) : nullptr;
  dev->DeviceType = type;
  dev->Characteristics = characteristics;
  dev->StackSize = 1;
  dev->Flags = DO_DEVICE_INITIALIZING;
  auto rec = std::make_shared<Device>();
  rec->driver_owned = true;
  std::lock_guard lk(g_dev_mu);
  g_devices[dev] = rec;
  *out = dev;
  return STATUS_SUCCESS;
}

// The object stays until its last reference is dropped (ObfDereferenceObject).
VOID IoDeleteDevice(PDEVICE_OBJECT dev) {
  using namespace pvio::windows::test;
  require_irql(PASSIVE_LEVEL, "IoDeleteDevice");
  std::lock_guard lk(g_dev_mu);
  auto it = g_devices.find(dev);
  if (it == g_devices.end() || !it->second->driver_owned || it->second->deleted) {
    violation("IoDeleteDevice of a device object that is not live");
    return;
  }
  if (dev->AttachedDevice != nullptr) violation("IoDeleteDevice of a device with a device attached");
  it->second->deleted = true;
  if (it->second->refs == 0) free_driver_device(dev);
}

PDEVICE_OBJECT IoAttachDeviceToDeviceStack(PDEVICE_OBJECT src, PDEVICE_OBJECT target) {
  using namespace pvio::windows::test;
  require_irql(PASSIVE_LEVEL, "IoAttachDeviceToDeviceStack");
  PDEVICE_OBJECT top = attached_top(target);
  top->AttachedDevice = src;
  src->StackSize = static_cast<CHAR>(top->StackSize + 1);
  return top;
}

VOID IoDetachDevice(PDEVICE_OBJECT target) {
  using namespace pvio::windows::test;
  require_irql(PASSIVE_LEVEL, "IoDetachDevice");
  if (target->AttachedDevice == nullptr) violation("IoDetachDevice of a device nothing is attached to");
  target->AttachedDevice = nullptr;
}

NTSTATUS IoGetDeviceProperty(PDEVICE_OBJECT dev, DEVICE_REGISTRY_PROPERTY prop, ULONG len,
                             PVOID buf, PULONG result) {
  using namespace pvio::windows::test;
  require_irql(PASSIVE_LEVEL, "IoGetDeviceProperty");
  std::lock_guard lk(g_dev_mu);
  auto it = g_devices.find(dev);
  if (it == g_devices.end() || it->second->driver_owned) {
    violation("IoGetDeviceProperty of something that is not a PDO");
    return STATUS_INVALID_PARAMETER;
  }
  auto p = it->second->properties.find(prop);
  if (p == it->second->properties.end()) return STATUS_INVALID_PARAMETER;
  *result = sizeof(ULONG);
  if (len < sizeof(ULONG)) return static_cast<NTSTATUS>(0xC0000023u);  // STATUS_BUFFER_TOO_SMALL
  std::memcpy(buf, &p->second, sizeof(ULONG));
  return STATUS_SUCCESS;
}

VOID IoInvalidateDeviceRelations(PDEVICE_OBJECT dev, DEVICE_RELATION_TYPE type) {
  using namespace pvio::windows::test;
  require_irql(DISPATCH_LEVEL, "IoInvalidateDeviceRelations");
  std::lock_guard lk(g_dev_mu);
  auto it = g_devices.find(dev);
  if (it == g_devices.end()) {
    violation("IoInvalidateDeviceRelations of an unknown device");
    return;
  }
  if (type == BusRelations) ++it->second->bus_invalidations;
}

VOID ObfReferenceObject(PVOID obj) {
  using namespace pvio::windows::test;
  require_irql(DISPATCH_LEVEL, "ObfReferenceObject");
  std::lock_guard lk(g_dev_mu);
  auto it = g_devices.find(static_cast<PDEVICE_OBJECT>(obj));
  if (it == g_devices.end() || it->second->deleted) {
    violation("ObfReferenceObject of an object that is not live");
    return;
  }
  ++it->second->refs;
}

VOID ObfDereferenceObject(PVOID obj) {
  using namespace pvio::windows::test;
  require_irql(DISPATCH_LEVEL, "ObfDereferenceObject");
  std::lock_guard lk(g_dev_mu);
  auto it = g_devices.find(static_cast<PDEVICE_OBJECT>(obj));
  if (it == g_devices.end() || it->second->refs == 0) {
    violation("ObfDereferenceObject without a reference");
    return;
  }
  if (--it->second->refs == 0 && it->second->deleted) free_driver_device(it->first);
}

NTSTATUS IoConnectInterrupt(PKINTERRUPT* out, KSERVICE_ROUTINE* isr, PVOID ctx, PKSPIN_LOCK,
                            ULONG vector, KIRQL irql, KIRQL sync_irql, KINTERRUPT_MODE, BOOLEAN,
                            KAFFINITY, BOOLEAN) {
  using namespace pvio::windows::test;
  require_irql(PASSIVE_LEVEL, "IoConnectInterrupt");
  if (irql <= DISPATCH_LEVEL || sync_irql < irql) {
    violation("IoConnectInterrupt with an IRQL that is not a device IRQL");
    return STATUS_INVALID_PARAMETER;
  }
  auto* i = new Interrupt{isr, ctx, vector, sync_irql, {}};
  std::lock_guard lk(g_irq_mu);
  g_interrupts.push_back(i);
  *out = reinterpret_cast<PKINTERRUPT>(i);
  return STATUS_SUCCESS;
}

VOID IoDisconnectInterrupt(PKINTERRUPT obj) {
  using namespace pvio::windows::test;
  require_irql(PASSIVE_LEVEL, "IoDisconnectInterrupt");
  auto* i = reinterpret_cast<Interrupt*>(obj);
  {
    std::lock_guard lk(g_irq_mu);
    auto it = std::find(g_interrupts.begin(), g_interrupts.end(), i);
    if (it == g_interrupts.end()) {
      violation("IoDisconnectInterrupt of an interrupt that is not connected");
      return;
    }
    g_interrupts.erase(it);
  }
  { std::lock_guard wait_for_isr(i->mu); }
  delete i;
}

VOID KeInitializeDpc(PRKDPC dpc, PKDEFERRED_ROUTINE routine, PVOID ctx) {
  std::memset(dpc, 0, sizeof *dpc);
  dpc->Type = 19;  // DpcObject
  dpc->DeferredRoutine = routine;
  dpc->DeferredContext = ctx;
}

BOOLEAN KeInsertQueueDpc(PRKDPC dpc, PVOID a1, PVOID a2) {
  using namespace pvio::windows::test;
  if (dpc->DeferredRoutine == nullptr) violation("KeInsertQueueDpc of an uninitialised DPC");
  DpcQueue& q = dpcs();
  std::lock_guard lk(q.mu);
  if (!q.started) {
    q.started = true;
    std::thread(dpc_thread).detach();
  }
  if (dpc->DpcData != nullptr) return FALSE;  // already queued
  dpc->DpcData = &q;
  dpc->SystemArgument1 = a1;
  dpc->SystemArgument2 = a2;
  q.queue.push_back(dpc);
  q.cv.notify_all();
  return TRUE;
}

BOOLEAN KeRemoveQueueDpc(PRKDPC dpc) {
  using namespace pvio::windows::test;
  DpcQueue& q = dpcs();
  std::lock_guard lk(q.mu);
  auto it = std::find(q.queue.begin(), q.queue.end(), dpc);
  if (it == q.queue.end()) return FALSE;
  q.queue.erase(it);
  dpc->DpcData = nullptr;
  return TRUE;
}

VOID KeFlushQueuedDpcs() {
  using namespace pvio::windows::test;
  require_irql(PASSIVE_LEVEL, "KeFlushQueuedDpcs");
  DpcQueue& q = dpcs();
  std::unique_lock lk(q.mu);
  q.cv.wait(lk, [&] { return q.queue.empty() && !q.running; });
}

NTSTATUS PsCreateSystemThread(PHANDLE handle, ULONG, PVOID, HANDLE, PVOID, KSTART_ROUTINE* routine,
                              PVOID ctx) {
  using namespace pvio::windows::test;
  require_irql(PASSIVE_LEVEL, "PsCreateSystemThread");
  auto* h = new char;
  {
    std::lock_guard lk(g_thread_mu);
    g_thread_handles.insert(h);
  }
  ++g_system_threads;
  std::thread([routine, ctx] {
    routine(ctx);
    violation("a system thread returned instead of calling PsTerminateSystemThread");
    --g_system_threads;
  }).detach();
  *handle = h;
  return STATUS_SUCCESS;
}

NTSTATUS PsTerminateSystemThread(NTSTATUS) {
  using namespace pvio::windows::test;
  require_irql(PASSIVE_LEVEL, "PsTerminateSystemThread");
  --g_system_threads;
  pthread_exit(nullptr);
}

PETHREAD PsGetCurrentThread() {
  return reinterpret_cast<PETHREAD>(&pvio::windows::test::t_thread_identity);
}

NTSTATUS ZwClose(HANDLE h) {
  using namespace pvio::windows::test;
  require_irql(PASSIVE_LEVEL, "ZwClose");
  std::lock_guard lk(g_thread_mu);
  if (g_thread_handles.erase(h) == 0) {
    violation("ZwClose of a handle that is not open");
    return STATUS_INVALID_PARAMETER;
  }
  delete static_cast<char*>(h);
  return STATUS_SUCCESS;
}

ULONG DbgPrintEx(ULONG, ULONG level, PCSTR format, ...) {
  if (level > DPFLTR_WARNING_LEVEL && std::getenv("PVIO_WINDOWS_DEBUG") == nullptr) return 0;
  va_list ap;
  va_start(ap, format);
  std::vfprintf(stderr, format, ap);
  va_end(ap);
  return 0;
}

}  // extern "C"
