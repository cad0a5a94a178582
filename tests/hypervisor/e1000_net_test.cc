// The emulated e1000 end to end, with real processes: `pvio up` starts pvio-xenstored and
// pvio-netback with two TAP uplinks in a private run dir; pvio-hv's e1000 is wired to one of
// them (--nic e1000,ifname=...), the test sends and receives on the other through a packet
// socket, so every frame crosses netback's switch as a PV vif's would. Needs /dev/kvm and root
// (TAP, packet sockets); skips otherwise.
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
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

using guest::json_number;
using guest::report_line;
using guest::slurp;

constexpr std::uint8_t kHostMac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x42};
const std::vector<std::uint8_t> kGuestMac = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

class E1000NetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!Vm::kvm_available(&why)) GTEST_SKIP() << "KVM is not usable here (" << why << ")";
    if (::geteuid() != 0 || ::access("/dev/net/tun", R_OK | W_OK) != 0)
      GTEST_SKIP() << "needs root and /dev/net/tun (TAP uplinks, packet sockets)";
    for (const char* v : {"PVIO", "PVIO_HV", "PVIO_GUEST"})
      ASSERT_NE(std::getenv(v), nullptr) << v << " not set (run via meson test)";
    pvio_ = std::getenv("PVIO");
    dir_ = test::make_temp_dir("pvio-e1000-net-test");
    ASSERT_FALSE(dir_.empty());
    run_dir_ = dir_ + "/run";
    std::filesystem::create_directories(run_dir_);
    const std::string tag = std::to_string(::getpid() % 100000);
    nic_if_ = "e1kg" + tag;
    host_if_ = "e1kh" + tag;
    ASSERT_EQ(pvio_cmd({"up", "--no-blkback", "--vif-uplink", "none", "--uplink", "tap:" + nic_if_,
                        "--uplink", "tap:" + host_if_}),
              0)
        << slurp(dir_ + "/pvio.out") << slurp(dir_ + "/pvio.err");
    up_ = true;
    // pvio-netback creates its TAP uplinks after `pvio up` has seen it start.
    ASSERT_TRUE(test::wait_until([&] {
      return ::if_nametoindex(host_if_.c_str()) != 0 && ::if_nametoindex(nic_if_.c_str()) != 0;
    }, 10000)) << slurp(run_dir_ + "/netback.log");
    // Protocol 0 until bind() names the ethertype and the interface: created with the ethertype,
    // the socket would queue frames of every interface until then.
    sock_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
    ASSERT_GE(sock_, 0) << std::strerror(errno);
    const int buf = 16 << 20;  // a whole burst of the guest's frames waits here
    ::setsockopt(sock_, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf));
    sockaddr_ll sll{};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(guest::kNetEthertype);
    sll.sll_ifindex = static_cast<int>(::if_nametoindex(host_if_.c_str()));
    ASSERT_EQ(::bind(sock_, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)), 0) << std::strerror(errno);
    timeval tv{20, 0};
    ::setsockopt(sock_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  void TearDown() override {
    if (sock_ >= 0) ::close(sock_);
    if (hv_pid_ > 0 && test::wait_exit(hv_pid_, 0) < 0) {
      ::kill(hv_pid_, SIGKILL);
      test::wait_exit(hv_pid_);
    }
    if (up_) pvio_cmd({"down"});
    if (!dir_.empty()) test::remove_temp_dir(dir_);
  }

  int pvio_cmd(const std::vector<std::string>& args) { return run_pvio(pvio_, dir_, run_dir_, args); }

  void boot(const std::string& cmdline) {
    hv_pid_ = test::spawn({std::getenv("PVIO_HV"), "--kernel", std::getenv("PVIO_GUEST"), "--nic",
                           "e1000,ifname=" + nic_if_, "--cmdline", cmdline},
                          dir_ + "/hv.out", dir_ + "/hv.err");
    ASSERT_GT(hv_pid_, 0);
  }
  std::string log() const { return slurp(dir_ + "/hv.out") + slurp(dir_ + "/hv.err"); }
  // The guest's result and pvio-hv's e1000 counters once it has powered off (exit 0).
  std::string result(std::string* nic = nullptr) {
    EXPECT_EQ(test::wait_exit(hv_pid_, 60000), 0) << log();
    hv_pid_ = -1;
    if (nic != nullptr) *nic = report_line(slurp(dir_ + "/hv.err"), "PVIO-HV-E1000");
    return report_line(slurp(dir_ + "/hv.out"), "PVIO-RESULT");
  }

  std::vector<std::uint8_t> recv_frame() {
    std::vector<std::uint8_t> f(2048);
    ssize_t n;
    // ENETDOWN: pvio-netback took the TAP down and up again as it started the port, after the
    // interface had appeared; the socket reports that once and goes on.
    while ((n = ::recv(sock_, f.data(), f.size(), 0)) < 0 && errno == ENETDOWN) {
    }
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) ADD_FAILURE() << "recv: " << std::strerror(errno);
    f.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return f;
  }
  // The next frame of ours that is not a hello; empty after the socket's timeout.
  std::vector<std::uint8_t> recv_data() {
    std::vector<std::uint8_t> f;
    do f = recv_frame();
    while (!f.empty() && guest::net_frame_seq(f.data()) == guest::kHelloSeq);
    return f;
  }
  bool wait_hello() {
    for (;;) {
      const auto f = recv_frame();
      if (f.empty()) return false;
      if (guest::net_frame_seq(f.data()) == guest::kHelloSeq &&
          std::equal(kGuestMac.begin(), kGuestMac.end(), f.begin() + 6))
        return true;
    }
  }
  void send_frame(std::uint32_t seq, std::uint32_t len) {
    std::vector<std::uint8_t> f(len);
    guest::net_frame_fill(f.data(), len, kGuestMac.data(), kHostMac, seq);
    ASSERT_EQ(::send(sock_, f.data(), f.size(), 0), static_cast<ssize_t>(len)) << std::strerror(errno);
  }

  std::string pvio_, dir_, run_dir_, nic_if_, host_if_;
  int sock_ = -1;
  pid_t hv_pid_ = -1;
  bool up_ = false;
};

