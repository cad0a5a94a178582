// The PV console backend against a console ring page in this process: output to the log and
// to the attached client, client input into in[], and a guest that corrupts its indices.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "pvio/test/temp_dir.h"
#include "pvio/hypervisor/devices/xen_console.h"

namespace pvio::hv {
namespace {

// Whole file as a string ("" if missing).
std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

using xen::xencons_interface;

bool eventually(const std::function<bool()>& pred) {
  for (int i = 0; i < 500 && !pred(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return pred();
}

// The guest's side: append to out[] and move out_prod.
void guest_write(xencons_interface& r, const std::string& s) {
  for (char c : s) r.out[r.out_prod++ & (sizeof(r.out) - 1)] = c;
}

int connect_to(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

class XenConsoleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::make_temp_dir("pvio-console-test");
    ASSERT_FALSE(dir_.empty());
    log_ = dir_ + "/console.log";
    log_fd_ = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ASSERT_GE(log_fd_, 0);
    std::memset(&ring_, 0, sizeof(ring_));
  }
  void TearDown() override {
    console_.reset();
    if (log_fd_ >= 0) ::close(log_fd_);
    std::filesystem::remove_all(dir_);
  }
  void start() {
    console_ = std::make_unique<XenConsole>(&ring_, [this] { ++notifies_; }, log_fd_);
    ASSERT_EQ(console_->start(dir_ + "/console.sock"), 0);
  }

  xencons_interface ring_;
  std::atomic<int> notifies_{0};
  std::unique_ptr<XenConsole> console_;
  std::string dir_, log_;
  int log_fd_ = -1;
};

TEST_F(XenConsoleTest, OutputWrittenBeforeStartAndAfterKickReachesLogAndClient) {
  guest_write(ring_, "early ");  // written before the backend runs, without a notify
  start();
  ASSERT_TRUE(eventually([&] { return slurp(log_) == "early "; })) << slurp(log_);
  const int client = connect_to(dir_ + "/console.sock");
  ASSERT_GE(client, 0);
  ASSERT_TRUE(eventually([&] { return console_->stats().clients == 1; }));
  // Wrap around the 2048-byte out[] ring.
  const std::string big(3000, 'x');
  guest_write(ring_, big.substr(0, 2000));
  console_->kick();
  ASSERT_TRUE(eventually([&] { return ring_.out_cons == ring_.out_prod; }));
  guest_write(ring_, big.substr(2000));
  console_->kick();
  std::string got;
  char buf[4096];
  while (got.size() < big.size()) {
    const ssize_t r = ::read(client, buf, sizeof(buf));
    ASSERT_GT(r, 0);
    got.append(buf, static_cast<std::size_t>(r));
  }
  EXPECT_EQ(got, big);
  ASSERT_TRUE(eventually([&] { return slurp(log_) == "early " + big; }));
  EXPECT_GT(notifies_.load(), 0);  // the guest was told there is room again
  ::close(client);
}

TEST_F(XenConsoleTest, ClientInputGoesIntoTheGuestsInRing) {
  start();
  const int client = connect_to(dir_ + "/console.sock");
  ASSERT_GE(client, 0);
  ASSERT_EQ(::write(client, "ls\r", 3), 3);
  ASSERT_TRUE(eventually([&] { return ring_.in_prod == 3; }));
  EXPECT_EQ(std::string(ring_.in, 3), "ls\r");
  // A full in[] holds the rest until the guest consumes.
  const std::string more(1500, 'k');
  ASSERT_EQ(::write(client, more.data(), more.size()), static_cast<ssize_t>(more.size()));
  ASSERT_TRUE(eventually([&] { return ring_.in_prod == 1024; }));
  ring_.in_cons = 1024;  // the guest read everything
  console_->kick();
  ASSERT_TRUE(eventually([&] { return ring_.in_prod == 1503; }));
  EXPECT_EQ(console_->stats().bytes_in, 1503u);
  ::close(client);
}

TEST_F(XenConsoleTest, CorruptIndicesAreSkippedNotFollowed) {
  start();
  ring_.out_prod = 0x10000;  // far more than a ring ahead of out_cons
  console_->kick();
  ASSERT_TRUE(eventually([&] { return console_->stats().invalid_rings == 1; }));
  EXPECT_EQ(ring_.out_cons, 0x10000u);
  EXPECT_EQ(slurp(log_), "");
  guest_write(ring_, "ok");  // the ring works again
  console_->kick();
  ASSERT_TRUE(eventually([&] { return slurp(log_) == "ok"; }));
}

}  // namespace
}  // namespace pvio::hv
