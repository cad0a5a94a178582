// Running guest code at CPL3, and the #GP handler that lets it use the privileged instructions
// the drivers need. Why: this host's KVM (PVM) runs a non-PVM-aware guest's CPL0 code through
// its instruction emulator (about 1 us per instruction) but CPL3 code natively, so the
// workloads run at CPL3 (docs/bench.md). PVM runs guest user mode in hardware ring 3 with the
// host's IOPL, so `in`/`out`/`cli`/`sti` at CPL3 raise #GP whatever the guest's RFLAGS.IOPL,
// and `int $n` raises #UD: the way back to CPL0 is a #GP, and the handler below emulates
// those instructions at CPL0 (cost: one trap plus the handler, which runs emulated).
#include <stdint.h>

#include "cpu.h"
#include "pvio/xen/xen.h"
#include "pvio/xen/memory.h"
#include "pvio/xen/grant_table.h"
#include "pvio/xen/event_channel.h"
#include "pvio/xen/hvm/params.h"
#include "pvio/xen/hvm/hvm_op.h"
#include "pvio/xen/sched.h"
#include "pvio/xen/version.h"
#include "pvio/xen/arch-x86/cpuid.h"
#include "pvio/hv_abi/ports.h"

// run_at_cpl3(fn, arg, user_stack_top): saves the callee-saved registers, RFLAGS and RSP, then
// iretq to cpl3_trampoline at CPL3 with IOPL 3 and IF as the caller had it. The trampoline
// calls fn(arg) on the user stack, stores the result and executes `hlt` at cpl3_return_point;
// the #GP handler recognises that address and jumps to cpl3_resume, which abandons the RSP0
// stack, restores the saved kernel RSP and returns from run_at_cpl3.
//
// cpl3_gp_entry: #GP stub. Saves every GPR into a Cpl3Regs on the RSP0 (or current) stack and
// calls cpl3_gp_handler, which emulates the faulting instruction and returns, or does not
// return (cpl3_resume, or exception_handler for a real fault).
asm(R"(
  .text
  .global run_at_cpl3
run_at_cpl3:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  pushfq
  mov %rsp, cpl3_saved_rsp(%rip)
  pushq $0x1b
  pushq %rdx
  pushfq
  orq $0x3000, (%rsp)
  pushq $0x23
  lea cpl3_trampoline(%rip), %rax
  pushq %rax
  mov %rdi, %rax
  mov %rsi, %rdi
  iretq
cpl3_trampoline:
  mov $0x1b, %ecx
  mov %ecx, %ds
  mov %ecx, %es
  call *%rax
  mov %rax, cpl3_result(%rip)
  .global cpl3_return_point
cpl3_return_point:
  hlt
  ud2
  .global cpl3_resume
cpl3_resume:
  mov cpl3_saved_rsp(%rip), %rsp
  mov $0x10, %eax
  mov %eax, %ds
  mov %eax, %es
  mov %eax, %ss
  mov cpl3_result(%rip), %rax
  popfq
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret

  .global enter_cpl3
enter_cpl3:
  pushq $0x1b
  pushq %rdx
  pushfq
  orq $0x3000, (%rsp)
  pushq $0x23
  lea cpl3_enter_trampoline(%rip), %rax
  pushq %rax
  mov %rdi, %rax
  mov %rsi, %rdi
  iretq
cpl3_enter_trampoline:
  mov $0x1b, %ecx
  mov %ecx, %ds
  mov %ecx, %es
  call *%rax
  ud2

  .global cpl3_gp_entry
cpl3_gp_entry:
  pushq %rax
  pushq %rcx
  pushq %rdx
  pushq %rbx
  pushq %rbp
  pushq %rsi
  pushq %rdi
  pushq %r8
  pushq %r9
  pushq %r10
  pushq %r11
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  mov %rsp, %rdi
  sub $8, %rsp
  call cpl3_gp_handler
  add $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %r11
  popq %r10
  popq %r9
  popq %r8
  popq %rdi
  popq %rsi
  popq %rbp
  popq %rbx
  popq %rdx
  popq %rcx
  popq %rax
  add $8, %rsp
  iretq

  .bss
  .balign 8
cpl3_saved_rsp:
  .skip 8
cpl3_result:
  .skip 8
  .text
)");

