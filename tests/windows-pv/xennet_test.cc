// xennet, the NDIS 6 miniport, run unchanged on the host inside the Windows-kernel test
// environment (env/): NDIS drives two adapters, xenbus's child PDOs hand them interfaces over
// one user-mode pvio domain with two vifs, and the vifs are ports of the REAL pvio-netback's
// switch (`pvio up --vif-uplink none`, `pvio network-attach`). Frames sent by one adapter are
// checked byte for byte where the other indicates them; every test also fails if the driver
// broke an NDIS or kernel rule the environment enforces.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <memory>
#include <thread>

#include "../blkfront-user/harness.h"
#include "env/kernel.h"
#include "env/ndis_host.h"
#include "env/xen_bus.h"
#include "pvio/blkfront_user/xenstore_access.h"
#include "pvio/domain/domain.h"
#include "pvio/xenstore/client.h"

extern "C" NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path);

namespace pvio::windows::test {
namespace {

using blkfront::user::test::alive;
using blkfront::user::test::Dom0;
using blkfront::user::test::env_or_empty;
using blkfront::user::test::kWaitMs;
using pvio::test::run_shell;

constexpr domid_t kDomid = 12;
constexpr std::uint16_t kEtherTest = 0x88B5;  // IEEE 802 local experimental EtherType
const std::uint8_t kMac[2][6] = {{0x00, 0x16, 0x3e, 0x77, 0x00, 0x01},
                                 {0x00, 0x16, 0x3e, 0x77, 0x00, 0x02}};

std::string missing_prerequisite() {
  if (::geteuid() != 0) return "needs root (pvio-netback)";
  for (const char* v : {"PVIO", "PVIO_XENSTORED", "PVIO_DOMAIN", "PVIO_NETBACK"})
    if (env_or_empty(v).empty()) return std::string("$") + v + " not set (run through meson test)";
  return "";
}

std::string mac_string(const std::uint8_t* m) {
  char b[18];
  std::snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return b;
}

// A test frame: Ethernet header, then (tag, sequence, length) and a pattern derived from them.
std::vector<std::uint8_t> frame(int from, int to, std::uint32_t seq, std::size_t len) {
  std::vector<std::uint8_t> f(len);
  std::memcpy(f.data(), kMac[to], 6);
  std::memcpy(f.data() + 6, kMac[from], 6);
  f[12] = kEtherTest >> 8;
  f[13] = kEtherTest & 0xFF;
  const std::uint32_t hdr[3] = {0x786e6574u, seq, static_cast<std::uint32_t>(len)};
  std::memcpy(f.data() + 14, hdr, sizeof hdr);
  for (std::size_t i = 26; i < len; ++i) f[i] = static_cast<std::uint8_t>(seq * 31 + i * 7 + from);
  return f;
}
std::uint32_t seq_of(const std::vector<std::uint8_t>& f) {
  std::uint32_t s = ~0u;
  if (f.size() >= 26) std::memcpy(&s, f.data() + 18, 4);
  return s;
}

// Checksums computed here, independently of the driver's: RFC 1071 over the pseudo-header and
// the L4 segment (IPv4, no options) must come to 0xFFFF.
std::uint32_t sum16(const std::uint8_t* p, std::size_t n, std::uint32_t s = 0) {
  for (std::size_t i = 0; i + 1 < n; i += 2) s += (p[i] << 8) | p[i + 1];
  if (n & 1) s += p[n - 1] << 8;
  return s;
}
std::uint16_t fold(std::uint32_t s) {
  while (s >> 16) s = (s & 0xFFFF) + (s >> 16);
  return static_cast<std::uint16_t>(s);
}
bool ipv4_header_ok(const std::vector<std::uint8_t>& f) { return fold(sum16(f.data() + 14, 20)) == 0xFFFF; }
bool l4_checksum_ok(const std::vector<std::uint8_t>& f) {
  const std::uint8_t* ip = f.data() + 14;
  const std::size_t l4len = ((ip[2] << 8) | ip[3]) - 20;
  std::uint32_t s = sum16(ip + 12, 8);
  s += ip[9];
  s += static_cast<std::uint32_t>(l4len);
  return fold(sum16(ip + 20, l4len, s)) == 0xFFFF;
}

// IPv4 UDP (proto 17) or TCP (6) frame from adapter 0 to 1 with checksums left zero.
std::vector<std::uint8_t> ip_frame(std::uint8_t proto, std::size_t payload, std::uint32_t seq) {
  const std::size_t l4h = proto == 6 ? 20 : 8;
  std::vector<std::uint8_t> f(14 + 20 + l4h + payload);
  std::memcpy(f.data(), kMac[1], 6);
  std::memcpy(f.data() + 6, kMac[0], 6);
  f[12] = 0x08;
  f[13] = 0x00;
  std::uint8_t* ip = f.data() + 14;
  ip[0] = 0x45;
  const std::size_t total = 20 + l4h + payload;
  ip[2] = static_cast<std::uint8_t>(total >> 8);
  ip[3] = static_cast<std::uint8_t>(total);
  ip[8] = 64;
  ip[9] = proto;
  const std::uint8_t src[4] = {10, 77, 0, 1}, dst[4] = {10, 77, 0, 2};
  std::memcpy(ip + 12, src, 4);
  std::memcpy(ip + 16, dst, 4);
  std::uint8_t* l4 = ip + 20;
  l4[0] = 0x9c;
  l4[1] = 0x40;
  l4[2] = 0x13;
  l4[3] = 0x89;
  if (proto == 17) {
    l4[4] = static_cast<std::uint8_t>((8 + payload) >> 8);
    l4[5] = static_cast<std::uint8_t>(8 + payload);
  } else {
    std::memcpy(l4 + 4, &seq, 4);  // sequence number
    l4[12] = 5 << 4;                // data offset
    l4[13] = 0x18;                  // PSH ACK
    l4[14] = 0xff;
  }
  for (std::size_t i = 0; i < payload; ++i) l4[l4h + i] = static_cast<std::uint8_t>(seq + i * 13);
  return f;
}

class XennetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const std::string why = missing_prerequisite(); !why.empty()) GTEST_SKIP() << why;
    clear_violations();
    dom0_ = std::make_unique<Dom0>(1 << 20);
    std::string out;
    // No TAP per vif: the two vifs are the switch's only ports.
    ASSERT_EQ(run_shell(dom0_->pvio + " up --vif-uplink none", &out), 0) << out;
    domain::DomainConfig dc;
    dc.domid = kDomid;
    dc.memory_bytes = 64u << 20;
    dc.nr_grant_frames = 8;
    ASSERT_EQ(domain::Domain::create(dc, &dom_), 0);
    loop_ = std::thread([this] { dom_->run(); });
    xs_ = xs::Client::connect(dom0_->dir + "/xenstored.sock");
    ASSERT_TRUE(xs_);
    const std::string home = "/local/domain/" + std::to_string(kDomid);
    ASSERT_EQ(xs_->write(home + "/name", "xennet-test"), xs::XsError::None);
    ASSERT_EQ(xs_->write(home + "/domid", std::to_string(kDomid)), xs::XsError::None);
    ASSERT_EQ(xs_->set_perms(home, {{0, xs::XsPerm::None}, {kDomid, xs::XsPerm::Read}}),
              xs::XsError::None);
    ASSERT_EQ(xs_->introduce(kDomid, dom_->xenstore_gfn(), dom_->xenstore_port()),
              xs::XsError::None);
    for (int i = 0; i < 2; ++i)
      ASSERT_EQ(run_shell(dom0_->pvio + " network-attach " + std::to_string(kDomid) + " mac=" +
                              mac_string(kMac[i]) + " devid=" + std::to_string(i), &out), 0) << out;

