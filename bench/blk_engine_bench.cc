// blkback I/O engines against a plain liburing loop (the host-native peer) on one 256 MiB
// O_DIRECT temp file, same run: 4 KiB random read at QD1 and QD32, 64 KiB sequential read at
// QD8. Each engine reports IOPS and vs_native = engine IOPS / native IOPS. The null engine's
// requests/s is set against io_uring NOPs (the cheapest kernel round trip) in the same way.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <liburing.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "pvio/blkback/io_engine.h"

#include "bench_file.h"

namespace {

using namespace pvio::blkback;

constexpr std::uint64_t kFileSize = 256 << 20;

// The backing file: created and filled once, removed at exit.
const pvio::bench::BenchFile& bench_file() {
  static const pvio::bench::BenchFile file(
      "pvio-blkbench", kFileSize, [](std::vector<std::uint8_t>& chunk, std::uint64_t off) {
        for (std::size_t i = 0; i < chunk.size(); ++i)
          chunk[i] = static_cast<std::uint8_t>((off + i) * 2654435761u >> 24);
      });
  return file;
}

struct Workload {
  const char* name;
  std::uint32_t block;  // bytes per request
  unsigned depth;       // requests kept in flight
  bool sequential;
};

constexpr Workload kRand4kQd1{"randread4k_qd1", 4096, 1, false};
constexpr Workload kRand4kQd32{"randread4k_qd32", 4096, 32, false};
constexpr Workload kSeq64kQd8{"seqread64k_qd8", 65536, 8, true};

// Offsets: a fixed pseudo-random sequence of aligned blocks, or a sweep that wraps.
class OffsetGen {
 public:
  explicit OffsetGen(const Workload& w) : w_(w) {}
  std::uint64_t next() {
    const std::uint64_t blocks = kFileSize / w_.block;
    if (w_.sequential) return (seq_++ % blocks) * w_.block;
    x_ ^= x_ << 13;
    x_ ^= x_ >> 7;
    x_ ^= x_ << 17;
    return (x_ % blocks) * w_.block;
  }

 private:
  Workload w_;
  std::uint64_t x_ = 0x9E3779B97F4A7C15ull;
  std::uint64_t seq_ = 0;
};

struct Buffers {
  explicit Buffers(std::size_t n, std::size_t size) : count(n), each(size) {
    void* p = nullptr;
    if (::posix_memalign(&p, 4096, n * size) != 0) throw std::bad_alloc();
    base = static_cast<std::uint8_t*>(p);
    std::memset(base, 0, n * size);
  }
  ~Buffers() { std::free(base); }
  std::uint8_t* at(std::size_t i) const { return base + i * each; }
  std::size_t count, each;
  std::uint8_t* base = nullptr;
};

// ---- The host-native peer: liburing used directly, as an application would. ----

struct NativeLoop {
  explicit NativeLoop(const Workload& w) : w_(w), gen_(w), bufs_(w.depth, w.block) {
    fd_ = ::open(bench_file().path().c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error("open O_DIRECT failed");
    if (io_uring_queue_init(w.depth, &ring_, 0) < 0) throw std::runtime_error("io_uring init");
    for (unsigned i = 0; i < w.depth; ++i) queue(i);
    io_uring_submit(&ring_);
  }
  ~NativeLoop() {
    while (inflight_ > 0) step();
    io_uring_queue_exit(&ring_);
    ::close(fd_);
  }
  void queue(unsigned slot) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    io_uring_prep_read(sqe, fd_, bufs_.at(slot), w_.block, gen_.next());
    io_uring_sqe_set_data64(sqe, slot);
    ++inflight_;
  }
  // Waits for at least one completion, requeues every completed slot; returns completions.
  unsigned step(bool requeue = false) {
    io_uring_cqe* cqe = nullptr;
    if (io_uring_wait_cqe(&ring_, &cqe) < 0) return 0;
    io_uring_cqe* cqes[64];
    const unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, 64);
    for (unsigned i = 0; i < n; ++i) {
      if (cqes[i]->res != static_cast<int>(w_.block)) errors_++;
      --inflight_;
      if (requeue) queue(static_cast<unsigned>(io_uring_cqe_get_data64(cqes[i])));
    }
    io_uring_cq_advance(&ring_, n);
    if (requeue) io_uring_submit(&ring_);
    return n;
  }
  Workload w_;
  OffsetGen gen_;
  Buffers bufs_;
  int fd_ = -1;
  io_uring ring_{};
  unsigned inflight_ = 0;
  std::uint64_t errors_ = 0;
};

std::map<std::string, double>& native_iops() {
  static std::map<std::string, double> m;
  return m;
}

// Native IOPS for `w`: from its benchmark if that ran already, else measured here for 0.5 s
// (outside any timed region) so a filtered run still gets its ratio.
double native_for(const Workload& w) {
  auto it = native_iops().find(w.name);
  if (it != native_iops().end()) return it->second;
  NativeLoop loop(w);
  const auto t0 = std::chrono::steady_clock::now();
  std::uint64_t ops = 0;
  double secs = 0;
  while (secs < 0.5) {
    ops += loop.step(true);
    secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  return native_iops()[w.name] = static_cast<double>(ops) / secs;
}

void BM_Native(benchmark::State& state, Workload w) {
  NativeLoop loop(w);
  std::uint64_t ops = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) ops += loop.step(true);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  native_iops()[w.name] = static_cast<double>(ops) / secs;
  state.counters["IOPS"] =
      benchmark::Counter(static_cast<double>(ops), benchmark::Counter::kIsRate);
  state.counters["errors"] = static_cast<double>(loop.errors_);
  state.SetBytesProcessed(static_cast<std::int64_t>(ops * w.block));
}

