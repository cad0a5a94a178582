// Unit tests for grant-table/: the granting side (free list, reserved refs, revoke while
// busy), the mapping side (every GNTST_* error, pin counts, an entry rewritten while mapped,
// copies in all four gref/local combinations) and the persistent-grant cache.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "guest_image.h"
#include "pvio/grant_table/grant_mapper.h"
#include "pvio/grant_table/grant_table.h"
#include "pvio/grant_table/persistent_cache.h"

namespace {

using namespace pvio::gnttab;
using pvio::gnttab::test::GuestImage;

constexpr pvio::domid_t kGuestDomid = 5;   // the granting domain
constexpr pvio::domid_t kBackendDomid = 0;  // the mapper (Dom0)
constexpr std::uint32_t kNrEntries = GuestImage::kTableFrames * kEntriesPerFrame;

class GrantTest : public ::testing::Test {
 protected:
  GrantTest()
      : frames_{image_.table_frame(0), image_.table_frame(1)},
        table_(frames_.data(), GuestImage::kTableFrames, free_storage_.data(),
               static_cast<std::uint32_t>(free_storage_.size())),
        mapper_(kGuestDomid, kBackendDomid, image_.memory(), GuestImage::kTableGfns) {}

  std::uint64_t data_gfn(unsigned i) const { return GuestImage::kFirstDataGfn + i; }
  std::uint8_t* data(unsigned i) const { return image_.page(data_gfn(i)); }
  std::uint16_t flags(grant_ref_t ref) const { return table_.flags(ref); }
  grant_ref_t grant(unsigned page, bool readonly = false, pvio::domid_t to = kBackendDomid) {
    const grant_ref_t ref = table_.grant_access(to, data_gfn(page), readonly);
    EXPECT_NE(ref, pvio::kInvalidGrantRef);
    return ref;
  }