    set_guest_memory(dom_.get());
    static bool registered = false;
    if (!registered) {
      UNICODE_STRING reg{};
      ASSERT_EQ(DriverEntry(nullptr, &reg), STATUS_SUCCESS);
      registered = true;
    }
    ASSERT_TRUE(ndis().registered());
    ring_ = std::make_unique<blkfront::user::SharedRingXenstore>(*dom_);
    for (int i = 0; i < 2; ++i) {
      child_[i] = std::make_unique<XenBusChild>(*dom_, PvioXenVif, i, ring_.get());
      ASSERT_EQ(ndis().initialize(child_[i]->pdo(), &a_[i]), NDIS_STATUS_SUCCESS);
      ASSERT_EQ(ndis().restart(a_[i]), NDIS_STATUS_SUCCESS);
      // What NDIS does once a protocol binds: ask for directed and broadcast frames.
      const ULONG filter = NDIS_PACKET_TYPE_DIRECTED | NDIS_PACKET_TYPE_BROADCAST;
      ASSERT_EQ(ndis().set(a_[i], OID_GEN_CURRENT_PACKET_FILTER, &filter, sizeof filter),
                NDIS_STATUS_SUCCESS);
    }
  }

  void TearDown() override {
    for (int i = 0; i < 2; ++i) {
      if (a_[i] == nullptr) continue;
      ndis().set_hold(a_[i], false);
      ndis().release_held(a_[i]);
      if (!ndis().wait_paused(a_[i], 0)) {
        EXPECT_TRUE(ndis().pause(a_[i], kWaitMs));
      }
      ndis().halt(a_[i]);
    }
    for (int i = 0; i < 2; ++i) {
      if (!child_[i]) continue;
      EXPECT_EQ(child_[i]->references(), 0) << "xennet kept its xenbus interface referenced";
      EXPECT_EQ(child_[i]->watches(), 0u) << "xennet left a xenstore watch behind";
      child_[i].reset();
    }
    if (ring_) ring_->abandon();
    ring_.reset();
    if (xs_) xs_->release(kDomid);
    if (dom_) {
      dom_->stop();
      loop_.join();
    }
    set_guest_memory(nullptr);
    dom_.reset();
    dom0_.reset();
    EXPECT_TRUE(violations().empty()) << violations().size() << " rule(s) broken, first: "
                                      << violations().front();
  }

  NdisHost& ndis() { return NdisHost::instance(); }

  // pvio-netback's count of frames its switch dropped because vif `devid`'s inbound queue
  // was full (netback.stats, "drop.inbound-full=N"; absent = 0).
  // Every frame pvio-netback dropped on this domain's vifs, whatever the reason (a full inbound
  // queue, no rx buffers, no mbuf...): on a slow run (sanitizers) more than one reason shows.
  std::uint64_t netback_drops() {
    std::ifstream f(dom0_->dir + "/netback.stats");
    const std::string vif = "vif" + std::to_string(kDomid) + ".";
    std::uint64_t total = 0;
    for (std::string line; std::getline(f, line);) {
      if (line.rfind(vif, 0) != 0 || line.find(" queue=") == std::string::npos) continue;
      for (auto at = line.find(" drop."); at != std::string::npos; at = line.find(" drop.", at + 1)) {
        const auto eq = line.find('=', at);
        if (eq != std::string::npos) total += std::stoull(line.substr(eq + 1));
      }
    }
    return total;
  }

  // Sends `frames` from adapter `from` in NBLs of `per_nbl` NET_BUFFERs; returns the ids.
  std::vector<std::uint64_t> send_frames(int from, const std::vector<std::vector<std::uint8_t>>& frames,
                                         std::size_t per_nbl = 1, unsigned mdl_pieces = 1) {
    std::vector<SendNbl> nbls;
    for (std::size_t i = 0; i < frames.size(); i += per_nbl) {
      SendNbl n;
      for (std::size_t k = i; k < std::min(frames.size(), i + per_nbl); ++k) n.frames.push_back(frames[k]);
      n.mdl_pieces = mdl_pieces;
      nbls.push_back(std::move(n));
    }
    return ndis().send(a_[from], nbls);
  }

  // Waits for `want` frames at adapter `to` and checks each against what was sent.
  void expect_received(int to, const std::map<std::uint32_t, std::vector<std::uint8_t>>& sent) {
    if (!ndis().wait_received(a_[to], sent.size(), kWaitMs)) {
      ULONG64 rcv_err = 0;
      ndis().query(a_[to], OID_GEN_RCV_ERROR, &rcv_err, sizeof rcv_err);
      std::string stats;
      run_shell("cat " + dom0_->dir + "/netback.stats", &stats);
      FAIL() << "adapter " << to << " got " << ndis().take_received(a_[to]).size() << " of "
             << sent.size() << " frames; receive errors/drops " << rcv_err
             << "; netback:\n" << stats;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // no more may come
    const auto got = ndis().take_received(a_[to]);
    ASSERT_EQ(got.size(), sent.size());
    std::set<std::uint32_t> seen;
    for (const auto& r : got) {
      const std::uint32_t s = seq_of(r.data);
      auto it = sent.find(s);
      ASSERT_NE(it, sent.end()) << "a frame that was never sent (seq " << s << ")";
      ASSERT_TRUE(seen.insert(s).second) << "frame " << s << " indicated twice";
      ASSERT_EQ(r.data, it->second) << "frame " << s << " differs";
    }
  }

  std::unique_ptr<Dom0> dom0_;
  std::unique_ptr<domain::Domain> dom_;
  std::thread loop_;
  std::unique_ptr<xs::Client> xs_;
  std::unique_ptr<blkfront::user::SharedRingXenstore> ring_;
  std::unique_ptr<XenBusChild> child_[2];
  NdisHost::Adapter* a_[2] = {nullptr, nullptr};
};

// The MAC comes from xenstore (what network-attach wrote); the basic OIDs answer from it and
// from the link; the link is up once connected.
TEST_F(XennetTest, AttributesAndOids) {
  for (int i = 0; i < 2; ++i) {
    const auto& g = ndis().general(a_[i]);
    EXPECT_EQ(std::memcmp(g.CurrentMacAddress, kMac[i], 6), 0);
    EXPECT_EQ(std::memcmp(g.PermanentMacAddress, kMac[i], 6), 0);
    EXPECT_EQ(g.MediaConnectState, MediaConnectStateConnected);
    EXPECT_EQ(g.MtuSize, 1500u);

    std::uint8_t mac[8] = {};
    ULONG written = 0;
    ASSERT_EQ(ndis().query(a_[i], OID_802_3_CURRENT_ADDRESS, mac, sizeof mac, &written), NDIS_STATUS_SUCCESS);
    EXPECT_EQ(written, 6u);
    EXPECT_EQ(std::memcmp(mac, kMac[i], 6), 0);
    ASSERT_EQ(ndis().query(a_[i], OID_802_3_PERMANENT_ADDRESS, mac, sizeof mac), NDIS_STATUS_SUCCESS);
    EXPECT_EQ(std::memcmp(mac, kMac[i], 6), 0);
    ULONG v = 0;
    ASSERT_EQ(ndis().query(a_[i], OID_GEN_LINK_SPEED, &v, sizeof v), NDIS_STATUS_SUCCESS);
    EXPECT_EQ(v, 100'000'000u);  // 10 Gbit/s in 100 bit/s units
    ASSERT_EQ(ndis().query(a_[i], OID_GEN_MAXIMUM_FRAME_SIZE, &v, sizeof v), NDIS_STATUS_SUCCESS);
    EXPECT_EQ(v, 1500u);
    ASSERT_EQ(ndis().query(a_[i], OID_GEN_MAXIMUM_TOTAL_SIZE, &v, sizeof v), NDIS_STATUS_SUCCESS);
    EXPECT_EQ(v, 1514u);
    ASSERT_EQ(ndis().query(a_[i], OID_GEN_MEDIA_CONNECT_STATUS, &v, sizeof v), NDIS_STATUS_SUCCESS);
    EXPECT_EQ(v, NdisMediaStateConnected);
    NDIS_OID list[64] = {};
    ASSERT_EQ(ndis().query(a_[i], OID_GEN_SUPPORTED_LIST, list, sizeof list, &written), NDIS_STATUS_SUCCESS);
    const std::vector<NDIS_OID> oids(list, list + written / sizeof(NDIS_OID));
    for (NDIS_OID o : {OID_802_3_CURRENT_ADDRESS, OID_GEN_LINK_SPEED, OID_GEN_XMIT_OK, OID_GEN_RCV_OK})
      EXPECT_NE(std::find(oids.begin(), oids.end(), o), oids.end()) << std::hex << o;
    // A short buffer and an unknown OID are answered, not overrun.
    EXPECT_EQ(ndis().query(a_[i], OID_802_3_CURRENT_ADDRESS, mac, 4), NDIS_STATUS_BUFFER_TOO_SHORT);
    EXPECT_EQ(ndis().query(a_[i], 0x00FFFFFF, mac, sizeof mac), NDIS_STATUS_NOT_SUPPORTED);
  }
}

// Frames of every size class between 60 and 1514 bytes both ways, split over 1..3 MDLs,
// checked byte for byte; the statistics OIDs count them; nothing is allocated meanwhile.
TEST_F(XennetTest, FramesBothWays60To1514) {
  std::vector<std::size_t> lens = {60, 61, 63, 64, 65, 100, 127, 128, 255, 256, 511, 512, 777,
                                   1000, 1023, 1024, 1280, 1400, 1500, 1513, 1514};
  const std::size_t allocs = allocation_calls();
  std::uint32_t seq = 1;
  for (int from = 0; from < 2; ++from) {
    const int to = 1 - from;
    std::map<std::uint32_t, std::vector<std::uint8_t>> sent;
    std::vector<std::vector<std::uint8_t>> frames;
    for (std::size_t len : lens) {
      frames.push_back(frame(from, to, seq, len));
      sent[seq++] = frames.back();
    }
    std::vector<std::uint64_t> ids;
    for (unsigned pieces = 1; pieces <= 3; ++pieces) {
      std::vector<std::vector<std::uint8_t>> part;
      for (std::size_t k = pieces - 1; k < frames.size(); k += 3) part.push_back(frames[k]);
      const auto more = send_frames(from, part, 1, pieces);
      ids.insert(ids.end(), more.begin(), more.end());
    }
    ASSERT_TRUE(ndis().wait_sends(a_[from], kWaitMs));
    for (std::uint64_t id : ids) EXPECT_EQ(ndis().send_status(a_[from], id), NDIS_STATUS_SUCCESS);
    expect_received(to, sent);
    if (HasFatalFailure()) return;
  }
  EXPECT_EQ(allocation_calls(), allocs) << "the I/O path allocated";
  ULONG64 n = 0;
  ASSERT_EQ(ndis().query(a_[0], OID_GEN_XMIT_OK, &n, sizeof n), NDIS_STATUS_SUCCESS);
  EXPECT_EQ(n, lens.size());
  ASSERT_EQ(ndis().query(a_[0], OID_GEN_RCV_OK, &n, sizeof n), NDIS_STATUS_SUCCESS);
  EXPECT_EQ(n, lens.size());
}

