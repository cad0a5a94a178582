// Entry point, GDT (with user segments and a TSS), IDT with exception handlers that report and
// power off, running a function at CPL3, and shutdown.
#include <stdint.h>

#include "arch.h"
#include "console.h"
#include "cpu.h"
#include "pvio/hv_abi/boot_info.h"

extern "C" void kernel_main(const pvio::hv::BootInfo* info);

// Entry from pvio-hv in long mode: RDI = boot info, RSI = vCPU index. vCPU 0 switches to the
// kernel stack and runs kernel_main; the others stay on the boot stack pvio-hv gave them and
// run ap_main (guest/smp.cc), which waits for work.
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
  xor %ebp, %ebp
  and $-16, %rsp
  mov %rsi, %rdi
  call ap_main
  jmp 1b

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

extern "C" char cpl3_gp_entry[];

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

// 64-bit TSS: only RSP0 matters (the stack an interrupt from CPL3 lands on). The I/O bitmap
// offset points past the limit, so port access at CPL3 is governed by IOPL alone.
struct [[gnu::packed]] Tss {
  uint32_t reserved0;
  uint64_t rsp[3];
  uint64_t reserved1;
  uint64_t ist[7];
  uint64_t reserved2;
  uint16_t reserved3;
  uint16_t iopb_offset;
};
static_assert(sizeof(Tss) == 104);

// null, 0x08 kernel code, 0x10 kernel data, 0x18 user data (DPL 3), 0x20 user code (DPL 3,
// 64-bit), then one TSS (two slots) per vCPU from 0x28: a TSS is marked busy by the CPU that
// loads it, so each vCPU has its own, with its own interrupt stack.
constexpr uint16_t kTssSelector = 0x28;
alignas(16) uint64_t gdt[5 + 2 * kMaxCpus] = {0, 0x00af9a000000ffffull, 0x00cf92000000ffffull,
                                              0x00cff2000000ffffull, 0x00affa000000ffffull};
alignas(16) IdtEntry idt[256];
alignas(16) Tss tss[kMaxCpus];
alignas(16) unsigned char interrupt_stack[kMaxCpus][16384];

IdtEntry gate(uint64_t handler, uint8_t type_attr) {
  return IdtEntry{static_cast<uint16_t>(handler), 0x08, 0, type_attr,
                  static_cast<uint16_t>(handler >> 16), static_cast<uint32_t>(handler >> 32), 0};
}

const char* const kNames[32] = {
    "divide error", "debug", "NMI", "breakpoint", "overflow", "bound range", "invalid opcode",
    "device not available", "double fault", "coprocessor overrun", "invalid TSS",
    "segment not present", "stack fault", "general protection", "page fault", "reserved",
    "x87 FP", "alignment check", "machine check", "SIMD FP", "virtualization", "control protection",
    "reserved", "reserved", "reserved", "reserved", "reserved", "reserved", "hypervisor injection",
    "VMM communication", "security", "reserved"};

}  // namespace


// Set once vCPU 0 has filled the IDT: the others load it only then.
static uint32_t g_idt_ready = 0;

void cpu_init() {
  cpu_init_on(0);
  __atomic_store_n(&g_idt_ready, 1u, __ATOMIC_RELEASE);
}

void cpu_init_on(unsigned cpu) {
  if (cpu >= kMaxCpus) triple_fault();
  if (cpu != 0)
    while (!__atomic_load_n(&g_idt_ready, __ATOMIC_ACQUIRE)) asm volatile("pause");
  Tss& t = tss[cpu];
  t.rsp[0] = reinterpret_cast<uint64_t>(interrupt_stack[cpu] + sizeof(interrupt_stack[cpu]));
  t.iopb_offset = sizeof(Tss);
  const uint64_t tss_base = reinterpret_cast<uint64_t>(&t);
  // Available 64-bit TSS (type 9), present, limit sizeof(Tss) - 1.
  gdt[5 + 2 * cpu] = (sizeof(Tss) - 1) | ((tss_base & 0xffffff) << 16) | (uint64_t{0x89} << 40) |
                     ((tss_base >> 24 & 0xff) << 56);
  gdt[6 + 2 * cpu] = tss_base >> 32;
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
  asm volatile("ltr %0" ::"r"(static_cast<uint16_t>(kTssSelector + 16 * cpu)));
  if (cpu == 0) {
    for (unsigned i = 0; i < 32; ++i) idt[i] = gate(isr_table[i], 0x8e);
    // #GP goes to the CPL3 support first: it emulates port I/O, hlt, cli/sti and MSR access
    // for code running at CPL3 and hands everything else to exception_handler.
    idt[13] = gate(reinterpret_cast<uint64_t>(cpl3_gp_entry), 0x8e);
  }
  TablePointer ip{sizeof(idt) - 1, reinterpret_cast<uint64_t>(idt)};
  asm volatile("lidt %0" ::"m"(ip) : "memory");
}

void set_interrupt_gate(uint8_t vector, uint64_t handler) { idt[vector] = gate(handler, 0x8e); }

unsigned current_cpl() {
  uint16_t cs;
  asm volatile("mov %%cs, %0" : "=r"(cs));
  return cs & 3u;
}

[[noreturn]] void triple_fault() {
  // An empty IDT turns the next exception into a double fault, then a triple fault.
  TablePointer empty{0, 0};
  asm volatile("lidt %0\n"
               "ud2" ::"m"(empty)
               : "memory");
  __builtin_unreachable();
}

void ioapic_route_level(unsigned pin, uint8_t vector) {
  constexpr uint64_t kIoapicBase = 0xFEC00000;  // IOREGSEL; IOWIN at +0x10
  const uint32_t index = 0x10 + 2u * pin;       // redirection entry `pin`, low dword
  mmio_write32(kIoapicBase, index + 1);
  mmio_write32(kIoapicBase + 0x10, 0);          // destination APIC 0
  mmio_write32(kIoapicBase, index);
  mmio_write32(kIoapicBase + 0x10, vector | (1u << 15));  // level, active high, unmasked
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
