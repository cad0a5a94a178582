// Two user-mode guests' PV NICs end to end, with real programs: `pvio up`, two
// `pvio create --vif MAC` domains whose netfront appears as a TAP; each TAP is moved into a
// network namespace of its own, given an address, and the Linux stack runs ping, iperf3 and
// socat over ring + grants + event channels. Two backends: pvio-netback (NetbackTest: also
// killed with SIGKILL under a TCP stream and restarted; the stream completes), and the
// test's own two-port cable (CableTest, cable.h), which also carries GSO to the receiving
// guest. Needs root, /dev/net/tun, ip, ping, iperf3, socat, ethtool, sha256sum; skips
// without them. Namespaces are the test's own and are removed.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>

#include "../blkfront-user/harness.h"
#include "cable.h"

namespace pvio::netfront::user::test {
namespace {

using blkfront::user::test::alive;
using blkfront::user::test::Dom0;
using blkfront::user::test::env_or_empty;
using blkfront::user::test::have_program;
using pvio::test::run_shell;
using blkfront::user::test::kWaitMs;

struct Guest {
  int domid;
  std::string mac, tap, ns, ip;
};

std::string missing_prerequisite(bool netback) {
  if (::geteuid() != 0) return "needs root (network namespaces, TAP devices)";
  if (::access("/dev/net/tun", R_OK | W_OK) != 0) return "needs /dev/net/tun";
  if (netback && env_or_empty("PVIO_NETBACK").empty())
    return "$PVIO_NETBACK not set: this build has no pvio-netback";
  for (const char* v : {"PVIO", "PVIO_XENSTORED", "PVIO_DOMAIN"})
    if (env_or_empty(v).empty()) return std::string("$") + v + " not set (run through meson test)";
  for (const char* p : {"ip", "ping", "iperf3", "socat", "sha256sum", "ethtool"})
    if (!have_program(p)) return std::string("needs ") + p;
  if (run_shell("ip netns add pvio-nf-probe-" + std::to_string(::getpid())) != 0)
    return "cannot create network namespaces";
  run_shell("ip netns del pvio-nf-probe-" + std::to_string(::getpid()));
  return "";
}

// One Dom0 and one pair of guests per test suite (setting them up costs seconds); each test
// starts from MTU 1500 with offloads on.
struct World {
  std::unique_ptr<Dom0> dom0;
  std::unique_ptr<xs::Client> xs;
  std::unique_ptr<Cable> cable;
  Guest g[2];
  std::vector<int> created;
  std::vector<std::string> namespaces;
  bool ready = false;

  ~World() {
    if (!dom0) return;
    if (cable) cable->unplug(*xs);
    cable.reset();
    xs.reset();
    for (const auto& ns : namespaces) run_shell("ip netns pids " + ns + " | xargs -r kill -9");
    for (int d : created) run_shell(dom0->pvio + " destroy " + std::to_string(d));
    for (const auto& ns : namespaces) run_shell("ip netns del " + ns);
  }
};

class NetTest : public ::testing::Test {
 protected:
  virtual bool with_netback() const = 0;
  static void TearDownTestSuite() {
    for (auto& w : worlds_) w.reset();
  }
  void SetUp() override {
    if (const std::string why = missing_prerequisite(with_netback()); !why.empty())
      GTEST_SKIP() << why;
    auto& w = worlds_[with_netback() ? 1 : 0];
    if (!w) {
      w = std::make_unique<World>();
      dom0_ = nullptr;
      build(*w);
      if (HasFatalFailure()) return;
      w->ready = true;
    }
    ASSERT_TRUE(w->ready) << "the suite's set-up failed in an earlier test";
    dom0_ = w->dom0.get();
    xs_ = w->xs.get();
    cable_ = w->cable.get();
    g_ = w->g;
    set_mtu(1500);
    set_gso(true);
    for (int i = 0; i < 2; ++i)
      ASSERT_TRUE(pvio::test::wait_until([&] { return carrier(g_[i]); }, kWaitMs))
          << g_[i].tap << " has no carrier\n" << log(g_[i]) << netback_log();
  }

