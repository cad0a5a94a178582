// xenvbd, the StorPort miniport, run unchanged on the host inside the Windows-kernel test
// environment (env/): StorPort drives the adapter, xenbus's child PDO hands it an interface
// over a user-mode pvio domain, and the disk is served by the REAL pvio-xenstored and
// pvio-blkback (`pvio up`, `pvio block-attach`). SCSI data is checked against the backing file
// itself; every test also fails if the driver broke a kernel rule the environment enforces.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>
#include <memory>
#include <thread>

#include "../blkfront-user/harness.h"
#include "env/kernel.h"
#include "env/storport_host.h"
#include "env/xen_bus.h"
#include "pvio/domain/domain.h"
#include "pvio/xenstore/client.h"
#include "scsi.h"

extern "C" NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path);

namespace pvio::windows::test {
namespace {

using blkfront::user::test::Dom0Test;
using blkfront::user::test::fill_pattern;
using blkfront::user::test::read_file;
using pvio::test::run_shell;

constexpr domid_t kDomid = 9;
constexpr std::uint32_t kDevid = 51712;
constexpr std::uint64_t kDiskBytes = 32u << 20;

std::uint32_t be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}
std::uint64_t be64(const std::uint8_t* p) { return std::uint64_t{be32(p)} << 32 | be32(p + 4); }
void put32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (24 - 8 * i));
}
void put64(std::uint8_t* p, std::uint64_t v) {
  put32(p, static_cast<std::uint32_t>(v >> 32));
  put32(p + 4, static_cast<std::uint32_t>(v));
}

// CDBs.
struct Cdb {
  std::uint8_t b[16] = {};
  std::uint8_t len = 0;
};
Cdb rw16(bool write, std::uint64_t lba, std::uint32_t blocks) {
  Cdb c;
  c.len = 16;
  c.b[0] = write ? 0x8A : 0x88;
  put64(c.b + 2, lba);
  put32(c.b + 10, blocks);
  return c;
}
Cdb rw10(bool write, std::uint32_t lba, std::uint16_t blocks) {
  Cdb c;
  c.len = 10;
  c.b[0] = write ? 0x2A : 0x28;
  put32(c.b + 2, lba);
  c.b[7] = static_cast<std::uint8_t>(blocks >> 8);
  c.b[8] = static_cast<std::uint8_t>(blocks);
  return c;
}

// A disk of `sector_size` bytes per logical block: a plain file for 512, a loop device with
// 4 KiB logical sectors over the file for 4096.
class XenvbdTest : public Dom0Test, public ::testing::WithParamInterface<std::uint32_t> {
 protected:
  XenvbdTest() : Dom0Test(kDiskBytes) {}
  void SetUp() override {
    Dom0Test::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    clear_violations();
    block_size_ = GetParam();
    target_ = dom0_->disk;
    if (block_size_ != 512) {
      std::string out;
      ASSERT_EQ(run_shell("losetup --find --show --sector-size " + std::to_string(block_size_) +
                              " " + dom0_->disk, &out), 0) << out;
      loop_dev_ = out.substr(0, out.find('\n'));
      target_ = loop_dev_;
    }
    domain::DomainConfig dc;
    dc.domid = kDomid;
    dc.memory_bytes = 64u << 20;
    dc.nr_grant_frames = 8;
    ASSERT_EQ(domain::Domain::create(dc, &dom_), 0);
    loop_ = std::thread([this] { dom_->run(); });
    xs_ = xs::Client::connect(dom0_->dir + "/xenstored.sock");
    ASSERT_TRUE(xs_);
    const std::string home = "/local/domain/" + std::to_string(kDomid);
    ASSERT_EQ(xs_->write(home + "/name", "xenvbd-test"), xs::XsError::None);
    ASSERT_EQ(xs_->write(home + "/domid", std::to_string(kDomid)), xs::XsError::None);
    ASSERT_EQ(xs_->set_perms(home, {{0, xs::XsPerm::None}, {kDomid, xs::XsPerm::Read}}),
              xs::XsError::None);
    ASSERT_EQ(xs_->introduce(kDomid, dom_->xenstore_gfn(), dom_->xenstore_port()),
              xs::XsError::None);
    std::string out;
    ASSERT_EQ(run_shell(dom0_->pvio + " block-attach " + std::to_string(kDomid) + " " + target_,
                        &out), 0) << out;

    set_guest_memory(dom_.get());
    static bool registered = false;
    if (!registered) {
      UNICODE_STRING reg{};
      ASSERT_EQ(DriverEntry(nullptr, &reg), STATUS_SUCCESS);
      registered = true;
    }
    ASSERT_NE(host().registered(), nullptr);
    child_ = std::make_unique<XenBusChild>(*dom_, PvioXenVbd, kDevid);
    ASSERT_EQ(host().start_adapter(child_->pdo()), SP_RETURN_FOUND);
    started_ = true;
  }
  void TearDown() override {
    if (started_) host().stop_adapter();
    if (child_) {
      EXPECT_EQ(child_->references(), 0) << "xenvbd kept its xenbus interface referenced";
      EXPECT_EQ(child_->watches(), 0u) << "xenvbd left a xenstore watch behind";
    }
    child_.reset();
    if (xs_) xs_->release(kDomid);
    if (dom_) {
      dom_->stop();
      loop_.join();
    }
    set_guest_memory(nullptr);
    dom_.reset();
    dom0_.reset();
    if (!loop_dev_.empty()) run_shell("losetup -d " + loop_dev_);
    EXPECT_TRUE(violations().empty()) << violations().size() << " kernel rule(s) broken, first: "
                                      << violations().front();
  }

