// The blkback datapath end to end inside one process: a guest with real grant tables and front
// rings drives the real Device against real temp files, with every I/O engine: random-offset,
// random-size writes and reads verified against a shadow copy and against the file, across ring
// wraps, direct and indirect segments, persistent grants on and off, several queues and threads;
// flush ordering and durability (also with the backend killed right after the flush response).
#include <fcntl.h>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <map>
#include <random>
#include <tuple>

#include "blkback_datapath_guest.h"
#include "engine_test.h"

namespace pvio::blkback::test {
namespace {

constexpr domid_t kGuestDomid = 7;
constexpr std::uint64_t kDiskBytes = 8 << 20;
constexpr std::uint64_t kDiskSectors = kDiskBytes / 512;

// The frontend half of data I/O on one queue: a page pool (granted once and kept, when
// persistent grants are used), request building as blkfront does it, and checks on completion.
class DataQueue {
 public:
  struct Page {
    std::uint64_t gfn;
    grant_ref_t gref;  // permanent gref in persistent mode
  };
  struct Seg {
    Page page;
    grant_ref_t gref;
    std::uint8_t first, last;
  };
  struct Pending {
    bool write;
    std::uint64_t sector;
    std::uint32_t nr_sectors;
    std::vector<Seg> segs;
    bool indirect = false;
    Page ind_page{};
    grant_ref_t ind_gref = 0;
    std::uint8_t op_override = 0;
  };

  DataQueue(TestGuest& g, unsigned order, bool persistent, unsigned pool_pages)
      : q(g, order), guest_(g), persistent_(persistent) {
    for (unsigned i = 0; i < pool_pages; ++i) {
      Page p{g.alloc_page(), kInvalidGrantRef};
      if (persistent) p.gref = g.gnttab().grant_access(0, p.gfn, false);
      pool_.push_back(p);
      persistent_refs.push_back(p.gref);
    }
  }

  Page take() {
    Page p = pool_.back();
    pool_.pop_back();
    return p;
  }
  void give(Page p) { pool_.push_back(p); }
  grant_ref_t grant(Page p, bool readonly) {
    if (persistent_) return p.gref;
    const grant_ref_t r = guest_.gnttab().grant_access(0, p.gfn, readonly);
    EXPECT_NE(r, kInvalidGrantRef);
    return r;
  }
  void ungrant(grant_ref_t r) {
    // The backend must have unmapped before it answered: ending access cannot fail.
    if (!persistent_) {
      EXPECT_TRUE(guest_.gnttab().end_access(r)) << "gref " << r << " still busy";
    }
  }

  // Builds and posts one request of up to max_segs segments covering [sector, sector + n),
  // returning how many sectors it covers. Write data comes from `rng` and goes to `shadow`.
  std::uint32_t post_io(bool write, std::uint64_t sector, std::uint32_t n, unsigned max_segs,
                        bool use_indirect, std::vector<std::uint8_t>& shadow,
                        std::mt19937_64& rng) {
    Pending p{write, sector, 0, {}};
    while (p.nr_sectors < n && p.segs.size() < max_segs) {
      const std::uint8_t first = static_cast<std::uint8_t>(rng() % 8);
      const std::uint32_t room = std::min<std::uint32_t>(8 - first, n - p.nr_sectors);
      const std::uint8_t len = static_cast<std::uint8_t>(1 + rng() % room);
      Seg s{take(), 0, first, static_cast<std::uint8_t>(first + len - 1)};
      std::uint8_t* data = guest_.page(s.page.gfn) + first * 512;
      if (write) {
        for (unsigned i = 0; i < len * 512u; ++i) data[i] = static_cast<std::uint8_t>(rng());
        std::memcpy(&shadow[(sector + p.nr_sectors) * 512], data, len * 512u);
      } else {
        std::memset(data, 0xA5, len * 512u);
      }
      s.gref = grant(s.page, /*readonly=*/write);
      p.segs.push_back(s);
      p.nr_sectors += len;
    }
    const std::uint64_t id = next_id_++;
    if (use_indirect) {
      p.indirect = true;
      p.ind_page = take();
      auto* segs = reinterpret_cast<blkif::blkif_request_segment*>(guest_.page(p.ind_page.gfn));
      for (std::size_t i = 0; i < p.segs.size(); ++i)
        segs[i] = {p.segs[i].gref, p.segs[i].first, p.segs[i].last};
      p.ind_gref = grant(p.ind_page, /*readonly=*/true);
      blkif::blkif_request_indirect r{};
      r.operation = blkif::kOpIndirect;
      r.indirect_op = write ? blkif::kOpWrite : blkif::kOpRead;
      r.nr_segments = static_cast<std::uint16_t>(p.segs.size());
      r.id = id;
      r.sector_number = sector;
      r.indirect_grefs[0] = p.ind_gref;
      q.post(r);
    } else {
      blkif::blkif_request r{};
      r.operation = write ? blkif::kOpWrite : blkif::kOpRead;
      r.nr_segments = static_cast<std::uint8_t>(p.segs.size());
      r.id = id;
      r.sector_number = sector;
      for (std::size_t i = 0; i < p.segs.size(); ++i)
        r.seg[i] = {p.segs[i].gref, p.segs[i].first, p.segs[i].last};
      q.post(r);
    }
    const std::uint32_t covered = p.nr_sectors;
    pending_.emplace(id, std::move(p));
    return covered;
  }

