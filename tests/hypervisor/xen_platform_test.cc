// The Xen platform device's unplug protocol driven through the I/O bus as vCPU exits drive it,
// without KVM: the real IDE model on a temporary file and the real e1000 model sit on the same
// PCI bus, so an unplug is seen where a guest would see it (task-file registers, config space,
// BARs, the interrupt line) and on the disk file.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "guest_ram.h"
#include "pvio/guest/rng.h"
#include "pvio/hypervisor/devices/e1000.h"
#include "pvio/hypervisor/devices/ide.h"
#include "pvio/hypervisor/devices/xen_platform.h"

namespace pvio::hv {
namespace {

using testing::GuestRam;
constexpr std::uint16_t kCmd = 0x1f0, kCtl = 0x3f6, kBm = 0xc000;
constexpr std::uint16_t kMagicPort = 0x10, kVersionPort = 0x12;
constexpr std::uint64_t kDiskBytes = 1 << 20;
constexpr std::uint64_t kNicMmio = 0xfebc0000;
constexpr unsigned kNicSlot = 4;
constexpr std::uint32_t kNicStatus = 0x08, kNicIcs = 0xc8, kNicIms = 0xd0;

class XenPlatformTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    path_ = std::string(tmp ? tmp : "/tmp") + "/pvio-platform-XXXXXX";
    fd_ = ::mkstemp(path_.data());
    ASSERT_GE(fd_, 0);
    ASSERT_EQ(::ftruncate(fd_, kDiskBytes), 0);
    ASSERT_TRUE(bus_.map_pio(0xcf8, 8, &pci_, 0));
    auto ide = std::make_unique<PiixIde>(ram_.memory, fd_, kDiskBytes,
                                         [this](unsigned, bool level) { ide_irq_ = level; });
    ide_ = ide.get();
    ASSERT_TRUE(ide->attach_legacy(&bus_));
    ASSERT_TRUE(pci_.add(1, 1, std::move(ide), &bus_));
    auto nic = std::make_unique<E1000>(
        ram_.memory, E1000::Config{}, [this](unsigned, bool level) { nic_irq_ = level; },
        [](std::span<const std::uint8_t>) {}, [] { return std::uint64_t{0}; });
    nic_ = nic.get();
    ASSERT_TRUE(pci_.add(kNicSlot, 0, std::move(nic), &bus_));
    make_platform({});
  }
  void TearDown() override {
    ::close(fd_);
    ::unlink(path_.c_str());
  }

  // (Re)creates the platform device at 00:02.0 with `blacklist`.
  void make_platform(std::vector<PvDriverBlacklistEntry> blacklist) {
    if (platform_ != nullptr) bus_.unmap_pio(platform_, 0);
    // Earlier ones stay alive: the I/O bus keeps every device it ever mapped for its counters.
    owned_.push_back(std::make_unique<XenPlatform>(
        XenPlatform::Targets{ide_, &pci_, [this] { ++wires_detached_; }},
        [this](std::string_view line) { log_.emplace_back(line); }, [this] { return now_; },
        std::move(blacklist)));
    platform_ = owned_.back().get();
    ASSERT_TRUE(platform_->attach_fixed_ports(&bus_));
  }

  void out(std::uint16_t port, std::uint32_t v, unsigned size) {
    std::uint8_t d[4];
    std::memcpy(d, &v, 4);
    bus_.handle_pio(port, true, size, 1, d);
  }
  std::uint32_t in(std::uint16_t port, unsigned size) {
    std::uint8_t d[4] = {};
    bus_.handle_pio(port, false, size, 1, d);
    std::uint32_t v = 0;
    std::memcpy(&v, d, size);
    return v;
  }
  std::uint32_t config(unsigned slot, unsigned fn, unsigned reg) {
    out(0xcf8, 0x80000000u | (slot << 11) | (fn << 8) | reg, 4);
    return in(0xcfc, 4);
  }
  std::uint32_t nic_mmio(std::uint32_t reg) {
    std::uint8_t d[4] = {};
    bus_.handle_mmio(kNicMmio + reg, false, 4, d);
    std::uint32_t v;
    std::memcpy(&v, d, 4);
    return v;
  }
  void nic_mmio_write(std::uint32_t reg, std::uint32_t v) {
    std::uint8_t d[4];
    std::memcpy(d, &v, 4);
    bus_.handle_mmio(kNicMmio + reg, true, 4, d);
  }
  void log_bytes(const std::string& s) {
    for (char c : s) out(kVersionPort, static_cast<std::uint8_t>(c), 1);
  }
  bool logged(const std::string& part) const {
    for (const auto& l : log_)
      if (l.find(part) != std::string::npos) return true;
    return false;
  }
  // The drive answers IDENTIFY (it is there) or the channel is empty.
  bool drive_answers() {
    out(kCmd + 6, 0xa0, 1);
    out(kCmd + 7, ata::kCmdIdentify, 1);
    return (in(kCmd + 7, 1) & ata::kStatusDrq) != 0;
  }
  std::vector<std::uint8_t> disk(std::uint64_t offset, std::size_t n) {
    std::vector<std::uint8_t> v(n);
    EXPECT_EQ(::pread(fd_, v.data(), n, static_cast<off_t>(offset)), static_cast<ssize_t>(n));
    return v;
  }