  StorPortHost& host() { return StorPortHost::instance(); }

  std::unique_ptr<ScsiRequest> request(const Cdb& c, std::uint32_t len, ULONG flags) {
    auto r = host().make_request({}, len, flags);
    std::memcpy(r->srb.Cdb, c.b, c.len);
    r->srb.CdbLength = c.len;
    return r;
  }
  std::unique_ptr<ScsiRequest> run(const Cdb& c, std::uint32_t len, ULONG flags) {
    auto r = request(c, len, flags);
    EXPECT_TRUE(host().execute(*r)) << "SRB not completed";
    return r;
  }
  std::unique_ptr<ScsiRequest> write_blocks(std::uint64_t lba, std::uint32_t blocks,
                                            std::uint32_t tag) {
    auto r = request(rw16(true, lba, blocks), blocks * block_size_, SRB_FLAGS_DATA_OUT);
    fill_pattern(r->data.data(), lba * block_size_, r->data.size(), tag);
    EXPECT_TRUE(host().execute(*r));
    return r;
  }
  std::vector<std::uint8_t> backing(std::uint64_t off, std::size_t len) {
    return read_file(dom0_->disk, off, len);
  }
  std::string xs_read(const std::string& path) {
    auto r = xs_->read(path);
    return r.ok() ? r.value : std::string();
  }
  std::string front_dir() const {
    return "/local/domain/" + std::to_string(kDomid) + "/device/vbd/" + std::to_string(kDevid);
  }
  // Both ends' XenbusState as xenstore shows them ("4" Connected, "6" Closed).
  std::pair<std::string, std::string> states() {
    const std::string back = xs_read(front_dir() + "/backend");
    return {xs_read(front_dir() + "/state"), back.empty() ? "" : xs_read(back + "/state")};
  }

  std::uint32_t block_size_ = 512;
  std::string target_;
  std::string loop_dev_;
  std::unique_ptr<domain::Domain> dom_;
  std::thread loop_;
  std::unique_ptr<xs::Client> xs_;
  std::unique_ptr<XenBusChild> child_;
  bool started_ = false;
};

