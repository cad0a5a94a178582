// The fixture of the tests that run xenbus.sys's bus driver: a user-mode pvio domain known to
// the real pvio-xenstored, hypervisor.h mapped onto it (env/hypervisor_domain.cc), the PCI
// bus driver's PDO for the platform device at 00:03.0 and xenbus's FDO added over it, as the
// PnP manager builds the stack. Tests start the FDO, enumerate its children and use them;
// TearDown removes the bus and checks that it released everything.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "../blkfront-user/harness.h"
#include "bus.h"
#include "env/hypervisor_domain.h"
#include "env/kernel.h"
#include "pvio/domain/domain.h"
#include "pvio/xenstore/client.h"

namespace pvio::windows::test {

inline std::string wide(ULONG_PTR p) {
  std::string s;
  for (auto* w = reinterpret_cast<const WCHAR*>(p); *w != 0; ++w) s += static_cast<char>(*w);
  return s;
}

struct XenbusDomainConfig {
  domid_t domid = 13;
  std::uint64_t disk_bytes = 16u << 20;
  std::uint64_t memory_bytes = 16u << 20;
  std::uint32_t nr_grant_frames = 4;
  const char* name = "xenbus-driver-test";
  // Arguments of `pvio up` (e.g. "--vif-uplink none": the vifs are the switch's only ports).
  const char* up_args = "";
  bool needs_netback = false;
};

class XenbusFixture : public ::testing::Test {
 protected:
  static constexpr ULONG kVector = 0x51;
  static constexpr KIRQL kIrql = 6;

  explicit XenbusFixture(const XenbusDomainConfig& c = {}) : cfg_(c) {}

  // The toolstack's device attachments, made before the bus starts.
  virtual void attach_devices() = 0;

  std::string home() const { return "/local/domain/" + std::to_string(cfg_.domid); }

  void attach(const std::string& verb) {
    std::string out;
    ASSERT_EQ(pvio::test::run_shell(dom0_->pvio + " " + verb, &out), 0) << verb << ": " << out;
  }

  void SetUp() override {
    if (const std::string why = blkfront::user::test::missing_prerequisite(); !why.empty())
      GTEST_SKIP() << why;
    if (cfg_.needs_netback && blkfront::user::test::env_or_empty("PVIO_NETBACK").empty())
      GTEST_SKIP() << "$PVIO_NETBACK not set (pvio-netback not built)";
    clear_violations();
    dom0_ = std::make_unique<blkfront::user::test::Dom0>(cfg_.disk_bytes);
    std::string out;
    ASSERT_EQ(pvio::test::run_shell(dom0_->pvio + " up " + cfg_.up_args, &out), 0) << out;
    domain::DomainConfig dc;
    dc.domid = cfg_.domid;
    dc.memory_bytes = cfg_.memory_bytes;
    dc.nr_grant_frames = cfg_.nr_grant_frames;
    ASSERT_EQ(domain::Domain::create(dc, &dom_), 0);
    loop_ = std::thread([this] { dom_->run(); });
    xs_ = xs::Client::connect(dom0_->dir + "/xenstored.sock");
    ASSERT_TRUE(xs_);
    ASSERT_EQ(xs_->write(home() + "/name", cfg_.name), xs::XsError::None);
    ASSERT_EQ(xs_->write(home() + "/domid", std::to_string(cfg_.domid)), xs::XsError::None);
    // The guest reads its own domid, as from Xen's toolstack.
    for (const std::string& p : {home(), home() + "/domid"})
      ASSERT_EQ(xs_->set_perms(p, {{0, xs::XsPerm::None}, {cfg_.domid, xs::XsPerm::Read}}),
                xs::XsError::None);
    ASSERT_EQ(xs_->introduce(cfg_.domid, dom_->xenstore_gfn(), dom_->xenstore_port()),
              xs::XsError::None);
    attach_devices();
    if (HasFatalFailure()) return;

    set_hypervisor_domain(dom_.get(), kVector);
    // The PCI bus driver's PDO for 5853:0001 at 00:03.0; it completes what reaches it. Power
    // IRPs as PCI answers them: set and query succeed (a device state is reported), no wake.
    pci_pdo_ = create_device([](PDEVICE_OBJECT dev, PIRP irp) {
      PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
      if (sl->MajorFunction == IRP_MJ_POWER) {
        NTSTATUS st = irp->IoStatus.Status;
        if (sl->MinorFunction == IRP_MN_SET_POWER || sl->MinorFunction == IRP_MN_QUERY_POWER)
          st = STATUS_SUCCESS;
        if (sl->MinorFunction == IRP_MN_SET_POWER && sl->Parameters.Power.Type == DevicePowerState)
          PoSetPowerState(dev, DevicePowerState, sl->Parameters.Power.State);
        if (sl->MinorFunction == IRP_MN_WAIT_WAKE) st = STATUS_NOT_SUPPORTED;
        complete_irp(irp, st, irp->IoStatus.Information);
        return st;
      }
      const NTSTATUS st = sl->MinorFunction == IRP_MN_START_DEVICE ||
                                  sl->MinorFunction == IRP_MN_REMOVE_DEVICE
                              ? STATUS_SUCCESS
                              : irp->IoStatus.Status;
      complete_irp(irp, st, irp->IoStatus.Information);
      return st;
    });
    set_device_property(pci_pdo_, DevicePropertyBusNumber, 0);
    set_device_property(pci_pdo_, DevicePropertyAddress, (3u << 16) | 0u);
    set_platform_device(pci_pdo_);
    driver_ = std::make_unique<DRIVER_OBJECT>();
    std::memset(driver_.get(), 0, sizeof *driver_);
    driver_->DriverExtension = &driver_ext_;
    ASSERT_EQ(xenbus::xenbus_driver_entry(driver_.get()), STATUS_SUCCESS);
    {
      AtIrql passive(PASSIVE_LEVEL);
      ASSERT_EQ(driver_ext_.AddDevice(driver_.get(), pci_pdo_), STATUS_SUCCESS);
    }
  }

