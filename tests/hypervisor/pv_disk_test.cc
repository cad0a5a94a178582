// The PV disk of the HVM test guest end to end, with real processes: pvio-xenstored and
// pvio-blkback (started by `pvio bench` in a private run dir), pvio-hv with the emulated IDE disk
// and the PV disk (xvda) on one backing file, and the guest's blkfront. The same bytes must be
// seen through IDE, through PV and from the host side on the backing file.
#include <fcntl.h>
#include <sys/statfs.h>
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
#include "pvio/guest/result_line.h"
#include "pvio/hypervisor/vm.h"
#include "pvio/test/child_process.h"
#include "pvio/test/temp_dir.h"

namespace pvio::hv {
namespace {

using guest::report_field;
using guest::slurp;

class PvDiskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!Vm::kvm_available(&why)) GTEST_SKIP() << "KVM is not usable here (" << why << ")";
    const char* pvio = std::getenv("PVIO");
    ASSERT_NE(pvio, nullptr) << "PVIO not set (run via meson test)";
    pvio_ = pvio;
    dir_ = test::make_temp_dir("pvio-pv-disk-test");
    ASSERT_FALSE(dir_.empty());
    image_ = dir_ + "/disk.img";
    std::filesystem::create_directories(dir_ + "/run");
    std::ofstream(image_).close();
    std::filesystem::resize_file(image_, 16u << 20);
  }
  void TearDown() override { test::remove_temp_dir(dir_); }

  // Boots the guest once with `cmdline` (both disks on the image); returns pvio's exit status
  // and the guest's console in *serial.
  int boot(const std::string& cmdline, std::string* serial, unsigned vcpus = 1) {
    const std::string out = dir_ + "/out.txt", err = dir_ + "/err.txt";
    const int rc = test::wait_exit(
        test::spawn({pvio_, "bench", "--file", image_, "--vcpus", std::to_string(vcpus),
                     "--guest-cmdline", cmdline},
                    out, err, env()));
    *serial = slurp(out);
    stderr_ = slurp(err);
    return rc;
  }
  // pvio bench's Dom0 services and temp files stay inside the test's dir.
  std::vector<std::pair<std::string, std::string>> env() const {
    return {{"PVIO_RUN_DIR", dir_ + "/run"}, {"TMPDIR", dir_}};
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
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verified_blocks"), 32) << serial;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verify_failures"), 0);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "errors"), 0);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "cpl"), 3);  // both drivers ran in guest user mode
  EXPECT_EQ(pattern_mismatches(21, 2u << 20), 0u);  // and the host sees the same bytes
}

TEST_F(PvDiskTest, WrittenThroughPvReadThroughIde) {
  std::string serial;
  ASSERT_EQ(boot("mode=xcheck from=pv to=ide bs=65536 size=2M seed=22", &serial), 0)
      << serial << stderr_;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verified_blocks"), 32) << serial;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verify_failures"), 0);
  EXPECT_EQ(pattern_mismatches(22, 2u << 20), 0u);
}

TEST_F(PvDiskTest, HostWrittenPatternVerifiesThroughPvAtQueueDepth) {
  write_pattern(23, 16u << 20);
  std::string serial;
  ASSERT_EQ(boot("mode=workload disk=pv rw=randread bs=4096 qd=16 count=400 verify=1 seed=23", &serial), 0)
      << serial << stderr_;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "ops"), 400) << serial;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verified_blocks"), 400);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verify_failures"), 0);
  EXPECT_GT(report_field(serial, "PVIO-RESULT", "doorbells"), 0);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "cpl"), 3);  // the PV workload runs at CPL3 by default
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
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "cpl"), 3) << serial;
  EXPECT_NE(serial.find("\"doorbell\":\"mmio\""), std::string::npos) << serial;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verified_blocks"), 300);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verify_failures"), 0);
  EXPECT_GT(report_field(serial, "PVIO-RESULT", "mmio_doorbells"), 0);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "mmio_doorbells"),
            report_field(serial, "PVIO-RESULT", "doorbells"));
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "pio_doorbells"), 0);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "cpl3_doorbell_traps"), 0);

  ASSERT_EQ(boot("mode=workload disk=pv rw=randread bs=4096 qd=8 count=100 verify=1 seed=27 "
                 "size=4M doorbell=pio", &serial), 0)
      << serial << stderr_;
  EXPECT_NE(serial.find("\"doorbell\":\"pio\""), std::string::npos) << serial;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verified_blocks"), 100);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "mmio_doorbells"), 0);
  EXPECT_GT(report_field(serial, "PVIO-RESULT", "pio_doorbells"), 0);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "cpl3_doorbell_traps"),
            report_field(serial, "PVIO-RESULT", "pio_doorbells"));
}

