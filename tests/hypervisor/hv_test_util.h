// What the pvio-hv end-to-end tests set up alike: skip without KVM, pvio-hv and the guest
// kernel from meson's environment, a private temp dir removed afterwards.
#pragma once

#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "pvio/hypervisor/vm.h"
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

}  // namespace pvio::hv
