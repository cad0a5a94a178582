// mode=cpl-probe: what the same guest code costs at CPL0 and at CPL3 on this host.
#pragma once

#include <stdint.h>

namespace pvio::guest {

// Times an ALU loop, load+store pairs on RAM, port and MMIO writes at CPL0 and at CPL3 (TSC), prints
// one PVIO-RESULT line and powers off.
[[noreturn]] void run_cpl_probe(uint64_t tsc_khz, uint64_t rounds);

}  // namespace pvio::guest