TEST_F(PvDiskTest, PvWorkloadStillRunsInTheKernelWithCpl0) {
  write_pattern(26, 1u << 20);
  std::string serial;
  ASSERT_EQ(boot("mode=workload disk=pv rw=randread bs=4096 qd=4 count=8 size=1M verify=1 seed=26 cpl=0", &serial), 0)
      << serial << stderr_;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verified_blocks"), 8) << serial;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "cpl"), 0);
}

TEST_F(PvDiskTest, HostSeesWhatThePvDiskWrote) {
  // 64 KiB sequential writes at depth 4 through indirect requests, read back by the guest.
  std::string serial;
  ASSERT_EQ(boot("mode=workload disk=pv rw=write bs=65536 qd=4 count=16 size=1M verify=1 seed=24", &serial), 0)
      << serial << stderr_;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verified_blocks"), 16) << serial;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verify_failures"), 0);
  EXPECT_GT(report_field(serial, "PVIO-RESULT", "indirect_requests"), 0);
  EXPECT_EQ(pattern_mismatches(24, 1u << 20), 0u);
}

// Multi-queue: with two vCPUs the guest opens two blkif queues (multi-queue-num-queues) and
// vCPU q drives queue q; pvio-blkback serves each from its own thread. Random writes from both
// queues are read back through both and verified; on the host every 4 KiB block of the image
// is either untouched or holds the pattern, and the written ones are there.
TEST_F(PvDiskTest, TwoVcpusDriveOneQueueEachAndWritesReadBack) {
  std::string serial;
  ASSERT_EQ(boot("mode=workload disk=pv rw=randwrite bs=4096 qd=8 count=2000 size=4M verify=1 "
                 "seed=28", &serial, 2), 0)
      << serial << stderr_;
  EXPECT_NE(serial.find("booted on 2 vcpu(s)"), std::string::npos) << serial;
  EXPECT_NE(serial.find("2 queue(s)"), std::string::npos) << serial;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "queues"), 2) << serial;
  EXPECT_NE(serial.find("\"queue_ops\":[1000,1000]"), std::string::npos) << serial;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "ops"), 2000);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verified_blocks"), 2000);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verify_failures"), 0);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "errors"), 0);
  const auto words = read_image(4u << 20);
  std::uint64_t written = 0, bad = 0;
  for (std::uint64_t b = 0; b < (4u << 20) / 4096; ++b) {
    bool zero = true, pattern = true;
    for (std::uint64_t k = 0; k < 512; ++k) {
      const std::uint64_t w = words[b * 512 + k];
      zero = zero && w == 0;
      pattern = pattern && w == guest::pattern_word(28, b * 4096 + 8 * k);
    }
    written += pattern;
    bad += !zero && !pattern;
  }
  EXPECT_EQ(bad, 0u);
  EXPECT_GT(written, 500u);  // 2000 random writes over 1024 blocks touch most of them
}

// Sequential reads on two queues: each queue walks its own half of the disk.
TEST_F(PvDiskTest, TwoQueuesReadTheirOwnHalvesSequentially) {
  write_pattern(29, 4u << 20);
  std::string serial;
  ASSERT_EQ(boot("mode=workload disk=pv rw=read bs=65536 qd=4 count=64 size=4M verify=1 seed=29",
                 &serial, 2), 0)
      << serial << stderr_;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "queues"), 2) << serial;
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verified_blocks"), 64);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verify_failures"), 0);
}

TEST_F(PvDiskTest, ZeroedImageFailsVerification) {
  // The check itself can fail: an image without the pattern must not verify.
  std::string serial;
  EXPECT_NE(boot("mode=workload disk=pv rw=randread bs=4096 qd=4 count=20 verify=1 seed=25", &serial), 0);
  EXPECT_EQ(report_field(serial, "PVIO-RESULT", "verify_failures"), 20) << serial;
}

