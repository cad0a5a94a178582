// The PV disk of a user-mode guest exposed through FUSE, end to end with real processes and
// unmodified tools: `pvio up` (pvio-xenstored, pvio-blkback), `pvio create` of a pvio-domain
// running blkfront with --vbd/--fuse, `pvio block-attach`; then mkfs.ext4 + loop mount + fsck,
// fio with its own engines and verification, and pvio-blkback killed with SIGKILL and
// restarted under a running write+verify workload.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/falloc.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <fstream>

#include "harness.h"
#include "pvio/xenstore/client.h"

namespace pvio::blkfront::user::test {
namespace {

constexpr int kDomid = 9;
constexpr std::uint64_t kDiskBytes = 96u << 20;

class FuseDiskTest : public Dom0Test {
 protected:
  FuseDiskTest() : Dom0Test(kDiskBytes) {}
  void SetUp() override {
    Dom0Test::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    std::string out;
    mnt_ = dom0_->dir + "/mnt";
    file_ = mnt_ + "/disk";
    std::filesystem::create_directory(mnt_);
    // `pvio create` starts $PVIO_DOMAIN with the domain's own options; this wrapper adds the
    // PV disk and its FUSE mount point.
    const std::string wrapper = dom0_->dir + "/pvio-domain-with-disk";
    {
      std::ofstream w(wrapper);
      w << "#!/bin/sh\nexec " << env_or_empty("PVIO_DOMAIN") << " \"$@\" --vbd 51712 --fuse "
        << mnt_ << "\n";
    }
    ::chmod(wrapper.c_str(), 0755);
    ASSERT_EQ(run_shell("PVIO_DOMAIN=" + wrapper + " " + dom0_->pvio + " create --domid " +
                     std::to_string(kDomid) + " --memory-mib 64", &out), 0) << out;
    created_ = true;
    ASSERT_EQ(run_shell(dom0_->pvio + " block-attach " + std::to_string(kDomid) + " " + dom0_->disk,
                 &out), 0) << out;
    struct stat st{};
    ASSERT_TRUE(pvio::test::wait_until([&] { return ::stat(file_.c_str(), &st) == 0; }, kWaitMs))
        << "the PV disk never appeared at " << file_ << "\n" << domain_log();
    ASSERT_EQ(static_cast<std::uint64_t>(st.st_size), kDiskBytes);
  }
  void TearDown() override {
    if (!dom0_) return;
    for (const auto& m : mounted_) ::umount2(m.c_str(), MNT_DETACH);
    for (const auto& l : loops_) run_shell("losetup -d " + l);
    ::umount2(mnt_.c_str(), MNT_DETACH);
    if (created_) run_shell(dom0_->pvio + " destroy " + std::to_string(kDomid));
    dom0_.reset();
  }