  GuestImage image_;
  std::array<grant_entry_v1*, GuestImage::kTableFrames> frames_;
  std::array<grant_ref_t, kNrEntries> free_storage_{};
  GrantTable table_;
  GrantMapper mapper_;
};

// ---- granting side ----

TEST_F(GrantTest, GrantAccessWritesEntry) {
  const grant_ref_t rw = grant(3);
  const grant_ref_t ro = grant(4, /*readonly=*/true, 9);
  const grant_entry_v1& e = image_.entry(rw);
  EXPECT_EQ(e.flags, GTF_permit_access);
  EXPECT_EQ(e.domid, kBackendDomid);
  EXPECT_EQ(e.frame, data_gfn(3));
  const grant_entry_v1& r = image_.entry(ro);
  EXPECT_EQ(r.flags, GTF_permit_access | GTF_readonly);
  EXPECT_EQ(r.domid, 9);
  EXPECT_EQ(r.frame, data_gfn(4));
  EXPECT_NE(rw, ro);
}

TEST_F(GrantTest, ReservedRefsAreNeverHandedOut) {
  EXPECT_EQ(table_.nr_entries(), kNrEntries);
  EXPECT_EQ(table_.free_count(), kNrEntries - GNTTAB_NR_RESERVED_ENTRIES);
  std::set<grant_ref_t> seen;
  for (std::uint32_t i = 0; i < kNrEntries - GNTTAB_NR_RESERVED_ENTRIES; ++i) {
    const grant_ref_t ref = table_.grant_access(kBackendDomid, data_gfn(0), true);
    ASSERT_NE(ref, pvio::kInvalidGrantRef) << i;
    EXPECT_GE(ref, GNTTAB_NR_RESERVED_ENTRIES);
    EXPECT_LT(ref, kNrEntries);
    EXPECT_TRUE(seen.insert(ref).second) << "ref handed out twice: " << ref;
  }
  EXPECT_EQ(table_.free_count(), 0u);
}

TEST_F(GrantTest, FreeListExhaustionAndReuse) {
  std::vector<grant_ref_t> refs;
  for (grant_ref_t r; (r = table_.grant_access(kBackendDomid, data_gfn(1), false)) !=
                      pvio::kInvalidGrantRef;)
    refs.push_back(r);
  ASSERT_EQ(refs.size(), kNrEntries - GNTTAB_NR_RESERVED_ENTRIES);
  EXPECT_EQ(table_.grant_access(kBackendDomid, data_gfn(1), false), pvio::kInvalidGrantRef);

  ASSERT_TRUE(table_.end_access(refs[100]));
  EXPECT_EQ(image_.entry(refs[100]).flags, 0);
  EXPECT_EQ(table_.free_count(), 1u);
  const grant_ref_t again = table_.grant_access(7, data_gfn(2), true);
  EXPECT_EQ(again, refs[100]);
  EXPECT_EQ(image_.entry(again).domid, 7);
  EXPECT_EQ(image_.entry(again).frame, data_gfn(2));
  EXPECT_EQ(table_.grant_access(kBackendDomid, data_gfn(1), false), pvio::kInvalidGrantRef);
}

TEST_F(GrantTest, EndAccessRejectsRefsNotGranted) {
  const grant_ref_t ref = grant(0);
  EXPECT_TRUE(table_.end_access(ref));
  EXPECT_FALSE(table_.end_access(ref)) << "double end_access must not free the ref twice";
  EXPECT_EQ(table_.free_count(), kNrEntries - GNTTAB_NR_RESERVED_ENTRIES);
  EXPECT_FALSE(table_.end_access(kNrEntries));
  EXPECT_FALSE(table_.end_access(pvio::kInvalidGrantRef));
  EXPECT_FALSE(table_.end_access(GNTTAB_NR_RESERVED_ENTRIES + 50));  // never granted
}

TEST_F(GrantTest, ReservedRefsCanBeWrittenExplicitly) {
  // The toolstack convention: ref 1 carries the xenstore ring.
  ASSERT_TRUE(table_.grant_access_ref(GNTTAB_RESERVED_XENSTORE, kBackendDomid, data_gfn(5),
                                      false));
  EXPECT_EQ(image_.entry(GNTTAB_RESERVED_XENSTORE).frame, data_gfn(5));
  MapResult m = mapper_.map(GNTTAB_RESERVED_XENSTORE, false);
  ASSERT_EQ(m.status, GNTST_okay);
  EXPECT_EQ(m.addr, data(5));
  EXPECT_FALSE(table_.end_access(GNTTAB_RESERVED_XENSTORE));
  EXPECT_EQ(mapper_.unmap(m.handle), GNTST_okay);
  EXPECT_TRUE(table_.end_access(GNTTAB_RESERVED_XENSTORE));
  // Reserved refs never join the free list.
  EXPECT_EQ(table_.free_count(), kNrEntries - GNTTAB_NR_RESERVED_ENTRIES);
  // Free (never handed out) refs cannot be written explicitly.
  EXPECT_FALSE(table_.grant_access_ref(GNTTAB_NR_RESERVED_ENTRIES + 3, 0, data_gfn(0), false));
}

TEST_F(GrantTest, FrameBeyondV1RangeIsRefused) {
  EXPECT_EQ(table_.grant_access(kBackendDomid, 0x1'0000'0000ull, false), pvio::kInvalidGrantRef);
  EXPECT_EQ(table_.free_count(), kNrEntries - GNTTAB_NR_RESERVED_ENTRIES);
}

TEST_F(GrantTest, SmallFreeListStorageLimitsRefs) {
  GuestImage other;
  grant_entry_v1* f[1] = {other.table_frame(0)};
  grant_ref_t storage[20];
  GrantTable small(f, 1, storage, 20);
  EXPECT_EQ(small.nr_entries(), 20u);
  EXPECT_EQ(small.free_count(), 12u);
  for (int i = 0; i < 12; ++i) EXPECT_LT(small.grant_access(0, 1, false), 20u);
  EXPECT_EQ(small.grant_access(0, 1, false), pvio::kInvalidGrantRef);
}

TEST_F(GrantTest, EndAccessFailsWhileOtherSideHoldsEntryBusy) {
  const grant_ref_t ref = grant(0);
  // Simulate the mapping side directly, as Xen would: set GTF_writing.
  image_.entry(ref).flags |= GTF_reading | GTF_writing;
  EXPECT_TRUE(table_.is_busy(ref));
  EXPECT_FALSE(table_.end_access(ref));
  EXPECT_EQ(image_.entry(ref).flags, GTF_permit_access | GTF_reading | GTF_writing);
  image_.entry(ref).flags &= static_cast<std::uint16_t>(~GTF_writing);
  EXPECT_FALSE(table_.end_access(ref)) << "GTF_reading alone also blocks revocation";
  image_.entry(ref).flags &= static_cast<std::uint16_t>(~GTF_reading);
  EXPECT_FALSE(table_.is_busy(ref));
  EXPECT_TRUE(table_.end_access(ref));
}

TEST_F(GrantTest, FixedGrantTableCarriesItsOwnStorage) {
  GuestImage other;
  grant_entry_v1* f[1] = {other.table_frame(0)};
  FixedGrantTable<1> fixed(f);
  EXPECT_EQ(fixed.nr_entries(), kEntriesPerFrame);
  EXPECT_EQ(fixed.free_count(), kEntriesPerFrame - GNTTAB_NR_RESERVED_ENTRIES);
  const grant_ref_t ref = fixed.grant_access(4, 0x123, true);
  EXPECT_EQ(ref, GNTTAB_NR_RESERVED_ENTRIES);
  EXPECT_EQ(other.entry(ref).frame, 0x123u);
  EXPECT_TRUE(fixed.end_access(ref));
}

// ---- mapping side ----

TEST_F(GrantTest, MapReadsGrantedFrameAndUnmapClearsBusyBits) {
  std::memset(data(2), 0xAB, kGrantPageSize);
  const grant_ref_t ref = grant(2, /*readonly=*/true);
  MapResult m = mapper_.map(ref, /*readonly=*/true);
  ASSERT_EQ(m.status, GNTST_okay);
  EXPECT_EQ(m.addr, data(2));
  EXPECT_EQ(m.addr[0], 0xAB);
  EXPECT_EQ(m.addr[kGrantPageSize - 1], 0xAB);
  EXPECT_EQ(flags(ref), GTF_permit_access | GTF_readonly | GTF_reading);
  EXPECT_EQ(mapper_.pin_count(ref), 1u);
  EXPECT_FALSE(table_.end_access(ref));
  EXPECT_EQ(mapper_.unmap(m.handle), GNTST_okay);
  EXPECT_EQ(flags(ref), GTF_permit_access | GTF_readonly);
  EXPECT_EQ(mapper_.pin_count(ref), 0u);
  EXPECT_TRUE(table_.end_access(ref));
}

TEST_F(GrantTest, WritableMapWritesIntoGuestFrame) {
  const grant_ref_t ref = grant(6);
  MapResult m = mapper_.map(ref, false);
  ASSERT_EQ(m.status, GNTST_okay);
  EXPECT_EQ(flags(ref), GTF_permit_access | GTF_reading | GTF_writing);
  std::memset(m.addr + 100, 0x5C, 50);
  EXPECT_EQ(data(6)[100], 0x5C);
  EXPECT_EQ(data(6)[149], 0x5C);
  EXPECT_EQ(data(6)[150], 0);
  EXPECT_EQ(mapper_.unmap(m.handle), GNTST_okay);
  EXPECT_EQ(flags(ref), GTF_permit_access);
}

TEST_F(GrantTest, BadGrefIsRefused) {
  EXPECT_EQ(mapper_.map(kNrEntries, true).status, GNTST_bad_gntref);
  EXPECT_EQ(mapper_.map(0xFFFFFFF0u, true).status, GNTST_bad_gntref);
  EXPECT_EQ(mapper_.nr_entries(), kNrEntries);
}

TEST_F(GrantTest, WrongDomidOrTypeIsPermissionDenied) {
  const grant_ref_t other = grant(1, false, /*to=*/9);
  EXPECT_EQ(mapper_.map(other, true).status, GNTST_permission_denied);
  EXPECT_EQ(flags(other), GTF_permit_access) << "a refused map must leave no busy bits";
  // Never granted: GTF_invalid.
  EXPECT_EQ(mapper_.map(GNTTAB_NR_RESERVED_ENTRIES + 77, true).status, GNTST_permission_denied);
  // Other entry types are not mappable.
  const grant_ref_t ref = grant(1);
  image_.entry(ref).flags = GTF_accept_transfer;
  EXPECT_EQ(mapper_.map(ref, true).status, GNTST_permission_denied);
  image_.entry(ref).flags = GTF_transitive;
  EXPECT_EQ(mapper_.map(ref, true).status, GNTST_permission_denied);
  // GTF_sub_page entries may be copied from but never mapped.
  image_.entry(ref).flags = GTF_permit_access | GTF_sub_page;
  EXPECT_EQ(mapper_.map(ref, true).status, GNTST_permission_denied);
  alignas(16) std::uint8_t buf[16] = {};  // aligned: never straddles a page
  std::memcpy(data(1), "sub-page grant!", 16);
  gnttab_copy op{};
  op.source = gnttab_copy_ptr::gref(ref, kGuestDomid, 0);
  op.dest = gnttab_copy_ptr::local(buf);
  op.len = 16;
  op.flags = GNTCOPY_source_gref;
  EXPECT_EQ(mapper_.copy(op), GNTST_okay);
  EXPECT_STREQ(reinterpret_cast<char*>(buf), "sub-page grant!");
}

TEST_F(GrantTest, ReadonlyViolationIsPermissionDenied) {
  const grant_ref_t ref = grant(2, /*readonly=*/true);
  EXPECT_EQ(mapper_.map(ref, /*readonly=*/false).status, GNTST_permission_denied);
  EXPECT_EQ(flags(ref), GTF_permit_access | GTF_readonly);
  // Still refused while someone holds it read-only.
  MapResult ro = mapper_.map(ref, true);
  ASSERT_EQ(ro.status, GNTST_okay);
  EXPECT_EQ(mapper_.map(ref, false).status, GNTST_permission_denied);
  EXPECT_EQ(flags(ref), GTF_permit_access | GTF_readonly | GTF_reading);
  EXPECT_EQ(mapper_.pin_count(ref), 1u);
  EXPECT_EQ(mapper_.unmap(ro.handle), GNTST_okay);
}

TEST_F(GrantTest, FrameOutsideGuestMemoryIsBadPage) {
  const grant_ref_t ref = table_.grant_access(kBackendDomid, GuestImage::kOutsideGfn, false);
  EXPECT_EQ(mapper_.map(ref, false).status, GNTST_bad_page);
  EXPECT_EQ(flags(ref), GTF_permit_access) << "busy bits set for the attempt must be undone";
  EXPECT_EQ(mapper_.pin_count(ref), 0u);
  EXPECT_TRUE(table_.end_access(ref));
}

TEST_F(GrantTest, BadHandleIsRefused) {
  EXPECT_EQ(mapper_.unmap(0), GNTST_bad_handle);
  EXPECT_EQ(mapper_.unmap(123456), GNTST_bad_handle);
  const grant_ref_t ref = grant(0);
  MapResult m = mapper_.map(ref, true);
  ASSERT_EQ(m.status, GNTST_okay);
  EXPECT_EQ(mapper_.unmap(m.handle), GNTST_okay);
  EXPECT_EQ(mapper_.unmap(m.handle), GNTST_bad_handle) << "double unmap";
  EXPECT_EQ(flags(ref), GTF_permit_access);
}

TEST_F(GrantTest, HandleTableExhaustionIsNoSpace) {
  GrantMapper small(kGuestDomid, kBackendDomid, image_.memory(), GuestImage::kTableGfns, 2);
  const grant_ref_t ref = grant(0);
  MapResult a = small.map(ref, true);
  MapResult b = small.map(ref, true);
  ASSERT_EQ(a.status, GNTST_okay);
  ASSERT_EQ(b.status, GNTST_okay);
  EXPECT_NE(a.handle, b.handle);
  EXPECT_EQ(small.map(ref, true).status, GNTST_no_space);
  EXPECT_EQ(small.unmap(a.handle), GNTST_okay);
  EXPECT_EQ(small.map(ref, true).status, GNTST_okay);
}

TEST_F(GrantTest, BatchedMapAndUnmapReportPerOpStatus) {
  const grant_ref_t a = grant(0);
  const grant_ref_t b = grant(1, true);
  std::array<MapOp, 5> ops{};
  ops[0] = {a, kGuestDomid, 0, 1, 0, nullptr};
  ops[1] = {b, kGuestDomid, GNTMAP_readonly, 1, 0, nullptr};
  ops[2] = {b, kGuestDomid, 0, 1, 0, nullptr};          // writable map of a r/o grant
  ops[3] = {a, 3, GNTMAP_readonly, 1, 0, nullptr};       // unknown domain
  ops[4] = {kNrEntries + 1, kGuestDomid, 0, 1, 0, nullptr};
  mapper_.map(ops);
  EXPECT_EQ(ops[0].status, GNTST_okay);
  EXPECT_EQ(ops[0].host_addr, data(0));
  EXPECT_EQ(ops[1].status, GNTST_okay);
  EXPECT_EQ(ops[1].host_addr, data(1));
  EXPECT_EQ(ops[2].status, GNTST_permission_denied);
  EXPECT_EQ(ops[3].status, GNTST_bad_domain);
  EXPECT_EQ(ops[4].status, GNTST_bad_gntref);
  EXPECT_EQ(mapper_.mapping_count(), 2u);

  std::array<UnmapOp, 3> un{};
  un[0].handle = ops[0].handle;
  un[1].handle = ops[1].handle;
  un[2].handle = ops[1].handle;
  mapper_.unmap(un);
  EXPECT_EQ(un[0].status, GNTST_okay);
  EXPECT_EQ(un[1].status, GNTST_okay);
  EXPECT_EQ(un[2].status, GNTST_bad_handle);
  EXPECT_EQ(flags(a), GTF_permit_access);
  EXPECT_EQ(flags(b), GTF_permit_access | GTF_readonly);
}

TEST_F(GrantTest, PinCountsClearBusyBitsOnLastUnmap) {
  const grant_ref_t ref = grant(3);
  MapResult r1 = mapper_.map(ref, true);
  MapResult r2 = mapper_.map(ref, true);
  ASSERT_EQ(r1.status, GNTST_okay);
  ASSERT_EQ(r2.status, GNTST_okay);
  EXPECT_EQ(flags(ref), GTF_permit_access | GTF_reading);
  MapResult w = mapper_.map(ref, false);
  ASSERT_EQ(w.status, GNTST_okay);
  EXPECT_EQ(flags(ref), GTF_permit_access | GTF_reading | GTF_writing);
  EXPECT_EQ(mapper_.pin_count(ref), 3u);
  EXPECT_EQ(r1.addr, w.addr);

  EXPECT_EQ(mapper_.unmap(w.handle), GNTST_okay);
  EXPECT_EQ(flags(ref), GTF_permit_access | GTF_reading) << "last writer clears GTF_writing";
  EXPECT_EQ(mapper_.unmap(r1.handle), GNTST_okay);
  EXPECT_EQ(flags(ref), GTF_permit_access | GTF_reading);
  EXPECT_FALSE(table_.end_access(ref));
  EXPECT_EQ(mapper_.unmap(r2.handle), GNTST_okay);
  EXPECT_EQ(flags(ref), GTF_permit_access);
  EXPECT_EQ(mapper_.pin_count(ref), 0u);
  EXPECT_TRUE(table_.end_access(ref));
}

TEST_F(GrantTest, MapperDestructionReleasesMappings) {
  const grant_ref_t ref = grant(3);
  {
    GrantMapper m(kGuestDomid, kBackendDomid, image_.memory(), GuestImage::kTableGfns);
    ASSERT_EQ(m.map(ref, false).status, GNTST_okay);
    ASSERT_EQ(m.map(ref, true).status, GNTST_okay);
    EXPECT_TRUE(table_.is_busy(ref));
  }
  EXPECT_EQ(flags(ref), GTF_permit_access);
  EXPECT_TRUE(table_.end_access(ref));
}

TEST_F(GrantTest, TableFrameOutsideMemoryIsASetupError) {
  const std::uint64_t bad[] = {GuestImage::kBaseGfn, GuestImage::kOutsideGfn};
  EXPECT_THROW(GrantMapper(kGuestDomid, kBackendDomid, image_.memory(), bad),
               std::invalid_argument);
}

// A guest that rewrites an entry while it is mapped cannot steer the mapper: the frame was read
// once and the active entry keeps the pointer validated then.
TEST_F(GrantTest, EntryRewrittenWhileMappedKeepsValidatedFrame) {
  const grant_ref_t ref = grant(4);
  MapResult m = mapper_.map(ref, false);
  ASSERT_EQ(m.status, GNTST_okay);
  ASSERT_EQ(m.addr, data(4));

  grant_entry_v1& e = image_.entry(ref);
  for (std::uint64_t evil : {data_gfn(9), GuestImage::kOutsideGfn, GuestImage::kTableGfns[0]}) {
    e.frame = static_cast<std::uint32_t>(evil);
    // A second map and a copy while pinned use the frame validated at the first map.
    MapResult again = mapper_.map(ref, false);
    ASSERT_EQ(again.status, GNTST_okay);
    EXPECT_EQ(again.addr, data(4));
    std::uint8_t src[64];
    std::memset(src, 0xEE, sizeof src);
    alignas(4096) static std::uint8_t page[4096];
    std::memcpy(page, src, sizeof src);
    gnttab_copy op{};
    op.source = gnttab_copy_ptr::local(page);
    op.dest = gnttab_copy_ptr::gref(ref, kGuestDomid, 128);
    op.len = sizeof src;
    op.flags = GNTCOPY_dest_gref;
    EXPECT_EQ(mapper_.copy(op), GNTST_okay);
    EXPECT_EQ(data(4)[128], 0xEE);
    EXPECT_EQ(data(9)[128], 0) << "copy followed the rewritten frame";
    EXPECT_EQ(image_.page(GuestImage::kTableGfns[0])[4096 - 1], 0);
    EXPECT_EQ(mapper_.unmap(again.handle), GNTST_okay);
  }
  // Even with the domid and type rewritten, the existing pin keeps working on the same frame.
  e.domid = 42;
  EXPECT_EQ(mapper_.pin_count(ref), 1u);
  EXPECT_EQ(mapper_.unmap(m.handle), GNTST_okay);
  // Once idle, a new map validates the entry afresh and refuses the rewritten domid.
  EXPECT_EQ(mapper_.map(ref, false).status, GNTST_permission_denied);
  e.domid = kBackendDomid;
  e.frame = static_cast<std::uint32_t>(GuestImage::kOutsideGfn);
  EXPECT_EQ(mapper_.map(ref, false).status, GNTST_bad_page);
  e.frame = static_cast<std::uint32_t>(data_gfn(9));
  MapResult fresh = mapper_.map(ref, false);
  ASSERT_EQ(fresh.status, GNTST_okay);
  EXPECT_EQ(fresh.addr, data(9));
  EXPECT_EQ(mapper_.unmap(fresh.handle), GNTST_okay);
}

// The guest may legitimately change flag bits of an entry that is in use (grant_table.h: "use
// SMP-safe bit-setting" to toggle GTF_readonly, etc.). The mapper's compare-exchange and
// atomic clear must never lose such a concurrent update, nor leave busy bits behind.
TEST_F(GrantTest, ConcurrentGuestFlagUpdatesAreNeverLost) {
  const grant_ref_t ref = grant(0);
  std::atomic_ref<std::uint16_t> guest_flags(image_.entry(ref).flags);
  std::atomic<bool> stop{false};
  std::uint64_t toggles = 0, lost = 0;
  std::thread guest([&] {
    // Each toggle sees the bit the previous toggle left, unless someone overwrote it.
    std::uint16_t expect = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      const std::uint16_t old = guest_flags.fetch_xor(GTF_PWT);
      if ((old & GTF_PWT) != expect) ++lost;
      expect = static_cast<std::uint16_t>((old & GTF_PWT) ^ GTF_PWT);
      ++toggles;
    }
  });
  int ok = 0, unstable = 0;
  for (int i = 0; i < 200000; ++i) {
    MapResult m = mapper_.map(ref, i % 2 == 0);
    if (m.status == GNTST_okay) {
      ++ok;
      ASSERT_EQ(m.addr, data(0));
      ASSERT_EQ(mapper_.unmap(m.handle), GNTST_okay);
    } else {
      ASSERT_EQ(m.status, GNTST_general_error) << status_string(m.status);
      ++unstable;
    }
  }
  stop = true;
  guest.join();
  EXPECT_GT(ok, 0);
  EXPECT_EQ(lost, 0u) << "guest updates overwritten by the mapper, of " << toggles;
  const std::uint16_t want =
      static_cast<std::uint16_t>(GTF_permit_access | ((toggles % 2) ? GTF_PWT : 0));
  EXPECT_EQ(flags(ref), want) << "toggles " << toggles << ", unstable " << unstable;
  EXPECT_EQ(mapper_.pin_count(ref), 0u);
}

