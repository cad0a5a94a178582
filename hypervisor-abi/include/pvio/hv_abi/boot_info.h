// Boot protocol between pvio-hv and a guest kernel it starts directly in 64-bit long mode.
// Shared by hypervisor/ and guest/: freestanding, fixed-width fields only.
//
// On entry to the ELF entry point, every vCPU is in long mode with paging on:
//   - page tables identity-map guest-physical [0, identity_map_bytes) with 2 MiB pages,
//   - CS = 0x08 (64-bit code), DS/ES/SS/FS/GS = 0x10 (flat data), interrupts disabled,
//   - RDI = guest-physical address of the BootInfo page (below), RSI = vCPU index,
//   - RSP = top of a 16 KiB per-vCPU boot stack inside the low reserved area.
#pragma once

#include <stdint.h>

namespace pvio::hv {

inline constexpr uint64_t kBootInfoMagic = 0x4f49564f42564950ull;  // "PIVBOVIO" little endian
inline constexpr uint32_t kBootInfoVersion = 1;
inline constexpr uint32_t kBootCmdlineMax = 2048;  // bytes including the terminating NUL

// Guest-physical layout of the low reserved area written by the VMM. Kernel segments must
// load at or above kKernelMinLoad and entirely inside guest RAM.
inline constexpr uint64_t kBootInfoGpa = 0x1000;
inline constexpr uint64_t kBootGdtGpa = 0x2000;
inline constexpr uint64_t kBootPml4Gpa = 0x3000;
inline constexpr uint64_t kBootPdptGpa = 0x4000;
inline constexpr uint64_t kBootPdGpa = 0x5000;  // 4 page directories: 0x5000..0x8fff
inline constexpr uint64_t kBootIdentityMapBytes = 4ull << 30;
inline constexpr uint64_t kBootStackTop = 0x80000;   // vCPU n gets [top - (n+1)*16K, top - n*16K)
inline constexpr uint64_t kBootStackSize = 0x4000;
inline constexpr uint64_t kKernelMinLoad = 0x100000;

// Guest-visible I/O ports of pvio-hv's own (non-PC) devices.
inline constexpr uint16_t kDebugExitPort = 0x501;  // out{b,w,l} code: power off with `code`

struct BootInfo {
  uint64_t magic;               // kBootInfoMagic
  uint32_t version;             // kBootInfoVersion
  uint32_t vcpus;               // number of vCPUs started at the entry point
  uint64_t mem_bytes;           // guest RAM: one region at guest-physical 0
  uint64_t identity_map_bytes;  // how much of guest-physical space the boot page tables map
  uint64_t tsc_khz;             // host-measured TSC frequency of the vCPUs (KVM_GET_TSC_KHZ)
  uint64_t kernel_end;          // first byte above the highest loaded segment (page aligned)
  uint32_t cmdline_len;         // bytes before the NUL
  uint32_t reserved0;
  char cmdline[kBootCmdlineMax];  // NUL-terminated command line
};

static_assert(sizeof(BootInfo) <= 4096, "BootInfo must fit its page");

}  // namespace pvio::hv
