// Xen's CPUID leaves for x86 guests (xen/include/public/arch-x86/cpuid.h): the signature at
// 0x40000000 (or a multiple of 0x100 above it), the version leaf and the hypercall-page leaf.
#pragma once

#include <stdint.h>

namespace pvio::xen {

inline constexpr uint32_t XEN_CPUID_FIRST_LEAF = 0x40000000;
inline constexpr uint32_t XEN_CPUID_LEAF_VERSION = 1;    // EAX = major << 16 | minor
inline constexpr uint32_t XEN_CPUID_LEAF_HYPERCALL = 2;  // EAX = pages, EBX = MSR index
inline constexpr uint32_t XEN_CPUID_SIGNATURE_EBX = 0x566e6558;  // "XenV"
inline constexpr uint32_t XEN_CPUID_SIGNATURE_ECX = 0x65584d4d;  // "MMXe"
inline constexpr uint32_t XEN_CPUID_SIGNATURE_EDX = 0x4d4d566e;  // "nVMM"

}  // namespace pvio::xen
