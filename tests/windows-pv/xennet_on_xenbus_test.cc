// xennet on xenbus.sys's own vif children: the bus driver started over a user-mode pvio domain
// (hypervisor.h on the domain, the real pvio-xenstored), two vifs attached by the real
// toolstack and switched by the real pvio-netback (`pvio up --vif-uplink none`), both vif
// children taken from BusRelations, and NDIS initialising one xennet adapter over each PDO.
// Every grant, event channel and xenstore request of both NICs goes through xenbus's FDO;
// frames sent by one adapter are compared byte for byte where the other indicates them.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "env/ndis_host.h"
#include "xenbus_fixture.h"

extern "C" NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path);

namespace pvio::windows::test {
namespace {

using blkfront::user::test::kWaitMs;

constexpr domid_t kDomid = 22;
constexpr std::uint16_t kEtherTest = 0x88B5;  // IEEE 802 local experimental EtherType
const std::uint8_t kMac[2][6] = {{0x00, 0x16, 0x3e, 0x78, 0x00, 0x01},
                                 {0x00, 0x16, 0x3e, 0x78, 0x00, 0x02}};

std::string mac_string(const std::uint8_t* m) {
  char b[18];
  std::snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return b;
}

// Ethernet header, a sequence number, then a pattern derived from sender, sequence and offset.
std::vector<std::uint8_t> frame(int from, std::uint32_t seq, std::size_t len) {
  std::vector<std::uint8_t> f(len);
  std::memcpy(f.data(), kMac[1 - from], 6);
  std::memcpy(f.data() + 6, kMac[from], 6);
  f[12] = kEtherTest >> 8;
  f[13] = kEtherTest & 0xFF;
  std::memcpy(f.data() + 14, &seq, 4);
  for (std::size_t i = 18; i < len; ++i) f[i] = static_cast<std::uint8_t>(seq * 17 + i * 5 + from);
  return f;
}

class XennetOnXenbusTest : public XenbusFixture {
 protected:
  XennetOnXenbusTest()
      : XenbusFixture({.domid = kDomid, .disk_bytes = 1u << 20, .memory_bytes = 64u << 20,
                       .nr_grant_frames = 8, .name = "xennet-on-xenbus",
                       .up_args = "--vif-uplink none", .needs_netback = true}) {}
  void attach_devices() override {
    for (int i = 0; i < 2; ++i)
      attach("network-attach " + std::to_string(kDomid) + " mac=" + mac_string(kMac[i]) +
             " devid=" + std::to_string(i));
  }
  void TearDown() override {
    // PnP removes the NICs' stacks before their bus: pause and halt each adapter first.
    for (int i = 0; i < 2; ++i) {
      if (a_[i] == nullptr) continue;
      if (!ndis().wait_paused(a_[i], 0)) {
        EXPECT_TRUE(ndis().pause(a_[i], kWaitMs));
      }
      ndis().halt(a_[i]);
    }
    for (PDEVICE_OBJECT vif : vif_) {
      if (vif != nullptr) {
        EXPECT_EQ(static_cast<xenbus::Pdo*>(vif->DeviceExtension)->interface_refs, 0)
            << "xennet kept xenbus's interface referenced";
      }
    }
    XenbusFixture::TearDown();
  }
  NdisHost& ndis() { return NdisHost::instance(); }

