// Emulated IDE on pvio-hv: 4 KiB random reads at QD1 measured inside the guest (TSC), over PIO
// and bus-master DMA, against host-native pread on the same backing file in the same run.
// Also reports VM exits per I/O from pvio-hv's per-device counters, by differencing a run of
// N+1 I/Os against a run of 1 I/O so boot and PCI probing cancel out.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "pvio/guest/result_line.h"
#include "pvio/hypervisor/vm.h"
#include "pvio/test/temp_dir.h"

namespace {

constexpr std::uint64_t kDiskBytes = 64ull << 20;
constexpr int kOps = 2000;

using pvio::guest::report_field;
using pvio::guest::slurp;

std::string g_dir, g_disk;

struct GuestRun {
  long long ops = -1, iops = -1, p50 = -1, p99 = -1, errors = -1, ide_exits = -1;
};

GuestRun run_guest(const std::string& xfer, int count) {
  const std::string log = g_dir + "/serial.log", err = g_dir + "/stderr.txt";
  const std::string cmd = std::string(PVIO_HV) + " --kernel " + PVIO_GUEST +
                          " --mem 128M --disk ide=" + g_disk + " --serial-log " + log +
                          " --cmdline 'disk=ide xfer=" + xfer + " rw=randread bs=4096 count=" +
                          std::to_string(count) + " seed=7' 2>" + err;
  GuestRun r;
  if (std::system(cmd.c_str()) != 0) return r;
  const std::string out = slurp(log), stats = slurp(err);
  r.ops = report_field(out, "PVIO-RESULT", "ops");
  r.iops = report_field(out, "PVIO-RESULT", "iops");
  r.p50 = report_field(out, "PVIO-RESULT", "p50_ns");
  r.p99 = report_field(out, "PVIO-RESULT", "p99_ns");
  r.errors = report_field(out, "PVIO-RESULT", "errors");
  r.ide_exits = report_field(stats, "\"ide\":{", "pio_exits");
  return r;
}

double g_iops[2] = {0, 0};  // pio, dma
double g_native_iops = 0;

void BM_IdeGuestRandRead4K(benchmark::State& state) {
  const std::string xfer = state.range(0) ? "dma" : "pio";
  GuestRun base, run;
  for (auto _ : state) {
    base = run_guest(xfer, 1);
    run = run_guest(xfer, kOps + 1);
  }
  if (run.ops != kOps + 1 || run.errors != 0 || base.ide_exits < 0) {
    state.SkipWithError("guest run failed");
    return;
  }
  const double exits_per_io = static_cast<double>(run.ide_exits - base.ide_exits) / kOps;
  state.counters["guest_iops"] = static_cast<double>(run.iops);
  state.counters["p50_us"] = run.p50 / 1000.0;
  state.counters["p99_us"] = run.p99 / 1000.0;
  state.counters["vm_exits_per_io"] = exits_per_io;
  g_iops[state.range(0)] = static_cast<double>(run.iops);
}
BENCHMARK(BM_IdeGuestRandRead4K)->Arg(0)->Arg(1)->ArgNames({"dma"})->Iterations(1)
    ->Unit(benchmark::kMillisecond);

// The peer: the host reading the same file the same way (4 KiB random pread, QD1).
void BM_HostPreadRandRead4K(benchmark::State& state) {
  const int fd = ::open(g_disk.c_str(), O_RDONLY);
  std::vector<char> buf(4096);
  std::mt19937_64 rng(7);
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    const off_t off = static_cast<off_t>((rng() % (kDiskBytes / 4096)) * 4096);
    benchmark::DoNotOptimize(::pread(fd, buf.data(), buf.size(), off));
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (secs > 0) g_native_iops = static_cast<double>(state.iterations()) / secs;
  ::close(fd);
  state.counters["wall_iops"] = g_native_iops;
}
BENCHMARK(BM_HostPreadRandRead4K)->MinTime(0.5);

}  // namespace

int main(int argc, char** argv) {
  std::string why;
  if (!pvio::hv::Vm::kvm_available(&why)) {
    std::fprintf(stderr, "hv_ide_bench: %s\n", why.c_str());
    return 0;
  }
  g_dir = pvio::test::make_temp_dir("pvio-hv-bench");
  if (g_dir.empty()) return 1;
  g_disk = g_dir + "/disk.img";
  {
    const int fd = ::open(g_disk.c_str(), O_RDWR | O_CREAT, 0644);
    std::vector<char> chunk(1 << 20, 0x5a);
    for (std::uint64_t off = 0; off < kDiskBytes; off += chunk.size())
      if (::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(off)) < 0) return 1;
    ::close(fd);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (g_native_iops > 0) {
    std::printf("\n4 KiB random read, QD1, same file:   IOPS      ratio to host pread\n");
    std::printf("  host pread (native)                 %10.0f  1.000\n", g_native_iops);
    std::printf("  guest IDE PIO on pvio-hv            %10.0f  %.5f\n", g_iops[0], g_iops[0] / g_native_iops);
    std::printf("  guest IDE DMA on pvio-hv            %10.0f  %.5f\n", g_iops[1], g_iops[1] / g_native_iops);
  }
  pvio::test::remove_temp_dir(g_dir);
  return 0;
}
