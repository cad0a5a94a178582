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
// XENFEAT_* bits of submap 0 (features.h).
inline constexpr unsigned XENFEAT_writable_page_tables = 0;
inline constexpr unsigned XENFEAT_auto_translated_physmap = 2;
inline constexpr unsigned XENFEAT_hvm_callback_vector = 8;
inline constexpr unsigned XENFEAT_hvm_safe_pvclock = 9;
// XENVER_get_features: bitmap word `submap_idx` of XENFEAT_* flags (features.h).
struct xen_feature_info {
  uint32_t submap_idx;
  uint32_t submap;  // OUT
};
static_assert(sizeof(xen_feature_info) == 8);
// XENVER_capabilities / XENVER_changeset / XENVER_compile_info strings.
struct xen_capabilities_info {
  char info[1024];
};
struct xen_changeset_info {
  char info[64];
};

}  // namespace pvio::xen