  PDEVICE_OBJECT vif_[2] = {nullptr, nullptr};
  NdisHost::Adapter* a_[2] = {nullptr, nullptr};
};

TEST_F(XennetOnXenbusTest, TwoAdaptersExchangeFramesThroughTheBusDriversChildren) {
  if (IsSkipped() || HasFatalFailure()) return;
  set_guest_memory(dom_.get());  // xennet's contiguous pages are the domain's RAM
  ASSERT_EQ(start().status, STATUS_SUCCESS);
  static bool registered = false;
  if (!registered) {
    UNICODE_STRING reg{};
    ASSERT_EQ(DriverEntry(nullptr, &reg), STATUS_SUCCESS);
    registered = true;
  }
  ASSERT_TRUE(ndis().registered());
  for (int i = 0; i < 2; ++i) {
    vif_[i] = child("XENBUS\\VIF", std::to_string(i));
    ASSERT_NE(vif_[i], nullptr) << "no vif child " << i << " with xennet.inf's hardware ID";
    ASSERT_EQ(send_pnp(vif_[i], IRP_MN_START_DEVICE).status, STATUS_SUCCESS);
    PVIO_XEN_INTERFACE xen{};
    ASSERT_EQ(query_interface(vif_[i], &xen), STATUS_SUCCESS);
    EXPECT_EQ(xen.Kind, PvioXenVif);
    EXPECT_EQ(xen.DeviceId, static_cast<ULONG>(i));
    xen.Header.InterfaceDereference(xen.Header.Context);

    ASSERT_EQ(ndis().initialize(vif_[i], &a_[i]), NDIS_STATUS_SUCCESS);
    EXPECT_GE(static_cast<xenbus::Pdo*>(vif_[i]->DeviceExtension)->interface_refs, 1)
        << "xennet does not hold xenbus's interface";
    // The MAC was read through xenbus's xenstore client; the handshake with netback finished
    // inside initialisation, so the link is reported up from the start.
    EXPECT_EQ(std::memcmp(ndis().general(a_[i]).CurrentMacAddress, kMac[i], 6), 0);
    EXPECT_EQ(ndis().general(a_[i]).MediaConnectState, MediaConnectStateConnected);
    ASSERT_EQ(ndis().restart(a_[i]), NDIS_STATUS_SUCCESS);
    const ULONG filter = NDIS_PACKET_TYPE_DIRECTED | NDIS_PACKET_TYPE_BROADCAST;
    ASSERT_EQ(ndis().set(a_[i], OID_GEN_CURRENT_PACKET_FILTER, &filter, sizeof filter),
              NDIS_STATUS_SUCCESS);
  }

  // Frames both ways, from minimum to maximum size, over one and two MDLs.
  std::uint32_t seq = 1;
  for (int from = 0; from < 2; ++from) {
    const int to = 1 - from;
    std::map<std::uint32_t, std::vector<std::uint8_t>> sent;
    std::vector<SendNbl> nbls;
    for (std::size_t len : {60u, 61u, 128u, 777u, 1024u, 1500u, 1514u}) {
      for (unsigned pieces = 1; pieces <= 2; ++pieces) {
        SendNbl n;
        n.frames.push_back(frame(from, seq, len));
        n.mdl_pieces = pieces;
        sent[seq++] = n.frames.back();
        nbls.push_back(std::move(n));
      }
    }
    const auto ids = ndis().send(a_[from], nbls);
    ASSERT_TRUE(ndis().wait_sends(a_[from], kWaitMs));
    for (std::uint64_t id : ids) EXPECT_EQ(ndis().send_status(a_[from], id), NDIS_STATUS_SUCCESS);
    ASSERT_TRUE(ndis().wait_received(a_[to], sent.size(), kWaitMs))
        << "adapter " << to << " indicated " << ndis().take_received(a_[to]).size() << " of "
        << sent.size();
    const auto got = ndis().take_received(a_[to]);
    ASSERT_EQ(got.size(), sent.size());
    std::set<std::uint32_t> seen;
    for (const auto& r : got) {
      ASSERT_GE(r.data.size(), 18u);
      std::uint32_t s = 0;
      std::memcpy(&s, r.data.data() + 14, 4);
      const auto it = sent.find(s);
      ASSERT_NE(it, sent.end()) << "a frame that was never sent (seq " << s << ")";
      EXPECT_TRUE(seen.insert(s).second) << "frame " << s << " indicated twice";
      EXPECT_EQ(r.data, it->second) << "frame " << s << " differs";
    }
  }
}

}  // namespace
}  // namespace pvio::windows::test
