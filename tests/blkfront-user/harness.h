// Shared set-up of the user-mode PV disk tests: the real Dom0 services (pvio-xenstored,
// pvio-blkback, started with `pvio up`) in a private run dir, and small process helpers.
// Programs come from $PVIO, $PVIO_XENSTORED, $PVIO_BLKBACK, $PVIO_DOMAIN (set by meson).
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pvio/test/child_process.h"
#include "pvio/test/temp_dir.h"
#include "pvio/test/wait_until.h"

namespace pvio::blkfront::user::test {

inline std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// Why the environment cannot run these tests, or "" if it can.
inline std::string missing_prerequisite() {
  if (::geteuid() != 0) return "needs root (FUSE mounts with allow_other, loop devices)";
  if (::access("/dev/fuse", R_OK | W_OK) != 0) return "needs /dev/fuse";
  for (const char* v : {"PVIO", "PVIO_XENSTORED", "PVIO_BLKBACK", "PVIO_DOMAIN"})
    if (env_or_empty(v).empty()) return std::string("$") + v + " not set (run through meson test)";
  return "";
}

using pvio::test::run_shell;

inline bool have_program(const std::string& name) {
  return run_shell("command -v " + name + " >/dev/null") == 0;
}

// Running (not gone, not a zombie waiting for a parent that may never reap it).
inline bool alive(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return false;
  const auto rp = line.rfind(')');
  return rp != std::string::npos && rp + 2 < line.size() && line[rp + 2] != 'Z';
}

// How long a test waits for the services or the guest to get somewhere.
inline constexpr int kWaitMs = 20000;

inline std::vector<std::uint8_t> read_file(const std::string& path, std::uint64_t off,
                                           std::size_t len) {
  std::vector<std::uint8_t> v(len);
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return {};
  const ssize_t n = ::pread(fd, v.data(), len, static_cast<off_t>(off));
  ::close(fd);
  if (n != static_cast<ssize_t>(len)) return {};
  return v;
}

// A verifiable pattern: every 8 bytes hold (tag, offset) so misplaced data shows up.
inline void fill_pattern(std::uint8_t* p, std::uint64_t offset, std::size_t len,
                         std::uint32_t tag) {
  for (std::size_t i = 0; i < len; i += 8) {
    const std::uint64_t v = (std::uint64_t{tag} << 40) ^ (offset + i);
    std::memcpy(p + i, &v, std::min<std::size_t>(8, len - i));
  }
}

// The Dom0 side: a run dir, pvio-xenstored and pvio-blkback, a backing file.
class Dom0 {
 public:
  explicit Dom0(std::uint64_t disk_bytes) {
    dir = pvio::test::make_temp_dir("pvio-blkfront-user");
    if (dir.empty()) throw std::runtime_error("mkdtemp");
    ::setenv("PVIO_RUN_DIR", dir.c_str(), 1);
    ::unsetenv("XENSTORED_PATH");
    disk = dir + "/disk.img";
    { std::ofstream create(disk); }
    std::filesystem::resize_file(disk, disk_bytes);
    pvio = env_or_empty("PVIO");
  }
  ~Dom0() {
    run_shell(pvio + " down");
    pvio::test::remove_temp_dir(dir);
  }
  int up(std::string* out = nullptr) { return run_shell(pvio + " up", out); }
  pid_t blkback_pid() const {
    std::ifstream f(dir + "/blkback.pid");
    long pid = 0;
    f >> pid;
    return static_cast<pid_t>(pid);
  }
  // kill -9 of the backend service, then a fresh one (as an init system would restart it).
  void kill9_and_restart_blkback() {
    const pid_t pid = blkback_pid();
    ASSERT_GT(pid, 0);
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_TRUE(pvio::test::wait_until([&] { return !alive(pid); }, kWaitMs));
    std::string out;
    ASSERT_EQ(up(&out), 0) << out;
  }
  void kill9_blkback() {
    const pid_t pid = blkback_pid();
    ASSERT_GT(pid, 0);
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_TRUE(pvio::test::wait_until([&] { return !alive(pid); }, kWaitMs));
  }

  std::string dir;
  std::string disk;
  std::string pvio;
};

// Both suites start alike: skip unless the environment can run them, then `pvio up` in a
// fresh Dom0 with a backing file of disk_bytes. A derived SetUp() calls this first and
// returns if IsSkipped() or HasFatalFailure().
class Dom0Test : public ::testing::Test {
 protected:
  explicit Dom0Test(std::uint64_t disk_bytes) : disk_bytes_(disk_bytes) {}
  void SetUp() override {
    if (const std::string why = missing_prerequisite(); !why.empty()) GTEST_SKIP() << why;
    dom0_ = std::make_unique<Dom0>(disk_bytes_);
    std::string out;
    ASSERT_EQ(dom0_->up(&out), 0) << out;
  }

  std::unique_ptr<Dom0> dom0_;

 private:
  std::uint64_t disk_bytes_;
};

}  // namespace pvio::blkfront::user::test