// ---- The engines: the same workload through IoEngine. ----

void BM_Engine(benchmark::State& state, const char* engine, Workload w, bool fixed_buffers) {
  const double native = native_for(w);
  OffsetGen gen(w);
  Buffers bufs(w.depth, w.block);  // outlives the engine, which may have it registered
  auto e = make_engine(engine, BackingOptions{bench_file().path(), true, DirectIo::Require},
                       EngineConfig{w.depth, 1, false});
  if (fixed_buffers) {
    const iovec region{bufs.base, bufs.count * bufs.each};
    if (e->register_buffers(std::span(&region, 1)) != 0) {
      state.SkipWithError("io_uring_register_buffers failed");
      return;
    }
  }
  std::vector<iovec> iov(w.depth);
  std::vector<IoRequest> reqs(w.depth);
  for (unsigned i = 0; i < w.depth; ++i) {
    iov[i] = iovec{bufs.at(i), w.block};
    reqs[i] = IoRequest{IoOp::Read, gen.next(), &iov[i], 1, 0, i};
  }
  e->submit(reqs);
  std::vector<IoCompletion> cq(w.depth);
  std::vector<IoRequest> again(w.depth);
  std::uint64_t ops = 0, errors = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    const std::size_t n = e->reap(cq, 1);
    for (std::size_t i = 0; i < n; ++i) {
      if (cq[i].result != static_cast<std::int64_t>(w.block)) ++errors;
      const auto slot = static_cast<unsigned>(cq[i].tag);
      again[i] = IoRequest{IoOp::Read, gen.next(), &iov[slot], 1, 0, slot};
    }
    e->submit(std::span(again.data(), n));
    ops += n;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  while (e->in_flight() > 0) e->reap(cq, 1);
  const double iops = static_cast<double>(ops) / secs;
  state.counters["IOPS"] =
      benchmark::Counter(static_cast<double>(ops), benchmark::Counter::kIsRate);
  state.counters["vs_native"] = iops / native;
  state.counters["errors"] = static_cast<double>(errors);
  state.SetBytesProcessed(static_cast<std::int64_t>(ops * w.block));
}

// ---- Framework cost: the null engine against io_uring NOPs, 32 requests a batch. ----

constexpr unsigned kNullBatch = 32;

double& nop_rate() {
  static double r = 0;
  return r;
}

std::uint64_t nop_batches(io_uring& ring, std::uint64_t batches) {
  for (std::uint64_t b = 0; b < batches; ++b) {
    for (unsigned i = 0; i < kNullBatch; ++i) io_uring_prep_nop(io_uring_get_sqe(&ring));
    io_uring_submit_and_wait(&ring, kNullBatch);
    io_uring_cq_advance(&ring, io_uring_cq_ready(&ring));
  }
  return batches * kNullBatch;
}

void BM_NativeNop(benchmark::State& state) {
  io_uring ring{};
  if (io_uring_queue_init(kNullBatch, &ring, 0) < 0) {
    state.SkipWithError("io_uring init");
    return;
  }
  std::uint64_t ops = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) ops += nop_batches(ring, 1);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  io_uring_queue_exit(&ring);
  nop_rate() = static_cast<double>(ops) / secs;
  state.counters["req/s"] =
      benchmark::Counter(static_cast<double>(ops), benchmark::Counter::kIsRate);
}

void BM_NullEngine(benchmark::State& state) {
  if (nop_rate() == 0) {  // peer not run (filtered): measure it untimed
    io_uring ring{};
    io_uring_queue_init(kNullBatch, &ring, 0);
    const auto t0 = std::chrono::steady_clock::now();
    const std::uint64_t ops = nop_batches(ring, 20000);
    nop_rate() = static_cast<double>(ops) /
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    io_uring_queue_exit(&ring);
  }
  auto e = make_engine("null", BackingOptions{bench_file().path(), true, DirectIo::Require},
                       EngineConfig{kNullBatch, 1, false});
  Buffers bufs(kNullBatch, 4096);
  std::vector<iovec> iov(kNullBatch);
  std::vector<IoRequest> reqs(kNullBatch);
  OffsetGen gen(kRand4kQd32);
  for (unsigned i = 0; i < kNullBatch; ++i) iov[i] = iovec{bufs.at(i), 4096};
  std::vector<IoCompletion> cq(kNullBatch);
  std::uint64_t ops = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    for (unsigned i = 0; i < kNullBatch; ++i)
      reqs[i] = IoRequest{IoOp::Read, gen.next(), &iov[i], 1, 0, i};
    e->submit(reqs);
    e->ack_event();  // as a service would, after epoll said the eventfd is readable
    ops += e->reap(cq, kNullBatch);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double rate = static_cast<double>(ops) / secs;
  state.counters["req/s"] =
      benchmark::Counter(static_cast<double>(ops), benchmark::Counter::kIsRate);
  state.counters["vs_uring_nop"] = rate / nop_rate();
}

void register_all() {
  for (const Workload* w : {&kRand4kQd1, &kRand4kQd32, &kSeq64kQd8}) {
    const std::string n = w->name;
    benchmark::RegisterBenchmark(("native_uring/" + n).c_str(), BM_Native, *w)->UseRealTime();
    benchmark::RegisterBenchmark(("engine_uring/" + n).c_str(), BM_Engine, "uring", *w, false)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("engine_uring_fixed/" + n).c_str(), BM_Engine, "uring", *w, true)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("engine_aio/" + n).c_str(), BM_Engine, "aio", *w, false)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("native_uring_nop/batch32", BM_NativeNop)->UseRealTime();
  benchmark::RegisterBenchmark("engine_null/batch32", BM_NullEngine)->UseRealTime();
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_all();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
