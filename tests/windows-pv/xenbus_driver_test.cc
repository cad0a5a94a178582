// xenbus.sys's bus driver run in the Windows-kernel test environment over a user-mode pvio
// domain: the PnP manager's START_DEVICE on the FDO over a platform PCI PDO, the PCI INTx
// callback route, BusRelations of the disk and NIC the real toolstack attached, the children's
// PnP identities, and a child's use of the interface (xenstore over the driver's own ring
// client, woken by its ISR and DPC) against the real pvio-xenstored.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>

#include "xenbus_fixture.h"

namespace pvio::windows::test {
namespace {

using pvio::test::run_shell;

constexpr domid_t kDomid = 13;

class XenbusDriverTest : public XenbusFixture {
 protected:
  void attach_devices() override {
    attach("block-attach " + std::to_string(kDomid) + " " + dom0_->disk);
    attach("network-attach " + std::to_string(kDomid));
  }
};

TEST_F(XenbusDriverTest, StartsEnumeratesAndServesItsChildren) {
  if (IsSkipped() || HasFatalFailure()) return;
  ASSERT_EQ(start().status, STATUS_SUCCESS);
  // HVM_PARAM_CALLBACK_IRQ type 1 for 0000:00:03.0 INTA (hvm/params.h).
  EXPECT_EQ(callback_via(), (1ull << 56) | (0ull << 32) | (0ull << 16) | ((3u << 3) << 8) | 0u);
  EXPECT_EQ(connected_interrupts(), 1u);

  const std::vector<PDEVICE_OBJECT> kids = bus_relations();
  ASSERT_EQ(kids.size(), 2u);
  PDEVICE_OBJECT vbd = nullptr, vif = nullptr;
  for (PDEVICE_OBJECT k : kids) {
    const std::string hw = query_id(k, BusQueryHardwareIDs, true);
    if (hw == "XENBUS\\VBD") {
      vbd = k;
    } else if (hw == "XENBUS\\VIF") {
      vif = k;
    }
  }
  ASSERT_NE(vbd, nullptr) << "no child with xenvbd.inf's hardware ID";
  ASSERT_NE(vif, nullptr);
  EXPECT_EQ(query_id(vbd, BusQueryInstanceID), "51712");
  EXPECT_EQ(query_id(vif, BusQueryInstanceID), "0");
  EXPECT_EQ(query_id(vbd, BusQueryDeviceID), "XENBUS\\VBD");
  // A second enumeration reports the same objects, not new ones.
  std::vector<PDEVICE_OBJECT> again = bus_relations();
  std::sort(again.begin(), again.end());
  std::vector<PDEVICE_OBJECT> first = kids;
  std::sort(first.begin(), first.end());
  EXPECT_EQ(again, first);

  DEVICE_CAPABILITIES caps{};
  caps.Size = sizeof caps;
  caps.Version = 1;
  ASSERT_EQ(send_pnp(vbd, IRP_MN_QUERY_CAPABILITIES, [&](PIO_STACK_LOCATION sl) {
              sl->Parameters.DeviceCapabilities.Capabilities = &caps;
            }).status, STATUS_SUCCESS);
  EXPECT_TRUE(caps.Flags & DEVCAP_UNIQUE_ID);
  EXPECT_TRUE(caps.Flags & DEVCAP_SURPRISE_REMOVAL_OK);

  PVIO_XEN_INTERFACE xen{};
  ASSERT_EQ(query_interface(vbd, &xen), STATUS_SUCCESS);
  EXPECT_EQ(xen.Kind, PvioXenVbd);
  EXPECT_EQ(xen.DeviceId, 51712u);
  EXPECT_EQ(xen.OwnDomid, kDomid);

  // Xenstore through the driver's ring client: what the toolstack wrote, and a write that the
  // real daemon then holds.
  {
    AtIrql passive(PASSIVE_LEVEL);
    char buf[256];
    ULONG len = 0;
    ASSERT_EQ(xen.XsRead(xen.Header.Context, "device/vbd/51712/backend", buf, sizeof buf, &len), 0);
    const auto want = xs_->read("/local/domain/" + std::to_string(kDomid) + "/device/vbd/51712/backend");
    ASSERT_TRUE(want.ok());
    EXPECT_EQ(std::string(buf, len), want.value);
    EXPECT_EQ(xen.XsRead(xen.Header.Context, "device/vbd/51712/no-such-key", buf, sizeof buf, &len), -2);
    ASSERT_EQ(xen.XsWrite(xen.Header.Context, "device/vbd/51712/xenbus-test", "written"), 0);
    const auto got = xs_->read("/local/domain/" + std::to_string(kDomid) + "/device/vbd/51712/xenbus-test");
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got.value, "written");

    // A watch fires once at once, then on a change Dom0 makes, on the watch thread.
    struct Seen {
      std::atomic<int> calls{0};
      std::atomic<bool> passive{true};
    } seen;
    PVOID handle = nullptr;
    ASSERT_EQ(xen.XsWatch(xen.Header.Context, "device/vbd/51712/xenbus-watched",
                          [](PVOID c, PCSTR) {
                            auto* s = static_cast<Seen*>(c);
                            if (KeGetCurrentIrql() != PASSIVE_LEVEL) s->passive = false;
                            ++s->calls;
                          },
                          &seen, &handle), 0);
    for (int i = 0; i < 200 && seen.calls.load() < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_GE(seen.calls.load(), 1) << "the initial watch event never reached the callback";
    const int before = seen.calls.load();
    ASSERT_EQ(xs_->write("/local/domain/" + std::to_string(kDomid) + "/device/vbd/51712/xenbus-watched", "1"),
              xs::XsError::None);
    for (int i = 0; i < 200 && seen.calls.load() <= before; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_GT(seen.calls.load(), before) << "a change by Dom0 did not fire the watch";
    EXPECT_TRUE(seen.passive.load());
    xen.XsUnwatch(xen.Header.Context, handle);

    // A grant the backend side would map: the entry in the domain's grant frame names the
    // frame and domain the child asked for.
    ULONG ref = 0;
    ASSERT_EQ(xen.GrantAccess(xen.Header.Context, 0, 0x1234, TRUE, &ref), 0);
    EXPECT_GE(ref, 8u) << "a reserved grant reference was handed out";
    const auto* e = reinterpret_cast<const gnttab::grant_entry_v1*>(dom_->page(dom_->grant_frame_gfns()[0])) + ref;
    EXPECT_EQ(e->frame, 0x1234u);
    EXPECT_EQ(e->domid, 0);
    EXPECT_EQ(e->flags, gnttab::GTF_permit_access | gnttab::GTF_readonly);
    EXPECT_TRUE(xen.EndAccess(xen.Header.Context, ref));
    EXPECT_EQ(e->flags, 0);
  }
  xen.Header.InterfaceDereference(xen.Header.Context);

  // A disk attached after start: the device/ watch asks the PnP manager to re-enumerate.
  const unsigned inval = bus_invalidations(pci_pdo_);
  std::string out;
  ASSERT_EQ(run_shell(dom0_->pvio + " block-attach " + std::to_string(kDomid) + " " + dom0_->disk, &out), 0) << out;
  for (int i = 0; i < 300 && bus_invalidations(pci_pdo_) == inval; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_GT(bus_invalidations(pci_pdo_), inval);
  EXPECT_EQ(bus_relations().size(), 3u);
}

TEST_F(XenbusDriverTest, TheEnvironmentCatchesBrokenIrpAndIrqlRules) {
  if (IsSkipped() || HasFatalFailure()) return;
  // An IRP completed twice, and a PASSIVE_LEVEL-only routine at DISPATCH_LEVEL.
  PDEVICE_OBJECT dev = create_device([](PDEVICE_OBJECT, PIRP irp) {
    complete_irp(irp, STATUS_SUCCESS);
    complete_irp(irp, STATUS_SUCCESS);
    return STATUS_SUCCESS;
  });
  send_pnp(dev, IRP_MN_QUERY_CAPABILITIES);
  {
    AtIrql dispatch(DISPATCH_LEVEL);
    PDEVICE_OBJECT d = nullptr;
    IoCreateDevice(driver_.get(), 0, nullptr, FILE_DEVICE_UNKNOWN, 0, FALSE, &d);
    AtIrql passive(PASSIVE_LEVEL);
    IoDeleteDevice(d);
  }
  delete_device(dev);
  const auto v = violations();
  ASSERT_EQ(v.size(), 2u);
  EXPECT_NE(v[0].find("completed twice"), std::string::npos) << v[0];
  EXPECT_NE(v[1].find("IoCreateDevice"), std::string::npos) << v[1];
  clear_violations();
  // The FDO added in SetUp is removed without a start.
  EXPECT_EQ(send_pnp(pci_pdo_, IRP_MN_REMOVE_DEVICE).status, STATUS_SUCCESS);
}

}  // namespace
}  // namespace pvio::windows::test
