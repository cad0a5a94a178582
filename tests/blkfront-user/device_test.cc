// The user-mode blkfront binding against the real services: this process is user-mode guest
// domain 7 (pvio::domain::Domain) whose blkfront reaches xenstore over its ring page, served
// by a real pvio-xenstored after XS_INTRODUCE; the disk is served by a real pvio-blkback
// (started with `pvio up`, attached with `pvio block-attach`). Data is checked against the
// backing file itself.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "harness.h"
#include "pvio/blkfront_user/device.h"
#include "pvio/domain/domain.h"
#include "pvio/xenstore/client.h"

namespace pvio::blkfront::user::test {
namespace {

constexpr domid_t kDomid = 7;
constexpr std::uint64_t kDiskBytes = 32u << 20;

class DeviceTest : public Dom0Test {
 protected:
  DeviceTest() : Dom0Test(kDiskBytes) {}
  void SetUp() override {
    Dom0Test::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    domain::DomainConfig dc;
    dc.domid = kDomid;
    dc.memory_bytes = 64u << 20;
    dc.nr_grant_frames = 8;
    ASSERT_EQ(domain::Domain::create(dc, &dom_), 0);
    loop_ = std::thread([this] { dom_->run(); });
    // What `pvio create` does for a domain it builds: its home, then XS_INTRODUCE.
    xs_ = xs::Client::connect(dom0_->dir + "/xenstored.sock");
    ASSERT_TRUE(xs_);
    const std::string home = "/local/domain/" + std::to_string(kDomid);
    ASSERT_EQ(xs_->write(home + "/name", "blkfront-user-test"), xs::XsError::None);
    ASSERT_EQ(xs_->write(home + "/domid", std::to_string(kDomid)), xs::XsError::None);
    ASSERT_EQ(xs_->set_perms(home, {{0, xs::XsPerm::None}, {kDomid, xs::XsPerm::Read}}),
              xs::XsError::None);
    ASSERT_EQ(xs_->introduce(kDomid, dom_->xenstore_gfn(), dom_->xenstore_port()),
              xs::XsError::None);
    std::string out;
    ASSERT_EQ(run_shell(dom0_->pvio + " block-attach " + std::to_string(kDomid) + " " + dom0_->disk,
                 &out), 0) << out;
    dev_ = std::make_unique<Device>(*dom_, make_ring_xenstore(*dom_), DeviceConfig{});
    ASSERT_EQ(dev_->connect(20000), 0);
  }
  void TearDown() override {
    dev_.reset();
    if (xs_) xs_->release(kDomid);
    if (dom_) {
      dom_->stop();
      loop_.join();
      dom_.reset();
    }
    dom0_.reset();
  }

  std::vector<std::uint8_t> backing(std::uint64_t off, std::size_t len) {
    return read_file(dom0_->disk, off, len);
  }