  GuestRam ram_{1 << 20};
  IoBus bus_;
  PciBus pci_;
  std::string path_;
  int fd_ = -1;
  PiixIde* ide_ = nullptr;
  E1000* nic_ = nullptr;
  std::vector<std::unique_ptr<XenPlatform>> owned_;
  XenPlatform* platform_ = nullptr;
  std::vector<std::string> log_;
  std::uint64_t now_ = 1'000'000'000;
  bool ide_irq_ = false, nic_irq_ = false;
  int wires_detached_ = 0;
};

TEST_F(XenPlatformTest, MagicAndVersionAnswerOnlyTheirOwnWidths) {
  EXPECT_EQ(in(kMagicPort, 2), xen_unplug::kMagic);
  EXPECT_EQ(in(kVersionPort, 1), 1u);
  EXPECT_EQ(in(kMagicPort, 4), 0xffffffffu);
  EXPECT_EQ(in(kVersionPort, 2), 0xffffu);
  EXPECT_EQ(in(0x1e, 2), 0xffffu);
  // Writes of other widths and ports mean nothing: no unplug, counted as invalid.
  for (std::uint16_t port = 0x11; port <= 0x1f; ++port)
    for (unsigned size : {1u, 2u, 4u})
      if (port != kVersionPort) out(port, 0xffffffffu, size);
  out(kVersionPort, 0xffffffffu, 4);
  EXPECT_TRUE(ide_->disk_present());
  EXPECT_TRUE(drive_answers());
  EXPECT_EQ(config(kNicSlot, 0, 0) & 0xffff, 0x8086u);
  EXPECT_GT(platform_->counters().invalid_requests, 40u);
  EXPECT_EQ(platform_->stats().unplug_requests, 0u);
}

TEST_F(XenPlatformTest, RegisteredProductAndBuildAreLoggedAndWelcome) {
  out(kVersionPort, 3, 2);  // pvdrivers.h: linux
  out(kMagicPort, 77, 4);
  EXPECT_EQ(in(kMagicPort, 2), xen_unplug::kMagic);
  EXPECT_EQ(platform_->stats().product, 3u);
  EXPECT_EQ(platform_->stats().build, 77u);
  EXPECT_FALSE(platform_->stats().blacklisted);
  EXPECT_TRUE(logged("PV driver product 3 (linux)"));
  EXPECT_TRUE(logged("PV driver build 77"));
}

TEST_F(XenPlatformTest, BlacklistedBuildReadsTheOtherMagicAndItsUnplugIsIgnored) {
  make_platform({{"linux", 77}, {"gplpv-windows", std::nullopt}});
  out(kVersionPort, 3, 2);
  out(kMagicPort, 76, 4);  // another build of the product: fine
  EXPECT_EQ(in(kMagicPort, 2), xen_unplug::kMagic);
  out(kMagicPort, 77, 4);
  EXPECT_EQ(in(kMagicPort, 2), xen_unplug::kMagicBlacklisted);
  out(kMagicPort, xen_unplug::kAllIdeDisks | xen_unplug::kAllNics, 2);
  EXPECT_TRUE(ide_->disk_present());
  EXPECT_TRUE(drive_answers());
  EXPECT_EQ(config(kNicSlot, 0, 0) & 0xffff, 0x8086u);
  EXPECT_EQ(platform_->stats().unplug_refused, 1u);
  EXPECT_TRUE(logged("ignored: the drivers are blacklisted"));
  // Logging stays allowed for blacklisted drivers (the protocol says so).
  log_bytes("still here\n");
  EXPECT_TRUE(logged("guest: still here"));

  // A product listed without a build is refused whatever the build.
  make_platform({{"gplpv-windows", std::nullopt}});
  out(kVersionPort, 2, 2);
  out(kMagicPort, 123456, 4);
  EXPECT_EQ(in(kMagicPort, 2), xen_unplug::kMagicBlacklisted);
}

