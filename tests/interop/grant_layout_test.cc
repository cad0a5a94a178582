// Our grant-table ABI against Debian's <xen/grant_table.h>: entry layout, GTF_* flags,
// GNTST_* codes and messages, GNTMAP_*/GNTCOPY_* bits and the GNTTABOP_copy argument.
//
// Xen spells these constants as macros with the same names as ours, so our values are captured
// before Xen's headers are included: `ours_NAME` (token pasting is not macro-expanded).
#include <gtest/gtest.h>

#include <cstring>

#include "pvio/xen/grant_table.h"

namespace captured {
#define PVIO_CAPTURE(name) constexpr auto ours_##name = pvio::gnttab::name;
PVIO_CAPTURE(DOMID_SELF)
PVIO_CAPTURE(GNTTAB_NR_RESERVED_ENTRIES)
PVIO_CAPTURE(GNTTAB_RESERVED_CONSOLE)
PVIO_CAPTURE(GNTTAB_RESERVED_XENSTORE)
PVIO_CAPTURE(GTF_invalid)
PVIO_CAPTURE(GTF_permit_access)
PVIO_CAPTURE(GTF_accept_transfer)
PVIO_CAPTURE(GTF_transitive)
PVIO_CAPTURE(GTF_type_mask)
PVIO_CAPTURE(GTF_readonly)
PVIO_CAPTURE(GTF_reading)
PVIO_CAPTURE(GTF_writing)
PVIO_CAPTURE(GTF_PWT)
PVIO_CAPTURE(GTF_PCD)
PVIO_CAPTURE(GTF_PAT)
PVIO_CAPTURE(GTF_sub_page)
PVIO_CAPTURE(GTF_transfer_committed)
PVIO_CAPTURE(GTF_transfer_completed)
PVIO_CAPTURE(_GTF_readonly)
PVIO_CAPTURE(_GTF_reading)
PVIO_CAPTURE(_GTF_writing)
PVIO_CAPTURE(GNTMAP_device_map)
PVIO_CAPTURE(GNTMAP_host_map)
PVIO_CAPTURE(GNTMAP_readonly)
PVIO_CAPTURE(GNTMAP_application_map)
PVIO_CAPTURE(GNTMAP_contains_pte)
PVIO_CAPTURE(GNTCOPY_source_gref)
PVIO_CAPTURE(GNTCOPY_dest_gref)
PVIO_CAPTURE(GNTTABOP_map_grant_ref)
PVIO_CAPTURE(GNTTABOP_unmap_grant_ref)
PVIO_CAPTURE(GNTTABOP_setup_table)
PVIO_CAPTURE(GNTTABOP_dump_table)
PVIO_CAPTURE(GNTTABOP_transfer)
PVIO_CAPTURE(GNTTABOP_copy)
PVIO_CAPTURE(GNTTABOP_query_size)
PVIO_CAPTURE(GNTTABOP_unmap_and_replace)
PVIO_CAPTURE(GNTST_okay)
PVIO_CAPTURE(GNTST_general_error)
PVIO_CAPTURE(GNTST_bad_domain)
PVIO_CAPTURE(GNTST_bad_gntref)
PVIO_CAPTURE(GNTST_bad_handle)
PVIO_CAPTURE(GNTST_bad_virt_addr)
PVIO_CAPTURE(GNTST_bad_dev_addr)
PVIO_CAPTURE(GNTST_no_device_space)
PVIO_CAPTURE(GNTST_permission_denied)
PVIO_CAPTURE(GNTST_bad_page)
PVIO_CAPTURE(GNTST_bad_copy_arg)
PVIO_CAPTURE(GNTST_address_too_big)
PVIO_CAPTURE(GNTST_eagain)
PVIO_CAPTURE(GNTST_no_space)
#undef PVIO_CAPTURE
}  // namespace captured

#include "xen_headers.h"