  std::unique_ptr<domain::Domain> dom_;
  std::thread loop_;
  std::unique_ptr<xs::Client> xs_;
  std::unique_ptr<Device> dev_;
};

TEST_F(DeviceTest, ConnectsOverTheGuestRingAndReportsTheDisk) {
  EXPECT_EQ(dev_->state(), XenbusState::Connected);
  EXPECT_EQ(dev_->size_bytes(), kDiskBytes);
  EXPECT_FALSE(dev_->disk().read_only());
  const Negotiated n = dev_->negotiated();
  EXPECT_GE(n.nr_queues, 1u);
  EXPECT_TRUE(n.flush_cache);
  // The frontend's keys, written by this domain over its ring (its only xenstore path).
  const std::string fe = "/local/domain/7/device/vbd/51712";
  EXPECT_EQ(xs_->read(fe + "/protocol").value, "x86_64-abi");
  EXPECT_EQ(xs_->read(fe + "/state").value, "4");
  EXPECT_EQ(xs_->read("/local/domain/0/backend/vbd/7/51712/state").value, "4");
}

TEST_F(DeviceTest, ConcurrentRandomWritesLandInTheBackingFile) {
  // Four threads, each in its own quarter of the disk, random aligned sizes up to 256 KiB.
  constexpr int kThreads = 4;
  const std::uint64_t span = kDiskBytes / kThreads;
  std::vector<std::vector<std::uint8_t>> model(kThreads, std::vector<std::uint8_t>(span, 0));
  std::atomic<int> failures{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(1000 + t);
      std::vector<std::uint8_t> buf(256 << 10), back(256 << 10);
      for (int i = 0; i < 150; ++i) {
        const std::size_t len = 512 * (1 + rng() % 512);
        const std::uint64_t off = 512 * (rng() % ((span - len) / 512 + 1));
        const std::uint64_t abs = t * span + off;
        fill_pattern(buf.data(), abs, len, static_cast<std::uint32_t>(i + 1));
        if (dev_->write(abs, buf.data(), len) != IoStatus::Ok) ++failures;
        std::memcpy(model[t].data() + off, buf.data(), len);
        // Read back a random earlier range of this thread's span.
        const std::size_t rlen = 512 * (1 + rng() % 512);
        const std::uint64_t roff = 512 * (rng() % ((span - rlen) / 512 + 1));
        if (dev_->read(t * span + roff, back.data(), rlen) != IoStatus::Ok ||
            std::memcmp(back.data(), model[t].data() + roff, rlen) != 0)
          ++failures;
      }
    });
  }
  for (auto& th : ts) th.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_EQ(dev_->flush(), IoStatus::Ok);
  for (int t = 0; t < kThreads; ++t)
    EXPECT_TRUE(backing(t * span, span) == model[t]) << "quarter " << t;
}

struct AsyncState {
  std::mutex m;
  std::condition_variable cv;
  int done = 0;
  int failed = 0;
};
void async_done(BlockIo* io) {
  auto* s = static_cast<AsyncState*>(io->cookie);
  std::lock_guard lk(s->m);
  if (io->status != IoStatus::Ok) ++s->failed;
  ++s->done;
  s->cv.notify_all();
}

TEST_F(DeviceTest, ZeroCopyGuestPagesAtQueueDepth32) {
  // 32 I/Os of 16 KiB from guest pages in flight at once, written then read back.
  constexpr int kDepth = 32, kPages = 4;
  std::vector<DataPage> pages;
  ASSERT_EQ(dev_->alloc_data_pages(kDepth * kPages, &pages), 0);
  std::vector<BlockIo> ios(kDepth);
  AsyncState st;
  auto run_batch = [&](Op op) {
    st.done = st.failed = 0;
    for (int i = 0; i < kDepth; ++i) {
      ios[i] = BlockIo{};
      ios[i].op = op;
      ios[i].sector = 1000 + i * 64;  // 32 KiB apart
      ios[i].nr_sectors = kPages * 8;
      ios[i].pages = &pages[i * kPages];
      ios[i].nr_pages = kPages;
      ios[i].done = &async_done;
      ios[i].cookie = &st;
      dev_->submit(&ios[i]);
    }
    std::unique_lock lk(st.m);
    st.cv.wait(lk, [&] { return st.done == kDepth; });
  };
  for (int i = 0; i < kDepth; ++i)
    for (int p = 0; p < kPages; ++p)
      fill_pattern(static_cast<std::uint8_t*>(pages[i * kPages + p].addr),
                   (1000 + i * 64) * 512 + p * 4096, 4096, 77);
  run_batch(Op::Write);
  EXPECT_EQ(st.failed, 0);
  for (auto& pg : pages) std::memset(pg.addr, 0, 4096);
  run_batch(Op::Read);
  EXPECT_EQ(st.failed, 0);
  std::vector<std::uint8_t> want(4096);
  for (int i = 0; i < kDepth; ++i)
    for (int p = 0; p < kPages; ++p) {
      const std::uint64_t off = (1000 + i * 64) * 512 + p * 4096;
      fill_pattern(want.data(), off, 4096, 77);
      EXPECT_EQ(std::memcmp(pages[i * kPages + p].addr, want.data(), 4096), 0);
      EXPECT_TRUE(backing(off, 4096) == want);
    }
}

