// blkback I/O engines on a real block device: a loop device over a temp file gives size and
// sector-size detection through the block ioctls, and BLKDISCARD that punches the backing file.
// Needs root (loop devices); skips otherwise.
#include <linux/loop.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cstdio>

#include "engine_test.h"

namespace pvio::blkback::test {
namespace {

constexpr std::uint64_t kSize = 32 << 20;

// A loop device bound to a temp file for the life of the object.
class LoopDevice {
 public:
  // Returns an empty string on success, or why there is no loop device.
  std::string attach(const std::string& backing, unsigned block_size) {
    if (::geteuid() != 0) return "loop devices need root";
    const int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0) return std::string("cannot open /dev/loop-control: ") + std::strerror(errno);
    const int bfd = ::open(backing.c_str(), O_RDWR | O_CLOEXEC);
    std::string why = "no free loop device";
    for (int tries = 0; tries < 8 && fd_ < 0 && bfd >= 0; ++tries) {
      const int n = ::ioctl(ctl, LOOP_CTL_GET_FREE);
      if (n < 0) {
        why = std::string("LOOP_CTL_GET_FREE: ") + std::strerror(errno);
        break;
      }
      path_ = "/dev/loop" + std::to_string(n);
      const int lfd = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
      if (lfd < 0) {
        why = "cannot open " + path_ + ": " + std::strerror(errno);
        break;
      }
      if (::ioctl(lfd, LOOP_SET_FD, bfd) == 0) {
        fd_ = lfd;
        break;
      }
      ::close(lfd);  // taken by someone else meanwhile: ask again
    }
    if (bfd >= 0) ::close(bfd);
    ::close(ctl);
    if (fd_ < 0) return why;
    loop_info64 info{};
    info.lo_flags = LO_FLAGS_AUTOCLEAR;  // detach even if this process dies
    std::snprintf(reinterpret_cast<char*>(info.lo_file_name), sizeof info.lo_file_name, "%s",
                  backing.c_str());
    if (::ioctl(fd_, LOOP_SET_STATUS64, &info) != 0)
      return std::string("LOOP_SET_STATUS64: ") + std::strerror(errno);
    if (block_size != 512 && ::ioctl(fd_, LOOP_SET_BLOCK_SIZE, block_size) != 0)
      return std::string("LOOP_SET_BLOCK_SIZE: ") + std::strerror(errno);
    return {};
  }
  ~LoopDevice() {
    if (fd_ >= 0) {
      ::ioctl(fd_, LOOP_CLR_FD, 0);
      ::close(fd_);
    }
  }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
};

class LoopDeviceTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    file_ = std::make_unique<TempFile>(kSize);
    data_.resize(kSize);
    for (std::uint64_t i = 0; i < kSize; ++i) data_[i] = pattern(i, 5);
    file_->write_all(0, data_);
  }
  std::string engine() const { return GetParam(); }
  std::unique_ptr<IoEngine> open(const LoopDevice& dev) {
    return make_engine(engine(), BackingOptions{dev.path(), false, DirectIo::Auto});
  }

  std::unique_ptr<TempFile> file_;
  std::vector<std::uint8_t> data_;
};

TEST_P(LoopDeviceTest, DetectsSizeAndSectorSizes) {
  LoopDevice dev;
  if (auto why = dev.attach(file_->path(), 512); !why.empty()) GTEST_SKIP() << why;
  auto e = open(dev);
  const BackingInfo& info = e->backing();
  EXPECT_TRUE(info.block_device);
  EXPECT_EQ(info.size_bytes, kSize);
  EXPECT_EQ(info.logical_sector_size, 512u);
  EXPECT_GE(info.physical_sector_size, 512u);
  EXPECT_TRUE(info.discard_supported) << "loop over a hole-punching file system";
  EXPECT_GE(info.discard_granularity, 512u);
  EXPECT_TRUE(info.direct_io);
}

TEST_P(LoopDeviceTest, BlkdiscardZeroesRangeAndFreesBackingBlocks) {
  if (engine() == "null") GTEST_SKIP() << "the null engine does no I/O";
  LoopDevice dev;
  if (auto why = dev.attach(file_->path(), 512); !why.empty()) GTEST_SKIP() << why;
  auto e = open(dev);
  ASSERT_TRUE(e->backing().discard_supported);
  const std::int64_t blocks_before = file_->blocks();
  constexpr std::uint64_t kOff = 4 << 20, kLen = 8 << 20;
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Discard, kOff, nullptr, 0, kLen, 1}), 0);
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Flush, 0, nullptr, 0, 0, 2}), 0);
  // The hole frees the range's blocks; punching it in the middle of an extent may cost the file
  // system a block or so of extent tree (seen: one 4 KiB block on ext4), so allow 64 KiB.
  constexpr std::int64_t kMetadataSlack = (64 << 10) / 512;
  EXPECT_LE(file_->blocks(), blocks_before - static_cast<std::int64_t>(kLen / 512) + kMetadataSlack)
      << "backing file kept its blocks";
  AlignedBuf buf(kLen + 8192, 0xEE);
  iovec v{buf.data(), kLen + 8192};
  ASSERT_EQ(run_one(*e, IoRequest{IoOp::Read, kOff - 4096, &v, 1, 0, 3}),
            static_cast<std::int64_t>(kLen + 8192));
  EXPECT_EQ(std::memcmp(buf.data(), data_.data() + kOff - 4096, 4096), 0);
  EXPECT_TRUE(
      std::all_of(buf.data() + 4096, buf.data() + 4096 + kLen, [](auto b) { return b == 0; }));
  EXPECT_EQ(std::memcmp(buf.data() + 4096 + kLen, data_.data() + kOff + kLen, 4096), 0);
  if (engine() == "uring") {
    EXPECT_EQ(e->stats().sync_ops, 1u) << "BLKDISCARD is the sync path";
  }
}

TEST_P(LoopDeviceTest, FourKSectorDeviceRejectsSubSectorDirectIo) {
  LoopDevice dev;
  if (auto why = dev.attach(file_->path(), 4096); !why.empty()) GTEST_SKIP() << why;
  auto e = open(dev);
  EXPECT_EQ(e->backing().logical_sector_size, 4096u);
  EXPECT_EQ(e->backing().size_bytes, kSize);
  ASSERT_TRUE(e->backing().direct_io);
  AlignedBuf buf(8192, 0);
  iovec v{buf.data(), 4096};
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Read, 512, &v, 1, 0, 1}), -EINVAL);
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Read, 8192, &v, 1, 0, 2}), 4096);
  if (engine() != "null") {
    EXPECT_EQ(std::memcmp(buf.data(), data_.data() + 8192, 4096), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Engines, LoopDeviceTest, ::testing::Values("uring", "aio", "sync", "null"),
                         [](const auto& info) { return std::string(info.param); });

}  // namespace
}  // namespace pvio::blkback::test
