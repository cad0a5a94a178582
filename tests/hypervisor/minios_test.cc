// Xen's Mini-OS, a real Xen guest written elsewhere, on pvio: PVH boot on pvio-hv started by
// `pvio create --kernel`, its xenbus test over the xenstore ring served by pvio-xenstored, its
// blkfront against pvio-blkback (the -DBLKTEST_WRITE build checks its own writes by reading
// them back; the host checks the image afterwards), control/shutdown = poweroff, and
// pvio-blkback killed with -9 under a running block test.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <fstream>
#include <functional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "pvio/test/temp_dir.h"
#include "pvio/hypervisor/vm.h"
#include "pvio/xenstore/client.h"

namespace pvio::hv {
namespace {

// Whole file as a string ("" if missing).
std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// The number after "key": on the PVIO-HV-STATS line, or -1.
long long field(const std::string& text, const std::string& key) {
  const auto line = text.find("PVIO-HV-STATS");
  if (line == std::string::npos) return -1;
  const std::string l = text.substr(line, text.find('\n', line) - line);
  const auto k = l.find("\"" + key + "\":");
  return k == std::string::npos ? -1 : std::atoll(l.c_str() + k + key.size() + 3);
}


// Mini-OS's test app writes sector words w[i + 1] = w[i] * RAND_MIX (its lib.h).
constexpr std::uint32_t kRandMix = 2654435769u;
constexpr std::size_t kSector = 512;

class MiniOsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!Vm::kvm_available(&why)) GTEST_SKIP() << "KVM is not usable here (" << why << ")";
    if (const char* skip = std::getenv("PVIO_MINIOS_SKIP")) GTEST_SKIP() << skip;
    const char* pvio = std::getenv("PVIO");
    const char* minios = std::getenv("PVIO_MINIOS");
    const char* blkwrite = std::getenv("PVIO_MINIOS_BLKWRITE");
    ASSERT_TRUE(pvio && minios && blkwrite) << "PVIO/PVIO_MINIOS not set (run via meson test)";
    pvio_ = pvio;
    minios_ = minios;
    minios_blkwrite_ = blkwrite;
    dir_ = test::make_temp_dir("pvio-minios-test");
    ASSERT_FALSE(dir_.empty());
    run_dir_ = dir_ + "/run";
    std::filesystem::create_directories(run_dir_);
    ::setenv("PVIO_RUN_DIR", run_dir_.c_str(), 1);
    ASSERT_EQ(pvio_cmd({"up"}), 0) << out_;
  }
  void TearDown() override {
    if (dir_.empty()) return;
    for (int d = 1; d <= 4; ++d)
      if (std::filesystem::exists(run_dir_ + "/domain-" + std::to_string(d) + ".pid"))
        pvio_cmd({"destroy", std::to_string(d)});
    pvio_cmd({"down"});
    std::filesystem::remove_all(dir_);
  }

  // Runs `pvio ARGS`; output in out_.
  int pvio_cmd(const std::vector<std::string>& args) {
    const std::string out = dir_ + "/pvio.out";
    const pid_t pid = ::fork();
    if (pid == 0) {
      std::FILE* f = std::freopen(out.c_str(), "w", stdout);
      (void)f;
      ::dup2(1, 2);
      std::vector<char*> argv{const_cast<char*>(pvio_.c_str())};
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(pvio_.c_str(), argv.data());
      ::_exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    out_ = slurp(out);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  std::string log(int domid) const { return slurp(run_dir_ + "/domain-" + std::to_string(domid) + ".log"); }

  // Waits until `pred` holds (polled; the cap only keeps a broken run from hanging).
  static bool eventually(const std::function<bool()>& pred, int cap_s = 60) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(cap_s);
    while (std::chrono::steady_clock::now() < end) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return pred();
  }
  bool log_has(int domid, const std::string& text, int cap_s = 60) {
    return eventually([&] { return log(domid).find(text) != std::string::npos; }, cap_s);
  }

  std::unique_ptr<xs::Client> xenstore() { return xs::Client::connect(run_dir_ + "/xenstored.sock"); }

  std::string make_image(std::size_t bytes) {
    const std::string img = dir_ + "/disk.img";
    std::ofstream(img).close();
    std::filesystem::resize_file(img, bytes);
    return img;
  }

  // The last "N read, M write" line of Mini-OS's block test.
  static bool blk_counts(const std::string& text, long long* reads, long long* writes) {
    static const std::regex re(R"((\d+) read, (\d+) write)");
    bool found = false;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it) {
      *reads = std::stoll((*it)[1]);
      *writes = std::stoll((*it)[2]);
      found = true;
    }
    return found;
  }

  std::string pvio_, minios_, minios_blkwrite_, dir_, run_dir_, out_;
};

