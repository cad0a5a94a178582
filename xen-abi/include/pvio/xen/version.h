// Xen's version interface (xen/include/public/version.h): XENVER_* sub-commands of
// HYPERVISOR_xen_version.
#pragma once

#include <stdint.h>

namespace pvio::xen {

inline constexpr unsigned XENVER_version = 0;  // returns major << 16 | minor
inline constexpr unsigned XENVER_extraversion = 1;
inline constexpr unsigned XENVER_compile_info = 2;
inline constexpr unsigned XENVER_capabilities = 3;
inline constexpr unsigned XENVER_changeset = 4;
inline constexpr unsigned XENVER_platform_parameters = 5;
inline constexpr unsigned XENVER_get_features = 6;
inline constexpr unsigned XENVER_pagesize = 7;

struct xen_extraversion {
  char extraversion[16];
};
static_assert(sizeof(xen_extraversion) == 16);

}  // namespace pvio::xen
