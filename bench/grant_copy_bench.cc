// Grant copy throughput: GrantMapper::copy (GNTTABOP_copy semantics: validate the op, pin the
// grant with a compare-exchange on the entry, copy, unpin) against plain memcpy of the same
// bytes between the same addresses, measured interleaved in the same benchmark run. Directions:
// gref -> local buffer (netback tx, blkback write) and local -> gref (netback rx, blkback read);
// sizes 512 B and 4 KiB, single ops and batches of 32 x 4 KiB over 32 different pages.
// Counters: grant_Bps, memcpy_Bps and ratio = grant_Bps / memcpy_Bps (1.0 = no overhead).
// The "pinned" runs hold a mapping of every grant while copying (a backend with persistent
// grants): the copy then needs no compare-exchange/clear on the entry, which isolates the cost
// of those two locked instructions from the rest of the op.
//
// Also the mapping side of a block request: PersistentGrantCache get+put (a cached gref, what a
// backend with persistent grants pays per segment) against GrantMapper map+unmap of the same
// grefs (what it pays without), interleaved in the same run, for working sets of 32 and 256
// grefs. Counters: cache_ops, map_ops (segments/s) and ratio = cache_ops / map_ops.
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "pvio/grant_table/grant_mapper.h"
#include "pvio/grant_table/grant_table.h"
#include "pvio/grant_table/persistent_cache.h"

#include "bench_main.h"

