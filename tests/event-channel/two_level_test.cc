// 2-level event-channel operations on a shared_info page: pending/mask/selector bits, unmask
// re-raise and the guest's upcall scan.
#include <gtest/gtest.h>

#include <memory>
#include <vector>

#include "pvio/event_channel/two_level.h"

namespace {

namespace tl = pvio::evtchn::two_level;
using pvio::evtchn::shared_info;

struct TwoLevel : ::testing::Test {
  std::unique_ptr<shared_info> owner = std::make_unique<shared_info>();
  shared_info& s = *owner;
  std::vector<pvio::evtchn_port_t> scan() {
    std::vector<pvio::evtchn_port_t> got;
    tl::do_upcall(s, [&](pvio::evtchn_port_t p) { got.push_back(p); });
    return got;
  }
};

TEST_F(TwoLevel, SetPendingSetsBitSelectorAndUpcallOnce) {
  EXPECT_TRUE(tl::set_pending(s, 70));
  EXPECT_EQ(s.evtchn_pending[1], 1ull << 6);
  EXPECT_EQ(s.vcpu_info[0].evtchn_pending_sel, 1ull << 1);
  EXPECT_EQ(s.vcpu_info[0].evtchn_upcall_pending, 1);
  // Already pending: nothing new to deliver.
  EXPECT_FALSE(tl::set_pending(s, 70));
  // Another port in the same word: selector already set, no second upcall.
  EXPECT_FALSE(tl::set_pending(s, 71));
  EXPECT_EQ(s.evtchn_pending[1], (1ull << 6) | (1ull << 7));
  // A port in another word while upcall_pending is still set: selector bit, no new upcall.
  EXPECT_FALSE(tl::set_pending(s, 4095));
  EXPECT_EQ(s.vcpu_info[0].evtchn_pending_sel, (1ull << 1) | (1ull << 63));
}

TEST_F(TwoLevel, OutOfRangePortIsIgnored) {
  EXPECT_FALSE(tl::set_pending(s, 4096));
  EXPECT_FALSE(tl::set_pending(s, 0xFFFFFFFFu));
  EXPECT_FALSE(tl::unmask(s, 4096));
  tl::mask(s, 4096);
  for (auto w : s.evtchn_pending) EXPECT_EQ(w, 0u);
  for (auto w : s.evtchn_mask) EXPECT_EQ(w, 0u);
  EXPECT_EQ(s.vcpu_info[0].evtchn_pending_sel, 0u);
}

TEST_F(TwoLevel, MaskedPortIsHeldAndUnmaskReRaises) {
  tl::mask(s, 5);
  EXPECT_TRUE(tl::is_masked(s, 5));
  EXPECT_FALSE(tl::set_pending(s, 5));
  EXPECT_TRUE(tl::is_pending(s, 5));
  EXPECT_EQ(s.vcpu_info[0].evtchn_pending_sel, 0u);
  EXPECT_EQ(s.vcpu_info[0].evtchn_upcall_pending, 0);
  EXPECT_TRUE(scan().empty());
  EXPECT_TRUE(tl::is_pending(s, 5));  // the scan leaves a masked event alone

  EXPECT_TRUE(tl::unmask(s, 5));
  EXPECT_FALSE(tl::is_masked(s, 5));
  EXPECT_EQ(s.vcpu_info[0].evtchn_pending_sel, 1u);
  EXPECT_EQ(s.vcpu_info[0].evtchn_upcall_pending, 1);
  EXPECT_EQ(scan(), std::vector<pvio::evtchn_port_t>{5});
  EXPECT_FALSE(tl::is_pending(s, 5));
}

TEST_F(TwoLevel, UnmaskWithoutPendingEventRaisesNothing) {
  tl::mask(s, 9);
  EXPECT_FALSE(tl::unmask(s, 9));
  EXPECT_FALSE(tl::unmask(s, 9));  // not masked any more
  EXPECT_EQ(s.vcpu_info[0].evtchn_upcall_pending, 0);
}

TEST_F(TwoLevel, UpcallScanDeliversEachPendingPortOnceInPortOrder) {
  for (pvio::evtchn_port_t p : {3000u, 1u, 64u, 63u, 130u}) tl::set_pending(s, p);
  EXPECT_EQ(scan(), (std::vector<pvio::evtchn_port_t>{1, 63, 64, 130, 3000}));
  EXPECT_EQ(s.vcpu_info[0].evtchn_upcall_pending, 0);
  EXPECT_EQ(s.vcpu_info[0].evtchn_pending_sel, 0u);
  for (auto w : s.evtchn_pending) EXPECT_EQ(w, 0u);
  EXPECT_TRUE(scan().empty());
  // After the scan cleared upcall_pending, the next event raises a new upcall.
  EXPECT_TRUE(tl::set_pending(s, 1));
}

TEST_F(TwoLevel, EventRaisedByAHandlerIsDeliveredInTheSameUpcall) {
  tl::set_pending(s, 2);
  std::vector<pvio::evtchn_port_t> got;
  tl::do_upcall(s, [&](pvio::evtchn_port_t p) {
    got.push_back(p);
    if (p == 2) tl::set_pending(s, 1);  // lower port, already passed in this word
  });
  EXPECT_EQ(got, (std::vector<pvio::evtchn_port_t>{2, 1}));
}

TEST_F(TwoLevel, SelectorBitWithoutPendingBitsIsHarmless) {
  // A guest-controlled page can hold any bits; the scan must only deliver pending & ~mask.
  s.vcpu_info[0].evtchn_pending_sel = ~0ull;
  s.vcpu_info[0].evtchn_upcall_pending = 1;
  s.evtchn_pending[2] = 0xF0;
  s.evtchn_mask[2] = 0x30;
  EXPECT_EQ(scan(), (std::vector<pvio::evtchn_port_t>{134, 135}));
  EXPECT_EQ(s.evtchn_pending[2], 0x30u);
}

}  // namespace
