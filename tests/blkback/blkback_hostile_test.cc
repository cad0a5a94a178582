// Hostile frontends against the blkback datapath: raw requests with every invalid field the
// protocol allows a guest to write, grants that must not be accessed, a guest rewriting ring
// slots while the backend reads them, and an impossible producer index. Each must end in an
// error response (or the ring stopped) for that device only, while another guest's device keeps
// being served, and without the backend touching memory it was not granted.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "blkback_datapath_guest.h"
#include "engine_test.h"

namespace pvio::blkback::test {
namespace {

constexpr domid_t kGuestDomid = 9;
constexpr std::uint64_t kDiskBytes = 4 << 20;
constexpr std::uint64_t kDiskSectors = kDiskBytes / 512;
constexpr unsigned kMaxIndirect = 32;

using blkif::blkif_request;
using blkif::blkif_request_discard;
using blkif::blkif_request_indirect;
using blkif::blkif_response;

class Hostile : public ::testing::Test {
 protected:
  explicit Hostile(unsigned max_indirect = kMaxIndirect) : q_(guest_, 0) {
    DeviceConfig cfg;
    cfg.frontend_domid = kGuestDomid;
    cfg.memory = &guest_.memory();
    cfg.grant_table_gfns = guest_.table_gfns();
    cfg.engine = "uring";
    cfg.backing = BackingOptions{file_.path(), false, DirectIo::Auto};
    cfg.max_indirect_segments = max_indirect;
    cfg.queues.push_back(q_.config());
    cfg.on_ring_error = [this](unsigned) { ring_errors_.fetch_add(1); };
    dev_ = std::make_unique<Device>(cfg);
    dev_->start();
  }

  // A fresh guest page filled with `fill`, granted to `to` (Dom0 by default).
  struct Page {
    std::uint64_t gfn;
    grant_ref_t gref;
    std::uint8_t* data;
  };
  Page page(bool readonly, std::uint8_t fill = 0x5A, domid_t to = 0) {
    Page p{guest_.alloc_page(), 0, nullptr};
    p.data = guest_.page(p.gfn);
    std::memset(p.data, fill, 4096);
    p.gref = guest_.gnttab().grant_access(to, p.gfn, readonly);
    return p;
  }

  static blkif_request rw(std::uint8_t op, std::uint64_t sector, std::uint64_t id,
                          std::initializer_list<blkif::blkif_request_segment> segs) {
    blkif_request r{};
    r.operation = op;
    r.id = id;
    r.sector_number = sector;
    r.nr_segments = static_cast<std::uint8_t>(segs.size());
    std::size_t i = 0;
    for (const auto& s : segs) r.seg[i++] = s;
    return r;
  }

  std::uint64_t invalid(RequestError e) const {
    return dev_->stats().invalid[static_cast<std::size_t>(e)];
  }
  bool file_is_zero() const {
    for (std::uint8_t b : file_.contents())
      if (b != 0) return false;
    return true;
  }

