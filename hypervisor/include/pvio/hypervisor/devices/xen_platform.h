// Xen platform PCI device (5853:0001, class 0xFF80): its presence tells an HVM guest that PV
// drivers can be loaded. Minimal configuration space for now; the MMIO BAR for grant frames
// comes with the hypercall interface.
#pragma once

#include <memory>

#include "pvio/hypervisor/pci.h"

namespace pvio::hv {

inline constexpr std::uint16_t kXenPlatformVendorId = 0x5853;
inline constexpr std::uint16_t kXenPlatformDeviceId = 0x0001;

std::unique_ptr<PciFunction> make_xen_platform_device();
// i440FX host bridge (8086:1237) and PIIX3 ISA bridge (8086:7000) at 00.0 / 01.0, so the IDE
// function sits where a PC guest expects it (01.1).
std::unique_ptr<PciFunction> make_host_bridge();
std::unique_ptr<PciFunction> make_isa_bridge();

}  // namespace pvio::hv
