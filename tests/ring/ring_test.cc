// Unit tests for ring/: sizes, round trips, index wrap at 2^32, event suppression, hostile
// producer indices, copy-once semantics and a two-thread stress run.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "pvio/ring/io_rings.h"
#include "pvio/ring/io_rings.h"
#include "pvio/ring/ring.h"

namespace {

using namespace pvio;
using blkif::blkif_request;
using blkif::blkif_response;

struct alignas(4096) Pages {
  std::uint8_t bytes[ring::kPageSize << ring::kMaxRingPageOrder];
};

// A ring whose shared indices start at `start`, as if it had already carried `start` entries.
void init_at(void* page, ring::RingIdx start) {
  ring::shared_ring_init(page);
  auto* h = static_cast<ring::SringHeader*>(page);
  h->req_prod = h->rsp_prod = start;
  h->req_event = h->rsp_event = start + 1;
}

blkif_request make_req(std::uint64_t id) {
  blkif_request r{};
  r.operation = blkif::kOpRead;
  r.nr_segments = 1;
  r.id = id;
  r.sector_number = id * 8;
  r.seg[0].gref = static_cast<grant_ref_t>(id);
  r.seg[0].last_sect = 7;
  return r;
}

TEST(RingSize, MatchesXenRoundingForEveryOrder) {
  EXPECT_EQ((ring::ring_size<blkif_request, blkif_response>(ring::ring_bytes(0))), 32u);
  EXPECT_EQ((ring::ring_size<blkif_request, blkif_response>(ring::ring_bytes(1))), 64u);
  EXPECT_EQ((ring::ring_size<blkif_request, blkif_response>(ring::ring_bytes(4))), 512u);
  EXPECT_EQ((ring::ring_size<netif::netif_tx_request, netif::netif_tx_response>(4096)), 256u);
  EXPECT_EQ(ring::round_down_pow2(0), 0u);
  EXPECT_EQ(ring::round_down_pow2(1), 1u);
  EXPECT_EQ(ring::round_down_pow2(36), 32u);
  EXPECT_EQ(ring::round_down_pow2(0xFFFFFFFFu), 0x80000000u);
  EXPECT_EQ((ring::ring_size<blkif_request, blkif_response>(64)), 0u);
}

TEST(SharedRing, InitSetsXenDefaults) {
  Pages p;
  std::memset(&p, 0xAB, sizeof(p));
  blkif::FrontRing front;
  ASSERT_TRUE(front.init(p.bytes, ring::kPageSize));
  auto* h = reinterpret_cast<ring::SringHeader*>(p.bytes);
  EXPECT_EQ(h->req_prod, 0u);
  EXPECT_EQ(h->rsp_prod, 0u);
  EXPECT_EQ(h->req_event, 1u);
  EXPECT_EQ(h->rsp_event, 1u);
  for (auto b : h->pad) EXPECT_EQ(b, 0);
  EXPECT_EQ(front.size(), 32u);
  EXPECT_EQ(front.free_requests(), 32u);
}

TEST(Ring, AttachRejectsTooSmallArea) {
  Pages p;
  blkif::FrontRing front;
  blkif::BackRing back;
  EXPECT_FALSE(front.init(p.bytes, 64));
  EXPECT_FALSE(back.attach(p.bytes, 100));
  EXPECT_FALSE(back.attach(nullptr, 4096));
}

class RingAt : public ::testing::TestWithParam<ring::RingIdx> {};

// Fill, drain and answer the ring many times from a start index near 2^32 so every index
// wraps, checking each request and response arrives intact and in order.
TEST_P(RingAt, RoundTripAcrossWrap) {
  Pages p;
  const ring::RingIdx start = GetParam();
  init_at(p.bytes, start);
  blkif::FrontRing front;
  blkif::BackRing back;
  ASSERT_TRUE(front.attach(p.bytes, ring::ring_bytes(1), start));
  ASSERT_TRUE(back.attach(p.bytes, ring::ring_bytes(1), start));
  std::uint64_t next_id = 1, next_rsp = 1;
  for (int round = 0; round < 50; ++round) {
    unsigned n = 1 + (round * 7) % front.size();
    for (unsigned i = 0; i < n; ++i) ASSERT_TRUE(front.produce_request(make_req(next_id++)));
    front.push_requests();
    auto c = back.unconsumed_requests();
    ASSERT_TRUE(c.ok());
    ASSERT_EQ(c.count, n);
    for (unsigned i = 0; i < n; ++i) {
      blkif_request r;
      back.consume_request(r);
      blkif_request want = make_req(r.id);
      ASSERT_EQ(std::memcmp(&r, &want, sizeof(r)), 0);
      back.produce_response({r.id, r.operation, blkif::kRspOkay});
    }
    back.push_responses();
    auto rc = front.unconsumed_responses();
    ASSERT_TRUE(rc.ok());
    ASSERT_EQ(rc.count, n);
    for (unsigned i = 0; i < n; ++i) {
      blkif_response rsp;
      front.consume_response(rsp);
      ASSERT_EQ(rsp.id, next_rsp++);
      ASSERT_EQ(rsp.status, blkif::kRspOkay);
    }
    ASSERT_EQ(front.free_requests(), front.size());
  }
}
INSTANTIATE_TEST_SUITE_P(Starts, RingAt,
                         ::testing::Values(0u, 0xFFFFFF00u, 0xFFFFFFFFu, 0x7FFFFFF0u));

TEST(Ring, FullRingRefusesMore) {
  Pages p;
  blkif::FrontRing front;
  ASSERT_TRUE(front.init(p.bytes, ring::kPageSize));
  for (unsigned i = 0; i < front.size(); ++i) ASSERT_TRUE(front.produce_request(make_req(i)));
  EXPECT_TRUE(front.full());
  EXPECT_FALSE(front.produce_request(make_req(99)));
}

// Event suppression: the first push after a final check notifies; later pushes while the
// consumer is known to be busy (req_event not re-armed) do not.
TEST(Ring, NotifyOnlyWhenConsumerAsked) {
  Pages p;
  blkif::FrontRing front;
  blkif::BackRing back;
  ASSERT_TRUE(front.init(p.bytes, ring::kPageSize));
  ASSERT_TRUE(back.attach(p.bytes, ring::kPageSize));
  front.produce_request(make_req(1));
  EXPECT_TRUE(front.push_requests());  // req_event starts at 1
  front.produce_request(make_req(2));
  EXPECT_FALSE(front.push_requests());  // backend has not re-armed
  blkif_request r;
  back.consume_request(r);
  back.consume_request(r);
  auto c = back.final_check_for_requests();  // arms req_event = 3
  EXPECT_TRUE(c.ok());
  EXPECT_EQ(c.count, 0u);
  front.produce_request(make_req(3));
  EXPECT_TRUE(front.push_requests());
  // Responses: rsp_event is 1, so the first response push notifies.
  back.produce_response({1, 0, 0});
  EXPECT_TRUE(back.push_responses());
  back.produce_response({2, 0, 0});
  EXPECT_FALSE(back.push_responses());
}

// The final check must see requests published between the consumer's last look and its
// re-arming of req_event (the race RING_FINAL_CHECK_FOR_REQUESTS exists to close).
TEST(Ring, FinalCheckSeesLateRequests) {
  Pages p;
  blkif::FrontRing front;
  blkif::BackRing back;
  ASSERT_TRUE(front.init(p.bytes, ring::kPageSize));
  ASSERT_TRUE(back.attach(p.bytes, ring::kPageSize));
  front.produce_request(make_req(1));
  front.push_requests();
  auto c = back.final_check_for_requests();
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.count, 1u);
}