  TempFile file_{kDiskBytes};
  TestGuest guest_{kGuestDomid};
  GuestQueue q_;
  std::atomic<int> ring_errors_{0};
  std::unique_ptr<Device> dev_;
};

TEST_F(Hostile, UnknownOperationsGetEopnotsupp) {
  const Page p = page(false);
  for (std::uint8_t op : {blkif::kOpReserved1, std::uint8_t{7}, std::uint8_t{0xFF}}) {
    const blkif_response r = q_.roundtrip(rw(op, 0, 100 + op, {{p.gref, 0, 7}}));
    EXPECT_EQ(r.id, 100u + op);
    EXPECT_EQ(r.operation, op);
    EXPECT_EQ(r.status, blkif::kRspEopnotsupp);
  }
  EXPECT_EQ(invalid(RequestError::UnsupportedOp), 3u);
  EXPECT_FALSE(guest_.gnttab().is_busy(p.gref));
}

TEST_F(Hostile, SegmentCountZeroOrOverLimit) {
  const Page p = page(false);
  blkif_request r0 = rw(blkif::kOpRead, 0, 1, {});
  EXPECT_EQ(q_.roundtrip(r0).status, blkif::kRspError);
  blkif_request w0 = rw(blkif::kOpWrite, 0, 2, {});
  EXPECT_EQ(q_.roundtrip(w0).status, blkif::kRspError);
  blkif_request big = rw(blkif::kOpRead, 0, 3, {{p.gref, 0, 0}});
  big.nr_segments = blkif::kMaxSegmentsPerRequest + 1;
  EXPECT_EQ(q_.roundtrip(big).status, blkif::kRspError);
  big.nr_segments = 0xFF;
  EXPECT_EQ(q_.roundtrip(big).status, blkif::kRspError);
  EXPECT_EQ(invalid(RequestError::BadSegmentCount), 4u);
  EXPECT_TRUE(std::all_of(p.data, p.data + 4096, [](std::uint8_t b) { return b == 0x5A; }));
}

TEST_F(Hostile, SectorsOutsideThePage) {
  const Page p = page(false);
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpRead, 0, 1, {{p.gref, 5, 4}})).status, blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpRead, 0, 2, {{p.gref, 0, 8}})).status, blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpRead, 0, 3, {{p.gref, 8, 8}})).status, blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpWrite, 0, 4, {{p.gref, 0, 7}, {p.gref, 3, 255}})).status,
            blkif::kRspError);
  EXPECT_EQ(invalid(RequestError::BadSegment), 4u);
  EXPECT_TRUE(file_is_zero());
  EXPECT_TRUE(std::all_of(p.data, p.data + 4096, [](std::uint8_t b) { return b == 0x5A; }));
}

TEST_F(Hostile, SectorBeyondEndAndOverflow) {
  const Page p = page(false);
  const std::uint64_t end = kDiskSectors;
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpWrite, end - 1, 1, {{p.gref, 0, 1}})).status, blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpWrite, end, 2, {{p.gref, 0, 0}})).status, blkif::kRspError);
  EXPECT_EQ(invalid(RequestError::BeyondEnd), 2u);
  // Sector + length wraps 64 bits; sector * 512 does not fit 64 bits.
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpWrite, ~0ull - 3, 3, {{p.gref, 0, 7}})).status, blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpRead, 1ull << 55, 4, {{p.gref, 0, 7}})).status, blkif::kRspError);
  EXPECT_EQ(invalid(RequestError::Overflow), 2u);
  EXPECT_TRUE(file_is_zero());
  // The last sectors exactly are fine.
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpWrite, end - 2, 5, {{p.gref, 6, 7}})).status, blkif::kRspOkay);
  const auto c = file_.contents();
  EXPECT_EQ(c[kDiskBytes - 1], 0x5A);
  EXPECT_EQ(c[kDiskBytes - 1024 - 1], 0);
}

TEST_F(Hostile, GrantsThatMustNotBeAccessed) {
  // Never granted, outside the table, granted to another domain, read-only for a READ (the
  // backend would write into it), granted to us but naming a frame outside guest memory.
  const Page other = page(false, 0x11, /*to=*/3);
  const Page ro = page(true, 0x22);
  const Page good = page(false, 0x33);
  const grant_ref_t never = guest_.gnttab().grant_access(0, guest_.alloc_page(), false);
  ASSERT_TRUE(guest_.gnttab().end_access(never));
  const grant_ref_t outside_frame =
      guest_.gnttab().grant_access(0, TestGuest::kBaseGfn + 100000, false);

  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpRead, 8, 1, {{never, 0, 7}})).status, blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpRead, 8, 2, {{0x7FFFFFF0u, 0, 7}})).status, blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpRead, 8, 3, {{other.gref, 0, 7}})).status, blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpRead, 8, 4, {{ro.gref, 0, 7}})).status, blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpRead, 8, 5, {{outside_frame, 0, 7}})).status,
            blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpWrite, 8, 6, {{other.gref, 0, 7}})).status, blkif::kRspError);
  // One good segment and one bad: refused as a whole, and the good grant is released.
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpRead, 8, 7, {{good.gref, 0, 7}, {ro.gref, 0, 7}})).status,
            blkif::kRspError);
  EXPECT_EQ(dev_->stats().grant_errors, 7u);

  EXPECT_TRUE(std::all_of(other.data, other.data + 4096, [](std::uint8_t b) { return b == 0x11; }));
  EXPECT_TRUE(std::all_of(ro.data, ro.data + 4096, [](std::uint8_t b) { return b == 0x22; }));
  EXPECT_TRUE(std::all_of(good.data, good.data + 4096, [](std::uint8_t b) { return b == 0x33; }));
  EXPECT_TRUE(file_is_zero());
  for (grant_ref_t r : {other.gref, ro.gref, good.gref, outside_frame})
    EXPECT_FALSE(guest_.gnttab().is_busy(r)) << r;
  // A read-only grant is fine for a WRITE: the backend only reads the page.
  EXPECT_EQ(q_.roundtrip(rw(blkif::kOpWrite, 8, 8, {{ro.gref, 0, 7}})).status, blkif::kRspOkay);
  EXPECT_EQ(file_.contents()[8 * 512], 0x22);
}

