// Loads a guest kernel ELF image (x86-64, ET_EXEC) into guest RAM: every PT_LOAD segment is
// bounds-checked against the file and against guest RAM before a single byte is copied.
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
};

std::string_view to_string(ElfStatus s);

struct ElfImage {
  std::uint64_t entry = 0;
  std::uint64_t load_start = 0;  // lowest guest-physical byte written
  std::uint64_t load_end = 0;    // one past the highest byte written (memsz included)
};

// Validates the whole image first, then copies. `min_load` is the lowest guest-physical address
// a segment may occupy (the VMM's boot structures live below it). On error guest RAM is untouched.
ElfStatus load_elf(std::span<const std::uint8_t> file, const GuestMemory& memory,
                   std::uint64_t min_load, ElfImage* out);

}  // namespace pvio::hv
