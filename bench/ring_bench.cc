// Ring throughput: 112-byte blkif requests from a producer thread (the "frontend", the
// benchmark thread) to a consumer thread (the "backend") that answers each with a 16-byte
// blkif_response, in batches of 1 and 32, for three implementations on equal terms:
//   pvio     our FrontRing/BackRing on one shared page (32 slots)
//   xen      Xen's own ring.h macros (Debian's libxen-dev) on the same page layout
//   rte_ring DPDK rte_ring SP/SC, one 32-slot ring of 112-byte elements for requests and one of
//            16-byte elements for responses (no EAL needed: rte_ring_init on our own memory)
//   rte_ring_slot112  the same with each response in a 112-byte element, the footprint a
//            response has in a Xen ring slot: shows what the ABI's shared slots cost
// Both ends busy-poll (no event channel), so this measures the ring itself. After the runs a
// table prints requests/s and pvio's ratio to each peer measured in the same run.
#include <benchmark/benchmark.h>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>

// Ours first: Xen defines its names as macros, which would rewrite our declarations.
#include "pvio/ring/io_rings.h"
#include "pvio/ring/ring.h"

#define __XEN_INTERFACE_VERSION__ 0x00040e00
#define xen_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)
#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/io/ring.h>
#include <xen/io/blkif.h>

#include <rte_ring.h>
#include <rte_ring_elem.h>

#include "bench_main.h"

