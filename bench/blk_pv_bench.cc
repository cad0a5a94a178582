// PV block path from a user-mode guest against the host's own io_uring, in one run.
//
// The guest is this process: a user-mode domain (pvio::domain::Domain) whose blkfront talks
// to a real pvio-blkback (one backend thread; engines uring, aio, null) through the shared
// ring and grants, with xenstore over the guest's ring served by a real pvio-xenstored. I/O is
// issued from guest pages straight into the blkfront core (no FUSE). The peer is io_uring
// reading/writing the same backing file directly on the host, same block sizes and depths.
// Reports IOPS, MB/s, p50/p99 latency, backend CPU time per I/O (utime+stime of pvio-blkback
// from /proc/<pid>/stat), ratios to the host, and writes JSON.
//
//   blk_pv_bench [--seconds S] [--file-mib M] [--json PATH]
#include <fcntl.h>
#include <liburing.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "pvio/blkfront_user/device.h"
#include "pvio/domain/domain.h"
#include "pvio/test/temp_dir.h"
#include "pvio/xenstore/client.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace bf = pvio::blkfront;
namespace bu = pvio::blkfront::user;

struct Workload {
  const char* name;
  bool random;
  bool write;
  std::uint32_t block;
  std::uint32_t depth;
};
const Workload kWorkloads[] = {
    {"randread-4k-qd1", true, false, 4096, 1},
    {"randread-4k-qd32", true, false, 4096, 32},
    {"seqread-64k-qd8", false, false, 65536, 8},
    {"seqwrite-64k-qd8", false, true, 65536, 8},
};

struct Result {
  std::string target;  // "host-io_uring" or "pv-<engine>"
  std::string workload;
  double iops = 0, mbps = 0, p50_us = 0, p99_us = 0;
  double backend_cpu_us_per_io = -1;  // -1: not applicable
};

struct Percentiles {
  double p50 = 0, p99 = 0;
};
Percentiles percentiles(std::vector<std::uint32_t>& ns) {
  if (ns.empty()) return {};
  std::sort(ns.begin(), ns.end());
  return {ns[ns.size() / 2] / 1000.0, ns[std::min(ns.size() - 1, ns.size() * 99 / 100)] / 1000.0};
}

// Offsets: random block-aligned, or sequential wrapping.
struct OffsetGen {
  OffsetGen(const Workload& w, std::uint64_t file_bytes, std::uint64_t seed)
      : w_(w), blocks_(file_bytes / w.block), rng_(seed) {}
  std::uint64_t next() {
    if (w_.random) return (rng_() % blocks_) * w_.block;
    const std::uint64_t o = (seq_++ % blocks_) * w_.block;
    return o;
  }
  const Workload& w_;
  std::uint64_t blocks_;
  std::uint64_t seq_ = 0;
  std::mt19937_64 rng_;
};

