// Xen grant-table ABI, version 1 entries (xen/include/public/grant_table.h): the entry layout
// both sides share, the GTF_* flag bits, GNTST_* status codes, GNTMAP_*/GNTCOPY_* flags and the
// GNTTABOP_copy argument. Freestanding: usable from guest kernels and Dom0 services alike.
//
// Protocol rules this layout carries (who writes what, grant_table.h "GRANT TABLE
// REPRESENTATION"):
//  - The granting guest owns the table frames. It writes `domid` and `frame`, then (after a
//    write barrier) `flags` with the type GTF_permit_access and optionally GTF_readonly.
//  - The mapping side ("Xen" in the header, here the Dom0 service) sets GTF_reading /
//    GTF_writing with a compare-exchange on the 32-bit (flags, domid) word while the entry is in
//    use, and clears them when the last user goes away.
//  - The guest revokes an entry only by compare-exchanging its flags to 0 while neither
//    GTF_reading nor GTF_writing is set; an entry in use cannot be revoked.
//
// The names are Xen's. Xen defines them as macros, so a file that needs both (the interop
// tests) includes this header before <xen/grant_table.h>.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pvio/xen/xen.h"

namespace pvio::gnttab {

using pvio::domid_t;
using pvio::grant_ref_t;
using grant_handle_t = uint32_t;  // tracks one mapping made by GNTTABOP_map_grant_ref
using xen::xen_pfn_t;                  // guest frame number, per ABI (xen.h)

inline constexpr domid_t DOMID_SELF = kDomidSelf;

inline constexpr uint32_t kGrantPageSize = 4096;
inline constexpr uint32_t kGrantPageShift = 12;

// One v1 grant entry; 512 of them fill a 4 KiB frame.
struct grant_entry_v1 {
  uint16_t flags;  // GTF_*: type and flag information [XEN, GST]
  domid_t domid;        // domain being granted foreign privileges [GST]
  uint32_t frame;  // GFN that `domid` may map and access [GST]
};
static_assert(sizeof(grant_entry_v1) == 8);

inline constexpr uint32_t kEntriesPerFrame = kGrantPageSize / sizeof(grant_entry_v1);

// The first entries are preserved across table version changes and may be pre-populated by the
// toolstack at domain creation (console ring, xenstore ring); never hand them out.
inline constexpr grant_ref_t GNTTAB_NR_RESERVED_ENTRIES = 8;
inline constexpr grant_ref_t GNTTAB_RESERVED_CONSOLE = 0;
inline constexpr grant_ref_t GNTTAB_RESERVED_XENSTORE = 1;

// Entry type (bits 0-1).
inline constexpr uint16_t GTF_invalid = 0u << 0;
inline constexpr uint16_t GTF_permit_access = 1u << 0;
inline constexpr uint16_t GTF_accept_transfer = 2u << 0;
inline constexpr uint16_t GTF_transitive = 3u << 0;
inline constexpr uint16_t GTF_type_mask = 3u << 0;

// Sub-flags for GTF_permit_access.
inline constexpr unsigned _GTF_readonly = 2;
inline constexpr uint16_t GTF_readonly = 1u << _GTF_readonly;  // [GST] read-only grant
inline constexpr unsigned _GTF_reading = 3;
inline constexpr uint16_t GTF_reading = 1u << _GTF_reading;  // [XEN] mapped for reading
inline constexpr unsigned _GTF_writing = 4;
inline constexpr uint16_t GTF_writing = 1u << _GTF_writing;  // [XEN] mapped for writing
inline constexpr unsigned _GTF_PWT = 5;
inline constexpr uint16_t GTF_PWT = 1u << _GTF_PWT;
inline constexpr unsigned _GTF_PCD = 6;
inline constexpr uint16_t GTF_PCD = 1u << _GTF_PCD;
inline constexpr unsigned _GTF_PAT = 7;
inline constexpr uint16_t GTF_PAT = 1u << _GTF_PAT;
inline constexpr unsigned _GTF_sub_page = 8;
inline constexpr uint16_t GTF_sub_page = 1u << _GTF_sub_page;  // copy only, never map

// Sub-flags for GTF_accept_transfer.
inline constexpr unsigned _GTF_transfer_committed = 2;
inline constexpr uint16_t GTF_transfer_committed = 1u << _GTF_transfer_committed;
inline constexpr unsigned _GTF_transfer_completed = 3;
inline constexpr uint16_t GTF_transfer_completed = 1u << _GTF_transfer_completed;

// GNTTABOP_* command numbers (HYPERVISOR_grant_table_op).
inline constexpr unsigned GNTTABOP_map_grant_ref = 0;
inline constexpr unsigned GNTTABOP_unmap_grant_ref = 1;
inline constexpr unsigned GNTTABOP_setup_table = 2;
inline constexpr unsigned GNTTABOP_dump_table = 3;
inline constexpr unsigned GNTTABOP_transfer = 4;
inline constexpr unsigned GNTTABOP_copy = 5;
inline constexpr unsigned GNTTABOP_query_size = 6;
inline constexpr unsigned GNTTABOP_unmap_and_replace = 7;

// gnttab_map_grant_ref.flags.
inline constexpr unsigned _GNTMAP_device_map = 0;
inline constexpr uint32_t GNTMAP_device_map = 1u << _GNTMAP_device_map;
inline constexpr unsigned _GNTMAP_host_map = 1;
inline constexpr uint32_t GNTMAP_host_map = 1u << _GNTMAP_host_map;
inline constexpr unsigned _GNTMAP_readonly = 2;
inline constexpr uint32_t GNTMAP_readonly = 1u << _GNTMAP_readonly;
inline constexpr unsigned _GNTMAP_application_map = 3;
inline constexpr uint32_t GNTMAP_application_map = 1u << _GNTMAP_application_map;
inline constexpr unsigned _GNTMAP_contains_pte = 4;
inline constexpr uint32_t GNTMAP_contains_pte = 1u << _GNTMAP_contains_pte;

// gnttab_copy.flags: which ends are grant references (otherwise a local frame).
inline constexpr unsigned _GNTCOPY_source_gref = 0;
inline constexpr uint16_t GNTCOPY_source_gref = 1u << _GNTCOPY_source_gref;
inline constexpr unsigned _GNTCOPY_dest_gref = 1;
inline constexpr uint16_t GNTCOPY_dest_gref = 1u << _GNTCOPY_dest_gref;

// Status codes (enum grant_status); all errors are negative. Unscoped on purpose: the values
// go into the int16_t `status` fields of the wire structs unchanged.
enum grant_status : int16_t {
  GNTST_okay = 0,
  GNTST_general_error = -1,
  GNTST_bad_domain = -2,
  GNTST_bad_gntref = -3,
  GNTST_bad_handle = -4,
  GNTST_bad_virt_addr = -5,
  GNTST_bad_dev_addr = -6,
  GNTST_no_device_space = -7,
  GNTST_permission_denied = -8,
  GNTST_bad_page = -9,
  GNTST_bad_copy_arg = -10,
  GNTST_address_too_big = -11,
  GNTST_eagain = -12,
  GNTST_no_space = -13,
};

// GNTTABOP_error_msgs, indexed by -status.
constexpr const char* status_string(int16_t status) {
  constexpr const char* kMsgs[] = {
      "okay",
      "undefined error",
      "unrecognised domain id",
      "invalid grant reference",
      "invalid mapping handle",
      "invalid virtual address",
      "invalid device address",
      "no spare translation slot in the I/O MMU",
      "permission denied",
      "bad page",
      "copy arguments cross page boundary",
      "page address size too large",
      "operation not done; try again",
      "out of space",
  };
  if (status > 0 || status < -static_cast<int>(sizeof(kMsgs) / sizeof(kMsgs[0]) - 1))
    return "unknown status";
  return kMsgs[-status];
}

// GNTTABOP_copy argument, same layout as Xen's struct gnttab_copy. An end is a grant reference
// of `domid` when its GNTCOPY_*_gref flag is set; otherwise it is a local frame and `domid`
// must be DOMID_SELF. In a Dom0 service process the local frame is a page of this process's
// address space: `u.gmfn` = address >> 12 (see gnttab_copy_ptr::local()).
struct gnttab_copy_ptr {
  union {
    grant_ref_t ref;
    xen_pfn_t gmfn;
  } u;
  domid_t domid;
  uint16_t offset;

