// Secondary vCPUs of the test guest. pvio-hv enters every vCPU at the kernel's entry; vCPU 0
// boots the kernel, the others (APs) set up their own TSS and then wait at CPL3 for one job at a
// time, posted by vCPU 0. They take no interrupts: an AP that has nothing to do, or waits for an
// event, sleeps in pvio-hv through SCHEDOP_poll, so no IPI or per-vCPU upcall is needed.
#pragma once

#include <stdint.h>

namespace pvio::guest {

// vCPUs that reached their work loop (vCPU 0 counts as online).
unsigned cpus_online();
// Waits up to timeout_ms (TSC at khz) until n vCPUs are online.
bool wait_cpus_online(unsigned n, uint32_t timeout_ms, uint64_t khz);
// Posts fn(arg) to AP `cpu` (1 .. online-1), which runs it at CPL3. False if that AP is not
// online or still busy with its previous job.
bool start_on_cpu(unsigned cpu, uint64_t (*fn)(void*), void* arg);
// True (and the job's return value in *result) once the job posted to `cpu` has returned.
bool cpu_job_done(unsigned cpu, uint64_t* result);
// The calling vCPU sleeps in pvio-hv until one of the ports is pending in shared_info or a
// bounded time (about 10 ms) has passed (SCHEDOP_poll: the caller re-checks). With n == 0 it
// just sleeps that long. Works at CPL0 and CPL3, before and after xen_init.
void sched_poll_ports(const uint32_t* ports, unsigned n);

}  // namespace pvio::guest