TEST(Ring, HostileRequestProducerIsReportedNotTrusted) {
  Pages p;
  blkif::BackRing back;
  init_at(p.bytes, 100);
  ASSERT_TRUE(back.attach(p.bytes, ring::kPageSize, 100));
  auto* h = reinterpret_cast<ring::SringHeader*>(p.bytes);
  h->req_prod = 100 + 32;  // exactly a full ring: legal
  EXPECT_TRUE(back.unconsumed_requests().ok());
  EXPECT_EQ(back.unconsumed_requests().count, 32u);
  h->req_prod = 100 + 33;  // more than the ring holds
  EXPECT_EQ(back.unconsumed_requests().error, ring::RingError::BadProducerIndex);
  EXPECT_EQ(back.final_check_for_requests().error, ring::RingError::BadProducerIndex);
  h->req_prod = 100 + 5;
  blkif_request r;
  for (int i = 0; i < 5; ++i) back.consume_request(r);
  h->req_prod = 100 + 2;  // moved backwards behind what we consumed
  EXPECT_EQ(back.unconsumed_requests().error, ring::RingError::BadProducerIndex);
  h->req_prod = 0xFFFFFFFFu;
  EXPECT_EQ(back.unconsumed_requests().error, ring::RingError::BadProducerIndex);
}