TEST_P(XenvbdTest, ReportsTheDiskThroughInquiryCapacityAndLuns) {
  Cdb inq;
  inq.len = 6;
  inq.b[0] = 0x12;
  inq.b[4] = 96;
  auto r = run(inq, 96, SRB_FLAGS_DATA_IN);
  ASSERT_EQ(r->status(), SRB_STATUS_SUCCESS);
  EXPECT_EQ(r->srb.DataTransferLength, 36u);
  EXPECT_EQ(r->data[0], 0x00);  // direct-access block device
  EXPECT_EQ(std::string(reinterpret_cast<char*>(&r->data[8]), 8), "PVIO    ");

  Cdb cap16;
  cap16.len = 16;
  cap16.b[0] = 0x9E;
  cap16.b[1] = 0x10;
  put32(cap16.b + 10, 32);
  r = run(cap16, 32, SRB_FLAGS_DATA_IN);
  ASSERT_EQ(r->status(), SRB_STATUS_SUCCESS);
  EXPECT_EQ(be64(&r->data[0]), kDiskBytes / block_size_ - 1);
  EXPECT_EQ(be32(&r->data[8]), block_size_);

  Cdb cap10;
  cap10.len = 10;
  cap10.b[0] = 0x25;
  r = run(cap10, 8, SRB_FLAGS_DATA_IN);
  ASSERT_EQ(r->status(), SRB_STATUS_SUCCESS);
  EXPECT_EQ(be32(&r->data[0]), kDiskBytes / block_size_ - 1);
  EXPECT_EQ(be32(&r->data[4]), block_size_);

  Cdb luns;
  luns.len = 12;
  luns.b[0] = 0xA0;
  put32(luns.b + 6, 64);
  r = run(luns, 64, SRB_FLAGS_DATA_IN);
  ASSERT_EQ(r->status(), SRB_STATUS_SUCCESS);
  EXPECT_EQ(be32(&r->data[0]), 8u);  // exactly one LUN
  EXPECT_EQ(be64(&r->data[8]), 0u);  // LUN 0

  Cdb sense6;  // MODE SENSE(6), caching page: a write cache that flush empties
  sense6.len = 6;
  sense6.b[0] = 0x1A;
  sense6.b[2] = 0x08;
  sense6.b[4] = 64;
  r = run(sense6, 64, SRB_FLAGS_DATA_IN);
  ASSERT_EQ(r->status(), SRB_STATUS_SUCCESS);
  EXPECT_EQ(r->data[4], 0x08);
  EXPECT_EQ(r->data[6] & 0x04, 0x04);  // WCE: the backend offers flush
  EXPECT_EQ(r->data[2] & 0x80, 0x00);  // not write-protected

  // The queue depth StorPort was told is the ring's.
  EXPECT_GE(host().config().MaxIOsPerLun, 32u);
}

TEST_P(XenvbdTest, WritesReachTheBackingFileAndReadsReturnIt) {
  // WRITE(16) at a few places and sizes, checked in the file itself.
  const std::size_t allocations = allocation_calls();
  const std::uint64_t lba = 3 * 4096 / block_size_;
  for (std::uint32_t blocks : {1u, 8u, 1024u * 1024 / block_size_}) {
    auto w = write_blocks(lba + blocks, blocks, blocks);
    ASSERT_EQ(w->status(), SRB_STATUS_SUCCESS);
    EXPECT_EQ(backing((lba + blocks) * block_size_, w->data.size()), w->data) << blocks;
  }
  // The file changed underneath: READ(10) and READ(16) return the file's bytes.
  std::vector<std::uint8_t> expect(64 * 1024);
  fill_pattern(expect.data(), 0, expect.size(), 77);
  {
    const int fd = ::open(dom0_->disk.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, expect.data(), expect.size(), 5u << 20),
              static_cast<ssize_t>(expect.size()));
    ::fsync(fd);
    ::close(fd);
  }
  if (!loop_dev_.empty()) run_shell("blockdev --flushbufs " + loop_dev_);
  const std::uint32_t blocks = static_cast<std::uint32_t>(expect.size() / block_size_);
  auto r10 = run(rw10(false, static_cast<std::uint32_t>((5u << 20) / block_size_),
                      static_cast<std::uint16_t>(blocks)), expect.size(), SRB_FLAGS_DATA_IN);
  ASSERT_EQ(r10->status(), SRB_STATUS_SUCCESS);
  EXPECT_EQ(r10->data, expect);
  auto r16 = run(rw16(false, (5u << 20) / block_size_, blocks), expect.size(), SRB_FLAGS_DATA_IN);
  ASSERT_EQ(r16->status(), SRB_STATUS_SUCCESS);
  EXPECT_EQ(r16->data, expect);
  EXPECT_EQ(allocation_calls(), allocations) << "the I/O path allocated memory";
}