TEST_F(DeviceTest, FlushedDataIsInTheBackingFileWhenTheBackendIsKilledRightAfter) {
  std::vector<std::uint8_t> buf(1 << 20);
  fill_pattern(buf.data(), 4 << 20, buf.size(), 0xF1);
  ASSERT_EQ(dev_->write(4 << 20, buf.data(), buf.size()), IoStatus::Ok);
  ASSERT_EQ(dev_->flush(), IoStatus::Ok);
  dom0_->kill9_blkback();
  EXPECT_TRUE(backing(4 << 20, buf.size()) == buf);
}

TEST_F(DeviceTest, BackendKill9DuringWritesLosesNothingAndFailsNothing) {
  constexpr int kThreads = 3;
  const std::uint64_t span = kDiskBytes / kThreads / 512 * 512;
  std::vector<std::vector<std::uint8_t>> model(kThreads, std::vector<std::uint8_t>(span, 0));
  std::atomic<int> failures{0};
  std::atomic<int> ops{0};
  std::atomic<bool> restarted{false};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937_64 rng(77 + t);
      std::vector<std::uint8_t> buf(128 << 10), back(128 << 10);
      // Keep going until well after the restart.
      for (int i = 0; i < 400 || !restarted.load(); ++i) {
        const std::size_t len = 512 * (1 + rng() % 256);
        const std::uint64_t off = 512 * (rng() % ((span - len) / 512 + 1));
        fill_pattern(buf.data(), t * span + off, len, static_cast<std::uint32_t>(i + 7));
        if (dev_->write(t * span + off, buf.data(), len) != IoStatus::Ok) ++failures;
        std::memcpy(model[t].data() + off, buf.data(), len);
        if (dev_->read(t * span + off, back.data(), len) != IoStatus::Ok ||
            std::memcmp(back.data(), buf.data(), len) != 0)
          ++failures;
        ++ops;
        if (i > 100000) break;
      }
    });
  }
  ASSERT_TRUE(pvio::test::wait_until([&] { return ops.load() > 60; }, kWaitMs));
  dom0_->kill9_and_restart_blkback();
  restarted = true;
  for (auto& th : ts) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_GE(dev_->stats().reconnects, 1u);
  std::vector<std::uint8_t> back(span);
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(dev_->read(t * span, back.data(), span), IoStatus::Ok);
    EXPECT_TRUE(back == model[t]) << "span " << t << " through the device";
  }
  ASSERT_EQ(dev_->flush(), IoStatus::Ok);
  for (int t = 0; t < kThreads; ++t)
    EXPECT_TRUE(backing(t * span, span) == model[t]) << "span " << t << " in the file";
}

TEST_F(DeviceTest, DiscardReadsBackZeroesAndBadArgumentsAreRefused) {
  std::vector<std::uint8_t> buf(256 << 10, 0xAB), back(256 << 10, 0x11);
  ASSERT_EQ(dev_->write(8 << 20, buf.data(), buf.size()), IoStatus::Ok);
  if (dev_->negotiated().discard) {
    ASSERT_EQ(dev_->discard(8 << 20, 128 << 10), IoStatus::Ok);
    ASSERT_EQ(dev_->read(8 << 20, back.data(), back.size()), IoStatus::Ok);
    EXPECT_TRUE(std::all_of(back.begin(), back.begin() + (128 << 10), [](auto b) { return b == 0; }));
    EXPECT_TRUE(std::all_of(back.begin() + (128 << 10), back.end(), [](auto b) { return b == 0xAB; }));
  }
  EXPECT_EQ(dev_->write(100, buf.data(), 512), IoStatus::Invalid);
  EXPECT_EQ(dev_->read(0, back.data(), 100), IoStatus::Invalid);
  EXPECT_EQ(dev_->read(kDiskBytes - 512, back.data(), 1024), IoStatus::Invalid);
  EXPECT_EQ(dev_->read(kDiskBytes - 512, back.data(), 512), IoStatus::Ok);
}

}  // namespace
}  // namespace pvio::blkfront::user::test
