// The Xen HVM interface end to end: the test guest boots on pvio-hv and drives the hypercalls;
// a Dom0 side in this process attaches over the domain control protocol, binds the guest's
// ports and exchanges events through the doorbell ioeventfd and the upcall irqfd, and serves
// xenstore on the ring page the VMM published.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "hv_test_util.h"
#include "pvio/control/client.h"
#include "pvio/guest/result_line.h"
#include "pvio/hypervisor/xen_hvm.h"
#include "pvio/test/child_process.h"
#include "pvio/xenstore/ring_transport.h"
#include "pvio/xenstore/server.h"

namespace pvio::hv {
namespace {

using guest::report_field;
using guest::slurp;

class XenTest : public HvTest {
 protected:
  XenTest() : HvTest("pvio-xen-test") {}
  void SetUp() override {
    HvTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    log_ = dir_ + "/serial.log";
    err_ = dir_ + "/stderr.txt";
    sock_ = dir_ + "/domain-1.sock";
  }
  void TearDown() override {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    HvTest::TearDown();
  }

  void start(const std::string& cmdline) {
    std::vector<std::string> args = {hv_, "--kernel", guest_, "--mem", "64M", "--cmdline",
                                     cmdline, "--serial-log", log_, "--domid", "1",
                                     "--control-socket", sock_};
    pid_ = test::spawn(args, "", err_);
    ASSERT_GE(pid_, 0);
  }
  // Exit status of pvio-hv; a generous limit only guards against a hung guest.
  int wait_exit() {
    const int rc = test::wait_exit(pid_, 120000);
    if (rc < 0) {
      ADD_FAILURE() << "pvio-hv did not finish";
      return -1;
    }
    pid_ = -1;
    return rc;
  }
  int run(const std::string& cmdline) {
    start(cmdline);
    return wait_exit();
  }
  // Polls the serial log for a line starting with `prefix`; returns the line.
  std::string wait_line(const std::string& prefix) {
    for (int i = 0; i < 600; ++i) {
      const std::string log = slurp(log_);
      if (auto p = log.find(prefix); p != std::string::npos)
        return log.substr(p, log.find('\n', p) - p);
      ::usleep(50000);
    }
    return "";
  }
  std::unique_ptr<control::ControlClient> attach() {
    std::unique_ptr<control::ControlClient> c;
    for (int i = 0; i < 200; ++i) {
      if (control::ControlClient::attach(sock_, 1, &c) == 0) return c;
      ::usleep(50000);
    }
    return nullptr;
  }

