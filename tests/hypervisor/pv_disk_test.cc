// The PV disk of the HVM test guest end to end, with real processes: pvio-xenstored and
// pvio-blkback (started by `pvio bench` in a private run dir), pvio-hv with the emulated IDE disk
// and the PV disk (xvda) on one backing file, and the guest's blkfront. The same bytes must be
// seen through IDE, through PV and from the host side on the backing file.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "pvio/guest/pattern.h"
#include "pvio/hypervisor/vm.h"

namespace pvio::hv {
namespace {

long long field(const std::string& text, const std::string& prefix, const std::string& key) {
  const auto line = text.find(prefix);
  if (line == std::string::npos) return -1;
  const std::string l = text.substr(line, text.find('\n', line) - line);
  const auto k = l.find("\"" + key + "\":");
  if (k == std::string::npos) return -1;
  return std::atoll(l.c_str() + k + key.size() + 3);
}

class PvDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!Vm::kvm_available(&why)) GTEST_SKIP() << "KVM is not usable here (" << why << ")";
    const char* pvio = std::getenv("PVIO");
    ASSERT_NE(pvio, nullptr) << "PVIO not set (run via meson test)";
    pvio_ = pvio;
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp ? tmp : "/tmp") + "/pvio-pv-disk-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    image_ = dir_ + "/disk.img";
    std::filesystem::create_directories(dir_ + "/run");
    std::ofstream(image_).close();
    std::filesystem::resize_file(image_, 16u << 20);
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Boots the guest once with `cmdline` (both disks on the image); returns pvio's exit status
  // and the guest's console in *serial.
  int boot(const std::string& cmdline, std::string* serial) {
    const std::string out = dir_ + "/out.txt", err = dir_ + "/err.txt";
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("PVIO_RUN_DIR", (dir_ + "/run").c_str(), 1);
      ::setenv("TMPDIR", dir_.c_str(), 1);
      const int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(o, 1);
      ::dup2(e, 2);
      ::execl(pvio_.c_str(), pvio_.c_str(), "bench", "--file", image_.c_str(), "--guest-cmdline",
              cmdline.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    std::stringstream s, e;
    s << std::ifstream(out).rdbuf();
    e << std::ifstream(err).rdbuf();
    *serial = s.str();
    stderr_ = e.str();
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  std::vector<std::uint64_t> read_image(std::uint64_t bytes) {
    std::vector<std::uint64_t> words(bytes / 8);
    std::ifstream f(image_, std::ios::binary);
    f.read(reinterpret_cast<char*>(words.data()), static_cast<std::streamsize>(bytes));
    return words;
  }
  // Byte offsets (of 8-byte words) in [0, bytes) that do not hold the pattern of `seed`.
  std::uint64_t pattern_mismatches(std::uint64_t seed, std::uint64_t bytes) {
    const auto words = read_image(bytes);
    std::uint64_t bad = 0;
    for (std::uint64_t i = 0; i < words.size(); ++i)
      if (words[i] != guest::pattern_word(seed, 8 * i)) ++bad;
    return bad;
  }
  void write_pattern(std::uint64_t seed, std::uint64_t bytes) {
    std::vector<std::uint64_t> words(bytes / 8);
    for (std::uint64_t i = 0; i < words.size(); ++i) words[i] = guest::pattern_word(seed, 8 * i);
    std::fstream f(image_, std::ios::binary | std::ios::in | std::ios::out);
    f.write(reinterpret_cast<const char*>(words.data()), static_cast<std::streamsize>(bytes));
  }

  std::string pvio_, dir_, image_, stderr_;
};

TEST_F(PvDiskTest, WrittenThroughIdeReadThroughPv) {
  std::string serial;
  ASSERT_EQ(boot("mode=xcheck from=ide to=pv bs=65536 size=2M seed=21", &serial), 0)
      << serial << stderr_;
  EXPECT_NE(serial.find("pv: vbd 51712 connected"), std::string::npos) << serial;
  EXPECT_EQ(field(serial, "PVIO-RESULT", "verified_blocks"), 32) << serial;
  EXPECT_EQ(field(serial, "PVIO-RESULT", "verify_failures"), 0);
  EXPECT_EQ(field(serial, "PVIO-RESULT", "errors"), 0);
  EXPECT_EQ(field(serial, "PVIO-RESULT", "cpl"), 3);  // both drivers ran in guest user mode
  EXPECT_EQ(pattern_mismatches(21, 2u << 20), 0u);  // and the host sees the same bytes
}

TEST_F(PvDiskTest, WrittenThroughPvReadThroughIde) {
  std::string serial;
  ASSERT_EQ(boot("mode=xcheck from=pv to=ide bs=65536 size=2M seed=22", &serial), 0)
      << serial << stderr_;
  EXPECT_EQ(field(serial, "PVIO-RESULT", "verified_blocks"), 32) << serial;
  EXPECT_EQ(field(serial, "PVIO-RESULT", "verify_failures"), 0);
  EXPECT_EQ(pattern_mismatches(22, 2u << 20), 0u);
}

TEST_F(PvDiskTest, HostWrittenPatternVerifiesThroughPvAtQueueDepth) {
  write_pattern(23, 16u << 20);
  std::string serial;
  ASSERT_EQ(boot("mode=workload disk=pv rw=randread bs=4096 qd=16 count=400 verify=1 seed=23", &serial), 0)
      << serial << stderr_;
  EXPECT_EQ(field(serial, "PVIO-RESULT", "ops"), 400) << serial;
  EXPECT_EQ(field(serial, "PVIO-RESULT", "verified_blocks"), 400);
  EXPECT_EQ(field(serial, "PVIO-RESULT", "verify_failures"), 0);
  EXPECT_GT(field(serial, "PVIO-RESULT", "doorbells"), 0);
  EXPECT_EQ(field(serial, "PVIO-RESULT", "cpl"), 3);  // the PV workload runs at CPL3 by default
}

// At CPL3 the MMIO doorbell is a plain store: the PV I/O completes and verifies with every
// doorbell rung through MMIO and no `out` to the doorbell port trapped into the guest kernel.
// The same run with doorbell=pio shows those traps are counted when they happen.
TEST_F(PvDiskTest, Cpl3PvIoUsesTheMmioDoorbellWithoutPioTraps) {
  write_pattern(27, 4u << 20);
  std::string serial;
  ASSERT_EQ(boot("mode=workload disk=pv rw=randread bs=4096 qd=8 count=300 verify=1 seed=27 "
                 "size=4M", &serial), 0)
      << serial << stderr_;
  EXPECT_EQ(field(serial, "PVIO-RESULT", "cpl"), 3) << serial;
  EXPECT_NE(serial.find("\"doorbell\":\"mmio\""), std::string::npos) << serial;
  EXPECT_EQ(field(serial, "PVIO-RESULT", "verified_blocks"), 300);
  EXPECT_EQ(field(serial, "PVIO-RESULT", "verify_failures"), 0);
  EXPECT_GT(field(serial, "PVIO-RESULT", "mmio_doorbells"), 0);
  EXPECT_EQ(field(serial, "PVIO-RESULT", "mmio_doorbells"),
            field(serial, "PVIO-RESULT", "doorbells"));
  EXPECT_EQ(field(serial, "PVIO-RESULT", "pio_doorbells"), 0);
  EXPECT_EQ(field(serial, "PVIO-RESULT", "cpl3_doorbell_traps"), 0);

  ASSERT_EQ(boot("mode=workload disk=pv rw=randread bs=4096 qd=8 count=100 verify=1 seed=27 "
                 "size=4M doorbell=pio", &serial), 0)
      << serial << stderr_;
  EXPECT_NE(serial.find("\"doorbell\":\"pio\""), std::string::npos) << serial;
  EXPECT_EQ(field(serial, "PVIO-RESULT", "verified_blocks"), 100);
  EXPECT_EQ(field(serial, "PVIO-RESULT", "mmio_doorbells"), 0);
  EXPECT_GT(field(serial, "PVIO-RESULT", "pio_doorbells"), 0);
  EXPECT_EQ(field(serial, "PVIO-RESULT", "cpl3_doorbell_traps"),
            field(serial, "PVIO-RESULT", "pio_doorbells"));
}

TEST_F(PvDiskTest, PvWorkloadStillRunsInTheKernelWithCpl0) {
  write_pattern(26, 1u << 20);
  std::string serial;
  ASSERT_EQ(boot("mode=workload disk=pv rw=randread bs=4096 qd=4 count=8 size=1M verify=1 seed=26 cpl=0", &serial), 0)
      << serial << stderr_;
  EXPECT_EQ(field(serial, "PVIO-RESULT", "verified_blocks"), 8) << serial;
  EXPECT_EQ(field(serial, "PVIO-RESULT", "cpl"), 0);
}

TEST_F(PvDiskTest, HostSeesWhatThePvDiskWrote) {
  // 64 KiB sequential writes at depth 4 through indirect requests, read back by the guest.
  std::string serial;
  ASSERT_EQ(boot("mode=workload disk=pv rw=write bs=65536 qd=4 count=16 size=1M verify=1 seed=24", &serial), 0)
      << serial << stderr_;
  EXPECT_EQ(field(serial, "PVIO-RESULT", "verified_blocks"), 16) << serial;
  EXPECT_EQ(field(serial, "PVIO-RESULT", "verify_failures"), 0);
  EXPECT_GT(field(serial, "PVIO-RESULT", "indirect_requests"), 0);
  EXPECT_EQ(pattern_mismatches(24, 1u << 20), 0u);
}

TEST_F(PvDiskTest, ZeroedImageFailsVerification) {
  // The check itself can fail: an image without the pattern must not verify.
  std::string serial;
  EXPECT_NE(boot("mode=workload disk=pv rw=randread bs=4096 qd=4 count=20 verify=1 seed=25", &serial), 0);
  EXPECT_EQ(field(serial, "PVIO-RESULT", "verify_failures"), 20) << serial;
}

TEST_F(PvDiskTest, BenchWritesTableJsonAndSvg) {
  const std::string out = dir_ + "/bench";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setenv("PVIO_RUN_DIR", (dir_ + "/run").c_str(), 1);
    ::setenv("TMPDIR", dir_.c_str(), 1);
    const int nul = ::open("/dev/null", O_WRONLY);
    ::dup2(nul, 1);
    ::dup2(nul, 2);
    ::execl(pvio_.c_str(), pvio_.c_str(), "bench", "--file", image_.c_str(), "--size", "8M",
            "--time-ms", "200", "--workloads", "rand4k-qd1", "--out", out.c_str(),
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::stringstream j, s;
  j << std::ifstream(out + "/pvio-bench.json").rdbuf();
  s << std::ifstream(out + "/pvio-bench.svg").rdbuf();
  for (const char* e : {"\"engine\":\"ide\"", "\"engine\":\"pv\"", "\"engine\":\"native\""})
    EXPECT_NE(j.str().find(e), std::string::npos) << e << "\n" << j.str();
  EXPECT_EQ(j.str().find("\"ok\":false"), std::string::npos) << j.str();
  EXPECT_EQ(s.str().rfind("<svg", 0), 0u);
  EXPECT_NE(s.str().find("</svg>"), std::string::npos);
}

}  // namespace
}  // namespace pvio::hv
