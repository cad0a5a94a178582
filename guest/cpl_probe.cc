// mode=cpl-probe: times the same loops in the kernel (CPL0) and through run_at_cpl3 (CPL3), so
// the cost of guest supervisor code and guest user code on the host's KVM can be compared.
// Each loop reads the TSC itself, so the privilege switch is not in the figures.
#include "cpl_probe.h"

#include "arch.h"
#include "console.h"
#include "cpu.h"

namespace pvio::guest {

namespace {

enum class Loop : uint32_t { kAlu, kMem, kPio, kMmio };

// ALU iterations (3 instructions each), load+store pairs, port writes per measurement.
constexpr uint64_t kAluIterations = 20000, kMemPairs = 5000, kPioWrites = 500, kMmioWrites = 500;
// An unclaimed port and an unbacked guest-physical page (below the IOAPIC, above pvio-hv's Xen
// pages): every write is one exit to pvio-hv, which ignores it.
constexpr uint16_t kProbePort = 0x80;
constexpr uint64_t kProbeMmio = 0xFE800000;

struct Probe {
  Loop loop;
  uint64_t ticks;
  uint64_t cpl;
};

alignas(4096) volatile uint64_t g_ram[512];
alignas(16) unsigned char g_user_stack[16384];

uint64_t run_probe(void* arg) {
  auto* p = static_cast<Probe*>(arg);
  p->cpl = current_cpl();
  const uint64_t t0 = rdtsc();
  switch (p->loop) {
    case Loop::kAlu: {
      uint64_t n = kAluIterations, acc = 0;
      asm volatile("1: add %0, %1\n dec %0\n jnz 1b" : "+r"(n), "+r"(acc));
      break;
    }
    case Loop::kMem:
      for (uint64_t i = 0; i < kMemPairs; ++i) g_ram[i & 511] = g_ram[i & 511] + 1;
      break;
    case Loop::kPio:
      for (uint64_t i = 0; i < kPioWrites; ++i) outb(kProbePort, static_cast<uint8_t>(i));
      break;
    case Loop::kMmio:
      for (uint64_t i = 0; i < kMmioWrites; ++i) mmio_write32(kProbeMmio, static_cast<uint32_t>(i));
      break;
  }
  p->ticks = rdtsc() - t0;
  return p->cpl;
}

// Best of `rounds` (the first round pays for building shadow page tables), in ns per unit.
struct Figure {
  uint64_t best_ps, first_ps, cpl;
};

Figure measure(Loop loop, bool user, uint64_t rounds, uint64_t units, uint64_t khz) {
  Figure f{~uint64_t{0}, 0, 0};
  for (uint64_t r = 0; r < rounds; ++r) {
    Probe p{loop, 0, 0};
    if (user) {
      run_at_cpl3(run_probe, &p, g_user_stack + sizeof(g_user_stack));
    } else {
      run_probe(&p);
    }
    // ps per unit = ticks * 1e9 / (khz * units)
    const uint64_t ps = p.ticks * 1000000000ull / khz / units;
    if (r == 0) f.first_ps = ps;
    if (ps < f.best_ps) f.best_ps = ps;
    f.cpl = p.cpl;
  }
  return f;
}

}  // namespace

void run_cpl_probe(uint64_t khz, uint64_t rounds) {
  if (rounds == 0) rounds = 3;
  struct Row {
    const char* name;
    Loop loop;
    uint64_t units;
  };
  const Row rows[] = {{"alu_iter", Loop::kAlu, kAluIterations},
                      {"mem_pair", Loop::kMem, kMemPairs},
                      {"pio_write", Loop::kPio, kPioWrites},
                      {"mmio_write", Loop::kMmio, kMmioWrites}};
  Figure cpl0[4], cpl3[4];
  for (unsigned i = 0; i < 4; ++i) {
    cpl0[i] = measure(rows[i].loop, false, rounds, rows[i].units, khz);
    cpl3[i] = measure(rows[i].loop, true, rounds, rows[i].units, khz);
    kprintf("cpl-probe: %s cpl0 %lu ps (first %lu), cpl3 %lu ps (first %lu)\n", rows[i].name,
            cpl0[i].best_ps, cpl0[i].first_ps, cpl3[i].best_ps, cpl3[i].first_ps);
  }
  kprintf("PVIO-RESULT {\"mode\":\"cpl-probe\",\"rounds\":%lu,\"kernel_cpl\":%lu,"
          "\"user_cpl\":%lu,\"alu_iter_ps\":{\"cpl0\":%lu,\"cpl3\":%lu},"
          "\"mem_pair_ps\":{\"cpl0\":%lu,\"cpl3\":%lu},"
          "\"pio_write_ps\":{\"cpl0\":%lu,\"cpl3\":%lu},"
          "\"mmio_write_ps\":{\"cpl0\":%lu,\"cpl3\":%lu},\"tsc_khz\":%lu}\n",
          rounds, cpl0[0].cpl, cpl3[0].cpl, cpl0[0].best_ps, cpl3[0].best_ps, cpl0[1].best_ps,
          cpl3[1].best_ps, cpl0[2].best_ps, cpl3[2].best_ps, cpl0[3].best_ps, cpl3[3].best_ps, khz);
  shutdown(cpl3[0].cpl == 3 && cpl0[0].cpl == 0 ? kExitOk : kExitErrors);
}

}  // namespace pvio::guest
