// The PV NIC of the HVM test guest end to end, with real processes: pvio-xenstored and
// pvio-netback started by `pvio up` in a private run dir, the guest booted on pvio-hv by `pvio
// create --kernel --vif`, its netfront connected to the vif, and the vif's TAP uplink
// (vif<domid>.0) on the host, where the test sends and receives the guest's frames on a packet
// socket. Needs /dev/kvm and root (TAP, packet sockets); skips otherwise.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "hv_test_util.h"
#include "pvio/guest/net_frame.h"
#include "pvio/guest/result_line.h"
#include "pvio/hypervisor/vm.h"
#include "pvio/test/child_process.h"
#include "pvio/test/temp_dir.h"
#include "pvio/test/wait_until.h"

namespace pvio::hv {
namespace {

using guest::report_line;
using guest::json_number;
using guest::slurp;

constexpr std::uint8_t kHostMac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x42};

class PvNetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!Vm::kvm_available(&why)) GTEST_SKIP() << "KVM is not usable here (" << why << ")";
    if (::geteuid() != 0 || ::access("/dev/net/tun", R_OK | W_OK) != 0)
      GTEST_SKIP() << "needs root and /dev/net/tun (TAP uplink, packet sockets)";
    const char* pvio = std::getenv("PVIO");
    ASSERT_NE(pvio, nullptr) << "PVIO not set (run via meson test)";
    const char* kernel = std::getenv("PVIO_GUEST");
    ASSERT_NE(kernel, nullptr) << "PVIO_GUEST not set (run via meson test)";
    pvio_ = pvio;
    kernel_ = kernel;
    dir_ = test::make_temp_dir("pvio-pv-net-test");
    ASSERT_FALSE(dir_.empty());
    run_dir_ = dir_ + "/run";
    std::filesystem::create_directories(run_dir_);
    ASSERT_EQ(pvio_cmd({"up", "--no-blkback"}), 0) << slurp(dir_ + "/pvio.out");
    domid_ = 300 + ::getpid() % 300;
  }
  void TearDown() override {
    if (sock_ >= 0) ::close(sock_);
    if (!dir_.empty()) {
      if (booted_) pvio_cmd({"destroy", std::to_string(domid_)});
      pvio_cmd({"down"});
      test::remove_temp_dir(dir_);
    }
  }

  int pvio_cmd(const std::vector<std::string>& args) { return run_pvio(pvio_, dir_, run_dir_, args); }

  // Creates the domain with a vif and `cmdline`, then opens a packet socket on its TAP uplink
  // (which pvio-netback creates when the vif connects).
  void boot(const std::string& cmdline) {
    ASSERT_EQ(pvio_cmd({"create", "--kernel", kernel_, "--domid", std::to_string(domid_),
                        "--vif", "00:16:3e:00:01:01", "--cmdline", cmdline}),
              0)
        << slurp(dir_ + "/pvio.err");
    booted_ = true;
    const std::string tap = "vif" + std::to_string(domid_) + ".0";
    ASSERT_TRUE(test::wait_until([&] { return ::if_nametoindex(tap.c_str()) != 0; }, 30000))
        << "no " << tap << "; netback log:\n" << slurp(run_dir_ + "/netback.log") << log();
    ASSERT_EQ(test::run_shell("ip link set dev " + tap + " up"), 0);
    // Protocol 0 until bind() names the ethertype and the interface: created with the
    // ethertype, the socket would queue frames of every interface until then.
    sock_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    ASSERT_GE(sock_, 0) << std::strerror(errno);
    const int buf = 16 << 20;
    ::setsockopt(sock_, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf));
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(guest::kNetEthertype);
    sll.sll_ifindex = static_cast<int>(::if_nametoindex(tap.c_str()));
    ASSERT_EQ(::bind(sock_, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)), 0) << std::strerror(errno);
    timeval tv{20, 0};
    ::setsockopt(sock_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }

  std::string log() const { return slurp(run_dir_ + "/domain-" + std::to_string(domid_) + ".log"); }

  // The guest's result once pvio-hv has powered off.
  std::string result() {
    EXPECT_TRUE(test::wait_until([&] { return log().find("guest powered off") != std::string::npos; },
                                 60000))
        << log();
    return report_line(log(), "PVIO-RESULT");
  }

  // Next frame of ours from the guest, or an empty vector after the socket's timeout.
  std::vector<std::uint8_t> recv_frame() {
    std::vector<std::uint8_t> f(2048);
    const ssize_t n = ::recv(sock_, f.data(), f.size(), 0);
    f.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return f;
  }
  // Waits for the guest's hello; returns the guest's MAC from it.
  std::vector<std::uint8_t> wait_hello() {
    for (;;) {
      const auto f = recv_frame();
      if (f.empty()) return {};
      if (guest::net_frame_is_ours(f.data(), f.size()) && guest::net_frame_seq(f.data()) == guest::kHelloSeq)
        return {f.begin() + 6, f.begin() + 12};
    }
  }
  void send_frame(const std::vector<std::uint8_t>& dst, std::uint32_t seq, std::uint32_t len) {
    std::vector<std::uint8_t> f(len);
    guest::net_frame_fill(f.data(), len, dst.data(), kHostMac, seq);
    ASSERT_EQ(::send(sock_, f.data(), f.size(), 0), static_cast<ssize_t>(len)) << std::strerror(errno);
  }

  std::string pvio_, kernel_, dir_, run_dir_;
  int domid_ = 0;
  int sock_ = -1;
  bool booted_ = false;
};

