// The PIIX IDE model driven through the I/O bus exactly as vCPU exits drive it, without KVM:
// task-file commands, PIO and DMA against a temporary backing file, errors, exit counting.
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "guest_ram.h"
#include "pvio/hypervisor/devices/ide.h"
#include "pvio/hypervisor/devices/xen_platform.h"

namespace pvio::hv {
namespace {

using testing::GuestRam;
constexpr std::uint16_t kCmd = 0x1f0, kCtl = 0x3f6, kBm = 0xc000;
constexpr std::uint64_t kDiskBytes = 1 << 20;

class IdeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    path_ = std::string(tmp ? tmp : "/tmp") + "/pvio-ide-XXXXXX";
    fd_ = ::mkstemp(path_.data());
    ASSERT_GE(fd_, 0);
    ASSERT_EQ(::ftruncate(fd_, kDiskBytes), 0);
    auto ide = std::make_unique<PiixIde>(ram_.memory, fd_, kDiskBytes,
                                         [this](unsigned gsi, bool level) {
                                           irq_gsi_ = gsi;
                                           irq_level_ = level;
                                           if (level) ++irq_raised_;
                                         });
    ide_ = ide.get();
    ASSERT_TRUE(ide->attach_legacy(&bus_));
    bus_.map_pio(0xcf8, 8, &pci_, 0);
    ASSERT_TRUE(pci_.add(1, 1, std::move(ide), &bus_));
  }
  void TearDown() override {
    ::close(fd_);
    ::unlink(path_.c_str());
  }