// ---- GNTTABOP_copy ----

class CopyTest : public GrantTest {
 protected:
  struct alignas(4096) LocalPages {
    std::uint8_t bytes[4][4096];
  };
  std::unique_ptr<LocalPages> local_ = std::make_unique<LocalPages>();
};

TEST_F(CopyTest, CopyArgumentsAreValidated) {
  const grant_ref_t rw = grant(0);
  const grant_ref_t ro = grant(1, true);
  auto op_for = [&](std::uint16_t soff, std::uint16_t doff, std::uint16_t len) {
    gnttab_copy op{};
    op.source = gnttab_copy_ptr::gref(rw, kGuestDomid, soff);
    op.dest = gnttab_copy_ptr::local(local_->bytes[0]);
    op.dest.offset = doff;
    op.len = len;
    op.flags = GNTCOPY_source_gref;
    op.status = 1;
    return op;
  };
  std::vector<gnttab_copy> ops = {
      op_for(0, 0, 4096),     // whole page: fine
      op_for(1, 0, 4096),     // source crosses the page
      op_for(0, 4000, 97),    // dest crosses the page
      op_for(4096, 0, 0),     // empty copy at the page end: fine
      op_for(5000, 0, 1),     // offset beyond the page
      op_for(0xFFFF, 0, 2),   // would wrap 16 bits
  };
  gnttab_copy unknown_flag = op_for(0, 0, 8);
  unknown_flag.flags |= 0x8;
  ops.push_back(unknown_flag);
  gnttab_copy bad_ref = op_for(0, 0, 8);
  bad_ref.source.u.ref = kNrEntries;
  ops.push_back(bad_ref);
  gnttab_copy bad_dom = op_for(0, 0, 8);
  bad_dom.source.domid = 6;
  ops.push_back(bad_dom);
  gnttab_copy local_not_self = op_for(0, 0, 8);
  local_not_self.dest.domid = 0;
  ops.push_back(local_not_self);
  gnttab_copy into_ro{};
  into_ro.source = gnttab_copy_ptr::local(local_->bytes[1]);
  into_ro.dest = gnttab_copy_ptr::gref(ro, kGuestDomid, 0);
  into_ro.len = 8;
  into_ro.flags = GNTCOPY_dest_gref;
  ops.push_back(into_ro);
  gnttab_copy null_local = op_for(0, 0, 8);
  null_local.dest.u.gmfn = 0;
  ops.push_back(null_local);

  mapper_.copy(ops);
  const std::int16_t want[] = {GNTST_okay,          GNTST_bad_copy_arg, GNTST_bad_copy_arg,
                               GNTST_okay,          GNTST_bad_copy_arg, GNTST_bad_copy_arg,
                               GNTST_bad_copy_arg,  GNTST_bad_gntref,   GNTST_bad_domain,
                               GNTST_permission_denied, GNTST_permission_denied, GNTST_bad_page};
  ASSERT_EQ(ops.size(), std::size(want));
  for (std::size_t i = 0; i < ops.size(); ++i)
    EXPECT_EQ(ops[i].status, want[i]) << "op " << i << ": " << status_string(ops[i].status);
  EXPECT_EQ(flags(rw), GTF_permit_access) << "copies pin only for their duration";
  EXPECT_EQ(flags(ro), GTF_permit_access | GTF_readonly);
  EXPECT_EQ(mapper_.pin_count(rw), 0u);
}

