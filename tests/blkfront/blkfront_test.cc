// blkfront core against a backend played by the test: the XenBus handshake keys, the exact
// requests on the wire (segments, sectors, indirect layout, grant flags, ids), persistent
// grants, flush/discard, multi-queue, hostile responses, and reconnect with resubmission.
#include <algorithm>
#include <set>

#include "harness.h"

namespace pvio::blkfront::test {
namespace {

using gnttab::GTF_permit_access;
using gnttab::GTF_readonly;

class BlkfrontTest : public ::testing::Test {
 protected:
  void make(BackendConfig cfg = {}, Limits lim = {}) {
    be = std::make_unique<TestBackend>(dom, xs, cfg);
    const std::size_t bytes = Blkfront::storage_bytes(lim);
    storage.assign(bytes / sizeof(std::max_align_t) + 1, std::max_align_t{});
    fe = std::make_unique<Blkfront>(pf, kDevid, lim, storage.data(), bytes);
    free_grants_at_start = dom.grants().free_count();
  }
  void bring_up() {
    ASSERT_EQ(fe->start(), 0);
    EXPECT_EQ(be->frontend_state(), "1");
    be->init_wait();
    ASSERT_EQ(fe->backend_changed(), 0);
    ASSERT_EQ(fe->state(), XenbusState::Initialised);
    EXPECT_EQ(be->frontend_state(), "3");
    ASSERT_TRUE(be->connect());
    ASSERT_EQ(fe->backend_changed(), 0);
    ASSERT_TRUE(fe->connected());
    EXPECT_EQ(be->frontend_state(), "4");
  }
  // Serve every queue until nothing is left; returns every request seen.
  std::vector<WireRequest> pump() {
    std::vector<WireRequest> all;
    for (int round = 0; round < 10000; ++round) {
      bool any = false;
      for (std::uint32_t q = 0; q < be->nr_queues; ++q) {
        auto r = be->serve(q);
        any = any || !r.empty();
        all.insert(all.end(), r.begin(), r.end());
        fe->handle_event(q);
      }
      if (!any) break;
    }
    return all;
  }
  // An I/O of `op` completing into `d`; the caller adds what the op needs.
  BlockIo op_io(Op op, Done* d) {
    BlockIo io;
    io.op = op;
    io.done = &Done::cb;
    io.cookie = d;
    return io;
  }
  BlockIo rw_io(Op op, std::uint64_t sector, std::uint32_t nr, void* buf, Done* d) {
    BlockIo io = op_io(op, d);
    io.sector = sector;
    io.nr_sectors = nr;
    io.buffer = buf;
    return io;
  }
  // The backend publishes its responses and notifies; the frontend takes the event.
  void deliver() {
    be->push();
    fe->handle_event(0);
  }