  void out(std::uint16_t port, std::uint32_t v, unsigned size = 1) {
    std::uint8_t d[4];
    std::memcpy(d, &v, 4);
    bus_.handle_pio(port, true, size, 1, d);
  }
  std::uint32_t in(std::uint16_t port, unsigned size = 1) {
    std::uint8_t d[4] = {};
    bus_.handle_pio(port, false, size, 1, d);
    std::uint32_t v = 0;
    std::memcpy(&v, d, size);
    return v;
  }
  void rep_in(std::uint16_t port, void* dst, std::uint32_t dwords) {
    bus_.handle_pio(port, false, 4, dwords, static_cast<std::uint8_t*>(dst));
  }
  void rep_out(std::uint16_t port, const void* src, std::uint32_t dwords) {
    std::vector<std::uint8_t> tmp(static_cast<const std::uint8_t*>(src),
                                  static_cast<const std::uint8_t*>(src) + 4 * dwords);
    bus_.handle_pio(port, true, 4, dwords, tmp.data());
  }
  void task_file48(std::uint64_t lba, std::uint32_t count, std::uint8_t command) {
    out(kCmd + 6, 0x40);
    out(kCmd + 2, count >> 8);
    out(kCmd + 3, static_cast<std::uint8_t>(lba >> 24));
    out(kCmd + 4, static_cast<std::uint8_t>(lba >> 32));
    out(kCmd + 5, static_cast<std::uint8_t>(lba >> 40));
    out(kCmd + 2, count & 0xff);
    out(kCmd + 3, lba & 0xff);
    out(kCmd + 4, (lba >> 8) & 0xff);
    out(kCmd + 5, (lba >> 16) & 0xff);
    out(kCmd + 7, command);
  }
  // Guest-style DMA: PRD at `prd`, direction, command, start.
  void dma(bool read, std::uint64_t lba, std::uint32_t count, std::uint32_t prd) {
    out(kBm, 0);
    out(kBm + 2, 0x06);
    out(kBm + 4, prd, 4);
    out(kBm, read ? 0x08 : 0x00);
    task_file48(lba, count, read ? ata::kCmdReadDmaExt : ata::kCmdWriteDmaExt);
    out(kBm, (read ? 0x08 : 0x00) | 1);
  }
  std::vector<std::uint8_t> file_bytes(std::uint64_t off, std::size_t n) {
    std::vector<std::uint8_t> v(n);
    EXPECT_EQ(::pread(fd_, v.data(), n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
    return v;
  }

  GuestRam ram_{1 << 20};
  IoBus bus_;
  PciBus pci_;
  PiixIde* ide_ = nullptr;
  std::string path_;
  int fd_ = -1;
  unsigned irq_gsi_ = 0, irq_raised_ = 0;
  bool irq_level_ = false;
};

TEST_F(IdeTest, PciFunctionIdentifiesAsPiix3IdeWithBar4) {
  out(0xcf8, 0x80000000u | (1 << 11) | (1 << 8) | 0x00, 4);
  EXPECT_EQ(in(0xcfc, 4), 0x70108086u);
  out(0xcf8, 0x80000000u | (1 << 11) | (1 << 8) | 0x08, 4);
  EXPECT_EQ(in(0xcfc, 4) >> 8, 0x010180u);
  out(0xcf8, 0x80000000u | (1 << 11) | (1 << 8) | 0x20, 4);
  EXPECT_EQ(in(0xcfc, 4), kBm | 1u);
  // BAR sizing: all ones reads back the 16-byte size mask.
  out(0xcfc, 0xffffffffu, 4);
  EXPECT_EQ(in(0xcfc, 4), 0xfff1u);
  out(0xcfc, kBm, 4);
  EXPECT_EQ(in(0xcfc, 4), kBm | 1u);
}

TEST_F(IdeTest, IdentifyReportsCapacityAndLba48) {
  out(kCmd + 6, 0xa0);
  out(kCmd + 7, ata::kCmdIdentify);
  const std::uint8_t st = static_cast<std::uint8_t>(in(kCmd + 7));
  EXPECT_TRUE(st & ata::kStatusDrq);
  EXPECT_FALSE(st & ata::kStatusErr);
  std::uint16_t w[256];
  rep_in(kCmd, w, 128);
  EXPECT_EQ(w[0], 0x0040);
  EXPECT_TRUE(w[83] & (1 << 10));
  EXPECT_EQ(w[100] | (std::uint32_t{w[101]} << 16), kDiskBytes / 512);
  EXPECT_EQ(w[27], ('P' << 8) | 'V');  // byte-swapped ATA string "PVIO ..."
  EXPECT_FALSE(in(kCmd + 7) & ata::kStatusDrq);
}

TEST_F(IdeTest, PioWriteLandsInFileAndReadsBack) {
  std::vector<std::uint8_t> data(1024);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 7 + 3);
  task_file48(100, 2, ata::kCmdWriteSectorsExt);
  for (int s = 0; s < 2; ++s) {
    ASSERT_TRUE(in(kCmd + 7) & ata::kStatusDrq);
    rep_out(kCmd, data.data() + 512 * s, 128);
  }
  EXPECT_EQ(in(kCmd + 7) & (ata::kStatusDrq | ata::kStatusErr), 0u);
  EXPECT_EQ(file_bytes(100 * 512, 1024), data);

  task_file48(100, 2, ata::kCmdReadSectorsExt);
  std::vector<std::uint8_t> back(1024);
  for (int s = 0; s < 2; ++s) {
    ASSERT_TRUE(in(kCmd + 7) & ata::kStatusDrq);
    rep_in(kCmd, back.data() + 512 * s, 128);
  }
  EXPECT_EQ(back, data);
  EXPECT_EQ(irq_gsi_, kIdePrimaryIrq);
  EXPECT_GT(irq_raised_, 0u);
}

TEST_F(IdeTest, DmaReadScattersFileIntoGuestMemoryAndWriteGathersBack) {
  std::vector<std::uint8_t> data(4096);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i ^ 0xa5);
  ASSERT_EQ(::pwrite(fd_, data.data(), data.size(), 8 * 512), 4096);
  ram_.put_prd(0x1000, 0, 0x20000, 1024);
  ram_.put_prd(0x1000, 1, 0x30000, bmide::kPrdEot | 3072);
  dma(true, 8, 8, 0x1000);
  EXPECT_EQ(in(kBm + 2) & (bmide::kStatusActive | bmide::kStatusError | bmide::kStatusIrq),
            bmide::kStatusIrq);
  EXPECT_EQ(in(kCmd + 7) & ata::kStatusErr, 0u);
  EXPECT_EQ(std::memcmp(ram_.base + 0x20000, data.data(), 1024), 0);
  EXPECT_EQ(std::memcmp(ram_.base + 0x30000, data.data() + 1024, 3072), 0);

  std::memset(ram_.base + 0x20000, 0x3c, 1024);
  dma(false, 40, 2, 0x1000);  // two sectors from the same two buffers
  EXPECT_EQ(in(kBm + 2) & bmide::kStatusError, 0u);
  std::vector<std::uint8_t> want(ram_.base + 0x20000, ram_.base + 0x20400);
  EXPECT_EQ(file_bytes(40 * 512, 1024), want);
}