TEST_F(Hostile, IndirectRequestsOutOfBounds) {
  const Page data = page(false);
  const Page ind = page(true, 0);
  auto* segs = reinterpret_cast<blkif::blkif_request_segment*>(ind.data);
  for (unsigned i = 0; i < 512; ++i) segs[i] = {data.gref, 0, 7};
  auto indirect = [&](std::uint8_t op, std::uint16_t nseg, grant_ref_t gref, std::uint64_t id) {
    blkif_request_indirect r{};
    r.operation = blkif::kOpIndirect;
    r.indirect_op = op;
    r.nr_segments = nseg;
    r.id = id;
    r.sector_number = 0;
    for (auto& g : r.indirect_grefs) g = gref;
    return r;
  };
  EXPECT_EQ(q_.roundtrip(indirect(blkif::kOpWrite, kMaxIndirect + 1, ind.gref, 1)).status,
            blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(indirect(blkif::kOpWrite, 4096, ind.gref, 2)).status, blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(indirect(blkif::kOpWrite, 0xFFFF, ind.gref, 3)).status, blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(indirect(blkif::kOpWrite, 0, ind.gref, 4)).status, blkif::kRspError);
  EXPECT_EQ(invalid(RequestError::BadSegmentCount), 4u);
  EXPECT_EQ(q_.roundtrip(indirect(blkif::kOpFlushDiskcache, 1, ind.gref, 5)).status,
            blkif::kRspError);
  EXPECT_EQ(q_.roundtrip(indirect(blkif::kOpIndirect, 1, ind.gref, 6)).status, blkif::kRspError);
  EXPECT_EQ(invalid(RequestError::BadIndirectOp), 2u);
  EXPECT_EQ(q_.roundtrip(indirect(blkif::kOpWrite, 2, 0x7FFFFFF0u, 7)).status, blkif::kRspError);
  EXPECT_EQ(invalid(RequestError::IndirectPage), 1u);
  // A bad segment inside the indirect page is caught after the copy.
  segs[1] = {data.gref, 6, 2};
  EXPECT_EQ(q_.roundtrip(indirect(blkif::kOpWrite, 2, ind.gref, 8)).status, blkif::kRspError);
  EXPECT_EQ(invalid(RequestError::BadSegment), 1u);
  EXPECT_TRUE(file_is_zero());
  segs[1] = {data.gref, 0, 7};
  const blkif_response ok = q_.roundtrip(indirect(blkif::kOpWrite, 2, ind.gref, 9));
  EXPECT_EQ(ok.status, blkif::kRspOkay);
  EXPECT_EQ(ok.operation, blkif::kOpIndirect);
  EXPECT_FALSE(guest_.gnttab().is_busy(ind.gref));
}

TEST_F(Hostile, DiscardChecks) {
  blkif_request_discard d{};
  d.operation = blkif::kOpDiscard;
  d.id = 1;
  d.sector_number = kDiskSectors - 8;
  d.nr_sectors = 16;
  const blkif_response r = q_.roundtrip(d);
  if (!dev_->limits().discard) {
    EXPECT_EQ(r.status, blkif::kRspEopnotsupp);
    return;
  }
  EXPECT_EQ(r.status, blkif::kRspError);
  d.sector_number = 8;
  d.nr_sectors = ~0ull;
  EXPECT_EQ(q_.roundtrip(d).status, blkif::kRspError);
  d.nr_sectors = 8;
  d.flag = blkif::kDiscardSecure;  // feature-discard-secure is not offered
  EXPECT_EQ(q_.roundtrip(d).status, blkif::kRspEopnotsupp);
}