  GuestDomain dom;
  XsWorld xs;
  TestPlatform pf{dom, xs};
  std::unique_ptr<TestBackend> be;
  std::vector<std::max_align_t> storage;
  std::unique_ptr<Blkfront> fe;  // destroyed first
  std::uint32_t free_grants_at_start = 0;
};

TEST_F(BlkfrontTest, HandshakeWritesLinuxKeysAndReadsDisk) {
  BackendConfig cfg;
  cfg.sectors = 12345 * 8;
  cfg.discard = true;
  make(cfg);
  bring_up();
  const std::string fe_path = be->fe();
  std::string ref = xs.get(0, fe_path + "/ring-ref");
  ASSERT_NE(ref, "<absent>");
  // The ring page is granted writable to the backend domain.
  const std::uint16_t flags = dom.grants().flags(static_cast<grant_ref_t>(std::stoul(ref)));
  EXPECT_EQ(flags & (GTF_permit_access | GTF_readonly), GTF_permit_access);
  EXPECT_FALSE(xs.exists(0, fe_path + "/ring-page-order"));
  EXPECT_FALSE(xs.exists(0, fe_path + "/multi-queue-num-queues"));
  EXPECT_NE(xs.get(0, fe_path + "/event-channel"), "<absent>");
  EXPECT_EQ(xs.get(0, fe_path + "/protocol"), "x86_64-abi");
  EXPECT_EQ(xs.get(0, fe_path + "/feature-persistent"), "1");
  EXPECT_EQ(fe->disk().sectors, 12345u * 8);
  EXPECT_EQ(fe->disk().sector_size, 512u);
  EXPECT_FALSE(fe->disk().read_only());
  EXPECT_TRUE(fe->negotiated().flush_cache);
  EXPECT_TRUE(fe->negotiated().discard);
  EXPECT_FALSE(fe->negotiated().persistent);
  EXPECT_EQ(fe->negotiated().max_indirect_segments, 0u);
  EXPECT_EQ(fe->negotiated().ring_size, 32u);
  EXPECT_EQ(fe->backend_id(), 0);
}

TEST_F(BlkfrontTest, MultiPageMultiQueueKeys) {
  BackendConfig cfg;
  cfg.max_ring_page_order = 3;
  cfg.max_queues = 8;
  Limits lim;
  lim.max_ring_page_order = 2;
  lim.max_queues = 2;
  make(cfg, lim);
  bring_up();
  const std::string f = be->fe();
  EXPECT_EQ(xs.get(0, f + "/multi-queue-num-queues"), "2");
  EXPECT_EQ(xs.get(0, f + "/ring-page-order"), "2");
  for (int q = 0; q < 2; ++q) {
    const std::string pre = f + "/queue-" + std::to_string(q) + "/";
    for (int i = 0; i < 4; ++i) EXPECT_TRUE(xs.exists(0, pre + "ring-ref" + std::to_string(i)));
    EXPECT_FALSE(xs.exists(0, pre + "ring-ref4"));
    EXPECT_TRUE(xs.exists(0, pre + "event-channel"));
  }
  EXPECT_EQ(fe->negotiated().nr_queues, 2u);
  EXPECT_EQ(fe->negotiated().ring_size, 128u);
  EXPECT_EQ(be->rings[0].size(), 128u);
  EXPECT_NE(fe->queue_port(0), fe->queue_port(1));
}

TEST_F(BlkfrontTest, BlockingConnectRunsTheWholeHandshake) {
  make();
  // The backend acts whenever the frontend would sleep.
  pf.on_wait = [&] {
    const std::string s = be->frontend_state();
    if (s == "1" && xs.get(0, be->be() + "/state") == "1") {
      be->init_wait();
    } else if (s == "3" && xs.get(0, be->be() + "/state") == "2") {
      ASSERT_TRUE(be->connect());
    }
  };
  ASSERT_EQ(fe->connect(1000), 0);
  EXPECT_TRUE(fe->connected());
}

TEST_F(BlkfrontTest, ConnectTimesOutWithoutBackend) {
  make();
  EXPECT_EQ(fe->connect(10), -XEN_ETIMEDOUT);
  EXPECT_EQ(fe->state(), XenbusState::Initialising);
}

TEST_F(BlkfrontTest, SplitsAtElevenSegmentsWithReadOnlyGrantsForWrites) {
  make();
  bring_up();
  std::vector<std::uint8_t> data(64 * 1024), back(64 * 1024);
  fill_pattern(data.data(), data.size(), 7);
  Done d;
  BlockIo w = rw_io(Op::Write, 16, 128, data.data(), &d);
  fe->submit(&w);
  EXPECT_GE(be->kicks(), 1u);
  auto reqs = be->take();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].operation, blkif::kOpWrite);
  EXPECT_EQ(reqs[0].segs.size(), 11u);
  EXPECT_EQ(reqs[0].sector, 16u);
  EXPECT_EQ(reqs[1].segs.size(), 5u);
  EXPECT_EQ(reqs[1].sector, 16u + 88);
  EXPECT_NE(reqs[0].id, reqs[1].id);
  for (const auto& r : reqs) {
    EXPECT_EQ(r.handle, kDevid);
    for (std::size_t i = 0; i < r.segs.size(); ++i) {
      EXPECT_EQ(r.segs[i].first_sect, 0);
      EXPECT_EQ(r.segs[i].last_sect, 7);
      EXPECT_EQ(r.seg_flags[i] & (GTF_permit_access | GTF_readonly),
                GTF_permit_access | GTF_readonly);
    }
  }
  for (const auto& r : reqs) be->respond(0, r.id, r.operation, be->execute(r));
  deliver();
  EXPECT_EQ(d.count, 1);
  EXPECT_EQ(w.status, IoStatus::Ok);
  EXPECT_EQ(std::memcmp(be->disk.data() + 16 * 512, data.data(), data.size()), 0);

  BlockIo r = rw_io(Op::Read, 16, 128, back.data(), &d);
  fe->submit(&r);
  auto rreqs = be->take();
  ASSERT_EQ(rreqs.size(), 2u);
  for (const auto& q : rreqs)
    for (auto f : q.seg_flags) EXPECT_EQ(f & GTF_readonly, 0) << "read grants must be writable";
  for (const auto& q : rreqs) be->respond(0, q.id, q.operation, be->execute(q));
  deliver();
  EXPECT_EQ(d.count, 2);
  EXPECT_EQ(r.status, IoStatus::Ok);
  EXPECT_EQ(back, data);
  // Every non-persistent grant was ended after its response.
  EXPECT_EQ(dom.grants().free_count(), free_grants_at_start - 1);  // the ring page
}

