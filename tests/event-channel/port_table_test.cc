// Port table: Xen's numbering, states and EVTCHNOP error values.
#include <gtest/gtest.h>

#include <cerrno>
#include <memory>
#include <vector>

#include "pvio/event_channel/port_table.h"
#include "pvio/event_channel/two_level.h"

namespace {

using namespace pvio::evtchn;

// Records deliveries instead of signalling an fd, to observe where send() goes.
struct Recorder final : Notifier {
  std::vector<pvio::evtchn_port_t> notified;
  int upcalls = 0;
  void notify(pvio::evtchn_port_t p) override { notified.push_back(p); }
  void upcall() override { ++upcalls; }
};

struct PortTables : ::testing::Test {
  Recorder guest_rx, dom0_rx;
  std::unique_ptr<shared_info> si = std::make_unique<shared_info>();
  PortTable guest{7, si.get(), &guest_rx};
  PortTable dom0{0, nullptr, &dom0_rx};
};

TEST_F(PortTables, PortZeroIsReservedAndLowestFreePortIsAllocated) {
  EXPECT_EQ(guest.state(0), ChannelState::Reserved);
  EXPECT_EQ(guest.close(0), -EINVAL);
  auto a = guest.alloc_unbound(0), b = guest.alloc_unbound(0), c = guest.alloc_unbound(0);
  EXPECT_EQ(a.rc, 0);
  EXPECT_EQ(a.port, 1u);
  EXPECT_EQ(b.port, 2u);
  EXPECT_EQ(c.port, 3u);
  EXPECT_EQ(guest.close(2), 0);
  EXPECT_EQ(guest.alloc_unbound(0).port, 2u);
  EXPECT_EQ(guest.alloc_unbound(0).port, 4u);
}

TEST_F(PortTables, TableFullIsENOSPC) {
  for (unsigned i = 1; i < kNrEventChannels; ++i) ASSERT_EQ(guest.alloc_unbound(0).rc, 0) << i;
  EXPECT_EQ(guest.alloc_unbound(0).rc, -ENOSPC);
  EXPECT_EQ(guest.close(4095), 0);
  auto r = guest.alloc_unbound(0);
  EXPECT_EQ(r.rc, 0);
  EXPECT_EQ(r.port, 4095u);
}

TEST_F(PortTables, StatusReportsEachState) {
  ChannelStatus st;
  EXPECT_EQ(guest.status(0, &st), 0);
  EXPECT_EQ(st.status, kEvtchnStatClosed);
  EXPECT_EQ(guest.status(kNrEventChannels, &st), -EINVAL);
  auto u = guest.alloc_unbound(0);
  EXPECT_EQ(guest.status(u.port, &st), 0);
  EXPECT_EQ(st.status, kEvtchnStatUnbound);
  EXPECT_EQ(st.remote_dom, 0);
  auto b = PortTable::bind_interdomain(dom0, guest, u.port);
  ASSERT_EQ(b.rc, 0);
  EXPECT_EQ(guest.status(u.port, &st), 0);
  EXPECT_EQ(st.status, kEvtchnStatInterdomain);
  EXPECT_EQ(st.remote_dom, 0);
  EXPECT_EQ(st.remote_port, b.port);
  EXPECT_EQ(dom0.status(b.port, &st), 0);
  EXPECT_EQ(st.status, kEvtchnStatInterdomain);
  EXPECT_EQ(st.remote_dom, 7);
  EXPECT_EQ(st.remote_port, u.port);
}

TEST_F(PortTables, DomidSelfMeansOwnDomain) {
  auto u = guest.alloc_unbound(pvio::kDomidSelf);
  ChannelStatus st;
  guest.status(u.port, &st);
  EXPECT_EQ(st.remote_dom, 7);
  EXPECT_EQ(PortTable::bind_interdomain(dom0, guest, u.port).rc, -EINVAL);
  auto loop = PortTable::bind_interdomain(guest, guest, u.port);
  EXPECT_EQ(loop.rc, 0);
  EXPECT_NE(loop.port, u.port);
}

TEST_F(PortTables, BindInterdomainErrors) {
  EXPECT_EQ(PortTable::bind_interdomain(dom0, guest, 0).rc, -EINVAL);       // reserved
  EXPECT_EQ(PortTable::bind_interdomain(dom0, guest, 5).rc, -EINVAL);       // free
  EXPECT_EQ(PortTable::bind_interdomain(dom0, guest, 99999).rc, -EINVAL);   // out of range
  auto other = guest.alloc_unbound(3);                                     // for domain 3 only
  EXPECT_EQ(PortTable::bind_interdomain(dom0, guest, other.port).rc, -EINVAL);
  auto u = guest.alloc_unbound(0);
  EXPECT_EQ(PortTable::bind_interdomain(dom0, guest, u.port).rc, 0);
  EXPECT_EQ(PortTable::bind_interdomain(dom0, guest, u.port).rc, -EINVAL);  // already bound
  // Failed binds allocated nothing on the Dom0 side: its next port is 2.
  EXPECT_EQ(dom0.alloc_unbound(7).port, 2u);
}

TEST_F(PortTables, SendDeliversToThePeerPortAndBindRaisesTheNewPortOnce) {
  auto u = guest.alloc_unbound(0);
  auto b = PortTable::bind_interdomain(dom0, guest, u.port);
  ASSERT_EQ(b.rc, 0);
  EXPECT_EQ(dom0_rx.notified, std::vector<pvio::evtchn_port_t>{b.port});
  EXPECT_EQ(dom0.send(b.port), 0);
  EXPECT_EQ(guest_rx.notified, std::vector<pvio::evtchn_port_t>{u.port});
  EXPECT_EQ(guest.send(u.port), 0);
  EXPECT_EQ(dom0_rx.notified, (std::vector<pvio::evtchn_port_t>{b.port, b.port}));
}

// EVTCHNOP_bind_virq: one port per virq, raised by the hypervisor through the domain's own
// delivery; status names it, send on it is refused, close frees the virq for a new bind.
TEST_F(PortTables, VirqBindRaiseStatusAndClose) {
  auto v = guest.bind_virq(VIRQ_TIMER);
  ASSERT_EQ(v.rc, 0);
  EXPECT_EQ(guest.state(v.port), ChannelState::Virq);
  EXPECT_EQ(guest.bind_virq(VIRQ_TIMER).rc, -EEXIST);
  EXPECT_EQ(guest.bind_virq(NR_VIRQS).rc, -EINVAL);
  guest.raise_virq(VIRQ_TIMER);
  guest.raise_virq(5);          // not bound: nothing
  guest.raise_virq(0xffffffff); // out of range: nothing
  EXPECT_EQ(guest_rx.notified, std::vector<pvio::evtchn_port_t>{v.port});
  ChannelStatus st;
  ASSERT_EQ(guest.status(v.port, &st), 0);
  EXPECT_EQ(st.status, kEvtchnStatVirq);
  EXPECT_EQ(st.virq, VIRQ_TIMER);
  EXPECT_EQ(guest.send(v.port), -EINVAL);
  EXPECT_EQ(guest.close(v.port), 0);
  guest.raise_virq(VIRQ_TIMER);
  EXPECT_EQ(guest_rx.notified.size(), 1u);
  EXPECT_EQ(guest.bind_virq(VIRQ_TIMER).rc, 0);
}

TEST_F(PortTables, SendErrors) {
  EXPECT_EQ(guest.send(0), -EINVAL);
  EXPECT_EQ(guest.send(10), -EINVAL);
  EXPECT_EQ(guest.send(kNrEventChannels), -EINVAL);
  auto u = guest.alloc_unbound(0);
  EXPECT_EQ(guest.send(u.port), 0);  // unbound: dropped silently
  EXPECT_TRUE(dom0_rx.notified.empty());
  EXPECT_TRUE(guest_rx.notified.empty());
}

TEST_F(PortTables, CloseReturnsPeerToUnboundAndClearsPending) {
  auto u = guest.alloc_unbound(0);
  auto b = PortTable::bind_interdomain(dom0, guest, u.port);
  two_level::set_pending(*si, u.port);
  EXPECT_EQ(guest.close(u.port), 0);
  EXPECT_FALSE(two_level::is_pending(*si, u.port));
  EXPECT_EQ(guest.state(u.port), ChannelState::Free);
  ChannelStatus st;
  dom0.status(b.port, &st);
  EXPECT_EQ(st.status, kEvtchnStatUnbound);
  EXPECT_EQ(st.remote_dom, 7);
  EXPECT_EQ(dom0.send(b.port), 0);  // now unbound: dropped
  EXPECT_TRUE(guest_rx.notified.empty());
  EXPECT_EQ(guest.close(u.port), -EINVAL);  // already closed
  // The guest can bind back to the Dom0 port that now waits for it.
  auto again = PortTable::bind_interdomain(guest, dom0, b.port);
  EXPECT_EQ(again.rc, 0);
  EXPECT_EQ(again.port, u.port);
}

TEST_F(PortTables, UnmaskReRaisesThroughTheDelivery) {
  auto u = guest.alloc_unbound(0);
  PortTable::bind_interdomain(dom0, guest, u.port);
  two_level::mask(*si, u.port);
  two_level::set_pending(*si, u.port);
  EXPECT_EQ(guest_rx.upcalls, 0);
  EXPECT_EQ(guest.unmask(u.port), 0);
  EXPECT_EQ(guest_rx.upcalls, 1);
  EXPECT_EQ(guest.unmask(u.port), 0);  // nothing held any more
  EXPECT_EQ(guest_rx.upcalls, 1);
  EXPECT_EQ(guest.unmask(kNrEventChannels), -EINVAL);
}

TEST_F(PortTables, DestroyingATableUnbindsItsPeers) {
  auto u = guest.alloc_unbound(0);
  {
    PortTable other_dom0(0, nullptr, nullptr);
    ASSERT_EQ(PortTable::bind_interdomain(other_dom0, guest, u.port).rc, 0);
  }
  EXPECT_EQ(guest.state(u.port), ChannelState::Unbound);
  EXPECT_EQ(PortTable::bind_interdomain(dom0, guest, u.port).rc, 0);
}

}  // namespace