// Far more frames than a ring holds, handed over at once in multi-frame NBLs: the driver
// queues what does not fit and sends it as responses free slots; every NBL completes once,
// successfully. pvio-netback's switch may drop frames when the receiving vif's inbound queue
// is full (as a switch does); every frame is either indicated intact at the other adapter or
// counted in netback's drop.inbound-full for that vif.
TEST_F(XennetTest, ManyInFlightRingFull) {
  constexpr std::uint32_t kFrames = 2400;
  std::vector<std::vector<std::uint8_t>> frames;
  for (std::uint32_t s = 1; s <= kFrames; ++s) frames.push_back(frame(0, 1, s, 60 + (s * 37) % 1455));
  std::vector<std::uint64_t> ids;
  for (std::size_t i = 0; i < frames.size(); i += 300) {
    std::vector<std::vector<std::uint8_t>> part(frames.begin() + i, frames.begin() + i + 300);
    const auto more = send_frames(0, part, 3);
    ids.insert(ids.end(), more.begin(), more.end());
  }
  ASSERT_TRUE(ndis().wait_sends(a_[0], kWaitMs)) << ndis().outstanding_sends(a_[0]) << " outstanding";
  for (std::uint64_t id : ids) ASSERT_EQ(ndis().send_status(a_[0], id), NDIS_STATUS_SUCCESS);
  ULONG64 xmit_ok = 0;
  ASSERT_EQ(ndis().query(a_[0], OID_GEN_XMIT_OK, &xmit_ok, sizeof xmit_ok), NDIS_STATUS_SUCCESS);
  EXPECT_EQ(xmit_ok, ids.size());

  // Every frame is indicated intact or counted where it was dropped: by pvio-netback (a full
  // inbound queue, no rx buffers...) or by the receiving driver when a burst found no free
  // receive NBL (OID_GEN_RCV_ERROR). None may vanish.
  std::vector<ReceivedFrame> got;
  std::uint64_t dropped = 0;
  ULONG64 rcv_err = 0;
  const bool accounted = pvio::test::wait_until(
      [&] {
        for (auto& r : ndis().take_received(a_[1])) got.push_back(std::move(r));
        ndis().query(a_[1], OID_GEN_RCV_ERROR, &rcv_err, sizeof rcv_err);
        dropped = netback_drops() + rcv_err;
        return got.size() + dropped >= kFrames;
      },
      kWaitMs);
  ASSERT_TRUE(accounted) << got.size() << " received + " << dropped << " dropped (" << rcv_err
                         << " by the driver) of " << kFrames;
  EXPECT_EQ(got.size() + dropped, kFrames);
  EXPECT_GT(got.size(), kFrames / 2);
  std::set<std::uint32_t> seen;
  for (const auto& r : got) {
    const std::uint32_t s = seq_of(r.data);
    ASSERT_TRUE(s >= 1 && s <= kFrames && seen.insert(s).second) << s;
    ASSERT_EQ(r.data, frames[s - 1]);
  }
}

// A protocol that keeps its receive NBLs: once half the pool is up the stack, the driver
// indicates with NDIS_RECEIVE_FLAGS_RESOURCES (the NBLs come back when the call returns), so
// it never runs dry while the protocol holds them. A burst larger than what is left within
// one event may still find no NBL: such frames are counted (OID_GEN_RCV_ERROR), never lost
// silently, and every frame indicated is intact.
TEST_F(XennetTest, ReceivePoolLowUsesResourcesFlag) {
  ndis().set_hold(a_[1], true);
  std::vector<std::vector<std::uint8_t>> frames;
  for (std::uint32_t s = 1; s <= 700; ++s) frames.push_back(frame(0, 1, s, 60 + s));
  send_frames(0, frames, 2);
  ASSERT_TRUE(ndis().wait_sends(a_[0], kWaitMs));
  std::vector<ReceivedFrame> got;
  ULONG64 dropped = 0;  // by the driver (no free receive NBL)
  std::uint64_t backend_dropped = 0;  // by pvio-netback (e.g. a full inbound queue)
  ASSERT_TRUE(pvio::test::wait_until(
      [&] {
        auto more = ndis().take_received(a_[1]);
        for (auto& r : more) got.push_back(std::move(r));
        ndis().query(a_[1], OID_GEN_RCV_ERROR, &dropped, sizeof dropped);
        backend_dropped = netback_drops();
        return got.size() + dropped + backend_dropped >= 700;
      },
      kWaitMs))
      << got.size() << " received, " << dropped << " dropped by the driver, " << backend_dropped
      << " by netback, of 700";
  EXPECT_EQ(got.size() + dropped + backend_dropped, 700u);
  std::set<std::uint32_t> seen;
  for (const auto& r : got) {
    const std::uint32_t s = seq_of(r.data);
    ASSERT_TRUE(s >= 1 && s <= 700 && seen.insert(s).second) << s;
    ASSERT_EQ(r.data, frames[s - 1]);
  }
  EXPECT_EQ(ndis().held(a_[1]), 256u) << "normal indications stop at half the pool";
  EXPECT_GE(ndis().resources_indications(a_[1]), 1u);
  EXPECT_LT(dropped, 700u - 256u);
  ndis().set_hold(a_[1], false);
  ndis().release_held(a_[1]);
}

// Checksum offload: NDIS's per-NBL request becomes netif's csum_blank with the pseudo-header
// sum in the field (and the IPv4 header checksum is filled in); the receiving adapter
// indicates frames whose checksums verify, flagged as succeeded.
TEST_F(XennetTest, ChecksumOffloadMapped) {
  struct Case {
    std::uint8_t proto;
    bool ip_csum;
    std::size_t payload;
  };
  const Case cases[] = {{17, false, 100}, {6, false, 1000}, {6, true, 1460}, {17, true, 1}};
  std::vector<SendNbl> nbls;
  std::vector<std::vector<std::uint8_t>> expect;
  std::uint32_t seq = 100;
  for (const Case& c : cases) {
    auto f = ip_frame(c.proto, c.payload, seq++);
    // A correct IPv4 header checksum unless the driver is asked to fill it in.
    if (!c.ip_csum) {
      const std::uint16_t h = static_cast<std::uint16_t>(~fold(sum16(f.data() + 14, 20)));
      f[24] = static_cast<std::uint8_t>(h >> 8);
      f[25] = static_cast<std::uint8_t>(h);
    }
    NDIS_TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO ci{};
    ci.Transmit.IsIPv4 = 1;
    ci.Transmit.IpHeaderChecksum = c.ip_csum;
    if (c.proto == 6) {
      ci.Transmit.TcpChecksum = 1;
      ci.Transmit.TcpHeaderOffset = 34;
    } else {
      ci.Transmit.UdpChecksum = 1;
    }
    SendNbl n;
    n.frames.push_back(f);
    n.checksum_info = ci.Value;
    n.mdl_pieces = 2;
    nbls.push_back(std::move(n));
    expect.push_back(f);
  }
  const auto ids = ndis().send(a_[0], nbls);
  ASSERT_TRUE(ndis().wait_sends(a_[0], kWaitMs));
  for (std::uint64_t id : ids) EXPECT_EQ(ndis().send_status(a_[0], id), NDIS_STATUS_SUCCESS);
  ASSERT_TRUE(ndis().wait_received(a_[1], expect.size(), kWaitMs));
  const auto got = ndis().take_received(a_[1]);
  ASSERT_EQ(got.size(), expect.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    const auto& r = got[i].data;
    ASSERT_EQ(r.size(), expect[i].size());
    EXPECT_TRUE(ipv4_header_ok(r)) << "frame " << i;
    EXPECT_TRUE(l4_checksum_ok(r)) << "frame " << i << ": L4 checksum not filled in";
    // Apart from the checksum fields the frame is what was sent.
    auto a = r, b = expect[i];
    const std::size_t csum_at = 34 + (cases[i].proto == 6 ? 16 : 6);
    for (auto* v : {&a, &b}) {
      (*v)[24] = (*v)[25] = 0;
      (*v)[csum_at] = (*v)[csum_at + 1] = 0;
    }
    EXPECT_EQ(a, b) << "frame " << i;
    const auto& rc = got[i].checksum.Receive;
    if (cases[i].proto == 6) EXPECT_EQ(rc.TcpChecksumSucceeded, 1u) << "frame " << i;
    else EXPECT_EQ(rc.UdpChecksumSucceeded, 1u) << "frame " << i;
    EXPECT_EQ(rc.TcpChecksumFailed | rc.UdpChecksumFailed | rc.IpChecksumFailed, 0u);
  }
}