TEST_P(XenvbdTest, ServesAFullQueueOfConcurrentRequests) {
  const std::uint32_t depth = host().config().MaxIOsPerLun;
  const std::uint32_t per = 16 * 1024 / block_size_;
  const std::size_t allocations = allocation_calls();
  std::vector<std::unique_ptr<ScsiRequest>> reqs;
  for (std::uint32_t i = 0; i < depth; ++i) {
    auto r = request(rw16(true, std::uint64_t{i} * per, per), per * block_size_, SRB_FLAGS_DATA_OUT);
    fill_pattern(r->data.data(), std::uint64_t{i} * per * block_size_, r->data.size(), 1000 + i);
    reqs.push_back(std::move(r));
  }
  for (auto& r : reqs) host().issue(*r);  // all in flight before any completes
  for (auto& r : reqs) {
    ASSERT_TRUE(host().wait(*r, 20000));
    ASSERT_EQ(r->status(), SRB_STATUS_SUCCESS);
  }
  EXPECT_EQ(allocation_calls(), allocations) << "the I/O path allocated memory";
  for (std::uint32_t i = 0; i < depth; ++i)
    EXPECT_EQ(backing(std::uint64_t{i} * per * block_size_, reqs[i]->data.size()), reqs[i]->data);
}

TEST_P(XenvbdTest, SynchronizeCacheFlushesAndUnmapDiscards) {
  const std::uint64_t lba = (8u << 20) / block_size_;
  const std::uint32_t blocks = (256 * 1024) / block_size_;
  ASSERT_EQ(write_blocks(lba, blocks, 5)->status(), SRB_STATUS_SUCCESS);

  Cdb sync;
  sync.len = 10;
  sync.b[0] = 0x35;
  EXPECT_EQ(run(sync, 0, 0)->status(), SRB_STATUS_SUCCESS);
  auto flush = host().make_request({}, 0, 0);
  flush->srb.Function = SRB_FUNCTION_FLUSH;
  ASSERT_TRUE(host().execute(*flush));
  EXPECT_EQ(flush->status(), SRB_STATUS_SUCCESS);

  // VPD B2h: UNMAP is offered (the backend's feature-discard).
  Cdb vpd;
  vpd.len = 6;
  vpd.b[0] = 0x12;
  vpd.b[1] = 0x01;
  vpd.b[2] = 0xB2;
  vpd.b[4] = 64;
  auto v = run(vpd, 64, SRB_FLAGS_DATA_IN);
  ASSERT_EQ(v->status(), SRB_STATUS_SUCCESS);
  ASSERT_EQ(v->data[5] & 0x80, 0x80) << "backend does not offer discard";

  // UNMAP two ranges inside what was written: they read back as zeros from the file.
  Cdb unmap;
  unmap.len = 10;
  unmap.b[0] = 0x42;
  unmap.b[8] = 8 + 2 * 16;
  auto u = request(unmap, 8 + 2 * 16, SRB_FLAGS_DATA_OUT);
  std::uint8_t* p = u->data.data();
  p[1] = 6 + 2 * 16;
  p[3] = 2 * 16;
  const std::uint32_t quarter = blocks / 4;
  put64(p + 8, lba);
  put32(p + 16, quarter);
  put64(p + 24, lba + 2 * quarter);
  put32(p + 32, quarter);
  ASSERT_TRUE(host().execute(*u));
  ASSERT_EQ(u->status(), SRB_STATUS_SUCCESS);
  if (!loop_dev_.empty()) run_shell("blockdev --flushbufs " + loop_dev_);
  const std::vector<std::uint8_t> zeros(quarter * block_size_, 0);
  EXPECT_EQ(backing(lba * block_size_, zeros.size()), zeros);
  EXPECT_EQ(backing((lba + 2 * quarter) * block_size_, zeros.size()), zeros);
  std::vector<std::uint8_t> kept(quarter * block_size_);
  fill_pattern(kept.data(), (lba + quarter) * block_size_, kept.size(), 5);
  EXPECT_EQ(backing((lba + quarter) * block_size_, kept.size()), kept);
}