TEST_F(IdeTest, DmaWithPrdOutsideGuestRamFailsWithErrorStatusAndTouchesNothing) {
  ram_.put_prd(0x1000, 0, 0xfff00000u, bmide::kPrdEot | 4096);
  const auto before = file_bytes(0, 4096);
  dma(false, 0, 8, 0x1000);
  EXPECT_TRUE(in(kBm + 2) & bmide::kStatusError);
  EXPECT_FALSE(in(kBm + 2) & bmide::kStatusActive);
  const std::uint32_t st = in(kCmd + 7);
  EXPECT_TRUE(st & ata::kStatusErr);
  EXPECT_TRUE(in(kCmd + 1) & ata::kErrorAbrt);
  EXPECT_EQ(file_bytes(0, 4096), before);
  EXPECT_EQ(ide_->counters().invalid_requests, 1u);

  // The table register pointing outside RAM fails the same way; the device stays usable.
  dma(true, 0, 8, 0xfffff000u);
  EXPECT_TRUE(in(kBm + 2) & bmide::kStatusError);
  ram_.put_prd(0x1000, 0, 0x20000, bmide::kPrdEot | 4096);
  dma(true, 0, 8, 0x1000);
  EXPECT_FALSE(in(kBm + 2) & bmide::kStatusError);
  EXPECT_FALSE(in(kCmd + 7) & ata::kStatusErr);
}

TEST_F(IdeTest, OutOfRangeLbaDirectionMismatchAndUnknownCommandAbort) {
  task_file48(kDiskBytes / 512 - 1, 2, ata::kCmdReadSectorsExt);
  EXPECT_TRUE(in(kCmd + 7) & ata::kStatusErr);
  EXPECT_TRUE(in(kCmd + 1) & ata::kErrorIdnf);

  ram_.put_prd(0x1000, 0, 0x20000, bmide::kPrdEot | 4096);
  out(kBm + 4, 0x1000, 4);
  out(kBm, 0x00);  // bus master set to read from memory...
  task_file48(0, 8, ata::kCmdReadDmaExt);  // ...but the command reads the disk
  out(kBm, 0x01);
  EXPECT_TRUE(in(kBm + 2) & bmide::kStatusError);
  EXPECT_TRUE(in(kCmd + 7) & ata::kStatusErr);

  out(kCmd + 7, 0x42);  // not implemented
  EXPECT_TRUE(in(kCmd + 7) & ata::kStatusErr);
  EXPECT_EQ(in(kCmd + 1), ata::kErrorAbrt);
  EXPECT_EQ(ide_->counters().invalid_requests, 3u);
}

TEST_F(IdeTest, EveryRegisterAccessIsOneCountedExit) {
  const std::uint64_t before = ide_->counters().pio_exits;
  in(kCmd + 7);
  in(kCtl);
  out(kBm + 2, 0x06);
  std::uint32_t buf[128];
  rep_in(kCmd, buf, 128);  // one string-I/O exit, however many dwords
  EXPECT_EQ(ide_->counters().pio_exits - before, 4u);
  in(0x170);  // secondary channel: not decoded
  EXPECT_EQ(bus_.unassigned().pio_exits, 1u);
}

TEST_F(IdeTest, MovingBar4RemapsBusMasterPortsButNeverOntoAnotherDevice) {
  const std::uint32_t bar4 = 0x80000000u | (1 << 11) | (1 << 8) | 0x20;
  out(0xcf8, bar4, 4);
  out(0xcfc, 0xd000, 4);
  out(0xd000 + 4, 0x1234, 4);
  EXPECT_EQ(in(0xd000 + 4, 4), 0x1234u);
  EXPECT_EQ(in(kBm + 4, 4), 0xffffffffu);  // old range no longer decoded
  out(0xcf8, bar4, 4);
  out(0xcfc, 0x1f0, 4);  // onto the legacy command block: refused, left undecoded
  EXPECT_EQ(in(kCmd + 7) & ata::kStatusDrdy, ata::kStatusDrdy);
  out(0xcf8, bar4, 4);
  out(0xcfc, kBm, 4);
  EXPECT_EQ(in(kBm + 4, 4), 0x1234u);
}

TEST(PciBus, XenPlatformDeviceIsVisibleAtItsSlot) {
  IoBus bus;
  PciBus pci;
  bus.map_pio(0xcf8, 8, &pci, 0);
  pci.add(2, 0, std::make_unique<XenPlatform>(XenPlatform::Targets{}, nullptr, nullptr), &bus);
  std::uint8_t d[4];
  auto rd = [&](std::uint32_t addr) {
    std::memcpy(d, &addr, 4);
    bus.handle_pio(0xcf8, true, 4, 1, d);
    bus.handle_pio(0xcfc, false, 4, 1, d);
    std::uint32_t v;
    std::memcpy(&v, d, 4);
    return v;
  };
  EXPECT_EQ(rd(0x80000000u | (2 << 11)), 0x00015853u);
  EXPECT_EQ(rd(0x80000000u | (2 << 11) | 0x08) >> 16, 0xff80u);
  EXPECT_EQ(rd(0x80000000u | (3 << 11)), 0xffffffffu);  // empty slot
}

}  // namespace
}  // namespace pvio::hv