// Boots and runs Mini-OS's own xenbus test (ls/read/write/rm under device/vif/0, which `pvio
// create --vif` wrote as xl does) over the xenstore ring served by pvio-xenstored.
TEST_F(MiniOsTest, BootsPvhAndPassesXenbusTest) {
  ASSERT_EQ(pvio_cmd({"create", "--kernel", minios_, "--domid", "1", "--name", "mos", "--vif",
                      "00:16:3e:00:00:01"}), 0) << out_;
  ASSERT_TRUE(log_has(1, "Thread \"xenbus_tester\" exited.")) << log(1);
  const std::string boot = log(1);
  EXPECT_NE(boot.find("Xen Minimal OS (hvm)!"), std::string::npos);
  // The memory map pvio-hv gave in hvm_start_info, as Mini-OS prints it.
  EXPECT_NE(boot.find("00000009e000-00000009ffff: Reserved"), std::string::npos) << boot;
  EXPECT_NE(boot.find("0000fd000000-0000fd022fff: Reserved"), std::string::npos) << boot;
  EXPECT_NE(boot.find("ls device/vif/0[4] -> mac"), std::string::npos) << boot;
  EXPECT_NE(boot.find("Read device/vif/0/mac -> 00:16:3e:00:00:01."), std::string::npos) << boot;
  EXPECT_NE(boot.find("Read device/vif/0/flibble -> flobble."), std::string::npos) << boot;
  EXPECT_NE(boot.find("Read device/vif/0/flibble -> widget."), std::string::npos) << boot;
  EXPECT_NE(boot.find("(Should have said ENOENT)"), std::string::npos) << boot;
  EXPECT_EQ(boot.find("Result EACCES"), std::string::npos) << boot;
  // Its periodic thread prints the wall clock each second (VIRQ_TIMER + pvclock): two ticks.
  ASSERT_TRUE(eventually([&] {
    const std::string l = log(1);
    return l.find("T(s=") != l.rfind("T(s=");
  })) << log(1);
  // Its netfront connects to pvio-netback (started by `pvio up`) on the vif's nodes. Frames
  // the host sends on the vif's TAP uplink (vif1.0) reach Mini-OS's netfront, which prints
  // "N bytes incoming" for each: the host sends 12 frames addressed to the guest's MAC, of a
  // length nothing else sends, and Mini-OS must report all of them.
  ASSERT_TRUE(eventually([&] {
    return slurp(run_dir_ + "/netback.log").find("/local/domain/0/backend/vif/1/0: connected") !=
           std::string::npos;
  })) << slurp(run_dir_ + "/netback.log");
  EXPECT_NE(log(1).find("mac is 00:16:3e:00:00:01"), std::string::npos) << log(1);
  auto count_marked = [&] {
    std::size_t n = 0;
    const std::string l = log(1);
    for (auto p = l.find("\n377 bytes incoming"); p != std::string::npos;
         p = l.find("\n377 bytes incoming", p + 1))
      ++n;
    return n;
  };
  const std::string send =
      "ip link set dev vif1.0 up && python3 -c '\n"
      "import socket\n"
      "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
      "s.bind((\"vif1.0\", 0))\n"
      "frame = bytes.fromhex(\"00163e000001\") + bytes.fromhex(\"02aabbccddee\") + b\"\\x88\\xb5\"\n"
      "frame += bytes(377 - len(frame))\n"
      "for _ in range(12): s.send(frame)\n'";
  ASSERT_EQ(std::system(send.c_str()), 0);
  EXPECT_TRUE(eventually([&] { return count_marked() >= 12; }))
      << "Mini-OS reported " << count_marked() << " of the 12 frames\n" << log(1);
  RecordProperty("minios_frames_received", static_cast<int>(count_marked()));
  ASSERT_EQ(pvio_cmd({"list"}), 0);
  EXPECT_NE(out_.find("mos"), std::string::npos) << out_;
  EXPECT_NE(out_.find("running"), std::string::npos) << out_;
  ASSERT_EQ(pvio_cmd({"destroy", "1"}), 0) << out_;
  EXPECT_EQ(log(1).find("domain crashed"), std::string::npos);
}

