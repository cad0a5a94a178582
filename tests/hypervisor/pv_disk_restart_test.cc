// The HVM test guest's PV disk outlives its backend: `pvio up` (pvio-xenstored, pvio-blkback)
// in a private run dir, the guest booted by `pvio create --kernel --vbd` running a verified
// random-write workload, and pvio-blkback killed with SIGKILL and started again while the
// guest's I/Os are in flight. The guest's blkfront follows the backend's state (Closing, then
// InitWait from the new process), reconnects, resubmits what was in flight and frees its old
// ring: after every restart its heap is where it was before the first. The same with two vCPUs,
// one queue each. Needs /dev/kvm.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "hv_test_util.h"
#include "pvio/guest/result_line.h"
#include "pvio/hypervisor/vm.h"
#include "pvio/test/child_process.h"
#include "pvio/test/temp_dir.h"
#include "pvio/test/wait_until.h"

namespace pvio::hv {
namespace {

using guest::json_number;
using guest::report_line;
using guest::slurp;

class PvDiskRestartTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!Vm::kvm_available(&why)) GTEST_SKIP() << "KVM is not usable here (" << why << ")";
    const char* pvio = std::getenv("PVIO");
    ASSERT_NE(pvio, nullptr) << "PVIO not set (run via meson test)";
    const char* kernel = std::getenv("PVIO_GUEST");
    ASSERT_NE(kernel, nullptr) << "PVIO_GUEST not set (run via meson test)";
    pvio_ = pvio;
    kernel_ = kernel;
    dir_ = test::make_temp_dir("pvio-pv-disk-restart-test");
    ASSERT_FALSE(dir_.empty());
    run_dir_ = dir_ + "/run";
    std::filesystem::create_directories(run_dir_);
    image_ = dir_ + "/disk.img";
    std::ofstream(image_).close();
    std::filesystem::resize_file(image_, 32u << 20);
    ASSERT_EQ(pvio_cmd({"up", "--no-netback"}), 0) << slurp(dir_ + "/pvio.err");
    domid_ = 600 + ::getpid() % 300;
  }
  void TearDown() override {
    if (dir_.empty()) return;
    if (booted_) pvio_cmd({"destroy", std::to_string(domid_)});
    pvio_cmd({"down"});
    test::remove_temp_dir(dir_);
  }

  int pvio_cmd(const std::vector<std::string>& args) { return run_pvio(pvio_, dir_, run_dir_, args); }
  std::string log() const { return slurp(run_dir_ + "/domain-" + std::to_string(domid_) + ".log"); }
  static std::size_t count(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
  }
  pid_t blkback_pid() const {
    const std::string text = slurp(run_dir_ + "/blkback.pid");
    return static_cast<pid_t>(std::atol(text.c_str()));
  }

  // Boots the guest on `vcpus` vCPUs (one blkif queue each) with a verified random-write
  // workload and kills pvio-blkback `kills` times while its I/Os are in flight, starting it
  // again each time; returns the guest's result line once it has powered off.
  std::string run_through_kills(int kills, unsigned vcpus) {
    EXPECT_EQ(pvio_cmd({"create", "--kernel", kernel_, "--domid", std::to_string(domid_), "--mem", "64M",
                        "--vcpus", std::to_string(vcpus), "--vbd", "51712:" + image_, "--cmdline",
                        // Long enough for every restart on a loaded machine; the guest stops on
                        // its own clock.
                        "mode=workload disk=pv rw=randwrite bs=4096 qd=8 time=20000 verify=1 seed=11"}),
              0)
        << slurp(dir_ + "/pvio.err");
    booted_ = true;
    if (!test::wait_until([&] { return log().find("pv: vbd 51712 connected") != std::string::npos; }, 60000)) {
      ADD_FAILURE() << log();
      return {};
    }
    for (int k = 1; k <= kills; ++k) {
      const pid_t pid = blkback_pid();
      EXPECT_GT(pid, 0);
      if (pid <= 0 || ::kill(pid, SIGKILL) != 0) return {};
      EXPECT_TRUE(test::wait_until([&] { return ::kill(pid, 0) != 0; }, 10000));
      EXPECT_EQ(pvio_cmd({"up", "--no-netback"}), 0) << slurp(dir_ + "/pvio.err");
      if (!test::wait_until(
              [&] { return count(log(), "reconnected, resubmitting") >= static_cast<std::size_t>(k); }, 60000)) {
        ADD_FAILURE() << "restart " << k << " not followed by a reconnect:\n"
                      << log() << "\nblkback:\n"
                      << slurp(run_dir_ + "/blkback.log");
        return {};
      }
    }
    if (!test::wait_until([&] { return log().find("guest powered off") != std::string::npos; }, 120000)) {
      ADD_FAILURE() << log();
      return {};
    }
    const std::string result = report_line(log(), "PVIO-RESULT");
    EXPECT_FALSE(result.empty()) << log();
    return result;
  }

  std::string pvio_, kernel_, dir_, run_dir_, image_;
  int domid_ = 0;
  bool booted_ = false;
};

TEST_F(PvDiskRestartTest, GuestRidesThroughBlkbackKillsWithoutLosingDataOrPages) {
  constexpr int kKills = 3;
  const std::string result = run_through_kills(kKills, 1);
  ASSERT_FALSE(result.empty());
  EXPECT_EQ(json_number(result, "errors"), 0u) << result;
  EXPECT_EQ(json_number(result, "verify_failures"), 0u) << result;
  EXPECT_GT(json_number(result, "verified_blocks"), 0u) << result;
  EXPECT_GE(json_number(result, "reconnects"), static_cast<std::uint64_t>(kKills)) << result;
  // Each reconnect freed its old ring and took the same pages back.
  EXPECT_EQ(json_number(result, "heap_growth"), 0u) << result;
  EXPECT_EQ(json_number(result, "pooled_pages"), 0u) << result;
}

// The same with two vCPUs, each driving its own queue and waiting on its own port: vCPU 0
// follows the backend, the core resubmits each queue's I/Os on the new connection, and every
// queue picks up its new port.
TEST_F(PvDiskRestartTest, TwoQueuesRideThroughBlkbackKills) {
  constexpr int kKills = 2;
  const std::string result = run_through_kills(kKills, 2);
  ASSERT_FALSE(result.empty());
  EXPECT_EQ(json_number(result, "queues"), 2u) << result;
  EXPECT_EQ(json_number(result, "errors"), 0u) << result;
  EXPECT_EQ(json_number(result, "verify_failures"), 0u) << result;
  EXPECT_GT(json_number(result, "verified_blocks"), 0u) << result;
  EXPECT_GE(json_number(result, "reconnects"), static_cast<std::uint64_t>(kKills)) << result;
  // Both queues made progress across the restarts.
  const auto per_queue = result.find("\"queue_ops\":[");
  ASSERT_NE(per_queue, std::string::npos) << result;
  unsigned long q0 = 0, q1 = 0;
  ASSERT_EQ(std::sscanf(result.c_str() + per_queue, "\"queue_ops\":[%lu,%lu]", &q0, &q1), 2) << result;
  EXPECT_GT(q0, 0u) << result;
  EXPECT_GT(q1, 0u) << result;
}

}  // namespace
}  // namespace pvio::hv
