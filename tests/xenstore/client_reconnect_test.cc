// xs::Client across a restart of a real pvio-xenstored process (killed with SIGKILL): with
// reconnection on it gets the same tree back, its watch fires again, a request in the
// transaction that died with the connection answers EAGAIN; with no daemon coming back it
// gives up within its budget and then fails at once.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "pvio/test/temp_dir.h"
#include "pvio/test/wait_until.h"
#include "pvio/xenstore/client.h"

namespace pvio::xs::test {
namespace {

class ClientReconnect : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* daemon = std::getenv("PVIO_XENSTORED");
    if (daemon == nullptr) GTEST_SKIP() << "PVIO_XENSTORED not set; run through meson test";
    daemon_ = daemon;
    dir_ = pvio::test::make_temp_dir("pvio-xs-reconnect");
    ASSERT_FALSE(dir_.empty());
    sock_ = dir_ + "/xenstored.sock";
    start();
  }
  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    pvio::test::remove_temp_dir(dir_);
  }
  void start() {
    pid_ = ::fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      ::execl(daemon_.c_str(), daemon_.c_str(), "--socket", sock_.c_str(), "--foreground",
              "--log-level", "warn", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ASSERT_TRUE(pvio::test::wait_until([&] { return Client::connect(sock_) != nullptr; }, 5000));
  }
  void kill9() {
    ASSERT_EQ(::kill(pid_, SIGKILL), 0);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  std::string daemon_, dir_, sock_;
  pid_t pid_ = -1;
};

TEST_F(ClientReconnect, KilledDaemonIsRiddenThroughWithTreeWatchAndTransaction) {
  auto c = Client::connect(sock_);
  ASSERT_TRUE(c);
  c->enable_reconnect({.first_delay_ms = 10, .max_delay_ms = 100, .give_up_ms = 10000});
  ASSERT_EQ(c->write("/app/a", "1"), XsError::None);
  ASSERT_EQ(c->watch("/app", "tok"), XsError::None);
  auto ev = c->read_watch(5000);
  ASSERT_TRUE(ev && ev->path == "/app");
  auto tx = c->transaction_start();
  ASSERT_TRUE(tx.ok());
  ASSERT_EQ(c->write("/app/in-tx", "x", tx.value), XsError::None);

  kill9();
  start();

  // The transaction died with the old connection: its next request says so.
  EXPECT_EQ(c->write("/app/in-tx", "y", tx.value), XsError::Again);
  EXPECT_EQ(c->reconnects(), 1u);
  // The watch was registered again and fired once.
  ev = c->read_watch(5000);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->path, "/app");
  EXPECT_EQ(ev->token, "tok");
  // The tree came back from the journal; the transaction's write never committed.
  EXPECT_EQ(c->read("/app/a").value, "1");
  EXPECT_EQ(c->read("/app/in-tx").error, XsError::NoEnt);
  ASSERT_EQ(c->write("/app/b", "2"), XsError::None);
  ev = c->read_watch(5000);
  ASSERT_TRUE(ev);
  EXPECT_EQ(ev->path, "/app/b");
  EXPECT_TRUE(c->connected());
}

TEST_F(ClientReconnect, NoDaemonComingBackGivesUpWithinTheBudget) {
  auto c = Client::connect(sock_);
  ASSERT_TRUE(c);
  c->enable_reconnect({.first_delay_ms = 10, .max_delay_ms = 50, .give_up_ms = 200});
  ASSERT_EQ(c->write("/k", "v"), XsError::None);
  kill9();
  EXPECT_EQ(c->read("/k").error, XsError::Io);
  EXPECT_FALSE(c->connected());
  EXPECT_EQ(c->read("/k").error, XsError::Io);  // lost for good: no second wait
  EXPECT_FALSE(c->read_watch(0).has_value());
}

// Without reconnection (the default) a lost daemon is final, as before.
TEST_F(ClientReconnect, WithoutReconnectionALostDaemonIsFinal) {
  auto c = Client::connect(sock_);
  ASSERT_TRUE(c);
  kill9();
  start();
  EXPECT_EQ(c->read("/").error, XsError::Io);
  EXPECT_FALSE(c->connected());
}

}  // namespace
}  // namespace pvio::xs::test