TEST(Ring, HostileResponseProducerIsReportedNotTrusted) {
  Pages p;
  blkif::FrontRing front;
  ASSERT_TRUE(front.init(p.bytes, ring::kPageSize));
  auto* h = reinterpret_cast<ring::SringHeader*>(p.bytes);
  for (int i = 0; i < 3; ++i) front.produce_request(make_req(i));
  front.push_requests();
  h->rsp_prod = 3;
  EXPECT_TRUE(front.unconsumed_responses().ok());
  h->rsp_prod = 4;  // a response to a request never posted
  EXPECT_EQ(front.unconsumed_responses().error, ring::RingError::BadProducerIndex);
  h->rsp_prod = 0xFFFFFFFFu;  // backwards
  EXPECT_EQ(front.unconsumed_responses().error, ring::RingError::BadProducerIndex);
  EXPECT_EQ(front.final_check_for_responses().error, ring::RingError::BadProducerIndex);
}

TEST(Ring, ConsumedRequestIsAPrivateCopy) {
  Pages p;
  blkif::FrontRing front;
  blkif::BackRing back;
  ASSERT_TRUE(front.init(p.bytes, ring::kPageSize));
  ASSERT_TRUE(back.attach(p.bytes, ring::kPageSize));
  blkif_request* slot = front.next_request();
  *slot = make_req(7);
  front.push_requests();
  blkif_request r;
  back.consume_request(r);
  slot->nr_segments = 200;  // the guest rewrites the slot after the backend read it
  slot->id = 666;
  EXPECT_EQ(r.nr_segments, 1);
  EXPECT_EQ(r.id, 7u);
}

TEST(Ring, CopyRequestAsReadsOtherSlotLayouts) {
  Pages p;
  blkif::FrontRing front;
  blkif::BackRing back;
  ASSERT_TRUE(front.init(p.bytes, ring::kPageSize));
  ASSERT_TRUE(back.attach(p.bytes, ring::kPageSize));
  auto* d = reinterpret_cast<blkif::blkif_request_discard*>(front.next_request());
  *d = {blkif::kOpDiscard, blkif::kDiscardSecure, 3, 42, 1000, 2048};
  front.push_requests();
  blkif::blkif_request_discard got;
  back.copy_request_as(back.req_cons(), got);
  back.skip_request();
  EXPECT_EQ(got.nr_sectors, 2048u);
  EXPECT_EQ(got.id, 42u);
  EXPECT_EQ(back.unconsumed_requests().count, 0u);
}

// Two threads, the real concurrency the ring is built for: the front keeps the ring full,
// the back answers, event suppression is honoured via a counter standing in for the event
// channel, and nothing is lost or reordered.
TEST(Ring, TwoThreadStress) {
  static Pages p;
  blkif::FrontRing front;
  blkif::BackRing back;
  ASSERT_TRUE(front.init(p.bytes, ring::kPageSize));
  ASSERT_TRUE(back.attach(p.bytes, ring::kPageSize));
  constexpr std::uint64_t kTotal = 300000;
  std::atomic<bool> failed{false};
  std::thread backend([&] {
    std::uint64_t expect = 0;
    while (expect < kTotal) {
      auto c = back.unconsumed_requests();
      if (!c.ok()) { failed = true; return; }
      if (c.count == 0) { c = back.final_check_for_requests(); }
      for (std::uint32_t i = 0; i < c.count; ++i) {
        blkif_request r;
        back.consume_request(r);
        if (r.id != expect || r.sector_number != expect * 8) failed = true;
        ++expect;
        back.produce_response({r.id, r.operation, blkif::kRspOkay});
      }
      if (c.count) back.push_responses();
    }
  });
  std::uint64_t sent = 0, answered = 0;
  while (answered < kTotal) {
    while (sent < kTotal && !front.full()) front.produce_request(make_req(sent++));
    front.push_requests();
    auto c = front.unconsumed_responses();
    ASSERT_TRUE(c.ok());
    for (std::uint32_t i = 0; i < c.count; ++i) {
      blkif_response rsp;
      front.consume_response(rsp);
      ASSERT_EQ(rsp.id, answered);
      ++answered;
    }
  }
  backend.join();
  EXPECT_FALSE(failed.load());
}

}  // namespace