// Every frame the guest transmits through the e1000 arrives once, in order, whole, from the
// guest's EEPROM MAC; each register write was one counted exit.
TEST_F(E1000NetTest, TransmittedFramesCrossTheSwitch) {
  constexpr std::uint32_t kCount = 200, kLen = 1514;
  boot("mode=net nic=e1000 op=tx go=1 pkt=1514 count=200 batch=8 dst=02:00:00:00:00:42");
  ASSERT_TRUE(wait_hello()) << log();
  send_frame(0, 60);  // go
  std::uint32_t bad = 0;
  for (std::uint32_t next = 0; next < kCount; ++next) {
    const auto f = recv_data();
    ASSERT_FALSE(f.empty()) << "frame " << next << " never came\n" << log();
    EXPECT_EQ(guest::net_frame_seq(f.data()), next);
    if (f.size() != kLen || !guest::net_frame_payload_ok(f.data(), f.size()) ||
        std::memcmp(f.data(), kHostMac, 6) != 0)
      ++bad;
  }
  EXPECT_EQ(bad, 0u);
  std::string nic;
  const std::string r = result(&nic);
  EXPECT_EQ(json_number(r, "packets"), kCount) << r;
  EXPECT_EQ(json_number(r, "errors"), 0) << r;
  EXPECT_EQ(json_number(r, "cpl"), 3) << r;
  EXPECT_GE(json_number(nic, "tx_packets"), kCount) << nic;
  EXPECT_GE(json_number(nic, "mmio_exits"), json_number(r, "guest_exits")) << nic << r;
}