class HostileNoIndirect : public Hostile {
 protected:
  HostileNoIndirect() : Hostile(0) {}
};

TEST_F(HostileNoIndirect, IndirectWithoutTheFeatureIsUnsupported) {
  blkif_request_indirect r{};
  r.operation = blkif::kOpIndirect;
  r.indirect_op = blkif::kOpRead;
  r.nr_segments = 1;
  r.id = 5;
  EXPECT_EQ(q_.roundtrip(r).status, blkif::kRspEopnotsupp);
}

// The guest keeps rewriting every ring slot, byte by byte, between a valid write and an
// invalid variant while the backend serves. Each field of the variant is invalid on its own and
// a byte-wise mix of a field is either the valid value or invalid, so whatever mix the
// backend's single copy catches, the only acceptable outcomes are the valid write or an error.
// (The id, bytes 8..15, is left alone; responses share the slots, so their ids may be
// clobbered by the guest's own scribbling, but operation and status live in bytes 8..11.)
TEST_F(Hostile, SlotsRewrittenWhileServedAreReadOnce) {
  const Page p = page(true, 0x77);
  const blkif_request valid = rw(blkif::kOpWrite, 100, 0, {{p.gref, 0, 7}});
  blkif_request bad = rw(blkif::kOpIndirect, 100 | (1ull << 62), 0, {{p.gref | 0x40000000u, 0, 9}});
  bad.nr_segments = 200;

  std::atomic<bool> stop{false};
  std::thread mutator([&] {
    std::uint32_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      for (ring::RingIdx i = 0; i < q_.ring().size(); ++i) {
        volatile std::uint8_t* s = reinterpret_cast<volatile std::uint8_t*>(q_.slot(i));
        const auto* src = reinterpret_cast<const std::uint8_t*>((++n & 1) ? &valid : &bad);
        for (std::size_t b = 0; b < sizeof(blkif_request); ++b)
          if (b < 8 || b >= 16) s[b] = src[b];
      }
    }
  });
  std::uint64_t posted = 0, okay = 0, errors = 0;
  for (unsigned round = 0; round < 300; ++round) {
    for (unsigned k = 0; k < 8; ++k) {
      blkif_request r = valid;
      r.id = ++posted;
      q_.post(r);
    }
    q_.push();
    const auto rsps = q_.wait(8);
    ASSERT_EQ(rsps.size(), 8u);
    for (const blkif_response& rsp : rsps) {
      EXPECT_TRUE(rsp.status == blkif::kRspOkay || rsp.status == blkif::kRspError ||
                  rsp.status == blkif::kRspEopnotsupp)
          << rsp.status;
      okay += rsp.status == blkif::kRspOkay;
      errors += rsp.status != blkif::kRspOkay;
    }
  }
  stop = true;
  mutator.join();
  EXPECT_EQ(okay + errors, posted);
  EXPECT_FALSE(dev_->any_ring_broken());
  EXPECT_FALSE(guest_.gnttab().is_busy(p.gref));
  const auto c = file_.contents();
  for (std::size_t i = 0; i < c.size(); ++i) {
    const bool in_valid = i >= 100 * 512 && i < 108 * 512;
    if (!in_valid) {
      ASSERT_EQ(c[i], 0) << "byte " << i << " written outside the valid request";
    } else if (okay > 0) {
      ASSERT_EQ(c[i], 0x77) << "byte " << i;
    }
  }
  EXPECT_EQ(dev_->stats().responses, posted);
  EXPECT_EQ(dev_->stats().requests, posted);
}