TEST_F(BlkfrontTest, ZeroCopyPagesAtAnOffsetKeepTheirFramesAndSectors) {
  make();
  bring_up();
  GuestPages pg[3];
  DataPage pages[3];
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(dom.alloc(0, pg[i]));
    pages[i] = {pg[i].gfn, pg[i].addr};
    fill_pattern(static_cast<std::uint8_t*>(pg[i].addr), 4096, 100 + i);
  }
  Done d;
  BlockIo io = op_io(Op::Write, &d);
  io.sector = 1000;
  io.nr_sectors = 12;  // 6 KiB starting 1 KiB into page 0: 3 KiB + 3 KiB
  io.pages = pages;
  io.nr_pages = 3;
  io.page_offset = 1024;
  fe->submit(&io);
  auto reqs = be->take();
  ASSERT_EQ(reqs.size(), 1u);
  ASSERT_EQ(reqs[0].segs.size(), 2u);
  EXPECT_EQ(reqs[0].segs[0].first_sect, 2);
  EXPECT_EQ(reqs[0].segs[0].last_sect, 7);
  EXPECT_EQ(reqs[0].segs[1].first_sect, 0);
  EXPECT_EQ(reqs[0].segs[1].last_sect, 5);
  // The caller's own frames were granted (zero copy).
  for (int i = 0; i < 2; ++i) {
    const auto m = be->mapper->map(reqs[0].segs[i].gref, true);
    ASSERT_EQ(m.status, gnttab::GNTST_okay);
    EXPECT_EQ(m.addr, pg[i].addr);
    be->mapper->unmap(m.handle);
  }
  be->respond(0, reqs[0].id, reqs[0].operation, be->execute(reqs[0]));
  deliver();
  ASSERT_EQ(io.status, IoStatus::Ok);
  EXPECT_EQ(std::memcmp(be->disk.data() + 1000 * 512, static_cast<std::uint8_t*>(pg[0].addr) + 1024,
                        3072), 0);
  EXPECT_EQ(std::memcmp(be->disk.data() + 1006 * 512, pg[1].addr, 3072), 0);
}

TEST_F(BlkfrontTest, IndirectRequestsWhenOffered) {
  BackendConfig cfg;
  cfg.max_indirect_segments = 64;
  make(cfg);
  bring_up();
  EXPECT_EQ(fe->negotiated().max_indirect_segments, 64u);
  std::vector<std::uint8_t> data(100 * 4096), back(100 * 4096);
  fill_pattern(data.data(), data.size(), 3);
  Done d;
  BlockIo w = rw_io(Op::Write, 0, 800, data.data(), &d);
  fe->submit(&w);
  auto reqs = be->take();
  ASSERT_EQ(reqs.size(), 2u);  // 64 + 36 segments
  EXPECT_EQ(reqs[0].operation, blkif::kOpIndirect);
  EXPECT_EQ(reqs[0].indirect_op, blkif::kOpWrite);
  EXPECT_EQ(reqs[0].segs.size(), 64u);
  ASSERT_EQ(reqs[0].indirect_grefs.size(), 1u);
  EXPECT_EQ(reqs[0].indirect_flags[0] & (GTF_permit_access | GTF_readonly),
            GTF_permit_access | GTF_readonly);
  EXPECT_EQ(reqs[1].operation, blkif::kOpIndirect);
  EXPECT_EQ(reqs[1].segs.size(), 36u);
  EXPECT_EQ(reqs[1].sector, 64u * 8);
  for (const auto& r : reqs) be->respond(0, r.id, r.operation, be->execute(r));
  deliver();
  ASSERT_EQ(w.status, IoStatus::Ok);
  EXPECT_EQ(std::memcmp(be->disk.data(), data.data(), data.size()), 0);

  BlockIo r = rw_io(Op::Read, 0, 800, back.data(), &d);
  fe->submit(&r);
  auto rr = pump();
  ASSERT_EQ(rr.size(), 2u);
  EXPECT_EQ(rr[0].indirect_op, blkif::kOpRead);
  EXPECT_EQ(r.status, IoStatus::Ok);
  EXPECT_EQ(back, data);
  EXPECT_EQ(fe->stats().indirect_requests, 4u);
  // A small I/O still goes as a direct request.
  BlockIo s = rw_io(Op::Read, 0, 8, back.data(), &d);
  fe->submit(&s);
  auto sr = pump();
  ASSERT_EQ(sr.size(), 1u);
  EXPECT_EQ(sr[0].operation, blkif::kOpRead);
}

