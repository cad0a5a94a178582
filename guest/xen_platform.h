// The driver side of Xen's emulated-device unplug protocol (docs/misc/hvm-emulated-unplug.pandoc)
// on the Xen platform device's fixed ports 0x10-0x1f: what a PV driver set does before it
// takes over from the emulated disk and NIC.
#pragma once

#include <stdint.h>

namespace pvio::guest {

inline constexpr uint16_t kUnplugMagic = 0x49d2, kUnplugMagicBlacklisted = 0xd249;
inline constexpr uint16_t kUnplugAllIdeDisks = 1, kUnplugAllNics = 2;

uint16_t unplug_read_magic();           // 16-bit read of 0x10
uint8_t unplug_read_version();          // 8-bit read of 0x12
void unplug_write_product(uint16_t n);  // 16-bit write of 0x12 (pvdrivers.h number)
void unplug_write_build(uint32_t n);    // 32-bit write of 0x10
void unplug_write_mask(uint16_t mask);  // 16-bit write of 0x10
// One log line to the host, a byte at a time on 0x12, ended with '\n'.
void unplug_log(const char* line);

}  // namespace pvio::guest
