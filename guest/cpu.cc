// Entry point, GDT, IDT with exception handlers that report and power off, and shutdown.
#include <stdint.h>

#include "arch.h"
#include "console.h"
#include "cpu.h"
#include "pvio/hypervisor/boot_info.h"

extern "C" void kernel_main(const pvio::hv::BootInfo* info);

// Entry from pvio-hv in long mode: RDI = boot info, RSI = vCPU index. vCPU 0 switches to the
// kernel stack and runs kernel_main; the others park (the test kernel is uniprocessor).
asm(R"(
  .section .text.start, "ax"
  .global _start
_start:
  test %rsi, %rsi
  jnz 2f
  lea kernel_stack_top(%rip), %rsp
  xor %ebp, %ebp
  call kernel_main
1:
  cli
  hlt
  jmp 1b
2:
  cli
  hlt
  jmp 2b

  .section .bss
  .balign 16
kernel_stack:
  .skip 65536
kernel_stack_top:
)");

// Exception stubs: push a dummy error code where the CPU does not, then the vector.
asm(R"(
  .text
  .macro ISR_NOERR n
  .global isr\n
isr\n:
  pushq $0
  pushq $\n
  jmp isr_common
  .endm
  .macro ISR_ERR n
  .global isr\n
isr\n:
  pushq $\n
  jmp isr_common
  .endm
  ISR_NOERR 0
  ISR_NOERR 1
  ISR_NOERR 2
  ISR_NOERR 3
  ISR_NOERR 4
  ISR_NOERR 5
  ISR_NOERR 6
  ISR_NOERR 7
  ISR_ERR 8
  ISR_NOERR 9
  ISR_ERR 10
  ISR_ERR 11
  ISR_ERR 12
  ISR_ERR 13
  ISR_ERR 14
  ISR_NOERR 15
  ISR_NOERR 16
  ISR_ERR 17
  ISR_NOERR 18
  ISR_NOERR 19
  ISR_NOERR 20
  ISR_ERR 21
  ISR_NOERR 22
  ISR_NOERR 23
  ISR_NOERR 24
  ISR_NOERR 25
  ISR_NOERR 26
  ISR_NOERR 27
  ISR_NOERR 28
  ISR_ERR 29
  ISR_ERR 30
  ISR_NOERR 31
isr_common:
  mov %rsp, %rdi
  and $-16, %rsp
  call exception_handler
1:
  hlt
  jmp 1b

  .section .rodata
  .balign 8
  .global isr_table
isr_table:
  .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
  .quad isr\n
  .endr
  .text
)");

extern "C" const uint64_t isr_table[32];

namespace pvio::guest {

namespace {

struct [[gnu::packed]] TablePointer {
  uint16_t limit;
  uint64_t base;
};

struct IdtEntry {
  uint16_t offset_low;
  uint16_t selector;
  uint8_t ist;
  uint8_t type_attr;
  uint16_t offset_mid;
  uint32_t offset_high;
  uint32_t zero;
};

alignas(16) uint64_t gdt[3] = {0, 0x00af9a000000ffffull, 0x00cf92000000ffffull};
alignas(16) IdtEntry idt[256];

const char* const kNames[32] = {
    "divide error", "debug", "NMI", "breakpoint", "overflow", "bound range", "invalid opcode",
    "device not available", "double fault", "coprocessor overrun", "invalid TSS",
    "segment not present", "stack fault", "general protection", "page fault", "reserved",
    "x87 FP", "alignment check", "machine check", "SIMD FP", "virtualization", "control protection",
    "reserved", "reserved", "reserved", "reserved", "reserved", "reserved", "hypervisor injection",
    "VMM communication", "security", "reserved"};

}  // namespace

struct ExceptionFrame {
  uint64_t vector, error, rip, cs, rflags, rsp, ss;
};

void cpu_init() {
  TablePointer gp{sizeof(gdt) - 1, reinterpret_cast<uint64_t>(gdt)};
  // Load our GDT, reload the data segments and CS (far return to the next instruction).
  asm volatile(
      "lgdt %0\n"
      "mov $0x10, %%ax\n"
      "mov %%ax, %%ds\n"
      "mov %%ax, %%es\n"
      "mov %%ax, %%ss\n"
      "mov %%ax, %%fs\n"
      "mov %%ax, %%gs\n"
      "pushq $0x08\n"
      "lea 1f(%%rip), %%rax\n"
      "pushq %%rax\n"
      "lretq\n"
      "1:\n"
      :
      : "m"(gp)
      : "rax", "memory");
  for (unsigned i = 0; i < 32; ++i) {
    const uint64_t h = isr_table[i];
    idt[i] = IdtEntry{static_cast<uint16_t>(h), 0x08, 0, 0x8e, static_cast<uint16_t>(h >> 16),
                      static_cast<uint32_t>(h >> 32), 0};
  }
  TablePointer ip{sizeof(idt) - 1, reinterpret_cast<uint64_t>(idt)};
  asm volatile("lidt %0" ::"m"(ip) : "memory");
}

void set_interrupt_gate(uint8_t vector, uint64_t handler) {
  idt[vector] = IdtEntry{static_cast<uint16_t>(handler), 0x08, 0, 0x8e,
                         static_cast<uint16_t>(handler >> 16),
                         static_cast<uint32_t>(handler >> 32), 0};
}

[[noreturn]] void triple_fault() {
  // An empty IDT turns the next exception into a double fault, then a triple fault.
  TablePointer empty{0, 0};
  asm volatile("lidt %0\n"
               "ud2" ::"m"(empty)
               : "memory");
  __builtin_unreachable();
}

[[noreturn]] void shutdown(uint32_t code) {
  for (;;) outl(pvio::hv::kDebugExitPort, code);
}

}  // namespace pvio::guest

extern "C" [[noreturn]] void exception_handler(const pvio::guest::ExceptionFrame* f) {
  using namespace pvio::guest;
  uint64_t cr2;
  asm volatile("mov %%cr2, %0" : "=r"(cr2));
  kprintf("PVIO-GUEST exception %lu (%s) error=%lx rip=%lx rsp=%lx cr2=%lx\n", f->vector,
          kNames[f->vector & 31], f->error, f->rip, f->rsp, cr2);
  shutdown(kExceptionExitBase + static_cast<uint32_t>(f->vector));
}
