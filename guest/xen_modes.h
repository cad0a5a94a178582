// Guest modes for the Xen HVM interface (see xen_modes.cc).
#pragma once

#include <stdint.h>

namespace pvio::guest {

[[noreturn]] void run_xen_probe(bool use_xenstore);
[[noreturn]] void run_hypercall_checks(uint64_t mem_bytes);
[[noreturn]] void run_evtchn_echo(uint64_t count);
[[noreturn]] void run_hostile_xen(uint64_t count, uint64_t seed, uint64_t mem_bytes);

}  // namespace pvio::guest
