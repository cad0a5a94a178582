// ELF loader for guest kernels: parse the headers once into a typed image description,
// validate every segment, then copy.
#include "pvio/hypervisor/elf_loader.h"

#include <elf.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <vector>

#include "pvio/xen/hvm/start_info.h"

namespace pvio::hv {

std::string_view to_string(ElfStatus s) {
  switch (s) {
    case ElfStatus::kOk: return "ok";
    case ElfStatus::kTooSmall: return "file too small for an ELF header";
    case ElfStatus::kBadMagic: return "not an ELF file";
    case ElfStatus::kNotElf64: return "not a little-endian ELF file of the expected class";
    case ElfStatus::kWrongMachine: return "not an x86 executable (EM_X86_64/EM_386, ET_EXEC)";
    case ElfStatus::kBadProgramHeaders: return "program or section header table outside the file";
    case ElfStatus::kSegmentOutsideFile: return "segment data outside the file";
    case ElfStatus::kSegmentOutsideRam: return "segment outside guest RAM";
    case ElfStatus::kNoLoadableSegment: return "no PT_LOAD segment";
    case ElfStatus::kEntryNotLoaded: return "entry point not in an executable segment";
    case ElfStatus::kNotPvh: return "no XEN_ELFNOTE_PHYS32_ENTRY note (not a PVH kernel)";
    case ElfStatus::kBadNote: return "malformed ELF note";
    case ElfStatus::kOverlapsVmmPages: return "segment overlaps the VMM's start-info pages";
    case ElfStatus::kPvhNeedsOneVcpu: return "a PVH kernel is booted with one vCPU";
  }
  return "unknown";
}

namespace {

struct Segment {
  std::uint64_t paddr, filesz, memsz, offset;
  bool exec;
};

// Everything the loaders need from the headers, read once from the file.
struct ParsedElf {
  bool elf64 = false;
  std::uint16_t machine = 0;
  std::uint64_t entry = 0;
  std::vector<Segment> loads;
  std::optional<std::uint32_t> phys32_entry;
};

bool in_file(std::span<const std::uint8_t> file, std::uint64_t off, std::uint64_t len) {
  return off <= file.size() && len <= file.size() - off;
}

// Walks the notes in file[off, off + len) (ELF note: namesz, descsz, type, name and desc each
// padded to 4 bytes) for Xen's PHYS32_ENTRY. Notes are only read inside the file and inside
// their segment or section: one that runs past it ends the walk (the kernel has no usable note
// there); a PHYS32_ENTRY of the wrong size is an error.
ElfStatus scan_notes(std::span<const std::uint8_t> file, std::uint64_t off, std::uint64_t len,
                     ParsedElf* p) {
  if (!in_file(file, off, len)) return ElfStatus::kBadProgramHeaders;
  std::uint64_t pos = 0;
  while (len - pos >= 12) {
    std::uint32_t hdr[3];
    std::memcpy(hdr, file.data() + off + pos, sizeof(hdr));
    const std::uint64_t name_len = (std::uint64_t{hdr[0]} + 3) & ~std::uint64_t{3};
    const std::uint64_t desc_len = (std::uint64_t{hdr[1]} + 3) & ~std::uint64_t{3};
    pos += 12;
    if (name_len > len - pos || desc_len > len - pos - name_len) break;
    const std::uint8_t* name = file.data() + off + pos;
    const std::uint8_t* desc = name + name_len;
    if (hdr[0] == 4 && std::memcmp(name, "Xen", 4) == 0 &&
        hdr[2] == xen::XEN_ELFNOTE_PHYS32_ENTRY) {
      // The entry is a 32-bit physical address; Xen reads it as a 4-byte value.
      if (hdr[1] != 4) return ElfStatus::kBadNote;
      std::uint32_t entry;
      std::memcpy(&entry, desc, 4);
      p->phys32_entry = entry;
    }
    pos += name_len + desc_len;
  }
  return ElfStatus::kOk;
}

template <typename Ehdr, typename Phdr, typename Shdr>
ElfStatus parse_class(std::span<const std::uint8_t> file, ParsedElf* p) {
  Ehdr eh;
  if (file.size() < sizeof(eh)) return ElfStatus::kTooSmall;
  std::memcpy(&eh, file.data(), sizeof(eh));
  if (eh.e_type != ET_EXEC || (eh.e_machine != EM_X86_64 && eh.e_machine != EM_386))
    return ElfStatus::kWrongMachine;
  p->machine = eh.e_machine;
  p->entry = eh.e_entry;
  if (eh.e_phentsize != sizeof(Phdr) || eh.e_phnum == 0 || eh.e_phnum == PN_XNUM)
    return ElfStatus::kBadProgramHeaders;
  if (!in_file(file, eh.e_phoff, std::uint64_t{eh.e_phnum} * sizeof(Phdr)))
    return ElfStatus::kBadProgramHeaders;
  for (unsigned i = 0; i < eh.e_phnum; ++i) {
    Phdr ph;
    std::memcpy(&ph, file.data() + eh.e_phoff + i * sizeof(Phdr), sizeof(ph));
    if (ph.p_type == PT_NOTE) {
      if (const ElfStatus st = scan_notes(file, ph.p_offset, ph.p_filesz, p); st != ElfStatus::kOk)
        return st;
      continue;
    }
    if (ph.p_type != PT_LOAD || ph.p_memsz == 0) continue;
    if (ph.p_filesz > ph.p_memsz || !in_file(file, ph.p_offset, ph.p_filesz))
      return ElfStatus::kSegmentOutsideFile;
    p->loads.push_back({ph.p_paddr, ph.p_filesz, ph.p_memsz, ph.p_offset, (ph.p_flags & PF_X) != 0});
  }
  // Linkers may leave the notes out of every PT_NOTE (Mini-OS's PVH link does); Xen's libelf
  // then finds them through the section headers.
  if (!p->phys32_entry && eh.e_shoff != 0 && eh.e_shnum != 0) {
    if (eh.e_shentsize != sizeof(Shdr) ||
        !in_file(file, eh.e_shoff, std::uint64_t{eh.e_shnum} * sizeof(Shdr)))
      return ElfStatus::kBadProgramHeaders;
    for (unsigned i = 0; i < eh.e_shnum; ++i) {
      Shdr sh;
      std::memcpy(&sh, file.data() + eh.e_shoff + i * sizeof(Shdr), sizeof(sh));
      if (sh.sh_type != SHT_NOTE) continue;
      if (const ElfStatus st = scan_notes(file, sh.sh_offset, sh.sh_size, p); st != ElfStatus::kOk)
        return st;
    }
  }
  return ElfStatus::kOk;
}

ElfStatus parse_elf(std::span<const std::uint8_t> file, ParsedElf* p) {
  if (file.size() < EI_NIDENT) return ElfStatus::kTooSmall;
  if (std::memcmp(file.data(), ELFMAG, SELFMAG) != 0) return ElfStatus::kBadMagic;
  if (file[EI_DATA] != ELFDATA2LSB) return ElfStatus::kNotElf64;
  if (file[EI_CLASS] == ELFCLASS64) {
    p->elf64 = true;
    return parse_class<Elf64_Ehdr, Elf64_Phdr, Elf64_Shdr>(file, p);
  }
  if (file[EI_CLASS] == ELFCLASS32) return parse_class<Elf32_Ehdr, Elf32_Phdr, Elf32_Shdr>(file, p);
  return ElfStatus::kNotElf64;
}

// Checks the segments against RAM and the forbidden range, and the entry; then copies.
ElfStatus place(std::span<const std::uint8_t> file, const ParsedElf& p, std::uint64_t entry,
                const GuestMemory& memory, std::uint64_t min_load, std::uint64_t vmm_start,
                std::uint64_t vmm_end, ElfImage* out) {
  if (p.loads.empty()) return ElfStatus::kNoLoadableSegment;
  ElfImage image;
  image.entry = entry;
  image.load_start = ~std::uint64_t{0};
  bool entry_ok = false;
  for (const Segment& s : p.loads) {
    if (s.paddr < min_load || memory.range(s.paddr, s.memsz) == nullptr)
      return ElfStatus::kSegmentOutsideRam;
    if (s.paddr < vmm_end && vmm_start < s.paddr + s.memsz) return ElfStatus::kOverlapsVmmPages;
    if (s.exec && entry >= s.paddr && entry - s.paddr < s.memsz) entry_ok = true;
    image.load_start = std::min(image.load_start, s.paddr);
    image.load_end = std::max(image.load_end, s.paddr + s.memsz);
  }
  if (!entry_ok) return ElfStatus::kEntryNotLoaded;
  for (const Segment& s : p.loads) {
    std::uint8_t* dst = memory.range(s.paddr, s.memsz);
    std::memcpy(dst, file.data() + s.offset, s.filesz);
    std::memset(dst + s.filesz, 0, s.memsz - s.filesz);
  }
  if (out) *out = image;
  return ElfStatus::kOk;
}

}  // namespace

ElfStatus load_elf(std::span<const std::uint8_t> file, const GuestMemory& memory,
                   std::uint64_t min_load, ElfImage* out) {
  if (file.size() >= EI_NIDENT && std::memcmp(file.data(), ELFMAG, SELFMAG) == 0 &&
      file[EI_CLASS] != ELFCLASS64)
    return ElfStatus::kNotElf64;
  ParsedElf p;
  if (const ElfStatus st = parse_elf(file, &p); st != ElfStatus::kOk) return st;
  if (p.machine != EM_X86_64) return ElfStatus::kWrongMachine;
  // Identity-mapped kernel: the entry is a physical address inside an executable segment.
  return place(file, p, p.entry, memory, min_load, 0, 0, out);
}

bool is_pvh_elf(std::span<const std::uint8_t> file) {
  ParsedElf p;
  return parse_elf(file, &p) == ElfStatus::kOk && p.phys32_entry.has_value();
}

ElfStatus load_pvh_elf(std::span<const std::uint8_t> file, const GuestMemory& memory,
                       std::uint64_t vmm_start, std::uint64_t vmm_end, ElfImage* out) {
  ParsedElf p;
  if (const ElfStatus st = parse_elf(file, &p); st != ElfStatus::kOk) return st;
  if (!p.phys32_entry) return ElfStatus::kNotPvh;
  // pvh.pandoc: segments go to their physical addresses; the guest starts at the note's entry.
  const ElfStatus st = place(file, p, *p.phys32_entry, memory, 0, vmm_start, vmm_end, out);
  if (st == ElfStatus::kOk && out) out->pvh = true;
  return st;
}

}  // namespace pvio::hv