// The row of `engine` for `workload` in pvio-bench.json: its "iops" (-1 when absent) and "ok".
struct BenchRow {
  double iops = -1;
  bool ok = false;
};
BenchRow bench_row(const std::string& j, const std::string& engine, const std::string& workload) {
  BenchRow r;
  const auto at = j.find("{\"engine\":\"" + engine + "\",\"workload\":\"" + workload + "\"");
  if (at == std::string::npos) return r;
  const auto end = j.find('\n', at);
  const std::string line = j.substr(at, end - at);
  const auto k = line.find("\"iops\":");
  if (k != std::string::npos) r.iops = std::atof(line.c_str() + k + 7);
  r.ok = line.find("\"ok\":true") != std::string::npos;
  return r;
}

// The string value of "key": in the JSON text, or "".
std::string json_string(const std::string& j, const std::string& key, std::size_t from = 0) {
  const auto k = j.find("\"" + key + "\":", from);
  if (k == std::string::npos) return "";
  auto v = j.find_first_not_of(" ", k + key.size() + 3);
  if (v == std::string::npos || j[v] != '"') return "";
  return j.substr(v + 1, j.find('"', v + 1) - v - 1);
}

const char* const kNativeEngines[] = {"native-psync", "native-libaio", "native-uring", "native-uring-reg",
                                      "native-uring-sqpoll"};

// Every native engine has its row with a figure, best_native names the one with the most IOPS
// (what the ratios use), and best_native_one_thread the one with the most among those that keep
// one host thread busy at this queue depth (psync has one per slot, SQPOLL a kernel thread too).
void expect_native_rows(const std::string& j, const std::string& table, const std::string& workload,
                        unsigned qd) {
  std::string best_engine, best_one;
  double best_iops = -1, best_one_iops = -1;
  for (const char* e : kNativeEngines) {
    const BenchRow r = bench_row(j, e, workload);
    EXPECT_TRUE(r.ok) << e << "\n" << j;
    EXPECT_GT(r.iops, 0) << e << "\n" << j;
    EXPECT_NE(table.find(e), std::string::npos) << e << "\n" << table;
    if (r.iops > best_iops) {
      best_iops = r.iops;
      best_engine = e;
    }
    const std::string name = e;
    const bool one_thread = name == "native-psync" ? qd == 1 : name != "native-uring-sqpoll";
    if (one_thread && r.iops > best_one_iops) {
      best_one_iops = r.iops;
      best_one = e;
    }
  }
  const auto bn = j.find("\"best_native\":");
  ASSERT_NE(bn, std::string::npos) << j;
  EXPECT_EQ(json_string(j, workload, bn), best_engine) << j;
  EXPECT_NE(table.find(best_engine + " *"), std::string::npos) << table;
  const auto b1 = j.find("\"best_native_one_thread\":");
  ASSERT_NE(b1, std::string::npos) << j;
  EXPECT_EQ(json_string(j, workload, b1), best_one) << j;
  EXPECT_NE(table.find(best_one + (best_one == best_engine ? " * +" : " +")), std::string::npos) << table;
}

// The medium pvio bench names for a file under `dir`, checked against statfs of `dir`.
void expect_medium_of(const std::string& j, const std::string& table, const std::string& dir) {
  struct statfs sf{};
  ASSERT_EQ(::statfs(dir.c_str(), &sf), 0);
  const std::string medium = json_string(j, "medium");
  if (sf.f_type == 0x01021994) EXPECT_EQ(medium.rfind("tmpfs", 0), 0u) << medium;  // TMPFS_MAGIC
  else EXPECT_NE(medium.find(" on "), std::string::npos) << medium;                // "ext4 on /dev/..."
  EXPECT_NE(table.find("medium: " + medium), std::string::npos) << table;
}