double proc_cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return 0;
  const auto rp = line.rfind(')');
  std::vector<std::string> fields;
  std::string tok;
  for (std::size_t i = rp + 2; i <= line.size(); ++i) {
    if (i == line.size() || line[i] == ' ') {
      fields.push_back(tok);
      tok.clear();
    } else {
      tok += line[i];
    }
  }
  // fields[0] is state (field 3); utime is field 14, stime field 15.
  if (fields.size() < 13) return 0;
  return (std::stod(fields[11]) + std::stod(fields[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// ---- host peer: io_uring on the backing file ----
Result run_host(const std::string& path, const Workload& w, double seconds, bool* direct_out) {
  int fd = ::open(path.c_str(), (w.write ? O_RDWR : O_RDONLY) | O_DIRECT);
  *direct_out = fd >= 0;
  if (fd < 0) fd = ::open(path.c_str(), w.write ? O_RDWR : O_RDONLY);
  const std::uint64_t size = std::filesystem::file_size(path);
  io_uring ring;
  io_uring_queue_init(64, &ring, 0);
  std::vector<void*> bufs(w.depth);
  for (auto& b : bufs) {
    if (posix_memalign(&b, 4096, w.block) != 0) std::abort();
    std::memset(b, 0x3C, w.block);
  }
  std::vector<Clock::time_point> start(w.depth);
  std::vector<std::uint32_t> lat;
  lat.reserve(1 << 20);
  OffsetGen gen(w, size, 7);
  auto prep = [&](std::uint32_t slot) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (w.write)
      io_uring_prep_write(sqe, fd, bufs[slot], w.block, gen.next());
    else
      io_uring_prep_read(sqe, fd, bufs[slot], w.block, gen.next());
    io_uring_sqe_set_data64(sqe, slot);
    start[slot] = Clock::now();
  };
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  for (std::uint32_t s = 0; s < w.depth; ++s) prep(s);
  io_uring_submit(&ring);
  std::uint64_t ops = 0;
  std::uint32_t inflight = w.depth;
  bool stopping = false;
  while (inflight > 0) {
    io_uring_cqe* cqe = nullptr;
    if (io_uring_wait_cqe(&ring, &cqe) != 0) break;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++n;
      const auto slot = static_cast<std::uint32_t>(io_uring_cqe_get_data64(cqe));
      const auto now = Clock::now();
      lat.push_back(static_cast<std::uint32_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(now - start[slot]).count()));
      ++ops;
      if (!stopping && now >= end) stopping = true;
      if (stopping) {
        --inflight;
      } else {
        prep(slot);
      }
    }
    io_uring_cq_advance(&ring, n);
    if (!stopping) io_uring_submit(&ring);
  }
  const double el = std::chrono::duration<double>(Clock::now() - t0).count();
  io_uring_queue_exit(&ring);
  for (auto* b : bufs) std::free(b);
  ::close(fd);
  Result r;
  r.target = "host-io_uring";
  r.workload = w.name;
  r.iops = ops / el;
  r.mbps = r.iops * w.block / 1e6;
  const Percentiles p = percentiles(lat);
  r.p50_us = p.p50;
  r.p99_us = p.p99;
  return r;
}

// ---- PV: blkfront in this user-mode domain -> ring + grants -> pvio-blkback ----
struct PvRun {
  bu::Device* dev;
  const Workload* w;
  OffsetGen* gen;
  Clock::time_point end;
  std::vector<bf::BlockIo> ios;
  std::vector<Clock::time_point> start;
  std::vector<std::uint32_t> lat;
  std::uint64_t ops = 0, errors = 0;
  std::uint32_t inflight = 0;
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::vector<bf::DataPage>> pages;
};

void pv_issue(PvRun& r, std::uint32_t slot) {
  bf::BlockIo& io = r.ios[slot];
  const std::vector<bf::DataPage>& pg = r.pages[slot];
  io = bf::BlockIo{};
  io.op = r.w->write ? bf::Op::Write : bf::Op::Read;
  io.sector = r.gen->next() / 512;
  io.nr_sectors = r.w->block / 512;
  io.pages = pg.data();
  io.nr_pages = static_cast<std::uint32_t>(pg.size());
  io.cookie = &r;
  io.done = [](bf::BlockIo* done_io) {
    // Runs on the core thread; resubmitting from here goes straight into the core.
    auto& run = *static_cast<PvRun*>(done_io->cookie);
    const auto slot_id = static_cast<std::uint32_t>(done_io - run.ios.data());
    const auto now = Clock::now();
    run.lat.push_back(static_cast<std::uint32_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(now - run.start[slot_id]).count()));
    ++run.ops;
    if (done_io->status != bf::IoStatus::Ok) ++run.errors;
    if (now < run.end) {
      pv_issue(run, slot_id);
      return;
    }
    std::lock_guard lk(run.m);
    if (--run.inflight == 0) run.cv.notify_all();
  };
  r.start[slot] = Clock::now();
  r.dev->submit(&io);
}

