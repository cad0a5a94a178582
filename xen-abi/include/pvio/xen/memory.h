// Xen's memory interface (xen/include/public/memory.h): XENMEM_* sub-commands of
// HYPERVISOR_memory_op, the physmap spaces and their argument structs.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pvio/xen/xen.h"

namespace pvio::xen {

inline constexpr unsigned XENMEM_increase_reservation = 0;
inline constexpr unsigned XENMEM_decrease_reservation = 1;
inline constexpr unsigned XENMEM_maximum_ram_page = 2;
inline constexpr unsigned XENMEM_current_reservation = 3;
inline constexpr unsigned XENMEM_maximum_reservation = 4;
inline constexpr unsigned XENMEM_add_to_physmap = 7;
inline constexpr unsigned XENMEM_memory_map = 9;
inline constexpr unsigned XENMEM_remove_from_physmap = 15;

inline constexpr unsigned XENMAPSPACE_shared_info = 0;
inline constexpr unsigned XENMAPSPACE_grant_table = 1;
inline constexpr unsigned XENMAPSPACE_gmfn = 2;
inline constexpr unsigned XENMAPSPACE_gmfn_range = 3;
inline constexpr uint64_t XENMAPIDX_grant_table_status = 0x80000000u;

struct xen_add_to_physmap {
  domid_t domid;      // DOMID_SELF for the caller
  uint16_t size;      // XENMAPSPACE_gmfn_range only
  uint32_t space;     // XENMAPSPACE_*
  xen_ulong_t idx;    // index into the space
  xen_pfn_t gpfn;     // where the guest wants it
};

struct xen_remove_from_physmap {
  domid_t domid;
  xen_pfn_t gpfn;
};

// XENMEM_memory_map: the guest passes a buffer of e820 entries; Xen fills in nr_entries.
struct xen_memory_map {
  uint32_t nr_entries;               // IN: buffer size in entries; OUT: entries written
  xen_guest_handle_t buffer;         // IN: guest address of the e820 entries
};

// One entry of XENMEM_memory_map's buffer: the BIOS E820 layout, packed (Xen's e820entry).
struct __attribute__((packed)) e820entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;  // E820_RAM = 1, E820_RESERVED = 2 (the XEN_HVM_MEMMAP_TYPE_* numbers)
};
static_assert(sizeof(e820entry) == 20);

#if defined(PVIO_XEN_ABI_X86_64)
static_assert(sizeof(xen_add_to_physmap) == 24);
static_assert(offsetof(xen_add_to_physmap, idx) == 8);
static_assert(sizeof(xen_memory_map) == 16);
#else
static_assert(sizeof(xen_add_to_physmap) == 16);
static_assert(sizeof(xen_memory_map) == 8);
#endif

}  // namespace pvio::xen