  // Waits for every posted request plus `extra` requests posted by hand (returned with the
  // rest, in ring order); checks status, operation, read data against `shadow`, and grants.
  std::vector<blkif::blkif_response> complete_all(const std::vector<std::uint8_t>& shadow,
                                                  std::size_t extra = 0,
                                                  std::int16_t expect = blkif::kRspOkay) {
    const auto rsps = q.wait(pending_.size() + extra);
    EXPECT_EQ(rsps.size(), pending_.size() + extra) << "responses missing";
    for (const auto& r : rsps) {
      auto it = pending_.find(r.id);
      if (it == pending_.end()) {
        EXPECT_GT(extra, 0u) << "response for unknown id " << r.id;
        continue;
      }
      Pending& p = it->second;
      EXPECT_EQ(r.status, expect) << "id " << r.id;
      const std::uint8_t op = p.op_override ? p.op_override
                                            : p.indirect ? blkif::kOpIndirect
                                                         : (p.write ? blkif::kOpWrite : blkif::kOpRead);
      EXPECT_EQ(r.operation, op);
      std::uint64_t sec = p.sector;
      for (const Seg& s : p.segs) {
        const unsigned len = (s.last - s.first + 1u) * 512u;
        if (!p.write && expect == blkif::kRspOkay) {
          const std::uint8_t* data = guest_.page(s.page.gfn) + s.first * 512;
          EXPECT_EQ(0, std::memcmp(data, &shadow[sec * 512], len))
              << "read mismatch at sector " << sec << " id " << r.id;
        }
        sec += len / 512;
        ungrant(s.gref);
        give(s.page);
      }
      if (p.indirect) {
        ungrant(p.ind_gref);
        give(p.ind_page);
      }
      pending_.erase(it);
    }
    return rsps;
  }

  // Turns the last posted (direct) request into operation `op` before it is pushed.
  std::uint64_t override_last_op(std::uint8_t op) {
    blkif::blkif_request* slot = q.slot(q.ring().req_prod_pvt() - 1);
    slot->operation = op;
    pending_.at(slot->id).op_override = op;
    return slot->id;
  }

  std::size_t in_flight() const { return pending_.size(); }

  GuestQueue q;
  std::vector<grant_ref_t> persistent_refs;

