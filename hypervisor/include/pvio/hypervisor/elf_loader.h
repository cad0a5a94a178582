// Loads a guest kernel ELF image into guest RAM: every PT_LOAD segment is bounds-checked
// against the file and against guest RAM before a single byte is copied. Two kinds: pvio's own
// ELF64 kernels (identity-mapped, entered in long mode) and PVH kernels (ELF32 or ELF64 with
// Xen's XEN_ELFNOTE_PHYS32_ENTRY note, entered in 32-bit protected mode; Xen's pvh.pandoc).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "pvio/grant_table/guest_memory.h"

namespace pvio::hv {

enum class ElfStatus {
  kOk,
  kTooSmall,           // shorter than an ELF header
  kBadMagic,           // not \x7fELF
  kNotElf64,           // not ELFCLASS64 little-endian
  kWrongMachine,       // not EM_X86_64 / ET_EXEC
  kBadProgramHeaders,  // phoff/phnum/phentsize outside the file or inconsistent
  kSegmentOutsideFile,  // p_offset + p_filesz beyond the file, or filesz > memsz
  kSegmentOutsideRam,   // p_paddr + p_memsz outside guest RAM or below the minimum load address
  kNoLoadableSegment,
  kEntryNotLoaded,     // e_entry is not inside an executable PT_LOAD segment
  kNotPvh,             // no XEN_ELFNOTE_PHYS32_ENTRY note (load_pvh_elf only)
  kBadNote,            // a note runs past its segment/section or PHYS32_ENTRY is not 4 bytes
  kOverlapsVmmPages,   // a segment covers pages the VMM writes (start info, memory map, cmdline)
  kPvhNeedsOneVcpu,    // PVH boot starts vCPU 0 only (secondary vCPUs would need VCPUOP_up)
};

std::string_view to_string(ElfStatus s);

struct ElfImage {
  std::uint64_t entry = 0;       // long-mode entry (pvio kernels) or PHYS32 entry (PVH)
  bool pvh = false;              // has XEN_ELFNOTE_PHYS32_ENTRY
  std::uint64_t load_start = 0;  // lowest guest-physical byte written
  std::uint64_t load_end = 0;    // one past the highest byte written (memsz included)
};

// Validates the whole image first, then copies. `min_load` is the lowest guest-physical address
// a segment may occupy (the VMM's boot structures live below it). On error guest RAM is untouched.
ElfStatus load_elf(std::span<const std::uint8_t> file, const GuestMemory& memory,
                   std::uint64_t min_load, ElfImage* out);

// Whether the image carries XEN_ELFNOTE_PHYS32_ENTRY (in a PT_NOTE segment or, as Xen's libelf
// also accepts, an SHT_NOTE section). Bad headers read as "no".
bool is_pvh_elf(std::span<const std::uint8_t> file);

// A PVH kernel (x86, ELF32 or ELF64, EM_386 or EM_X86_64): segments at their physical
// addresses, entry = the note's 32-bit entry, which must lie in an executable segment.
// Segments must lie in guest RAM and outside [vmm_start, vmm_end), the VMM's own pages.
ElfStatus load_pvh_elf(std::span<const std::uint8_t> file, const GuestMemory& memory,
                       std::uint64_t vmm_start, std::uint64_t vmm_end, ElfImage* out);

}  // namespace pvio::hv