  void build(World& w) {
    w.dom0 = std::make_unique<Dom0>(1 << 20);
    dom0_ = w.dom0.get();
    g_ = w.g;
    std::string out;
    // The cable is the only backend of its tests: no pvio-netback to claim the vifs.
    ASSERT_EQ(run_shell(dom0_->pvio + (with_netback() ? " up" : " up --no-netback"), &out), 0) << out;
    const std::string tag = std::to_string(::getpid() % 100000) + (with_netback() ? "n" : "c");
    g_[0] = {31, "00:16:3e:4e:00:31", "pvnt" + tag + "a", "pvio-nf-" + tag + "-a", "10.231.0.1"};
    g_[1] = {32, "00:16:3e:4e:00:32", "pvnt" + tag + "b", "pvio-nf-" + tag + "-b", "10.231.0.2"};
    for (int i = 0; i < 2; ++i) {
      Guest& g = g_[i];
      ASSERT_EQ(run_shell(dom0_->pvio + " create --domid " + std::to_string(g.domid) +
                       " --memory-mib 32 --vif " + g.mac + " --tap " + g.tap, &out), 0) << out;
      w.created.push_back(g.domid);
      ASSERT_TRUE(pvio::test::wait_until([&] { return run_shell("ip link show " + g.tap + " >/dev/null") == 0; }, kWaitMs))
          << "TAP " << g.tap << " never appeared\n" << log(g);
      ASSERT_EQ(run_shell("ip netns add " + g.ns), 0);
      w.namespaces.push_back(g.ns);
      ASSERT_EQ(run_shell("ip link set " + g.tap + " netns " + g.ns), 0);
      ASSERT_EQ(run_shell(in(g, "ip link set lo up") + " && " + in(g, "ip addr add " + g.ip + "/24 dev " + g.tap) +
                   " && " + in(g, "ip link set " + g.tap + " up"), &out), 0) << out;
    }
    if (!with_netback()) {
      w.xs = xs::Client::connect(dom0_->dir + "/xenstored.sock");
      ASSERT_TRUE(w.xs);
      w.cable = std::make_unique<Cable>();
      const std::string why = w.cable->plug(dom0_->dir, *w.xs, g_[0].domid, g_[1].domid);
      ASSERT_EQ(why, "") << log(g_[0]) << log(g_[1]);
    }
  }

