// blkback's datapath cost, with its peer in the same run:
//  - framework: requests/s through the shared ring + grant mapping (or persistent grants) +
//    the null engine, served by the backend's worker thread, against the same null engine
//    driven directly with the same requests (no ring, no grants, no thread hop);
//  - 4 KiB random read at QD32 through ring + grants + the io_uring engine, against the same
//    engine driven directly on the same file at the same depth.
// A closing table prints each pair's requests/s and the ratio datapath / direct.
#include <benchmark/benchmark.h>
#include <poll.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <string>

#include "../tests/blkback/blkback_datapath_guest.h"
#include "pvio/blkback/blkback.h"

#include "bench_file.h"
#include "bench_main.h"

namespace {

using namespace pvio;
using namespace pvio::blkback;
using pvio::blkback::test::GuestQueue;
using pvio::blkback::test::TestGuest;

constexpr std::uint64_t kFileSize = 64 << 20;
constexpr domid_t kDomid = 3;

const pvio::bench::BenchFile& bench_file() {
  static const pvio::bench::BenchFile file(
      "pvio-blkdp", kFileSize,
      [](std::vector<std::uint8_t>& chunk, std::uint64_t) { chunk.assign(chunk.size(), 0x5A); });
  return file;
}

// Guest side: `depth` requests kept in flight, each one 4 KiB segment on its own granted page.
// Every response is answered with a new request for a random 4 KiB block.
void run_through_ring(benchmark::State& state, const char* engine, bool persistent,
                      unsigned depth, unsigned ring_order) {
  TestGuest guest(kDomid, 2048);
  GuestQueue q(guest, ring_order);
  std::vector<grant_ref_t> grefs;
  for (unsigned i = 0; i < depth; ++i)
    grefs.push_back(guest.gnttab().grant_access(0, guest.alloc_page(), false));
  DeviceConfig cfg;
  cfg.frontend_domid = kDomid;
  cfg.memory = &guest.memory();
  cfg.grant_table_gfns = guest.table_gfns();
  cfg.engine = engine;
  cfg.backing = BackingOptions{bench_file().path(), false, DirectIo::Auto};
  cfg.persistent = persistent;
  cfg.max_in_flight = std::max(depth, 32u);
  cfg.queues.push_back(q.config());
  Device dev(cfg);
  dev.start();

  std::mt19937_64 rng(1);
  const std::uint64_t blocks = kFileSize / 4096;
  auto post = [&](std::uint64_t id) {
    blkif::blkif_request r{};
    r.operation = blkif::kOpRead;
    r.nr_segments = 1;
    r.id = id;
    r.sector_number = (rng() % blocks) * 8;
    r.seg[0] = {grefs[id], 0, 7};
    q.post(r);
  };
  for (unsigned i = 0; i < depth; ++i) post(i);
  q.push();
  std::uint64_t done = 0, errors = 0;
  for (auto _ : state) {
    // One iteration: consume whatever responses are there (waiting if none), repost them.
    const auto rsps = q.wait(1);
    for (const auto& r : rsps) {
      errors += r.status != blkif::kRspOkay;
      post(r.id);
    }
    done += rsps.size();
    q.push();
  }
  // Drain what is still in flight before the device goes away.
  q.wait(depth);
  state.SetItemsProcessed(static_cast<std::int64_t>(done));
  state.counters["errors"] = static_cast<double>(errors);
  state.counters["notifications"] = static_cast<double>(dev.stats().notifications);
}

// The same engine, the same requests, driven directly: submit `depth`, reap, resubmit.
void run_direct(benchmark::State& state, const char* engine, unsigned depth) {
  EngineConfig ec;
  ec.queue_depth = std::max(depth, 32u);
  ec.max_segments = 11;
  auto e = make_engine(engine, BackingOptions{bench_file().path(), false, DirectIo::Auto}, ec);
  std::vector<std::uint8_t*> bufs;
  for (unsigned i = 0; i < depth; ++i)
    bufs.push_back(static_cast<std::uint8_t*>(std::aligned_alloc(4096, 4096)));
  std::vector<iovec> iov(depth);
  std::mt19937_64 rng(1);
  const std::uint64_t blocks = kFileSize / 4096;
  std::vector<IoRequest> reqs;
  auto make = [&](std::uint64_t tag) {
    iov[tag] = {bufs[tag], 4096};
    IoRequest r;
    r.op = IoOp::Read;
    r.offset = (rng() % blocks) * 4096;
    r.iov = &iov[tag];
    r.iovcnt = 1;
    r.tag = tag;
    return r;
  };
  for (unsigned i = 0; i < depth; ++i) reqs.push_back(make(i));
  e->submit(reqs);
  std::vector<IoCompletion> cq(depth);
  std::uint64_t done = 0, errors = 0;
  for (auto _ : state) {
    const std::size_t n = e->reap(cq, 1);
    reqs.clear();
    for (std::size_t i = 0; i < n; ++i) {
      errors += cq[i].result != 4096;
      reqs.push_back(make(cq[i].tag));
    }
    e->submit(reqs);
    done += n;
  }
  while (e->in_flight() > 0) e->reap(cq, 1);
  for (auto* b : bufs) std::free(b);
  state.SetItemsProcessed(static_cast<std::int64_t>(done));
  state.counters["errors"] = static_cast<double>(errors);
}

void BM_NullRing(benchmark::State& s) { run_through_ring(s, "null", false, 32, 0); }
void BM_NullRingPersistent(benchmark::State& s) { run_through_ring(s, "null", true, 32, 0); }
void BM_NullRingDeep(benchmark::State& s) { run_through_ring(s, "null", true, 128, 2); }
void BM_NullDirect(benchmark::State& s) { run_direct(s, "null", 32); }
void BM_UringRing(benchmark::State& s) { run_through_ring(s, "uring", false, 32, 0); }
void BM_UringRingPersistent(benchmark::State& s) { run_through_ring(s, "uring", true, 32, 0); }
void BM_UringDirect(benchmark::State& s) { run_direct(s, "uring", 32); }

BENCHMARK(BM_NullRing)->Name("null/ring_mapped_qd32")->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_NullRingPersistent)->Name("null/ring_persistent_qd32")->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_NullRingDeep)->Name("null/ring_persistent_qd128_order2")->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_NullDirect)->Name("null/direct_qd32")->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_UringRing)->Name("uring/ring_mapped_qd32")->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_UringRingPersistent)->Name("uring/ring_persistent_qd32")->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_UringDirect)->Name("uring/direct_qd32")->UseRealTime()->MinTime(1.0);

// Requests/s per run and the ratio to the direct run of the same engine.
class DatapathRatios final : public pvio::bench::RatioReporter {
  void collect(const Run& r) override {
    auto it = r.counters.find("items_per_second");
    if (it == r.counters.end()) return;
    const std::string name = r.run_name.function_name;
    rates_[name.substr(0, name.find('/'))][name.substr(name.find('/') + 1)] = it->second.value;
  }
  void print_ratios() override {
    std::printf("\n%-8s %-32s %14s %14s %8s\n", "engine", "path", "req/s", "direct req/s",
                "ratio");
    for (auto& [engine, m] : rates_) {
      const auto d = m.find("direct_qd32");
      const double direct = d == m.end() ? 0.0 : d->second;
      for (auto& [path, rate] : m) {
        if (path == "direct_qd32") continue;
        std::printf("%-8s %-32s %14.0f %14.0f %8.2f\n", engine.c_str(), path.c_str(), rate,
                    direct, direct > 0 ? rate / direct : 0.0);
      }
    }
  }

  std::map<std::string, std::map<std::string, double>> rates_;
};

}  // namespace

int main(int argc, char** argv) {
  return pvio::bench::run_benchmarks<DatapathRatios>(argc, argv);
}