  std::string domain_log() {
    std::ifstream f(dom0_->dir + "/domain-" + std::to_string(kDomid) + ".log");
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
  std::string fio(const std::string& args, int* rc) {
    std::string out;
    *rc = run_shell("cd " + dom0_->dir + " && fio --name=job --filename=" + file_ + " " + args, &out);
    return out;
  }

  std::string mnt_, file_;
  bool created_ = false;
  std::vector<std::string> mounted_, loops_;
};

// `pvio destroy` without a prior umount: pvio-domain ends its FUSE loop on SIGTERM and
// unmounts, so no dead mount ("Transport endpoint is not connected") is left behind.
TEST_F(FuseDiskTest, DestroyWithoutUmountLeavesNoDeadMount) {
  auto mounted = [&] {
    std::ifstream mi("/proc/self/mountinfo");
    std::string line;
    while (std::getline(mi, line))
      if (line.find(" " + mnt_ + " ") != std::string::npos) return true;
    return false;
  };
  ASSERT_TRUE(mounted());
  std::string out;
  ASSERT_EQ(run_shell(dom0_->pvio + " destroy " + std::to_string(kDomid), &out), 0) << out;
  created_ = false;
  EXPECT_FALSE(mounted()) << "FUSE mount left at " << mnt_ << "\n" << domain_log();
  struct stat st{};
  EXPECT_EQ(::stat(mnt_.c_str(), &st), 0) << std::strerror(errno);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_NE(domain_log().find("vbd 51712 connected"), std::string::npos) << domain_log();
}

TEST_F(FuseDiskTest, Ext4TreeSurvivesUnmountFsckAndRemount) {
  std::string out;
  ASSERT_EQ(run_shell("mkfs.ext4 -q -F " + file_, &out), 0) << out;
  std::string loop;
  if (run_shell("losetup -f --show " + file_, &loop) != 0) GTEST_SKIP() << "no loop device: " << loop;
  loop.erase(loop.find_last_not_of("\n") + 1);
  loops_.push_back(loop);
  const std::string fs = dom0_->dir + "/fs";
  std::filesystem::create_directory(fs);
  ASSERT_EQ(run_shell("mount " + loop + " " + fs, &out), 0) << out;
  mounted_.push_back(fs);
  // A tree of files with verifiable contents: 6 directories x 25 files, 1 byte .. 300 KiB.
  std::mt19937_64 rng(42);
  for (int d = 0; d < 6; ++d) {
    const std::string dir = fs + "/dir" + std::to_string(d) + "/sub";
    std::filesystem::create_directories(dir);
    for (int f = 0; f < 25; ++f) {
      std::vector<std::uint8_t> data(1 + rng() % (300 << 10));
      fill_pattern(data.data(), rng(), data.size(), static_cast<std::uint32_t>(d * 100 + f));
      std::ofstream(dir + "/f" + std::to_string(f), std::ios::binary)
          .write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    }
  }
  const std::string sums = "cd " + fs + " && find . -type f -exec sha256sum {} + | sort";
  std::string before, after;
  ASSERT_EQ(run_shell(sums, &before), 0);
  ASSERT_EQ(std::count(before.begin(), before.end(), '\n'), 150);
  ASSERT_EQ(run_shell("umount " + fs, &out), 0) << out;
  mounted_.clear();
  out.clear();
  EXPECT_EQ(run_shell("fsck.ext4 -f -n " + loop, &out), 0) << out;
  ASSERT_EQ(run_shell("mount " + loop + " " + fs, &out), 0) << out;
  mounted_.push_back(fs);
  ASSERT_EQ(run_shell(sums, &after), 0);
  EXPECT_EQ(before, after);
}

TEST_F(FuseDiskTest, FioPsyncAndLibaioVerify) {
  if (!have_program("fio")) GTEST_SKIP() << "fio is not installed";
  int rc = 0;
  std::string out = fio("--ioengine=psync --rw=randwrite --bs=4k --size=16M --offset=0 "
                        "--verify=crc32c --do_verify=1 --verify_fatal=1", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("err= 0"), std::string::npos) << out;
  out = fio("--ioengine=libaio --direct=1 --iodepth=16 --rw=randwrite --bsrange=4k-128k "
            "--size=32M --offset=32M --verify=md5 --do_verify=1 --verify_fatal=1", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("err= 0"), std::string::npos) << out;
  // And data fio wrote through the PV path is in the backing file where fio put it.
  const auto a = read_file(dom0_->disk, 40u << 20, 1 << 20);
  std::vector<std::uint8_t> b(1 << 20);
  const int fd = ::open(file_.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pread(fd, b.data(), b.size(), 40 << 20), static_cast<ssize_t>(b.size()));
  ::close(fd);
  EXPECT_TRUE(a == b);
}

TEST_F(FuseDiskTest, BackendKill9DuringFioWriteVerifyReachesNoApplication) {
  if (!have_program("fio")) GTEST_SKIP() << "fio is not installed";
  const pid_t old_backend = dom0_->blkback_pid();
  // About 4 s of rate-limited writes, then fio reads everything back and verifies it.
  int rc = -1;
  std::string out;
  std::thread job([&] {
    out = fio("--ioengine=libaio --direct=1 --iodepth=8 --rw=randwrite --bs=64k --size=32M "
              "--rate=8m --verify=crc32c --do_verify=1 --verify_fatal=1", &rc);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  dom0_->kill9_and_restart_blkback();
  job.join();
  EXPECT_NE(dom0_->blkback_pid(), old_backend);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("err= 0"), std::string::npos) << out;
  EXPECT_EQ(out.find("verify:"), std::string::npos) << out;
  EXPECT_NE(domain_log().find("reconnected"), std::string::npos) << domain_log();
}

// Issue 13: restarts must converge. pvio-blkback killed with SIGKILL 20 times under mixed
// verified I/O, on the default grant-table size: every kill leaves the ring and data grants
// busy in the guest, and unless the domain releases them and the frontend ends them, the table
// runs dry after a few restarts and the disk never comes back (fio hangs).
TEST_F(FuseDiskTest, TwentyBackendKillsUnderMixedVerifiedIoConverge) {
  if (!have_program("fio")) GTEST_SKIP() << "fio is not installed";
  constexpr int kKills = 20;
  std::atomic<int> kills{0};
  std::atomic<bool> io_started{false};
  std::vector<std::pair<int, std::string>> runs;
  // fio runs back to back while the backend is being killed; each run checks its own data.
  std::thread io([&] {
    do {
      int rc = -1;
      io_started = true;
      std::string out = fio("--ioengine=libaio --direct=1 --rw=randrw "
                            "--bssplit=512/10:4k/40:16k/25:64k/15:128k/10 --iodepth=16 "
                            "--size=16M --verify=crc32c --verify_fatal=1", &rc);
      runs.emplace_back(rc, std::move(out));
    } while (kills.load() < kKills);
  });
  while (!io_started.load()) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  for (int i = 0; i < kKills; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    const pid_t old_backend = dom0_->blkback_pid();
    dom0_->kill9_and_restart_blkback();
    if (HasFatalFailure()) break;
    ASSERT_NE(dom0_->blkback_pid(), old_backend);
    kills = i + 1;
  }
  kills = kKills;  // let the I/O thread finish even after a failed restart
  io.join();
  ASSERT_FALSE(runs.empty());
  for (const auto& [rc, out] : runs) {
    EXPECT_EQ(rc, 0) << out;
    EXPECT_NE(out.find("err= 0"), std::string::npos) << out;
    EXPECT_EQ(out.find("verify:"), std::string::npos) << out;
  }
  // The disk is still there after the last restart.
  int rc = -1;
  const std::string out = fio("--ioengine=psync --rw=randwrite --bs=4k --size=4M "
                              "--verify=crc32c --verify_fatal=1", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(domain_log().find("reconnected"), std::string::npos) << domain_log();
}

// Issue 13: pvio-xenstored killed with SIGKILL and brought back by `pvio up` loses nothing.
// While it is down, this guest's fio write+verify keeps going (the datapath needs no
// xenstore), pvio-blkback rides through (reconnects and watches again instead of exiting),
// and a second guest, acting over its own ring through pvio-domain's relay, keeps its keys
// and its watch, which fires once after the restart and again on the next change. Debian's
// xenstore-ls shows the same tree before and after.
TEST_F(FuseDiskTest, XenstoredKill9UnderFioAndAWatchingGuestLosesNothing) {
  if (!have_program("fio")) GTEST_SKIP() << "fio is not installed";
  if (!have_program("xenstore-ls")) GTEST_SKIP() << "xenstore-utils is not installed";
  constexpr int kWatcher = 10;
  std::string out;
  ASSERT_EQ(run_shell(dom0_->pvio + " create --domid " + std::to_string(kWatcher) +
                      " --xenstore-relay", &out), 0) << out;
  struct Destroy {
    std::string cmd;
    ~Destroy() { run_shell(cmd); }
  } destroy{dom0_->pvio + " destroy " + std::to_string(kWatcher)};
  const std::string relay = dom0_->dir + "/domain-" + std::to_string(kWatcher) + ".xenstore.sock";
  std::unique_ptr<xs::Client> guest;
  ASSERT_TRUE(pvio::test::wait_until([&] { return (guest = xs::Client::connect(relay)) != nullptr; },
                                     kWaitMs));
  ASSERT_EQ(guest->write("data/a", "1"), xs::XsError::None);
  ASSERT_EQ(guest->write("data/b", "2"), xs::XsError::None);
  ASSERT_EQ(guest->watch("data", "w"), xs::XsError::None);
  auto next_event = [&](int timeout_ms) { return guest->read_watch(timeout_ms); };
  auto first = next_event(kWaitMs);
  ASSERT_TRUE(first && first->path == "data" && first->token == "w");

  const std::string ls = "XENSTORED_PATH=" + dom0_->dir + "/xenstored.sock xenstore-ls -p /";
  std::string before, after;
  ASSERT_EQ(run_shell(ls, &before), 0) << before;
  ASSERT_NE(before.find("state = \"4\""), std::string::npos) << before;  // disk connected

  const pid_t blkback = dom0_->blkback_pid();
  pid_t xenstored = 0;
  {
    std::ifstream f(dom0_->dir + "/xenstored.pid");
    f >> xenstored;
  }
  ASSERT_GT(xenstored, 0);
  int rc = -1;
  std::string fio_out;
  // About 3 s of rate-limited writes, then fio reads everything back and verifies it.
  std::thread job([&] {
    fio_out = fio("--ioengine=libaio --direct=1 --iodepth=8 --rw=randwrite --bs=64k "
                  "--size=24M --rate=8m --verify=crc32c --do_verify=1 --verify_fatal=1", &rc);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  ASSERT_EQ(::kill(xenstored, SIGKILL), 0);
  ASSERT_TRUE(pvio::test::wait_until([&] { return !alive(xenstored); }, kWaitMs));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // down for a while
  const bool up_ok = dom0_->up(&out) == 0;
  job.join();
  ASSERT_TRUE(up_ok) << out;
  EXPECT_EQ(rc, 0) << fio_out;
  EXPECT_NE(fio_out.find("err= 0"), std::string::npos) << fio_out;
  EXPECT_EQ(fio_out.find("verify:"), std::string::npos) << fio_out;

  // The watch fires once after the restart, with its own path.
  auto refired = next_event(kWaitMs);
  ASSERT_TRUE(refired) << "the guest's watch did not fire after the restart";
  EXPECT_EQ(refired->path, "data");
  EXPECT_EQ(refired->token, "w");
  // The guest's keys are there, and its watch goes on firing.
  EXPECT_EQ(guest->read("data/a").value, "1");
  EXPECT_EQ(guest->read("data/b").value, "2");
  ASSERT_EQ(run_shell(ls, &after), 0) << after;
  EXPECT_EQ(before, after);
  ASSERT_EQ(guest->write("data/c", "3"), xs::XsError::None);
  std::optional<xs::WatchEvent> ev;
  do {
    ev = next_event(kWaitMs);
  } while (ev && ev->path != "data/c");
  EXPECT_TRUE(ev) << "no event for data/c after the restart";

  // pvio-blkback rode through the restart (same process, reconnected) and the disk serves.
  EXPECT_EQ(dom0_->blkback_pid(), blkback);
  EXPECT_TRUE(alive(blkback));
  std::ifstream blog(dom0_->dir + "/blkback.log");
  const std::string blkback_log(std::istreambuf_iterator<char>(blog), {});
  EXPECT_NE(blkback_log.find("reconnected"), std::string::npos) << blkback_log;
  const std::string again = fio("--ioengine=psync --rw=randwrite --bs=4k --size=4M "
                                "--verify=crc32c --verify_fatal=1", &rc);
  EXPECT_EQ(rc, 0) << again;
}

TEST_F(FuseDiskTest, FsyncedWriteIsInTheBackingFileWhenTheBackendIsKilledRightAfter) {
  std::vector<std::uint8_t> data(2 << 20);
  fill_pattern(data.data(), 5 << 20, data.size(), 0xD0);
  const int fd = ::open(file_.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::pwrite(fd, data.data(), data.size(), 5 << 20), static_cast<ssize_t>(data.size()));
  ASSERT_EQ(::fsync(fd), 0);
  dom0_->kill9_blkback();
  EXPECT_TRUE(read_file(dom0_->disk, 5 << 20, data.size()) == data);
  ::close(fd);
}

TEST_F(FuseDiskTest, UnalignedWritesAndPunchedHoles) {
  const int fd = ::open(file_.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::vector<std::uint8_t> ones(64 << 10, 0x5A);
  ASSERT_EQ(::pwrite(fd, ones.data(), ones.size(), 1 << 20), static_cast<ssize_t>(ones.size()));
  // 1000 bytes straddling two sectors, 3 bytes inside one.
  std::vector<std::uint8_t> odd(1000);
  fill_pattern(odd.data(), 7, odd.size(), 3);
  ASSERT_EQ(::pwrite(fd, odd.data(), odd.size(), (1 << 20) + 300), 1000);
  ASSERT_EQ(::pwrite(fd, "abc", 3, (1 << 20) + 5000), 3);
  // Punch 10000 bytes from an unaligned start: partial sectors are zeroed, whole ones
  // discarded.
  ASSERT_EQ(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (1 << 20) + 20000, 10000), 0);
  std::vector<std::uint8_t> want = ones;
  std::memcpy(want.data() + 300, odd.data(), odd.size());
  std::memcpy(want.data() + 5000, "abc", 3);
  std::memset(want.data() + 20000, 0, 10000);
  std::vector<std::uint8_t> got(want.size());
  ASSERT_EQ(::pread(fd, got.data(), got.size(), 1 << 20), static_cast<ssize_t>(got.size()));
  EXPECT_TRUE(got == want);
  std::vector<std::uint8_t> small(7);
  ASSERT_EQ(::pread(fd, small.data(), 7, (1 << 20) + 4998), 7);
  EXPECT_EQ(std::memcmp(small.data() + 2, "abc", 3), 0);
  ASSERT_EQ(::fsync(fd), 0);
  ::close(fd);
  EXPECT_TRUE(read_file(dom0_->disk, 1 << 20, want.size()) == want);
  // Writes past the end are refused, reads there are empty.
  const int fd2 = ::open(file_.c_str(), O_RDWR);
  ASSERT_GE(fd2, 0);
  EXPECT_EQ(::pwrite(fd2, "x", 1, static_cast<off_t>(kDiskBytes)), -1);
  EXPECT_EQ(::pread(fd2, small.data(), 7, static_cast<off_t>(kDiskBytes)), 0);
  ::close(fd2);
}

}  // namespace
}  // namespace pvio::blkfront::user::test