TEST_F(XenPlatformTest, ProtocolErrorsAreRefusedLikeBlacklistedDrivers) {
  out(kMagicPort, 5, 4);  // build before any product
  EXPECT_EQ(in(kMagicPort, 2), xen_unplug::kMagicBlacklisted);
  out(kMagicPort, xen_unplug::kAllIdeDisks, 2);
  EXPECT_TRUE(ide_->disk_present());
  EXPECT_EQ(platform_->stats().protocol_errors, 1u);

  make_platform({});
  out(kVersionPort, 0x1234, 2);  // not in pvdrivers.h
  EXPECT_EQ(in(kMagicPort, 2), xen_unplug::kMagicBlacklisted);

  make_platform({});
  out(kVersionPort, 0, 2);  // product 0 is no product
  EXPECT_EQ(in(kMagicPort, 2), xen_unplug::kMagicBlacklisted);

  make_platform({});
  out(kVersionPort, 3, 2);
  out(kVersionPort, 3, 2);  // the same product again is fine
  EXPECT_EQ(in(kMagicPort, 2), xen_unplug::kMagic);
  out(kVersionPort, 4, 2);  // another one is not
  EXPECT_EQ(in(kMagicPort, 2), xen_unplug::kMagicBlacklisted);
  out(kMagicPort, xen_unplug::kAllIdeDisks, 2);
  EXPECT_TRUE(ide_->disk_present());
}

TEST_F(XenPlatformTest, LogLinesAreLineBufferedSanitisedSplitAndRateLimited) {
  log_bytes("hello from the drivers\n");
  EXPECT_EQ(log_.back(), "guest: hello from the drivers");
  log_bytes(std::string("a\x01\x7f\xff") + "b\n");
  EXPECT_EQ(log_.back(), "guest: a???b");
  log_bytes(std::string(300, 'x') + "\n");
  ASSERT_GE(log_.size(), 2u);
  EXPECT_EQ(log_[log_.size() - 2], "guest: " + std::string(xen_unplug::kMaxLogLine, 'x'));
  EXPECT_EQ(log_.back(), "guest: " + std::string(300 - xen_unplug::kMaxLogLine, 'x'));
  const std::uint64_t lines = platform_->stats().log_lines;
  EXPECT_EQ(lines, 4u);

  // A burst beyond the bucket is dropped (one notice), and the bucket refills with time.
  log_.clear();
  for (int i = 0; i < 40; ++i) log_bytes("flood\n");
  EXPECT_EQ(platform_->stats().log_lines, xen_unplug::kLogBurst);
  EXPECT_EQ(platform_->stats().log_dropped, 40 - xen_unplug::kLogBurst + lines);
  EXPECT_EQ(std::count(log_.begin(), log_.end(), "guest log rate limit reached; dropping lines"), 1);
  now_ += 10 * xen_unplug::kLogRefillNs;
  for (int i = 0; i < 20; ++i) log_bytes("later\n");
  EXPECT_EQ(std::count(log_.begin(), log_.end(), "guest: later"), 10);
}

TEST_F(XenPlatformTest, IdeUnplugKeepsEveryAcknowledgedWriteAndLeavesAnEmptyChannel) {
  // One whole sector written by PIO (acknowledged), then half of a second one (not).
  std::vector<std::uint8_t> sector(512);
  for (std::size_t i = 0; i < sector.size(); ++i) sector[i] = static_cast<std::uint8_t>(i * 7 + 1);
  out(kCmd + 6, 0x40, 1);
  out(kCmd + 2, 2, 1);
  out(kCmd + 3, 8, 1);
  out(kCmd + 4, 0, 1);
  out(kCmd + 5, 0, 1);
  out(kCmd + 7, ata::kCmdWriteSectors, 1);
  for (std::size_t i = 0; i < 512; i += 4) {
    std::uint32_t w;
    std::memcpy(&w, &sector[i], 4);
    out(kCmd, w, 4);
  }
  for (int i = 0; i < 64; ++i) out(kCmd, 0xdeadbeef, 4);
  EXPECT_NE(in(kCmd + 7, 1) & ata::kStatusDrq, 0u);  // the second sector is still expected

  out(kMagicPort, xen_unplug::kAllIdeDisks, 2);  // no product first: QEMU honours it too
  EXPECT_FALSE(ide_->disk_present());
  EXPECT_EQ(disk(8 * 512, 512), sector);
  EXPECT_EQ(disk(9 * 512, 512), std::vector<std::uint8_t>(512, 0));
  EXPECT_TRUE(logged("drained, flushed and removed"));

  // An empty channel: every register reads 0, commands go nowhere, INTRQ is low.
  for (std::uint16_t r = 1; r < 8; ++r) EXPECT_EQ(in(kCmd + r, 1), 0u) << r;
  EXPECT_EQ(in(kCtl, 1), 0u);
  EXPECT_FALSE(drive_answers());
  out(kCmd + 7, ata::kCmdReadSectors, 1);
  EXPECT_EQ(in(kCmd, 4), 0u);
  EXPECT_FALSE(ide_irq_);
  // The controller function stays: its config space and BMIDE registers answer.
  EXPECT_EQ(config(1, 1, 0), 0x70108086u);
  out(kBm + 4, 0x1000, 4);
  EXPECT_EQ(in(kBm + 4, 4), 0x1000u);
  EXPECT_EQ(config(kNicSlot, 0, 0) & 0xffff, 0x8086u);  // the NIC was not asked for

  // Idempotent: a second request is counted, nothing else happens.
  out(kMagicPort, xen_unplug::kAllIdeDisks, 2);
  EXPECT_EQ(platform_->stats().unplug_requests, 2u);
  EXPECT_EQ(platform_->stats().ide_unplugs, 1u);
}