TEST_F(CopyTest, CopyWhileMappedKeepsTheMappingsBusyBits) {
  const grant_ref_t ref = grant(2);
  MapResult m = mapper_.map(ref, true);
  ASSERT_EQ(m.status, GNTST_okay);
  gnttab_copy op{};
  op.source = gnttab_copy_ptr::local(local_->bytes[0]);
  op.dest = gnttab_copy_ptr::gref(ref, kGuestDomid, 0);
  op.len = 10;
  op.flags = GNTCOPY_dest_gref;
  EXPECT_EQ(mapper_.copy(op), GNTST_okay);
  EXPECT_EQ(flags(ref), GTF_permit_access | GTF_reading) << "GTF_writing only during the copy";
  EXPECT_EQ(mapper_.unmap(m.handle), GNTST_okay);
  EXPECT_EQ(flags(ref), GTF_permit_access);
}

// Random copies in all four combinations against a byte model of every page involved.
TEST_F(CopyTest, RandomCopiesInAllFourCombinationsMatchModel) {
  constexpr unsigned kGuestPages = 4;
  std::mt19937 rng(20240611);
  for (unsigned p = 0; p < kGuestPages; ++p)
    for (unsigned i = 0; i < kGrantPageSize; ++i) data(p)[i] = static_cast<std::uint8_t>(rng());
  for (auto& page : local_->bytes)
    for (auto& b : page) b = static_cast<std::uint8_t>(rng());

  std::vector<grant_ref_t> refs;
  for (unsigned p = 0; p < kGuestPages; ++p) refs.push_back(grant(p));
  // model[0..3] = guest pages, model[4..7] = local pages
  std::vector<std::vector<std::uint8_t>> model;
  for (unsigned p = 0; p < kGuestPages; ++p) model.emplace_back(data(p), data(p) + 4096);
  for (auto& page : local_->bytes) model.emplace_back(page, page + 4096);

  std::array<unsigned, 4> per_combo{};
  for (int iter = 0; iter < 2000; ++iter) {
    const unsigned combo = iter % 4;  // bit 0: source is a gref, bit 1: dest is a gref
    const auto len = static_cast<std::uint16_t>(rng() % 4097);
    const auto soff = static_cast<std::uint16_t>(rng() % (4097 - len));
    const auto doff = static_cast<std::uint16_t>(rng() % (4097 - len));
    const unsigned sp = rng() % 4, dp = rng() % 4;
    gnttab_copy op{};
    op.len = len;
    op.flags = static_cast<std::uint16_t>(((combo & 1) ? GNTCOPY_source_gref : 0) |
                                          ((combo & 2) ? GNTCOPY_dest_gref : 0));
    op.source = (combo & 1) ? gnttab_copy_ptr::gref(refs[sp], kGuestDomid, soff)
                            : gnttab_copy_ptr::local(local_->bytes[sp] + soff);
    op.dest = (combo & 2) ? gnttab_copy_ptr::gref(refs[dp], kGuestDomid, doff)
                          : gnttab_copy_ptr::local(local_->bytes[dp] + doff);
    ASSERT_EQ(mapper_.copy(op), GNTST_okay) << "iter " << iter;
    auto& src = model[((combo & 1) ? 0 : 4) + sp];
    auto& dst = model[((combo & 2) ? 0 : 4) + dp];
    std::memmove(dst.data() + doff, src.data() + soff, len);
    ++per_combo[combo];
  }
  for (unsigned c = 0; c < 4; ++c) EXPECT_EQ(per_combo[c], 500u);
  for (unsigned p = 0; p < kGuestPages; ++p) {
    EXPECT_EQ(std::memcmp(model[p].data(), data(p), 4096), 0) << "guest page " << p;
    EXPECT_EQ(flags(refs[p]), GTF_permit_access);
  }
  for (unsigned p = 0; p < 4; ++p)
    EXPECT_EQ(std::memcmp(model[4 + p].data(), local_->bytes[p], 4096), 0) << "local page " << p;
}

