// xenbus.sys's bus driver run in the Windows-kernel test environment over a user-mode pvio
// domain: the PnP manager's START_DEVICE on the FDO over a platform PCI PDO, the PCI INTx
// callback route, BusRelations of the disk and NIC the real toolstack attached, the children's
// PnP identities, and a child's use of the interface (xenstore over the driver's own ring
// client, woken by its ISR and DPC) against the real pvio-xenstored; power IRPs: a system sleep
// and resume of the whole stack, events that arrive in D3, the children's answers.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>

#include "pvio/event_channel/two_level.h"
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

bool port_pending(domain::Domain& dom, evtchn_port_t port) {
  const auto* s = reinterpret_cast<const xen::shared_info*>(dom.shared_info());
  const xen::xen_ulong_t w = __atomic_load_n(&s->evtchn_pending[port / xen::kBitsPerEvtchnWord], __ATOMIC_ACQUIRE);
  return (w >> (port % xen::kBitsPerEvtchnWord)) & 1;
}

template <class F>
bool eventually(F f, int ms = 2000) {
  for (int i = 0; i < ms / 10; ++i) {
    if (f()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return f();
}

// What a child saw through its interface: event-channel and watch callbacks.
struct ChildEvents {
  std::atomic<int> port_calls{0};
  std::atomic<int> watch_calls{0};
};

TEST_F(XenbusDriverTest, ChildrenAnswerPowerIrpsThemselves) {
  if (IsSkipped() || HasFatalFailure()) return;
  ASSERT_EQ(start().status, STATUS_SUCCESS);
  PDEVICE_OBJECT vbd = child("XENBUS\\VBD", "51712");
  ASSERT_NE(vbd, nullptr);
  EXPECT_EQ(send_power(vbd, IRP_MN_QUERY_POWER, SystemPowerState, PowerSystemSleeping3), STATUS_SUCCESS);
  EXPECT_EQ(send_power(vbd, IRP_MN_QUERY_POWER, DevicePowerState, PowerDeviceD3), STATUS_SUCCESS);
  EXPECT_EQ(send_power(vbd, IRP_MN_SET_POWER, DevicePowerState, PowerDeviceD3), STATUS_SUCCESS);
  EXPECT_EQ(device_power_state(vbd), PowerDeviceD3);
  EXPECT_EQ(send_power(vbd, IRP_MN_SET_POWER, DevicePowerState, PowerDeviceD0), STATUS_SUCCESS);
  EXPECT_EQ(device_power_state(vbd), PowerDeviceD0);
  // No wake capability, and QUERY_CAPABILITIES says so.
  EXPECT_EQ(send_power(vbd, IRP_MN_WAIT_WAKE, SystemPowerState, PowerSystemSleeping3), STATUS_NOT_SUPPORTED);
  DEVICE_CAPABILITIES caps{};
  caps.Size = sizeof caps;
  caps.Version = 1;
  ASSERT_EQ(send_pnp(vbd, IRP_MN_QUERY_CAPABILITIES, [&](PIO_STACK_LOCATION sl) {
              sl->Parameters.DeviceCapabilities.Capabilities = &caps;
            }).status, STATUS_SUCCESS);
  EXPECT_EQ(caps.DeviceState[PowerSystemWorking], static_cast<ULONG>(PowerDeviceD0));
  EXPECT_EQ(caps.DeviceState[PowerSystemSleeping3], static_cast<ULONG>(PowerDeviceD3));
  EXPECT_EQ(caps.DeviceWake, static_cast<ULONG>(PowerDeviceUnspecified));
  EXPECT_EQ(caps.SystemWake, static_cast<ULONG>(PowerSystemUnspecified));
  // A minor function the PDO does not handle keeps the status it came with.
  EXPECT_EQ(send_power(vbd, IRP_MN_POWER_SEQUENCE, DevicePowerState, PowerDeviceD0, STATUS_DEVICE_NOT_READY),
            STATUS_DEVICE_NOT_READY);
  EXPECT_EQ(send_power(vbd, IRP_MN_POWER_SEQUENCE, DevicePowerState, PowerDeviceD0), STATUS_NOT_SUPPORTED);
  // The FDO passes QUERY_POWER and WAIT_WAKE to the PCI bus driver, which answers them.
  EXPECT_EQ(send_power(pci_pdo_, IRP_MN_QUERY_POWER, SystemPowerState, PowerSystemSleeping3), STATUS_SUCCESS);
  EXPECT_EQ(send_power(pci_pdo_, IRP_MN_WAIT_WAKE, SystemPowerState, PowerSystemSleeping3), STATUS_NOT_SUPPORTED);
  EXPECT_EQ(device_power_state(attached_top(pci_pdo_)), PowerDeviceUnspecified) << "a query changed the state";
}

// S0 -> S3 -> S0 as the power manager sends it: children before their parent on the way down,
// the parent first on the way up; each stack gets the system IRP, the policy owner of each
// stack asks for the device IRP (the test stands in for the children's function drivers).
TEST_F(XenbusDriverTest, SleepAndResumeLeaveTheBusWorking) {
  if (IsSkipped() || HasFatalFailure()) return;
  ASSERT_EQ(start().status, STATUS_SUCCESS);
  const std::uint64_t route = callback_via();
  ASSERT_NE(route, 0u);
  PDEVICE_OBJECT fdo = attached_top(pci_pdo_);
  PDEVICE_OBJECT vbd = child("XENBUS\\VBD", "51712");
  PDEVICE_OBJECT vif = child("XENBUS\\VIF", "0");
  ASSERT_NE(vbd, nullptr);
  ASSERT_NE(vif, nullptr);
  PVIO_XEN_INTERFACE xen{};
  ASSERT_EQ(query_interface(vbd, &xen), STATUS_SUCCESS);

  ChildEvents seen;
  ULONG port = 0;
  PVOID watch = nullptr;
  const std::string watched = "device/vbd/51712/power-test";
  {
    AtIrql passive(PASSIVE_LEVEL);
    ASSERT_EQ(xen.EvtchnAllocUnbound(xen.Header.Context, 0,
                                     [](PVOID c, ULONG) { ++static_cast<ChildEvents*>(c)->port_calls; },
                                     &seen, &port), 0);
    ASSERT_EQ(xen.XsWatch(xen.Header.Context, watched.c_str(),
                          [](PVOID c, PCSTR) { ++static_cast<ChildEvents*>(c)->watch_calls; }, &seen,
                          &watch), 0);
  }
  ASSERT_TRUE(eventually([&] { return seen.watch_calls.load() >= 1; })) << "the initial watch event";

  // ---- down: the children, then the bus ----
  for (PDEVICE_OBJECT k : {vbd, vif}) {
    ASSERT_EQ(send_power(k, IRP_MN_QUERY_POWER, SystemPowerState, PowerSystemSleeping3), STATUS_SUCCESS);
    ASSERT_EQ(send_power(k, IRP_MN_SET_POWER, SystemPowerState, PowerSystemSleeping3), STATUS_SUCCESS);
    ASSERT_EQ(send_power(k, IRP_MN_SET_POWER, DevicePowerState, PowerDeviceD3), STATUS_SUCCESS);
  }
  ASSERT_EQ(send_power(pci_pdo_, IRP_MN_QUERY_POWER, SystemPowerState, PowerSystemSleeping3), STATUS_SUCCESS);
  // The FDO, owner of its stack's power policy, turns the S3 IRP into a D3 IRP of its own.
  ASSERT_EQ(send_power(pci_pdo_, IRP_MN_SET_POWER, SystemPowerState, PowerSystemSleeping3), STATUS_SUCCESS);
  EXPECT_EQ(device_power_state(fdo), PowerDeviceD3);
  EXPECT_EQ(device_power_state(pci_pdo_), PowerDeviceD3) << "the D3 IRP did not reach the PCI bus driver";
  EXPECT_EQ(callback_via(), 0u) << "the upcall route outlived D0";

  // ---- in D3: an event on the child's port and a xenstore event wait in shared_info ----
  auto* shared = reinterpret_cast<evtchn::shared_info*>(dom_->shared_info());
  evtchn::two_level::set_pending(*shared, port);  // as Xen marks a port the backend notified
  ASSERT_EQ(xs_->write(home() + "/" + watched, "in-d3"), xs::XsError::None);
  ASSERT_TRUE(eventually([&] { return port_pending(*dom_, dom_->xenstore_port()); }))
      << "xenstored's event did not reach shared_info";
  const int watch_before = seen.watch_calls.load();
  // Another device on the shared INTx line: the platform ISR must not claim it or take events.
  EXPECT_FALSE(raise_shared_interrupt());
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  EXPECT_EQ(seen.port_calls.load(), 0) << "an event was processed in D3";
  EXPECT_EQ(seen.watch_calls.load(), watch_before) << "a watch fired in D3";
  EXPECT_TRUE(port_pending(*dom_, port));
  EXPECT_TRUE(port_pending(*dom_, dom_->xenstore_port()));

  // ---- up: the bus, then the children ----
  ASSERT_EQ(send_power(pci_pdo_, IRP_MN_SET_POWER, SystemPowerState, PowerSystemWorking), STATUS_SUCCESS);
  EXPECT_EQ(device_power_state(fdo), PowerDeviceD0);
  EXPECT_EQ(device_power_state(pci_pdo_), PowerDeviceD0);
  EXPECT_EQ(callback_via(), route) << "the upcall route was not restored";
  for (PDEVICE_OBJECT k : {vbd, vif}) {
    ASSERT_EQ(send_power(k, IRP_MN_SET_POWER, SystemPowerState, PowerSystemWorking), STATUS_SUCCESS);
    ASSERT_EQ(send_power(k, IRP_MN_SET_POWER, DevicePowerState, PowerDeviceD0), STATUS_SUCCESS);
    EXPECT_EQ(device_power_state(k), PowerDeviceD0);
  }
  // What waited is processed now.
  EXPECT_TRUE(eventually([&] { return seen.port_calls.load() == 1; })) << "the event from D3 was lost";
  EXPECT_TRUE(eventually([&] { return seen.watch_calls.load() > watch_before; }))
      << "the watch event from D3 was lost";
  EXPECT_FALSE(port_pending(*dom_, port));

  // The bus works: xenstore both ways, a new event through the ISR and DPC, grants.
  {
    AtIrql passive(PASSIVE_LEVEL);
    char buf[64];
    ULONG len = 0;
    ASSERT_EQ(xen.XsRead(xen.Header.Context, watched.c_str(), buf, sizeof buf, &len), 0);
    EXPECT_EQ(std::string(buf, len), "in-d3");
    ASSERT_EQ(xen.XsWrite(xen.Header.Context, "device/vbd/51712/after-resume", "yes"), 0);
    const auto got = xs_->read(home() + "/device/vbd/51712/after-resume");
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got.value, "yes");
    const int watch_now = seen.watch_calls.load();
    ASSERT_EQ(xs_->write(home() + "/" + watched, "after"), xs::XsError::None);
    EXPECT_TRUE(eventually([&] { return seen.watch_calls.load() > watch_now; }));
    ULONG ref = 0;
    ASSERT_EQ(xen.GrantAccess(xen.Header.Context, 0, 0x4321, FALSE, &ref), 0);
    EXPECT_TRUE(xen.EndAccess(xen.Header.Context, ref));
    xen.XsUnwatch(xen.Header.Context, watch);
    xen.EvtchnClose(xen.Header.Context, port);
  }
  xen.Header.InterfaceDereference(xen.Header.Context);
}

// A driver object whose power dispatch breaks the power manager's rules on purpose.
NTSTATUS lying_power_dispatch(PDEVICE_OBJECT dev, PIRP irp) {
  PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
  if (sl->MinorFunction == IRP_MN_SET_POWER) {
    POWER_STATE other;
    other.DeviceState = PowerDeviceD2;  // asked for D3
    PoSetPowerState(dev, DevicePowerState, other);
    complete_irp(irp, STATUS_SUCCESS);
    return STATUS_SUCCESS;
  }
  // A PDO passing the IRP down: to itself, as nothing is below it.
  IoSkipCurrentIrpStackLocation(irp);
  return PoCallDriver(dev, irp);
}

TEST_F(XenbusDriverTest, TheEnvironmentCatchesBrokenPowerRules) {
  if (IsSkipped() || HasFatalFailure()) return;
  DRIVER_OBJECT liar{};
  liar.MajorFunction[IRP_MJ_POWER] = &lying_power_dispatch;
  PDEVICE_OBJECT pdo = nullptr;
  {
    AtIrql passive(PASSIVE_LEVEL);
    ASSERT_EQ(IoCreateDevice(&liar, 0, nullptr, FILE_DEVICE_UNKNOWN, 0, FALSE, &pdo), STATUS_SUCCESS);
  }
  pdo->Flags = DO_BUS_ENUMERATED_DEVICE | DO_POWER_PAGABLE;
  send_power(pdo, IRP_MN_SET_POWER, DevicePowerState, PowerDeviceD3);
  const auto v1 = violations();
  ASSERT_EQ(v1.size(), 1u);
  EXPECT_NE(v1[0].find("PoSetPowerState"), std::string::npos) << v1[0];
  clear_violations();
  send_power(pdo, IRP_MN_QUERY_POWER, DevicePowerState, PowerDeviceD3);
  const auto v2 = violations();
  ASSERT_GE(v2.size(), 1u);
  EXPECT_NE(v2[0].find("a PDO passed a power IRP down"), std::string::npos) << v2[0];
  clear_violations();
  {
    AtIrql passive(PASSIVE_LEVEL);
    IoDeleteDevice(pdo);
  }
  // The FDO added in SetUp is removed without a start.
  EXPECT_EQ(send_pnp(pci_pdo_, IRP_MN_REMOVE_DEVICE).status, STATUS_SUCCESS);
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
