// Xen's HVM parameters (xen/include/public/hvm/params.h): HVM_PARAM_* indices read and written
// with HVMOP_get_param / HVMOP_set_param, and the CALLBACK_IRQ encoding.
#pragma once

#include <stdint.h>

namespace pvio::xen {

inline constexpr uint32_t HVM_PARAM_CALLBACK_IRQ = 0;
inline constexpr uint32_t HVM_PARAM_STORE_PFN = 1;
inline constexpr uint32_t HVM_PARAM_STORE_EVTCHN = 2;
inline constexpr uint32_t HVM_PARAM_PAE_ENABLED = 4;
inline constexpr uint32_t HVM_PARAM_IOREQ_PFN = 5;
inline constexpr uint32_t HVM_PARAM_BUFIOREQ_PFN = 6;
inline constexpr uint32_t HVM_PARAM_CONSOLE_PFN = 17;
inline constexpr uint32_t HVM_PARAM_CONSOLE_EVTCHN = 18;
inline constexpr uint32_t HVM_NR_PARAMS = 39;

// HVM_PARAM_CALLBACK_IRQ: bits 63:56 are the delivery type, the rest its argument.
inline constexpr unsigned HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT = 56;
inline constexpr uint64_t HVM_PARAM_CALLBACK_TYPE_GSI = 0;     // val[55:0] = GSI
inline constexpr uint64_t HVM_PARAM_CALLBACK_TYPE_PCI_INTX = 1;  // domain:bus:dev:intx
inline constexpr uint64_t HVM_PARAM_CALLBACK_TYPE_VECTOR = 2;  // val[7:0] = vector

}  // namespace pvio::xen
