// Hostile frontends against the netback datapath, in Linux xen-netback's two tiers: a malformed
// packet is answered with NETIF_RSP_ERROR on each of its slots and the vif keeps running; a
// protocol violation disables that vif only. Each attack is written slot by slot on a raw ring
// while a second pair of guests exchanges verified traffic through the same switch.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <thread>

#include "netback_guest.h"

namespace pvio::netback::test {
namespace {

constexpr MacAddr kMacA{0x00, 0x16, 0x3e, 0x00, 0x00, 0x0a};
constexpr MacAddr kMacB{0x00, 0x16, 0x3e, 0x00, 0x00, 0x0b};
constexpr MacAddr kMacC{0x00, 0x16, 0x3e, 0x00, 0x00, 0x0c};
constexpr MacAddr kMacE{0x00, 0x16, 0x3e, 0x00, 0x00, 0x0e};
constexpr MacAddr kBroadcast{0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

using netif::netif_extra_info;
using netif::netif_tx_request;

class Hostile : public ::testing::Test {
 protected:
  void SetUp() override {
    dpdk_init();
    va_ = start(a_, "vif5.0", nullptr);
    vb_ = start(b_, "vif6.0", nullptr);
    vc_ = start(c_, "vif9.0", &fatal_);
    ve_ = start(e_, "vif10.0", nullptr);
    victim_ = std::thread([this] { victim(); });
  }
  void TearDown() override {
    stop_ = true;
    victim_.join();
    // The victims' traffic flowed, unharmed, through the whole attack.
    EXPECT_FALSE(mismatch_.load());
    EXPECT_GT(verified_.load(), 0u);
    EXPECT_FALSE(va_->broken());
    EXPECT_FALSE(vb_->broken());
    EXPECT_FALSE(ve_->broken());
    EXPECT_EQ(va_->total_stats().tx_error_total(), 0u);
  }

  std::unique_ptr<Vif> start(GuestVif& g, const std::string& name, std::string* fatal) {
    VifConfig c = g.config(name);
    c.on_fatal = [this, fatal, name](unsigned, const std::string& why) {
      if (fatal != nullptr) {
        *fatal = why;
        fatal_count_.fetch_add(1);
      } else {
        victim_fatal_ = true;
      }
    };
    auto v = std::make_unique<Vif>(c, sw_);
    v->start();
    g.post_rx_buffers();
    return v;
  }

  // A sends numbered frames to B in rounds of 8; B checks every byte of every one, in order.
  void victim() {
    std::deque<std::vector<std::uint8_t>> expected;
    std::uint32_t seq = 0;
    while (!stop_.load()) {
      for (unsigned k = 0; k < 8; ++k, ++seq) {
        expected.push_back(make_frame(kMacB, kMacA, 60 + seq % 1400, static_cast<std::uint8_t>(seq)));
        a_.send(expected.back());
      }
      a_.push_tx();
      if (a_.tx_responses(8, 5000).size() != 8) {
        mismatch_ = true;
        return;
      }
      while (!expected.empty()) {
        const auto got = b_.receive(1, 5000);
        if (got.empty()) {
          mismatch_ = true;
          return;
        }
        for (const RxPacket& p : got) {
          if (std::memcmp(p.data.data() + 6, kMacA.data(), 6) != 0) continue;  // not A's
          if (expected.empty() || p.data != expected.front()) {
            mismatch_ = true;
            return;
          }
          expected.pop_front();
          verified_.fetch_add(1);
        }
      }
    }
  }

  // Waits (bounded) until the victims have verified `n` more packets.
  void victims_progress(std::uint64_t n = 200) {
    const std::uint64_t target = verified_.load() + n;
    for (int i = 0; i < 10000 && verified_.load() < target && !mismatch_; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_GE(verified_.load(), target);
  }

  void wait_broken() {
    for (int i = 0; i < 5000 && !vc_->broken(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }

  netif_tx_request req(unsigned slot, std::uint16_t size, std::uint16_t flags,
                       std::uint16_t offset = 0) {
    netif_tx_request r{};
    r.gref = c_.tx_gref(slot);
    r.offset = offset;
    r.flags = flags;
    r.id = static_cast<std::uint16_t>(slot);
    r.size = size;
    std::memcpy(c_.tx_page(slot) + offset, make_frame(kBroadcast, kMacC, 64, 1).data(), 14);
    return r;
  }
  // First request of `total` bytes spread over 1 + nfrags slots of 100 bytes each after it.
  void post_fragmented(unsigned nfrags, std::uint16_t first_flags = 0) {
    const unsigned s0 = c_.next_tx_index();
    c_.post_raw(req(s0, static_cast<std::uint16_t>(100 + nfrags * 100),
                    first_flags | (nfrags ? netif::kTxfMoreData : 0)));
    for (unsigned i = 1; i <= nfrags; ++i)
      c_.post_raw(req(s0 + i, 100, i < nfrags ? netif::kTxfMoreData : 0));
  }
  void expect_fatal(TxError e) {
    wait_broken();
    EXPECT_TRUE(vc_->broken());
    EXPECT_EQ(fatal_count_.load(), 1);
    EXPECT_NE(fatal_.find(tx_error_name(e)), std::string::npos) << fatal_;
    EXPECT_EQ(vc_->total_stats().tx_errors[static_cast<std::size_t>(e)], 1u);
    EXPECT_EQ(vc_->total_stats().tx_packets, 0u);
    victims_progress();
  }
  // The attacker's vif still works: a good packet is sent and arrives.
  void expect_still_serving() {
    EXPECT_FALSE(vc_->broken());
    c_.send(make_frame(kBroadcast, kMacC, 80, 3));
    c_.push_tx();
    const auto r = c_.tx_responses(1);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, netif::kRspOkay);
    for (int i = 0; i < 5000 && vc_->total_stats().tx_packets == 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    EXPECT_EQ(vc_->total_stats().tx_packets, 1u);
    victims_progress();
  }

  Switch sw_;
  TestGuest ga_{5}, gb_{6}, gc_{9}, ge_{10};
  GuestVif a_{ga_, kMacA}, b_{gb_, kMacB}, c_{gc_, kMacC}, e_{ge_, kMacE};
  std::unique_ptr<Vif> va_, vb_, vc_, ve_;
  std::string fatal_;
  std::atomic<int> fatal_count_{0};
  std::atomic<bool> victim_fatal_{false};
  std::thread victim_;
  std::atomic<bool> stop_{false}, mismatch_{false};
  std::atomic<std::uint64_t> verified_{0};
};

// ---- malformed packets: errors on the ring, the vif keeps running ----

TEST_F(Hostile, TooManySlotsBelowTheFatalLimit) {
  // As in Linux, the first slot is not counted: 1 + XEN_NETBK_LEGACY_SLOTS_MAX slots are fine,
  // one more is a malformed packet.
  post_fragmented(netif::kNetbkLegacySlotsMax + 1);
  c_.push_tx();
  const auto r = c_.tx_responses(2 + netif::kNetbkLegacySlotsMax);
  ASSERT_EQ(r.size(), 2u + netif::kNetbkLegacySlotsMax);
  for (const auto& x : r) EXPECT_EQ(x.status, netif::kRspError);
  EXPECT_EQ(vc_->total_stats().tx_errors[static_cast<std::size_t>(TxError::TooManySlots)], 1u);
  expect_still_serving();
  victims_progress();
}

TEST_F(Hostile, FragmentBiggerThanTheRestOfThePacket) {
  const unsigned s0 = c_.next_tx_index();
  c_.post_raw(req(s0, 150, netif::kTxfMoreData));
  c_.post_raw(req(s0 + 1, 200, 0));  // more than the 150 bytes the packet claims
  c_.push_tx();
  const auto r = c_.tx_responses(2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].status, netif::kRspError);
  EXPECT_EQ(r[1].status, netif::kRspError);
  EXPECT_EQ(vc_->total_stats().tx_errors[static_cast<std::size_t>(TxError::FragmentTooBig)], 1u);
  expect_still_serving();
}

TEST_F(Hostile, PacketShorterThanAnEthernetHeader) {
  c_.post_raw(req(c_.next_tx_index(), 13, 0));
  c_.push_tx();
  const auto r = c_.tx_responses(1);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, netif::kRspError);
  EXPECT_EQ(vc_->total_stats().tx_errors[static_cast<std::size_t>(TxError::TooShort)], 1u);
  expect_still_serving();
}

TEST_F(Hostile, MalformedFloodAcrossRingWraps) {
  unsigned posted = 0;
  for (unsigned round = 0; round < 12; ++round) {
    for (unsigned k = 0; k < 64; ++k) c_.post_raw(req(c_.next_tx_index(), 5, 0));
    posted += 64;
    c_.push_tx();
    ASSERT_EQ(c_.tx_responses(64).size(), 64u);
  }
  EXPECT_EQ(vc_->total_stats().tx_errors[static_cast<std::size_t>(TxError::TooShort)], posted);
  expect_still_serving();
}

// ---- protocol violations: that vif only is disabled ----

TEST_F(Hostile, ImpossibleProducerIndex) {
  ring::SringHeader* h = c_.tx_sring();
  std::atomic_ref<ring::RingIdx>(h->req_prod).store(h->rsp_prod + 300, std::memory_order_release);
  c_.kick();
  wait_broken();
  EXPECT_TRUE(vc_->broken());
  EXPECT_EQ(vc_->total_stats().ring_errors, 1u);
  EXPECT_NE(fatal_.find("producer index"), std::string::npos) << fatal_;
  victims_progress();
}

TEST_F(Hostile, ImpossibleRxProducerIndex) {
  ring::SringHeader* h = c_.rx_sring();
  std::atomic_ref<ring::RingIdx>(h->req_prod).store(h->rsp_prod + 5000, std::memory_order_release);
  // The backend looks at C's rx ring when a packet is for C: E broadcasts.
  e_.send(make_frame(kBroadcast, kMacE, 90, 4));
  e_.push_tx();
  ASSERT_EQ(e_.tx_responses(1).size(), 1u);
  wait_broken();
  EXPECT_TRUE(vc_->broken());
  EXPECT_EQ(vc_->total_stats().ring_errors, 1u);
  EXPECT_NE(fatal_.find("rx ring"), std::string::npos) << fatal_;
  victims_progress();
}

// A GSO extra on a packet whose headers are not TCP of that IP version: the packet is dropped
// and counted, the vif keeps running (the extra itself was well formed).
TEST_F(Hostile, GsoExtraOnANonTcpPacket) {
  const unsigned s0 = c_.next_tx_index();
  c_.post_raw(req(s0, 200, netif::kTxfExtraInfo | netif::kTxfCsumBlank));
  netif_extra_info e{};
  e.type = netif::kExtraTypeGso;
  e.u.gso.type = netif::kGsoTypeTcpv4;
  e.u.gso.size = 1400;
  c_.post_extra(e);
  c_.push_tx();
  const auto r = c_.tx_responses(2);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].status, netif::kRspOkay);
  EXPECT_EQ(r[1].status, netif::kRspNull);
  for (int i = 0; i < 5000 && vc_->total_stats().drops[static_cast<std::size_t>(Drop::ChecksumSetup)] == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(vc_->total_stats().drops[static_cast<std::size_t>(Drop::ChecksumSetup)], 1u);
  EXPECT_EQ(vc_->total_stats().tx_packets, 0u);
  expect_still_serving();
}

TEST_F(Hostile, SlotCountAtTheFatalLimit) {
  post_fragmented(kFatalSlots + 1);  // slots after the first reach fatal_skb_slots
  c_.push_tx();
  expect_fatal(TxError::FatalSlots);
}

TEST_F(Hostile, FragmentPastTheEndOfItsPage) {
  const unsigned s0 = c_.next_tx_index();
  c_.post_raw(req(s0, 300, netif::kTxfMoreData));
  c_.post_raw(req(s0 + 1, 200, 0, 4000));
  c_.push_tx();
  expect_fatal(TxError::CrossesPage);
}

TEST_F(Hostile, FirstSlotPastTheEndOfItsPage) {
  c_.post_raw(req(c_.next_tx_index(), 200, 0, 3950));
  c_.push_tx();
  expect_fatal(TxError::CrossesPage);
}

TEST_F(Hostile, ExtraInfoOfTypeNone) {
  c_.post_raw(req(c_.next_tx_index(), 60, netif::kTxfExtraInfo));
  netif_extra_info e{};
  e.type = netif::kExtraTypeNone;
  c_.post_extra(e);
  c_.push_tx();
  expect_fatal(TxError::BadExtraType);
}

TEST_F(Hostile, ExtraInfoOfUnknownType) {
  c_.post_raw(req(c_.next_tx_index(), 60, netif::kTxfExtraInfo));
  netif_extra_info e{};
  e.type = 0x42;
  c_.post_extra(e);
  c_.push_tx();
  expect_fatal(TxError::BadExtraType);
}

TEST_F(Hostile, MissingExtraInfo) {
  // The extra flag is set, but the frontend publishes nothing after the request.
  c_.post_raw(req(c_.next_tx_index(), 60, netif::kTxfExtraInfo));
  c_.push_tx();
  expect_fatal(TxError::Incomplete);
}

TEST_F(Hostile, EndlessChainOfExtras) {
  c_.post_raw(req(c_.next_tx_index(), 60, netif::kTxfExtraInfo));
  for (int i = 0; i < 6; ++i) {
    netif_extra_info e{};
    e.type = netif::kExtraTypeHash;
    e.flags = netif::kExtraFlagMore;
    c_.post_extra(e);
  }
  c_.push_tx();
  expect_fatal(TxError::TooManyExtras);
}

TEST_F(Hostile, ZeroGsoSize) {
  c_.post_raw(req(c_.next_tx_index(), 60, netif::kTxfExtraInfo));
  netif_extra_info e{};
  e.type = netif::kExtraTypeGso;
  e.u.gso.type = netif::kGsoTypeTcpv4;
  e.u.gso.size = 0;
  c_.post_extra(e);
  c_.push_tx();
  expect_fatal(TxError::ZeroGsoSize);
}

TEST_F(Hostile, UnknownGsoType) {
  c_.post_raw(req(c_.next_tx_index(), 60, netif::kTxfExtraInfo));
  netif_extra_info e{};
  e.type = netif::kExtraTypeGso;
  e.u.gso.type = 7;
  e.u.gso.size = 1400;
  c_.post_extra(e);
  c_.push_tx();
  expect_fatal(TxError::BadGsoType);
}

TEST_F(Hostile, TxGrantNeverGranted) {
  netif_tx_request r = req(c_.next_tx_index(), 60, 0);
  r.gref = 0x7FFF0;  // outside the table
  c_.post_raw(r);
  c_.push_tx();
  wait_broken();
  EXPECT_TRUE(vc_->broken());
  EXPECT_EQ(vc_->total_stats().grant_errors, 1u);
  EXPECT_EQ(vc_->total_stats().tx_packets, 0u);
  victims_progress();
}

TEST_F(Hostile, TxGrantForAnotherDomain) {
  const std::uint64_t gfn = gc_.alloc_page();
  std::memcpy(gc_.page(gfn), make_frame(kBroadcast, kMacC, 60, 1).data(), 60);
  netif_tx_request r = req(c_.next_tx_index(), 60, 0);
  r.gref = gc_.gnttab().grant_access(/*to=*/3, gfn, true);
  c_.post_raw(r);
  c_.push_tx();
  wait_broken();
  EXPECT_TRUE(vc_->broken());
  EXPECT_EQ(vc_->total_stats().grant_errors, 1u);
  EXPECT_FALSE(gc_.gnttab().is_busy(r.gref));
  victims_progress();
}

// Rx buffers the backend may not write: read-only, for another domain, access ended.
class HostileRx : public Hostile, public ::testing::WithParamInterface<int> {};

TEST_P(HostileRx, RxBufferGrantRefused) {
  // Replace the grant of every posted buffer: C reposts its ring with bad grants.
  const int kind = GetParam();
  for (unsigned i = 0; i < GuestVif::kRxBuffers; ++i) {
    const std::uint64_t gfn = c_.rx_gfn(i);
    grant_ref_t g = 0;
    if (kind == 0) g = gc_.gnttab().grant_access(0, gfn, /*readonly=*/true);
    if (kind == 1) g = gc_.gnttab().grant_access(/*to=*/3, gfn, false);
    if (kind == 2) {
      g = gc_.gnttab().grant_access(0, gfn, false);
      ASSERT_TRUE(gc_.gnttab().end_access(g));
    }
    c_.set_rx_grant(i, g);
  }
  // C's ring already holds good buffers from start(): fill a second vif on the same guest.
  GuestVif c2(gc_, MacAddr{0x00, 0x16, 0x3e, 0x00, 0x00, 0x0d});
  for (unsigned i = 0; i < GuestVif::kRxBuffers; ++i) {
    const std::uint64_t gfn = c2.rx_gfn(i);
    grant_ref_t g = kind == 0 ? gc_.gnttab().grant_access(0, gfn, true)
                              : gc_.gnttab().grant_access(3, gfn, false);
    c2.set_rx_grant(i, g);
  }
  std::string fatal2;
  VifConfig cfg = c2.config("vif9.1");
  cfg.on_fatal = [&fatal2](unsigned, const std::string& why) { fatal2 = why; };
  Vif v2(cfg, sw_);
  v2.start();
  c2.post_rx_buffers();
  // A broadcast from E reaches every vif, C2's bad buffers included.
  e_.send(make_frame(kBroadcast, kMacE, 100, 7));
  e_.push_tx();
  ASSERT_EQ(e_.tx_responses(1).size(), 1u);
  for (int i = 0; i < 5000 && !v2.broken(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_TRUE(v2.broken());
  EXPECT_EQ(v2.total_stats().grant_errors, 1u);
  EXPECT_NE(fatal2.find("rx"), std::string::npos) << fatal2;
  EXPECT_EQ(c2.rx_pending(), 0u) << "responses published for a refused copy";
  victims_progress();
}

INSTANTIATE_TEST_SUITE_P(Grants, HostileRx, ::testing::Values(0, 1, 2));

// Guest rewrites the tx slots while the backend reads them: only valid packets or errors come
// out, never a crash, and every slot gets exactly one response.
TEST_F(Hostile, SlotsRewrittenWhileServed) {
  std::atomic<bool> stop{false};
  const netif_tx_request good = req(0, 60, 0);
  std::thread mutator([&] {
    std::uint32_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      for (unsigned i = 0; i < 256; ++i) {
        auto* s = reinterpret_cast<volatile std::uint8_t*>(c_.tx_sring() + 1) + i * 12;
        // Scribble size and flags (bytes 6..7 flags, 10..11 size), never the id.
        s[6] = static_cast<std::uint8_t>(++n & 1 ? 0 : 0xFF);
        s[10] = static_cast<std::uint8_t>(n & 2 ? 60 : 5);
      }
    }
  });
  unsigned posted = 0;
  for (unsigned round = 0; round < 40 && !vc_->broken(); ++round) {
    for (unsigned k = 0; k < 16; ++k) {
      netif_tx_request r = good;
      r.id = static_cast<std::uint16_t>(c_.next_tx_index());
      r.gref = c_.tx_gref(r.id);
      std::memcpy(c_.tx_page(r.id), make_frame(kBroadcast, kMacC, 64, 1).data(), 64);
      c_.post_raw(r);
      ++posted;
    }
    c_.push_tx();
    if (c_.tx_responses(16, 500).size() != 16) break;  // a fatal mix stops the vif
  }
  stop = true;
  mutator.join();
  // Either the vif survived every mix, or a mix was a protocol violation and it stopped.
  if (!vc_->broken()) {
    EXPECT_EQ(posted, 40u * 16u);
  }
  victims_progress();
}

}  // namespace
}  // namespace pvio::netback::test