Result run_pv(bu::Device& dev, const std::string& engine, pid_t backend, const Workload& w,
              std::uint64_t file_bytes, double seconds, std::vector<std::vector<bf::DataPage>>& pool) {
  OffsetGen gen(w, file_bytes, 7);
  PvRun r;
  r.dev = &dev;
  r.w = &w;
  r.gen = &gen;
  r.ios.resize(w.depth);
  r.start.resize(w.depth);
  r.lat.reserve(1 << 22);
  const std::uint32_t pages_per_io = w.block / 4096;
  for (std::uint32_t s = 0; s < w.depth; ++s)
    r.pages.emplace_back(pool[s].begin(), pool[s].begin() + pages_per_io);
  const double cpu0 = proc_cpu_seconds(backend);
  const auto t0 = Clock::now();
  r.end = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  r.inflight = w.depth;
  for (std::uint32_t s = 0; s < w.depth; ++s) pv_issue(r, s);
  {
    std::unique_lock lk(r.m);
    r.cv.wait(lk, [&] { return r.inflight == 0; });
  }
  const double el = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu = proc_cpu_seconds(backend) - cpu0;
  Result res;
  res.target = "pv-" + engine;
  res.workload = w.name;
  res.iops = r.ops / el;
  res.mbps = res.iops * w.block / 1e6;
  const Percentiles p = percentiles(r.lat);
  res.p50_us = p.p50;
  res.p99_us = p.p99;
  res.backend_cpu_us_per_io = r.ops ? cpu * 1e6 / r.ops : 0;
  if (r.errors) std::fprintf(stderr, "%s %s: %lu I/O errors\n", res.target.c_str(), w.name,
                             static_cast<unsigned long>(r.errors));
  return res;
}

