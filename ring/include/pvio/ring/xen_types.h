// Basic Xen ABI scalar types shared by every wire struct (xen.h, grant_table.h).
#pragma once

#include <cstdint>

namespace pvio {

using grant_ref_t = std::uint32_t;  // index into a domain's grant table
using domid_t = std::uint16_t;      // domain id; 0 is Dom0
using evtchn_port_t = std::uint32_t;

inline constexpr domid_t kDomidSelf = 0x7FF0;  // DOMID_SELF
inline constexpr grant_ref_t kInvalidGrantRef = 0xFFFFFFFFu;

}  // namespace pvio
