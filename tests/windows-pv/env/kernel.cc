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
#include <set>

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
  IrpDispatch dispatch;
};
std::map<PDEVICE_OBJECT, std::shared_ptr<Device>> g_devices;
std::set<PIRP> g_live_irps;

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
  std::lock_guard lk(g_dev_mu);
  g_devices[dev] = std::make_shared<Device>(Device{std::move(dispatch)});
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
  require_irql(DISPATCH_LEVEL, "IoCompleteRequest");
  {
    std::lock_guard lk(g_dev_mu);
    if (g_live_irps.erase(irp) == 0) {
      violation("IoCompleteRequest on an IRP that is not outstanding (completed twice?)");
      return;
    }
  }
  irp->IoStatus.Status = status;
  irp->IoStatus.Information = information;
  if (irp->UserIosb != nullptr) *irp->UserIosb = irp->IoStatus;
  PKEVENT ev = irp->UserEvent;
  std::free(irp);
  if (ev != nullptr) KeSetEvent(ev, 0, FALSE);
}

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
  } else if (timeout->QuadPart < 0) {
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
  constexpr int kStack = 2;
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
  --irp->CurrentLocation;
  --irp->Tail.Overlay.CurrentStackLocation;
  next->DeviceObject = dev;
  if (!d) {
    violation("IofCallDriver to an unknown device object");
    complete_irp(irp, STATUS_NO_SUCH_DEVICE);
    return STATUS_NO_SUCH_DEVICE;
  }
  return d->dispatch(dev, irp);
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