// Frames sent to the guest's MAC arrive whole in the RX ring: counted, payload checked, none
// missing.
TEST_F(E1000NetTest, ReceivesEveryFrameTheHostSends) {
  constexpr std::uint32_t kCount = 200;
  boot("mode=net nic=e1000 op=rx pkt=1514 count=200");
  ASSERT_TRUE(wait_hello()) << log();
  for (std::uint32_t i = 0; i < kCount; ++i) {
    send_frame(i, i % 2 ? 1514 : 60 + i);
    if (i % 16 == 15) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const std::string r = result();
  EXPECT_EQ(json_number(r, "packets"), kCount) << r;
  EXPECT_EQ(json_number(r, "bad"), 0) << r;
  EXPECT_EQ(json_number(r, "lost"), 0) << r;
  EXPECT_EQ(json_number(r, "errors"), 0) << r;
}

// Ping-pong: each frame comes back once with MACs swapped and the payload intact. The guest
// halts between frames and is woken by the e1000's INTx through the IOAPIC.
TEST_F(E1000NetTest, EchoesEveryFrameBackWakingOnTheInterrupt) {
  constexpr std::uint32_t kCount = 60;
  boot("mode=net nic=e1000 op=echo pkt=60 count=60 halt=1");
  ASSERT_TRUE(wait_hello()) << log();
  for (std::uint32_t i = 0; i < kCount; ++i) {
    const std::uint32_t len = 60 + (i * 97) % 1400;
    send_frame(i, len);
    const auto f = recv_data();
    ASSERT_FALSE(f.empty()) << "no echo of frame " << i << "\n" << log();
    EXPECT_EQ(guest::net_frame_seq(f.data()), i);
    EXPECT_EQ(f.size(), len);
    EXPECT_EQ(std::memcmp(f.data(), kHostMac, 6), 0);
    EXPECT_TRUE(std::equal(kGuestMac.begin(), kGuestMac.end(), f.begin() + 6));
    EXPECT_TRUE(guest::net_frame_payload_ok(f.data(), f.size()));
  }
  std::string nic;
  const std::string r = result(&nic);
  EXPECT_EQ(json_number(r, "packets"), kCount) << r;
  EXPECT_EQ(json_number(r, "errors"), 0) << r;
  EXPECT_GT(json_number(r, "hlts"), 0) << r;
  EXPECT_GT(json_number(r, "interrupts"), 0) << r;
  EXPECT_GT(json_number(nic, "interrupts"), 0) << nic;
}

// `pvio bench` with the e1000 engine: its row has figures and the guest's exits per packet, and
// the PV/e1000 target is reported (not checked without pv rows). Its own run dir: the bench
// starts pvio-netback with the memif uplink and the e1000's TAP itself.
TEST(E1000NetBench, WritesE1000Rows) {
  std::string why;
  if (!Vm::kvm_available(&why)) GTEST_SKIP() << "KVM is not usable here (" << why << ")";
  if (::geteuid() != 0) GTEST_SKIP() << "needs root (TAP and memif uplinks, DPDK)";
  const char* pvio = std::getenv("PVIO");
  ASSERT_NE(pvio, nullptr) << "PVIO not set (run via meson test)";
  const std::string dir = test::make_temp_dir("pvio-e1000-bench-test");
  ASSERT_FALSE(dir.empty());
  std::filesystem::create_directories(dir + "/run");
  const std::string out = dir + "/bench";
  const pid_t pid = test::spawn({pvio, "bench", "--workloads", "tx64,rx1500", "--engines", "e1000", "--size", "8M",
                                 "--time-ms", "300", "--out", out},
                                dir + "/table.txt", dir + "/bench.err", {{"PVIO_RUN_DIR", dir + "/run"}, {"TMPDIR", dir}});
  EXPECT_EQ(test::wait_exit(pid, 300000), 0) << slurp(dir + "/bench.err");
  const std::string j = slurp(out + "/pvio-bench.json");
  for (const char* w : {"tx64", "rx1500"}) {
    const std::string key = std::string("{\"engine\":\"e1000\",\"workload\":\"") + w + "\"";
    const auto at = j.find(key);
    ASSERT_NE(at, std::string::npos) << key << "\n" << j;
    const std::string row = j.substr(at, j.find('\n', at) - at);
    EXPECT_NE(row.find("\"ok\":true"), std::string::npos) << row;
    EXPECT_GT(json_number(row, "ops"), 1) << row;
    EXPECT_EQ(row.find("\"exits_per_io\":null"), std::string::npos) << row;
    EXPECT_GT(json_number(row, "hv_mmio_exits"), 0) << row;
  }
  EXPECT_NE(j.find("\"target\":\"PV >= 10x emulated e1000 packets/s, tx64\",\"checked\":false"), std::string::npos) << j;
  test::remove_temp_dir(dir);
}

}  // namespace
}  // namespace pvio::hv