TEST_F(BlkfrontTest, PersistentGrantsAreReusedAndDataCopied) {
  BackendConfig cfg;
  cfg.persistent = true;
  Limits lim;
  lim.pool_pages = 16;
  make(cfg, lim);
  bring_up();
  EXPECT_TRUE(fe->negotiated().persistent);
  const std::uint32_t granted_after_connect = dom.grants().free_count();
  EXPECT_EQ(free_grants_at_start - granted_after_connect, 1u + 16u);  // ring + pool
  std::set<grant_ref_t> seen;
  std::vector<std::uint8_t> expect(be->disk.size(), 0);
  for (int round = 0; round < 5; ++round) {
    std::vector<std::uint8_t> data(40 * 1024);
    fill_pattern(data.data(), data.size(), round);
    Done d;
    BlockIo w = rw_io(Op::Write, round * 100, 80, data.data(), &d);
    fe->submit(&w);
    for (const auto& r : pump())
      for (std::size_t i = 0; i < r.segs.size(); ++i) {
        seen.insert(r.segs[i].gref);
        EXPECT_EQ(r.seg_flags[i] & GTF_readonly, 0) << "persistent grants are writable";
      }
    ASSERT_EQ(w.status, IoStatus::Ok);
    std::memcpy(expect.data() + round * 100 * 512, data.data(), data.size());
    EXPECT_EQ(dom.grants().free_count(), granted_after_connect) << "no grant churn";
  }
  EXPECT_LE(seen.size(), 16u);
  EXPECT_EQ(be->disk, expect);
  std::vector<std::uint8_t> back(expect.size());
  Done d;
  BlockIo r = rw_io(Op::Read, 0, static_cast<std::uint32_t>(expect.size() / 512), back.data(), &d);
  fe->submit(&r);
  pump();
  ASSERT_EQ(r.status, IoStatus::Ok);
  EXPECT_EQ(back, expect);
}

TEST_F(BlkfrontTest, PoolSmallerThanTheIoStillCompletes) {
  BackendConfig cfg;
  cfg.persistent = true;
  Limits lim;
  lim.pool_pages = 3;
  make(cfg, lim);
  bring_up();
  std::vector<std::uint8_t> data(64 * 1024), back(64 * 1024);
  fill_pattern(data.data(), data.size(), 9);
  Done d;
  BlockIo w = rw_io(Op::Write, 0, 128, data.data(), &d);
  fe->submit(&w);
  auto reqs = pump();
  EXPECT_EQ(reqs.size(), 6u);  // 16 pages, 3 at a time
  ASSERT_EQ(w.status, IoStatus::Ok);
  BlockIo r = rw_io(Op::Read, 0, 128, back.data(), &d);
  fe->submit(&r);
  pump();
  ASSERT_EQ(r.status, IoStatus::Ok);
  EXPECT_EQ(back, data);
}

TEST_F(BlkfrontTest, FlushDiscardAndTheirAbsence) {
  BackendConfig cfg;
  cfg.discard = true;
  make(cfg);
  bring_up();
  Done d;
  BlockIo f = op_io(Op::Flush, &d);
  fe->submit(&f);
  auto reqs = be->take();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].operation, blkif::kOpFlushDiskcache);
  EXPECT_TRUE(reqs[0].segs.empty());
  be->respond(0, reqs[0].id, reqs[0].operation, blkif::kRspOkay);
  deliver();
  EXPECT_EQ(f.status, IoStatus::Ok);

  std::memset(be->disk.data(), 0x77, 8192);
  BlockIo dis = op_io(Op::Discard, &d);
  dis.sector = 4;
  dis.nr_sectors = 8;
  dis.discard_secure = true;  // not offered: flag stays 0
  fe->submit(&dis);
  reqs = be->take();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].operation, blkif::kOpDiscard);
  EXPECT_EQ(reqs[0].sector, 4u);
  EXPECT_EQ(reqs[0].nr_sectors, 8u);
  EXPECT_EQ(reqs[0].discard_flag, 0);
  be->respond(0, reqs[0].id, reqs[0].operation, be->execute(reqs[0]));
  deliver();
  EXPECT_EQ(dis.status, IoStatus::Ok);
  EXPECT_EQ(be->disk[4 * 512], 0);
  EXPECT_EQ(be->disk[3 * 512], 0x77);

  // The backend answers EOPNOTSUPP for flush: reported, and flush is no longer offered.
  BlockIo f2 = f;
  fe->submit(&f2);
  reqs = be->take();
  ASSERT_EQ(reqs.size(), 1u);
  be->respond(0, reqs[0].id, reqs[0].operation, blkif::kRspEopnotsupp);
  deliver();
  EXPECT_EQ(f2.status, IoStatus::NotSupported);
  BlockIo f3 = f;
  fe->submit(&f3);
  EXPECT_EQ(f3.status, IoStatus::NotSupported);
  EXPECT_TRUE(be->take().empty());
}

