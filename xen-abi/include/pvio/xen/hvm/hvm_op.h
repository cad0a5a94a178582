// Xen's HVM operations (xen/include/public/hvm/hvm_op.h): HVMOP_* sub-commands of
// HYPERVISOR_hvm_op and their argument structs.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pvio/xen/xen.h"

namespace pvio::xen {

inline constexpr unsigned HVMOP_set_param = 0;
inline constexpr unsigned HVMOP_get_param = 1;
inline constexpr unsigned HVMOP_pagetable_dying = 9;
inline constexpr unsigned HVMOP_get_time = 10;
inline constexpr unsigned HVMOP_set_evtchn_upcall_vector = 23;

struct xen_hvm_param {
  domid_t domid;   // IN: DOMID_SELF
  uint32_t index;  // IN: HVM_PARAM_*
  uint64_t value;  // IN/OUT
};

struct xen_hvm_evtchn_upcall_vector {
  uint32_t vcpu;
  uint8_t vector;
};

#if defined(PVIO_XEN_ABI_X86_64)
static_assert(sizeof(xen_hvm_param) == 16);
static_assert(offsetof(xen_hvm_param, value) == 8);
#else
static_assert(sizeof(xen_hvm_param) == 16);
static_assert(offsetof(xen_hvm_param, value) == 8);
#endif
static_assert(sizeof(xen_hvm_evtchn_upcall_vector) == 8);

}  // namespace pvio::xen
