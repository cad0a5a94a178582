// xenbus's hardware side on an x86-64 Windows guest: finding Xen through CPUID, installing
// the hypercall page, issuing hypercalls, and the port I/O of the emulated-device unplug
// protocol. Only a real (or Xen/pvio-hv HVM) guest can run this; it is compiled for Windows
// by the build and checked there only (docs/windows-pv.md).
#pragma once

#include <cstdint>

namespace pvio::windows::xenbus {

struct XenCpuid {
  std::uint32_t base = 0;       // 0x40000000 + n * 0x100 where "XenVMMXenVMM" answered
  std::uint32_t max_leaf = 0;
  std::uint16_t major = 0, minor = 0;  // leaf base+1
  std::uint32_t hypercall_pages = 0;   // leaf base+2: EAX
  std::uint32_t hypercall_msr = 0;     // leaf base+2: EBX
};

// Scans the hypervisor CPUID leaves for Xen's signature (Xen's arch-x86/cpuid.h). False
// when not running on Xen (or on pvio-hv, which answers the same way).
bool find_xen(XenCpuid& out);

// Writes the guest-physical address of a page (page-aligned) to the hypercall MSR: Xen fills
// it with one 32-byte stub per hypercall.
void install_hypercall_page(const XenCpuid& cpu, std::uint64_t page_phys);

// hypercall2(page, op, a1, a2): calls stub `op` of the installed page.
long hypercall2(void* page, unsigned op, std::uint64_t a1, std::uint64_t a2);

// The unplug protocol's port I/O (hvm-emulated-unplug.pandoc): magic, version, product and
// build number, then the re-read magic that says whether the product is accepted.
struct UnplugProbe {
  bool protocol_present = false;
  bool product_accepted = false;
  std::uint8_t version = 0;
};
UnplugProbe probe_unplug(std::uint16_t product, std::uint32_t build);
void write_unplug_mask(std::uint16_t mask);

}  // namespace pvio::windows::xenbus
