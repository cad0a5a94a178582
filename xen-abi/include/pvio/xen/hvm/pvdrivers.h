// Product numbers a PV driver set reports to the emulated-device unplug protocol
// (xen/include/public/hvm/pvdrivers.h; docs/misc/hvm-emulated-unplug.pandoc).
#pragma once

#include <stdint.h>

namespace pvio::xen {

// PVDRIVERS_PRODUCT_LIST: (name, number) of each registered driver set.
struct PvdriversProduct {
  const char* name;
  uint16_t number;
};
inline constexpr PvdriversProduct kPvdriversProducts[] = {
    {"xensource-windows", 0x0001},        // Citrix
    {"gplpv-windows", 0x0002},            // James Harper
    {"linux", 0x0003},
    {"xenserver-windows-v7.0+", 0x0004},  // Citrix
    {"xenserver-windows-v7.2+", 0x0005},  // Citrix
    {"experimental", 0xffff},
};
inline constexpr uint16_t kPvdriversProductExperimental = 0xffff;

// Name of a product number, or nullptr for an unregistered one.
constexpr const char* pvdrivers_product_name(uint16_t number) {
  for (const auto& p : kPvdriversProducts)
    if (p.number == number) return p.name;
  return nullptr;
}

}  // namespace pvio::xen