TEST_F(BlkfrontTest, BarrierOnlyBackendAndNoDiscard) {
  BackendConfig cfg;
  cfg.flush = false;
  cfg.barrier = true;
  make(cfg);
  bring_up();
  Done d;
  BlockIo f = op_io(Op::Flush, &d);
  fe->submit(&f);
  auto reqs = be->take();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].operation, blkif::kOpWriteBarrier);
  BlockIo dis = op_io(Op::Discard, &d);
  dis.nr_sectors = 8;
  fe->submit(&dis);
  EXPECT_EQ(dis.status, IoStatus::NotSupported);
  EXPECT_TRUE(be->take().empty());
}

TEST_F(BlkfrontTest, BadArgumentsAndReadOnlyDisk) {
  BackendConfig cfg;
  cfg.read_only = true;
  cfg.sectors = 64;
  make(cfg);
  bring_up();
  EXPECT_TRUE(fe->disk().read_only());
  std::vector<std::uint8_t> buf(64 * 512);
  Done d;
  BlockIo w = rw_io(Op::Write, 0, 8, buf.data(), &d);
  fe->submit(&w);
  EXPECT_EQ(w.status, IoStatus::ReadOnly);
  BlockIo past = rw_io(Op::Read, 60, 8, buf.data(), &d);
  fe->submit(&past);
  EXPECT_EQ(past.status, IoStatus::Invalid);
  BlockIo wrap = rw_io(Op::Read, ~std::uint64_t{0} - 2, 8, buf.data(), &d);
  fe->submit(&wrap);
  EXPECT_EQ(wrap.status, IoStatus::Invalid);
  BlockIo none = rw_io(Op::Read, 0, 8, nullptr, &d);
  fe->submit(&none);
  EXPECT_EQ(none.status, IoStatus::Invalid);
  BlockIo zero = rw_io(Op::Read, 0, 0, buf.data(), &d);
  fe->submit(&zero);
  EXPECT_EQ(zero.status, IoStatus::Invalid);
  EXPECT_EQ(d.count, 5);
  EXPECT_TRUE(be->take().empty());
  EXPECT_EQ(fe->active_ios(), 0u);
}

TEST_F(BlkfrontTest, BackendErrorReachesTheIo) {
  make();
  bring_up();
  std::vector<std::uint8_t> buf(16 * 4096);
  Done d;
  BlockIo r = rw_io(Op::Read, 0, 128, buf.data(), &d);
  fe->submit(&r);
  auto reqs = be->take();
  ASSERT_EQ(reqs.size(), 2u);
  be->respond(0, reqs[0].id, reqs[0].operation, blkif::kRspOkay);
  be->respond(0, reqs[1].id, reqs[1].operation, blkif::kRspError);
  deliver();
  EXPECT_EQ(d.count, 1);
  EXPECT_EQ(r.status, IoStatus::IoError);
}

TEST_F(BlkfrontTest, ManyIosWrapTheRingAndSuppressNotifications) {
  make();
  bring_up();
  constexpr int kIos = 200;
  std::vector<std::vector<std::uint8_t>> bufs(kIos, std::vector<std::uint8_t>(4096));
  std::vector<BlockIo> ios(kIos);
  Done d;
  for (int i = 0; i < kIos; ++i) {
    fill_pattern(bufs[i].data(), 4096, i);
    ios[i] = rw_io(Op::Write, i * 8, 8, bufs[i].data(), &d);
    fe->submit(&ios[i]);
  }
  // Only a ring's worth is on the ring; one notification for the first batch.
  EXPECT_EQ(be->kicks(), 1u);
  auto first = be->take();
  EXPECT_EQ(first.size(), 32u);
  for (const auto& r : first) be->respond(0, r.id, r.operation, be->execute(r));
  deliver();
  // The backend did not re-arm req_event (no final check): the refill is not notified.
  EXPECT_EQ(be->kicks(), 0u);
  // Now it does, as it would before sleeping.
  EXPECT_TRUE(be->rings[0].final_check_for_requests());
  pump();
  EXPECT_EQ(d.count, kIos);
  for (int i = 0; i < kIos; ++i) {
    ASSERT_EQ(ios[i].status, IoStatus::Ok);
    ASSERT_EQ(std::memcmp(be->disk.data() + i * 8 * 512, bufs[i].data(), 4096), 0) << i;
  }
  EXPECT_EQ(fe->stats().requests, static_cast<std::uint64_t>(kIos));
}

