// The learning switch on its own: learning, ageing, flooding, a reused port slot that must not
// inherit the MAC entries of the port it held before, and ports detached while other threads
// forward to them.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "../../netback/ctrl.h"
#include "pvio/netback/dpdk.h"
#include "pvio/netback/switch.h"

namespace pvio::netback::test {
namespace {

constexpr MacAddr kA{0x02, 0, 0, 0, 0, 0x0a};
constexpr MacAddr kB{0x02, 0, 0, 0, 0, 0x0b};
constexpr MacAddr kBroadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

rte_mbuf* frame(const MacAddr& dst, const MacAddr& src) {
  rte_mbuf* m = rte_pktmbuf_alloc(packet_pool());
  auto* p = reinterpret_cast<std::uint8_t*>(rte_pktmbuf_append(m, 60));
  std::memset(p, 0, 60);
  std::memcpy(p, dst.data(), 6);
  std::memcpy(p + 6, src.data(), 6);
  return m;
}

// Packets waiting in a port's inbound ring (freed as they are counted).
unsigned drain(Port& p) {
  unsigned n = 0;
  rte_mbuf* m;
  while (rte_ring_sc_dequeue(p.inbound(0), reinterpret_cast<void**>(&m)) == 0) {
    rte_pktmbuf_free(m);
    ++n;
  }
  return n;
}

class SwitchTest : public ::testing::Test {
 protected:
  void SetUp() override { dpdk_init(); }
  void send(Switch& sw, Port& from, const MacAddr& dst, const MacAddr& src) {
    rte_mbuf* m = frame(dst, src);
    sw.forward(reader_, from, &m, 1);
  }
  unsigned reader_ = 0;
};

TEST_F(SwitchTest, LearnsFloodsAndForwards) {
  Switch sw;
  reader_ = sw.register_reader();
  Port p1("p1", 1), p2("p2", 1), p3("p3", 1);
  sw.attach(p1);
  sw.attach(p2);
  sw.attach(p3);
  send(sw, p1, kB, kA);  // B unknown: flooded to p2 and p3
  EXPECT_EQ(drain(p1), 0u);
  EXPECT_EQ(drain(p2), 1u);
  EXPECT_EQ(drain(p3), 1u);
  EXPECT_EQ(sw.lookup(kA), p1.id());
  send(sw, p2, kA, kB);  // A learned on p1: only there
  EXPECT_EQ(drain(p1), 1u);
  EXPECT_EQ(drain(p3), 0u);
  send(sw, p1, kBroadcast, kA);
  EXPECT_EQ(drain(p2) + drain(p3), 2u);
  send(sw, p1, kA, kA);  // to itself: dropped
  EXPECT_EQ(drain(p1) + drain(p2) + drain(p3), 0u);
  // A moves to p3.
  send(sw, p3, kB, kA);
  EXPECT_EQ(sw.lookup(kA), p3.id());
  EXPECT_EQ(drain(p2), 1u);
  sw.detach(p1);
  sw.detach(p2);
  sw.detach(p3);
  sw.unregister_reader(reader_);
}

TEST_F(SwitchTest, EntriesAgeOut) {
  Switch sw(/*ageing_ns=*/2'000'000);
  reader_ = sw.register_reader();
  Port p1("p1", 1), p2("p2", 1);
  sw.attach(p1);
  sw.attach(p2);
  send(sw, p1, kBroadcast, kA);
  drain(p2);
  EXPECT_EQ(sw.lookup(kA), p1.id());
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(sw.lookup(kA), -1);
  send(sw, p2, kA, kB);  // aged: flooded again
  EXPECT_EQ(drain(p1), 1u);
  sw.detach(p1);
  sw.detach(p2);
  sw.unregister_reader(reader_);
}

TEST_F(SwitchTest, ReusedSlotDoesNotInheritEntries) {
  Switch sw;
  reader_ = sw.register_reader();
  Port p1("p1", 1), p2("p2", 1);
  sw.attach(p1);
  sw.attach(p2);
  send(sw, p1, kBroadcast, kA);
  drain(p2);
  const int slot = p1.id();
  sw.detach(p1);
  Port p3("p3", 1);
  sw.attach(p3);
  ASSERT_EQ(p3.id(), slot);
  EXPECT_EQ(sw.lookup(kA), -1);  // learned on the old port of that slot
  sw.detach(p2);
  sw.detach(p3);
  sw.unregister_reader(reader_);
}

// Forwarding threads keep sending to a port that is detached and destroyed under them, again
// and again: no packet may reach a port after detach() returned (the port's rings are gone).
TEST_F(SwitchTest, DetachWhileOthersForward) {
  Switch sw;
  Port src1("s1", 1), src2("s2", 1);
  sw.attach(src1);
  sw.attach(src2);
  std::atomic<bool> stop{false};
  auto sender = [&](Port& from, MacAddr me) {
    const unsigned r = sw.register_reader();
    while (!stop.load()) {
      rte_mbuf* m[8];
      for (auto& x : m) x = frame(kB, me);
      sw.forward(r, from, m, 8);
      drain(from);
    }
    sw.unregister_reader(r);
  };
  std::thread t1(sender, std::ref(src1), kA);
  std::thread t2(sender, std::ref(src2), MacAddr{0x02, 0, 0, 0, 0, 0x0c});
  unsigned delivered = 0;
  for (int round = 0; round < 200; ++round) {
    auto victim = std::make_unique<Port>("v", 1);
    sw.attach(*victim);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    sw.detach(*victim);
    delivered += drain(*victim);
    victim.reset();  // frees its rings: a late enqueue would write into freed memory
  }
  stop = true;
  t1.join();
  t2.join();
  EXPECT_GT(delivered, 0u);
  sw.detach(src1);
  sw.detach(src2);
}

// The Toeplitz hash against the published RSS verification vectors (the key and tuples of
// Microsoft's "Verifying the RSS Hash Calculation", which netif.h's algorithm is).
TEST(Toeplitz, KnownVectors) {
  const std::uint8_t key[40] = {0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67,
                                0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb,
                                0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
                                0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};
  struct V {
    std::uint8_t src[4], dst[4];
    std::uint16_t sport, dport;
    std::uint32_t ip, tcp;
  };
  const V vs[] = {
      {{66, 9, 149, 187}, {161, 142, 100, 80}, 2794, 1766, 0x323e8fc2, 0x51ccc178},
      {{199, 92, 111, 2}, {65, 69, 140, 83}, 14230, 4739, 0xd718262a, 0xc626b0ea},
  };
  for (const V& v : vs) {
    std::uint8_t buf[12];
    std::memcpy(buf, v.src, 4);
    std::memcpy(buf + 4, v.dst, 4);
    buf[8] = static_cast<std::uint8_t>(v.sport >> 8);
    buf[9] = static_cast<std::uint8_t>(v.sport);
    buf[10] = static_cast<std::uint8_t>(v.dport >> 8);
    buf[11] = static_cast<std::uint8_t>(v.dport);
    EXPECT_EQ(toeplitz_hash(key, 40, buf, 8), v.ip);
    EXPECT_EQ(toeplitz_hash(key, 40, buf, 12), v.tcp);
  }
}

}  // namespace
}  // namespace pvio::netback::test
