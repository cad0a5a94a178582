// The Windows-kernel test environment: a Linux host implementation of exactly the ntoskrnl
// routines the pvio drivers import (pvio/wdk/wdm.h), faithful to their documented contracts,
// so a driver's binding runs unchanged in a test process. Every thread has an IRQL; routines
// check the IRQL their documentation requires, and a broken rule is recorded as a violation
// that fails the test (Fixture below). Guest-physical memory (contiguous allocations and
// their physical addresses) is a user-mode pvio domain's RAM, so what a driver grants is what
// the real backends map.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "pvio/wdk/wdm.h"

namespace pvio::domain {
class Domain;
}

namespace pvio::windows::test {

// ---- rule checks ----
void violation(const std::string& what);
std::vector<std::string> violations();
void clear_violations();
// Records a violation when the calling thread's IRQL is above `max`.
void require_irql(KIRQL max, const char* routine);
// DIRQL for the routines StorPort calls with the interrupt lock held.
inline constexpr KIRQL kDirql = 5;

// Runs a section at an IRQL (the environment's own callers: DPCs, StartIo, ISRs).
class AtIrql {
 public:
  explicit AtIrql(KIRQL level);
  ~AtIrql();
  AtIrql(const AtIrql&) = delete;
  AtIrql& operator=(const AtIrql&) = delete;

 private:
  KIRQL old_;
};
KIRQL current_irql();
// Raises or lowers the calling thread's IRQL (spin lock acquire/release across calls).
void set_irql(KIRQL level);

// ---- guest memory ----
// MmAllocateContiguousMemorySpecifyCache hands out pages of this domain's RAM and
// MmGetPhysicalAddress maps them back to guest frames. nullptr: no guest memory (allocations
// fail).
void set_guest_memory(domain::Domain* dom);
std::size_t contiguous_allocations();  // not yet freed
// Calls of the allocating routines (pool and contiguous memory) so far: a driver whose I/O
// path allocates shows up as a change across its I/O.
std::size_t allocation_calls();
// Counts one call of an allocating routine (the NDIS allocators of ndis.cc).
void count_allocation();

// ---- device objects and IRPs ----
using IrpDispatch = std::function<NTSTATUS(PDEVICE_OBJECT, PIRP)>;
// A device object whose IRP_MJ_PNP requests go to `dispatch` (IofCallDriver). The dispatch
// routine completes the IRP with complete_irp() before returning its status.
PDEVICE_OBJECT create_device(IrpDispatch dispatch);
void delete_device(PDEVICE_OBJECT dev);
// IoCompleteRequest with a status: see IofCompleteRequest (completion routines up the stack,
// then the caller's status block and event; completing an IRP twice is a violation).
void complete_irp(PIRP irp, NTSTATUS status, ULONG_PTR information = 0);

// ---- the PnP manager's side ----
// An IRP_MJ_PNP request sent to the top of `dev`'s stack at PASSIVE_LEVEL, as the PnP manager
// sends them: IoStatus starts as STATUS_NOT_SUPPORTED; `setup` fills the stack location.
struct PnpResult {
  NTSTATUS status;
  ULONG_PTR information;
};
PnpResult send_pnp(PDEVICE_OBJECT dev, UCHAR minor,
                   const std::function<void(PIO_STACK_LOCATION)>& setup = nullptr);
// The top of the stack `dev` is in (what IoGetAttachedDevice returns).
PDEVICE_OBJECT attached_top(PDEVICE_OBJECT dev);
// A device property IoGetDeviceProperty answers (the bus driver's PDO properties).
void set_device_property(PDEVICE_OBJECT dev, DEVICE_REGISTRY_PROPERTY prop, ULONG value);
// IoInvalidateDeviceRelations(dev, BusRelations) calls so far.
unsigned bus_invalidations(PDEVICE_OBJECT dev);
// Device objects made by IoCreateDevice and not yet freed (deleted and unreferenced).
std::size_t live_driver_devices();
// Object references taken with ObfReferenceObject and not yet dropped, on `dev`.
long object_references(PDEVICE_OBJECT dev);

// ---- the power manager's side ----
// An IRP_MJ_POWER request sent to the top of `dev`'s stack at PASSIVE_LEVEL (every device here
// is DO_POWER_PAGABLE), with exactly StackSize stack locations and IoStatus starting as
// `initial` (the power manager's STATUS_NOT_SUPPORTED). Waits for its completion.
NTSTATUS send_power(PDEVICE_OBJECT dev, UCHAR minor, POWER_STATE_TYPE type, ULONG state,
                    NTSTATUS initial = STATUS_NOT_SUPPORTED);
// The device power state a driver last reported for `dev` with PoSetPowerState
// (PowerDeviceUnspecified before it reported one).
DEVICE_POWER_STATE device_power_state(PDEVICE_OBJECT dev);
// Device power IRPs requested with PoRequestPowerIrp whose callback has not returned yet.
std::size_t power_requests_in_flight();

// ---- interrupts, DPCs, system threads ----
// Runs the service routines connected to `vector` at their IRQL on the calling thread (the
// line was raised). Returns whether one claimed the interrupt.
bool raise_interrupt(ULONG vector);
std::size_t connected_interrupts();
// System threads created and not yet terminated.
std::size_t system_threads();

}  // namespace pvio::windows::test