// Every frame the guest transmits reaches the uplink once, in order, with its payload intact
// and the guest's MAC as source; the guest counts each one answered OK.
TEST_F(PvNetTest, TransmittedFramesReachTheUplink) {
  constexpr std::uint32_t kCount = 300, kLen = 1514;
  boot("mode=net op=tx go=1 pkt=1514 count=300 dst=02:00:00:00:00:42");
  const auto guest_mac = wait_hello();
  ASSERT_EQ(guest_mac.size(), 6u) << log();
  EXPECT_EQ(guest_mac, (std::vector<std::uint8_t>{0x00, 0x16, 0x3e, 0x00, 0x01, 0x01}));
  send_frame(guest_mac, 0, 60);  // go
  std::uint32_t next = 0, bad = 0;
  while (next < kCount) {
    const auto f = recv_frame();
    ASSERT_FALSE(f.empty()) << "frame " << next << " never came\n" << log();
    if (guest::net_frame_seq(f.data()) == guest::kHelloSeq) continue;
    EXPECT_EQ(guest::net_frame_seq(f.data()), next);
    if (f.size() != kLen || !guest::net_frame_payload_ok(f.data(), f.size()) ||
        std::memcmp(f.data(), kHostMac, 6) != 0 || !std::equal(guest_mac.begin(), guest_mac.end(), f.begin() + 6))
      ++bad;
    ++next;
  }
  EXPECT_EQ(bad, 0u);
  const std::string r = result();
  EXPECT_EQ(json_number(r, "packets"), kCount) << r;
  EXPECT_EQ(json_number(r, "errors"), 0) << r;
  EXPECT_EQ(json_number(r, "cpl"), 3) << r;
}