// ---- task offload ----

// A TCP/IPv4 frame from adapter 0 to 1 carrying `payload` bytes, as the stack hands an LSO
// packet to a miniport: for LSOv2 the IPv4 total length is 0, the TCP checksum field holds the
// pseudo-header sum without the length (the documented LSO preparation).
std::vector<std::uint8_t> lso_frame(std::size_t payload, bool v2, std::uint32_t seq0) {
  auto f = ip_frame(6, payload, 0);
  std::uint8_t* ip = f.data() + 14;
  std::uint8_t* tcp = ip + 20;
  const std::uint32_t be_seq = __builtin_bswap32(seq0);
  std::memcpy(tcp + 4, &be_seq, 4);
  tcp[13] = 0x18;
  for (std::size_t i = 0; i < payload; ++i) tcp[20 + i] = static_cast<std::uint8_t>(i * 7 + i / 251);
  if (v2) ip[2] = ip[3] = 0;
  const std::uint16_t h = static_cast<std::uint16_t>(~fold(sum16(ip, 20)));
  ip[10] = static_cast<std::uint8_t>(h >> 8);
  ip[11] = static_cast<std::uint8_t>(h);
  std::uint32_t ps = sum16(ip + 12, 8) + 6;  // addresses and protocol, no length
  const std::uint16_t p = fold(ps);
  tcp[16] = static_cast<std::uint8_t>(p >> 8);
  tcp[17] = static_cast<std::uint8_t>(p);
  return f;
}

// An IPv4 frame with its checksums computed here, as a stack without offload sends it.
std::vector<std::uint8_t> checksummed(std::vector<std::uint8_t> f) {
  std::uint8_t* ip = f.data() + 14;
  ip[10] = ip[11] = 0;
  const std::uint16_t h = static_cast<std::uint16_t>(~fold(sum16(ip, 20)));
  ip[10] = static_cast<std::uint8_t>(h >> 8);
  ip[11] = static_cast<std::uint8_t>(h);
  const std::size_t l4len = ((ip[2] << 8) | ip[3]) - 20;
  const std::size_t at = 20 + (ip[9] == 6 ? 16 : 6);
  ip[at] = ip[at + 1] = 0;
  std::uint32_t s = sum16(ip + 12, 8) + ip[9] + static_cast<std::uint32_t>(l4len);
  std::uint16_t c = static_cast<std::uint16_t>(~fold(sum16(ip + 20, l4len, s)));
  if (c == 0 && ip[9] == 17) c = 0xFFFF;
  ip[at] = static_cast<std::uint8_t>(c >> 8);
  ip[at + 1] = static_cast<std::uint8_t>(c);
  return f;
}

NDIS_OFFLOAD_PARAMETERS offload_params() {
  NDIS_OFFLOAD_PARAMETERS p{};
  p.Header.Type = NDIS_OBJECT_TYPE_DEFAULT;
  p.Header.Revision = NDIS_OFFLOAD_PARAMETERS_REVISION_2;
  p.Header.Size = NDIS_SIZEOF_OFFLOAD_PARAMETERS_REVISION_2;
  return p;
}

// The attributes follow what the real pvio-netback offers in xenstore; the OIDs answer the
// same configuration; malformed and unsupported OID_TCP_OFFLOAD_PARAMETERS /
// OID_OFFLOAD_ENCAPSULATION requests are refused without changing anything.
TEST_F(XennetTest, OffloadAttributesFollowBackendFeatures) {
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(ndis().has_offload(a_[i]));
    const std::string fe = "/local/domain/" + std::to_string(kDomid) + "/device/vif/" + std::to_string(i);
    auto be = xs_->read(fe + "/backend");
    ASSERT_TRUE(be.ok());
    auto feature = [&](const char* k) {
      auto v = xs_->read(be.value + "/" + k);
      return v.ok() && v.value == "1";
    };
    const bool gso4 = feature("feature-gso-tcpv4"), gso6 = feature("feature-gso-tcpv6");
    const bool csum = !feature("feature-no-csum-offload"), csum6 = feature("feature-ipv6-csum-offload");
    const NDIS_OFFLOAD hw = ndis().offload_hardware(a_[i]);
    EXPECT_EQ(hw.Header.Revision, NDIS_OFFLOAD_REVISION_2);
    EXPECT_EQ(hw.Checksum.IPv4Transmit.TcpChecksum, csum ? 1u : 0u);
    EXPECT_EQ(hw.Checksum.IPv4Transmit.UdpChecksum, csum ? 1u : 0u);
    EXPECT_EQ(hw.Checksum.IPv4Transmit.IpChecksum, 1u);
    EXPECT_EQ(hw.Checksum.IPv6Transmit.TcpChecksum, csum6 ? 1u : 0u);
    EXPECT_EQ(hw.Checksum.IPv4Receive.TcpChecksum, 1u);
    EXPECT_EQ(hw.Checksum.IPv6Receive.UdpChecksum, 1u);
    EXPECT_EQ(hw.Checksum.IPv6Transmit.IpExtensionHeadersSupported, 0u);
    EXPECT_EQ(hw.LsoV1.IPv4.Encapsulation, gso4 && csum ? NDIS_ENCAPSULATION_IEEE_802_3 : 0u);
    EXPECT_EQ(hw.LsoV2.IPv4.Encapsulation, gso4 && csum ? NDIS_ENCAPSULATION_IEEE_802_3 : 0u);
    EXPECT_EQ(hw.LsoV2.IPv6.Encapsulation, gso6 && csum6 ? NDIS_ENCAPSULATION_IEEE_802_3 : 0u);
    if (gso4) {
      EXPECT_EQ(hw.LsoV2.IPv4.MinSegmentCount, 2u);
      EXPECT_GT(hw.LsoV2.IPv4.MaxOffLoadSize, 60000u);
      EXPECT_LE(hw.LsoV2.IPv4.MaxOffLoadSize + 14 + 20 + 20, 65535u);
    }
    EXPECT_EQ(hw.IPsecV1.Supported.Encapsulation, 0u);
    const NDIS_OFFLOAD def = ndis().offload_default(a_[i]);
    EXPECT_EQ(std::memcmp(&hw, &def, sizeof hw), 0) << "everything supported starts enabled";

    NDIS_OFFLOAD q{};
    ULONG written = 0;
    ASSERT_EQ(ndis().query(a_[i], OID_TCP_OFFLOAD_CURRENT_CONFIG, &q, sizeof q, &written), NDIS_STATUS_SUCCESS);
    EXPECT_EQ(written, sizeof q);
    EXPECT_EQ(std::memcmp(&q, &def, sizeof q), 0);
    ASSERT_EQ(ndis().query(a_[i], OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES, &q, sizeof q), NDIS_STATUS_SUCCESS);
    EXPECT_EQ(std::memcmp(&q, &hw, sizeof q), 0);
    EXPECT_EQ(ndis().query(a_[i], OID_TCP_OFFLOAD_CURRENT_CONFIG, &q, 100), NDIS_STATUS_BUFFER_TOO_SHORT);
    NDIS_OID list[64] = {};
    ASSERT_EQ(ndis().query(a_[i], OID_GEN_SUPPORTED_LIST, list, sizeof list, &written), NDIS_STATUS_SUCCESS);
    const std::vector<NDIS_OID> oids(list, list + written / sizeof(NDIS_OID));
    for (NDIS_OID o : {OID_TCP_OFFLOAD_CURRENT_CONFIG, OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES,
                       OID_TCP_OFFLOAD_PARAMETERS, OID_OFFLOAD_ENCAPSULATION})
      EXPECT_NE(std::find(oids.begin(), oids.end(), o), oids.end()) << std::hex << o;

    // Refused requests: short, a wrong header, an undefined value, an offload never offered,
    // an encapsulation other than 802.3.
    NDIS_OFFLOAD_PARAMETERS p = offload_params();
    p.TCPIPv4Checksum = NDIS_OFFLOAD_PARAMETERS_TX_RX_DISABLED;
    EXPECT_EQ(ndis().set(a_[i], OID_TCP_OFFLOAD_PARAMETERS, &p, 12), NDIS_STATUS_INVALID_LENGTH);
    p.Header.Type = NDIS_OBJECT_TYPE_OFFLOAD;
    EXPECT_EQ(ndis().set(a_[i], OID_TCP_OFFLOAD_PARAMETERS, &p, sizeof p), NDIS_STATUS_INVALID_DATA);
    p = offload_params();
    p.TCPIPv4Checksum = NDIS_OFFLOAD_PARAMETERS_TX_RX_DISABLED;
    p.UDPIPv6Checksum = 9;
    EXPECT_EQ(ndis().set(a_[i], OID_TCP_OFFLOAD_PARAMETERS, &p, sizeof p), NDIS_STATUS_INVALID_DATA);
    p = offload_params();
    p.TCPIPv4Checksum = NDIS_OFFLOAD_PARAMETERS_TX_RX_DISABLED;
    p.IPsecV1 = NDIS_OFFLOAD_PARAMETERS_IPSECV1_AH_AND_ESP_ENABLED;
    EXPECT_EQ(ndis().set(a_[i], OID_TCP_OFFLOAD_PARAMETERS, &p, sizeof p), NDIS_STATUS_NOT_SUPPORTED);
    NDIS_OFFLOAD_ENCAPSULATION e{};
    e.Header.Type = NDIS_OBJECT_TYPE_OFFLOAD_ENCAPSULATION;
    e.Header.Revision = NDIS_OFFLOAD_ENCAPSULATION_REVISION_1;
    e.Header.Size = NDIS_SIZEOF_OFFLOAD_ENCAPSULATION_REVISION_1;
    e.IPv4.Enabled = e.IPv6.Enabled = NDIS_OFFLOAD_SET_ON;
    e.IPv4.EncapsulationType = e.IPv6.EncapsulationType = NDIS_ENCAPSULATION_IEEE_LLC_SNAP_ROUTED;
    EXPECT_EQ(ndis().set(a_[i], OID_OFFLOAD_ENCAPSULATION, &e, sizeof e), NDIS_STATUS_INVALID_PARAMETER);
    EXPECT_TRUE(ndis().offload_indications(a_[i]).empty()) << "a refused request changed the configuration";
    // What TCP/IP sets at bind: 802.3 for both versions; the configuration is indicated again.
    e.IPv4.EncapsulationType = e.IPv6.EncapsulationType = NDIS_ENCAPSULATION_IEEE_802_3;
    e.IPv4.HeaderSize = e.IPv6.HeaderSize = 14;
    EXPECT_EQ(ndis().set(a_[i], OID_OFFLOAD_ENCAPSULATION, &e, sizeof e), NDIS_STATUS_SUCCESS);
    const auto ind = ndis().offload_indications(a_[i]);
    ASSERT_EQ(ind.size(), 1u);
    EXPECT_EQ(std::memcmp(&ind[0], &def, sizeof def), 0);
  }
}

