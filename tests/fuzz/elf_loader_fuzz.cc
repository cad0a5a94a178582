// libFuzzer target over pvio-hv's ELF and PVH loaders: any bytes as a kernel image. A load
// either fails with a status and leaves guest RAM untouched, or succeeds with every byte
// written inside RAM, above the minimum load address and outside the VMM's pages.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "pvio/hypervisor/elf_loader.h"

namespace {

using namespace pvio;
using namespace pvio::hv;

constexpr std::uint64_t kRam = 2 << 20;
constexpr std::uint64_t kMinLoad = 0x100000;
constexpr std::uint64_t kVmmStart = 0x9E000, kVmmEnd = 0xA0000;

struct Ram {
  Ram() : bytes(kRam + 4096) {
    base = reinterpret_cast<std::uint8_t*>(
        (reinterpret_cast<std::uintptr_t>(bytes.data()) + 4095) & ~std::uintptr_t{4095});
    memory.add_region(0, kRam, base);
  }
  std::vector<std::uint8_t> bytes;
  std::uint8_t* base;
  GuestMemory memory;
};

// A byte that no image writes: untouched RAM keeps it.
constexpr std::uint8_t kFill = 0xA5;

bool untouched(const Ram& r, std::uint64_t from, std::uint64_t to) {
  static const std::vector<std::uint8_t> fill(kRam, kFill);
  return std::memcmp(r.base + from, fill.data(), to - from) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Ram* ram = new Ram;  // reachable for LeakSanitizer
  const std::span<const std::uint8_t> file(data, size);

  std::memset(ram->base, kFill, kRam);
  ElfImage img;
  if (load_elf(file, ram->memory, kMinLoad, &img) == ElfStatus::kOk) {
    if (img.load_start < kMinLoad || img.load_end > kRam || img.load_start > img.load_end) std::abort();
    if (!untouched(*ram, 0, kMinLoad)) std::abort();
  } else if (!untouched(*ram, 0, kRam)) {
    std::abort();
  }

  const bool pvh = is_pvh_elf(file);
  std::memset(ram->base, kFill, kRam);
  ElfImage p;
  const ElfStatus s = load_pvh_elf(file, ram->memory, kVmmStart, kVmmEnd, &p);
  if (s == ElfStatus::kOk) {
    if (!pvh || !p.pvh || p.load_end > kRam || p.load_start > p.load_end) std::abort();
    if (!untouched(*ram, kVmmStart, kVmmEnd)) std::abort();
  } else if (!untouched(*ram, 0, kRam)) {
    std::abort();
  }
  return 0;
}