TEST_F(BlkfrontTest, MultiQueueSpreadsIosByHint) {
  BackendConfig cfg;
  cfg.max_queues = 4;
  Limits lim;
  lim.max_queues = 2;
  make(cfg, lim);
  bring_up();
  ASSERT_EQ(be->nr_queues, 2u);
  std::vector<std::uint8_t> a(4096, 1), b(4096, 2);
  Done d;
  BlockIo i0 = rw_io(Op::Write, 0, 8, a.data(), &d);
  BlockIo i1 = rw_io(Op::Write, 8, 8, b.data(), &d);
  i1.queue = 1;
  fe->submit(&i0);
  fe->submit(&i1);
  auto q0 = be->take(0);
  auto q1 = be->take(1);
  ASSERT_EQ(q0.size(), 1u);
  ASSERT_EQ(q1.size(), 1u);
  EXPECT_EQ(q0[0].sector, 0u);
  EXPECT_EQ(q1[0].sector, 8u);
  EXPECT_EQ(be->kicks(0), 1u);
  EXPECT_EQ(be->kicks(1), 1u);
  be->respond(1, q1[0].id, q1[0].operation, be->execute(q1[0]));
  be->push(1);
  fe->handle_event(1);
  EXPECT_EQ(i1.status, IoStatus::Ok);
  EXPECT_EQ(i0.status, IoStatus::Pending);
  be->respond(0, q0[0].id, q0[0].operation, be->execute(q0[0]));
  be->push(0);
  fe->handle_event(0);
  EXPECT_EQ(i0.status, IoStatus::Ok);
  EXPECT_EQ(be->disk[0], 1);
  EXPECT_EQ(be->disk[8 * 512], 2);
}

// ---- hostile backend ----

TEST_F(BlkfrontTest, UnknownIdDisconnectsWithoutCompletingAnything) {
  make();
  bring_up();
  std::vector<std::uint8_t> buf(4096);
  Done d;
  BlockIo r = rw_io(Op::Read, 0, 8, buf.data(), &d);
  fe->submit(&r);
  auto reqs = be->take();
  ASSERT_EQ(reqs.size(), 1u);
  be->respond(0, 31, blkif::kOpRead, blkif::kRspOkay);  // in range but not outstanding
  deliver();
  EXPECT_EQ(d.count, 0);
  EXPECT_EQ(fe->stats().protocol_errors, 1u);
  EXPECT_EQ(be->frontend_state(), "5");  // Closing
  // Further events are ignored until reconnection.
  be->respond(0, reqs[0].id, blkif::kOpRead, blkif::kRspOkay);
  deliver();
  EXPECT_EQ(d.count, 0);
  EXPECT_EQ(r.status, IoStatus::Pending);
}

TEST_F(BlkfrontTest, IdBeyondTheRingIsAnError) {
  make();
  bring_up();
  std::vector<std::uint8_t> buf(4096);
  Done d;
  BlockIo r = rw_io(Op::Read, 0, 8, buf.data(), &d);
  fe->submit(&r);
  be->take();
  be->respond(0, 0xFFFFFFFFFFFFull, blkif::kOpRead, blkif::kRspOkay);
  deliver();
  EXPECT_EQ(fe->stats().protocol_errors, 1u);
  EXPECT_EQ(d.count, 0);
}

TEST_F(BlkfrontTest, DuplicateIdIsAnError) {
  make();
  bring_up();
  std::vector<std::uint8_t> a(4096), b(4096);
  Done d;
  BlockIo r1 = rw_io(Op::Read, 0, 8, a.data(), &d);
  BlockIo r2 = rw_io(Op::Read, 8, 8, b.data(), &d);
  fe->submit(&r1);
  fe->submit(&r2);
  auto reqs = be->take();
  ASSERT_EQ(reqs.size(), 2u);
  be->respond(0, reqs[0].id, reqs[0].operation, be->execute(reqs[0]));
  be->respond(0, reqs[0].id, reqs[0].operation, blkif::kRspOkay);
  deliver();
  EXPECT_EQ(d.count, 1);
  EXPECT_EQ(r1.status, IoStatus::Ok);
  EXPECT_EQ(r2.status, IoStatus::Pending);
  EXPECT_EQ(fe->stats().protocol_errors, 1u);
}

TEST_F(BlkfrontTest, WrongOperationIsAnError) {
  make();
  bring_up();
  std::vector<std::uint8_t> a(4096);
  Done d;
  BlockIo r = rw_io(Op::Read, 0, 8, a.data(), &d);
  fe->submit(&r);
  auto reqs = be->take();
  be->respond(0, reqs[0].id, blkif::kOpWrite, blkif::kRspOkay);
  deliver();
  EXPECT_EQ(d.count, 0);
  EXPECT_EQ(fe->stats().protocol_errors, 1u);
}