namespace {

using namespace pvio::gnttab;
using Clock = std::chrono::steady_clock;

constexpr pvio::domid_t kGuestDomid = 1;
constexpr pvio::domid_t kBackendDomid = 0;
constexpr std::uint64_t kBaseGfn = 0x1000;
constexpr std::uint64_t kGuestPages = 64;  // 1 table frame + data pages
constexpr unsigned kBatch = 32;
constexpr unsigned kMaxRefs = 256;  // grefs for the persistent-cache runs (several per page)
constexpr int kOpsPerSample = 64;  // ops timed per clock read, so clock cost stays negligible

// A guest with one grant-table frame and granted data pages, a mapper, and local pages.
struct Setup {
  Setup() {
    void* g = mmap(nullptr, kGuestPages * kGrantPageSize, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    void* l = mmap(nullptr, kBatch * kGrantPageSize, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (g == MAP_FAILED || l == MAP_FAILED) throw std::runtime_error("mmap failed");
    guest = static_cast<std::uint8_t*>(g);
    local = static_cast<std::uint8_t*>(l);
    std::memset(guest, 0x5A, kGuestPages * kGrantPageSize);
    std::memset(local, 0xA5, kBatch * kGrantPageSize);
    mem.add_region(kBaseGfn << kGrantPageShift, kGuestPages * kGrantPageSize, guest);
    frames[0] = reinterpret_cast<grant_entry_v1*>(guest);
    table = std::make_unique<GrantTable>(frames, 1, free_list, kEntriesPerFrame);
    for (unsigned i = 0; i < kBatch; ++i)
      refs[i] = table->grant_access(kBackendDomid, kBaseGfn + 1 + i, false);
    for (unsigned i = 0; i < kMaxRefs; ++i)
      many_refs[i] = table->grant_access(kBackendDomid, kBaseGfn + 1 + i % kBatch, false);
    const std::uint64_t table_gfns[] = {kBaseGfn};
    mapper = std::make_unique<GrantMapper>(kGuestDomid, kBackendDomid, mem, table_gfns);
  }
  ~Setup() {
    mapper.reset();
    munmap(guest, kGuestPages * kGrantPageSize);
    munmap(local, kBatch * kGrantPageSize);
  }
  std::uint8_t* guest_page(unsigned i) const { return guest + (1 + i) * kGrantPageSize; }
  std::uint8_t* local_page(unsigned i) const { return local + i * kGrantPageSize; }

  std::uint8_t* guest = nullptr;
  std::uint8_t* local = nullptr;
  pvio::GuestMemory mem;
  grant_entry_v1* frames[1] = {};
  grant_ref_t free_list[kEntriesPerFrame] = {};
  std::unique_ptr<GrantTable> table;
  grant_ref_t refs[kBatch] = {};
  grant_ref_t many_refs[kMaxRefs] = {};
  std::unique_ptr<GrantMapper> mapper;
};

Setup& setup() {
  static Setup s;
  return s;
}

enum Direction { kFromGref = 0, kToGref = 1 };

// state.range(0): direction, range(1): bytes per op, range(2): ops per batch, range(3): 1 to
// hold a mapping of every grant during the run.
void BM_GrantCopy(benchmark::State& state) {
  Setup& s = setup();
  const auto dir = static_cast<Direction>(state.range(0));
  const auto len = static_cast<std::uint16_t>(state.range(1));
  const auto batch = static_cast<unsigned>(state.range(2));
  const bool pinned = state.range(3) != 0;

  std::vector<grant_handle_t> held;
  if (pinned)
    for (unsigned i = 0; i < batch; ++i) {
      const MapResult m = s.mapper->map(s.refs[i], false);
      if (m.status != GNTST_okay) {
        state.SkipWithError("map failed");
        return;
      }
      held.push_back(m.handle);
    }

  std::vector<gnttab_copy> ops(batch);
  for (unsigned i = 0; i < batch; ++i) {
    gnttab_copy& op = ops[i];
    op.len = len;
    const gnttab_copy_ptr gref = gnttab_copy_ptr::gref(s.refs[i], kGuestDomid, 0);
    const gnttab_copy_ptr local = gnttab_copy_ptr::local(s.local_page(i));
    op.source = dir == kFromGref ? gref : local;
    op.dest = dir == kFromGref ? local : gref;
    op.flags = dir == kFromGref ? GNTCOPY_source_gref : GNTCOPY_dest_gref;
  }
  // The peer copies the same bytes between the same addresses.
  std::vector<std::uint8_t*> src(batch), dst(batch);
  for (unsigned i = 0; i < batch; ++i) {
    src[i] = dir == kFromGref ? s.guest_page(i) : s.local_page(i);
    dst[i] = dir == kFromGref ? s.local_page(i) : s.guest_page(i);
  }
  std::size_t peer_len = len;
  benchmark::DoNotOptimize(peer_len);  // a real call to memcpy, like the copy's

  Clock::duration grant_time{}, memcpy_time{};
  std::int64_t errors = 0;
  for (auto _ : state) {
    const auto t0 = Clock::now();
    for (int k = 0; k < kOpsPerSample; ++k) {
      s.mapper->copy(std::span<gnttab_copy>(ops));
      benchmark::ClobberMemory();
    }
    const auto t1 = Clock::now();
    for (int k = 0; k < kOpsPerSample; ++k) {
      for (unsigned i = 0; i < batch; ++i) std::memcpy(dst[i], src[i], peer_len);
      benchmark::ClobberMemory();
    }
    const auto t2 = Clock::now();
    grant_time += t1 - t0;
    memcpy_time += t2 - t1;
    for (const gnttab_copy& op : ops) errors += op.status != GNTST_okay;
  }
  for (grant_handle_t h : held) s.mapper->unmap(h);
  if (errors) state.SkipWithError("grant copy failed");

  const double bytes = static_cast<double>(state.iterations()) * kOpsPerSample * batch * len;
  const double grant_bps = bytes / std::chrono::duration<double>(grant_time).count();
  const double memcpy_bps = bytes / std::chrono::duration<double>(memcpy_time).count();
  state.counters["grant_Bps"] = grant_bps;
  state.counters["memcpy_Bps"] = memcpy_bps;
  state.counters["ratio"] = grant_bps / memcpy_bps;
  state.SetLabel(std::string(dir == kFromGref ? "gref->local " : "local->gref ") +
                 std::to_string(batch) + "x" + std::to_string(len) + "B" +
                 (pinned ? " pinned" : ""));
}

BENCHMARK(BM_GrantCopy)
    ->ArgNames({"to_gref", "len", "batch", "pinned"})
    ->Args({kFromGref, 512, 1, 0})
    ->Args({kFromGref, 4096, 1, 0})
    ->Args({kFromGref, 4096, kBatch, 0})
    ->Args({kToGref, 512, 1, 0})
    ->Args({kToGref, 4096, 1, 0})
    ->Args({kToGref, 4096, kBatch, 0})
    ->Args({kFromGref, 4096, 1, 1})
    ->Args({kFromGref, 4096, kBatch, 1})
    ->Args({kToGref, 4096, 1, 1})
    ->Args({kToGref, 4096, kBatch, 1});

// state.range(0): grefs in the working set. One sample: every gref through the cache (get, then
// put, as a request's segments are), then every gref mapped and unmapped in one batch each, as
// blkback does per ring batch without persistent grants.
void BM_PersistentVsMap(benchmark::State& state) {
  Setup& s = setup();
  const auto n = static_cast<unsigned>(state.range(0));
  PersistentGrantCache cache(*s.mapper);
  std::vector<PersistentGrantCache::Grant> held(n);
  std::vector<MapOp> map_ops(n);
  std::vector<UnmapOp> unmap_ops(n);
  std::int64_t errors = 0;
  for (unsigned i = 0; i < n; ++i) cache.put(cache.get(s.many_refs[i], false));  // warm

  Clock::duration cache_time{}, map_time{};
  for (auto _ : state) {
    const auto t0 = Clock::now();
    for (unsigned i = 0; i < n; ++i) held[i] = cache.get(s.many_refs[i], i & 1);
    benchmark::DoNotOptimize(held.data());
    for (unsigned i = 0; i < n; ++i) cache.put(held[i]);
    const auto t1 = Clock::now();
    for (unsigned i = 0; i < n; ++i)
      map_ops[i] = {s.many_refs[i], kGuestDomid, (i & 1) ? GNTMAP_readonly : 0u, 0, 0, nullptr};
    s.mapper->map(map_ops);
    benchmark::DoNotOptimize(map_ops.data());
    for (unsigned i = 0; i < n; ++i) unmap_ops[i].handle = map_ops[i].handle;
    s.mapper->unmap(unmap_ops);
    const auto t2 = Clock::now();
    cache_time += t1 - t0;
    map_time += t2 - t1;
    for (unsigned i = 0; i < n; ++i)
      errors += (held[i].status != GNTST_okay) + (map_ops[i].status != GNTST_okay);
  }
  if (errors || cache.misses() != n) state.SkipWithError("map failed or cache missed");
  const double ops = static_cast<double>(state.iterations()) * n;
  const double cache_ops = ops / std::chrono::duration<double>(cache_time).count();
  const double map_ops_s = ops / std::chrono::duration<double>(map_time).count();
  state.counters["cache_ops"] = cache_ops;
  state.counters["map_ops"] = map_ops_s;
  state.counters["ratio"] = cache_ops / map_ops_s;
  state.SetLabel("persistent vs map " + std::to_string(n) + " grefs");
}

BENCHMARK(BM_PersistentVsMap)->ArgNames({"grefs"})->Arg(kBatch)->Arg(kMaxRefs);

// A closing table of bytes/s and ratios, and one of segments/s for the persistent cache.
class CopyRatios final : public pvio::bench::RatioReporter {
  void collect(const Run& r) override {
    if (r.counters.count("cache_ops")) {
      map_rows_[r.report_label] = {r.counters.at("cache_ops").value,
                                   r.counters.at("map_ops").value, r.counters.at("ratio").value};
      return;
    }
    rows_[r.report_label] = {r.counters.at("grant_Bps").value,
                             r.counters.at("memcpy_Bps").value, r.counters.at("ratio").value};
  }
  void print_ratios() override {
    std::printf("\n%-27s %14s %14s %8s\n", "copy", "grant GB/s", "memcpy GB/s", "ratio");
    for (auto& [label, v] : rows_)
      std::printf("%-27s %14.2f %14.2f %8.3f\n", label.c_str(), v[0] / 1e9, v[1] / 1e9, v[2]);
    if (map_rows_.empty()) return;
    std::printf("\n%-27s %14s %14s %8s\n", "per segment", "cache M/s", "map+unmap M/s", "ratio");
    for (auto& [label, v] : map_rows_)
      std::printf("%-27s %14.2f %14.2f %8.3f\n", label.c_str(), v[0] / 1e6, v[1] / 1e6, v[2]);
  }

  std::map<std::string, std::array<double, 3>> rows_;
  std::map<std::string, std::array<double, 3>> map_rows_;
};

}  // namespace

int main(int argc, char** argv) {
  return pvio::bench::run_benchmarks<CopyRatios>(argc, argv);
}