// Transmit checksum offload switched off on adapter 0, receive checksum offload off on
// adapter 1: each adapter indicates its new configuration; frames the stack now checksums
// itself arrive intact, a frame that still asks for the disabled offload gets its checksum
// from the driver, and adapter 1 no longer reports checksum results (the environment fails
// the test if it does).
TEST_F(XennetTest, OffloadParametersChangeTheDatapath) {
  NDIS_OFFLOAD_PARAMETERS p = offload_params();
  p.TCPIPv4Checksum = p.UDPIPv4Checksum = NDIS_OFFLOAD_PARAMETERS_RX_ENABLED_TX_DISABLED;
  ASSERT_EQ(ndis().set(a_[0], OID_TCP_OFFLOAD_PARAMETERS, &p, sizeof p), NDIS_STATUS_SUCCESS);
  auto ind = ndis().offload_indications(a_[0]);
  ASSERT_EQ(ind.size(), 1u);
  EXPECT_EQ(ind[0].Checksum.IPv4Transmit.TcpChecksum, 0u);
  EXPECT_EQ(ind[0].Checksum.IPv4Transmit.UdpChecksum, 0u);
  EXPECT_EQ(ind[0].Checksum.IPv4Transmit.IpChecksum, 1u) << "an unchanged setting changed";
  EXPECT_EQ(ind[0].Checksum.IPv4Receive.TcpChecksum, 1u);
  NDIS_OFFLOAD q{};
  ASSERT_EQ(ndis().query(a_[0], OID_TCP_OFFLOAD_CURRENT_CONFIG, &q, sizeof q), NDIS_STATUS_SUCCESS);
  EXPECT_EQ(std::memcmp(&q, &ind[0], sizeof q), 0);

  // The stack now computes checksums; one NBL still asks for TCP checksum offload.
  std::vector<SendNbl> nbls;
  std::vector<std::vector<std::uint8_t>> sent;
  for (std::uint32_t k = 0; k < 4; ++k) {
    SendNbl n;
    const std::uint8_t proto = k % 2 ? 17 : 6;
    n.frames.push_back(checksummed(ip_frame(proto, 300 + 401 * k, 500 + k)));
    n.mdl_pieces = 3;
    sent.push_back(n.frames[0]);
    nbls.push_back(std::move(n));
  }
  {
    SendNbl n;
    auto f = ip_frame(6, 999, 600);  // checksum field zero: left to the "offload"
    NDIS_TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO ci{};
    ci.Transmit.IsIPv4 = 1;
    ci.Transmit.TcpChecksum = 1;
    ci.Transmit.IpHeaderChecksum = 1;
    ci.Transmit.TcpHeaderOffset = 34;
    n.frames.push_back(f);
    n.checksum_info = ci.Value;
    n.mdl_pieces = 3;  // odd-sized pieces: the software sum crosses odd boundaries
    n.beyond_advertised = true;
    sent.push_back(checksummed(f));
    nbls.push_back(std::move(n));
  }
  auto ids = ndis().send(a_[0], nbls);
  ASSERT_TRUE(ndis().wait_sends(a_[0], kWaitMs));
  for (std::uint64_t id : ids) EXPECT_EQ(ndis().send_status(a_[0], id), NDIS_STATUS_SUCCESS);
  ASSERT_TRUE(ndis().wait_received(a_[1], sent.size(), kWaitMs));
  auto got = ndis().take_received(a_[1]);
  ASSERT_EQ(got.size(), sent.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].data, sent[i]) << "frame " << i;
    EXPECT_TRUE(ipv4_header_ok(got[i].data) && l4_checksum_ok(got[i].data)) << "frame " << i;
  }

  // Adapter 1: receive checksum offload off. Adapter 0 sends with the (still enabled) IPv4
  // header checksum offload and a checksum the stack computed; adapter 1 indicates no result.
  p = offload_params();
  p.IPv4Checksum = p.TCPIPv4Checksum = p.UDPIPv4Checksum = NDIS_OFFLOAD_PARAMETERS_TX_ENABLED_RX_DISABLED;
  ASSERT_EQ(ndis().set(a_[1], OID_TCP_OFFLOAD_PARAMETERS, &p, sizeof p), NDIS_STATUS_SUCCESS);
  ind = ndis().offload_indications(a_[1]);
  ASSERT_EQ(ind.size(), 1u);
  EXPECT_EQ(ind[0].Checksum.IPv4Receive.TcpChecksum | ind[0].Checksum.IPv4Receive.IpChecksum, 0u);
  // Adapter 0 enables transmit again and sends a partial checksum: adapter 1 must complete it
  // in the data but report nothing.
  p = offload_params();
  p.TCPIPv4Checksum = NDIS_OFFLOAD_PARAMETERS_TX_RX_ENABLED;
  ASSERT_EQ(ndis().set(a_[0], OID_TCP_OFFLOAD_PARAMETERS, &p, sizeof p), NDIS_STATUS_SUCCESS);
  SendNbl n;
  NDIS_TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO ci{};
  ci.Transmit.IsIPv4 = 1;
  ci.Transmit.TcpChecksum = 1;
  ci.Transmit.IpHeaderChecksum = 1;
  n.frames.push_back(ip_frame(6, 1200, 700));
  n.checksum_info = ci.Value;
  ids = ndis().send(a_[0], {n});
  ASSERT_TRUE(ndis().wait_sends(a_[0], kWaitMs));
  EXPECT_EQ(ndis().send_status(a_[0], ids[0]), NDIS_STATUS_SUCCESS);
  ASSERT_TRUE(ndis().wait_received(a_[1], 1, kWaitMs));
  got = ndis().take_received(a_[1]);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].data, checksummed(n.frames[0]));
  EXPECT_EQ(got[0].checksum.Value, nullptr) << "checksum results reported with receive offload off";
}