TEST_F(BlkfrontTest, BadProducerIndexDisconnects) {
  make();
  bring_up();
  std::vector<std::uint8_t> a(4096);
  Done d;
  BlockIo r = rw_io(Op::Read, 0, 8, a.data(), &d);
  fe->submit(&r);
  be->take();
  be->rings[0].sring()->rsp_prod = 1000;  // more responses than requests ever posted
  fe->handle_event(0);
  EXPECT_EQ(d.count, 0);
  EXPECT_EQ(fe->stats().protocol_errors, 1u);
  EXPECT_EQ(be->frontend_state(), "5");
}

// ---- reconnect ----

TEST_F(BlkfrontTest, BackendRestartResubmitsEverythingInFlight) {
  BackendConfig cfg;
  cfg.max_indirect_segments = 32;
  Limits lim;
  lim.pool_pages = 512;  // every I/O fits on the ring at once
  make(cfg, lim);
  bring_up();
  constexpr int kIos = 20;
  std::vector<std::vector<std::uint8_t>> bufs(kIos, std::vector<std::uint8_t>(16 * 4096));
  std::vector<BlockIo> ios(kIos);
  Done d;
  for (int i = 0; i < kIos; ++i) {
    fill_pattern(bufs[i].data(), bufs[i].size(), 1000 + i);
    ios[i] = rw_io(Op::Write, i * 128, 128, bufs[i].data(), &d);
    fe->submit(&ios[i]);
  }
  // The backend executes some requests, answers only some of those, then dies.
  auto reqs = be->take();
  ASSERT_EQ(reqs.size(), 20u);
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    const auto st = be->execute(reqs[i]);
    if (i % 3 == 0) be->respond(0, reqs[i].id, reqs[i].operation, st);
  }
  deliver();
  const int done_before = d.count;
  EXPECT_EQ(done_before, 7);
  // The disk loses what the dead backend had not written (a restart with a cold cache).
  std::fill(be->disk.begin(), be->disk.end(), 0);
  for (int i = 0; i < kIos; i += 3)
    std::memcpy(be->disk.data() + i * 128 * 512, bufs[i].data(), bufs[i].size());

  be->disappear();
  ASSERT_EQ(fe->backend_changed(), 0);
  EXPECT_EQ(fe->state(), XenbusState::Initialising);  // Closed, then ready again
  EXPECT_EQ(fe->active_ios(), static_cast<std::uint32_t>(kIos - done_before));
  // While the backend is away, new I/O is accepted and waits.
  std::vector<std::uint8_t> late(4096);
  fill_pattern(late.data(), late.size(), 77);
  BlockIo late_io = rw_io(Op::Write, 5000, 8, late.data(), &d);
  fe->submit(&late_io);
  EXPECT_EQ(late_io.status, IoStatus::Pending);

  // The restarted backend comes back with persistent grants this time.
  be->config().persistent = true;
  be->init_wait();
  ASSERT_EQ(fe->backend_changed(), 0);
  ASSERT_EQ(fe->state(), XenbusState::Initialised);
  ASSERT_TRUE(be->connect());
  ASSERT_EQ(fe->backend_changed(), 0);
  ASSERT_TRUE(fe->connected());
  EXPECT_EQ(fe->stats().reconnects, 1u);
  EXPECT_EQ(fe->stats().resubmitted_ios, static_cast<std::uint64_t>(kIos - done_before + 1));
  pump();
  EXPECT_EQ(d.count, kIos + 1);
  for (int i = 0; i < kIos; ++i) {
    ASSERT_EQ(ios[i].status, IoStatus::Ok) << i;
    ASSERT_EQ(std::memcmp(be->disk.data() + i * 128 * 512, bufs[i].data(), bufs[i].size()), 0)
        << i;
  }
  EXPECT_EQ(late_io.status, IoStatus::Ok);
  EXPECT_EQ(std::memcmp(be->disk.data() + 5000 * 512, late.data(), 4096), 0);
  EXPECT_EQ(fe->active_ios(), 0u);
}