TEST_F(PvDiskTest, BenchWritesTableJsonAndSvg) {
  const std::string out = dir_ + "/bench";
  const pid_t pid = test::spawn({pvio_, "bench", "--file", image_, "--size", "8M", "--time-ms",
                                 "200", "--workloads", "rand4k-qd1", "--out", out},
                                dir_ + "/table.txt", "", env());
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const std::string j = slurp(out + "/pvio-bench.json"), s = slurp(out + "/pvio-bench.svg");
  const std::string table = slurp(dir_ + "/table.txt");
  for (const char* e : {"\"engine\":\"ide\"", "\"engine\":\"pv\""})
    EXPECT_NE(j.find(e), std::string::npos) << e << "\n" << j;
  expect_native_rows(j, table, "rand4k-qd1", 1);
  expect_medium_of(j, table, dir_);
  for (const char* e : kNativeEngines) EXPECT_NE(s.find(std::string(e) + " rand4k-qd1"), std::string::npos) << e;
  // Host CPU per I/O over the guest's timed phase (between its PVIO-PHASE lines): guest and
  // backend for pv and ide, the process for native; all measured, none null.
  for (const char* e : {"pv", "ide", "native-psync"}) {
    const auto at = j.find("{\"engine\":\"" + std::string(e) + "\",\"workload\":\"rand4k-qd1\"");
    ASSERT_NE(at, std::string::npos) << e;
    const std::string row = j.substr(at, j.find('\n', at) - at);
    EXPECT_NE(row.find("\"cpu_ns_per_io\":"), std::string::npos) << row;
    EXPECT_EQ(row.find("\"cpu_ns_per_io\":null"), std::string::npos) << row;
    if (std::string(e) != "native-psync") {
      EXPECT_NE(row.find("\"guest_cpu_ns_per_io\":"), std::string::npos) << row;
      EXPECT_NE(row.find("\"backend_cpu_ns_per_io\":"), std::string::npos) << row;
    }
  }
  EXPECT_NE(table.find("CPU us/IO"), std::string::npos) << table;
  EXPECT_EQ(j.find("\"ok\":false"), std::string::npos) << j;
  EXPECT_EQ(s.rfind("<svg", 0), 0u);
  EXPECT_NE(s.find("</svg>"), std::string::npos);
}

TEST_F(PvDiskTest, BenchDiskMediumNamesTheWorkDirFileSystem) {
  // --medium disk: a new image on the work dir's file system (TMPDIR is the test's dir).
  const std::string out = dir_ + "/bench";
  const pid_t pid = test::spawn({pvio_, "bench", "--medium", "disk", "--engines", "native", "--size", "8M",
                                 "--time-ms", "200", "--workloads", "rand4k-qd32", "--out", out},
                                dir_ + "/table.txt", "", env());
  EXPECT_EQ(test::wait_exit(pid), 0);
  const std::string j = slurp(out + "/pvio-bench.json"), table = slurp(dir_ + "/table.txt");
  expect_native_rows(j, table, "rand4k-qd32", 32);
  expect_medium_of(j, table, dir_);
}

// --vcpus 2: the multi-queue rows. PV on 1 and 2 queues (each run's guest opened that many)
// beside every native engine on 1 and 2 host threads, and the table that compares them.
TEST_F(PvDiskTest, BenchVcpusAddsMultiQueueRows) {
  const std::string out = dir_ + "/bench";
  const pid_t pid = test::spawn({pvio_, "bench", "--file", image_, "--size", "8M", "--time-ms",
                                 "200", "--workloads", "rand4k-qd32", "--engines", "pv,native",
                                 "--vcpus", "2", "--out", out},
                                dir_ + "/table.txt", dir_ + "/bench-err.txt", env());
  EXPECT_EQ(test::wait_exit(pid), 0) << slurp(dir_ + "/bench-err.txt");
  const std::string j = slurp(out + "/pvio-bench.json"), table = slurp(dir_ + "/table.txt");
  for (const char* row : {"rand4k-qd32/1q", "rand4k-qd32/2q"}) {
    const BenchRow pv = bench_row(j, "pv", row);
    EXPECT_TRUE(pv.ok) << row << "\n" << j;
    EXPECT_GT(pv.iops, 0) << row;
    for (const char* e : kNativeEngines) {
      const BenchRow n = bench_row(j, e, row);
      EXPECT_TRUE(n.ok) << e << " " << row << "\n" << j;
      EXPECT_GT(n.iops, 0) << e << " " << row;
    }
  }
  EXPECT_NE(j.find("\"queues\":2"), std::string::npos) << j;
  EXPECT_NE(j.find("\"threads\":2"), std::string::npos) << j;
  EXPECT_NE(table.find("multi-queue:"), std::string::npos) << table;
  EXPECT_NE(table.find("| rand4k-qd32 | 2 | "), std::string::npos) << table;
  EXPECT_EQ(table.find("failed"), std::string::npos) << table;
}

}  // namespace
}  // namespace pvio::hv
