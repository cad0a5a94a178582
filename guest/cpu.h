// CPU set-up of the guest kernel: GDT, TSS, IDT, running code at CPL3 and the ways it stops.
#pragma once

#include <stdint.h>

namespace pvio::guest {

// Exit codes: 0 success, 1 workload reported errors, 2 bad command line, 3 no device,
// kExceptionExitBase + vector for an unexpected CPU exception.
inline constexpr uint32_t kExitOk = 0, kExitErrors = 1, kExitBadCmdline = 2, kExitNoDevice = 3,
                          kExceptionExitBase = 0x80;

// What an exception stub hands to exception_handler: vector, error code, the CPU's frame.
struct ExceptionFrame {
  uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

// vCPUs the guest kernel can run (pvio-hv's limit).
inline constexpr unsigned kMaxCpus = 8;

// vCPU 0's set-up: GDT, its TSS, the IDT.
void cpu_init();
// A vCPU's own set-up (secondary vCPUs, after vCPU 0's cpu_init): the shared GDT and IDT, its
// TSS and interrupt stack.
void cpu_init_on(unsigned cpu);
// The current privilege level (CS.RPL): 0 for the kernel, 3 inside run_at_cpl3.
unsigned current_cpl();
// Installs an interrupt gate (interrupts off on entry) for `vector`.
void set_interrupt_gate(uint8_t vector, uint64_t handler);
[[noreturn]] void triple_fault();
// Routes IOAPIC input `pin` to `vector` on APIC 0: fixed delivery, active high, level
// triggered (a PCI INTx line or a level GSI), unmasked.
void ioapic_route_level(unsigned pin, uint8_t vector);

}  // namespace pvio::guest

// Reports an unexpected exception on the console and powers off with kExceptionExitBase + vector.
extern "C" [[noreturn]] void exception_handler(const pvio::guest::ExceptionFrame* f);

// Calls fn(arg) at CPL3 (user code and data segments, IOPL 3, on `user_stack_top`, 16-byte
// aligned) and returns its result at CPL0 (guest/cpl3.cc). Interrupts and exceptions taken
// meanwhile run at CPL0 on the TSS's RSP0 stack and iretq back; the privileged instructions the
// guest's drivers use (port I/O, string port I/O, hlt, cli/sti, rdmsr/wrmsr) are emulated by the
// #GP handler, so the same code runs at either level. Needs the U/S bit on every level of the
// page tables that map what fn touches (pvio-hv's identity map has it) and SMEP/SMAP off.
extern "C" uint64_t run_at_cpl3(uint64_t (*fn)(void*), void* arg, void* user_stack_top);
// Enters fn(arg) at CPL3 like run_at_cpl3 but for good: nothing is saved and fn must not
// return (a return faults). For secondary vCPUs, which never come back to CPL0 on their own.
extern "C" [[noreturn]] void enter_cpl3(uint64_t (*fn)(void*), void* arg, void* user_stack_top);

namespace pvio::guest {
// Instructions the #GP handler emulated for CPL3 code since boot (each one a trap into this
// kernel, whose handler runs interpreted on PVM), and of those the `out`s to the doorbell port.
struct Cpl3TrapCounts {
  uint64_t emulated = 0, doorbell_outs = 0;
};
}  // namespace pvio::guest
pvio::guest::Cpl3TrapCounts cpl3_trap_counts();