// LSO end to end through the real pvio-netback: adapter 1 takes no receive GSO (frame-sized
// buffers, no feature-gso-tcpv4), so netback cuts the GSO packet into MSS-sized segments with
// complete checksums (netback/rx.cc: rx_segment_head). Both LSO versions; the completion
// carries LSOv1's TcpPayload, LSOv2's type with Reserved zero.
TEST_F(XennetTest, LargeSendArrivesAsSegments) {
  if (ndis().offload_hardware(a_[0]).LsoV2.IPv4.Encapsulation == 0) GTEST_SKIP() << "backend without GSO";
  constexpr std::size_t kPayload = 20000;
  constexpr std::uint32_t kMss = 1460;
  for (bool v2 : {true, false}) {
    SCOPED_TRACE(v2 ? "LSOv2" : "LSOv1");
    const std::uint32_t seq0 = v2 ? 1000000 : 5000000;
    SendNbl n;
    n.frames.push_back(lso_frame(kPayload, v2, seq0));
    n.mdl_pieces = 5;
    NDIS_TCP_LARGE_SEND_OFFLOAD_NET_BUFFER_LIST_INFO li{};
    if (v2) {
      li.LsoV2Transmit.Type = NDIS_TCP_LARGE_SEND_OFFLOAD_V2_TYPE;
      li.LsoV2Transmit.MSS = kMss;
      li.LsoV2Transmit.TcpHeaderOffset = 34;
      li.LsoV2Transmit.IPVersion = NDIS_TCP_LARGE_SEND_OFFLOAD_IPv4;
    } else {
      li.LsoV1Transmit.Type = NDIS_TCP_LARGE_SEND_OFFLOAD_V1_TYPE;
      li.LsoV1Transmit.MSS = kMss;
      li.LsoV1Transmit.TcpHeaderOffset = 34;
      NDIS_TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO ci{};
      ci.Transmit.IsIPv4 = 1;
      n.checksum_info = ci.Value;
    }
    n.lso_info = li.Value;
    const auto ids = ndis().send(a_[0], {n});
    ASSERT_TRUE(ndis().wait_sends(a_[0], kWaitMs));
    ASSERT_EQ(ndis().send_status(a_[0], ids[0]), NDIS_STATUS_SUCCESS);
    NDIS_TCP_LARGE_SEND_OFFLOAD_NET_BUFFER_LIST_INFO done;
    done.Value = ndis().completed_lso_info(a_[0], ids[0]);
    if (v2) {
      EXPECT_EQ(done.LsoV2TransmitComplete.Type, NDIS_TCP_LARGE_SEND_OFFLOAD_V2_TYPE);
      EXPECT_EQ(done.LsoV2TransmitComplete.Reserved, 0u);
    } else {
      EXPECT_EQ(done.LsoV1TransmitComplete.Type, NDIS_TCP_LARGE_SEND_OFFLOAD_V1_TYPE);
      EXPECT_EQ(done.LsoV1TransmitComplete.TcpPayload, kPayload);
    }
    const std::size_t nseg = (kPayload + kMss - 1) / kMss;
    ASSERT_TRUE(ndis().wait_received(a_[1], nseg, kWaitMs));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const auto got = ndis().take_received(a_[1]);
    ASSERT_EQ(got.size(), nseg) << "one segment per MSS of payload";
    std::vector<std::uint8_t> payload;
    for (std::size_t k = 0; k < got.size(); ++k) {
      const auto& f = got[k].data;
      ASSERT_GE(f.size(), 54u);
      ASSERT_LE(f.size(), 14u + 20 + 20 + kMss);
      EXPECT_TRUE(ipv4_header_ok(f)) << "segment " << k;
      EXPECT_TRUE(l4_checksum_ok(f)) << "segment " << k;
      EXPECT_EQ(std::memcmp(f.data(), n.frames[0].data(), 14), 0);
      std::uint32_t seq;
      std::memcpy(&seq, f.data() + 38, 4);
      EXPECT_EQ(__builtin_bswap32(seq), seq0 + payload.size()) << "segment " << k;
      EXPECT_EQ(got[k].checksum.Receive.TcpChecksumSucceeded, 1u) << "segment " << k;
      payload.insert(payload.end(), f.begin() + 54, f.end());
    }
    EXPECT_TRUE(std::equal(payload.begin(), payload.end(), n.frames[0].begin() + 54,
                           n.frames[0].end()) && payload.size() == kPayload)
        << "the segments do not carry the large packet's payload";
  }
}

