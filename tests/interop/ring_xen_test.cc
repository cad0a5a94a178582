// Our ring against Xen's own ring.h macros (Debian's libxen-dev): every pairing of front and
// back end (ours/ours, ours/Xen, Xen/ours, Xen/Xen) runs the same randomised sequence of
// produce / push / consume / final-check steps on its own page. Data must arrive intact in
// each pairing, and all four must agree exactly on every notify decision, every work count
// and the shared header bytes, over thousands of steps and across index wrap at 2^32.
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <vector>

// Ours first: Xen defines its names as macros, which would rewrite our declarations.
#include "pvio/ring/io_rings.h"
#include "pvio/ring/ring.h"

#include "xen_headers.h"


namespace {

namespace pb = pvio::blkif;
namespace pr = pvio::ring;

struct alignas(4096) Area {
  std::uint8_t bytes[pr::kPageSize << 2];
};

void init_at(void* page, pr::RingIdx start) {
  pr::shared_ring_init(page);
  auto* h = static_cast<pr::SringHeader*>(page);
  h->req_prod = h->rsp_prod = start;
  h->req_event = h->rsp_event = start + 1;
}

// Front ends: produce requests carrying ids, push, read responses, final check.
struct OurFront {
  pb::FrontRing r;
  void attach(void* p, std::size_t bytes, pr::RingIdx start) { ASSERT_TRUE(r.attach(p, bytes, start)); }
  unsigned free_requests() { return r.free_requests(); }
  void produce(std::uint64_t id) {
    pb::blkif_request q{};
    q.operation = pb::kOpWrite;
    q.id = id;
    q.sector_number = id ^ 0x5555;
    r.produce_request(q);
  }
  bool push() { return r.push_requests(); }
  unsigned unconsumed() { auto c = r.unconsumed_responses(); EXPECT_TRUE(c.ok()); return c.count; }
  std::uint64_t consume() { pb::blkif_response s; r.consume_response(s); return s.id; }
  unsigned final_check() { auto c = r.final_check_for_responses(); EXPECT_TRUE(c.ok()); return c.count; }
};

struct XenFront {
  blkif_front_ring_t r;
  void attach(void* p, std::size_t bytes, pr::RingIdx start) {
    FRONT_RING_ATTACH(&r, static_cast<blkif_sring_t*>(p), start, bytes);
  }
  unsigned free_requests() { return RING_FREE_REQUESTS(&r); }
  void produce(std::uint64_t id) {
    blkif_request_t* q = RING_GET_REQUEST(&r, r.req_prod_pvt);
    std::memset(q, 0, sizeof(*q));
    q->operation = BLKIF_OP_WRITE;
    q->id = id;
    q->sector_number = id ^ 0x5555;
    r.req_prod_pvt++;
  }
  bool push() { int notify; RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&r, notify); return notify; }
  unsigned unconsumed() { return RING_HAS_UNCONSUMED_RESPONSES(&r); }
  std::uint64_t consume() {
    blkif_response_t s;
    RING_COPY_RESPONSE(&r, r.rsp_cons, &s);
    r.rsp_cons++;
    return s.id;
  }
  unsigned final_check() { unsigned work; RING_FINAL_CHECK_FOR_RESPONSES(&r, work); return work; }
};

// Back ends: consume requests, answer them, push responses, final check.
struct OurBack {
  pb::BackRing r;
  void attach(void* p, std::size_t bytes, pr::RingIdx start) { ASSERT_TRUE(r.attach(p, bytes, start)); }
  unsigned unconsumed() { auto c = r.unconsumed_requests(); EXPECT_TRUE(c.ok()); return c.count; }
  std::uint64_t consume() {
    pb::blkif_request q;
    r.consume_request(q);
    EXPECT_EQ(q.sector_number, q.id ^ 0x5555);
    return q.id;
  }
  void respond(std::uint64_t id) { r.produce_response({id, pb::kOpWrite, pb::kRspOkay}); }
  bool push() { return r.push_responses(); }
  unsigned final_check() { auto c = r.final_check_for_requests(); EXPECT_TRUE(c.ok()); return c.count; }
};

struct XenBack {
  blkif_back_ring_t r;
  void attach(void* p, std::size_t bytes, pr::RingIdx start) {
    BACK_RING_ATTACH(&r, static_cast<blkif_sring_t*>(p), start, bytes);
  }
  unsigned unconsumed() { return RING_HAS_UNCONSUMED_REQUESTS(&r); }
  std::uint64_t consume() {
    blkif_request_t q;
    RING_COPY_REQUEST(&r, r.req_cons, &q);
    r.req_cons++;
    EXPECT_EQ(q.sector_number, q.id ^ 0x5555);
    return q.id;
  }
  void respond(std::uint64_t id) {
    blkif_response_t* s = RING_GET_RESPONSE(&r, r.rsp_prod_pvt);
    s->id = id;
    s->operation = BLKIF_OP_WRITE;
    s->status = BLKIF_RSP_OKAY;
    r.rsp_prod_pvt++;
  }
  bool push() { int notify; RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&r, notify); return notify; }
  unsigned final_check() { unsigned work; RING_FINAL_CHECK_FOR_REQUESTS(&r, work); return work; }
};

