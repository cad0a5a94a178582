// The pvio test guest kernel: boots on pvio-hv, sets up the CPU and console, then hands over to
// the workload runner.
#include "alloc.h"
#include "arch.h"
#include "console.h"
#include "cpu.h"
#include "workload.h"

extern "C" char __kernel_end[];

extern "C" [[noreturn]] void kernel_main(const pvio::hv::BootInfo* info) {
  using namespace pvio::guest;
  console_init();
  cpu_init();
  if (info->magic != pvio::hv::kBootInfoMagic || info->version != pvio::hv::kBootInfoVersion) {
    kprintf("PVIO-GUEST bad boot info magic %lx version %u\n", info->magic, info->version);
    shutdown(kExitBadCmdline);
  }
  kprintf("pvio guest kernel: booted on %u vcpu(s), %lu MiB RAM, tsc %lu kHz\n", info->vcpus,
          info->mem_bytes >> 20, info->tsc_khz);
  kprintf("cmdline: %s\n", info->cmdline);
  uint64_t heap = reinterpret_cast<uint64_t>(__kernel_end);
  if (info->kernel_end > heap) heap = info->kernel_end;
  alloc_init((heap + 0xfff) & ~uint64_t{0xfff}, info->mem_bytes);
  run_command_line(info);
}
