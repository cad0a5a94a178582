// What the pvio-hv end-to-end tests set up alike: skip without KVM, pvio-hv and the guest
// kernel from meson's environment, a private temp dir removed afterwards.
#pragma once

#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "pvio/hypervisor/vm.h"
#include "pvio/test/child_process.h"
#include "pvio/test/temp_dir.h"

namespace pvio::hv {

class HvTest : public ::testing::Test {
 protected:
  // `tag` names the temp dir.
  explicit HvTest(std::string tag) : tag_(std::move(tag)) {}

  // A derived SetUp() calls this first and returns if IsSkipped() or HasFatalFailure().
  void SetUp() override {
    std::string why;
    if (!Vm::kvm_available(&why)) GTEST_SKIP() << "KVM is not usable here (" << why << ")";
    hv_ = std::getenv("PVIO_HV") ? std::getenv("PVIO_HV") : "";
    guest_ = std::getenv("PVIO_GUEST") ? std::getenv("PVIO_GUEST") : "";
    ASSERT_FALSE(hv_.empty() || guest_.empty()) << "PVIO_HV / PVIO_GUEST not set (run via meson test)";
    dir_ = test::make_temp_dir(tag_);
    ASSERT_FALSE(dir_.empty());
  }
  void TearDown() override { test::remove_temp_dir(dir_); }

  std::string hv_, guest_, dir_;

 private:
  std::string tag_;
};

// Runs the pvio CLI `pvio` with `args` against the run dir `run_dir` (PVIO_RUN_DIR), its
// output in `dir`/pvio.out and pvio.err; its exit status, or what wait_exit says after 60 s.
inline int run_pvio(const std::string& pvio, const std::string& dir, const std::string& run_dir,
                    const std::vector<std::string>& args) {
  std::vector<std::string> argv = {pvio};
  argv.insert(argv.end(), args.begin(), args.end());
  return test::wait_exit(test::spawn(argv, dir + "/pvio.out", dir + "/pvio.err", {{"PVIO_RUN_DIR", run_dir}}),
                         60000);
}

}  // namespace pvio::hv