// `pvio create FILE` for Mini-OS (PVH) and `pvio reboot -w`: Mini-OS's shutdown thread takes
// control/shutdown = reboot to SCHEDOP_shutdown(SHUTDOWN_reboot), pvio-hv exits 4, and the
// domain's monitor restarts it with the same domid (on_reboot = "restart"); then
// `pvio shutdown -w` powers it off and on_poweroff = "destroy" leaves nothing. No disk: Mini-OS
// schedules cooperatively and its test application's block thread yields only when its ring is
// full. Here the guest's kernel code is slow (interpreted) and pvio-blkback answers each request
// before the next is queued, so the ring never fills, the block thread never yields and the
// thread that watches control/shutdown never runs. That is the test application's loop, not
// the shutdown path, which this test covers without the disk.
TEST_F(MiniOsTest, RebootsFromAConfigFileAndTheMonitorRestartsIt) {
  const std::string cfg = dir_ + "/mos.cfg";
  std::ofstream(cfg) << "name = \"mos\"\nkernel = \"" << minios_ << "\"\nmemory = 64\n"
                     << "on_reboot = \"restart\"\n";
  ASSERT_EQ(pvio_cmd({"create", cfg}), 0) << out_;
  EXPECT_NE(out_.find("domain 1 (mos) created"), std::string::npos) << out_;
  EXPECT_NE(out_.find("pvh"), std::string::npos) << out_;
  ASSERT_TRUE(log_has(1, "Thread \"xenbus_tester\" exited.")) << log(1);
  ASSERT_EQ(pvio_cmd({"reboot", "-w", "--timeout", "60", "mos"}), 0) << out_;
  EXPECT_NE(out_.find("restarted"), std::string::npos) << out_;
  const std::string text = log(1);
  EXPECT_NE(text.find("pvio-hv: guest requested reboot"), std::string::npos) << text;
  EXPECT_NE(text.find("rebooted (exit status 4); restart"), std::string::npos) << text;
  // The new instance boots again.
  ASSERT_TRUE(eventually([&] {
    const std::string t = log(1);
    const auto second = t.find("restarted: pid");
    return second != std::string::npos &&
           t.find("Thread \"xenbus_tester\" exited.", second) != std::string::npos;
  })) << log(1);
  auto xs = xenstore();
  ASSERT_NE(xs, nullptr);
  EXPECT_EQ(xs->read("/local/domain/1/name").value, "mos");
  ASSERT_EQ(pvio_cmd({"shutdown", "-w", "mos"}), 0) << out_;
  EXPECT_NE(out_.find("destroyed"), std::string::npos) << out_;
  EXPECT_FALSE(xs->read("/local/domain/1/name").ok());
  EXPECT_FALSE(std::filesystem::exists(run_dir_ + "/domain-1.pid"));
}

