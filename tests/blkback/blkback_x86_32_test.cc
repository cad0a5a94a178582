// A frontend speaking the x86_32 blkif ABI (protocol = x86_32-abi: 108-byte requests with
// 4-byte aligned ids and sectors, 12-byte responses) against the real Device: data written
// through direct and indirect segments reads back and is on disk, ids and statuses come back
// in the 32-bit response layout, and unknown operations are answered with their own id.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>

#include <random>

#include "blkback_datapath_guest.h"
#include "engine_test.h"

namespace pvio::blkback::test {
namespace {

constexpr domid_t kGuestDomid = 9;
constexpr std::uint64_t kDiskBytes = 4 << 20;

// One x86_32 front ring on a granted page, with the kick and event eventfds of a queue.
class Queue32 {
 public:
  static constexpr evtchn_port_t kPort = 1;

  explicit Queue32(TestGuest& g) : guest_(g) {
    ring_gfn_ = g.alloc_page();
    ring_.init(g.page(ring_gfn_), ring::kPageSize);
    ring_ref_ = g.gnttab().grant_access(0, ring_gfn_, false);
    kick_fd_ = evtchn::eventfd_create(true);
    event_fd_ = evtchn::eventfd_create(true);
    doorbell_.set(kPort, event_fd_);
  }
  ~Queue32() {
    ::close(kick_fd_);
    ::close(event_fd_);
  }

  QueueConfig config() {
    QueueConfig c;
    c.ring_refs = {ring_ref_};
    c.kick_fd = kick_fd_;
    c.notifier = &doorbell_;
    c.notify_port = kPort;
    return c;
  }

  template <typename T>
  void post(const T& req) {
    static_assert(sizeof(T) <= sizeof(blkif::blkif_x86_32_request));
    auto* s = ring_.next_request();
    std::memset(s, 0, sizeof(*s));
    std::memcpy(s, &req, sizeof(T));
  }
  void push() {
    if (ring_.push_requests()) evtchn::eventfd_signal(kick_fd_);
  }
  std::vector<blkif::blkif_x86_32_response> wait(std::size_t n) {
    std::vector<blkif::blkif_x86_32_response> out;
    while (out.size() < n) {
      const ring::RingCheck c = ring_.final_check_for_responses();
      if (!c.ok()) break;
      for (std::uint32_t i = 0; i < c.count; ++i) {
        blkif::blkif_x86_32_response r;
        ring_.consume_response(r);
        out.push_back(r);
      }
      if (c.count != 0) continue;
      pollfd p{event_fd_, POLLIN, 0};
      if (::poll(&p, 1, 20000) <= 0) break;
      std::uint64_t v;
      [[maybe_unused]] const ssize_t r = ::read(event_fd_, &v, sizeof v);
    }
    return out;
  }
  std::uint32_t size() const { return ring_.size(); }

 private:
  TestGuest& guest_;
  std::uint64_t ring_gfn_ = 0;
  grant_ref_t ring_ref_ = 0;
  blkif::FrontRingX86_32 ring_;
  int kick_fd_ = -1;
  int event_fd_ = -1;
  evtchn::EventfdDoorbell doorbell_;
};

struct Rig {
  TempFile file{kDiskBytes};
  TestGuest guest{kGuestDomid};
  Queue32 q{guest};