// Frames the host sends to the guest's MAC arrive whole: the guest counts them, checks every
// payload and finds no sequence number missing.
TEST_F(PvNetTest, ReceivesEveryFrameTheHostSends) {
  constexpr std::uint32_t kCount = 300;
  boot("mode=net op=rx pkt=1514 count=300");
  const auto guest_mac = wait_hello();
  ASSERT_EQ(guest_mac.size(), 6u) << log();
  for (std::uint32_t i = 0; i < kCount; ++i) {
    send_frame(guest_mac, i, i % 2 ? 1514 : 60 + i);  // sizes from the minimum to the maximum
    if (i % 16 == 15) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const std::string r = result();
  EXPECT_EQ(json_number(r, "packets"), kCount) << r;
  EXPECT_EQ(json_number(r, "bad"), 0) << r;
  EXPECT_EQ(json_number(r, "lost"), 0) << r;
  EXPECT_EQ(json_number(r, "errors"), 0) << r;
}

// Ping-pong: each frame comes back once, addressed to the host, from the guest, with the same
// sequence number and payload.
TEST_F(PvNetTest, EchoesEveryFrameBack) {
  constexpr std::uint32_t kCount = 100;
  boot("mode=net op=echo pkt=60 count=100");
  const auto guest_mac = wait_hello();
  ASSERT_EQ(guest_mac.size(), 6u) << log();
  for (std::uint32_t i = 0; i < kCount; ++i) {
    const std::uint32_t len = 60 + (i * 97) % 1400;
    send_frame(guest_mac, i, len);
    std::vector<std::uint8_t> f;
    do f = recv_frame();
    while (!f.empty() && guest::net_frame_seq(f.data()) == guest::kHelloSeq);
    ASSERT_FALSE(f.empty()) << "no echo of frame " << i << "\n" << log();
    EXPECT_EQ(guest::net_frame_seq(f.data()), i);
    EXPECT_EQ(f.size(), len);
    EXPECT_EQ(std::memcmp(f.data(), kHostMac, 6), 0);
    EXPECT_TRUE(std::equal(guest_mac.begin(), guest_mac.end(), f.begin() + 6));
    EXPECT_TRUE(guest::net_frame_payload_ok(f.data(), f.size()));
  }
  const std::string r = result();
  EXPECT_EQ(json_number(r, "packets"), kCount) << r;
  EXPECT_EQ(json_number(r, "tx_packets"), kCount + json_number(r, "hellos")) << r;
  EXPECT_EQ(json_number(r, "errors"), 0) << r;
}

// pvio bench refuses to measure the network through a pvio-netback it did not start (that one
// has its own uplinks), and says why.
TEST_F(PvNetTest, BenchNamesARunningNetbackAsTheReasonForNoPvRows) {
  const std::string out = dir_ + "/bench";
  const pid_t pid = test::spawn({pvio_, "bench", "--workloads", "tx64", "--engines", "pv", "--size", "8M",
                                 "--time-ms", "200", "--out", out},
                                dir_ + "/table.txt", dir_ + "/bench.err", {{"PVIO_RUN_DIR", run_dir_}, {"TMPDIR", dir_}});
  EXPECT_EQ(test::wait_exit(pid, 120000), 1);
  const std::string table = slurp(dir_ + "/table.txt");
  EXPECT_NE(table.find("pvio-netback already runs"), std::string::npos) << table << slurp(dir_ + "/bench.err");
  EXPECT_NE(slurp(out + "/pvio-bench.json").find("\"engine\":\"pv\",\"workload\":\"tx64\",\"qd\":1,\"ok\":false"),
            std::string::npos);
}

// `pvio bench` with network workloads only: pv and native rows with figures, in the table, the
// JSON and the SVG, with the PV/native targets checked. Its own run dir: the bench starts
// pvio-netback with its memif uplink itself.
TEST(PvNetBench, WritesNetworkRowsTableJsonAndSvg) {
  std::string why;
  if (!Vm::kvm_available(&why)) GTEST_SKIP() << "KVM is not usable here (" << why << ")";
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (pvio-netback's memif uplink, DPDK)";
  const char* pvio = std::getenv("PVIO");
  ASSERT_NE(pvio, nullptr) << "PVIO not set (run via meson test)";
  const std::string dir = test::make_temp_dir("pvio-net-bench-test");
  ASSERT_FALSE(dir.empty());
  std::filesystem::create_directories(dir + "/run");
  const std::string out = dir + "/bench";
  const pid_t pid = test::spawn({pvio, "bench", "--workloads", "tx64,rx1500,pingpong", "--engines", "pv,native", "--size", "8M",
                                 "--time-ms", "300", "--out", out},
                                dir + "/table.txt", dir + "/bench.err", {{"PVIO_RUN_DIR", dir + "/run"}, {"TMPDIR", dir}});
  EXPECT_EQ(test::wait_exit(pid, 300000), 0) << slurp(dir + "/bench.err");
  const std::string j = slurp(out + "/pvio-bench.json"), svg = slurp(out + "/pvio-bench.svg");
  const std::string table = slurp(dir + "/table.txt");
  for (const char* w : {"tx64", "rx1500", "pingpong"}) {
    for (const char* e : {"pv", "native"}) {
      const std::string key = std::string("{\"engine\":\"") + e + "\",\"workload\":\"" + w + "\"";
      const auto at = j.find(key);
      ASSERT_NE(at, std::string::npos) << key << "\n" << j;
      const std::string row = j.substr(at, j.find('\n', at) - at);
      EXPECT_NE(row.find("\"ok\":true"), std::string::npos) << row;
      EXPECT_GT(json_number(row, "ops"), 1) << row;
      if (std::string(w) == "pingpong") {
        EXPECT_GT(json_number(row, "p50_ns"), 0) << row;
      }
      // The guest's rows say what it exited for per packet; native rows have no guest.
      EXPECT_EQ(row.find("\"exits_per_io\":null") == std::string::npos, std::string(e) == "pv") << row;
      EXPECT_NE(table.find(std::string(w) + std::string(13 - std::string(w).size(), ' ') + e), std::string::npos)
          << table;
    }
    EXPECT_NE(svg.find(std::string(">") + w + "<"), std::string::npos) << svg;
  }
  EXPECT_NE(j.find("\"target\":\"PV >= 0.5x native packets/s, tx64\",\"checked\":true"), std::string::npos) << j;
  EXPECT_NE(j.find("\"target\":\"PV ping-pong p50 <= native + 10 us\",\"checked\":true"), std::string::npos) << j;
  test::remove_temp_dir(dir);
}

}  // namespace
}  // namespace pvio::hv