  std::string log_, err_, sock_;
  pid_t pid_ = -1;
};

TEST_F(XenTest, EveryHypercallGoodAndBadArguments) {
  ASSERT_EQ(run("mode=hypercalls"), 0) << slurp(log_) << slurp(err_);
  const std::string log = slurp(log_), err = slurp(err_);
  EXPECT_EQ(report_field(log, "PVIO-RESULT", "failed"), 0) << log;
  EXPECT_GE(report_field(log, "PVIO-RESULT", "checks"), 80);
  EXPECT_EQ(log.find("PVIO-CHECK FAIL"), std::string::npos) << log;
  // console_io reaches the serial log; SCHEDOP_shutdown powered the domain off cleanly.
  EXPECT_NE(log.find("PVIO-CONSOLE-IO hello through console_io"), std::string::npos);
  EXPECT_NE(err.find("guest powered off (code 0)"), std::string::npos) << err;
  EXPECT_EQ(report_field(err, "PVIO-HV-STATS", "msr_writes"), 1);
  EXPECT_GE(report_field(err, "PVIO-HV-STATS", "faults"), 7);
  // Loopback sends and the unmask re-raise arrived as upcalls through the irqfd.
  EXPECT_GE(report_field(log, "PVIO-RESULT", "upcalls"), 2);
}

TEST_F(XenTest, ProbeFindsLeavesHypercallPageAndParams) {
  ASSERT_EQ(run("mode=xen-probe"), 0) << slurp(log_) << slurp(err_);
  const std::string log = slurp(log_);
  EXPECT_EQ(report_field(log, "PVIO-RESULT", "xen"), 1);
  EXPECT_EQ(report_field(log, "PVIO-RESULT", "version"), (hv::kXenVersionMajor << 16) | hv::kXenVersionMinor);
  EXPECT_EQ(report_field(log, "PVIO-RESULT", "hypercall_msr"), hv::kHypercallMsr);
  EXPECT_EQ(report_field(log, "PVIO-RESULT", "store_pfn"), (kXenPagesGpa >> 12) + kXenStorePage);
  EXPECT_EQ(report_field(log, "PVIO-RESULT", "console_pfn"), (kXenPagesGpa >> 12) + kXenConsolePage);
  EXPECT_GT(report_field(log, "PVIO-RESULT", "store_evtchn"), 0);
  EXPECT_EQ(report_field(log, "PVIO-RESULT", "grant_frames"), 4);
  EXPECT_EQ(report_field(log, "PVIO-RESULT", "max_grant_frames"), kMaxGrantFrames);
  EXPECT_EQ(report_field(log, "PVIO-RESULT", "upcall_vector"), 0xf3);
}

TEST_F(XenTest, HostileHypercallsLeaveTheVmmServing) {
  ASSERT_EQ(run("mode=hostile-xen count=1500 seed=11"), 0) << slurp(err_);
  const std::string log = slurp(log_), err = slurp(err_);
  EXPECT_EQ(report_field(log, "PVIO-RESULT {\"mode\":\"hostile-xen\"", "alive_after"), 1) << log;
  EXPECT_GE(report_field(err, "PVIO-HV-STATS", "hypercalls"), 1500);
  EXPECT_GT(report_field(err, "PVIO-HV-STATS", "hypercall_errors"), 0);
  EXPECT_GT(report_field(err, "PVIO-HV-STATS", "faults"), 0);
  EXPECT_EQ(err.find("crashed"), std::string::npos) << err;
}

TEST_F(XenTest, Dom0ServiceExchangesEventsThroughIoeventfdAndIrqfd) {
  constexpr int kRounds = 16;
  start("mode=evtchn count=" + std::to_string(kRounds));
  const std::string line = wait_line("PVIO-EVTCHN port=");
  ASSERT_FALSE(line.empty()) << slurp(log_) << slurp(err_);
  const auto guest_port = static_cast<evtchn_port_t>(std::atoi(line.c_str() + 17));
  std::unique_ptr<control::ControlClient> c = attach();
  ASSERT_NE(c, nullptr);
  evtchn_port_t local = 0;
  ASSERT_EQ(c->bind_interdomain(guest_port, &local), 0);
  const int kick = c->kick_fd(local);
  ASSERT_GE(kick, 0);
  // Binding raises our new port once (Xen does the same), before any guest send.
  pollfd p{kick, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 10000), 1);
  std::uint64_t v = 0;
  ASSERT_EQ(::read(kick, &v, sizeof(v)), static_cast<ssize_t>(sizeof(v)));