  // Removes the bus (after the test stopped whatever runs on its children) and checks that
  // nothing it set up outlived it.
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
    for (int i = 0; i < 100 && power_requests_in_flight() != 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_EQ(power_requests_in_flight(), 0u);
    set_platform_device(nullptr);
    if (pci_pdo_ != nullptr) delete_device(pci_pdo_);
    if (xs_) xs_->release(cfg_.domid);
    if (dom_) {
      dom_->stop();
      loop_.join();
    }
    set_hypervisor_domain(nullptr, 0);
    set_guest_memory(nullptr);
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

  // The child in BusRelations with this hardware ID and instance ID, or nullptr.
  PDEVICE_OBJECT child(const std::string& hardware_id, const std::string& instance_id) {
    for (PDEVICE_OBJECT k : bus_relations())
      if (query_id(k, BusQueryHardwareIDs, true) == hardware_id &&
          query_id(k, BusQueryInstanceID) == instance_id)
        return k;
    return nullptr;
  }

  // The interface table through IRP_MN_QUERY_INTERFACE, as a child's function driver asks.
  NTSTATUS query_interface(PDEVICE_OBJECT pdo, PVIO_XEN_INTERFACE* xen) {
    return send_pnp(pdo, IRP_MN_QUERY_INTERFACE, [&](PIO_STACK_LOCATION sl) {
             sl->Parameters.QueryInterface.InterfaceType = &GUID_PVIO_XEN_INTERFACE;
             sl->Parameters.QueryInterface.Size = sizeof *xen;
             sl->Parameters.QueryInterface.Version = PVIO_XEN_INTERFACE_VERSION;
             sl->Parameters.QueryInterface.Interface = &xen->Header;
           }).status;
  }

  XenbusDomainConfig cfg_;
  std::unique_ptr<blkfront::user::test::Dom0> dom0_;
  std::unique_ptr<domain::Domain> dom_;
  std::thread loop_;
  std::unique_ptr<xs::Client> xs_;
  PDEVICE_OBJECT pci_pdo_ = nullptr;
  DRIVER_EXTENSION driver_ext_{};
  std::unique_ptr<DRIVER_OBJECT> driver_;
  bool started_ = false;
};

}  // namespace pvio::windows::test