TEST_P(XenvbdTest, BadRequestsGetCheckConditionWithSense) {
  const std::uint64_t blocks = kDiskBytes / block_size_;
  auto r = run(rw16(false, blocks - 1, 2), 2 * block_size_, SRB_FLAGS_DATA_IN);
  EXPECT_EQ(r->status(), SRB_STATUS_ERROR);
  EXPECT_TRUE(r->srb.SrbStatus & SRB_STATUS_AUTOSENSE_VALID);
  EXPECT_EQ(r->srb.ScsiStatus, 0x02);
  EXPECT_EQ(r->sense_key(), 0x05);
  EXPECT_EQ(r->asc(), 0x21);  // LBA out of range

  Cdb bogus;
  bogus.len = 10;
  bogus.b[0] = 0x5F;
  r = run(bogus, 0, 0);
  EXPECT_EQ(r->status(), SRB_STATUS_ERROR);
  EXPECT_EQ(r->asc(), 0x20);  // invalid command operation code

  auto lun = request(rw16(false, 0, 1), block_size_, SRB_FLAGS_DATA_IN);
  lun->srb.Lun = 3;
  ASSERT_TRUE(host().execute(*lun));
  EXPECT_EQ(lun->status(), SRB_STATUS_INVALID_LUN);
}

// The environment's rules fail a test: a second completion of an SRB, and a PASSIVE_LEVEL-only
// routine called at DISPATCH_LEVEL (as from a DPC), are recorded as violations.
TEST_P(XenvbdTest, TheEnvironmentCatchesBrokenKernelRules) {
  auto r = run(rw16(false, 0, 1), block_size_, SRB_FLAGS_DATA_IN);
  ASSERT_EQ(r->status(), SRB_STATUS_SUCCESS);
  ASSERT_TRUE(violations().empty());
  StorPortNotification(RequestComplete, host().device_extension(), &r->srb);
  ASSERT_EQ(violations().size(), 1u);
  EXPECT_NE(violations()[0].find("completed twice"), std::string::npos) << violations()[0];
  clear_violations();
  {
    AtIrql dispatch(DISPATCH_LEVEL);
    PHYSICAL_ADDRESS lo{}, hi{}, b{};
    hi.QuadPart = -1;
    void* p = MmAllocateContiguousMemorySpecifyCache(4096, lo, hi, b, MmCached);
    ASSERT_EQ(violations().size(), 1u);
    EXPECT_NE(violations()[0].find("MmAllocateContiguousMemorySpecifyCache"), std::string::npos);
    AtIrql passive(PASSIVE_LEVEL);
    if (p != nullptr) MmFreeContiguousMemory(p);
  }
  clear_violations();
}

// pvio-blkback killed with -9 and restarted under load: the in-flight and later SRBs all
// complete successfully once the adapter has reconnected (watch-driven control steps at
// PASSIVE_LEVEL), and the data is on disk.
TEST_P(XenvbdTest, SurvivesABackendRestartUnderLoad) {
  const std::uint32_t per = 64 * 1024 / block_size_;
  std::vector<std::unique_ptr<ScsiRequest>> before;
  for (std::uint32_t i = 0; i < 16; ++i) {
    auto r = request(rw16(true, std::uint64_t{i} * per, per), per * block_size_, SRB_FLAGS_DATA_OUT);
    fill_pattern(r->data.data(), std::uint64_t{i} * per * block_size_, r->data.size(), 300 + i);
    before.push_back(std::move(r));
  }
  for (auto& r : before) host().issue(*r);
  dom0_->kill9_and_restart_blkback();
  if (HasFatalFailure()) return;
  for (auto& r : before) {
    ASSERT_TRUE(host().wait(*r, 30000)) << "SRB lost across the backend restart";
    EXPECT_EQ(r->status(), SRB_STATUS_SUCCESS);
  }
  auto after = write_blocks(std::uint64_t{40} * per, per, 999);
  EXPECT_EQ(after->status(), SRB_STATUS_SUCCESS);
  for (std::uint32_t i = 0; i < 16; ++i)
    EXPECT_EQ(backing(std::uint64_t{i} * per * block_size_, before[i]->data.size()), before[i]->data);
  EXPECT_EQ(backing(std::uint64_t{40} * per * block_size_, after->data.size()), after->data);
}