namespace {

namespace g = pvio::gnttab;
using namespace captured;

#define EXPECT_SAME_VALUE(name) EXPECT_EQ(ours_##name, name) << #name
#define EXPECT_SAME_LAYOUT(ours, theirs, field) \
  EXPECT_EQ(offsetof(ours, field), offsetof(theirs, field)) << #field

TEST(InteropGrantLayout, EntryV1) {
  EXPECT_EQ(sizeof(g::grant_entry_v1), sizeof(struct grant_entry_v1));
  EXPECT_SAME_LAYOUT(g::grant_entry_v1, struct grant_entry_v1, flags);
  EXPECT_SAME_LAYOUT(g::grant_entry_v1, struct grant_entry_v1, domid);
  EXPECT_SAME_LAYOUT(g::grant_entry_v1, struct grant_entry_v1, frame);
  EXPECT_EQ(sizeof(g::grant_ref_t), sizeof(grant_ref_t));
  EXPECT_EQ(sizeof(g::grant_handle_t), sizeof(grant_handle_t));
  EXPECT_EQ(sizeof(g::domid_t), sizeof(domid_t));
  EXPECT_EQ(sizeof(g::xen_pfn_t), sizeof(xen_pfn_t));
  EXPECT_SAME_VALUE(DOMID_SELF);
  EXPECT_SAME_VALUE(GNTTAB_NR_RESERVED_ENTRIES);
  EXPECT_SAME_VALUE(GNTTAB_RESERVED_CONSOLE);
  EXPECT_SAME_VALUE(GNTTAB_RESERVED_XENSTORE);
}

// A v1 entry written by Xen's struct reads back field for field through ours.
TEST(InteropGrantLayout, EntryBytesRoundTrip) {
  struct grant_entry_v1 theirs = {};
  theirs.flags = GTF_permit_access | GTF_readonly | GTF_reading;
  theirs.domid = 0x7ABC;
  theirs.frame = 0x89ABCDEFu;
  g::grant_entry_v1 ours;
  std::memcpy(&ours, &theirs, sizeof ours);
  EXPECT_EQ(ours.flags, theirs.flags);
  EXPECT_EQ(ours.domid, theirs.domid);
  EXPECT_EQ(ours.frame, theirs.frame);
}

TEST(InteropGrantLayout, Flags) {
  EXPECT_SAME_VALUE(GTF_invalid);
  EXPECT_SAME_VALUE(GTF_permit_access);
  EXPECT_SAME_VALUE(GTF_accept_transfer);
  EXPECT_SAME_VALUE(GTF_transitive);
  EXPECT_SAME_VALUE(GTF_type_mask);
  EXPECT_SAME_VALUE(GTF_readonly);
  EXPECT_SAME_VALUE(GTF_reading);
  EXPECT_SAME_VALUE(GTF_writing);
  EXPECT_SAME_VALUE(GTF_PWT);
  EXPECT_SAME_VALUE(GTF_PCD);
  EXPECT_SAME_VALUE(GTF_PAT);
  EXPECT_SAME_VALUE(GTF_sub_page);
  EXPECT_SAME_VALUE(GTF_transfer_committed);
  EXPECT_SAME_VALUE(GTF_transfer_completed);
  EXPECT_SAME_VALUE(_GTF_readonly);
  EXPECT_SAME_VALUE(_GTF_reading);
  EXPECT_SAME_VALUE(_GTF_writing);

  EXPECT_SAME_VALUE(GNTMAP_device_map);
  EXPECT_SAME_VALUE(GNTMAP_host_map);
  EXPECT_SAME_VALUE(GNTMAP_readonly);
  EXPECT_SAME_VALUE(GNTMAP_application_map);
  EXPECT_SAME_VALUE(GNTMAP_contains_pte);
  EXPECT_SAME_VALUE(GNTCOPY_source_gref);
  EXPECT_SAME_VALUE(GNTCOPY_dest_gref);

  EXPECT_SAME_VALUE(GNTTABOP_map_grant_ref);
  EXPECT_SAME_VALUE(GNTTABOP_unmap_grant_ref);
  EXPECT_SAME_VALUE(GNTTABOP_setup_table);
  EXPECT_SAME_VALUE(GNTTABOP_dump_table);
  EXPECT_SAME_VALUE(GNTTABOP_transfer);
  EXPECT_SAME_VALUE(GNTTABOP_copy);
  EXPECT_SAME_VALUE(GNTTABOP_query_size);
  EXPECT_SAME_VALUE(GNTTABOP_unmap_and_replace);
}

TEST(InteropGrantLayout, StatusCodesAndMessages) {
  EXPECT_SAME_VALUE(GNTST_okay);
  EXPECT_SAME_VALUE(GNTST_general_error);
  EXPECT_SAME_VALUE(GNTST_bad_domain);
  EXPECT_SAME_VALUE(GNTST_bad_gntref);
  EXPECT_SAME_VALUE(GNTST_bad_handle);
  EXPECT_SAME_VALUE(GNTST_bad_virt_addr);
  EXPECT_SAME_VALUE(GNTST_bad_dev_addr);
  EXPECT_SAME_VALUE(GNTST_no_device_space);
  EXPECT_SAME_VALUE(GNTST_permission_denied);
  EXPECT_SAME_VALUE(GNTST_bad_page);
  EXPECT_SAME_VALUE(GNTST_bad_copy_arg);
  EXPECT_SAME_VALUE(GNTST_address_too_big);
  EXPECT_SAME_VALUE(GNTST_eagain);
  EXPECT_SAME_VALUE(GNTST_no_space);
  const char* const msgs[] = GNTTABOP_error_msgs;
  for (int i = 0; i < static_cast<int>(std::size(msgs)); ++i)
    EXPECT_STREQ(g::status_string(static_cast<std::int16_t>(-i)), msgs[i]) << -i;
}

TEST(InteropGrantLayout, CopyOp) {
  EXPECT_EQ(sizeof(g::gnttab_copy), sizeof(struct gnttab_copy));
  EXPECT_EQ(sizeof(g::gnttab_copy_ptr), sizeof(gnttab_copy::gnttab_copy_ptr));
  EXPECT_SAME_LAYOUT(g::gnttab_copy_ptr, gnttab_copy::gnttab_copy_ptr, u.ref);
  EXPECT_SAME_LAYOUT(g::gnttab_copy_ptr, gnttab_copy::gnttab_copy_ptr, u.gmfn);
  EXPECT_SAME_LAYOUT(g::gnttab_copy_ptr, gnttab_copy::gnttab_copy_ptr, domid);
  EXPECT_SAME_LAYOUT(g::gnttab_copy_ptr, gnttab_copy::gnttab_copy_ptr, offset);
  EXPECT_SAME_LAYOUT(g::gnttab_copy, struct gnttab_copy, source);
  EXPECT_SAME_LAYOUT(g::gnttab_copy, struct gnttab_copy, dest);
  EXPECT_SAME_LAYOUT(g::gnttab_copy, struct gnttab_copy, len);
  EXPECT_SAME_LAYOUT(g::gnttab_copy, struct gnttab_copy, flags);
  EXPECT_SAME_LAYOUT(g::gnttab_copy, struct gnttab_copy, status);

  // An op built with Xen's struct means the same to us, byte for byte.
  struct gnttab_copy theirs = {};
  theirs.source.u.ref = 77;
  theirs.source.domid = 5;
  theirs.source.offset = 12;
  theirs.dest.u.gmfn = 0x123456789ull;
  theirs.dest.domid = DOMID_SELF;
  theirs.dest.offset = 300;
  theirs.len = 1000;
  theirs.flags = GNTCOPY_source_gref;
  g::gnttab_copy ours;
  std::memcpy(&ours, &theirs, sizeof ours);
  EXPECT_EQ(ours.source.u.ref, 77u);
  EXPECT_EQ(ours.source.domid, 5);
  EXPECT_EQ(ours.source.offset, 12);
  EXPECT_EQ(ours.dest.u.gmfn, 0x123456789ull);
  EXPECT_EQ(ours.dest.domid, ours_DOMID_SELF);
  EXPECT_EQ(ours.dest.offset, 300);
  EXPECT_EQ(ours.len, 1000);
  EXPECT_EQ(ours.flags, ours_GNTCOPY_source_gref);
}

}  // namespace
