// Secondary vCPUs: bring-up from _start and the CPL3 job loop (see smp.h).
#include "smp.h"

#include "arch.h"
#include "cpu.h"
#include "pvio/hv_abi/ports.h"
#include "pvio/xen/sched.h"
#include "pvio/xen/xen.h"

namespace pvio::guest {
namespace {

// One job slot per AP. vCPU 0 writes fn/arg then bumps `posted`; the AP runs the job, stores
// the result, then sets `finished` to `posted` (release), so a reader that sees finished ==
// posted also sees the result.
struct alignas(64) JobSlot {
  uint64_t (*fn)(void*) = nullptr;
  void* arg = nullptr;
  uint64_t result = 0;
  uint32_t posted = 0;
  uint32_t finished = 0;
  uint32_t online = 0;
};
JobSlot g_slots[kMaxCpus];
alignas(16) unsigned char g_ap_stacks[kMaxCpus][65536];

// pvio-hv's hypercall port, called directly (the page may not exist yet): the stub's `out`
// with Xen's argument registers. At CPL3 it traps and the #GP handler replays it at CPL0.
int64_t raw_hypercall(unsigned nr, uint64_t a1, uint64_t a2) {
  int64_t ret;
  asm volatile("outl %%eax, %[port]"
               : "=a"(ret), "+D"(a1), "+S"(a2)
               : "a"(nr), [port] "i"(hv::kHypercallPort)
               : "rdx", "r10", "r8", "memory", "cc");
  return ret;
}

uint64_t ap_loop(void* arg) {
  JobSlot& s = *static_cast<JobSlot*>(arg);
  __atomic_store_n(&s.online, 1u, __ATOMIC_RELEASE);
  uint32_t done = 0;
  for (;;) {
    const uint32_t posted = __atomic_load_n(&s.posted, __ATOMIC_ACQUIRE);
    if (posted == done) {
      sched_poll_ports(nullptr, 0);
      continue;
    }
    s.result = s.fn(s.arg);
    done = posted;
    __atomic_store_n(&s.finished, done, __ATOMIC_RELEASE);
  }
}

}  // namespace

void sched_poll_ports(const uint32_t* ports, unsigned n) {
  xen::sched_poll sp{};
  sp.ports = reinterpret_cast<uint64_t>(ports);
  sp.nr_ports = n;
  sp.timeout = 0;  // no deadline: pvio-hv returns after its bounded wait at the latest
  raw_hypercall(xen::kHypercallSchedOp, xen::SCHEDOP_poll, reinterpret_cast<uint64_t>(&sp));
}

unsigned cpus_online() {
  unsigned n = 1;
  for (unsigned i = 1; i < kMaxCpus; ++i) n += __atomic_load_n(&g_slots[i].online, __ATOMIC_ACQUIRE);
  return n;
}

bool wait_cpus_online(unsigned n, uint32_t timeout_ms, uint64_t khz) {
  const uint64_t t0 = rdtsc(), limit = uint64_t{timeout_ms} * khz;
  while (cpus_online() < n) {
    if (rdtsc() - t0 >= limit) return false;
    sched_poll_ports(nullptr, 0);
  }
  return true;
}

bool start_on_cpu(unsigned cpu, uint64_t (*fn)(void*), void* arg) {
  if (cpu == 0 || cpu >= kMaxCpus) return false;
  JobSlot& s = g_slots[cpu];
  if (!__atomic_load_n(&s.online, __ATOMIC_ACQUIRE)) return false;
  if (__atomic_load_n(&s.finished, __ATOMIC_ACQUIRE) != s.posted) return false;
  s.fn = fn;
  s.arg = arg;
  __atomic_store_n(&s.posted, s.posted + 1, __ATOMIC_RELEASE);
  return true;
}

bool cpu_job_done(unsigned cpu, uint64_t* result) {
  if (cpu == 0 || cpu >= kMaxCpus) return false;
  JobSlot& s = g_slots[cpu];
  if (__atomic_load_n(&s.finished, __ATOMIC_ACQUIRE) != s.posted) return false;
  if (result) *result = s.result;
  return true;
}

}  // namespace pvio::guest

// From _start on an AP: RSP is the boot stack pvio-hv gave this vCPU.
extern "C" [[noreturn]] void ap_main(uint64_t index) {
  using namespace pvio::guest;
  if (index == 0 || index >= kMaxCpus) {
    for (;;) asm volatile("cli\n hlt");
  }
  cpu_init_on(static_cast<unsigned>(index));
  enter_cpl3(ap_loop, &g_slots[index], g_ap_stacks[index] + sizeof(g_ap_stacks[index]));
}
