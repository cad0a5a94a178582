// Xen's emulated-device unplug protocol and the upcall deliveries Windows PV drivers use, end
// to end on KVM: the test guest (mode=unplug, callback=) on pvio-hv, alone or with
// pvio-xenstored and pvio-blkback started by `pvio bench` for its PV disk. What is checked is
// what a guest and the host can see: the guest's result line, pvio-hv's log and counters, and
// the bytes in the disk file.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "hv_test_util.h"
#include "pvio/guest/pattern.h"
#include "pvio/guest/result_line.h"
#include "pvio/test/child_process.h"

namespace pvio::hv {
namespace {

using guest::report_field;
using guest::slurp;

constexpr long long kMagic = 0x49d2, kMagicBlacklisted = 0xd249;

long long result(const std::string& serial, const std::string& key) {
  return report_field(serial, "PVIO-RESULT {", key);
}
// A number in pvio-hv's PVIO-HV-STATS line: the first "key": after `object`'s key.
long long stat(const std::string& err, const std::string& object, const std::string& key) {
  const auto line = err.find("PVIO-HV-STATS ");
  if (line == std::string::npos) return -1;
  const auto obj = err.find("\"" + object + "\":{", line);
  if (obj == std::string::npos) return -1;
  const auto k = err.find("\"" + key + "\":", obj);
  if (k == std::string::npos) return -1;
  return std::atoll(err.c_str() + k + key.size() + 3);
}

class UnplugTest : public HvTest {
 protected:
  UnplugTest() : HvTest("pvio-unplug-test") {}
  void SetUp() override {
    HvTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    disk_ = dir_ + "/disk.img";
    const int fd = ::open(disk_.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, 16 << 20), 0);
    ::close(fd);
  }