 private:
  TestGuest& guest_;
  bool persistent_;
  std::vector<Page> pool_;
  std::map<std::uint64_t, Pending> pending_;
  std::uint64_t next_id_ = 1;
};

struct Case {
  const char* engine;
  bool indirect;
  bool persistent;
  unsigned queues;
  unsigned ring_page_order;
  unsigned threads;
  unsigned poll_us = 0;  // the backend polls its rings this long after work
};

std::string case_name(const ::testing::TestParamInfo<Case>& i) {
  const Case& c = i.param;
  return std::string(c.engine) + (c.indirect ? "_indirect" : "_direct") +
         (c.persistent ? "_persistent" : "_mapped") + "_q" + std::to_string(c.queues) + "_o" +
         std::to_string(c.ring_page_order) + "_t" + std::to_string(c.threads) +
         (c.poll_us ? "_poll" : "");
}

class DatapathIntegrity : public ::testing::TestWithParam<Case> {};

TEST_P(DatapathIntegrity, RandomWritesAndReadsVerifyAcrossRingWraps) {
  const Case c = GetParam();
  TempFile file(kDiskBytes);
  TestGuest guest(kGuestDomid);
  constexpr unsigned kMaxIndirect = 64;
  std::vector<std::unique_ptr<DataQueue>> qs;
  for (unsigned i = 0; i < c.queues; ++i)
    qs.push_back(std::make_unique<DataQueue>(guest, c.ring_page_order, c.persistent, 1400));

  DeviceConfig cfg;
  cfg.frontend_domid = kGuestDomid;
  cfg.memory = &guest.memory();
  cfg.grant_table_gfns = guest.table_gfns();
  cfg.engine = c.engine;
  cfg.backing = BackingOptions{file.path(), false, DirectIo::Auto};
  cfg.persistent = c.persistent;
  cfg.max_indirect_segments = c.indirect ? kMaxIndirect : 0;
  cfg.threads = c.threads;
  cfg.poll_us = c.poll_us;
  for (auto& q : qs) cfg.queues.push_back(q->q.config());
  Device dev(cfg);
  ASSERT_EQ(dev.nr_sectors(), kDiskSectors);
  dev.start();

  std::vector<std::uint8_t> shadow(kDiskBytes, 0);
  std::mt19937_64 rng(0xB10C + c.queues * 7 + c.indirect * 3 + c.persistent);
  const unsigned ring_size = qs[0]->q.ring().size();
  const unsigned per_wave = std::min(ring_size, 20u);
  const unsigned waves = 2 * ring_size / per_wave + 6;  // every ring wraps at least twice
  std::uint64_t sectors_moved = 0;
  for (unsigned w = 0; w < waves; ++w) {
    // Requests in one wave never overlap, so their completion order does not matter.
    std::vector<std::pair<std::uint64_t, std::uint64_t>> used;
    for (auto& dq : qs) {
      for (unsigned k = 0; k < per_wave; ++k) {
        const bool use_ind = c.indirect && (rng() % 2 == 0);
        const unsigned max_segs = use_ind ? kMaxIndirect : blkif::kMaxSegmentsPerRequest;
        const std::uint32_t n = static_cast<std::uint32_t>(1 + rng() % (max_segs * 4));
        std::uint64_t sector = 0;
        for (int tries = 0;; ++tries) {
          sector = rng() % (kDiskSectors - n);
          bool clash = false;
          for (auto [s, e] : used) clash |= sector < e && s < sector + n;
          if (!clash) break;
          ASSERT_LT(tries, 1000);
        }
        const bool write = rng() % 2 == 0;
        const std::uint32_t got = dq->post_io(write, sector, n, max_segs, use_ind, shadow, rng);
        used.emplace_back(sector, sector + got);
        sectors_moved += got;
      }
      dq->q.push();
    }
    for (auto& dq : qs) {
      dq->complete_all(shadow);
      if (HasFatalFailure()) return;
    }
  }

  const DeviceStats st = dev.stats();
  EXPECT_EQ(st.invalid_total(), 0u);
  EXPECT_EQ(st.error_responses, 0u);
  EXPECT_EQ(st.requests, std::uint64_t{waves} * per_wave * c.queues);
  if (c.indirect) {
    EXPECT_GT(st.indirect, 0u);
  }
  if (c.poll_us != 0) {
    // Each wave follows the last one's responses at once: well inside a 100 ms budget, so the
    // polling worker finds waves without being woken.
    EXPECT_GT(st.polled, 0u);
    // Then idle for five budgets (the worker may poll twice more first: once after the last
    // wave, once after a wake-up for a completion it had already reaped): its sleep outlasts
    // poll_us, so the wave that wakes it finds the budget halved (an idle vbd stops burning a
    // core).
    std::this_thread::sleep_for(std::chrono::microseconds(5 * c.poll_us));
    qs[0]->post_io(false, 0, 8, blkif::kMaxSegmentsPerRequest, false, shadow, rng);
    qs[0]->q.push();
    qs[0]->complete_all(shadow);
    if (HasFatalFailure()) return;
    EXPECT_LT(dev.stats().poll_budget_ns, std::uint64_t{c.poll_us} * 1000);
    EXPECT_GT(dev.stats().poll_budget_ns, 0u);
  }
  if (c.persistent) {
    // Persistent grants stay mapped by the backend between requests: the guest sees them busy.
    unsigned busy = 0;
    for (auto& dq : qs)
      for (grant_ref_t r : dq->persistent_refs) busy += guest.gnttab().is_busy(r);
    EXPECT_GT(busy, 0u);
  }
  dev.stop();
  EXPECT_EQ(file.contents(), shadow) << "file differs from what the guest wrote";
  EXPECT_GT(sectors_moved, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Engines, DatapathIntegrity,
    ::testing::Values(Case{"uring", false, false, 1, 0, 1}, Case{"uring", true, false, 1, 0, 1},
                      Case{"uring", false, true, 1, 0, 1}, Case{"uring", true, true, 1, 0, 1},
                      Case{"aio", false, false, 1, 0, 1}, Case{"aio", true, false, 1, 0, 1},
                      Case{"aio", false, true, 1, 0, 1}, Case{"aio", true, true, 1, 0, 1},
                      Case{"uring", true, true, 3, 2, 2}, Case{"aio", true, false, 3, 1, 1},
                      Case{"uring", false, false, 2, 4, 2},
                      Case{"uring", true, true, 2, 1, 1, 100'000}, Case{"aio", false, false, 1, 0, 1, 100'000},
                      Case{"sync", true, false, 1, 0, 1}, Case{"sync", false, true, 2, 1, 1, 100'000}),
    case_name);

// A device with one queue over a fresh file, for the flush tests.
struct FlushRig {
  TempFile file{kDiskBytes};
  TestGuest guest{kGuestDomid};
  DataQueue dq{guest, 0, false, 256};
  std::vector<std::uint8_t> shadow = std::vector<std::uint8_t>(kDiskBytes, 0);

  DeviceConfig config(const char* engine) {
    DeviceConfig cfg;
    cfg.frontend_domid = kGuestDomid;
    cfg.memory = &guest.memory();
    cfg.grant_table_gfns = guest.table_gfns();
    cfg.engine = engine;
    cfg.backing = BackingOptions{file.path(), false, DirectIo::Auto};
    cfg.queues.push_back(dq.q.config());
    return cfg;
  }
};

class DatapathFlush : public ::testing::TestWithParam<const char*> {};

TEST_P(DatapathFlush, FlushAnswersAfterEarlierWritesAndDataIsInTheFile) {
  FlushRig rig;
  Device dev(rig.config(GetParam()));
  dev.start();
  std::mt19937_64 rng(42);
  // Eight writes and then a flush in one push: the flush must be answered last.
  for (unsigned i = 0; i < 8; ++i) rig.dq.post_io(true, 1000 + i * 100, 88, 11, false, rig.shadow, rng);
  blkif::blkif_request fl{};
  fl.operation = blkif::kOpFlushDiskcache;
  fl.id = 999;
  rig.dq.q.post(fl);
  rig.dq.q.push();
  const auto rsps = rig.dq.complete_all(rig.shadow, 1);
  ASSERT_EQ(rsps.size(), 9u);
  EXPECT_EQ(rsps.back().id, 999u) << "flush answered before a write it must follow";
  EXPECT_EQ(rsps.back().status, blkif::kRspOkay);
  EXPECT_EQ(rsps.back().operation, blkif::kOpFlushDiskcache);
  // Once the flush is answered, an independent reader sees the data in the file.
  EXPECT_EQ(rig.file.contents(), rig.shadow);
  EXPECT_EQ(dev.stats().flushes, 1u);
}

TEST_P(DatapathFlush, BarrierWithDataIsWrittenAndOrdered) {
  FlushRig rig;
  Device dev(rig.config(GetParam()));
  dev.start();
  std::mt19937_64 rng(43);
  for (unsigned i = 0; i < 4; ++i) rig.dq.post_io(true, 50 + i * 100, 40, 11, false, rig.shadow, rng);
  // A barrier carrying data: built like a write, then the op changed.
  rig.dq.post_io(true, 5000, 24, 11, false, rig.shadow, rng);
  const std::uint64_t barrier_id = rig.dq.override_last_op(blkif::kOpWriteBarrier);
  rig.dq.q.push();
  const auto rsps = rig.dq.complete_all(rig.shadow);
  ASSERT_EQ(rsps.size(), 5u);
  EXPECT_EQ(rsps.back().id, barrier_id);
  EXPECT_EQ(rig.file.contents(), rig.shadow);
  EXPECT_EQ(dev.stats().barriers, 1u);
}

// The backend runs in a child process sharing the guest's memory; it is killed with SIGKILL
// the moment the flush is answered, and the file must still hold every acknowledged write.
TEST_P(DatapathFlush, DataSurvivesBackendKilledRightAfterFlushResponse) {
  FlushRig rig;
  DeviceConfig cfg = rig.config(GetParam());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    try {
      Device dev(cfg);
      dev.start();
      for (;;) ::pause();
    } catch (...) {
      ::_exit(3);
    }
  }
  std::mt19937_64 rng(44);
  for (unsigned i = 0; i < 16; ++i) rig.dq.post_io(true, i * 700, 88, 11, false, rig.shadow, rng);
  blkif::blkif_request fl{};
  fl.operation = blkif::kOpFlushDiskcache;
  fl.id = 4242;
  rig.dq.q.post(fl);
  rig.dq.q.push();
  const auto rsps = rig.dq.complete_all(rig.shadow, 1);
  ::kill(child, SIGKILL);
  int status = 0;
  ::waitpid(child, &status, 0);
  ASSERT_EQ(rsps.size(), 17u);
  EXPECT_EQ(rsps.back().id, 4242u);
  EXPECT_EQ(rsps.back().status, blkif::kRspOkay);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(rig.file.contents(), rig.shadow);
}

INSTANTIATE_TEST_SUITE_P(Engines, DatapathFlush, ::testing::Values("uring", "aio", "sync"));

TEST(DatapathDiscard, DiscardedRangeReadsAsZeros) {
  FlushRig rig;
  Device dev(rig.config("uring"));
  if (!dev.limits().discard) GTEST_SKIP() << "temp file system cannot punch holes";
  dev.start();
  std::mt19937_64 rng(45);
  rig.dq.post_io(true, 64, 64, 11, false, rig.shadow, rng);
  rig.dq.q.push();
  rig.dq.complete_all(rig.shadow);
  blkif::blkif_request_discard d{};
  d.operation = blkif::kOpDiscard;
  d.id = 77;
  d.sector_number = 64;
  d.nr_sectors = 64;
  const auto r = rig.dq.q.roundtrip(d);
  EXPECT_EQ(r.id, 77u);
  EXPECT_EQ(r.status, blkif::kRspOkay);
  std::fill(rig.shadow.begin() + 64 * 512, rig.shadow.begin() + 128 * 512, 0);
  EXPECT_EQ(rig.file.contents(), rig.shadow);
  EXPECT_EQ(dev.stats().discards, 1u);
}

TEST(DatapathReadOnly, WritesAreRefusedReadsServed) {
  FlushRig rig;
  std::vector<std::uint8_t> pat(4096);
  for (std::size_t i = 0; i < pat.size(); ++i) pat[i] = pattern(i, 1);
  rig.file.write_all(0, pat);
  std::copy(pat.begin(), pat.end(), rig.shadow.begin());
  DeviceConfig cfg = rig.config("uring");
  cfg.backing.read_only = true;
  Device dev(cfg);
  EXPECT_TRUE(dev.limits().read_only);
  EXPECT_FALSE(dev.limits().discard);
  dev.start();
  std::mt19937_64 rng(46);
  std::vector<std::uint8_t> scratch(kDiskBytes, 0);
  rig.dq.post_io(true, 0, 8, 11, false, scratch, rng);
  rig.dq.q.push();
  rig.dq.complete_all(scratch, 0, blkif::kRspError);
  EXPECT_EQ(dev.stats().invalid[static_cast<int>(RequestError::ReadOnly)], 1u);
  rig.dq.post_io(false, 0, 8, 11, false, rig.shadow, rng);
  rig.dq.q.push();
  rig.dq.complete_all(rig.shadow);  // reads verify against the original pattern
}

}  // namespace
}  // namespace pvio::blkback::test