// TCP over IPv6 from adapter 0 to 1, as the stack hands an LSOv2 packet over: payload length
// 0, the checksum field the pseudo-header sum without the length.
std::vector<std::uint8_t> lso_frame_v6(std::size_t payload, std::uint32_t seq0) {
  std::vector<std::uint8_t> f(14 + 40 + 20 + payload);
  std::memcpy(f.data(), kMac[1], 6);
  std::memcpy(f.data() + 6, kMac[0], 6);
  f[12] = 0x86;
  f[13] = 0xDD;
  std::uint8_t* ip = f.data() + 14;
  ip[0] = 0x60;
  ip[6] = 6;  // next header: TCP
  ip[7] = 64;
  const std::uint8_t src[16] = {0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  const std::uint8_t dst[16] = {0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
  std::memcpy(ip + 8, src, 16);
  std::memcpy(ip + 24, dst, 16);
  std::uint8_t* tcp = ip + 40;
  tcp[0] = 0x9c;
  tcp[1] = 0x41;
  tcp[2] = 0x13;
  tcp[3] = 0x89;
  const std::uint32_t be_seq = __builtin_bswap32(seq0);
  std::memcpy(tcp + 4, &be_seq, 4);
  tcp[12] = 5 << 4;
  tcp[13] = 0x18;
  tcp[14] = 0xff;
  for (std::size_t i = 0; i < payload; ++i) tcp[20 + i] = static_cast<std::uint8_t>(i * 11 + i / 241);
  const std::uint16_t p = fold(sum16(ip + 8, 32) + 6);
  tcp[16] = static_cast<std::uint8_t>(p >> 8);
  tcp[17] = static_cast<std::uint8_t>(p);
  return f;
}
bool tcp6_checksum_ok(const std::vector<std::uint8_t>& f) {
  const std::uint8_t* ip = f.data() + 14;
  const std::size_t len = (ip[4] << 8) | ip[5];
  if (f.size() < 14 + 40 + len) return false;
  std::uint32_t s = sum16(ip + 8, 32) + 6 + static_cast<std::uint32_t>(len);
  return fold(sum16(ip + 40, len, s)) == 0xFFFF;
}

// LSOv2 over IPv6 (feature-gso-tcpv6): the packet leaves as a netif GSO packet with its payload
// length filled in and arrives as MSS-sized IPv6 segments with correct TCP checksums.
TEST_F(XennetTest, LargeSendIpv6ArrivesAsSegments) {
  if (ndis().offload_hardware(a_[0]).LsoV2.IPv6.Encapsulation == 0) GTEST_SKIP() << "backend without IPv6 GSO";
  constexpr std::size_t kPayload = 9000;
  constexpr std::uint32_t kMss = 1440;
  constexpr std::uint32_t kSeq0 = 77000;
  SendNbl n;
  n.frames.push_back(lso_frame_v6(kPayload, kSeq0));
  n.mdl_pieces = 4;
  NDIS_TCP_LARGE_SEND_OFFLOAD_NET_BUFFER_LIST_INFO li{};
  li.LsoV2Transmit.Type = NDIS_TCP_LARGE_SEND_OFFLOAD_V2_TYPE;
  li.LsoV2Transmit.MSS = kMss;
  li.LsoV2Transmit.TcpHeaderOffset = 54;
  li.LsoV2Transmit.IPVersion = NDIS_TCP_LARGE_SEND_OFFLOAD_IPv6;
  n.lso_info = li.Value;
  const auto ids = ndis().send(a_[0], {n});
  ASSERT_TRUE(ndis().wait_sends(a_[0], kWaitMs));
  ASSERT_EQ(ndis().send_status(a_[0], ids[0]), NDIS_STATUS_SUCCESS);
  const std::size_t nseg = (kPayload + kMss - 1) / kMss;
  ASSERT_TRUE(ndis().wait_received(a_[1], nseg, kWaitMs));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto got = ndis().take_received(a_[1]);
  ASSERT_EQ(got.size(), nseg);
  std::vector<std::uint8_t> payload;
  for (std::size_t k = 0; k < got.size(); ++k) {
    const auto& f = got[k].data;
    ASSERT_GE(f.size(), 74u);
    ASSERT_LE(f.size(), 74u + kMss);
    EXPECT_TRUE(tcp6_checksum_ok(f)) << "segment " << k;
    std::uint32_t seq;
    std::memcpy(&seq, f.data() + 58, 4);
    EXPECT_EQ(__builtin_bswap32(seq), kSeq0 + payload.size()) << "segment " << k;
    EXPECT_EQ(got[k].checksum.Receive.TcpChecksumSucceeded, 1u) << "segment " << k;
    EXPECT_EQ(got[k].checksum.Receive.IpChecksumSucceeded, 0u) << "IPv6 has no header checksum";
    payload.insert(payload.end(), f.begin() + 74, f.end());
  }
  ASSERT_EQ(payload.size(), kPayload);
  EXPECT_TRUE(std::equal(payload.begin(), payload.end(), n.frames[0].begin() + 74));
}

// LSOv2 for IPv4 switched off: the indication says so, and an NBL that still asks for it is
// dropped (completed with a failure), as NDIS documents, instead of leaving as one huge frame.
TEST_F(XennetTest, DisabledLargeSendIsDropped) {
  if (ndis().offload_hardware(a_[0]).LsoV2.IPv4.Encapsulation == 0) GTEST_SKIP() << "backend without GSO";
  NDIS_OFFLOAD_PARAMETERS p = offload_params();
  p.LsoV2IPv4 = NDIS_OFFLOAD_PARAMETERS_LSOV2_DISABLED;
  ASSERT_EQ(ndis().set(a_[0], OID_TCP_OFFLOAD_PARAMETERS, &p, sizeof p), NDIS_STATUS_SUCCESS);
  const auto ind = ndis().offload_indications(a_[0]);
  ASSERT_EQ(ind.size(), 1u);
  EXPECT_EQ(ind[0].LsoV2.IPv4.Encapsulation, 0u);
  EXPECT_NE(ind[0].LsoV1.IPv4.Encapsulation, 0u) << "LSOv1 was not asked to change";
  SendNbl n;
  n.frames.push_back(lso_frame(8000, true, 1));
  NDIS_TCP_LARGE_SEND_OFFLOAD_NET_BUFFER_LIST_INFO li{};
  li.LsoV2Transmit.Type = NDIS_TCP_LARGE_SEND_OFFLOAD_V2_TYPE;
  li.LsoV2Transmit.MSS = 1460;
  li.LsoV2Transmit.TcpHeaderOffset = 34;
  n.lso_info = li.Value;
  n.beyond_advertised = true;
  const auto ids = ndis().send(a_[0], {n});
  ASSERT_TRUE(ndis().wait_sends(a_[0], kWaitMs));
  EXPECT_EQ(ndis().send_status(a_[0], ids[0]), NDIS_STATUS_FAILURE);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_TRUE(ndis().take_received(a_[1]).empty());
}

// Pause with sends in flight: the pause finishes only after every send NBL is completed (the
// environment checks at that moment); sends that meet a pausing adapter complete with
// NDIS_STATUS_PAUSED; a pause waits for receive NBLs the protocol still holds; after restart
// frames flow again.
TEST_F(XennetTest, PauseRestartWithSendsInFlight) {
  std::vector<std::vector<std::uint8_t>> frames;
  for (std::uint32_t s = 1; s <= 900; ++s) frames.push_back(frame(0, 1, s, 1514));
  const auto ids = send_frames(0, frames, 3);
  NDIS_STATUS pst = 0;
  ASSERT_TRUE(ndis().pause(a_[0], kWaitMs, &pst));
  EXPECT_TRUE(pst == NDIS_STATUS_SUCCESS || pst == NDIS_STATUS_PENDING);
  EXPECT_EQ(ndis().outstanding_sends(a_[0]), 0u);
  std::size_t ok = 0;
  for (std::uint64_t id : ids) {
    const NDIS_STATUS st = ndis().send_status(a_[0], id);
    EXPECT_TRUE(st == NDIS_STATUS_SUCCESS || st == NDIS_STATUS_PAUSED) << std::hex << st;
    ok += st == NDIS_STATUS_SUCCESS;
  }
  // Whatever was sent arrives intact (frames of NBLs completed as paused may be partly sent).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto got = ndis().take_received(a_[1]);
  EXPECT_GE(got.size(), ok * 3);
  for (const auto& r : got) {
    const std::uint32_t s = seq_of(r.data);
    ASSERT_TRUE(s >= 1 && s <= 900);
    ASSERT_EQ(r.data, frames[s - 1]);
  }
  ASSERT_EQ(ndis().restart(a_[0]), NDIS_STATUS_SUCCESS);

  // Adapter 1 holds 10 receive NBLs: its pause must wait for them.
  ndis().set_hold(a_[1], true);
  std::map<std::uint32_t, std::vector<std::uint8_t>> sent;
  std::vector<std::vector<std::uint8_t>> ten;
  for (std::uint32_t s = 1001; s <= 1010; ++s) {
    ten.push_back(frame(0, 1, s, 200));
    sent[s] = ten.back();
  }
  send_frames(0, ten);
  ASSERT_TRUE(ndis().wait_received(a_[1], 10, kWaitMs));
  EXPECT_EQ(ndis().held(a_[1]), 10u);
  ndis().pause_async(a_[1]);
  EXPECT_FALSE(ndis().wait_paused(a_[1], 300)) << "paused while the protocol held receive NBLs";
  const auto paused_ids = send_frames(1, {frame(1, 0, 5000, 64), frame(1, 0, 5001, 64)});
  ASSERT_TRUE(ndis().wait_sends(a_[1], kWaitMs));
  for (std::uint64_t id : paused_ids) EXPECT_EQ(ndis().send_status(a_[1], id), NDIS_STATUS_PAUSED);
  ndis().set_hold(a_[1], false);
  ndis().release_held(a_[1]);
  ASSERT_TRUE(ndis().wait_paused(a_[1], kWaitMs));
  ndis().take_received(a_[1]);
  ASSERT_EQ(ndis().restart(a_[1]), NDIS_STATUS_SUCCESS);

  sent.clear();
  std::vector<std::vector<std::uint8_t>> again;
  for (std::uint32_t s = 2001; s <= 2020; ++s) {
    again.push_back(frame(1, 0, s, 300 + s % 100));
    sent[s] = again.back();
  }
  ndis().take_received(a_[0]);
  send_frames(1, again, 4);
  ASSERT_TRUE(ndis().wait_sends(a_[1], kWaitMs));
  expect_received(0, sent);
}

// The link follows the connection: pvio-netback killed and started again takes both vifs
// through a new handshake; the adapters indicate the link down, then up, and frames flow.
TEST_F(XennetTest, LinkStateFollowsBackendRestart) {
  for (int i = 0; i < 2; ++i) {
    const auto links = ndis().link_states(a_[i]);
    EXPECT_TRUE(links.empty() || links.back() == MediaConnectStateConnected);
  }
  long pid = 0;
  std::ifstream(dom0_->dir + "/netback.pid") >> pid;
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(static_cast<pid_t>(pid), SIGKILL), 0);
  ASSERT_TRUE(pvio::test::wait_until([&] { return !alive(static_cast<pid_t>(pid)); }, kWaitMs));
  std::string out;
  ASSERT_EQ(run_shell(dom0_->pvio + " up --vif-uplink none", &out), 0) << out;
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(pvio::test::wait_until(
        [&] {
          const auto l = ndis().link_states(a_[i]);
          return std::find(l.begin(), l.end(), MediaConnectStateDisconnected) != l.end() &&
                 l.back() == MediaConnectStateConnected;
        },
        30000))
        << "adapter " << i << " did not indicate link down and up again";
    ULONG v = 99;
    ASSERT_EQ(ndis().query(a_[i], OID_GEN_MEDIA_CONNECT_STATUS, &v, sizeof v), NDIS_STATUS_SUCCESS);
    EXPECT_EQ(v, NdisMediaStateConnected);
  }
  std::map<std::uint32_t, std::vector<std::uint8_t>> sent;
  std::vector<std::vector<std::uint8_t>> frames;
  for (std::uint32_t s = 1; s <= 50; ++s) {
    frames.push_back(frame(0, 1, s, 90 + s));
    sent[s] = frames.back();
  }
  ndis().take_received(a_[1]);
  send_frames(0, frames);
  ASSERT_TRUE(ndis().wait_sends(a_[0], kWaitMs));
  expect_received(1, sent);
}

// Power management as NDIS 6.20 sees it: revision 2 general attributes with an
// NDIS_PM_CAPABILITIES that offers no wake-up, NO_HALT_ON_SUSPEND (so NDIS takes the adapter to
// D3 rather than halting it) and both power OIDs in the supported list.
TEST_F(XennetTest, PowerCapabilitiesReported) {
  for (int i = 0; i < 2; ++i) {
    const auto& g = ndis().general(a_[i]);
    EXPECT_EQ(g.Header.Revision, NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_2);
    EXPECT_EQ(g.PowerManagementCapabilities, nullptr);
    bool have = false;
    const NDIS_PM_CAPABILITIES pm = ndis().pm_capabilities(a_[i], &have);
    ASSERT_TRUE(have);
    EXPECT_EQ(pm.Header.Revision, NDIS_PM_CAPABILITIES_REVISION_1);
    EXPECT_EQ(pm.Header.Size, NDIS_SIZEOF_NDIS_PM_CAPABILITIES_REVISION_1);
    EXPECT_EQ(pm.MinMagicPacketWakeUp, NdisDeviceStateUnspecified);
    EXPECT_EQ(pm.MinPatternWakeUp, NdisDeviceStateUnspecified);
    EXPECT_EQ(pm.MinLinkChangeWakeUp, NdisDeviceStateUnspecified);
    EXPECT_EQ(pm.SupportedWoLPacketPatterns, 0u);
    EXPECT_EQ(pm.SupportedProtocolOffloads, 0u);
    EXPECT_TRUE(ndis().no_halt_on_suspend(a_[i]));
    NDIS_OID list[64] = {};
    ULONG written = 0;
    ASSERT_EQ(ndis().query(a_[i], OID_GEN_SUPPORTED_LIST, list, sizeof list, &written), NDIS_STATUS_SUCCESS);
    const std::vector<NDIS_OID> oids(list, list + written / sizeof(NDIS_OID));
    for (NDIS_OID o : {OID_PNP_QUERY_POWER, OID_PNP_SET_POWER})
      EXPECT_NE(std::find(oids.begin(), oids.end(), o), oids.end()) << std::hex << o;
  }
  // A short buffer is refused without a transition.
  const USHORT shorter = NdisDeviceStateD3;
  EXPECT_EQ(ndis().set(a_[0], OID_PNP_SET_POWER, &shorter, sizeof shorter), NDIS_STATUS_INVALID_LENGTH);
  EXPECT_FALSE(ndis().low_power(a_[0]));
}