// A sleep state as StorPort handles it, 20 times, with I/O before and after each: the frontend
// disconnects (both ends Closed in xenstore, no grant or event channel left), reconnects on a
// new ring (both ends Connected), and every block written in any cycle reads back intact.
TEST_P(XenvbdTest, PowerCyclesDisconnectReconnectAndKeepTheData) {
  ASSERT_TRUE(host().supports(ScsiStopAdapter));
  ASSERT_TRUE(host().supports(ScsiRestartAdapter));
  constexpr int kCycles = 20;
  const std::uint32_t per = 32 * 1024 / block_size_;
  std::vector<std::unique_ptr<ScsiRequest>> written;
  auto lba_of = [&](int cycle, int which) { return std::uint64_t(2 * cycle + which) * per; };
  EXPECT_EQ(states(), std::make_pair(std::string("4"), std::string("4")));
  std::size_t contiguous_up = 0;
  for (int c = 0; c < kCycles; ++c) {
    auto before = write_blocks(lba_of(c, 0), per, 2000 + 2 * c);
    ASSERT_EQ(before->status(), SRB_STATUS_SUCCESS) << "cycle " << c;
    written.push_back(std::move(before));

    host().power_down();
    ASSERT_TRUE(host().stopped());
    EXPECT_EQ(states(), std::make_pair(std::string("6"), std::string("6"))) << "cycle " << c;
    EXPECT_EQ(child_->grants_held(), 0) << "grants kept across power-down, cycle " << c;
    EXPECT_EQ(child_->ports_open(), 0) << "event channel kept across power-down, cycle " << c;

    host().power_up();
    ASSERT_FALSE(host().stopped());
    EXPECT_EQ(states(), std::make_pair(std::string("4"), std::string("4"))) << "cycle " << c;
    EXPECT_EQ(child_->ports_open(), 1) << "cycle " << c;
    if (c == 0) contiguous_up = contiguous_allocations();
    EXPECT_EQ(contiguous_allocations(), contiguous_up) << "ring or pool memory leaked, cycle " << c;

    auto after = write_blocks(lba_of(c, 1), per, 2001 + 2 * c);
    ASSERT_EQ(after->status(), SRB_STATUS_SUCCESS) << "cycle " << c;
    written.push_back(std::move(after));
  }
  // Everything reads back through the driver and is in the file.
  for (std::size_t i = 0; i < written.size(); ++i) {
    const std::uint64_t lba = std::uint64_t(i) * per;
    auto r = run(rw16(false, lba, per), per * block_size_, SRB_FLAGS_DATA_IN);
    ASSERT_EQ(r->status(), SRB_STATUS_SUCCESS);
    EXPECT_EQ(r->data, written[i]->data) << "block run " << i;
  }
  if (!loop_dev_.empty()) run_shell("blockdev --flushbufs " + loop_dev_);
  for (std::size_t i = 0; i < written.size(); ++i)
    EXPECT_EQ(backing(std::uint64_t(i) * per * block_size_, written[i]->data.size()),
              written[i]->data) << "block run " << i;
  // The disk's size came back from the new connection's "sectors".
  Cdb cap16;
  cap16.len = 16;
  cap16.b[0] = 0x9E;
  cap16.b[1] = 0x10;
  put32(cap16.b + 10, 32);
  auto cap = run(cap16, 32, SRB_FLAGS_DATA_IN);
  ASSERT_EQ(cap->status(), SRB_STATUS_SUCCESS);
  EXPECT_EQ(be64(&cap->data[0]), kDiskBytes / block_size_ - 1);
}