TEST_F(BlkfrontTest, HostileBackendThenCleanReconnect) {
  make();
  bring_up();
  std::vector<std::uint8_t> buf(4096, 0), expect(4096);
  fill_pattern(expect.data(), 4096, 5);
  std::memcpy(be->disk.data(), expect.data(), 4096);
  Done d;
  BlockIo r = rw_io(Op::Read, 0, 8, buf.data(), &d);
  fe->submit(&r);
  be->take();
  be->respond(0, 17, blkif::kOpRead, blkif::kRspOkay);
  deliver();
  EXPECT_EQ(be->frontend_state(), "5");
  // blkback's answer to a closing frontend: Closing, then Closed once the frontend is Closed.
  be->unmap_all();
  be->set_state(5);
  ASSERT_EQ(fe->backend_changed(), 0);
  EXPECT_EQ(be->frontend_state(), "6");
  be->set_state(6);
  ASSERT_EQ(fe->backend_changed(), 0);
  EXPECT_EQ(be->frontend_state(), "1");  // asks to reconnect
  be->init_wait();
  ASSERT_EQ(fe->backend_changed(), 0);
  ASSERT_TRUE(be->connect());
  ASSERT_EQ(fe->backend_changed(), 0);
  ASSERT_TRUE(fe->connected());
  pump();
  EXPECT_EQ(d.count, 1);
  EXPECT_EQ(r.status, IoStatus::Ok);
  EXPECT_EQ(buf, expect);
}

TEST_F(BlkfrontTest, CloseEndsEveryGrantAndFailsOutstandingIo) {
  BackendConfig cfg;
  cfg.persistent = true;
  cfg.max_indirect_segments = 64;
  Limits lim;
  lim.pool_pages = 8;
  make(cfg, lim);
  const int allocs_before = dom.live_allocs;
  bring_up();
  EXPECT_GT(dom.live_allocs, allocs_before);
  std::vector<std::uint8_t> buf(4096);
  Done d;
  BlockIo r = rw_io(Op::Read, 0, 8, buf.data(), &d);
  fe->submit(&r);
  be->take();
  // The backend honours the close: it drops its mappings and goes Closing/Closed.
  pf.on_wait = [&] {
    if (be->frontend_state() == "5") be->disappear();
  };
  ASSERT_EQ(fe->close(100), 0);
  EXPECT_EQ(fe->state(), XenbusState::Closed);
  EXPECT_EQ(be->frontend_state(), "6");
  EXPECT_EQ(r.status, IoStatus::NoDevice);
  EXPECT_EQ(d.count, 1);
  EXPECT_EQ(dom.grants().free_count(), free_grants_at_start);
  EXPECT_EQ(dom.live_allocs, allocs_before);
  EXPECT_EQ(fe->stats().grants_leaked, 0u);
  BlockIo again = rw_io(Op::Read, 0, 8, buf.data(), &d);
  fe->submit(&again);
  EXPECT_EQ(again.status, IoStatus::NoDevice);
}

TEST_F(BlkfrontTest, GrantTableExhaustionWaitsForCompletions) {
  make();
  bring_up();
  std::vector<std::uint8_t> a(8 * 4096), b(8 * 4096);
  fill_pattern(a.data(), a.size(), 1);
  fill_pattern(b.data(), b.size(), 2);
  Done d;
  BlockIo w1 = rw_io(Op::Write, 0, 64, a.data(), &d);
  BlockIo w2 = rw_io(Op::Write, 64, 64, b.data(), &d);
  pf.grant_budget = 10;  // w1 needs 8, w2 must wait for them to come back
  fe->submit(&w1);
  fe->submit(&w2);
  auto reqs = be->take();
  ASSERT_EQ(reqs.size(), 1u);
  EXPECT_EQ(reqs[0].sector, 0u);
  be->respond(0, reqs[0].id, reqs[0].operation, be->execute(reqs[0]));
  be->push();
  pf.grant_budget = -1;
  fe->handle_event(0);
  EXPECT_EQ(w1.status, IoStatus::Ok);
  pump();
  EXPECT_EQ(w2.status, IoStatus::Ok);
  EXPECT_EQ(std::memcmp(be->disk.data() + 64 * 512, b.data(), b.size()), 0);
  // With nothing in flight to wait for, exhaustion is reported instead of hanging.
  pf.grant_budget = 0;
  BlockIo w3 = rw_io(Op::Write, 0, 8, a.data(), &d);
  fe->submit(&w3);
  EXPECT_EQ(w3.status, IoStatus::NoResources);
}

TEST_F(BlkfrontTest, MalformedBackendNodesFailTheHandshake) {
  make();
  ASSERT_EQ(fe->start(), 0);
  ASSERT_EQ(xs.write(0, be->be() + "/max-ring-page-order", "2x"), 0);
  be->set_state(2);
  EXPECT_EQ(fe->backend_changed(), -XEN_EINVAL);
  EXPECT_EQ(be->frontend_state(), "5");
  EXPECT_EQ(dom.grants().free_count(), free_grants_at_start);
}

}  // namespace
}  // namespace pvio::blkfront::test
