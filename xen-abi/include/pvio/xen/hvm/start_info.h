// The PVH boot structure (xen/include/public/arch-x86/hvm/start_info.h): what a PVH kernel
// finds at EBX on entry. Version 1 adds the memory map. All addresses are guest-physical.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace pvio::xen {

inline constexpr uint32_t XEN_HVM_START_MAGIC_VALUE = 0x336ec578;

struct hvm_start_info {
  uint32_t magic;           // XEN_HVM_START_MAGIC_VALUE
  uint32_t version;         // 0 or 1
  uint32_t flags;           // SIF_*
  uint32_t nr_modules;      // entries in modlist
  uint64_t modlist_paddr;   // hvm_modlist_entry array
  uint64_t cmdline_paddr;   // NUL-terminated command line
  uint64_t rsdp_paddr;      // ACPI RSDP, 0 if none
  uint64_t memmap_paddr;    // version >= 1: hvm_memmap_table_entry array
  uint32_t memmap_entries;  // version >= 1
  uint32_t reserved;
};

struct hvm_modlist_entry {
  uint64_t paddr;
  uint64_t size;
  uint64_t cmdline_paddr;
  uint64_t reserved;
};

struct hvm_memmap_table_entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;  // XEN_HVM_MEMMAP_TYPE_*, the E820 numbers
  uint32_t reserved;
};

inline constexpr uint32_t XEN_HVM_MEMMAP_TYPE_RAM = 1;
inline constexpr uint32_t XEN_HVM_MEMMAP_TYPE_RESERVED = 2;
inline constexpr uint32_t XEN_HVM_MEMMAP_TYPE_ACPI = 3;
inline constexpr uint32_t XEN_HVM_MEMMAP_TYPE_NVS = 4;
inline constexpr uint32_t XEN_HVM_MEMMAP_TYPE_UNUSABLE = 5;
inline constexpr uint32_t XEN_HVM_MEMMAP_TYPE_DISABLED = 6;
inline constexpr uint32_t XEN_HVM_MEMMAP_TYPE_PMEM = 7;

// The ELF note that marks a PVH kernel and gives its 32-bit entry point (elfnote.h).
inline constexpr uint32_t XEN_ELFNOTE_PHYS32_ENTRY = 18;

static_assert(sizeof(hvm_start_info) == 56);
static_assert(offsetof(hvm_start_info, modlist_paddr) == 16);
static_assert(offsetof(hvm_start_info, memmap_paddr) == 40);
static_assert(sizeof(hvm_modlist_entry) == 32);
static_assert(sizeof(hvm_memmap_table_entry) == 24);

}  // namespace pvio::xen