  std::uint64_t kicks = 0;
  for (int i = 0; i < kRounds; ++i) {
    ASSERT_EQ(c->notify(local), 0);  // pending bit in shared_info + the irqfd
    ASSERT_EQ(::poll(&p, 1, 10000), 1) << "no doorbell after notify " << i;
    ASSERT_EQ(::read(kick, &v, sizeof(v)), static_cast<ssize_t>(sizeof(v)));
    kicks += v;
  }
  EXPECT_EQ(kicks, static_cast<std::uint64_t>(kRounds));
  ASSERT_EQ(wait_exit(), 0) << slurp(err_);
  const std::string log = slurp(log_), err = slurp(err_);
  EXPECT_EQ(report_field(log, "PVIO-RESULT", "received"), kRounds);
  EXPECT_EQ(report_field(log, "PVIO-RESULT", "sent"), kRounds);
  // Every guest send went through the ioeventfd: none exited to the VMM.
  EXPECT_EQ(report_field(err, "PVIO-HV-STATS", "doorbell_exits"), 0) << err;
}

// A Dom0 xenstore connection that only collects replies.
class Dom0Conn final : public xs::Connection {
 public:
  void send(std::string_view m) override { replies.emplace_back(m); }
  std::size_t pending_output() const override { return 0; }
  std::vector<std::string> replies;
};

class HvConnector final : public xs::DomainConnector {
 public:
  explicit HvConnector(control::ControlClient& c, evtchn_port_t local) : c_(c), local_(local) {}
  std::unique_ptr<xs::RingTransport> connect(domid_t domid, uint64_t gfn,
                                             evtchn_port_t) override {
    auto* page = reinterpret_cast<xs::xenstore_domain_interface*>(c_.memory().frame(gfn));
    if (domid != c_.domid() || page == nullptr) return nullptr;
    return std::make_unique<xs::RingTransport>(page, [this] { c_.notify(local_); });
  }

 private:
  control::ControlClient& c_;
  evtchn_port_t local_;
};

TEST_F(XenTest, GuestTalksToXenstoreOnTheRingPageTheVmmPublished) {
  start("mode=xen-probe xenstore=1");
  std::unique_ptr<control::ControlClient> c = attach();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->xenstore_gfn(), (kXenPagesGpa >> 12) + kXenStorePage);
  evtchn_port_t local = 0;
  ASSERT_EQ(c->bind_interdomain(c->xenstore_port(), &local), 0);

  xs::Server server;
  HvConnector connector(*c, local);
  server.set_domain_connector(&connector);
  Dom0Conn dom0;
  const xs::ConnId id = server.attach(0, &dom0);
  auto req = [&](xs::MsgType t, const std::string& payload) {
    xs::xsd_sockmsg h{static_cast<uint32_t>(t), 1, 0, static_cast<uint32_t>(payload.size())};
    server.handle(id, h, std::span<const char>(payload.data(), payload.size()));
  };
  using namespace std::string_literals;
  // As the toolstack does: the guest's home, owned by the guest, then its domid node.
  req(xs::MsgType::XS_MKDIR, "/local/domain/1\0"s);
  req(xs::MsgType::XS_SET_PERMS, "/local/domain/1\0"s + "n1\0"s);
  req(xs::MsgType::XS_WRITE, "/local/domain/1/domid\0"s + "1");
  req(xs::MsgType::XS_INTRODUCE,
      "1\0"s + std::to_string(c->xenstore_gfn()) + "\0"s + std::to_string(c->xenstore_port()) + "\0"s);
  xs::RingTransport* t = server.domain_transport(1);
  ASSERT_NE(t, nullptr);

  // Serve the ring until the guest is done.
  const int kick = c->kick_fd(local);
  int status = 0;
  for (int i = 0; i < 600; ++i) {
    pollfd p{kick, POLLIN, 0};
    if (::poll(&p, 1, 100) == 1) {
      std::uint64_t v;
      (void)!::read(kick, &v, sizeof(v));
      t->on_kick();
    }
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      break;
    }
  }
  ASSERT_EQ(pid_, -1) << "guest did not finish: " << slurp(log_);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << slurp(err_);
  const std::string log = slurp(log_);
  EXPECT_EQ(report_field(log, "PVIO-RESULT", "xenstore_domid"), 1) << log;
  EXPECT_EQ(report_field(log, "PVIO-RESULT", "xenstore_roundtrip"), 1) << log;
  // The guest's write is in the store, under its home.
  dom0.replies.clear();
  req(xs::MsgType::XS_READ, "/local/domain/1/data/probe\0"s);
  ASSERT_EQ(dom0.replies.size(), 1u);
  EXPECT_NE(dom0.replies[0].find("hello-from-hvm"), std::string::npos);
}

}  // namespace
}  // namespace pvio::hv