  // pvio-hv alone (no Dom0 services): the guest's console in *serial, pvio-hv's log in *err.
  int boot_hv(const std::string& cmdline, std::vector<std::string> extra, std::string* serial,
              std::string* err) {
    const std::string log = dir_ + "/serial.log", err_path = dir_ + "/stderr.txt";
    std::vector<std::string> args = {hv_, "--kernel", guest_, "--mem", "64M", "--cmdline",
                                     cmdline, "--serial-log", log, "--disk", "ide=" + disk_};
    args.insert(args.end(), extra.begin(), extra.end());
    const pid_t pid = test::spawn(args, "", err_path);
    const int rc = test::wait_exit(pid, 120000);
    if (rc < 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    *serial = slurp(log);
    *err = slurp(err_path);
    return rc;
  }

  // The guest with its PV disk on the same file: `pvio bench` starts pvio-xenstored and
  // pvio-blkback in a private run dir and boots pvio-hv once (its log goes to our stderr file).
  int boot_with_pv_disk(const std::string& cmdline, std::string* serial, std::string* err) {
    const char* pvio = std::getenv("PVIO");
    if (pvio == nullptr) {
      ADD_FAILURE() << "PVIO not set (run via meson test)";
      return -1;
    }
    std::filesystem::create_directories(dir_ + "/run");
    const std::string out = dir_ + "/out.txt", err_path = dir_ + "/err.txt";
    const int rc = test::wait_exit(
        test::spawn({pvio, "bench", "--file", disk_, "--guest-cmdline", cmdline}, out, err_path,
                    {{"PVIO_RUN_DIR", dir_ + "/run"}, {"TMPDIR", dir_}}),
        300000);
    *serial = slurp(out);
    *err = slurp(err_path);
    return rc;
  }

  std::uint64_t pattern_mismatches(std::uint64_t seed, std::uint64_t bytes) {
    std::vector<std::uint64_t> words(bytes / 8);
    const int fd = ::open(disk_.c_str(), O_RDONLY);
    EXPECT_EQ(::pread(fd, words.data(), bytes, 0), static_cast<ssize_t>(bytes));
    ::close(fd);
    std::uint64_t bad = 0;
    for (std::size_t i = 0; i < words.size(); ++i) bad += words[i] != guest::pattern_word(seed, 8 * i);
    return bad;
  }
  void write_pattern(std::uint64_t seed, std::uint64_t bytes) {
    std::vector<std::uint64_t> words(bytes / 8);
    for (std::size_t i = 0; i < words.size(); ++i) words[i] = guest::pattern_word(seed, 8 * i);
    const int fd = ::open(disk_.c_str(), O_WRONLY);
    ASSERT_EQ(::pwrite(fd, words.data(), bytes, 0), static_cast<ssize_t>(bytes));
    ::close(fd);
  }

  std::string disk_;
};

// (a) The PV driver's boot path: pattern through IDE (no flush by the guest), product number
// and unplug mask 1, then the PV disk reads the pattern back and the IDE channel is empty.
TEST_F(UnplugTest, IdeWrittenThenUnpluggedAndReadBackThroughThePvDisk) {
  std::string serial, err;
  ASSERT_EQ(boot_with_pv_disk("mode=unplug size=64K seed=32", &serial, &err), 0) << serial << err;
  EXPECT_EQ(result(serial, "magic"), kMagic) << serial;
  EXPECT_EQ(result(serial, "version"), 1);
  EXPECT_EQ(result(serial, "magic_after"), kMagic);
  EXPECT_EQ(result(serial, "unplugged"), 1);
  EXPECT_EQ(result(serial, "ide_status_after"), 0);  // an empty channel
  EXPECT_NE(serial.find("\"ide_identify_after\":\"no data request\""), std::string::npos);
  EXPECT_NE(serial.find("\"read_through\":\"pv\""), std::string::npos);
  EXPECT_NE(serial.find("pv: vbd 51712 connected"), std::string::npos);
  EXPECT_EQ(result(serial, "verified_blocks"), 16);
  EXPECT_EQ(result(serial, "verify_failures"), 0);
  EXPECT_EQ(result(serial, "errors"), 0);
  EXPECT_NE(err.find("xen-platform: PV driver product 65535 (experimental)"), std::string::npos) << err;
  EXPECT_NE(err.find("xen-platform: guest: pvio test guest: PV disk driver loaded"), std::string::npos);
  EXPECT_NE(err.find("xen-platform: unplug: IDE primary master drained, flushed and removed"),
            std::string::npos);
  EXPECT_EQ(stat(err, "xen_platform", "ide_unplugs"), 1);
  EXPECT_EQ(stat(err, "xen_platform", "unplug_requests"), 1);
  EXPECT_EQ(pattern_mismatches(32, 64 << 10), 0u);
}

// (b) The boot-disk hazard: a guest without a PV disk driver never writes the unplug mask, and
// nothing else takes its IDE disk away (neither its Xen start-up nor its protocol handshake).
TEST_F(UnplugTest, GuestWithoutAPvDiskDriverKeepsItsIdeDisk) {
  std::string serial, err;
  ASSERT_EQ(boot_hv("mode=unplug pvdisk=0 size=64K seed=31", {}, &serial, &err), 0) << serial << err;
  EXPECT_EQ(result(serial, "magic"), kMagic) << serial;
  EXPECT_EQ(result(serial, "unplugged"), 0);
  EXPECT_EQ(result(serial, "ide_status_after") & 0x40, 0x40);  // DRDY: the drive is there
  EXPECT_NE(serial.find("\"ide_identify_after\":\"ok\""), std::string::npos);
  EXPECT_NE(serial.find("\"read_through\":\"ide\""), std::string::npos);
  EXPECT_EQ(result(serial, "verified_blocks"), 16);
  EXPECT_EQ(result(serial, "verify_failures"), 0);
  EXPECT_NE(err.find("xen-platform: guest: pvio test guest: no PV disk driver"), std::string::npos) << err;
  EXPECT_EQ(err.find("xen-platform: unplug"), std::string::npos) << err;
  EXPECT_EQ(stat(err, "xen_platform", "unplug_requests"), 0);
  EXPECT_EQ(stat(err, "xen_platform", "ide_unplugs"), 0);
  EXPECT_EQ(pattern_mismatches(31, 64 << 10), 0u);
}

// The port protocol end to end: magic and version as QEMU answers them, a blacklisted build
// reads the other magic, the guest's log line reaches pvio-hv's log, and the IDE disk stays.
TEST_F(UnplugTest, BlacklistedDriverReadsTheOtherMagicAndKeepsTheIdeDisk) {
  std::string serial, err;
  ASSERT_EQ(boot_hv("mode=unplug size=64K seed=34 build=7",
                    {"--pv-driver-blacklist", "experimental/7"}, &serial, &err), 0)
      << serial << err;
  EXPECT_EQ(result(serial, "magic"), kMagic) << serial;
  EXPECT_EQ(result(serial, "version"), 1);
  EXPECT_EQ(result(serial, "magic_after"), kMagicBlacklisted);
  EXPECT_EQ(result(serial, "unplugged"), 0);
  EXPECT_EQ(result(serial, "verified_blocks"), 16);
  EXPECT_NE(err.find("xen-platform: PV driver experimental build 7 is blacklisted"), std::string::npos) << err;
  // Logging is still allowed once the magic was checked.
  EXPECT_NE(err.find("xen-platform: guest: pvio test guest: PV disk driver loaded"), std::string::npos);
  EXPECT_EQ(stat(err, "xen_platform", "blacklisted"), 1);
  EXPECT_EQ(stat(err, "xen_platform", "build"), 7);
  EXPECT_EQ(stat(err, "xen_platform", "ide_unplugs"), 0);
}

// A NIC unplug takes the e1000 off the bus as the guest sees it (its function no longer
// answers the PCI scan) and leaves the IDE disk alone.
TEST_F(UnplugTest, NicUnplugTakesTheE1000OffTheBusAndLeavesTheDisk) {
  std::string serial, err;
  ASSERT_EQ(boot_hv("mode=unplug unplug=2 size=64K seed=37", {"--nic", "e1000"}, &serial, &err), 0)
      << serial << err;
  EXPECT_EQ(result(serial, "unplugged"), 1) << serial;
  EXPECT_EQ(result(serial, "nics_before"), 1);
  EXPECT_EQ(result(serial, "nics_after"), 0);
  EXPECT_NE(serial.find("\"read_through\":\"ide\""), std::string::npos);
  EXPECT_EQ(result(serial, "verified_blocks"), 16);
  EXPECT_NE(err.find("xen-platform: unplug: NIC at 00:4.0 removed"), std::string::npos) << err;
  EXPECT_EQ(stat(err, "xen_platform", "nic_unplugs"), 1);
  EXPECT_EQ(stat(err, "xen_platform", "ide_unplugs"), 0);
}

// (c) The PV disk's completions arrive through each delivery: with poll_us=0 the guest halts
// for every response (and its xenstore handshake waits the same way), so the workload only
// completes if the upcalls come.
TEST_F(UnplugTest, PciIntxCallbackDeliversPvDiskCompletions) {
  write_pattern(33, 1 << 20);
  std::string serial, err;
  ASSERT_EQ(boot_with_pv_disk("mode=workload disk=pv rw=randread bs=4096 qd=4 count=64 verify=1 "
                              "seed=33 size=1M poll_us=0 callback=intx", &serial, &err), 0)
      << serial << err;
  EXPECT_NE(serial.find("xen: upcall on the platform device's INTA# (00:2.0, GSI 17)"),
            std::string::npos) << serial;
  EXPECT_EQ(result(serial, "verified_blocks"), 64) << serial;
  EXPECT_EQ(result(serial, "verify_failures"), 0);
  EXPECT_GT(result(serial, "hlts"), 0);
  EXPECT_GT(result(serial, "upcalls"), 0);
  EXPECT_EQ(stat(err, "ops", "hvm_op.set_param.CALLBACK_IRQ"), 1) << err;
  // The line is level-triggered: every EOI of it came back to pvio-hv as a resample.
  EXPECT_GT(stat(err, "xen", "upcall_resamples"), 0);
}

TEST_F(UnplugTest, GsiCallbackDeliversPvDiskCompletions) {
  write_pattern(35, 1 << 20);
  std::string serial, err;
  ASSERT_EQ(boot_with_pv_disk("mode=workload disk=pv rw=randread bs=4096 qd=4 count=64 verify=1 "
                              "seed=35 size=1M poll_us=0 callback=gsi", &serial, &err), 0)
      << serial << err;
  EXPECT_EQ(result(serial, "verified_blocks"), 64) << serial;
  EXPECT_GT(result(serial, "upcalls"), 0);
  EXPECT_GT(stat(err, "xen", "upcall_resamples"), 0) << err;
}

TEST_F(UnplugTest, PerVcpuUpcallVectorDeliversPvDiskCompletions) {
  write_pattern(36, 1 << 20);
  std::string serial, err;
  ASSERT_EQ(boot_with_pv_disk("mode=workload disk=pv rw=randread bs=4096 qd=4 count=64 verify=1 "
                              "seed=36 size=1M poll_us=0 callback=upcall-vector", &serial, &err), 0)
      << serial << err;
  EXPECT_EQ(result(serial, "verified_blocks"), 64) << serial;
  EXPECT_EQ(result(serial, "verify_failures"), 0);
  EXPECT_GT(result(serial, "hlts"), 0);
  EXPECT_GT(result(serial, "upcalls"), 0);
  EXPECT_EQ(stat(err, "ops", "hvm_op.set_evtchn_upcall_vector"), 1) << err;
  EXPECT_EQ(stat(err, "ops", "hvm_op.set_param.CALLBACK_IRQ"), -1);  // not used at all
  EXPECT_EQ(stat(err, "xen", "upcall_resamples"), 0);                // an edge, not a line
}

}  // namespace
}  // namespace pvio::hv