// ---- mappers of one domain share the active table ----

// blkback has a mapper per queue: if two of them map the same gref, the first unmap must not
// clear the busy bits the other mapping still relies on (Xen's active entry is per domain).
TEST_F(GrantTest, TwoMappersOfOneDomainShareThePinCount) {
  const grant_ref_t ref = grant(7);
  GrantMapper second(kGuestDomid, kBackendDomid, image_.memory(), GuestImage::kTableGfns);
  EXPECT_EQ(second.active_table(), mapper_.active_table());
  MapResult a = mapper_.map(ref, /*readonly=*/false);
  MapResult b = second.map(ref, /*readonly=*/true);
  ASSERT_EQ(a.status, GNTST_okay);
  ASSERT_EQ(b.status, GNTST_okay);
  EXPECT_EQ(a.addr, b.addr);
  EXPECT_EQ(mapper_.pin_count(ref), 2u);
  EXPECT_EQ(second.pin_count(ref), 2u);

  EXPECT_EQ(mapper_.unmap(a.handle), GNTST_okay);  // the last writer goes: GTF_writing only
  EXPECT_EQ(flags(ref), GTF_permit_access | GTF_reading) << "the other mapping is still live";
  EXPECT_FALSE(table_.end_access(ref)) << "the guest cannot revoke a mapped grant";
  EXPECT_EQ(second.pin_count(ref), 1u);

  EXPECT_EQ(second.unmap(b.handle), GNTST_okay);
  EXPECT_EQ(flags(ref), GTF_permit_access);
  EXPECT_EQ(mapper_.pin_count(ref), 0u);
  EXPECT_TRUE(table_.end_access(ref));
}