extern "C" char cpl3_return_point[];
extern "C" [[noreturn]] void cpl3_resume();

namespace {

// Register image built by cpl3_gp_entry (push order reversed), then the CPU's #GP frame.
struct Cpl3Regs {
  uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rdi, rsi, rbp, rbx, rdx, rcx, rax;
  uint64_t error, rip, cs, rflags, rsp, ss;
};

constexpr uint64_t kRflagsIf = 1u << 9, kRflagsDf = 1u << 10;

void set_sized(uint64_t* reg, uint64_t v, unsigned size) {
  if (size == 1) *reg = (*reg & ~uint64_t{0xff}) | (v & 0xff);
  else if (size == 2) *reg = (*reg & ~uint64_t{0xffff}) | (v & 0xffff);
  else *reg = static_cast<uint32_t>(v);  // 32-bit results zero-extend, as the CPU does
}

void port_out(uint16_t port, uint64_t v, unsigned size) {
  if (size == 1) asm volatile("outb %b0, %w1" ::"a"(v), "Nd"(port));
  else if (size == 2) asm volatile("outw %w0, %w1" ::"a"(v), "Nd"(port));
  else asm volatile("outl %k0, %w1" ::"a"(v), "Nd"(port));
}

uint64_t port_in(uint16_t port, unsigned size) {
  uint32_t v = 0;
  if (size == 1) asm volatile("inb %w1, %b0" : "+a"(v) : "Nd"(port));
  else if (size == 2) asm volatile("inw %w1, %w0" : "+a"(v) : "Nd"(port));
  else asm volatile("inl %w1, %k0" : "+a"(v) : "Nd"(port));
  return v;
}

// pvio-hv's hypercall and CPUID ports read and write the vCPU's general registers around the
// `out` (arguments in RDI, RSI, RDX, R10, R8; results in RAX..RDX), so the `out` is executed
// with the user's registers loaded and the results are copied back.
template <uint16_t kPort>
void register_port_out(Cpl3Regs* r) {
  uint64_t rax = static_cast<uint32_t>(r->rax), rbx = r->rbx, rcx = r->rcx, rdx = r->rdx;
  register uint64_t r8 asm("r8") = r->r8;
  register uint64_t r10 asm("r10") = r->r10;
  asm volatile("outl %%eax, %[port]"
               : "+a"(rax), "+b"(rbx), "+c"(rcx), "+d"(rdx), "+r"(r8), "+r"(r10)
               : [port] "i"(kPort), "S"(r->rsi), "D"(r->rdi)
               : "memory");
  r->rax = rax;
  r->rbx = rbx;
  r->rcx = rcx;
  r->rdx = rdx;
}

// `rep ins`/`rep outs` (or one iteration without rep) at CPL0 with the user's RDI/RSI/RCX/DX.
void string_io(Cpl3Regs* r, bool in, unsigned size, bool rep) {
  if (r->rflags & kRflagsDf) return;  // not used by the guest; leave it to fault again
  uint64_t count = rep ? r->rcx : 1;
  const auto port = static_cast<uint16_t>(r->rdx);
  if (in) {
    void* dst = reinterpret_cast<void*>(r->rdi);
    if (size == 1) asm volatile("rep insb" : "+D"(dst), "+c"(count) : "d"(port) : "memory");
    else if (size == 2) asm volatile("rep insw" : "+D"(dst), "+c"(count) : "d"(port) : "memory");
    else asm volatile("rep insl" : "+D"(dst), "+c"(count) : "d"(port) : "memory");
    r->rdi = reinterpret_cast<uint64_t>(dst);
  } else {
    const void* src = reinterpret_cast<const void*>(r->rsi);
    if (size == 1) asm volatile("rep outsb" : "+S"(src), "+c"(count) : "d"(port) : "memory");
    else if (size == 2) asm volatile("rep outsw" : "+S"(src), "+c"(count) : "d"(port) : "memory");
    else asm volatile("rep outsl" : "+S"(src), "+c"(count) : "d"(port) : "memory");
    r->rsi = reinterpret_cast<uint64_t>(src);
  }
  if (rep) r->rcx = count;
}

// Emulates the instruction at r->rip; false when it is not one we emulate (a real fault).
bool emulate(Cpl3Regs* r) {
  const auto* ip = reinterpret_cast<const uint8_t*>(r->rip);
  unsigned len = 0, size = 4;
  bool rep = false;
  for (;; ++len) {
    if (len == 4) return false;
    if (ip[len] == 0x66) size = 2;
    else if (ip[len] == 0xf3) rep = true;
    else break;
  }
  const uint8_t op = ip[len++];
  switch (op) {
    case 0xe4: case 0xe5:  // in al/eax, imm8
      set_sized(&r->rax, port_in(ip[len], op == 0xe4 ? 1 : size), op == 0xe4 ? 1 : size);
      ++len;
      break;
    case 0xec: case 0xed:  // in al/eax, dx
      set_sized(&r->rax, port_in(static_cast<uint16_t>(r->rdx), op == 0xec ? 1 : size),
                op == 0xec ? 1 : size);
      break;
    case 0xe6: case 0xe7:  // out imm8, al/eax
      if (op == 0xe7 && size == 4 && ip[len] == pvio::hv::kHypercallPort) {
        register_port_out<pvio::hv::kHypercallPort>(r);
      } else if (op == 0xe7 && size == 4 && ip[len] == pvio::hv::kCpuidPort) {
        register_port_out<pvio::hv::kCpuidPort>(r);
      } else {
        port_out(ip[len], r->rax, op == 0xe6 ? 1 : size);
      }
      ++len;
      break;
    case 0xee: case 0xef:  // out dx, al/eax
      port_out(static_cast<uint16_t>(r->rdx), r->rax, op == 0xee ? 1 : size);
      break;
    case 0x6c: case 0x6d: case 0x6e: case 0x6f:  // ins / outs
      if (r->rflags & kRflagsDf) return false;
      string_io(r, op <= 0x6d, (op & 1) ? size : 1, rep);
      break;
    case 0xfa:  // cli
      r->rflags &= ~kRflagsIf;
      break;
    case 0xfb:  // sti; `sti; hlt` is taken as one step so that no wake-up is lost in between
      if (ip[len] == 0xf4) {
        ++len;
        asm volatile("sti\n hlt\n cli" ::: "memory");
      }
      r->rflags |= kRflagsIf;
      break;
    case 0xf4:  // hlt: waits with interrupts on, as the guest's only hlt follows an sti
      asm volatile("sti\n hlt\n cli" ::: "memory");
      break;
    case 0x0f:
      if (ip[len] == 0x30) {  // wrmsr
        asm volatile("wrmsr" ::"c"(static_cast<uint32_t>(r->rcx)),
                     "a"(static_cast<uint32_t>(r->rax)), "d"(static_cast<uint32_t>(r->rdx)));
      } else if (ip[len] == 0x32) {  // rdmsr
        uint32_t lo, hi;
        asm volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(static_cast<uint32_t>(r->rcx)));
        r->rax = lo;
        r->rdx = hi;
      } else {
        return false;
      }
      ++len;
      break;
    default:
      return false;
  }
  r->rip += len;
  return true;
}

}  // namespace

namespace {
pvio::guest::Cpl3TrapCounts g_traps;
}

pvio::guest::Cpl3TrapCounts cpl3_trap_counts() { return g_traps; }

extern "C" void cpl3_gp_handler(Cpl3Regs* r) {
  if ((r->cs & 3) == 3) {
    if (r->rip == reinterpret_cast<uint64_t>(cpl3_return_point)) cpl3_resume();
    const auto* ip = reinterpret_cast<const uint8_t*>(r->rip);
    const bool doorbell_out = ip[0] == 0xe7 && ip[1] == pvio::hv::kDoorbellPort;
    if (r->error == 0 && emulate(r)) {
      // Every vCPU counts here.
      __atomic_fetch_add(&g_traps.emulated, 1, __ATOMIC_RELAXED);
      if (doorbell_out) __atomic_fetch_add(&g_traps.doorbell_outs, 1, __ATOMIC_RELAXED);
      return;
    }
  }
  const pvio::guest::ExceptionFrame f{13, r->error, r->rip, r->cs, r->rflags, r->rsp, r->ss};
  exception_handler(&f);
}
