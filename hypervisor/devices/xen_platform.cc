// Xen platform PCI device and the PC chipset functions around it.
#include "pvio/hypervisor/devices/xen_platform.h"

namespace pvio::hv {

std::unique_ptr<PciFunction> make_xen_platform_device() {
  // Class 0xFF80 (unassigned class, subclass 0x80) as Xen's device model reports it.
  auto fn = std::make_unique<PciFunction>(
      PciId{kXenPlatformVendorId, kXenPlatformDeviceId, 0xff, 0x80, 0x00, 0x01});
  fn->set_subsystem(kXenPlatformVendorId, kXenPlatformDeviceId);
  fn->set_interrupt(11, 1);  // INTA#
  return fn;
}

std::unique_ptr<PciFunction> make_host_bridge() {
  return std::make_unique<PciFunction>(PciId{0x8086, 0x1237, 0x06, 0x00, 0x00, 0x02});
}

std::unique_ptr<PciFunction> make_isa_bridge() {
  return std::make_unique<PciFunction>(PciId{0x8086, 0x7000, 0x06, 0x01, 0x00, 0x00},
                                       /*multifunction=*/true);
}

}  // namespace pvio::hv