// 20 device power cycles of both adapters, as a system sleep drives them (pause,
// OID_PNP_QUERY_POWER / OID_PNP_SET_POWER D3 ... SET_POWER D0, restart), with verified frames
// both ways before and after each. In D3 the frontend is Closed and the backend has left
// Connected, every grant and event channel the adapter held is given back, and the link is
// indicated as unknown; frames sent to an adapter in D3 are never indicated (the environment
// fails the test otherwise). After D0 both ends are Connected again, the link is indicated up,
// and the adapter holds exactly as many grants and channels as after the first connection.
TEST_F(XennetTest, PowerCyclesKeepFramesFlowing) {
  const std::string home = "/local/domain/" + std::to_string(kDomid);
  std::string backend[2];
  for (int i = 0; i < 2; ++i) {
    const auto b = xs_->read(home + "/device/vif/" + std::to_string(i) + "/backend");
    ASSERT_TRUE(b.ok());
    backend[i] = b.value;
  }
  auto front_state = [&](int i) {
    const auto r = xs_->read(home + "/device/vif/" + std::to_string(i) + "/state");
    return r.ok() ? r.value : std::string("?");
  };
  auto back_state = [&](int i) {
    const auto r = xs_->read(backend[i] + "/state");
    return r.ok() ? r.value : std::string("?");
  };
  std::uint32_t seq = 1;
  auto exchange = [&](int count) {
    for (int from = 0; from < 2; ++from) {
      const int to = 1 - from;
      std::map<std::uint32_t, std::vector<std::uint8_t>> sent;
      std::vector<std::vector<std::uint8_t>> frames;
      for (int k = 0; k < count; ++k, ++seq) {
        frames.push_back(frame(from, to, seq, 60 + (seq * 97) % 1455));
        sent[seq] = frames.back();
      }
      ndis().take_received(a_[to]);
      const auto ids = send_frames(from, frames, 2, 1 + seq % 3);
      ASSERT_TRUE(ndis().wait_sends(a_[from], kWaitMs));
      for (std::uint64_t id : ids) ASSERT_EQ(ndis().send_status(a_[from], id), NDIS_STATUS_SUCCESS);
      expect_received(to, sent);
    }
  };

  exchange(16);
  if (HasFatalFailure()) return;
  int grants[2], ports[2];
  for (int i = 0; i < 2; ++i) {
    grants[i] = child_[i]->grants_held();
    ports[i] = child_[i]->ports_open();
    ASSERT_GT(grants[i], 0);
    ASSERT_GT(ports[i], 0);
  }
  const std::size_t links_before[2] = {ndis().link_states(a_[0]).size(), ndis().link_states(a_[1]).size()};

  constexpr int kCycles = 20;
  for (int cycle = 0; cycle < kCycles; ++cycle) {
    SCOPED_TRACE("cycle " + std::to_string(cycle));
    exchange(8);
    if (HasFatalFailure()) return;

    // Adapter 0 sleeps first; adapter 1 sends to it meanwhile (the switch drops those frames:
    // the vif is disconnected), then sleeps too.
    ASSERT_TRUE(ndis().suspend(a_[0], kWaitMs));
    EXPECT_TRUE(ndis().low_power(a_[0]));
    EXPECT_EQ(front_state(0), "6") << "frontend not Closed in D3";
    EXPECT_NE(back_state(0), "4") << "backend still Connected to a frontend in D3";
    EXPECT_EQ(child_[0]->grants_held(), 0) << "grants kept in D3";
    EXPECT_EQ(child_[0]->ports_open(), 0) << "event channels kept in D3";
    ASSERT_FALSE(ndis().link_states(a_[0]).empty());
    EXPECT_EQ(ndis().link_states(a_[0]).back(), MediaConnectStateUnknown);
    std::vector<std::vector<std::uint8_t>> lost;
    for (int k = 0; k < 4; ++k) lost.push_back(frame(1, 0, 900000 + k, 200));
    const auto lost_ids = send_frames(1, lost);
    ASSERT_TRUE(ndis().wait_sends(a_[1], kWaitMs));
    ASSERT_TRUE(ndis().suspend(a_[1], kWaitMs));
    EXPECT_EQ(front_state(1), "6");
    EXPECT_EQ(child_[1]->grants_held(), 0);
    EXPECT_EQ(child_[1]->ports_open(), 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));

    ASSERT_TRUE(ndis().resume(a_[0]));
    ASSERT_TRUE(ndis().resume(a_[1]));
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(pvio::test::wait_until([&] { return back_state(i) == "4" && front_state(i) == "4"; },
                                         kWaitMs))
          << "adapter " << i << " not reconnected: front " << front_state(i) << " back " << back_state(i);
      ASSERT_TRUE(ndis().wait_link(a_[i], MediaConnectStateConnected, kWaitMs));
      ULONG v = 99;
      ASSERT_EQ(ndis().query(a_[i], OID_GEN_MEDIA_CONNECT_STATUS, &v, sizeof v), NDIS_STATUS_SUCCESS);
      EXPECT_EQ(v, NdisMediaStateConnected);
      EXPECT_EQ(child_[i]->grants_held(), grants[i]) << "adapter " << i << ": grants leaked or lost";
      EXPECT_EQ(child_[i]->ports_open(), ports[i]) << "adapter " << i << ": event channels leaked";
    }
    // (The environment fails the test had any of them been indicated in D3.)
    (void)lost_ids;
    exchange(8);
    if (HasFatalFailure()) return;
  }

  // Each cycle indicated exactly unknown (D3), then connected (D0), and nothing else.
  for (int i = 0; i < 2; ++i) {
    const auto l = ndis().link_states(a_[i]);
    ASSERT_EQ(l.size(), links_before[i] + 2 * kCycles) << "adapter " << i;
    for (int c = 0; c < kCycles; ++c) {
      EXPECT_EQ(l[links_before[i] + 2 * c], MediaConnectStateUnknown);
      EXPECT_EQ(l[links_before[i] + 2 * c + 1], MediaConnectStateConnected);
    }
  }
}

// The environment enforces the low-power rules: a receive or status indication while the
// adapter is in D3 is recorded as a violation.
TEST_F(XennetTest, IndicationInD3IsCaught) {
  ASSERT_TRUE(ndis().suspend(a_[0], kWaitMs));
  ASSERT_TRUE(violations().empty());
  {
    AtIrql dispatch(DISPATCH_LEVEL);
    NdisMIndicateReceiveNetBufferLists(a_[0], nullptr, NDIS_DEFAULT_PORT_NUMBER, 0,
                                       NDIS_RECEIVE_FLAGS_DISPATCH_LEVEL);
  }
  ASSERT_EQ(violations().size(), 1u);
  EXPECT_NE(violations()[0].find("D3"), std::string::npos) << violations()[0];
  clear_violations();
  NDIS_LINK_STATE ls{};
  ls.Header.Type = NDIS_OBJECT_TYPE_DEFAULT;
  ls.Header.Revision = NDIS_LINK_STATE_REVISION_1;
  ls.Header.Size = sizeof ls;
  ls.MediaConnectState = MediaConnectStateConnected;
  NDIS_STATUS_INDICATION ind{};
  ind.Header.Type = NDIS_OBJECT_TYPE_STATUS_INDICATION;
  ind.Header.Revision = NDIS_STATUS_INDICATION_REVISION_1;
  ind.Header.Size = sizeof ind;
  ind.SourceHandle = a_[0];
  ind.StatusCode = NDIS_STATUS_LINK_STATE;
  ind.StatusBuffer = &ls;
  ind.StatusBufferSize = sizeof ls;
  NdisMIndicateStatusEx(a_[0], &ind);
  ASSERT_GE(violations().size(), 1u);
  EXPECT_NE(violations()[0].find("D3"), std::string::npos) << violations()[0];
  clear_violations();
  ASSERT_TRUE(ndis().resume(a_[0]));
  ASSERT_TRUE(ndis().wait_link(a_[0], MediaConnectStateConnected, kWaitMs));
}

// The environment catches a broken rule: completing a send NBL a second time, as a driver
// with a double-completion bug would.
TEST_F(XennetTest, DoubleCompletionIsCaught) {
  const auto ids = send_frames(0, {frame(0, 1, 1, 128)});
  ASSERT_TRUE(ndis().wait_sends(a_[0], kWaitMs));
  ASSERT_EQ(ndis().send_status(a_[0], ids[0]), NDIS_STATUS_SUCCESS);
  ASSERT_TRUE(violations().empty());
  {
    AtIrql dispatch(DISPATCH_LEVEL);
    NdisMSendNetBufferListsComplete(a_[0], ndis().nbl_of(a_[0], ids[0]),
                                    NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL);
  }
  ASSERT_EQ(violations().size(), 1u);
  EXPECT_NE(violations()[0].find("completed twice"), std::string::npos) << violations()[0];
  clear_violations();
  // And a DISPATCH_LEVEL flag that lies about the IRQL.
  NdisMIndicateReceiveNetBufferLists(a_[0], nullptr, 0, 0, NDIS_RECEIVE_FLAGS_DISPATCH_LEVEL);
  ASSERT_EQ(violations().size(), 1u);
  EXPECT_NE(violations()[0].find("DISPATCH_LEVEL flag"), std::string::npos) << violations()[0];
  clear_violations();
  ndis().take_received(a_[1]);
}

}  // namespace
}  // namespace pvio::windows::test