// A second guest with its own device runs verified I/O while the first one publishes an
// impossible producer index; only the first device's ring stops.
TEST_F(Hostile, ProducerIndexAheadStopsOnlyThatDevice) {
  TempFile file2(kDiskBytes);
  TestGuest guest2(kGuestDomid + 1);
  GuestQueue q2(guest2, 0);
  DeviceConfig cfg2;
  cfg2.frontend_domid = guest2.domid();
  cfg2.memory = &guest2.memory();
  cfg2.grant_table_gfns = guest2.table_gfns();
  cfg2.engine = "aio";
  cfg2.backing = BackingOptions{file2.path(), false, DirectIo::Auto};
  cfg2.queues.push_back(q2.config());
  Device dev2(cfg2);
  dev2.start();

  const std::uint64_t gfn = guest2.alloc_page();
  const grant_ref_t gref = guest2.gnttab().grant_access(0, gfn, false);
  std::uint8_t* page2 = guest2.page(gfn);

  std::atomic<bool> attacking{true};
  std::thread attacker([&] {
    while (attacking.load()) {
      ring::SringHeader* h = q_.sring();
      std::atomic_ref<ring::RingIdx>(h->req_prod)
          .store(h->rsp_prod + q_.ring().size() + 5, std::memory_order_release);
      q_.kick();
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::uint64_t served = 0;
  for (unsigned i = 0; i < 200; ++i) {
    std::memset(page2, static_cast<int>(i & 0xFF), 4096);
    blkif_request w = rw(blkif::kOpWrite, i * 8, 2 * i, {{gref, 0, 7}});
    ASSERT_EQ(q2.roundtrip(w).status, blkif::kRspOkay);
    std::memset(page2, 0xEE, 4096);
    blkif_request r = rw(blkif::kOpRead, i * 8, 2 * i + 1, {{gref, 0, 7}});
    ASSERT_EQ(q2.roundtrip(r).status, blkif::kRspOkay);
    ASSERT_EQ(page2[123], static_cast<std::uint8_t>(i & 0xFF));
    ++served;
  }
  attacking = false;
  attacker.join();
  EXPECT_EQ(served, 200u);
  EXPECT_TRUE(dev_->ring_broken(0));
  EXPECT_EQ(ring_errors_.load(), 1);
  EXPECT_EQ(dev_->stats().ring_errors, 1u);
  EXPECT_EQ(dev_->stats().requests, 0u) << "requests consumed from a ring with a bad index";
  EXPECT_FALSE(dev2.any_ring_broken());
  EXPECT_EQ(dev2.stats().error_responses, 0u);
}

TEST_F(Hostile, ProducerIndexMovedBackwardsStopsTheRing) {
  const Page p = page(false);
  for (unsigned i = 0; i < 5; ++i)
    ASSERT_EQ(q_.roundtrip(rw(blkif::kOpRead, 0, i, {{p.gref, 0, 7}})).status, blkif::kRspOkay);
  std::atomic_ref<ring::RingIdx>(q_.sring()->req_prod).store(2, std::memory_order_release);
  q_.kick();
  for (int i = 0; i < 2000 && !dev_->ring_broken(0); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(dev_->ring_broken(0));
  EXPECT_EQ(dev_->stats().requests, 5u);
}

// Invalid requests through many ring wraps: every one answered, the counters add up.
TEST_F(Hostile, FloodOfInvalidRequestsAcrossWraps) {
  const Page p = page(false);
  std::uint64_t id = 0;
  for (unsigned round = 0; round < 40; ++round) {
    for (unsigned k = 0; k < q_.ring().size(); ++k) {
      blkif_request r = rw(static_cast<std::uint8_t>(k % 3 == 0 ? 42 : blkif::kOpRead),
                           k % 3 == 1 ? kDiskSectors : 0, ++id, {{p.gref, 7, 6}});
      q_.post(r);
    }
    q_.push();
    ASSERT_EQ(q_.wait(q_.ring().size()).size(), q_.ring().size());
  }
  const DeviceStats st = dev_->stats();
  EXPECT_EQ(st.requests, id);
  EXPECT_EQ(st.invalid_total(), id);
  EXPECT_EQ(st.error_responses, id);
  EXPECT_FALSE(dev_->any_ring_broken());
}

}  // namespace
}  // namespace pvio::blkback::test
