// ELF loader: images are validated against the file and guest RAM before anything is copied.
#include <elf.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "pvio/hypervisor/elf_loader.h"

namespace pvio::hv {
namespace {

constexpr std::uint64_t kRam = 4 << 20;
constexpr std::uint64_t kMin = 0x100000;

struct Ram {
  std::vector<std::uint8_t> bytes = std::vector<std::uint8_t>(kRam + 4096, 0xcc);
  GuestMemory memory;
  std::uint8_t* base;
  Ram() {
    base = reinterpret_cast<std::uint8_t*>(
        (reinterpret_cast<std::uintptr_t>(bytes.data()) + 4095) & ~std::uintptr_t{4095});
    memory.add_region(0, kRam, base);
  }
};

// One executable PT_LOAD at 1 MiB with `filesz` bytes of 0x5a and memsz = filesz + bss.
std::vector<std::uint8_t> make_elf(std::uint64_t paddr = kMin, std::uint64_t filesz = 256,
                                   std::uint64_t bss = 256) {
  std::vector<std::uint8_t> f(sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr) + filesz, 0);
  Elf64_Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = ELFCLASS64;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = EM_X86_64;
  eh.e_version = EV_CURRENT;
  eh.e_entry = paddr + 16;
  eh.e_phoff = sizeof(Elf64_Ehdr);
  eh.e_ehsize = sizeof(Elf64_Ehdr);
  eh.e_phentsize = sizeof(Elf64_Phdr);
  eh.e_phnum = 1;
  Elf64_Phdr ph{};
  ph.p_type = PT_LOAD;
  ph.p_flags = PF_R | PF_X;
  ph.p_offset = sizeof(Elf64_Ehdr) + sizeof(Elf64_Phdr);
  ph.p_vaddr = ph.p_paddr = paddr;
  ph.p_filesz = filesz;
  ph.p_memsz = filesz + bss;
  std::memcpy(f.data(), &eh, sizeof(eh));
  std::memcpy(f.data() + sizeof(eh), &ph, sizeof(ph));
  std::memset(f.data() + ph.p_offset, 0x5a, filesz);
  return f;
}

Elf64_Ehdr* ehdr(std::vector<std::uint8_t>& f) { return reinterpret_cast<Elf64_Ehdr*>(f.data()); }
Elf64_Phdr* phdr(std::vector<std::uint8_t>& f) {
  return reinterpret_cast<Elf64_Phdr*>(f.data() + sizeof(Elf64_Ehdr));
}

ElfStatus load(Ram& ram, const std::vector<std::uint8_t>& f, ElfImage* img = nullptr) {
  return load_elf(f, ram.memory, kMin, img);
}

TEST(ElfLoader, LoadsSegmentAndZeroesBss) {
  Ram ram;
  ElfImage img;
  ASSERT_EQ(load(ram, make_elf(), &img), ElfStatus::kOk);
  EXPECT_EQ(img.entry, kMin + 16);
  EXPECT_EQ(img.load_start, kMin);
  EXPECT_EQ(img.load_end, kMin + 512);
  EXPECT_EQ(ram.base[kMin], 0x5a);
  EXPECT_EQ(ram.base[kMin + 255], 0x5a);
  EXPECT_EQ(ram.base[kMin + 256], 0);
  EXPECT_EQ(ram.base[kMin + 511], 0);
  EXPECT_EQ(ram.base[kMin + 512], 0xcc);  // nothing past memsz
}

TEST(ElfLoader, RejectsShortAndForeignFiles) {
  Ram ram;
  auto f = make_elf();
  EXPECT_EQ(load(ram, std::vector<std::uint8_t>(f.begin(), f.begin() + 20)), ElfStatus::kTooSmall);
  auto g = f;
  g[1] = 'X';
  EXPECT_EQ(load(ram, g), ElfStatus::kBadMagic);
  g = f;
  ehdr(g)->e_ident[EI_CLASS] = ELFCLASS32;
  EXPECT_EQ(load(ram, g), ElfStatus::kNotElf64);
  g = f;
  ehdr(g)->e_machine = EM_AARCH64;
  EXPECT_EQ(load(ram, g), ElfStatus::kWrongMachine);
  g = f;
  ehdr(g)->e_type = ET_DYN;
  EXPECT_EQ(load(ram, g), ElfStatus::kWrongMachine);
}

TEST(ElfLoader, RejectsProgramHeadersOutsideFile) {
  Ram ram;
  auto f = make_elf();
  ehdr(f)->e_phoff = f.size() - 8;
  EXPECT_EQ(load(ram, f), ElfStatus::kBadProgramHeaders);
  f = make_elf();
  ehdr(f)->e_phoff = ~std::uint64_t{0} - 4;  // offset + size would wrap
  EXPECT_EQ(load(ram, f), ElfStatus::kBadProgramHeaders);
  f = make_elf();
  ehdr(f)->e_phnum = 500;
  EXPECT_EQ(load(ram, f), ElfStatus::kBadProgramHeaders);
  f = make_elf();
  ehdr(f)->e_phentsize = 32;
  EXPECT_EQ(load(ram, f), ElfStatus::kBadProgramHeaders);
}

TEST(ElfLoader, RejectsSegmentDataOutsideFile) {
  Ram ram;
  auto f = make_elf();
  phdr(f)->p_filesz = f.size();  // runs past the end of the file
  phdr(f)->p_memsz = f.size();
  EXPECT_EQ(load(ram, f), ElfStatus::kSegmentOutsideFile);
  f = make_elf();
  phdr(f)->p_offset = ~std::uint64_t{0} - 10;
  EXPECT_EQ(load(ram, f), ElfStatus::kSegmentOutsideFile);
  f = make_elf();
  phdr(f)->p_memsz = 16;  // filesz > memsz
  EXPECT_EQ(load(ram, f), ElfStatus::kSegmentOutsideFile);
}

TEST(ElfLoader, RejectsSegmentsOutsideRamWithoutTouchingIt) {
  Ram ram;
  EXPECT_EQ(load(ram, make_elf(kRam - 256, 256, 256)), ElfStatus::kSegmentOutsideRam);  // straddles end
  EXPECT_EQ(load(ram, make_elf(kRam + 0x1000)), ElfStatus::kSegmentOutsideRam);
  EXPECT_EQ(load(ram, make_elf(0x1000)), ElfStatus::kSegmentOutsideRam);  // below boot area limit
  auto f = make_elf();
  phdr(f)->p_paddr = ~std::uint64_t{0} - 0xfff;  // paddr + memsz wraps
  EXPECT_EQ(load(ram, f), ElfStatus::kSegmentOutsideRam);
  f = make_elf();
  phdr(f)->p_memsz = ~std::uint64_t{0};
  EXPECT_EQ(load(ram, f), ElfStatus::kSegmentOutsideRam);
  for (std::uint64_t i = 0; i < kRam; ++i) ASSERT_EQ(ram.base[i], 0xcc) << i;
}

TEST(ElfLoader, RejectsEntryOutsideExecutableSegment) {
  Ram ram;
  auto f = make_elf();
  ehdr(f)->e_entry = kMin + 4096;
  EXPECT_EQ(load(ram, f), ElfStatus::kEntryNotLoaded);
  f = make_elf();
  phdr(f)->p_flags = PF_R | PF_W;
  EXPECT_EQ(load(ram, f), ElfStatus::kEntryNotLoaded);
  f = make_elf();
  phdr(f)->p_type = PT_NOTE;
  EXPECT_EQ(load(ram, f), ElfStatus::kNoLoadableSegment);
}

// ---- PVH kernels (XEN_ELFNOTE_PHYS32_ENTRY) ----

namespace pvh {

constexpr std::uint64_t kVmmStart = 0x9E000, kVmmEnd = 0xA0000;

// A "Xen" note of `type` with a `desc_size`-byte descriptor holding `value`.
std::vector<std::uint8_t> xen_note(std::uint32_t type, std::uint32_t value,
                                   std::uint32_t desc_size = 4) {
  std::vector<std::uint8_t> n(12 + 4 + ((desc_size + 3) & ~3u), 0);
  const std::uint32_t hdr[3] = {4, desc_size, type};
  std::memcpy(n.data(), hdr, 12);
  std::memcpy(n.data() + 12, "Xen", 4);
  std::memcpy(n.data() + 16, &value, std::min<std::uint32_t>(desc_size, 4));
  return n;
}

// One executable PT_LOAD of 256 bytes at `paddr` (+ 256 bss) and the note, either in a PT_NOTE
// segment or (note_in_section) only in an SHT_NOTE section, as Mini-OS's link leaves it.
template <typename Ehdr, typename Phdr, typename Shdr>
std::vector<std::uint8_t> make_pvh(std::uint64_t paddr, std::uint32_t entry,
                                   const std::vector<std::uint8_t>& note, bool note_in_section,
                                   std::uint8_t elf_class, std::uint16_t machine) {
  const std::size_t nph = note_in_section ? 1 : 2;
  const std::size_t data_off = sizeof(Ehdr) + nph * sizeof(Phdr);
  const std::size_t note_off = data_off + 256;
  const std::size_t sh_off = note_off + note.size();
  std::vector<std::uint8_t> f(sh_off + (note_in_section ? 2 * sizeof(Shdr) : 0), 0);
  Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = elf_class;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = machine;
  eh.e_version = EV_CURRENT;
  eh.e_entry = 0xdead;  // the long-mode entry is not what PVH uses
  eh.e_phoff = sizeof(Ehdr);
  eh.e_ehsize = sizeof(Ehdr);
  eh.e_phentsize = sizeof(Phdr);
  eh.e_phnum = static_cast<std::uint16_t>(nph);
  if (note_in_section) {
    eh.e_shoff = sh_off;
    eh.e_shentsize = sizeof(Shdr);
    eh.e_shnum = 2;
  }
  (void)entry;
  Phdr ph{};
  ph.p_type = PT_LOAD;
  ph.p_flags = PF_R | PF_X;
  ph.p_offset = data_off;
  ph.p_vaddr = ph.p_paddr = paddr;
  ph.p_filesz = 256;
  ph.p_memsz = 512;
  std::memcpy(f.data(), &eh, sizeof(eh));
  std::memcpy(f.data() + sizeof(Ehdr), &ph, sizeof(ph));
  if (!note_in_section) {
    Phdr np{};
    np.p_type = PT_NOTE;
    np.p_offset = note_off;
    np.p_filesz = note.size();
    std::memcpy(f.data() + sizeof(Ehdr) + sizeof(Phdr), &np, sizeof(np));
  } else {
    Shdr sh{};
    sh.sh_type = SHT_NOTE;
    sh.sh_offset = note_off;
    sh.sh_size = note.size();
    std::memcpy(f.data() + sh_off + sizeof(Shdr), &sh, sizeof(sh));  // section 0 stays null
  }
  std::memset(f.data() + data_off, 0x5a, 256);
  std::memcpy(f.data() + note_off, note.data(), note.size());
  return f;
}

std::vector<std::uint8_t> elf32(std::uint64_t paddr, std::uint32_t entry, bool in_section = false,
                                std::uint32_t desc_size = 4) {
  return make_pvh<Elf32_Ehdr, Elf32_Phdr, Elf32_Shdr>(
      paddr, entry, xen_note(18, entry, desc_size), in_section, ELFCLASS32, EM_386);
}
std::vector<std::uint8_t> elf64(std::uint64_t paddr, std::uint32_t entry) {
  return make_pvh<Elf64_Ehdr, Elf64_Phdr, Elf64_Shdr>(paddr, entry, xen_note(18, entry), false,
                                                      ELFCLASS64, EM_X86_64);
}

ElfStatus load_pvh(Ram& ram, const std::vector<std::uint8_t>& f, ElfImage* img = nullptr) {
  return load_pvh_elf(f, ram.memory, kVmmStart, kVmmEnd, img);
}

TEST(PvhLoader, Elf32WithNoteInSegmentLoadsAtPhysicalAddress) {
  Ram ram;
  const auto f = elf32(0, 0x10);
  EXPECT_TRUE(is_pvh_elf(f));
  ElfImage img;
  ASSERT_EQ(load_pvh(ram, f, &img), ElfStatus::kOk);
  EXPECT_TRUE(img.pvh);
  EXPECT_EQ(img.entry, 0x10u);  // the note's entry, not e_entry
  EXPECT_EQ(ram.base[0], 0x5a);
  EXPECT_EQ(ram.base[255], 0x5a);
  EXPECT_EQ(ram.base[256], 0);
  EXPECT_EQ(ram.base[512], 0xcc);
}

TEST(PvhLoader, NoteOnlyInSectionHeadersIsFound) {
  Ram ram;
  const auto f = elf32(0x200000, 0x200020, /*in_section=*/true);
  EXPECT_TRUE(is_pvh_elf(f));
  ElfImage img;
  ASSERT_EQ(load_pvh(ram, f, &img), ElfStatus::kOk);
  EXPECT_EQ(img.entry, 0x200020u);
}

TEST(PvhLoader, Elf64WithNoteLoads) {
  Ram ram;
  ElfImage img;
  ASSERT_EQ(load_pvh(ram, elf64(0x100000, 0x100000), &img), ElfStatus::kOk);
  EXPECT_EQ(img.entry, 0x100000u);
}

TEST(PvhLoader, WithoutNoteIsNotPvh) {
  Ram ram;
  const auto f = make_elf();
  EXPECT_FALSE(is_pvh_elf(f));
  EXPECT_EQ(load_pvh(ram, f), ElfStatus::kNotPvh);
}

TEST(PvhLoader, RefusesSegmentsOverVmmPages) {
  Ram ram;
  EXPECT_EQ(load_pvh(ram, elf32(kVmmStart - 256, kVmmStart - 256)), ElfStatus::kOverlapsVmmPages);
  EXPECT_EQ(load_pvh(ram, elf32(kVmmEnd - 4, kVmmEnd - 4)), ElfStatus::kOverlapsVmmPages);
  EXPECT_EQ(load_pvh(ram, elf32(kVmmEnd, kVmmEnd)), ElfStatus::kOk);  // just above
  for (std::uint64_t i = kVmmStart; i < kVmmEnd; ++i) ASSERT_EQ(ram.base[i], 0xcc) << i;
}

TEST(PvhLoader, RefusesSegmentsPastRam) {
  Ram ram;
  EXPECT_EQ(load_pvh(ram, elf32(kRam - 256, kRam - 256)), ElfStatus::kSegmentOutsideRam);
  EXPECT_EQ(load_pvh(ram, elf32(0xfffff000, 0xfffff000)), ElfStatus::kSegmentOutsideRam);
  for (std::uint64_t i = kRam - 4096; i < kRam; ++i) ASSERT_EQ(ram.base[i], 0xcc) << i;
}

TEST(PvhLoader, RefusesBadHeadersAndNotes) {
  Ram ram;
  auto f = elf32(0, 0x10);
  f[EI_CLASS] = 7;
  EXPECT_EQ(load_pvh(ram, f), ElfStatus::kNotElf64);
  f = elf32(0, 0x10);
  reinterpret_cast<Elf32_Ehdr*>(f.data())->e_machine = EM_ARM;
  EXPECT_EQ(load_pvh(ram, f), ElfStatus::kWrongMachine);
  f = elf32(0, 0x10);
  reinterpret_cast<Elf32_Ehdr*>(f.data())->e_phoff = 0xfffffff0;
  EXPECT_EQ(load_pvh(ram, f), ElfStatus::kBadProgramHeaders);
  f = elf32(0, 0x10);
  reinterpret_cast<Elf32_Phdr*>(f.data() + sizeof(Elf32_Ehdr))->p_filesz = 0x100000;
  EXPECT_EQ(load_pvh(ram, f), ElfStatus::kSegmentOutsideFile);
  // A PHYS32_ENTRY that is not 4 bytes, and one whose segment runs past the file.
  EXPECT_EQ(load_pvh(ram, elf32(0, 0x10, false, 8)), ElfStatus::kBadNote);
  f = elf32(0, 0x10);
  reinterpret_cast<Elf32_Phdr*>(f.data() + sizeof(Elf32_Ehdr) + sizeof(Elf32_Phdr))->p_filesz = 0x10000;
  EXPECT_EQ(load_pvh(ram, f), ElfStatus::kBadProgramHeaders);
  // A note whose sizes run past its segment is not read: no PVH entry.
  f = elf32(0, 0x10);
  const std::size_t note_off = sizeof(Elf32_Ehdr) + 2 * sizeof(Elf32_Phdr) + 256;
  const std::uint32_t huge = 0x7fffffff;
  std::memcpy(f.data() + note_off, &huge, 4);
  EXPECT_EQ(load_pvh(ram, f), ElfStatus::kNotPvh);
  // The note's entry must be inside the executable segment.
  EXPECT_EQ(load_pvh(ram, elf32(0, 0x1000)), ElfStatus::kEntryNotLoaded);
  for (std::uint64_t i = 0; i < 4096; ++i) ASSERT_EQ(ram.base[i], 0xcc) << i;
}

}  // namespace pvh

}  // namespace
}  // namespace pvio::hv