// A mapper destroyed with mappings still live releases only its own pins.
TEST_F(GrantTest, DestroyingOneMapperKeepsTheOthersMappings) {
  const grant_ref_t ref = grant(8);
  MapResult a = mapper_.map(ref, false);
  ASSERT_EQ(a.status, GNTST_okay);
  {
    GrantMapper second(kGuestDomid, kBackendDomid, image_.memory(), GuestImage::kTableGfns);
    ASSERT_EQ(second.map(ref, false).status, GNTST_okay);
    ASSERT_EQ(second.map(ref, true).status, GNTST_okay);
  }
  EXPECT_EQ(flags(ref), GTF_permit_access | GTF_reading | GTF_writing);
  EXPECT_EQ(mapper_.pin_count(ref), 1u);
  EXPECT_EQ(mapper_.unmap(a.handle), GNTST_okay);
  EXPECT_EQ(flags(ref), GTF_permit_access);
}

// A pinned entry serves only the mapping domain it was validated for.
TEST_F(GrantTest, PinnedEntryIsNotLentToAnotherMappingDomain) {
  const grant_ref_t ref = grant(9);
  GrantMapper other(kGuestDomid, /*mapper_domid=*/7, image_.memory(), GuestImage::kTableGfns);
  MapResult a = mapper_.map(ref, false);
  ASSERT_EQ(a.status, GNTST_okay);
  EXPECT_EQ(other.map(ref, true).status, GNTST_permission_denied);
  EXPECT_EQ(mapper_.unmap(a.handle), GNTST_okay);
  EXPECT_EQ(other.map(ref, true).status, GNTST_permission_denied) << "granted to domain 0";
}

