// Integration harness: a private run dir, the `pvio` CLI run as a real process, and xenstore
// clients both as Dom0 (pvio-xenstored's socket) and as a guest (the guest's own ring,
// reached through pvio-domain's --xenstore-relay socket).
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <string>
#include <thread>

#include "pvio/test/child_process.h"
#include "pvio/test/temp_dir.h"
#include "pvio/xenstore/client.h"

namespace pvio::integration {

struct CmdResult {
  int status = -1;
  std::string out;  // stdout and stderr
};

inline std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return (v != nullptr && *v != '\0') ? v : fallback;
}

class Toolstack : public ::testing::Test {
 protected:
  void SetUp() override {
    pvio_ = env_or("PVIO", "");
    if (pvio_.empty()) GTEST_SKIP() << "PVIO (path of the pvio CLI) is not set; run under meson test";
    // Every daemon the CLI starts ends up ours to reap, so none lingers as a zombie.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    dir_ = test::make_temp_dir("pvio-it");
    ASSERT_FALSE(dir_.empty());
    ::setenv("PVIO_RUN_DIR", dir_.c_str(), 1);
    ::unsetenv("XENSTORED_PATH");
  }

  void TearDown() override {
    if (dir_.empty()) return;
    for (domid_t d : domains_) pvio("destroy " + std::to_string(d));
    pvio("down");
    reap();
    test::remove_temp_dir(dir_);
  }

  static void reap() {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
  }

  // Runs `pvio <args>` through the shell (args are quoted by the caller where needed).
  CmdResult pvio(const std::string& args) {
    const CmdResult r = shell(pvio_ + " " + args);
    reap();
    return r;
  }

  static CmdResult shell(const std::string& cmd) {
    CmdResult r;
    r.status = test::run_shell(cmd, &r.out);
    return r;
  }

  void up(bool blkback = false) {
    const CmdResult r = pvio(blkback ? "up" : "up --no-blkback");
    ASSERT_EQ(r.status, 0) << r.out;
  }

  void create(domid_t d, const std::string& name) {
    const CmdResult r = pvio("create --domid " + std::to_string(d) + " --name " + name +
                       " --xenstore-relay");
    ASSERT_EQ(r.status, 0) << r.out;
    domains_.insert(d);
  }

  std::string xenstored_socket() const { return dir_ + "/xenstored.sock"; }
  std::string relay_socket(domid_t d) const {
    return dir_ + "/domain-" + std::to_string(d) + ".xenstore.sock";
  }
  std::unique_ptr<xs::Client> dom0() { return xs::Client::connect(xenstored_socket()); }
  // A xenstore client that is domain `d` itself, over its ring.
  std::unique_ptr<xs::Client> guest(domid_t d) { return xs::Client::connect(relay_socket(d)); }

  pid_t domain_pid(domid_t d) const {
    std::ifstream f(dir_ + "/domain-" + std::to_string(d) + ".pid");
    long v = 0;
    f >> v;
    return static_cast<pid_t>(v);
  }

  // Waits for a watch event whose path is `path`, skipping others.
  static bool wait_event(xs::Client& c, const std::string& path, int timeout_ms = 5000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      auto ev = c.read_watch(static_cast<int>(left.count()) + 1);
      if (ev && ev->path == path) return true;
    }
    return false;
  }

  std::string pvio_;
  std::string dir_;
  std::set<domid_t> domains_;
};

}  // namespace pvio::integration