  static std::string in(const Guest& g, const std::string& cmd) {
    return "ip netns exec " + g.ns + " " + cmd;
  }
  bool carrier(const Guest& g) {
    std::string out;
    return run_shell(in(g, "cat /sys/class/net/" + g.tap + "/carrier"), &out) == 0 && out.starts_with("1");
  }
  std::string log(const Guest& g) {
    std::ifstream f(dom0_->dir + "/domain-" + std::to_string(g.domid) + ".log");
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
  std::string netback_log() {
    std::ifstream f(dom0_->dir + "/netback.log");
    return std::string(std::istreambuf_iterator<char>(f), {});
  }
  pid_t netback_pid() const {
    std::ifstream f(dom0_->dir + "/netback.pid");
    long pid = 0;
    f >> pid;
    return static_cast<pid_t>(pid);
  }
  void set_mtu(int mtu) {
    for (int i = 0; i < 2; ++i)
      ASSERT_EQ(run_shell(in(g_[i], "ip link set " + g_[i].tap + " mtu " + std::to_string(mtu))), 0);
  }
  void set_gso(bool on) {
    const std::string v = on ? "on" : "off";
    for (int i = 0; i < 2; ++i)
      ASSERT_EQ(run_shell(in(g_[i], "ethtool -K " + g_[i].tap + " tso " + v + " gso " + v)), 0);
  }
  // iperf3 between the guests: server in b, client in a; the client's JSON.
  std::string iperf3(const std::string& client_args, int* rc) {
    const std::string pidf = dom0_->dir + "/iperf3-server.pid";
    EXPECT_EQ(run_shell(in(g_[1], "iperf3 -s -1 -D -B " + g_[1].ip + " -I " + pidf)), 0);
    std::string out;
    for (int i = 0; i < 100; ++i) {  // the server daemonises before it listens
      out.clear();
      *rc = run_shell(in(g_[0], "iperf3 -J -c " + g_[1].ip + " " + client_args), &out);
      if (*rc == 0 || out.find("Connection refused") == std::string::npos) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return out;
  }
  static double json_number(const std::string& json, const std::string& section,
                            const std::string& key) {
    // The run's totals, in the "end" object (every interval has a "sum" of its own, and an
    // "end" time).
    auto end = json.find("\"end\":");
    while (end != std::string::npos) {  // the "end": { ... } object, not an interval's "end": t
      const auto brace = json.find_first_not_of(" \t\r\n", end + 6);
      if (brace != std::string::npos && json[brace] == '{') break;
      end = json.find("\"end\":", end + 6);
    }
    if (end == std::string::npos) return -1;
    const auto s = json.find("\"" + section + "\"", end);
    if (s == std::string::npos) return -1;
    const std::string tag = "\"" + key + "\":";
    const auto k = json.find(tag, s);
    if (k == std::string::npos) return -1;
    const char* num = json.c_str() + k + tag.size();
    char* stop = nullptr;
    const double v = std::strtod(num, &stop);  // strtod skips the blanks before the number
    return stop == num ? -1 : v;
  }

  // ---- what both backends are put through ----
  void ping_both_ways() {
    std::string out;
    EXPECT_EQ(run_shell(in(g_[0], "ping -c 3 -i 0.2 -W 2 " + g_[1].ip), &out), 0) << out;
    EXPECT_EQ(run_shell(in(g_[1], "ping -c 3 -i 0.2 -W 2 " + g_[0].ip), &out), 0) << out;
    // The guests learned each other's vif MACs: the frames went through with their own.
    EXPECT_EQ(run_shell(in(g_[0], "ip neigh show " + g_[1].ip + " | grep -q " + g_[1].mac)), 0);
  }
  void jumbo_ping() {
    set_mtu(9000);
    std::string out;
    // 8972 bytes of ICMP payload: a 9014-byte frame, unfragmented (three slots each way).
    EXPECT_EQ(run_shell(in(g_[0], "ping -M do -s 8972 -c 3 -i 0.2 -W 2 " + g_[1].ip), &out), 0) << out;
    EXPECT_EQ(run_shell(in(g_[1], "ping -M do -s 8972 -c 3 -i 0.2 -W 2 " + g_[0].ip), &out), 0) << out;
  }
  // gso: the guests' TSO/GSO on or off (ethtool). TSO reaches the ring only when the backend
  // offers feature-gso-tcpv4/v6; otherwise the guest's kernel segments before the TAP.
  void iperf3_tcp(bool gso) {
    set_gso(gso);
    int rc = 0;
    const std::string out = iperf3("-t 3", &rc);
    ASSERT_EQ(rc, 0) << out << netback_log();
    const double sent = json_number(out, "sum_sent", "bytes");
    const double received = json_number(out, "sum_received", "bytes");
    EXPECT_GT(received, 10e6) << out;
    EXPECT_GE(sent, received);
    std::printf("iperf3 TCP gso=%s: %.0f Mbit/s\n", gso ? "on" : "off",
                json_number(out, "sum_received", "bits_per_second") / 1e6);
  }
  void iperf3_udp() {
    int rc = 0;
    const std::string out = iperf3("-u -b 100M -l 1400 -t 3", &rc);
    ASSERT_EQ(rc, 0) << out;
    const double packets = json_number(out, "sum", "packets");
    const double lost = json_number(out, "sum", "lost_packets");
    // Datagrams arrive; how many the sender's TAP queue drops depends on the machine's load,
    // so only a path that loses nearly everything fails.
    EXPECT_GT(packets - lost, 1000) << out;
    std::printf("iperf3 UDP: %.0f packets, %.0f lost\n", packets, lost);
  }
  void file_over_tcp() {
    const std::string src = dom0_->dir + "/send.bin", dst = dom0_->dir + "/recv.bin";
    ASSERT_EQ(run_shell("head -c 96M /dev/urandom > " + src), 0);
    const std::string server = in(g_[1], "socat -u TCP-LISTEN:5555,bind=" + g_[1].ip +
                                             ",reuseaddr OPEN:" + dst + ",creat,trunc");
    ASSERT_EQ(run_shell("(" + server + " >/dev/null 2>&1 &) ; true"), 0);
    std::string out;
    int rc = 1;
    for (int i = 0; i < 100 && rc != 0; ++i) {
      out.clear();
      rc = run_shell(in(g_[0], "socat -u OPEN:" + src + " TCP:" + g_[1].ip + ":5555"), &out);
      if (rc != 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_EQ(rc, 0) << out;
    std::string a, b;
    EXPECT_TRUE(pvio::test::wait_until([&] {
      a.clear();
      b.clear();
      run_shell("sha256sum < " + src, &a);
      run_shell("sha256sum < " + dst, &b);
      return a == b;
    }, 20000)) << a << " vs " << b;
  }

  static std::unique_ptr<World> worlds_[2];  // [0] cable, [1] pvio-netback
  Dom0* dom0_ = nullptr;
  xs::Client* xs_ = nullptr;
  Cable* cable_ = nullptr;
  Guest* g_ = nullptr;
};
std::unique_ptr<World> NetTest::worlds_[2];

class NetbackTest : public NetTest {
  bool with_netback() const override { return true; }
};
class CableTest : public NetTest {
  bool with_netback() const override { return false; }
};

TEST_F(NetbackTest, PingBothWays) { ping_both_ways(); }
TEST_F(NetbackTest, JumboFramesTakeSeveralSlots) { jumbo_ping(); }
TEST_F(NetbackTest, Iperf3TcpWithGso) { iperf3_tcp(true); }
TEST_F(NetbackTest, Iperf3TcpWithoutGso) { iperf3_tcp(false); }
TEST_F(NetbackTest, Iperf3Udp) { iperf3_udp(); }
TEST_F(NetbackTest, FileOverTcpArrivesIntact) { file_over_tcp(); }

TEST_F(CableTest, PingBothWays) { ping_both_ways(); }
TEST_F(CableTest, JumboFramesTakeSeveralSlots) { jumbo_ping(); }
TEST_F(CableTest, Iperf3TcpWithGso) {
  iperf3_tcp(true);
  // TSO frames crossed the rings as GSO packets, to the receiver too (rx GSO extra).
  EXPECT_GT(cable_->gso_forwarded(), 0u);
}
TEST_F(CableTest, Iperf3TcpWithoutGso) {
  const std::uint64_t before = cable_->gso_forwarded();
  iperf3_tcp(false);
  EXPECT_EQ(cable_->gso_forwarded(), before);
}
TEST_F(CableTest, Iperf3Udp) { iperf3_udp(); }
TEST_F(CableTest, FileOverTcpArrivesIntact) { file_over_tcp(); }

TEST_F(NetbackTest, KilledDuringTcpStreamAndRestarted) {
  const std::string pidf = dom0_->dir + "/iperf3-server.pid";
  ASSERT_EQ(run_shell(in(g_[1], "iperf3 -s -1 -D -B " + g_[1].ip + " -I " + pidf)), 0);
  const std::string json = dom0_->dir + "/iperf3-client.json";
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(run_shell("(" + in(g_[0], "iperf3 -J -c " + g_[1].ip + " -t 8 > " + json) +
               "; echo $? > " + json + ".rc.tmp; mv " + json + ".rc.tmp " + json + ".rc) >/dev/null 2>&1 &"), 0);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  const pid_t pid = netback_pid();
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(pvio::test::wait_until([&] { return !alive(pid); }, kWaitMs));
  // Nothing tells the frontends (the backend's state still reads Connected, as after a crash
  // in Xen); the restarted backend finds them Connected and closes them for a reconnect.
  std::string out;
  ASSERT_EQ(dom0_->up(&out), 0) << out;
  for (int i = 0; i < 2; ++i) {
    const Guest& g = g_[i];
    ASSERT_TRUE(pvio::test::wait_until([&] { return log(g).find("reconnected") != std::string::npos; }, kWaitMs))
        << log(g) << netback_log();
    ASSERT_TRUE(pvio::test::wait_until([&] { return carrier(g); }, kWaitMs)) << log(g) << netback_log();
  }
  ASSERT_TRUE(pvio::test::wait_until([&] { return std::filesystem::exists(json + ".rc"); }, 60000));
  std::ifstream rcf(json + ".rc");
  int rc = -1;
  rcf >> rc;
  std::ifstream jf(json);
  const std::string res(std::istreambuf_iterator<char>(jf), {});
  EXPECT_EQ(rc, 0) << res;
  EXPECT_GT(json_number(res, "sum_received", "bytes"), 10e6) << res;
}

// Issue 13: restarts must converge for the network too. pvio-netback killed with SIGKILL 20
// times while TCP streams run back to back between the guests: every kill leaves both vifs'
// ring and packet grants busy, and unless the frontends end them the grant tables run dry
// and a vif never comes back. Each restart must bring both guests back (one more
// "reconnected" each), every stream must end without error, and a file sent afterwards
// arrives intact.
TEST_F(NetbackTest, TwentyKillsUnderTcpStreamsConverge) {
  constexpr int kKills = 20;
  const std::string pidf = dom0_->dir + "/iperf3-chaos.pid";
  ASSERT_EQ(run_shell(in(g_[1], "iperf3 -s -D -B " + g_[1].ip + " -I " + pidf)), 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::atomic<bool> stop{false};
  std::vector<std::pair<int, std::string>> runs;
  std::thread traffic([&] {
    do {
      std::string out;
      const int rc = run_shell(in(g_[0], "iperf3 -J -c " + g_[1].ip + " -t 3 --connect-timeout 20000"), &out);
      runs.emplace_back(rc, std::move(out));
    } while (!stop.load());
  });
  auto reconnects = [&](const Guest& g) {
    const std::string l = log(g);
    std::size_t n = 0;
    for (std::size_t at = l.find("reconnected"); at != std::string::npos; at = l.find("reconnected", at + 1)) ++n;
    return n;
  };
  const std::size_t base[2] = {reconnects(g_[0]), reconnects(g_[1])};
  for (int i = 0; i < kKills && !HasFatalFailure(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
    const pid_t pid = netback_pid();
    ASSERT_GT(pid, 0);
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    ASSERT_TRUE(pvio::test::wait_until([&] { return !alive(pid); }, kWaitMs));
    std::string out;
    ASSERT_EQ(dom0_->up(&out), 0) << out;
    ASSERT_NE(netback_pid(), pid);
    for (int k = 0; k < 2; ++k) {
      const Guest& g = g_[k];
      ASSERT_TRUE(pvio::test::wait_until([&] { return reconnects(g) >= base[k] + i + 1; }, kWaitMs))
          << "kill " << i + 1 << ": " << g.tap << " did not reconnect\n" << log(g) << netback_log();
      ASSERT_TRUE(pvio::test::wait_until([&] { return carrier(g); }, kWaitMs)) << log(g) << netback_log();
    }
  }
  stop = true;
  traffic.join();
  run_shell("kill $(cat " + pidf + ")");
  ASSERT_FALSE(runs.empty());
  double received = 0;
  for (const auto& [rc, out] : runs) {
    EXPECT_EQ(rc, 0) << out;
    received += json_number(out, "sum_received", "bytes");
  }
  EXPECT_GT(received, 10e6);
  std::printf("%d netback kills: %zu TCP streams, %.0f MB received, all ended without error\n", kKills,
              runs.size(), received / 1e6);
  // Both vifs still carry data, byte for byte.
  file_over_tcp();
}

// xl's device removal and a new attach of the same vif.
TEST_F(NetbackTest, NetworkDetachAndAttachAgain) {
  std::string out;
  const std::string d = std::to_string(g_[0].domid);
  ASSERT_EQ(run_shell(dom0_->pvio + " network-detach " + d + " " + g_[0].mac, &out), 0)
      << out << log(g_[0]) << netback_log();
  EXPECT_TRUE(pvio::test::wait_until([&] { return !carrier(g_[0]); }, kWaitMs)) << log(g_[0]);
  EXPECT_NE(run_shell(in(g_[0], "ping -c 1 -W 1 " + g_[1].ip)), 0);
  EXPECT_NE(run_shell(dom0_->pvio + " network-detach " + d + " 0", &out), 0);  // already gone
  // The same vif attached again: the frontend, Closed, connects to the new backend.
  ASSERT_EQ(run_shell(dom0_->pvio + " network-attach " + d + " mac=" + g_[0].mac + " devid=0", &out), 0)
      << out;
  ASSERT_TRUE(pvio::test::wait_until([&] { return carrier(g_[0]); }, kWaitMs)) << log(g_[0]) << netback_log();
  EXPECT_EQ(run_shell(in(g_[0], "ping -c 3 -i 0.2 -W 2 " + g_[1].ip), &out), 0) << out;
}


}  // namespace
}  // namespace pvio::netfront::user::test
