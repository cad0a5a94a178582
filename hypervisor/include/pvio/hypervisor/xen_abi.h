// Xen's HVM guest interface as pvio-hv serves it: CPUID leaves, the hypercall-page MSR and
// stubs, hypercall numbers, sub-commands and argument structs (x86-64 layout of Xen's public
// headers xen.h, memory.h, grant_table.h, event_channel.h, hvm/hvm_op.h, hvm/params.h, sched.h)
// plus pvio-hv's own notification ports. Shared by hypervisor/ and the freestanding guest/:
// fixed-width fields only. tests/hypervisor checks the layouts against Debian's Xen headers.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace pvio::hv::xen {

// ---- CPUID (xen/arch-x86/cpuid.h) ----
inline constexpr uint32_t kCpuidBase = 0x40000000;       // "XenVMMXenVMM", max leaf in EAX
inline constexpr uint32_t kCpuidLeafVersion = 1;          // EAX = major << 16 | minor
inline constexpr uint32_t kCpuidLeafHypercall = 2;        // EAX = pages, EBX = MSR index
inline constexpr uint32_t kCpuidSignatureEbx = 0x566e6558;  // "XenV"
inline constexpr uint32_t kCpuidSignatureEcx = 0x65584d4d;  // "MMXe"
inline constexpr uint32_t kCpuidSignatureEdx = 0x4d4d566e;  // "nVMM"
inline constexpr uint32_t kVersionMajor = 4, kVersionMinor = 17;
// Where writing the guest-physical address of a page asks for the hypercall page.
inline constexpr uint32_t kHypercallMsr = 0x40000000;
inline constexpr uint32_t kHypercallPages = 1;
// Xen's leaves as pvio-hv answers them (0x40000000 + 0..2); other leaves read as zeros.
struct CpuidLeaf {
  uint32_t eax, ebx, ecx, edx;
};
constexpr CpuidLeaf cpuid_leaf(uint32_t leaf) {
  switch (leaf) {
    case kCpuidBase:
      return {kCpuidBase + kCpuidLeafHypercall, kCpuidSignatureEbx, kCpuidSignatureEcx,
              kCpuidSignatureEdx};
    case kCpuidBase + kCpuidLeafVersion: return {(kVersionMajor << 16) | kVersionMinor, 0, 0, 0};
    case kCpuidBase + kCpuidLeafHypercall: return {kHypercallPages, kHypercallMsr, 0, 0};
    default: return {0, 0, 0, 0};
  }
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

// ---- hypercall numbers (xen.h) ----
inline constexpr unsigned kHypercallMemoryOp = 12;
inline constexpr unsigned kHypercallXenVersion = 17;
inline constexpr unsigned kHypercallConsoleIo = 18;
inline constexpr unsigned kHypercallGrantTableOp = 20;
inline constexpr unsigned kHypercallSchedOp = 29;
inline constexpr unsigned kHypercallEventChannelOp = 32;
inline constexpr unsigned kHypercallHvmOp = 34;

// Xen errno values (public/errno.h; the same numbers as Linux x86).
inline constexpr int64_t XEN_EPERM = 1, XEN_ESRCH = 3, XEN_EFAULT = 14, XEN_EBUSY = 16,
                         XEN_EINVAL = 22, XEN_ENOSPC = 28, XEN_ENOSYS = 38;

inline constexpr uint16_t DOMID_SELF = 0x7FF0;

// ---- xen_version ----
inline constexpr unsigned XENVER_version = 0;

// ---- memory_op (memory.h) ----
inline constexpr unsigned XENMEM_add_to_physmap = 7;
inline constexpr unsigned XENMAPSPACE_shared_info = 0;
inline constexpr unsigned XENMAPSPACE_grant_table = 1;
inline constexpr uint64_t XENMAPIDX_grant_table_status = 0x80000000u;

struct xen_add_to_physmap {
  uint16_t domid;
  uint16_t size;   // XENMAPSPACE_gmfn_range only
  uint32_t space;  // XENMAPSPACE_*
  uint64_t idx;    // index into the space
  uint64_t gpfn;   // where the guest wants it
};

// ---- grant_table_op (grant_table.h); GNTTABOP_* and GNTST_* are in grant_abi.h ----
struct gnttab_setup_table {
  uint16_t dom;
  uint16_t pad0;
  uint32_t nr_frames;
  int16_t status;  // OUT: GNTST_*
  uint16_t pad1[3];
  uint64_t frame_list;  // guest address of nr_frames xen_pfn_t (OUT)
};

struct gnttab_query_size {
  uint16_t dom;
  uint16_t pad0;
  uint32_t nr_frames;      // OUT
  uint32_t max_nr_frames;  // OUT
  int16_t status;          // OUT
  uint16_t pad1;
};

// ---- event_channel_op (event_channel.h); EVTCHNOP_* numbers in event-channel's header ----
struct evtchn_alloc_unbound {
  uint16_t dom, remote_dom;
  uint32_t port;  // OUT
};
struct evtchn_bind_interdomain {
  uint16_t remote_dom;
  uint16_t pad0;
  uint32_t remote_port;
  uint32_t local_port;  // OUT
};
struct evtchn_port_op {  // evtchn_send, evtchn_close, evtchn_unmask
  uint32_t port;
};
struct evtchn_status {
  uint16_t dom;
  uint16_t pad0;
  uint32_t port;
  uint32_t status;  // OUT: EVTCHNSTAT_*
  uint32_t vcpu;    // OUT
  union {
    struct {
      uint16_t dom;
    } unbound;
    struct {
      uint16_t dom;
      uint16_t pad;
      uint32_t port;
    } interdomain;
  } u;
};

// ---- hvm_op (hvm/hvm_op.h, hvm/params.h) ----
inline constexpr unsigned HVMOP_set_param = 0;
inline constexpr unsigned HVMOP_get_param = 1;
struct xen_hvm_param {
  uint16_t domid;
  uint16_t pad0;
  uint32_t index;
  uint64_t value;
};
inline constexpr uint32_t HVM_PARAM_CALLBACK_IRQ = 0;
inline constexpr uint32_t HVM_PARAM_STORE_PFN = 1;
inline constexpr uint32_t HVM_PARAM_STORE_EVTCHN = 2;
inline constexpr uint32_t HVM_PARAM_CONSOLE_PFN = 17;
inline constexpr uint32_t HVM_PARAM_CONSOLE_EVTCHN = 18;
// pvio-hv's own parameter (outside Xen's 0..HVM_NR_PARAMS-1, read-only): the guest-physical
// address of the MMIO doorbell, or 0 when KVM refused the MMIO ioeventfd.
inline constexpr uint32_t kHvmParamPvioDoorbellGpa = 0x10000;
inline constexpr uint32_t HVM_NR_PARAMS = 39;
inline constexpr uint64_t HVM_PARAM_CALLBACK_TYPE_VECTOR = 2;
inline constexpr unsigned kCallbackTypeShift = 56;

// ---- sched_op (sched.h) ----
inline constexpr unsigned SCHEDOP_yield = 0;
inline constexpr unsigned SCHEDOP_block = 1;
inline constexpr unsigned SCHEDOP_shutdown = 2;
struct sched_shutdown {
  uint32_t reason;  // SHUTDOWN_*
};

// ---- console_io (xen.h) ----
inline constexpr unsigned CONSOLEIO_write = 0;
inline constexpr unsigned CONSOLEIO_read = 1;

static_assert(sizeof(xen_add_to_physmap) == 24);
static_assert(offsetof(xen_add_to_physmap, idx) == 8);
static_assert(sizeof(gnttab_setup_table) == 24);
static_assert(offsetof(gnttab_setup_table, frame_list) == 16);
static_assert(sizeof(gnttab_query_size) == 16);
static_assert(sizeof(evtchn_alloc_unbound) == 8);
static_assert(sizeof(evtchn_bind_interdomain) == 12);
static_assert(sizeof(evtchn_status) == 24);
static_assert(offsetof(evtchn_status, u) == 16);
static_assert(sizeof(xen_hvm_param) == 16);

}  // namespace pvio::hv::xen