  DeviceConfig config() {
    DeviceConfig cfg;
    cfg.frontend_domid = kGuestDomid;
    cfg.memory = &guest.memory();
    cfg.grant_table_gfns = guest.table_gfns();
    cfg.engine = "uring";
    cfg.backing = BackingOptions{file.path(), false, DirectIo::Auto};
    cfg.max_indirect_segments = 64;
    cfg.protocol = BlkifProtocol::X86_32;
    cfg.queues.push_back(q.config());
    return cfg;
  }
};

TEST(BlkbackX86_32, TheRingHoldsThe32BitLayout) {
  // 108-byte slots: the same 32 entries per page as x86_64, at different offsets.
  EXPECT_EQ(sizeof(blkif::blkif_x86_32_request), 108u);
  EXPECT_EQ(sizeof(blkif::blkif_x86_32_response), 12u);
  Rig rig;
  EXPECT_EQ(rig.q.size(), 32u);
}

TEST(BlkbackX86_32, DirectWritesReadBackAndReachTheFileAcrossRingWraps) {
  Rig rig;
  Device dev(rig.config());
  dev.start();
  std::mt19937_64 rng(0x3232);
  std::vector<std::uint8_t> shadow(kDiskBytes, 0);
  constexpr unsigned kRequests = 100;  // > 3 ring wraps of 32
  constexpr unsigned kSegs = 4;
  std::vector<std::uint64_t> pages;
  for (unsigned i = 0; i < kSegs; ++i) pages.push_back(rig.guest.alloc_page());

  for (unsigned r = 0; r < kRequests; ++r) {
    const std::uint64_t sector = (rng() % (kDiskBytes / 4096 - kSegs)) * 8;
    blkif::blkif_x86_32_request w{};
    w.operation = blkif::kOpWrite;
    w.nr_segments = kSegs;
    w.id = 0x1122334400000000ull + r;  // the high half must survive the 4-byte alignment
    w.sector_number = sector;
    std::vector<grant_ref_t> grefs;
    for (unsigned s = 0; s < kSegs; ++s) {
      std::uint8_t* data = rig.guest.page(pages[s]);
      for (unsigned i = 0; i < 4096; ++i) data[i] = static_cast<std::uint8_t>(rng());
      std::memcpy(&shadow[(sector + s * 8) * 512], data, 4096);
      grefs.push_back(rig.guest.gnttab().grant_access(0, pages[s], true));
      w.seg[s] = {grefs.back(), 0, 7};
    }
    rig.q.post(w);
    rig.q.push();
    const auto rsp = rig.q.wait(1);
    ASSERT_EQ(rsp.size(), 1u);
    EXPECT_EQ(std::uint64_t{rsp[0].id}, std::uint64_t{w.id});
    EXPECT_EQ(rsp[0].operation, blkif::kOpWrite);
    ASSERT_EQ(rsp[0].status, blkif::kRspOkay);
    for (grant_ref_t g : grefs) EXPECT_TRUE(rig.guest.gnttab().end_access(g));

    // Read the same range back into scrubbed pages.
    blkif::blkif_x86_32_request rd = w;
    rd.operation = blkif::kOpRead;
    rd.id = w.id ^ 0xFFFF;
    grefs.clear();
    for (unsigned s = 0; s < kSegs; ++s) {
      std::memset(rig.guest.page(pages[s]), 0xA5, 4096);
      grefs.push_back(rig.guest.gnttab().grant_access(0, pages[s], false));
      rd.seg[s] = {grefs.back(), 0, 7};
    }
    rig.q.post(rd);
    rig.q.push();
    const auto rr = rig.q.wait(1);
    ASSERT_EQ(rr.size(), 1u);
    EXPECT_EQ(std::uint64_t{rr[0].id}, std::uint64_t{rd.id});
    ASSERT_EQ(rr[0].status, blkif::kRspOkay);
    for (grant_ref_t g : grefs) EXPECT_TRUE(rig.guest.gnttab().end_access(g));
    for (unsigned s = 0; s < kSegs; ++s)
      ASSERT_EQ(std::memcmp(rig.guest.page(pages[s]), &shadow[(sector + s * 8) * 512], 4096), 0)
          << "request " << r << " segment " << s;
  }

  blkif::blkif_x86_32_request flush{};
  flush.operation = blkif::kOpFlushDiskcache;
  flush.id = 77;
  rig.q.post(flush);
  rig.q.push();
  const auto fr = rig.q.wait(1);
  ASSERT_EQ(fr.size(), 1u);
  EXPECT_EQ(std::uint64_t{fr[0].id}, 77u);
  EXPECT_EQ(fr[0].status, blkif::kRspOkay);
  dev.stop();
  EXPECT_EQ(rig.file.contents(), shadow);
}

TEST(BlkbackX86_32, IndirectWriteInThe32BitLayoutReadsBack) {
  Rig rig;
  Device dev(rig.config());
  dev.start();
  constexpr unsigned kSegs = 20;  // more than a direct request holds
  std::vector<std::uint64_t> pages;
  std::vector<grant_ref_t> grefs;
  const std::uint64_t ind_page = rig.guest.alloc_page();
  auto* segs = reinterpret_cast<blkif::blkif_request_segment*>(rig.guest.page(ind_page));
  std::vector<std::uint8_t> expect(kSegs * 4096);
  for (unsigned s = 0; s < kSegs; ++s) {
    pages.push_back(rig.guest.alloc_page());
    std::memset(rig.guest.page(pages[s]), 0x40 + s, 4096);
    std::memset(&expect[s * 4096], 0x40 + s, 4096);
    grefs.push_back(rig.guest.gnttab().grant_access(0, pages[s], true));
    segs[s] = {grefs.back(), 0, 7};
  }
  const grant_ref_t ind_gref = rig.guest.gnttab().grant_access(0, ind_page, true);
  blkif::blkif_x86_32_request_indirect w{};
  w.operation = blkif::kOpIndirect;
  w.indirect_op = blkif::kOpWrite;
  w.nr_segments = kSegs;
  w.id = 0xABCDEF0012345678ull;
  w.sector_number = 2048;
  w.handle = 51712;
  w.indirect_grefs[0] = ind_gref;
  rig.q.post(w);
  rig.q.push();
  const auto rsp = rig.q.wait(1);
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_EQ(std::uint64_t{rsp[0].id}, std::uint64_t{w.id});
  EXPECT_EQ(rsp[0].operation, blkif::kOpIndirect);
  ASSERT_EQ(rsp[0].status, blkif::kRspOkay);
  dev.stop();
  const std::vector<std::uint8_t> disk = rig.file.contents();
  ASSERT_EQ(disk.size(), kDiskBytes);
  EXPECT_EQ(std::memcmp(&disk[2048 * 512], expect.data(), expect.size()), 0);
  EXPECT_EQ(dev.stats().indirect, 1u);
}

TEST(BlkbackX86_32, UnknownOperationIsAnsweredWithItsOwnId) {
  Rig rig;
  Device dev(rig.config());
  dev.start();
  blkif::blkif_x86_32_request r{};
  r.operation = 0x7E;
  r.id = 0x0102030405060708ull;
  rig.q.post(r);
  rig.q.push();
  const auto rsp = rig.q.wait(1);
  ASSERT_EQ(rsp.size(), 1u);
  EXPECT_EQ(std::uint64_t{rsp[0].id}, std::uint64_t{r.id});
  EXPECT_EQ(rsp[0].status, blkif::kRspEopnotsupp);
  EXPECT_FALSE(dev.any_ring_broken());
}

TEST(BlkbackX86_32, ProtocolValuesParse) {
  BlkifProtocol p = BlkifProtocol::X86_32;
  EXPECT_TRUE(parse_blkif_protocol("", &p));
  EXPECT_EQ(p, BlkifProtocol::X86_64);
  EXPECT_TRUE(parse_blkif_protocol("x86_32-abi", &p));
  EXPECT_EQ(p, BlkifProtocol::X86_32);
  EXPECT_TRUE(parse_blkif_protocol("x86_64-abi", &p));
  EXPECT_EQ(p, BlkifProtocol::X86_64);
  EXPECT_FALSE(parse_blkif_protocol("arm-abi", &p));
  EXPECT_FALSE(parse_blkif_protocol("x86_32-abi ", &p));
}

}  // namespace
}  // namespace pvio::blkback::test