  static gnttab_copy_ptr gref(grant_ref_t ref, domid_t domid, uint16_t offset) {
    gnttab_copy_ptr p{};
    p.u.ref = ref;
    p.domid = domid;
    p.offset = offset;
    return p;
  }
  // `addr` may be anywhere in a page; the page number and in-page offset are split as Xen's
  // (gmfn, offset) so an op never spans two local pages either.
  static gnttab_copy_ptr local(const void* addr) {
    const auto a = reinterpret_cast<uintptr_t>(addr);
    gnttab_copy_ptr p{};
    p.u.gmfn = a >> kGrantPageShift;
    p.domid = DOMID_SELF;
    p.offset = static_cast<uint16_t>(a & (kGrantPageSize - 1));
    return p;
  }
};

struct gnttab_copy {
  gnttab_copy_ptr source, dest;  // IN
  uint16_t len;             // IN: bytes; offset + len stays within one page on both ends
  uint16_t flags;           // IN: GNTCOPY_*
  int16_t status;           // OUT: GNTST_*
};
#if defined(PVIO_XEN_ABI_X86_64)
static_assert(sizeof(gnttab_copy) == 40);
#else
static_assert(sizeof(gnttab_copy) == 24);
#endif
using gnttab_copy_op = gnttab_copy;

// GNTTABOP_setup_table: the guest asks for `nr_frames` table frames; on x86 HVM the frames are
// placed with XENMEM_add_to_physmap instead and frame_list is not written.
struct gnttab_setup_table {
  domid_t dom;                          // IN
  uint32_t nr_frames;                   // IN
  int16_t status;                       // OUT: GNTST_*
  xen::xen_guest_handle_t frame_list;   // IN: guest address of nr_frames xen_pfn_t (OUT)
};

// GNTTABOP_query_size: current and maximum number of table frames.
struct gnttab_query_size {
  domid_t dom;             // IN
  uint32_t nr_frames;      // OUT
  uint32_t max_nr_frames;  // OUT
  int16_t status;          // OUT: GNTST_*
};

#if defined(PVIO_XEN_ABI_X86_64)
static_assert(sizeof(gnttab_setup_table) == 24);
static_assert(offsetof(gnttab_setup_table, frame_list) == 16);
#else
static_assert(sizeof(gnttab_setup_table) == 16);
#endif
static_assert(sizeof(gnttab_query_size) == 16);

}  // namespace pvio::gnttab
