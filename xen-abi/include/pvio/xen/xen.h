// Xen's core public interface (xen/include/public/xen.h, errno.h, arch-x86/xen.h): the scalar
// types every other header builds on, hypercall numbers, error numbers, console_io and the
// shared_info / vcpu_info pages. Fixed-width types only; the widths that depend on the guest's
// ABI (xen_ulong_t, xen_pfn_t, guest handles) are chosen explicitly per ABI below, so the same
// header serves x86-64 (LP64 and Windows' LLP64, where `long` is 32 bits) and x86-32 guests.
#pragma once

#include <stddef.h>
#include <stdint.h>

// ABI selection: Xen's x86-64 ABI for any 64-bit x86 compiler (GCC/Clang LP64, mingw-w64 and
// MSVC LLP64), the x86-32 ABI for 32-bit x86.
#if defined(__x86_64__) || defined(_M_X64)
#define PVIO_XEN_ABI_X86_64 1
#elif defined(__i386__) || defined(_M_IX86)
#define PVIO_XEN_ABI_X86_32 1
#else
#error "pvio's Xen ABI headers cover x86-64 and x86-32 guests"
#endif

namespace pvio {

using grant_ref_t = uint32_t;    // index into a domain's grant table
using domid_t = uint16_t;        // domain id; 0 is Dom0
using evtchn_port_t = uint32_t;  // event-channel port

inline constexpr domid_t kDomidSelf = 0x7FF0;  // DOMID_SELF
inline constexpr grant_ref_t kInvalidGrantRef = 0xFFFFFFFFu;

}  // namespace pvio

namespace pvio::xen {

using pvio::domid_t;
using pvio::evtchn_port_t;
using pvio::grant_ref_t;

// `unsigned long` of the guest's ABI (xen_ulong_t) and the frame number type (xen_pfn_t);
// written out here because Windows' `long` is 32 bits on x86-64.
#if defined(PVIO_XEN_ABI_X86_64)
using xen_ulong_t = uint64_t;
using xen_pfn_t = uint64_t;
using xen_guest_handle_t = uint64_t;  // XEN_GUEST_HANDLE(T): a guest pointer
#else
using xen_ulong_t = uint32_t;
using xen_pfn_t = uint32_t;
using xen_guest_handle_t = uint32_t;
#endif

inline constexpr domid_t DOMID_FIRST_RESERVED = 0x7FF0;
inline constexpr domid_t DOMID_SELF = 0x7FF0;
inline constexpr domid_t DOMID_IO = 0x7FF1;
inline constexpr domid_t DOMID_XEN = 0x7FF2;
inline constexpr domid_t DOMID_INVALID = 0x7FF4;

// Hypercall numbers (__HYPERVISOR_*).
inline constexpr unsigned kHypercallSetTimerOp = 15;  // __HYPERVISOR_set_timer_op
inline constexpr unsigned kHypercallMemoryOp = 12;
inline constexpr unsigned kHypercallXenVersion = 17;
inline constexpr unsigned kHypercallConsoleIo = 18;
inline constexpr unsigned kHypercallGrantTableOp = 20;
inline constexpr unsigned kHypercallVcpuOp = 24;
inline constexpr unsigned kHypercallSchedOp = 29;
inline constexpr unsigned kHypercallEventChannelOp = 32;
inline constexpr unsigned kHypercallPhysdevOp = 33;
inline constexpr unsigned kHypercallHvmOp = 34;

// Error numbers (public/errno.h; the same numbers as Linux x86). Hypercalls return -XEN_E*.
inline constexpr int64_t XEN_EPERM = 1, XEN_ENOENT = 2, XEN_ESRCH = 3, XEN_EIO = 5,
                         XEN_E2BIG = 7, XEN_ENOMEM = 12, XEN_EACCES = 13, XEN_EFAULT = 14,
                         XEN_EBUSY = 16, XEN_EEXIST = 17, XEN_EINVAL = 22, XEN_ENOSPC = 28,
                         XEN_ENOSYS = 38, XEN_EAGAIN = 11;

// console_io sub-commands (CONSOLEIO_*).
inline constexpr unsigned CONSOLEIO_write = 0;
inline constexpr unsigned CONSOLEIO_read = 1;

// Legacy shared_info holds vcpu_info for the first 32 vCPUs (XEN_LEGACY_MAX_VCPUS).
inline constexpr unsigned XEN_LEGACY_MAX_VCPUS = 32;

struct arch_vcpu_info {
  xen_ulong_t cr2;
  xen_ulong_t pad;  // x86-32 has pad[5]; see the size checks below
#if defined(PVIO_XEN_ABI_X86_32)
  xen_ulong_t pad_x86_32[4];
#endif
};

struct vcpu_time_info {
  uint32_t version;
  uint32_t pad0;
  uint64_t tsc_timestamp;  // TSC at the last update of the time values
  uint64_t system_time;    // ns since boot at tsc_timestamp
  uint32_t tsc_to_system_mul;
  int8_t tsc_shift;
  uint8_t flags;
  uint8_t pad1[2];
};

struct vcpu_info {
  uint8_t evtchn_upcall_pending;
  uint8_t evtchn_upcall_mask;
  xen_ulong_t evtchn_pending_sel;
  arch_vcpu_info arch;
  vcpu_time_info time;
};

struct arch_shared_info {
  xen_ulong_t max_pfn;
  xen_pfn_t pfn_to_mfn_frame_list_list;
  xen_ulong_t nmi_reason;
  xen_ulong_t p2m_cr3;
  xen_ulong_t p2m_vaddr;
  xen_ulong_t p2m_generation;
#if defined(PVIO_XEN_ABI_X86_32)
  uint32_t wc_sec_hi;  // x86-32 keeps the high word of wc_sec here
#endif
};

// One pending and one mask bit per event-channel port, a selector bit per word
// (BITS_PER_EVTCHN_WORD bits per word).
inline constexpr unsigned kBitsPerEvtchnWord = sizeof(xen_ulong_t) * 8;

struct shared_info {
  struct vcpu_info vcpu_info[XEN_LEGACY_MAX_VCPUS];
  xen_ulong_t evtchn_pending[kBitsPerEvtchnWord];
  xen_ulong_t evtchn_mask[kBitsPerEvtchnWord];
  uint32_t wc_version;
  uint32_t wc_sec;
  uint32_t wc_nsec;
#if defined(PVIO_XEN_ABI_X86_64)
  uint32_t wc_sec_hi;
#endif
  arch_shared_info arch;
};

static_assert(sizeof(vcpu_time_info) == 32);
static_assert(sizeof(vcpu_info) == 64, "64 bytes (x86), xen.h");
static_assert(sizeof(shared_info) <= 4096, "shared_info must fit its page");
#if defined(PVIO_XEN_ABI_X86_64)
static_assert(offsetof(vcpu_info, evtchn_pending_sel) == 8);
static_assert(offsetof(vcpu_info, arch) == 16);
static_assert(offsetof(vcpu_info, time) == 32);
static_assert(offsetof(shared_info, evtchn_pending) == 2048);
static_assert(offsetof(shared_info, evtchn_mask) == 2560);
static_assert(offsetof(shared_info, wc_version) == 3072);
static_assert(offsetof(shared_info, arch) == 3088);
#else
static_assert(offsetof(vcpu_info, evtchn_pending_sel) == 4);
static_assert(offsetof(vcpu_info, time) == 32);
static_assert(offsetof(shared_info, evtchn_pending) == 2048);
static_assert(offsetof(shared_info, evtchn_mask) == 2176);
static_assert(offsetof(shared_info, wc_version) == 2304);
#endif

}  // namespace pvio::xen