struct Outcome {
  std::vector<std::uint32_t> trace;  // decisions, counts and header words after each step
  std::uint64_t requests_delivered = 0;
  std::uint64_t responses_delivered = 0;
  std::uint64_t notifies = 0;
};

// Runs `steps` random steps of one pairing; the same seed gives the same step choices as
// long as every implementation makes the same decisions (which is what is being checked).
template <typename Front, typename Back>
Outcome run(std::uint32_t seed, pr::RingIdx start, std::size_t bytes, int steps) {
  Area area;
  init_at(area.bytes, start);
  Front front;
  Back back;
  front.attach(area.bytes, bytes, start);
  back.attach(area.bytes, bytes, start);
  auto* h = reinterpret_cast<pr::SringHeader*>(area.bytes);
  std::mt19937 rng(seed);
  Outcome out;
  std::uint64_t next_id = 0, expect_req = 0, expect_rsp = 0;
  std::deque<std::uint64_t> to_answer;
  for (int step = 0; step < steps; ++step) {
    std::uint32_t result = 0;
    switch (rng() % 6) {
      case 0: {  // front produces a batch and pushes
        unsigned free = front.free_requests();
        unsigned n = free ? rng() % (free + 1) : 0;
        for (unsigned i = 0; i < n; ++i) front.produce(next_id++);
        result = front.push();
        out.notifies += result;
        break;
      }
      case 1: {  // back consumes some of what is there
        unsigned avail = back.unconsumed();
        unsigned n = avail ? rng() % (avail + 1) : 0;
        for (unsigned i = 0; i < n; ++i) {
          std::uint64_t id = back.consume();
          EXPECT_EQ(id, expect_req++);
          to_answer.push_back(id);
          ++out.requests_delivered;
        }
        result = avail * 1000 + n;
        break;
      }
      case 2: {  // back answers some and pushes
        unsigned n = to_answer.empty() ? 0 : rng() % (to_answer.size() + 1);
        for (unsigned i = 0; i < n; ++i) {
          back.respond(to_answer.front());
          to_answer.pop_front();
        }
        result = back.push();
        out.notifies += result;
        break;
      }
      case 3:
        result = back.final_check();
        break;
      case 4: {  // front consumes some responses
        unsigned avail = front.unconsumed();
        unsigned n = avail ? rng() % (avail + 1) : 0;
        for (unsigned i = 0; i < n; ++i) {
          EXPECT_EQ(front.consume(), expect_rsp++);
          ++out.responses_delivered;
        }
        result = avail * 1000 + n;
        break;
      }
      case 5:
        result = front.final_check();
        break;
    }
    out.trace.push_back(result);
    out.trace.push_back(h->req_prod);
    out.trace.push_back(h->req_event);
    out.trace.push_back(h->rsp_prod);
    out.trace.push_back(h->rsp_event);
  }
  return out;
}

struct Case {
  std::uint32_t seed;
  pr::RingIdx start;
  unsigned order;
};

class InteropRing : public ::testing::TestWithParam<Case> {};

TEST_P(InteropRing, AllPairingsAgreeStepByStep) {
  const Case c = GetParam();
  constexpr int kSteps = 20000;
  const std::size_t bytes = pr::ring_bytes(c.order);
  Outcome oo = run<OurFront, OurBack>(c.seed, c.start, bytes, kSteps);
  Outcome ox = run<OurFront, XenBack>(c.seed, c.start, bytes, kSteps);
  Outcome xo = run<XenFront, OurBack>(c.seed, c.start, bytes, kSteps);
  Outcome xx = run<XenFront, XenBack>(c.seed, c.start, bytes, kSteps);
  ASSERT_GT(xx.requests_delivered, 10000u);  // the sequence really moved data
  ASSERT_GT(xx.notifies, 100u);              // and exercised event suppression both ways
  EXPECT_EQ(oo.trace, xx.trace);
  EXPECT_EQ(ox.trace, xx.trace);
  EXPECT_EQ(xo.trace, xx.trace);
  EXPECT_EQ(oo.requests_delivered, xx.requests_delivered);
  EXPECT_EQ(oo.responses_delivered, xx.responses_delivered);
}

// Starts just below 2^32 so every run crosses the wrap of all four indices.
INSTANTIATE_TEST_SUITE_P(
    Seeds, InteropRing,
    ::testing::Values(Case{1, 0, 0}, Case{2, 0xFFFFFF80u, 0}, Case{3, 0xFFFFFFFFu, 0},
                      Case{4, 0xFFFFF000u, 1}, Case{5, 0x80000000u - 7, 2},
                      Case{6, 0xFFFFFFF0u, 2}, Case{7, 0xFFFFFC00u, 0}, Case{8, 0, 1}),
    [](const ::testing::TestParamInfo<Case>& info) {
      return "seed" + std::to_string(info.param.seed) + "_order" +
             std::to_string(info.param.order);
    });

}  // namespace
