// Cost of the blkfront core per 4 KiB I/O at queue depth 32, against a null backend that
// answers every request without touching data. Peer in the same run: the bare minimum the
// protocol needs for the same I/O (FrontRing/BackRing round trip plus one grant and its end
// per request, built by hand). The ratio is the core's overhead (tag table, splitting, I/O
// bookkeeping, completion callbacks); the persistent case adds a 4 KiB copy per I/O.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>

#include "../tests/blkfront/harness.h"

namespace {

using namespace pvio;
using namespace pvio::blkfront;
using namespace pvio::blkfront::test;

constexpr int kDepth = 32;
std::map<std::string, double> g_rate;  // I/Os per second, by benchmark name

struct Rig {
  explicit Rig(bool persistent) {
    BackendConfig cfg;
    cfg.persistent = persistent;
    be = std::make_unique<TestBackend>(dom, xs, cfg);
    Limits lim;
    lim.pool_pages = 64;
    const std::size_t bytes = Blkfront::storage_bytes(lim);
    storage.assign(bytes / sizeof(std::max_align_t) + 1, std::max_align_t{});
    fe = std::make_unique<Blkfront>(pf, kDevid, lim, storage.data(), bytes);
    fe->start();
    be->init_wait();
    fe->backend_changed();
    be->connect();
    fe->backend_changed();
    for (int i = 0; i < kDepth; ++i) {
      GuestPages p;
      dom.alloc(0, p);
      pages[i] = {p.gfn, p.addr};
    }
  }
  GuestDomain dom;
  XsWorld xs;
  TestPlatform pf{dom, xs};
  std::unique_ptr<TestBackend> be;
  std::vector<std::max_align_t> storage;
  std::unique_ptr<Blkfront> fe;
  DataPage pages[kDepth];
};

void null_backend(TestBackend& be) {
  auto& r = be.rings[0];
  ring::RingCheck c = r.unconsumed_requests();
  while (c.count > 0) {
    for (std::uint32_t i = 0; i < c.count; ++i) {
      blkif::blkif_request req;
      r.consume_request(req);
      blkif::blkif_response rsp{};
      rsp.id = req.id;
      rsp.operation = req.operation;
      rsp.status = blkif::kRspOkay;
      r.produce_response(rsp);
    }
    r.push_responses();
    c = r.unconsumed_requests();
  }
}

void run_core(benchmark::State& state, bool persistent, const char* name) {
  Rig rig(persistent);
  if (!rig.fe->connected()) {
    state.SkipWithError("frontend did not connect");
    return;
  }
  int done = 0;
  BlockIo ios[kDepth];
  for (int i = 0; i < kDepth; ++i) {
    ios[i].op = Op::Read;
    ios[i].sector = static_cast<std::uint64_t>(i) * 8;
    ios[i].nr_sectors = 8;
    ios[i].pages = &rig.pages[i];
    ios[i].nr_pages = 1;
    ios[i].cookie = &done;
    ios[i].done = [](BlockIo* io) { ++*static_cast<int*>(io->cookie); };
  }
  std::uint64_t n = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    done = 0;
    for (auto& io : ios) rig.fe->submit(&io);
    null_backend(*rig.be);
    rig.fe->handle_event(0);
    if (done != kDepth) {
      state.SkipWithError("I/Os did not complete");
      break;
    }
    n += kDepth;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  state.SetItemsProcessed(static_cast<std::int64_t>(n));
  if (s > 0) g_rate[name] = static_cast<double>(n) / s;
}

void BM_BlkfrontCoreZeroCopy(benchmark::State& state) {
  run_core(state, false, "blkfront core, zero-copy grants");
}
void BM_BlkfrontCorePersistent(benchmark::State& state) {
  run_core(state, true, "blkfront core, persistent grants (copy)");
}

// The peer: what any frontend must do for the same I/Os.
void BM_BareRingAndGrants(benchmark::State& state) {
  Rig rig(false);
  blkif::FrontRing fr;
  GuestPages ring_page;
  rig.dom.alloc(0, ring_page);
  fr.init(ring_page.addr, ring::kPageSize);
  blkif::BackRing br;
  br.attach(ring_page.addr, ring::kPageSize);
  std::uint64_t n = 0;
  grant_ref_t refs[kDepth];
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    for (int i = 0; i < kDepth; ++i) {
      refs[i] = rig.dom.grants().grant_access(0, rig.pages[i].gfn, false);
      blkif::blkif_request* req = fr.next_request();
      req->operation = blkif::kOpRead;
      req->nr_segments = 1;
      req->handle = kDevid;
      req->id = static_cast<std::uint64_t>(i);
      req->sector_number = static_cast<std::uint64_t>(i) * 8;
      req->seg[0] = {refs[i], 0, 7};
    }
    fr.push_requests();
    auto c = br.unconsumed_requests();
    for (std::uint32_t i = 0; i < c.count; ++i) {
      blkif::blkif_request req;
      br.consume_request(req);
      blkif::blkif_response rsp{};
      rsp.id = req.id;
      rsp.operation = req.operation;
      rsp.status = blkif::kRspOkay;
      br.produce_response(rsp);
    }
    br.push_responses();
    auto rc = fr.unconsumed_responses();
    for (std::uint32_t i = 0; i < rc.count; ++i) {
      blkif::blkif_response rsp;
      fr.consume_response(rsp);
      rig.dom.grants().end_access(refs[rsp.id % kDepth]);
    }
    fr.final_check_for_responses();
    n += kDepth;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  state.SetItemsProcessed(static_cast<std::int64_t>(n));
  if (s > 0) g_rate["bare ring + grants (peer)"] = static_cast<double>(n) / s;
}

BENCHMARK(BM_BareRingAndGrants);
BENCHMARK(BM_BlkfrontCoreZeroCopy);
BENCHMARK(BM_BlkfrontCorePersistent);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  const auto peer = g_rate.find("bare ring + grants (peer)");
  if (peer == g_rate.end() || peer->second <= 0) return 0;
  std::printf("\n%-42s %14s %8s\n", "4 KiB reads, QD32, null backend", "I/Os per s", "ratio");
  for (const auto& [name, rate] : g_rate)
    std::printf("%-42s %14.0f %8.2f\n", name.c_str(), rate, rate / peer->second);
  return 0;
}