// Worker threads with a mapper each (blkback's queues) on the same grefs: while one thread
// holds its mapping, the busy bits never drop, however often the others map and unmap.
TEST_F(GrantTest, MappersOnSeveralThreadsKeepBusyBitsWhileAnyoneMaps) {
  constexpr unsigned kRefs = 4;
  std::vector<grant_ref_t> refs;
  for (unsigned i = 0; i < kRefs; ++i) refs.push_back(grant(10 + i));
  std::vector<MapResult> held;
  for (grant_ref_t r : refs) held.push_back(mapper_.map(r, false));
  for (const MapResult& m : held) ASSERT_EQ(m.status, GNTST_okay);

  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> churn;
  for (unsigned t = 0; t < 3; ++t) {
    churn.emplace_back([&, t] {
      GrantMapper m(kGuestDomid, kBackendDomid, image_.memory(), GuestImage::kTableGfns);
      std::mt19937 rng(t);
      for (int i = 0; i < 20000; ++i) {
        const grant_ref_t r = refs[rng() % kRefs];
        const MapResult x = m.map(r, (rng() & 1) != 0);
        if (x.status != GNTST_okay || x.addr != data(10 + (r - refs[0]))) failures.fetch_add(1);
        if (x.status == GNTST_okay) m.unmap(x.handle);
        gnttab_copy op{};
        op.source = gnttab_copy_ptr::gref(r, kGuestDomid, 0);
        op.dest = gnttab_copy_ptr::gref(refs[(r - refs[0] + 1) % kRefs], kGuestDomid, 0);
        op.len = 64;
        op.flags = GNTCOPY_source_gref | GNTCOPY_dest_gref;
        if (m.copy(op) != GNTST_okay) failures.fetch_add(1);
      }
    });
  }
  std::thread watcher([&] {
    while (!stop.load())
      for (grant_ref_t r : refs)
        if ((flags(r) & (GTF_reading | GTF_writing)) != (GTF_reading | GTF_writing))
          failures.fetch_add(1);
  });
  for (auto& t : churn) t.join();
  stop = true;
  watcher.join();
  EXPECT_EQ(failures.load(), 0);
  for (unsigned i = 0; i < kRefs; ++i) {
    EXPECT_EQ(mapper_.pin_count(refs[i]), 1u);
    EXPECT_EQ(mapper_.unmap(held[i].handle), GNTST_okay);
    EXPECT_EQ(flags(refs[i]), GTF_permit_access);
  }
}

