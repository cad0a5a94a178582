// netfront core against a netif backend played by the test on the raw rings: the XenBus keys,
// the exact tx slots on the wire (sizes, flags, GSO extra, read-only grants, ids), rx buffer
// posting and refill, multi-slot and GSO receive, multi-queue, hostile responses (bad ids,
// impossible producer indices, grants kept mapped, malformed packets) and reconnection.
#include <algorithm>
#include <set>

#include "harness.h"

namespace pvio::netfront::test {
namespace {

using gnttab::GTF_permit_access;
using gnttab::GTF_readonly;

struct Received {
  std::vector<std::vector<std::uint8_t>> packets;
  std::vector<Offload> offloads;
  std::vector<std::uint32_t> frags;
  std::vector<std::uint16_t> queues;
  static void cb(void* cookie, const RxPacket& p) {
    auto* r = static_cast<Received*>(cookie);
    std::vector<std::uint8_t> v;
    for (std::uint32_t i = 0; i < p.nr_frags; ++i)
      v.insert(v.end(), p.frags[i].data, p.frags[i].data + p.frags[i].len);
    EXPECT_EQ(v.size(), p.len);
    r->packets.push_back(std::move(v));
    r->offloads.push_back(p.offload);
    r->frags.push_back(p.nr_frags);
    r->queues.push_back(p.queue);
  }
};

class NetfrontTest : public ::testing::Test {
 protected:
  void make(BackendFeatures f = {}, Limits lim = {}) {
    free_grants_at_start = dom.grants().free_count();
    be = std::make_unique<NetBackend>(dom, xs, f);
    const std::size_t bytes = Netfront::storage_bytes(lim);
    storage.assign(bytes / sizeof(std::max_align_t) + 1, std::max_align_t{});
    fe = std::make_unique<Netfront>(pf, kDevid, lim, storage.data(), bytes);
    fe->set_rx_handler(&Received::cb, &rx);
  }
  void bring_up() {
    ASSERT_EQ(fe->start(), 0);
    EXPECT_EQ(be->frontend_state(), "1");
    be->init_wait();
    ASSERT_EQ(fe->backend_changed(), 0);
    // Linux netfront: rings, rx buffers and keys, then straight to Connected.
    ASSERT_EQ(fe->state(), XenbusState::Connected);
    EXPECT_EQ(be->frontend_state(), "4");
    EXPECT_FALSE(fe->carrier());
    ASSERT_TRUE(be->connect());
    ASSERT_EQ(fe->backend_changed(), 0);
    ASSERT_TRUE(fe->carrier());
  }
  TxStatus send(const std::vector<std::uint8_t>& data, Offload off = {}, std::uint16_t q = 0) {
    Frag f{data.data(), static_cast<std::uint32_t>(data.size())};
    TxPacket p;
    p.frags = &f;
    p.nr_frags = 1;
    p.offload = off;
    p.queue = q;
    return fe->send(p);
  }
  // The backend closes; the frontend follows to Closed and offers to reconnect.
  void backend_restarts() {
    be->disappear();
    ASSERT_EQ(fe->backend_changed(), 0);
    EXPECT_EQ(fe->state(), XenbusState::Initialising);
    bring_up_again();
  }
  void bring_up_again() {
    be->init_wait();
    ASSERT_EQ(fe->backend_changed(), 0);
    ASSERT_EQ(fe->state(), XenbusState::Connected);
    ASSERT_TRUE(be->connect());
    ASSERT_EQ(fe->backend_changed(), 0);
    ASSERT_TRUE(fe->carrier());
  }
  bool logged(const std::string& needle) {
    return std::any_of(pf.logs.begin(), pf.logs.end(),
                       [&](const std::string& l) { return l.find(needle) != std::string::npos; });
  }

