// x86-64 CPUID / MSR / port I/O for xenbus (see hw.h). GCC inline assembly: the mingw-w64
// build has no MSVC intrinsics.
#include "hw.h"

#include <cstring>

#include "unplug.h"

namespace pvio::windows::xenbus {

namespace {

void cpuid(std::uint32_t leaf, std::uint32_t r[4]) {
  __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(0));
}
void wrmsr(std::uint32_t msr, std::uint64_t v) {
  __asm__ volatile("wrmsr" : : "c"(msr), "a"(static_cast<std::uint32_t>(v)),
                   "d"(static_cast<std::uint32_t>(v >> 32)));
}
std::uint8_t inb(std::uint16_t port) {
  std::uint8_t v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
std::uint16_t inw(std::uint16_t port) {
  std::uint16_t v;
  __asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
void outw(std::uint16_t port, std::uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }
void outl(std::uint16_t port, std::uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port)); }

}  // namespace

bool find_xen(XenCpuid& out) {
  for (std::uint32_t base = 0x40000000; base < 0x40010000; base += 0x100) {
    std::uint32_t r[4];
    cpuid(base, r);
    char sig[13];
    std::memcpy(sig, &r[1], 4);
    std::memcpy(sig + 4, &r[2], 4);
    std::memcpy(sig + 8, &r[3], 4);
    sig[12] = '\0';
    if (std::strcmp(sig, "XenVMMXenVMM") != 0 || r[0] < base + 2) continue;
    out.base = base;
    out.max_leaf = r[0];
    cpuid(base + 1, r);
    out.major = static_cast<std::uint16_t>(r[0] >> 16);
    out.minor = static_cast<std::uint16_t>(r[0]);
    cpuid(base + 2, r);
    out.hypercall_pages = r[0];
    out.hypercall_msr = r[1];
    return true;
  }
  return false;
}

void install_hypercall_page(const XenCpuid& cpu, std::uint64_t page_phys) {
  wrmsr(cpu.hypercall_msr, page_phys);  // page index 0 in the low 12 bits
}

long hypercall2(void* page, unsigned op, std::uint64_t a1, std::uint64_t a2) {
  long ret;
  void* stub = static_cast<char*>(page) + op * 32;
  // Xen's x86-64 hypercall ABI: arguments in rdi, rsi; result in rax; the stub clobbers rcx
  // and r11 (syscall-style). The Windows ABI treats rdi/rsi as callee-saved, hence the clobbers.
  __asm__ volatile("call *%[stub]"
                   : "=a"(ret), "+D"(a1), "+S"(a2)
                   : [stub] "r"(stub)
                   : "rcx", "r11", "memory");
  return ret;
}

UnplugProbe probe_unplug(std::uint16_t product, std::uint32_t build) {
  UnplugProbe p;
  if (inw(kUnplugPort) != kUnplugMagic) return p;
  p.protocol_present = true;
  p.version = inb(kUnplugVersionPort);
  if (p.version >= 1) {
    outw(kUnplugVersionPort, product);
    outl(kUnplugPort, build);
    // A device model that refuses this product stops answering the magic.
    p.product_accepted = inw(kUnplugPort) == kUnplugMagic;
  } else {
    p.product_accepted = true;  // version 0 has no product check
  }
  return p;
}

void write_unplug_mask(std::uint16_t mask) { outw(kUnplugPort, mask); }

}  // namespace pvio::windows::xenbus