// ---- persistent grants ----

class PersistentTest : public GrantTest {};

TEST_F(PersistentTest, HitReusesTheMapping) {
  const grant_ref_t ref = grant(0);
  PersistentGrantCache cache(mapper_, 4);
  auto g1 = cache.get(ref, false);
  ASSERT_EQ(g1.status, GNTST_okay);
  EXPECT_TRUE(g1.persistent);
  EXPECT_EQ(g1.addr, data(0));
  cache.put(g1);
  auto g2 = cache.get(ref, true);
  ASSERT_EQ(g2.status, GNTST_okay);
  EXPECT_EQ(g2.addr, data(0));
  EXPECT_EQ(cache.hits(), 1u);
  EXPECT_EQ(cache.misses(), 1u);
  EXPECT_EQ(mapper_.pin_count(ref), 1u) << "one mapping however often it is used";
  cache.put(g2);
  EXPECT_TRUE(table_.is_busy(ref)) << "persistent mapping stays while cached";
  EXPECT_FALSE(table_.end_access(ref));
}

TEST_F(PersistentTest, EvictsLeastRecentlyUsedUnusedMapping) {
  const grant_ref_t r1 = grant(1), r2 = grant(2), r3 = grant(3);
  PersistentGrantCache cache(mapper_, 2);
  cache.put(cache.get(r1, false));
  cache.put(cache.get(r2, false));
  cache.put(cache.get(r1, false));  // r1 is now the most recently used
  auto g3 = cache.get(r3, false);
  ASSERT_EQ(g3.status, GNTST_okay);
  EXPECT_TRUE(g3.persistent);
  EXPECT_EQ(cache.evictions(), 1u);
  EXPECT_TRUE(cache.contains(r1));
  EXPECT_FALSE(cache.contains(r2));
  EXPECT_TRUE(cache.contains(r3));
  EXPECT_EQ(mapper_.pin_count(r2), 0u);
  EXPECT_EQ(flags(r2), GTF_permit_access);
  EXPECT_TRUE(table_.end_access(r2)) << "an evicted grant can be revoked by the guest";
  cache.put(g3);
}

TEST_F(PersistentTest, InUseMappingsAreNeverEvicted) {
  const grant_ref_t r1 = grant(1), r2 = grant(2);
  PersistentGrantCache cache(mapper_, 1);
  auto g1 = cache.get(r1, false);
  auto g2 = cache.get(r2, false);
  ASSERT_EQ(g2.status, GNTST_okay);
  EXPECT_FALSE(g2.persistent) << "cache full of in-use grants: one-off mapping";
  EXPECT_EQ(g2.addr, data(2));
  EXPECT_TRUE(cache.contains(r1));
  EXPECT_EQ(cache.size(), 1u);
  cache.put(g2);
  EXPECT_EQ(flags(r2), GTF_permit_access) << "one-off mapping released by put()";
  EXPECT_EQ(flags(r1), GTF_permit_access | GTF_reading | GTF_writing);
  cache.put(g1);
}

TEST_F(PersistentTest, ReadOnlyGrantFallsBackToOneOffMapping) {
  const grant_ref_t ro = grant(5, true);
  PersistentGrantCache cache(mapper_, 8);
  auto g = cache.get(ro, true);
  ASSERT_EQ(g.status, GNTST_okay);
  EXPECT_FALSE(g.persistent);
  EXPECT_EQ(flags(ro), GTF_permit_access | GTF_readonly | GTF_reading);
  cache.put(g);
  EXPECT_EQ(flags(ro), GTF_permit_access | GTF_readonly);
  EXPECT_EQ(cache.get(ro, false).status, GNTST_permission_denied);
  EXPECT_EQ(cache.get(kNrEntries, false).status, GNTST_bad_gntref);
  EXPECT_EQ(cache.size(), 0u);
}

TEST_F(PersistentTest, FlushAndTeardownReleaseEverything) {
  std::vector<grant_ref_t> refs;
  for (unsigned p = 0; p < 6; ++p) refs.push_back(grant(p));
  {
    PersistentGrantCache cache(mapper_, 16);
    for (grant_ref_t r : refs) cache.put(cache.get(r, false));
    auto held = cache.get(refs[0], false);
    EXPECT_EQ(cache.flush_unused(), 5u);
    EXPECT_EQ(cache.size(), 1u);
    EXPECT_EQ(flags(refs[1]), GTF_permit_access);
    EXPECT_TRUE(table_.is_busy(refs[0]));
    cache.put(held);
    cache.put(cache.get(refs[3], false));
    EXPECT_EQ(mapper_.mapping_count(), 2u);
  }
  EXPECT_EQ(mapper_.mapping_count(), 0u);
  for (grant_ref_t r : refs) {
    EXPECT_EQ(flags(r), GTF_permit_access);
    EXPECT_TRUE(table_.end_access(r));
  }
}

TEST(GrantAbi, StatusStrings) {
  EXPECT_STREQ(status_string(GNTST_okay), "okay");
  EXPECT_STREQ(status_string(GNTST_bad_copy_arg), "copy arguments cross page boundary");
  EXPECT_STREQ(status_string(GNTST_no_space), "out of space");
  EXPECT_STREQ(status_string(-14), "unknown status");
  EXPECT_STREQ(status_string(3), "unknown status");
}

}  // namespace