  GuestDomain dom;
  XsWorld xs;
  TestPlatform pf{dom, xs};
  std::unique_ptr<NetBackend> be;
  std::vector<std::max_align_t> storage;
  Received rx;
  std::unique_ptr<Netfront> fe;  // destroyed first
  std::uint32_t free_grants_at_start = 0;
};

TEST_F(NetfrontTest, HandshakeWritesLinuxNetfrontKeys) {
  make();
  bring_up();
  const std::string f = be->fe();
  for (const char* k : {"tx-ring-ref", "rx-ring-ref", "event-channel"})
    EXPECT_NE(xs.get(0, f + "/" + k), "<absent>") << k;
  EXPECT_FALSE(xs.exists(0, f + "/multi-queue-num-queues"));
  EXPECT_FALSE(xs.exists(0, f + "/event-channel-tx"));
  EXPECT_EQ(xs.get(0, f + "/request-rx-copy"), "1");
  EXPECT_EQ(xs.get(0, f + "/feature-rx-notify"), "1");
  EXPECT_EQ(xs.get(0, f + "/feature-sg"), "1");
  EXPECT_EQ(xs.get(0, f + "/feature-gso-tcpv4"), "1");
  EXPECT_EQ(xs.get(0, f + "/feature-gso-tcpv6"), "1");
  // Both rings are granted writable to the backend.
  for (const char* k : {"tx-ring-ref", "rx-ring-ref"}) {
    const auto ref = static_cast<grant_ref_t>(std::stoul(xs.get(0, f + "/" + k)));
    EXPECT_EQ(dom.grants().flags(ref) & (GTF_permit_access | GTF_readonly), GTF_permit_access);
  }
  const std::uint8_t want[6] = {0x00, 0x16, 0x3e, 0x12, 0x34, 0x56};
  EXPECT_EQ(std::memcmp(fe->mac(), want, 6), 0);
  const Negotiated& n = fe->negotiated();
  EXPECT_EQ(n.nr_queues, 1u);
  EXPECT_TRUE(n.sg && n.gso_tcpv4 && n.gso_tcpv6 && n.csum);
  EXPECT_FALSE(n.split_event_channels);
  // Every rx slot has a buffer posted, each a writable grant of its own.
  EXPECT_EQ(be->rx_posted(), kRingSize);
}

TEST_F(NetfrontTest, MultiQueueSplitChannelsKeys) {
  BackendFeatures f;
  f.max_queues = 8;
  f.split = true;
  Limits lim;
  lim.max_queues = 3;
  make(f, lim);
  bring_up();
  const std::string fp = be->fe();
  EXPECT_EQ(xs.get(0, fp + "/multi-queue-num-queues"), "3");
  EXPECT_FALSE(xs.exists(0, fp + "/tx-ring-ref"));
  std::set<evtchn_port_t> ports;
  for (int q = 0; q < 3; ++q) {
    const std::string pre = fp + "/queue-" + std::to_string(q) + "/";
    for (const char* k : {"tx-ring-ref", "rx-ring-ref", "event-channel-tx", "event-channel-rx"})
      EXPECT_TRUE(xs.exists(0, pre + k)) << pre << k;
    EXPECT_FALSE(xs.exists(0, pre + "event-channel"));
    ports.insert(fe->tx_port(q));
    ports.insert(fe->rx_port(q));
  }
  EXPECT_EQ(ports.size(), 6u);
  EXPECT_FALSE(xs.exists(0, fp + "/queue-3"));
  // A packet on each queue lands on that queue's ring.
  for (std::uint16_t q = 0; q < 3; ++q) ASSERT_EQ(send(pattern(100 + q, q), {}, q), TxStatus::Ok);
  for (std::uint32_t q = 0; q < 3; ++q) {
    auto pk = be->serve_tx(q);
    ASSERT_EQ(pk.size(), 1u);
    EXPECT_EQ(pk[0].data, pattern(100 + q, q));
  }
  // And received on queue 2 is reported as queue 2.
  ASSERT_TRUE(be->deliver(2, pattern(60, 9)));
  fe->handle_event(2);
  ASSERT_EQ(rx.packets.size(), 1u);
  EXPECT_EQ(rx.queues[0], 2);
}

TEST_F(NetfrontTest, SmallPacketOneReadOnlySlotThenGrantReturned) {
  make();
  bring_up();
  const std::uint32_t free_connected = dom.grants().free_count();
  const auto data = pattern(1514, 1);
  Offload off;
  off.csum_blank = true;
  ASSERT_EQ(send(data, off), TxStatus::Ok);
  auto pk = be->take_tx();
  ASSERT_EQ(pk.size(), 1u);
  EXPECT_EQ(pk[0].slots, 1u);
  EXPECT_EQ(pk[0].data, data);
  EXPECT_EQ(pk[0].first_flags, netif::kTxfCsumBlank | netif::kTxfDataValidated);
  EXPECT_EQ(pk[0].grant_flags[0] & (GTF_permit_access | GTF_readonly),
            GTF_permit_access | GTF_readonly);
  EXPECT_EQ(dom.grants().free_count(), free_connected - 1);
  be->answer(0, pk);
  fe->handle_event(0);
  EXPECT_EQ(dom.grants().free_count(), free_connected);
  EXPECT_EQ(fe->stats().tx_packets, 1u);
  EXPECT_EQ(fe->stats().tx_errors, 0u);
}

TEST_F(NetfrontTest, JumboFrameScatterGathersIntoThreeSlots) {
  make();
  bring_up();
  // 9014 bytes in three pieces that do not line up with pages.
  const auto data = pattern(9014, 2);
  Frag frags[3] = {{data.data(), 14}, {data.data() + 14, 5000}, {data.data() + 5014, 4000}};
  TxPacket p;
  p.frags = frags;
  p.nr_frags = 3;
  ASSERT_EQ(fe->send(p), TxStatus::Ok);
  auto pk = be->take_tx();
  ASSERT_EQ(pk.size(), 1u);
  EXPECT_EQ(pk[0].slots, 3u);
  EXPECT_EQ(pk[0].data, data);
  EXPECT_EQ(pk[0].first_flags & netif::kTxfMoreData, netif::kTxfMoreData);
  std::set<std::uint16_t> ids(pk[0].ids.begin(), pk[0].ids.end());
  EXPECT_EQ(ids.size(), 3u);
  be->answer(0, pk);
  fe->handle_event(0);
  EXPECT_EQ(fe->tx_space(0), kRingSize);
}

TEST_F(NetfrontTest, BatchedSendsArePublishedOnceWithOneNotification) {
  make();
  bring_up();
  const std::uint64_t notes = fe->stats().notifications;
  Frag f[3];
  std::vector<std::vector<std::uint8_t>> data;
  for (int i = 0; i < 3; ++i) data.push_back(pattern(200 + i, i));
  for (int i = 0; i < 3; ++i) {
    f[i] = {data[i].data(), static_cast<std::uint32_t>(data[i].size())};
    TxPacket p;
    p.frags = &f[i];
    p.nr_frags = 1;
    p.more = true;
    ASSERT_EQ(fe->send(p), TxStatus::Ok);
  }
  EXPECT_TRUE(be->take_tx().empty());  // nothing published yet
  fe->push_tx();
  auto pk = be->take_tx();
  ASSERT_EQ(pk.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(pk[i].data, data[i]);
  EXPECT_EQ(fe->stats().notifications, notes + 1);
  fe->push_tx();  // nothing left: no second notification
  EXPECT_EQ(fe->stats().notifications, notes + 1);
}

TEST_F(NetfrontTest, WithoutBackendSgMultiSlotIsRefused) {
  BackendFeatures f;
  f.sg = false;
  make(f);
  bring_up();
  EXPECT_FALSE(fe->negotiated().gso_tcpv4);  // GSO needs SG
  EXPECT_EQ(send(pattern(5000, 3)), TxStatus::NotSupported);
  EXPECT_EQ(send(pattern(1500, 3)), TxStatus::Ok);
}

TEST_F(NetfrontTest, GsoPacketCarriesExtraInfoSlot) {
  make();
  bring_up();
  const auto data = pattern(64000, 4);
  Offload off;
  off.gso_type = netif::kGsoTypeTcpv4;
  off.gso_size = 1448;
  ASSERT_EQ(send(data, off), TxStatus::Ok);
  auto pk = be->take_tx();
  ASSERT_EQ(pk.size(), 1u);
  EXPECT_EQ(pk[0].slots, 16u);
  EXPECT_EQ(pk[0].data, data);
  EXPECT_TRUE(pk[0].first_flags & netif::kTxfExtraInfo);
  EXPECT_TRUE(pk[0].first_flags & netif::kTxfCsumBlank);
  ASSERT_TRUE(pk[0].has_gso);
  EXPECT_EQ(pk[0].gso.u.gso.type, netif::kGsoTypeTcpv4);
  EXPECT_EQ(pk[0].gso.u.gso.size, 1448);
  EXPECT_EQ(pk[0].gso.flags, 0);
  // The extra slot is answered with NETIF_RSP_NULL, which the frontend skips.
  be->answer(0, pk);
  fe->handle_event(0);
  EXPECT_FALSE(fe->broken());
  EXPECT_EQ(fe->tx_space(0), kRingSize);
  // Too big, no MSS, or a GSO type the backend did not offer.
  EXPECT_EQ(send(pattern(65536, 4)), TxStatus::Invalid);
  off.gso_size = 0;
  EXPECT_EQ(send(data, off), TxStatus::Invalid);
}

TEST_F(NetfrontTest, GsoRefusedWhenBackendLacksIt) {
  BackendFeatures f;
  f.gso6 = false;
  make(f);
  bring_up();
  Offload off;
  off.gso_type = netif::kGsoTypeTcpv6;
  off.gso_size = 1428;
  EXPECT_EQ(send(pattern(20000, 5), off), TxStatus::NotSupported);
  off.gso_type = netif::kGsoTypeTcpv4;
  EXPECT_EQ(send(pattern(20000, 5), off), TxStatus::Ok);
}

TEST_F(NetfrontTest, FullRingSaysBusyAndRecovers) {
  make();
  bring_up();
  int ok = 0;
  TxStatus st;
  while ((st = send(pattern(5000, 6))) == TxStatus::Ok) ++ok;
  EXPECT_EQ(st, TxStatus::Busy);
  EXPECT_EQ(ok, static_cast<int>(kRingSize / 2));  // two slots each
  auto pk = be->serve_tx();
  EXPECT_EQ(pk.size(), kRingSize / 2);
  fe->handle_event(0);
  EXPECT_EQ(send(pattern(5000, 6)), TxStatus::Ok);
  EXPECT_GE(fe->stats().tx_busy, 1u);
}

TEST_F(NetfrontTest, ReceivesPacketsAndRefillsBuffers) {
  make();
  bring_up();
  const auto a = pattern(60, 7), b = pattern(1514, 8);
  ASSERT_TRUE(be->deliver(0, a, netif::kRxfDataValidated));
  ASSERT_TRUE(be->deliver(0, b, netif::kRxfCsumBlank | netif::kRxfDataValidated));
  EXPECT_EQ(be->rx_posted(), kRingSize - 2);
  fe->handle_event(0);
  ASSERT_EQ(rx.packets.size(), 2u);
  EXPECT_EQ(rx.packets[0], a);
  EXPECT_EQ(rx.packets[1], b);
  EXPECT_TRUE(rx.offloads[0].data_validated);
  EXPECT_FALSE(rx.offloads[0].csum_blank);
  EXPECT_TRUE(rx.offloads[1].csum_blank);
  // Both buffers went back on the ring.
  EXPECT_EQ(be->rx_posted(), kRingSize);
  // Many more packets than the ring holds, a ring's worth at a time.
  for (int round = 0; round < 5; ++round) {
    for (std::uint32_t i = 0; i < kRingSize; ++i) ASSERT_TRUE(be->deliver(0, pattern(100, i)));
    fe->handle_event(0);
  }
  EXPECT_EQ(rx.packets.size(), 2u + 5 * kRingSize);
  EXPECT_EQ(fe->stats().rx_errors, 0u);
}

TEST_F(NetfrontTest, ReceivesMultiSlotGsoPacket) {
  make();
  bring_up();
  const auto data = pattern(30000, 9);
  ASSERT_TRUE(be->deliver(0, data, netif::kRxfCsumBlank | netif::kRxfDataValidated,
                          netif::kGsoTypeTcpv6, 1428));
  fe->handle_event(0);
  ASSERT_EQ(rx.packets.size(), 1u);
  EXPECT_EQ(rx.packets[0], data);
  EXPECT_EQ(rx.frags[0], 8u);
  EXPECT_EQ(rx.offloads[0].gso_type, netif::kGsoTypeTcpv6);
  EXPECT_EQ(rx.offloads[0].gso_size, 1428);
  EXPECT_EQ(fe->stats().rx_gso, 1u);
  // The extra slot's buffer was reposted too.
  EXPECT_EQ(be->rx_posted(), kRingSize);
}

TEST_F(NetfrontTest, PacketSplitAcrossTwoPublishesIsGathered) {
  make();
  bring_up();
  const auto data = pattern(6000, 10);
  // First slot published alone (more_data), the rest later.
  netif::netif_rx_request r1, r2;
  be->rx[0].consume_request(r1);
  be->rx[0].consume_request(r2);
  auto fill = [&](const netif::netif_rx_request& r, std::size_t off, std::size_t n, std::uint16_t fl) {
    auto m = be->mapper->map(r.gref, false);
    ASSERT_EQ(m.status, gnttab::GNTST_okay);
    std::memcpy(m.addr, data.data() + off, n);
    be->mapper->unmap(m.handle);
    netif::netif_rx_response rsp{};
    rsp.id = r.id;
    rsp.status = static_cast<std::int16_t>(n);
    rsp.flags = fl;
    be->rx[0].produce_response(rsp);
    be->push_rx();
  };
  fill(r1, 0, 4096, netif::kRxfMoreData);
  fe->handle_event(0);
  EXPECT_TRUE(rx.packets.empty());
  fill(r2, 4096, 6000 - 4096, 0);
  fe->handle_event(0);
  ASSERT_EQ(rx.packets.size(), 1u);
  EXPECT_EQ(rx.packets[0], data);
}

// ---- hostile backends ----

TEST_F(NetfrontTest, TxResponseWithUnknownIdBreaksDevice) {
  make();
  bring_up();
  ASSERT_EQ(send(pattern(100, 1)), TxStatus::Ok);
  auto pk = be->take_tx();
  be->respond_tx(0, static_cast<std::uint16_t>(pk[0].ids[0] + 1), netif::kRspOkay);
  be->push_tx();
  fe->handle_event(0);
  EXPECT_TRUE(fe->broken());
  EXPECT_FALSE(fe->carrier());
  EXPECT_EQ(fe->stats().protocol_errors, 1u);
  EXPECT_EQ(be->frontend_state(), "5");  // Closing: asks the backend to go away
  EXPECT_EQ(send(pattern(100, 1)), TxStatus::NoDevice);
  EXPECT_TRUE(logged("bad id"));
}

TEST_F(NetfrontTest, TxIdAnsweredTwiceBreaksDevice) {
  make();
  bring_up();
  ASSERT_EQ(send(pattern(100, 1)), TxStatus::Ok);
  auto pk = be->take_tx();
  be->respond_tx(0, pk[0].ids[0], netif::kRspOkay);
  be->respond_tx(0, pk[0].ids[0], netif::kRspOkay);  // one request, two answers
  be->push_tx();
  fe->handle_event(0);
  EXPECT_TRUE(fe->broken());
}

TEST_F(NetfrontTest, ImpossibleProducerIndexBreaksDevice) {
  make();
  bring_up();
  be->tx[0].sring()->rsp_prod = 1000;  // more responses than requests ever posted
  dom.dom0_ports->send(be->tx_ports[0]);
  fe->handle_event(0);
  EXPECT_TRUE(fe->broken());
  EXPECT_TRUE(logged("bad response producer index"));
}

TEST_F(NetfrontTest, RxProducerBeyondPostedBuffersBreaksDevice) {
  make();
  bring_up();
  be->rx[0].sring()->rsp_prod = kRingSize + 1;
  fe->handle_event(0);
  EXPECT_TRUE(fe->broken());
  EXPECT_TRUE(rx.packets.empty());
}

TEST_F(NetfrontTest, TxGrantStillMappedAtResponseBreaksDevice) {
  make();
  bring_up();
  ASSERT_EQ(send(pattern(100, 1)), TxStatus::Ok);
  auto pk = be->take_tx();
  auto m = be->mapper->map(pk[0].grefs[0], true);  // and keep it
  ASSERT_EQ(m.status, gnttab::GNTST_okay);
  be->answer(0, pk);
  fe->handle_event(0);
  EXPECT_TRUE(fe->broken());
  EXPECT_TRUE(logged("grant still in use"));
  EXPECT_EQ(fe->stats().grants_leaked, 1u);
  be->mapper->unmap(m.handle);
}

TEST_F(NetfrontTest, RxGrantStillMappedAtResponseBreaksDevice) {
  make();
  bring_up();
  netif::netif_rx_request r;
  be->rx[0].consume_request(r);
  auto m = be->mapper->map(r.gref, false);
  ASSERT_EQ(m.status, gnttab::GNTST_okay);
  netif::netif_rx_response rsp{};
  rsp.id = r.id;
  rsp.status = 60;
  be->rx[0].produce_response(rsp);
  be->push_rx();
  fe->handle_event(0);
  EXPECT_TRUE(fe->broken());
  EXPECT_TRUE(rx.packets.empty());
  be->mapper->unmap(m.handle);
}

TEST_F(NetfrontTest, RxResponseIdNotItsSlotBreaksDevice) {
  make();
  bring_up();
  netif::netif_rx_request r;
  be->rx[0].consume_request(r);
  netif::netif_rx_response rsp{};
  rsp.id = static_cast<std::uint16_t>(r.id + 7);
  rsp.status = 60;
  be->rx[0].produce_response(rsp);
  be->push_rx();
  fe->handle_event(0);
  EXPECT_TRUE(fe->broken());
  EXPECT_TRUE(rx.packets.empty());
}

TEST_F(NetfrontTest, MalformedRxPacketsAreDroppedNotDelivered) {
  make();
  bring_up();
  auto raw = [&](std::int16_t status, std::uint16_t offset, std::uint16_t flags) {
    netif::netif_rx_request r;
    be->rx[0].consume_request(r);
    netif::netif_rx_response rsp{};
    rsp.id = r.id;
    rsp.status = status;
    rsp.offset = offset;
    rsp.flags = flags;
    be->rx[0].produce_response(rsp);
  };
  raw(netif::kRspError, 0, 0);                   // error status
  raw(200, 4000, 0);                             // beyond the page
  raw(0, 0, 0);                                  // empty packet
  raw(100, 0, netif::kRxfGsoPrefix);             // prefix we never asked for
  // An extra-info slot of an unknown type.
  raw(100, 0, netif::kRxfExtraInfo);
  {
    netif::netif_rx_request r;
    be->rx[0].consume_request(r);
    netif::netif_extra_info ex{};
    ex.type = 77;
    std::memcpy(be->rx[0].next_response(), &ex, sizeof(ex));
  }
  // A chain of more slots than any packet may take.
  for (std::uint32_t i = 0; i < kMaxSlotsPerPacket + 2; ++i)
    raw(100, 0, i + 1 < kMaxSlotsPerPacket + 2 ? netif::kRxfMoreData : 0);
  be->push_rx();
  fe->handle_event(0);
  EXPECT_FALSE(fe->broken());
  EXPECT_TRUE(rx.packets.empty());
  EXPECT_EQ(fe->stats().rx_errors, 6u);
  // Every buffer is back and a good packet still gets through.
  EXPECT_EQ(be->rx_posted(), kRingSize);
  ASSERT_TRUE(be->deliver(0, pattern(64, 3)));
  fe->handle_event(0);
  ASSERT_EQ(rx.packets.size(), 1u);
  EXPECT_EQ(rx.packets[0], pattern(64, 3));
}

TEST_F(NetfrontTest, BrokenDeviceComesBackAfterHandshake) {
  make();
  bring_up();
  be->respond_tx(0, 200, netif::kRspOkay);
  be->push_tx();
  fe->handle_event(0);
  ASSERT_TRUE(fe->broken());
  // The backend answers our Closing as netback does, and comes back.
  backend_restarts();
  EXPECT_FALSE(fe->broken());
  EXPECT_EQ(fe->stats().reconnects, 1u);
  ASSERT_EQ(send(pattern(300, 2)), TxStatus::Ok);
  auto pk = be->serve_tx();
  ASSERT_EQ(pk.size(), 1u);
  EXPECT_EQ(pk[0].data, pattern(300, 2));
}

TEST_F(NetfrontTest, BackendRestartReconnectsAndReleasesOldGrants) {
  make();
  bring_up();
  // Traffic in flight on both rings when the backend dies.
  ASSERT_EQ(send(pattern(5000, 1)), TxStatus::Ok);
  be->take_tx();
  be->disappear();
  ASSERT_EQ(fe->backend_changed(), 0);
  EXPECT_EQ(fe->state(), XenbusState::Initialising);
  EXPECT_FALSE(fe->carrier());
  // Everything of the old connection is revoked: only the grant table's reserved refs and
  // nothing of ours are in use.
  EXPECT_EQ(dom.grants().free_count(), free_grants_at_start);
  EXPECT_EQ(send(pattern(100, 1)), TxStatus::NoDevice);
  bring_up_again();
  EXPECT_EQ(fe->stats().reconnects, 1u);
  EXPECT_EQ(be->rx_posted(), kRingSize);
  ASSERT_TRUE(be->deliver(0, pattern(77, 5)));
  fe->handle_event(0);
  ASSERT_EQ(rx.packets.size(), 1u);
  ASSERT_EQ(send(pattern(88, 6)), TxStatus::Ok);
  EXPECT_EQ(be->serve_tx().size(), 1u);
}

TEST_F(NetfrontTest, BackendBackInInitWaitWithoutClosingReconnects) {
  make();
  bring_up();
  be->unmap_all();  // crashed: its mappings went with it
  be->init_wait();  // a fresh backend starts over
  ASSERT_EQ(fe->backend_changed(), 0);
  EXPECT_EQ(fe->state(), XenbusState::Connected);
  ASSERT_TRUE(be->connect());
  ASSERT_EQ(fe->backend_changed(), 0);
  EXPECT_TRUE(fe->carrier());
  ASSERT_EQ(send(pattern(100, 2)), TxStatus::Ok);
  EXPECT_EQ(be->serve_tx().size(), 1u);
}

TEST_F(NetfrontTest, ToolstackRemovalDoesNotOfferReconnect) {
  make();
  bring_up();
  // xl's device removal: online=0, Closing; the backend closes.
  ASSERT_EQ(xs.write(0, be->be() + "/online", "0"), 0);
  be->unmap_all();
  be->set_state(5);
  ASSERT_EQ(fe->backend_changed(), 0);
  EXPECT_EQ(fe->state(), XenbusState::Closed);
  be->set_state(6);
  ASSERT_EQ(fe->backend_changed(), 0);
  EXPECT_EQ(fe->state(), XenbusState::Closed);  // not Initialising: no reconnect asked for
  EXPECT_EQ(be->frontend_state(), "6");
  EXPECT_EQ(dom.grants().free_count(), free_grants_at_start);
  // Attached again (online=1, a fresh backend): it comes back.
  ASSERT_EQ(xs.write(0, be->be() + "/online", "1"), 0);
  bring_up_again();
  EXPECT_EQ(fe->stats().reconnects, 1u);
}

TEST_F(NetfrontTest, BackendWithoutRxCopyIsRefused) {
  BackendFeatures f;
  f.rx_copy = false;
  make(f);
  ASSERT_EQ(fe->start(), 0);
  be->init_wait();
  EXPECT_NE(fe->backend_changed(), 0);
  EXPECT_EQ(be->frontend_state(), "5");
  EXPECT_EQ(dom.grants().free_count(), free_grants_at_start);
}

TEST_F(NetfrontTest, MissingOrMalformedMacFailsStart) {
  make();
  ASSERT_EQ(xs.write(0, be->fe() + "/mac", "00:16:3e:zz:34:56"), 0);
  ASSERT_EQ(xs.write(0, be->be() + "/mac", "nonsense"), 0);
  EXPECT_EQ(fe->start(), -XEN_EINVAL);
}

TEST_F(NetfrontTest, RxPostingAndSendStopWhenGrantsRunOut) {
  make();
  pf.grant_budget = 100;  // fewer than the rx buffers need
  ASSERT_EQ(fe->start(), 0);
  be->init_wait();
  ASSERT_EQ(fe->backend_changed(), 0);  // rx buffers posted as far as grants allow
  ASSERT_TRUE(be->connect());
  ASSERT_EQ(fe->backend_changed(), 0);
  EXPECT_EQ(be->rx_posted(), 100u - 2);  // two went to the rings
  pf.grant_budget = 0;
  EXPECT_EQ(send(pattern(100, 1)), TxStatus::Busy);
  pf.grant_budget = -1;
  EXPECT_EQ(send(pattern(100, 1)), TxStatus::Ok);
}

TEST_F(NetfrontTest, OrderlyCloseEndsEveryGrant) {
  make();
  bring_up();
  ASSERT_EQ(send(pattern(100, 1)), TxStatus::Ok);
  pf.on_wait = [&] {
    if (be->frontend_state() == "5") {
      be->unmap_all();
      be->set_state(6);
    }
  };
  ASSERT_EQ(fe->close(1000), 0);
  EXPECT_EQ(fe->state(), XenbusState::Closed);
  EXPECT_EQ(dom.grants().free_count(), free_grants_at_start);
  EXPECT_EQ(fe->stats().grants_leaked, 0u);
}

TEST_F(NetfrontTest, ConnectHelperWaitsForBothEnds) {
  make();
  pf.on_wait = [&] {
    if (be->frontend_state() == "1") be->init_wait();
    else if (be->frontend_state() == "4" && be->tx.empty()) be->connect();
  };
  ASSERT_EQ(fe->connect(1000), 0);
  EXPECT_TRUE(fe->carrier());
}

}  // namespace
}  // namespace pvio::netfront::test
