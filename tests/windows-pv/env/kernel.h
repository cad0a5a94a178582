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
// IoCompleteRequest for IRPs built by IoBuildSynchronousFsdRequest: copies IoStatus to the
// caller's block, signals its event, frees the IRP. Completing an IRP twice is a violation.
void complete_irp(PIRP irp, NTSTATUS status, ULONG_PTR information = 0);

}  // namespace pvio::windows::test
