// pvio-hv's private guest interface (not Xen ABI): the I/O ports and MMIO page through which a
// guest reaches pvio-hv's Xen emulation on hosts where KVM cannot offer the real mechanisms
// (PVM rejects KVM_SET_CPUID2 and cannot emulate vmcall's page), the hypercall-page stub
// layout pvio-hv writes, and pvio-hv's own HVM parameter. Shared by hypervisor/ and the
// freestanding guest/: fixed-width fields only.
#pragma once

#include <stdint.h>

#include "pvio/xen/arch-x86/cpuid.h"

namespace pvio::hv {

inline constexpr uint32_t kXenVersionMajor = 4, kXenVersionMinor = 17;
// Where writing the guest-physical address of a page asks for the hypercall page.
inline constexpr uint32_t kHypercallMsr = 0x40000000;
inline constexpr uint32_t kHypercallPages = 1;

// Xen's leaves as pvio-hv answers them (0x40000000 + 0..2); other leaves read as zeros.
struct CpuidLeaf {
  uint32_t eax, ebx, ecx, edx;
};
constexpr CpuidLeaf cpuid_leaf(uint32_t leaf) {
  using namespace pvio::xen;
  if (leaf == XEN_CPUID_FIRST_LEAF)
    return {XEN_CPUID_FIRST_LEAF + XEN_CPUID_LEAF_HYPERCALL, XEN_CPUID_SIGNATURE_EBX,
            XEN_CPUID_SIGNATURE_ECX, XEN_CPUID_SIGNATURE_EDX};
  if (leaf == XEN_CPUID_FIRST_LEAF + XEN_CPUID_LEAF_VERSION)
    return {(kXenVersionMajor << 16) | kXenVersionMinor, 0, 0, 0};
  if (leaf == XEN_CPUID_FIRST_LEAF + XEN_CPUID_LEAF_HYPERCALL)
    return {kHypercallPages, kHypercallMsr, 0, 0};
  return {0, 0, 0, 0};
}

// CPUID port: where KVM cannot be given CPUID entries (PVM rejects KVM_SET_CPUID2), the guest
// asks for the same leaves with `mov $leaf, %eax ; out %eax, $kCpuidPort`; pvio-hv answers in
// EAX, EBX, ECX, EDX as CPUID would. The guest tries the real CPUID first.
inline constexpr uint16_t kCpuidPort = 0xec;

// ---- hypercall page ----
// Entry `nr` is the 32-byte stub at page offset nr * 32:
//   mov $nr, %eax ; out %eax, $kHypercallPort ; ret
// The port exit reaches pvio-hv, which reads RDI, RSI, RDX, R10, R8 (Xen's 64-bit hypercall
// argument registers) and leaves the result in RAX before the guest resumes at `ret`.
inline constexpr uint32_t kHypercallStubSize = 32;
inline constexpr uint32_t kHypercallEntries = 4096 / kHypercallStubSize;
inline constexpr uint16_t kHypercallPort = 0xe4;
// Event-channel doorbell: `out %eax, $kDoorbellPort` with EAX = a local port bound to a Dom0
// service signals that service's kick eventfd inside KVM (ioeventfd, datamatch on the port),
// with no exit to pvio-hv. For any other port value the write exits and pvio-hv performs
// EVTCHNOP_send, so the doorbell is always correct and fast where it can be.
inline constexpr uint16_t kDoorbellPort = 0xe8;
// MMIO doorbell: the same doorbell as a 32-bit store of the port to kDoorbellMmioGpa. The page
// has no memory behind it (no KVM memslot), so the store exits to KVM, which matches it against
// an MMIO ioeventfd (datamatch = port, len 4) registered next to the PIO one and signals the
// Dom0 service's kick eventfd in the kernel; unmatched values exit to pvio-hv, which performs
// EVTCHNOP_send as for the port. Unlike `out`, a store needs no privilege, so a guest running
// its driver at CPL3 rings it without trapping into its own kernel. The guest learns the
// address with HVMOP_get_param(kHvmParamPvioDoorbellGpa): 0 means no MMIO doorbell (use the
// port). Only 32-bit stores at the page's first word are doorbells.
inline constexpr uint64_t kDoorbellMmioGpa = 0xFCFFF000;

// pvio-hv's own HVM parameter (outside Xen's 0..HVM_NR_PARAMS-1, read-only): the
// guest-physical address of the MMIO doorbell, or 0 when KVM refused the MMIO ioeventfd.
inline constexpr uint32_t kHvmParamPvioDoorbellGpa = 0x10000;

}  // namespace pvio::hv