namespace {

namespace pb = pvio::blkif;
constexpr unsigned kSlots = 32;

pb::blkif_request request_template() {
  pb::blkif_request r{};
  r.operation = pb::kOpRead;
  r.nr_segments = pb::kMaxSegmentsPerRequest;
  r.handle = 0;
  r.sector_number = 1234;
  for (unsigned i = 0; i < pb::kMaxSegmentsPerRequest; ++i) r.seg[i] = {100 + i, 0, 7};
  return r;
}

// What every backend does with a request before answering: look at all of it, as a real
// blkback must (operation, segment count, every segment's gref and sector range). Without
// this, GCC shrinks Xen's RING_COPY_REQUEST (a volatile struct copy) to the two fields the
// answer uses, and the comparison would be between copying 16 bytes and copying 112.
inline std::int16_t check_request(const pb::blkif_request& req) {
  if (req.operation > pb::kOpIndirect || req.nr_segments == 0 ||
      req.nr_segments > pb::kMaxSegmentsPerRequest)
    return pb::kRspError;
  std::uint32_t acc = static_cast<std::uint32_t>(req.sector_number) ^ req.handle;
  for (unsigned i = 0; i < req.nr_segments; ++i) {
    if (req.seg[i].first_sect > req.seg[i].last_sect || req.seg[i].last_sect > 7)
      return pb::kRspError;
    acc += req.seg[i].gref;
  }
  benchmark::DoNotOptimize(acc);
  return pb::kRspOkay;
}

void pin_to_cpu(unsigned cpu) {
  unsigned n = std::thread::hardware_concurrency();
  if (n < 2) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu % n, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

void unpin() {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (unsigned i = 0; i < std::thread::hardware_concurrency(); ++i) CPU_SET(i, &set);
  pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

struct alignas(4096) Page {
  std::uint8_t bytes[4096];
};

// --- pvio ring -------------------------------------------------------------------------------
struct PvioRing {
  Page page;
  alignas(128) pb::FrontRing front;  // front and back private state on their own lines, as
  alignas(128) pb::BackRing back;    // they would be in two processes
  PvioRing() {
    front.init(page.bytes, sizeof(page));
    back.attach(page.bytes, sizeof(page));
  }
  unsigned front_free() const { return front.free_requests(); }
  void front_produce(const pb::blkif_request& tmpl, std::uint64_t id) {
    pb::blkif_request* slot = front.next_request();
    std::memcpy(slot, &tmpl, sizeof(tmpl));
    slot->id = id;
  }
  void front_push() { benchmark::DoNotOptimize(front.push_requests()); }
  unsigned front_reap() {
    auto c = front.unconsumed_responses();
    for (unsigned i = 0; i < c.count; ++i) {
      pb::blkif_response rsp;
      front.consume_response(rsp);
      benchmark::DoNotOptimize(rsp);
    }
    return c.count;
  }
  unsigned back_serve() {
    auto c = back.unconsumed_requests();
    if (c.count == 0) return 0;
    for (unsigned i = 0; i < c.count; ++i) {
      pb::blkif_request req;
      back.consume_request(req);
      const std::int16_t status = check_request(req);
      pb::blkif_response* rsp = back.next_response();
      rsp->id = req.id;
      rsp->operation = req.operation;
      rsp->status = status;
    }
    benchmark::DoNotOptimize(back.push_responses());
    return c.count;
  }
};

// --- Xen ring.h macros -------------------------------------------------------------------------
struct XenRing {
  Page page;
  alignas(128) blkif_front_ring_t front;
  alignas(128) blkif_back_ring_t back;
  XenRing() {
    auto* s = reinterpret_cast<blkif_sring_t*>(page.bytes);
    SHARED_RING_INIT(s);
    FRONT_RING_INIT(&front, s, sizeof(page));
    BACK_RING_INIT(&back, s, sizeof(page));
  }
  unsigned front_free() const { return RING_FREE_REQUESTS(&front); }
  void front_produce(const pb::blkif_request& tmpl, std::uint64_t id) {
    blkif_request_t* slot = RING_GET_REQUEST(&front, front.req_prod_pvt);
    std::memcpy(slot, &tmpl, sizeof(tmpl));
    slot->id = id;
    front.req_prod_pvt++;
  }
  void front_push() {
    int notify;
    RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&front, notify);
    benchmark::DoNotOptimize(notify);
  }
  unsigned front_reap() {
    RING_IDX prod = front.sring->rsp_prod;
    xen_rmb();  // read responses only after seeing the index (as Linux frontends do)
    unsigned n = prod - front.rsp_cons;
    for (; front.rsp_cons != prod; front.rsp_cons++) {
      blkif_response_t rsp;
      RING_COPY_RESPONSE(&front, front.rsp_cons, &rsp);
      benchmark::DoNotOptimize(rsp);
    }
    return n;
  }
  unsigned back_serve() {
    RING_IDX prod = back.sring->req_prod;
    xen_rmb();
    unsigned n = prod - back.req_cons;
    if (n == 0) return 0;
    while (back.req_cons != prod) {
      blkif_request_t req;
      RING_COPY_REQUEST(&back, back.req_cons, &req);
      back.req_cons++;
      const std::int16_t status = check_request(*reinterpret_cast<pb::blkif_request*>(&req));
      blkif_response_t* rsp = RING_GET_RESPONSE(&back, back.rsp_prod_pvt);
      rsp->id = req.id;
      rsp->operation = req.operation;
      rsp->status = status;
      back.rsp_prod_pvt++;
    }
    int notify;
    RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&back, notify);
    benchmark::DoNotOptimize(notify);
    return n;
  }
};

// --- DPDK rte_ring -----------------------------------------------------------------------------
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

rte_ring* make_rte_ring(const char* name, unsigned esize, std::unique_ptr<void, FreeDeleter>& mem) {
  // RING_F_EXACT_SZ makes the ring hold exactly kSlots by sizing it to the next power of two
  // above kSlots; its memory must be computed for that size.
  ssize_t bytes = rte_ring_get_memsize_elem(esize, rte_align32pow2(kSlots + 1));
  mem.reset(std::aligned_alloc(128, (static_cast<std::size_t>(bytes) + 127) & ~std::size_t{127}));
  auto* r = static_cast<rte_ring*>(mem.get());
  if (rte_ring_init(r, name, kSlots, RING_F_SP_ENQ | RING_F_SC_DEQ | RING_F_EXACT_SZ) != 0) {
    std::fprintf(stderr, "rte_ring_init failed\n");
    std::abort();
  }
  return r;
}

// Responses as rte_ring elements: the plain 16-byte blkif_response, or the same response in a
// 112-byte element, the footprint a response has in a Xen ring slot (the request/response
// union). The second isolates what the Xen layout costs against rte_ring's dense array.
struct DenseRsp {
  pb::blkif_response rsp;
};
struct SlotSizedRsp {
  pb::blkif_response rsp;
  std::uint8_t pad[sizeof(pb::blkif_request) - sizeof(pb::blkif_response)];
};

template <typename RspElem>
struct RteRing {
  std::unique_ptr<void, FreeDeleter> req_mem, rsp_mem;
  rte_ring* req;
  rte_ring* rsp;
  alignas(128) unsigned outstanding = 0;  // front-side credit: same 32 in flight as the ring
  pb::blkif_request staged[kSlots];
  unsigned staged_n = 0;
  RteRing()
      : req(make_rte_ring("req", sizeof(pb::blkif_request), req_mem)),
        rsp(make_rte_ring("rsp", sizeof(RspElem), rsp_mem)) {}
  unsigned front_free() const { return kSlots - outstanding - staged_n; }
  void front_produce(const pb::blkif_request& tmpl, std::uint64_t id) {
    staged[staged_n] = tmpl;
    staged[staged_n].id = id;
    ++staged_n;
  }
  void front_push() {
    unsigned done = rte_ring_sp_enqueue_bulk_elem(req, staged, sizeof(pb::blkif_request),
                                                  staged_n, nullptr);
    if (done != staged_n) std::abort();  // credit guarantees space
    outstanding += staged_n;
    staged_n = 0;
  }
  unsigned front_reap() {
    RspElem out[kSlots];
    unsigned n = rte_ring_sc_dequeue_burst_elem(rsp, out, sizeof(RspElem), kSlots, nullptr);
    benchmark::DoNotOptimize(out);
    outstanding -= n;
    return n;
  }
  unsigned back_serve() {
    pb::blkif_request in[kSlots];
    RspElem out[kSlots];
    unsigned n = rte_ring_sc_dequeue_burst_elem(req, in, sizeof(pb::blkif_request), kSlots,
                                                nullptr);
    if (n == 0) return 0;
    for (unsigned i = 0; i < n; ++i) out[i].rsp = {in[i].id, in[i].operation, check_request(in[i])};
    rte_ring_sp_enqueue_burst_elem(rsp, out, sizeof(RspElem), n, nullptr);
    return n;
  }
};

// Frontend loop in the benchmark thread; backend busy-polls in its own thread.
template <typename Impl>
void BM_RingRoundTrip(benchmark::State& state) {
  const unsigned batch = static_cast<unsigned>(state.range(0));
  auto impl = std::make_unique<Impl>();
  std::atomic<bool> stop{false};
  std::thread backend([&] {
    pin_to_cpu(1);
    while (!stop.load(std::memory_order_relaxed)) impl->back_serve();
  });
  pin_to_cpu(0);
  const pb::blkif_request tmpl = request_template();
  std::uint64_t id = 0, sent = 0, answered = 0;
  for (auto _ : state) {
    while (impl->front_free() < batch) answered += impl->front_reap();
    for (unsigned i = 0; i < batch; ++i) impl->front_produce(tmpl, id++);
    impl->front_push();
    sent += batch;
  }
  while (answered < sent) answered += impl->front_reap();
  stop = true;
  backend.join();
  unpin();
  state.SetItemsProcessed(static_cast<std::int64_t>(sent));
}

BENCHMARK_TEMPLATE(BM_RingRoundTrip, PvioRing)->Name("ring/pvio")->Arg(1)->Arg(32)->UseRealTime();
BENCHMARK_TEMPLATE(BM_RingRoundTrip, XenRing)->Name("ring/xen")->Arg(1)->Arg(32)->UseRealTime();
BENCHMARK_TEMPLATE(BM_RingRoundTrip, RteRing<DenseRsp>)
    ->Name("ring/rte_ring")->Arg(1)->Arg(32)->UseRealTime();
BENCHMARK_TEMPLATE(BM_RingRoundTrip, RteRing<SlotSizedRsp>)
    ->Name("ring/rte_ring_slot112")->Arg(1)->Arg(32)->UseRealTime();

// A closing table of requests/s and ratios per batch size.
class RingRatios final : public pvio::bench::RatioReporter {
  void collect(const Run& r) override {
    auto it = r.counters.find("items_per_second");
    if (it == r.counters.end()) return;
    std::string name = r.run_name.function_name;          // ring/pvio
    std::string arg = r.run_name.args;                     // 32
    rates_[arg][name.substr(name.find('/') + 1)] = it->second.value;
  }
  void print_ratios() override {
    std::printf("\n%-6s %14s %14s %14s %14s %9s %9s %9s\n", "batch", "pvio req/s",
                "xen req/s", "rte_ring req/s", "rte_slot112", "pvio/xen", "pvio/rte",
                "pvio/r112");
    auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
    for (auto& [arg, m] : rates_) {
      double p = m["pvio"], x = m["xen"], d = m["rte_ring"], d112 = m["rte_ring_slot112"];
      std::printf("%-6s %14.0f %14.0f %14.0f %14.0f %9.2f %9.2f %9.2f\n", arg.c_str(), p, x, d,
                  d112, ratio(p, x), ratio(p, d), ratio(p, d112));
    }
  }

  std::map<std::string, std::map<std::string, double>> rates_;
};

}  // namespace

int main(int argc, char** argv) {
  return pvio::bench::run_benchmarks<RingRatios>(argc, argv);
}
