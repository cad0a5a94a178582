// xenbus.sys's bus driver run in the Windows-kernel test environment over a user-mode pvio
// domain: the PnP manager's START_DEVICE on the FDO over a platform PCI PDO, the PCI INTx
// callback route, BusRelations of the disk and NIC the real toolstack attached, the children's
// PnP identities, and a child's use of the interface (xenstore over the driver's own ring
// client, woken by its ISR and DPC) against the real pvio-xenstored.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "../blkfront-user/harness.h"
#include "bus.h"
#include "env/hypervisor_domain.h"
#include "env/kernel.h"
#include "pvio/domain/domain.h"
#include "pvio/xenstore/client.h"

namespace pvio::windows::test {
namespace {

using blkfront::user::test::Dom0Test;
using pvio::test::run_shell;

constexpr domid_t kDomid = 13;
constexpr ULONG kVector = 0x51;
constexpr KIRQL kIrql = 6;

std::string wide(ULONG_PTR p) {
  std::string s;
  for (auto* w = reinterpret_cast<const WCHAR*>(p); *w != 0; ++w) s += static_cast<char>(*w);
  return s;
}

class XenbusDriverTest : public Dom0Test {
 protected:
  XenbusDriverTest() : Dom0Test(16u << 20) {}
  void SetUp() override {
    Dom0Test::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    clear_violations();
    domain::DomainConfig dc;
    dc.domid = kDomid;
    dc.memory_bytes = 16u << 20;
    ASSERT_EQ(domain::Domain::create(dc, &dom_), 0);
    loop_ = std::thread([this] { dom_->run(); });
    xs_ = xs::Client::connect(dom0_->dir + "/xenstored.sock");
    ASSERT_TRUE(xs_);
    const std::string home = "/local/domain/" + std::to_string(kDomid);
    ASSERT_EQ(xs_->write(home + "/name", "xenbus-driver-test"), xs::XsError::None);
    ASSERT_EQ(xs_->write(home + "/domid", std::to_string(kDomid)), xs::XsError::None);
    // The guest reads its own domid, as from Xen's toolstack.
    for (const std::string& p : {home, home + "/domid"})
      ASSERT_EQ(xs_->set_perms(p, {{0, xs::XsPerm::None}, {kDomid, xs::XsPerm::Read}}),
                xs::XsError::None);
    ASSERT_EQ(xs_->introduce(kDomid, dom_->xenstore_gfn(), dom_->xenstore_port()), xs::XsError::None);
    std::string out;
    ASSERT_EQ(run_shell(dom0_->pvio + " block-attach " + std::to_string(kDomid) + " " + dom0_->disk, &out), 0) << out;
    ASSERT_EQ(run_shell(dom0_->pvio + " network-attach " + std::to_string(kDomid), &out), 0) << out;

    set_hypervisor_domain(dom_.get(), kVector);
    // The PCI bus driver's PDO for 5853:0001 at 00:03.0; it completes what reaches it.
    pci_pdo_ = create_device([](PDEVICE_OBJECT, PIRP irp) {
      PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
      const NTSTATUS st = sl->MinorFunction == IRP_MN_START_DEVICE ||
                                  sl->MinorFunction == IRP_MN_REMOVE_DEVICE
                              ? STATUS_SUCCESS
                              : irp->IoStatus.Status;
      complete_irp(irp, st, irp->IoStatus.Information);
      return st;
    });
    set_device_property(pci_pdo_, DevicePropertyBusNumber, 0);
    set_device_property(pci_pdo_, DevicePropertyAddress, (3u << 16) | 0u);
    driver_ = std::make_unique<DRIVER_OBJECT>();
    std::memset(driver_.get(), 0, sizeof *driver_);
    driver_->DriverExtension = &driver_ext_;
    ASSERT_EQ(xenbus::xenbus_driver_entry(driver_.get()), STATUS_SUCCESS);
    {
      AtIrql passive(PASSIVE_LEVEL);
      ASSERT_EQ(driver_ext_.AddDevice(driver_.get(), pci_pdo_), STATUS_SUCCESS);
    }
  }
  void TearDown() override {
    if (started_) {
      EXPECT_EQ(send_pnp(pci_pdo_, IRP_MN_REMOVE_DEVICE).status, STATUS_SUCCESS);
    }
    if (dom_) {
      EXPECT_EQ(connected_interrupts(), 0u);
      EXPECT_EQ(hypervisor_connections(), 0);
      EXPECT_EQ(callback_via(), 0u) << "the upcall route outlived the bus";
      for (int i = 0; i < 100 && system_threads() != 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      EXPECT_EQ(system_threads(), 0u) << "the watch thread outlived the bus";
      EXPECT_EQ(live_driver_devices(), 0u) << "a device object was not deleted";
    }
    if (pci_pdo_ != nullptr) delete_device(pci_pdo_);
    if (xs_) xs_->release(kDomid);
    if (dom_) {
      dom_->stop();
      loop_.join();
    }
    set_hypervisor_domain(nullptr, 0);
    dom_.reset();
    dom0_.reset();
    EXPECT_TRUE(violations().empty()) << violations().size() << " kernel rule(s) broken, first: "
                                      << violations().front();
  }

  PnpResult start() {
    // One interrupt resource, translated: vector, IRQL, level-triggered and shared (INTx).
    CM_RESOURCE_LIST res{};
    res.Count = 1;
    res.List[0].PartialResourceList.Count = 1;
    CM_PARTIAL_RESOURCE_DESCRIPTOR& d = res.List[0].PartialResourceList.PartialDescriptors[0];
    d.Type = CmResourceTypeInterrupt;
    d.ShareDisposition = CmResourceShareShared;
    d.u.Interrupt.Level = kIrql;
    d.u.Interrupt.Vector = kVector;
    d.u.Interrupt.Affinity = 1;
    const PnpResult r = send_pnp(pci_pdo_, IRP_MN_START_DEVICE, [&](PIO_STACK_LOCATION sl) {
      sl->Parameters.StartDevice.AllocatedResources = &res;
      sl->Parameters.StartDevice.AllocatedResourcesTranslated = &res;
    });
    started_ = r.status == STATUS_SUCCESS;
    return r;
  }

  std::vector<PDEVICE_OBJECT> bus_relations() {
    const PnpResult r = send_pnp(pci_pdo_, IRP_MN_QUERY_DEVICE_RELATIONS, [](PIO_STACK_LOCATION sl) {
      sl->Parameters.QueryDeviceRelations.Type = BusRelations;
    });
    std::vector<PDEVICE_OBJECT> out;
    EXPECT_EQ(r.status, STATUS_SUCCESS);
    if (r.status != STATUS_SUCCESS || r.information == 0) return out;
    auto* rel = reinterpret_cast<PDEVICE_RELATIONS>(r.information);
    for (ULONG i = 0; i < rel->Count; ++i) {
      out.push_back(rel->Objects[i]);
      ObfDereferenceObject(rel->Objects[i]);  // as the PnP manager does once it holds them
    }
    ExFreePoolWithTag(rel, 0);
    return out;
  }

  std::string query_id(PDEVICE_OBJECT pdo, BUS_QUERY_ID_TYPE type, bool multi = false) {
    const PnpResult r = send_pnp(pdo, IRP_MN_QUERY_ID, [type](PIO_STACK_LOCATION sl) {
      sl->Parameters.QueryId.IdType = type;
    });
    EXPECT_EQ(r.status, STATUS_SUCCESS);
    if (r.information == 0) return {};
    std::string s = wide(r.information);
    if (multi) {
      EXPECT_EQ(reinterpret_cast<const WCHAR*>(r.information)[s.size() + 1], 0) << "not a MULTI_SZ";
    }
    ExFreePoolWithTag(reinterpret_cast<PVOID>(r.information), 0);
    return s;
  }

  std::unique_ptr<domain::Domain> dom_;
  std::thread loop_;
  std::unique_ptr<xs::Client> xs_;
  PDEVICE_OBJECT pci_pdo_ = nullptr;
  DRIVER_EXTENSION driver_ext_{};
  std::unique_ptr<DRIVER_OBJECT> driver_;
  bool started_ = false;
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
  ASSERT_EQ(send_pnp(vbd, IRP_MN_QUERY_INTERFACE, [&](PIO_STACK_LOCATION sl) {
              sl->Parameters.QueryInterface.InterfaceType = &GUID_PVIO_XEN_INTERFACE;
              sl->Parameters.QueryInterface.Size = sizeof xen;
              sl->Parameters.QueryInterface.Version = PVIO_XEN_INTERFACE_VERSION;
              sl->Parameters.QueryInterface.Interface = &xen.Header;
            }).status, STATUS_SUCCESS);
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