// control/shutdown = poweroff: Mini-OS acknowledges (clears the node), shuts down and calls
// SCHEDOP_shutdown; pvio-hv exits 0 and prints the hypercalls it served. `pvio console` is
// attached meanwhile: it shows the guest's console ring and ends when the domain does.
TEST_F(MiniOsTest, PowersOffThroughControlShutdown) {
  ASSERT_EQ(pvio_cmd({"create", "--kernel", minios_, "--domid", "1"}), 0) << out_;
  ASSERT_TRUE(log_has(1, "Thread \"xenbus_tester\" exited.")) << log(1);
  // The console ring's log (written by pvio-hv's console backend) has the boot banner.
  const std::string ring_log = run_dir_ + "/domain-1.console.log";
  ASSERT_TRUE(eventually([&] { return slurp(ring_log).find("Xen Minimal OS (hvm)!") != std::string::npos; }))
      << slurp(ring_log);
  const std::string console_out = dir_ + "/console.out";
  const pid_t console = ::fork();
  if (console == 0) {
    std::FILE* f = std::freopen(console_out.c_str(), "w", stdout);
    std::FILE* in = std::freopen("/dev/null", "r", stdin);
    (void)f;
    (void)in;
    ::execl(pvio_.c_str(), pvio_.c_str(), "console", "1", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ASSERT_TRUE(eventually([&] { return slurp(console_out).find("T(s=") != std::string::npos; }))
      << slurp(console_out);
  auto xs = xenstore();
  ASSERT_NE(xs, nullptr);
  ASSERT_EQ(xs->write("/local/domain/1/control/shutdown", "poweroff"), xs::XsError::None);
  ASSERT_TRUE(log_has(1, "pvio-hv: guest powered off (code 0)")) << log(1);
  int status = 0;
  ASSERT_EQ(::waitpid(console, &status, 0), console);  // the console ends with the domain
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  auto ack = xs->read("/local/domain/1/control/shutdown");
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack.value, "");
  const std::string end = log(1);
  // Hypercall counts at exit: the calls Mini-OS is known to make, each at least once.
  for (const char* op : {"\"console_io.write\":", "\"hvm_op.set_param.CALLBACK_IRQ\":1",
                         "\"hvm_op.get_param.STORE_PFN\":1", "\"hvm_op.get_param.STORE_EVTCHN\":1",
                         "\"hvm_op.get_param.CONSOLE_PFN\":1", "\"memory_op.current_reservation\":1",
                         "\"memory_op.add_to_physmap\":5", "\"event_channel_op.bind_virq\":1",
                         "\"set_timer_op\":", "\"sched_op.shutdown\":1"})
    EXPECT_NE(end.find(op), std::string::npos) << op << "\n" << end;
  EXPECT_EQ(field(end, "unknown_hypercalls"), 0) << end;
  EXPECT_EQ(field(end, "faults"), 0) << end;
}

// Blkfront against pvio-blkback with Mini-OS's write test: it writes random sectors, reads
// each back and compares (printing "bogus data" on a mismatch); afterwards every sector on the
// host side is either untouched or holds one whole pattern. Mini-OS's own check is reported,
// not asserted: its virtual_to_mfn reads its 2 MiB mappings as page tables, so a buffer that
// lands above 2 MiB is granted as frame 0 (its write reaches the disk as zeros, its read-back
// fills page 0), which this layout makes rare but cannot rule out.
TEST_F(MiniOsTest, BlkfrontWritesAreReadBackAndOnDisk) {
  const std::string img = make_image(4u << 20);
  ASSERT_EQ(pvio_cmd({"create", "--kernel", minios_blkwrite_, "--domid", "1", "--vbd",
                      "768:" + img}), 0) << out_;
  ASSERT_TRUE(log_has(1, "8192 sectors of 512 bytes")) << log(1);
  long long reads = 0, writes = 0;
  // Mini-OS prints its counters every 10 s of its time; the second print follows read-backs.
  ASSERT_TRUE(eventually([&] { return blk_counts(log(1), &reads, &writes) && reads > 0 && writes > 0; }, 90))
      << log(1);
  // Counters on request (SIGUSR2) while it runs, then `pvio destroy` (SIGTERM): a clean stop.
  const pid_t hv = static_cast<pid_t>(std::atoi(slurp(run_dir_ + "/domain-1.pid").c_str()));
  ASSERT_GT(hv, 0);
  ASSERT_EQ(::kill(hv, SIGUSR2), 0);
  ASSERT_TRUE(log_has(1, "PVIO-HV-STATS")) << log(1);
  EXPECT_NE(log(1).find("\"memory_op.add_to_physmap\":5"), std::string::npos) << log(1);
  ASSERT_EQ(pvio_cmd({"destroy", "1"}), 0) << out_;
  ASSERT_TRUE(log_has(1, "pvio-hv: domain destroyed by the toolstack")) << log(1);
  const std::string text = log(1);
  EXPECT_EQ(text.find("got error code"), std::string::npos) << text;
  std::size_t bogus = 0;
  for (auto p = text.find("bogus data"); p != std::string::npos; p = text.find("bogus data", p + 1))
    ++bogus;
  RecordProperty("minios_bogus_reports", static_cast<int>(bogus));
  RecordProperty("minios_sectors_written", static_cast<int>(writes / 512));

  std::ifstream f(img, std::ios::binary);
  std::vector<char> sector(kSector);
  std::size_t written = 0, torn = 0, index = 0;
  bool first = false, last = false;
  const std::size_t sectors = (4u << 20) / kSector;
  while (f.read(sector.data(), kSector)) {
    std::uint32_t w[kSector / 4];
    std::memcpy(w, sector.data(), kSector);
    bool zero = true, chain = true;
    for (std::size_t i = 0; i < kSector / 4; ++i) {
      if (w[i] != 0) zero = false;
      if (i > 0 && w[i] != w[i - 1] * kRandMix) chain = false;
    }
    if (!zero) {
      ++(chain ? written : torn);
      if (index == 0) first = chain;
      if (index == sectors - 1) last = chain;
    }
    ++index;
  }
  EXPECT_EQ(torn, 0u);
  EXPECT_TRUE(first) << "sector 0 (written first by Mini-OS) lacks its pattern";
  EXPECT_TRUE(last) << "the last sector (written second) lacks its pattern";
  EXPECT_GT(written, 2u);
}

// control/shutdown = poweroff with blkfront connected: Mini-OS closes its frontend (Closing,
// then Closed once the backend is Closed, then Initialising once the backend is back in
// InitWait, its own shutdown_blkfront waits for each), pvio-blkback disconnects and unmaps,
// pvio-hv exits 0. Mini-OS's scheduler is cooperative and its block test never yields while
// the backend keeps up, so pvio-blkback is paused (SIGSTOP) until Mini-OS has acknowledged the
// request: with its ring full the block thread sleeps and the xenstore and shutdown threads run.
TEST_F(MiniOsTest, PoweroffClosesBlkfrontAndBlkbackReachesClosed) {
  const std::string img = make_image(4u << 20);
  ASSERT_EQ(pvio_cmd({"create", "--kernel", minios_blkwrite_, "--domid", "1", "--vbd",
                      "768:" + img}), 0) << out_;
  ASSERT_TRUE(log_has(1, "8192 sectors of 512 bytes")) << log(1);
  const pid_t blkback = static_cast<pid_t>(std::atoi(slurp(run_dir_ + "/blkback.pid").c_str()));
  ASSERT_GT(blkback, 0);
  auto xs = xenstore();
  ASSERT_NE(xs, nullptr);
  ASSERT_EQ(xs->write("/local/domain/1/control/shutdown", "poweroff"), xs::XsError::None);
  ASSERT_EQ(::kill(blkback, SIGSTOP), 0);
  const bool acked = eventually([&] {
    auto r = xs->read("/local/domain/1/control/shutdown");
    return r.ok() && r.value.empty();
  });
  ASSERT_EQ(::kill(blkback, SIGCONT), 0);
  ASSERT_TRUE(acked) << log(1);
  ASSERT_TRUE(log_has(1, "pvio-hv: guest powered off (code 0)")) << log(1);
  const std::string text = log(1);
  EXPECT_NE(text.find("close blk: backend=/local/domain/0/backend/vbd/1/768"), std::string::npos) << text;
  EXPECT_EQ(text.find("shutdown_blkfront: error"), std::string::npos) << text;
  EXPECT_EQ(text.find("got error code"), std::string::npos) << text;
  EXPECT_TRUE(eventually([&] {
    return slurp(run_dir_ + "/blkback.log").find("vbd /local/domain/0/backend/vbd/1/768: disconnected") !=
           std::string::npos;
  })) << slurp(run_dir_ + "/blkback.log");
  // Back in InitWait for a next frontend, as Linux's blkback does after Closed.
  auto be = xs->read("/local/domain/0/backend/vbd/1/768/state");
  ASSERT_TRUE(be.ok());
  EXPECT_EQ(be.value, "2");
}

// pvio-blkback dies (-9) while Mini-OS's block test runs. Mini-OS has no reconnect logic: its
// requests stay outstanding on the ring. pvio-hv must keep running, a restarted blkback must
// not crash on the orphaned device, and a new domain gets a working disk.
TEST_F(MiniOsTest, BlkbackKilledUnderMiniOsThenNewDomainWorks) {
  const std::string img = make_image(4u << 20);
  ASSERT_EQ(pvio_cmd({"create", "--kernel", minios_, "--domid", "1", "--vbd", "768:" + img}), 0)
      << out_;
  ASSERT_TRUE(log_has(1, "8192 sectors of 512 bytes")) << log(1);
  ASSERT_TRUE(eventually([&] {
    long long r = 0, w = 0;
    return blk_counts(log(1), &r, &w) && r > 0;
  })) << log(1);
  const std::string pid_text = slurp(run_dir_ + "/blkback.pid");
  const pid_t blkback = static_cast<pid_t>(std::atoi(pid_text.c_str()));
  ASSERT_GT(blkback, 0);
  ASSERT_EQ(::kill(blkback, SIGKILL), 0);
  // Mini-OS's ring fills and its block thread waits for responses that never come; its other
  // threads (timer ticks) carry on, and pvio-hv keeps serving.
  const std::size_t mark = log(1).size();
  ASSERT_TRUE(eventually([&] {
    const std::string l = log(1);
    return l.find("T(s=", mark) != std::string::npos && l.find("T(s=", l.find("T(s=", mark) + 1) != std::string::npos;
  })) << log(1).substr(mark);
  EXPECT_EQ(log(1).find("domain crashed"), std::string::npos);
  ASSERT_EQ(pvio_cmd({"up"}), 0) << out_;  // restarts pvio-blkback
  ASSERT_EQ(pvio_cmd({"list"}), 0);
  EXPECT_NE(out_.find("running"), std::string::npos) << out_;
  ASSERT_EQ(pvio_cmd({"destroy", "1"}), 0) << out_;

  const std::string img2 = dir_ + "/disk2.img";
  std::ofstream(img2).close();
  std::filesystem::resize_file(img2, 2u << 20);
  ASSERT_EQ(pvio_cmd({"create", "--kernel", minios_, "--domid", "2", "--vbd", "768:" + img2}), 0)
      << out_;
  ASSERT_TRUE(log_has(2, "4096 sectors of 512 bytes")) << log(2);
  ASSERT_TRUE(eventually([&] {
    long long r = 0, w = 0;
    return blk_counts(log(2), &r, &w) && r > 0;
  })) << log(2);
  EXPECT_EQ(log(2).find("got error code"), std::string::npos);
}

}  // namespace
}  // namespace pvio::hv