TEST_F(XenPlatformTest, NicUnplugHidesTheFunctionStopsItsBarsAndLineAndDetachesTheWire) {
  EXPECT_EQ(config(kNicSlot, 0, 0), 0x100e8086u);
  EXPECT_NE(nic_mmio(kNicStatus), 0xffffffffu);
  nic_mmio_write(kNicIms, 1);
  nic_mmio_write(kNicIcs, 1);  // raise a cause: INTx goes up
  EXPECT_TRUE(nic_irq_);
  const std::uint64_t unassigned = bus_.unassigned().mmio_exits;

  out(kMagicPort, xen_unplug::kAllNics, 2);
  EXPECT_EQ(config(kNicSlot, 0, 0), 0xffffffffu);  // an empty slot
  EXPECT_EQ(nic_mmio(kNicStatus), 0xffffffffu);
  EXPECT_EQ(bus_.unassigned().mmio_exits, unassigned + 1);  // nobody decodes BAR0 any more
  EXPECT_EQ(in(0xc040, 4), 0xffffffffu);                     // nor BAR1
  EXPECT_FALSE(nic_irq_);
  EXPECT_TRUE(nic_->is_unplugged());
  std::vector<std::uint8_t> frame(64, 0xff);
  EXPECT_FALSE(nic_->receive(frame));
  EXPECT_EQ(wires_detached_, 1);
  // Config writes cannot bring it back (they reach no function).
  out(0xcf8, 0x80000000u | (kNicSlot << 11) | 0x04, 4);
  out(0xcfc, 7, 4);
  EXPECT_EQ(nic_mmio(kNicStatus), 0xffffffffu);
  EXPECT_TRUE(ide_->disk_present());  // the disk was not asked for

  out(kMagicPort, xen_unplug::kAllNics, 2);
  EXPECT_EQ(platform_->stats().nic_unplugs, 1u);
  EXPECT_EQ(wires_detached_, 1);
}

TEST_F(XenPlatformTest, MasksForDevicesThatAreNotHereTakeNothing) {
  out(kMagicPort, xen_unplug::kAuxIdeDisks | xen_unplug::kNvmeDisks | 0x8000, 2);
  EXPECT_TRUE(ide_->disk_present());
  EXPECT_EQ(config(kNicSlot, 0, 0) & 0xffff, 0x8086u);
  EXPECT_TRUE(logged("no such emulated device here"));
  EXPECT_TRUE(logged("unknown bits 0x8000"));
}

// Untrusted input: any access of any width to the sixteen ports but the unplug write itself
// leaves both emulated devices in place, and nothing crashes.
TEST_F(XenPlatformTest, RandomAccessesOtherThanTheUnplugWriteTouchNoDevice) {
  guest::Rng rng(99);
  for (int i = 0; i < 20000; ++i) {
    const std::uint64_t r = rng.next();
    const auto port = static_cast<std::uint16_t>(0x10 + (r & 0xf));
    const unsigned size = 1u << ((r >> 4) % 3);
    const bool write = (r >> 6) & 1;
    if (write && port == kMagicPort && size == 2) continue;
    if (write) out(port, static_cast<std::uint32_t>(r >> 32), size);
    else (void)in(port, size);
  }
  EXPECT_TRUE(ide_->disk_present());
  EXPECT_TRUE(drive_answers());
  EXPECT_EQ(config(kNicSlot, 0, 0), 0x100e8086u);
  EXPECT_EQ(platform_->stats().unplug_requests, 0u);
}

}  // namespace
}  // namespace pvio::hv
