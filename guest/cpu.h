// CPU set-up of the guest kernel: GDT, IDT and the ways it stops.
#pragma once

#include <stdint.h>

namespace pvio::guest {

// Exit codes: 0 success, 1 workload reported errors, 2 bad command line, 3 no device,
// kExceptionExitBase + vector for an unexpected CPU exception.
inline constexpr uint32_t kExitOk = 0, kExitErrors = 1, kExitBadCmdline = 2, kExitNoDevice = 3,
                          kExceptionExitBase = 0x80;

void cpu_init();
// Installs an interrupt gate (interrupts off on entry) for `vector`.
void set_interrupt_gate(uint8_t vector, uint64_t handler);
[[noreturn]] void triple_fault();

}  // namespace pvio::guest
