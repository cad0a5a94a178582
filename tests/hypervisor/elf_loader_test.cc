// ELF loader: images are validated against the file and guest RAM before anything is copied.
#include <elf.h>

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

}  // namespace
}  // namespace pvio::hv