// A full queue issued right before the power-down: StorPort drains it first (the environment
// waits for every started SRB), so nothing is outstanding when the adapter stops, and all of it
// is on disk after the cycle.
TEST_P(XenvbdTest, PowerDownAfterAFullQueueLosesNothing) {
  const std::uint32_t depth = host().config().MaxIOsPerLun;
  const std::uint32_t per = 16 * 1024 / block_size_;
  std::vector<std::unique_ptr<ScsiRequest>> reqs;
  for (std::uint32_t i = 0; i < depth; ++i) {
    auto r = request(rw16(true, std::uint64_t{i} * per, per), per * block_size_, SRB_FLAGS_DATA_OUT);
    fill_pattern(r->data.data(), std::uint64_t{i} * per * block_size_, r->data.size(), 4000 + i);
    reqs.push_back(std::move(r));
  }
  for (auto& r : reqs) host().issue(*r);
  host().power_down();
  for (auto& r : reqs) EXPECT_EQ(r->status(), SRB_STATUS_SUCCESS);
  host().power_up();
  for (std::uint32_t i = 0; i < depth; ++i) {
    auto r = run(rw16(false, std::uint64_t{i} * per, per), per * block_size_, SRB_FLAGS_DATA_IN);
    ASSERT_EQ(r->status(), SRB_STATUS_SUCCESS);
    EXPECT_EQ(r->data, reqs[i]->data) << i;
  }
}

// pvio-blkback killed with -9 and restarted while the adapter is powered down, and once more
// killed just before a power-down: the cycles converge and I/O works after each.
TEST_P(XenvbdTest, PowerCycleConvergesAcrossABackendRestart) {
  const std::uint32_t per = 64 * 1024 / block_size_;
  ASSERT_EQ(write_blocks(0, per, 71)->status(), SRB_STATUS_SUCCESS);
  host().power_down();
  dom0_->kill9_and_restart_blkback();
  if (HasFatalFailure()) return;
  host().power_up();
  auto a = write_blocks(per, per, 72);
  EXPECT_EQ(a->status(), SRB_STATUS_SUCCESS);
  EXPECT_EQ(states(), std::make_pair(std::string("4"), std::string("4")));

  // The backend dies while the adapter runs and comes back during the cycle.
  dom0_->kill9_blkback();
  if (HasFatalFailure()) return;
  std::thread restart([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::string out;
    EXPECT_EQ(dom0_->up(&out), 0) << out;
  });
  host().power_down();
  EXPECT_EQ(child_->grants_held(), 0);
  EXPECT_EQ(child_->ports_open(), 0);
  host().power_up();
  restart.join();
  auto b = write_blocks(2 * per, per, 73);
  EXPECT_EQ(b->status(), SRB_STATUS_SUCCESS);
  std::vector<std::uint8_t> first(per * block_size_);
  fill_pattern(first.data(), 0, first.size(), 71);
  auto r = run(rw16(false, 0, per), per * block_size_, SRB_FLAGS_DATA_IN);
  ASSERT_EQ(r->status(), SRB_STATUS_SUCCESS);
  EXPECT_EQ(r->data, first);
  EXPECT_EQ(backing(per * block_size_, a->data.size()), a->data);
  EXPECT_EQ(backing(2 * per * block_size_, b->data.size()), b->data);
}

// The stopped state is enforced: a completion or a request for more work from the miniport
// between ScsiStopAdapter and ScsiRestartAdapter is a violation.
TEST_P(XenvbdTest, TheEnvironmentCatchesRequestsWhileStopped) {
  auto r = run(rw16(false, 0, 1), block_size_, SRB_FLAGS_DATA_IN);
  ASSERT_EQ(r->status(), SRB_STATUS_SUCCESS);
  host().power_down();
  ASSERT_TRUE(violations().empty());
  StorPortNotification(RequestComplete, host().device_extension(), &r->srb);
  StorPortNotification(NextRequest, host().device_extension());
  const auto v = violations();
  ASSERT_GE(v.size(), 2u);
  EXPECT_NE(v[0].find("while the adapter is stopped"), std::string::npos) << v[0];
  EXPECT_NE(v.back().find("while the adapter is stopped"), std::string::npos) << v.back();
  clear_violations();
  host().power_up();
  EXPECT_EQ(run(rw16(false, 0, 1), block_size_, SRB_FLAGS_DATA_IN)->status(), SRB_STATUS_SUCCESS);
}

INSTANTIATE_TEST_SUITE_P(SectorSizes, XenvbdTest, ::testing::Values(512u, 4096u),
                         [](const auto& info) { return std::to_string(info.param) + "B"; });

}  // namespace
}  // namespace pvio::windows::test