int sh(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()); }

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2.0;
  std::uint64_t file_mib = 256;
  std::string json_path = "blk_pv_bench.json";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--seconds") seconds = std::atof(argv[i + 1]);
    else if (a == "--file-mib") file_mib = std::strtoull(argv[i + 1], nullptr, 10);
    else if (a == "--json") json_path = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: %s [--seconds S] [--file-mib M] [--json PATH]\n", argv[0]);
      return 2;
    }
  }
  spdlog::set_level(spdlog::level::warn);
  const std::string dir = pvio::test::make_temp_dir("pvio-blk-pv-bench");
  if (dir.empty()) return 1;
  ::setenv("PVIO_RUN_DIR", dir.c_str(), 1);
  ::unsetenv("XENSTORED_PATH");
  ::setenv("PVIO_XENSTORED", PVIO_XENSTORED, 1);
  ::setenv("PVIO_BLKBACK", PVIO_BLKBACK, 1);
  const std::string pvio = PVIO_CLI;
  // The backing file, written once so reads hit real blocks.
  const std::string file = dir + "/disk.img";
  {
    std::ofstream f(file, std::ios::binary);
    std::vector<char> chunk(1 << 20);
    std::mt19937_64 rng(1);
    for (auto& c : chunk) c = static_cast<char>(rng());
    for (std::uint64_t i = 0; i < file_mib; ++i) f.write(chunk.data(), chunk.size());
  }
  const std::uint64_t file_bytes = file_mib << 20;

  std::vector<Result> results;
  bool host_direct = false;
  for (const Workload& w : kWorkloads) results.push_back(run_host(file, w, seconds, &host_direct));

  int domid = 20;
  for (const std::string engine : {"uring", "aio", "null"}) {
    if (sh(pvio + " up --engine " + engine) != 0) {
      std::fprintf(stderr, "pvio up --engine %s failed (see %s)\n", engine.c_str(), dir.c_str());
      return 1;
    }
    pid_t backend = 0;
    std::ifstream(dir + "/blkback.pid") >> backend;
    std::unique_ptr<pvio::domain::Domain> dom;
    pvio::domain::DomainConfig dc;
    dc.domid = static_cast<pvio::domid_t>(++domid);
    dc.memory_bytes = 128u << 20;
    dc.nr_grant_frames = 16;
    if (pvio::domain::Domain::create(dc, &dom) != 0) return 1;
    std::thread loop([&] { dom->run(); });
    auto xs = pvio::xs::Client::connect(dir + "/xenstored.sock");
    const std::string home = "/local/domain/" + std::to_string(dc.domid);
    xs->write(home + "/domid", std::to_string(dc.domid));
    xs->set_perms(home, {{0, pvio::xs::XsPerm::None}, {dc.domid, pvio::xs::XsPerm::Read}});
    xs->introduce(dc.domid, dom->xenstore_gfn(), dom->xenstore_port());
    if (sh(pvio + " block-attach " + std::to_string(dc.domid) + " " + file + " --engine " +
           engine) != 0)
      return 1;
    {
      bu::Device dev(*dom, bu::make_ring_xenstore(*dom), bu::DeviceConfig{});
      if (dev.connect(20000) != 0) {
        std::fprintf(stderr, "connect failed for engine %s\n", engine.c_str());
        return 1;
      }
      std::vector<std::vector<bf::DataPage>> pool(32);
      for (auto& p : pool)
        if (dev.alloc_data_pages(16, &p) != 0) return 1;
      for (const Workload& w : kWorkloads)
        results.push_back(run_pv(dev, engine, backend, w, file_bytes, seconds, pool));
      const bf::Negotiated n = dev.negotiated();
      std::fprintf(stderr, "pv-%s: %u queue(s), ring order %u, persistent %d, indirect %u\n",
                   engine.c_str(), n.nr_queues, n.ring_page_order, n.persistent,
                   n.max_indirect_segments);
      dev.close(5000);
    }
    xs->release(dc.domid);
    dom->stop();
    loop.join();
    sh(pvio + " block-detach " + std::to_string(dc.domid) + " xvda --force");
    sh(pvio + " down");
  }

  auto host_of = [&](const std::string& wl) -> const Result* {
    for (const auto& r : results)
      if (r.target == "host-io_uring" && r.workload == wl) return &r;
    return nullptr;
  };
  std::printf("backing file %lu MiB on %s; host io_uring %s; one pvio-blkback thread; %.1f s "
              "per run\n",
              static_cast<unsigned long>(file_mib), dir.c_str(),
              host_direct ? "O_DIRECT" : "buffered (O_DIRECT refused)", seconds);
  std::printf("%-15s %-18s %11s %9s %9s %9s %12s %9s\n", "target", "workload", "IOPS", "MB/s",
              "p50 us", "p99 us", "be-cpu us/io", "vs host");
  std::ofstream js(json_path);
  js << "{\"seconds\": " << seconds << ", \"file_mib\": " << file_mib
     << ", \"host_o_direct\": " << (host_direct ? "true" : "false") << ", \"results\": [";
  bool first = true;
  for (const auto& r : results) {
    const Result* h = host_of(r.workload);
    const double ratio = h && h->iops > 0 ? r.iops / h->iops : 0;
    char cpu[32];
    if (r.backend_cpu_us_per_io < 0) std::snprintf(cpu, sizeof cpu, "-");
    else std::snprintf(cpu, sizeof cpu, "%.2f", r.backend_cpu_us_per_io);
    std::printf("%-15s %-18s %11.0f %9.1f %9.1f %9.1f %12s %8.2fx\n", r.target.c_str(),
                r.workload.c_str(), r.iops, r.mbps, r.p50_us, r.p99_us, cpu, ratio);
    js << (first ? "" : ",") << "\n  {\"target\": \"" << r.target << "\", \"workload\": \""
       << r.workload << "\", \"iops\": " << r.iops << ", \"mbps\": " << r.mbps
       << ", \"p50_us\": " << r.p50_us << ", \"p99_us\": " << r.p99_us
       << ", \"backend_cpu_us_per_io\": " << r.backend_cpu_us_per_io
       << ", \"ratio_to_host_iops\": " << ratio << "}";
    first = false;
  }
  js << "\n]}\n";
  std::printf("JSON: %s\n", json_path.c_str());
  pvio::test::remove_temp_dir(dir);
  return 0;
}
