// ELF64 loader for guest kernels: parse the headers once, validate every segment, then copy.
#include "pvio/hypervisor/elf_loader.h"

#include <elf.h>

#include <cstring>
#include <vector>

namespace pvio::hv {

std::string_view to_string(ElfStatus s) {
  switch (s) {
    case ElfStatus::kOk: return "ok";
    case ElfStatus::kTooSmall: return "file too small for an ELF header";
    case ElfStatus::kBadMagic: return "not an ELF file";
    case ElfStatus::kNotElf64: return "not a little-endian ELF64 file";
    case ElfStatus::kWrongMachine: return "not an x86-64 executable (EM_X86_64, ET_EXEC)";
    case ElfStatus::kBadProgramHeaders: return "program header table outside the file";
    case ElfStatus::kSegmentOutsideFile: return "segment data outside the file";
    case ElfStatus::kSegmentOutsideRam: return "segment outside guest RAM";
    case ElfStatus::kNoLoadableSegment: return "no PT_LOAD segment";
    case ElfStatus::kEntryNotLoaded: return "entry point not in an executable segment";
  }
  return "unknown";
}

ElfStatus load_elf(std::span<const std::uint8_t> file, const GuestMemory& memory,
                   std::uint64_t min_load, ElfImage* out) {
  Elf64_Ehdr eh;
  if (file.size() < sizeof(eh)) return ElfStatus::kTooSmall;
  std::memcpy(&eh, file.data(), sizeof(eh));
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0) return ElfStatus::kBadMagic;
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB)
    return ElfStatus::kNotElf64;
  if (eh.e_machine != EM_X86_64 || eh.e_type != ET_EXEC) return ElfStatus::kWrongMachine;
  if (eh.e_phentsize != sizeof(Elf64_Phdr) || eh.e_phnum == 0 || eh.e_phnum == PN_XNUM)
    return ElfStatus::kBadProgramHeaders;
  const std::uint64_t ph_bytes = std::uint64_t{eh.e_phnum} * sizeof(Elf64_Phdr);
  if (eh.e_phoff > file.size() || ph_bytes > file.size() - eh.e_phoff)
    return ElfStatus::kBadProgramHeaders;

  struct Segment {
    std::uint64_t paddr, filesz, memsz, offset;
    bool exec;
  };
  std::vector<Segment> segments;
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, file.data() + eh.e_phoff + i * sizeof(Elf64_Phdr), sizeof(ph));
    if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
    if (ph.p_filesz > ph.p_memsz) return ElfStatus::kSegmentOutsideFile;
    if (ph.p_offset > file.size() || ph.p_filesz > file.size() - ph.p_offset)
      return ElfStatus::kSegmentOutsideFile;
    if (ph.p_paddr < min_load || memory.range(ph.p_paddr, ph.p_memsz) == nullptr)
      return ElfStatus::kSegmentOutsideRam;
    segments.push_back({ph.p_paddr, ph.p_filesz, ph.p_memsz, ph.p_offset, (ph.p_flags & PF_X) != 0});
  }
  if (segments.empty()) return ElfStatus::kNoLoadableSegment;

  // Identity-mapped kernel: the entry is a physical address inside an executable segment.
  bool entry_ok = false;
  ElfImage image;
  image.entry = eh.e_entry;
  image.load_start = ~std::uint64_t{0};
  for (const Segment& s : segments) {
    if (s.exec && eh.e_entry >= s.paddr && eh.e_entry - s.paddr < s.memsz) entry_ok = true;
    image.load_start = std::min(image.load_start, s.paddr);
    image.load_end = std::max(image.load_end, s.paddr + s.memsz);
  }
  if (!entry_ok) return ElfStatus::kEntryNotLoaded;

  for (const Segment& s : segments) {
    std::uint8_t* dst = memory.range(s.paddr, s.memsz);
    std::memcpy(dst, file.data() + s.offset, s.filesz);
    std::memset(dst + s.filesz, 0, s.memsz - s.filesz);
  }
  if (out) *out = image;
  return ElfStatus::kOk;
}

}  // namespace pvio::hv
