// Guest-virtual to guest-physical translation through the guest's own page tables, for
// hypercall arguments (a PVH kernel such as Mini-OS passes pointers in its own address space).
// Every table entry is read once from guest RAM and checked before it is followed; a table
// outside RAM, a non-present entry or a set reserved bit ends the walk with an error.
#pragma once

#include <cstdint>
#include <string_view>

#include "pvio/grant_table/guest_memory.h"

namespace pvio::hv {

// The vCPU's paging registers (from KVM_GET_SREGS).
struct PagingState {
  std::uint64_t cr0 = 0, cr3 = 0, cr4 = 0, efer = 0;
};

enum class WalkStatus {
  kOk,
  kNotPresent,       // an entry on the way has P = 0
  kReservedBit,      // PS in a PML4E, or address bits above the 52-bit physical limit
  kTableOutsideRam,  // a table the walk must read is not guest RAM
  kNonCanonical,     // long-mode address whose bits 63:47 are not all equal
  kOutside4G,        // paging off and the address is above 4 GiB
  kUnsupportedMode,  // 32-bit paging (PAE or not) or 5-level paging
};

std::string_view to_string(WalkStatus s);

// Paging off: the linear address is the physical address (32-bit). Long mode with 4-level
// tables: 4 KiB, 2 MiB and 1 GiB pages. Other modes are refused.
WalkStatus translate_gva(const GuestMemory& memory, const PagingState& paging, std::uint64_t gva,
                         std::uint64_t* gpa);

}  // namespace pvio::hv
