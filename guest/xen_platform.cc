// Port accessors of Xen's unplug protocol for the test guest.
#include "xen_platform.h"

#include "arch.h"

namespace pvio::guest {

namespace {
constexpr uint16_t kPortMagic = 0x10, kPortVersion = 0x12;
}  // namespace

uint16_t unplug_read_magic() { return inw(kPortMagic); }
uint8_t unplug_read_version() { return inb(kPortVersion); }
void unplug_write_product(uint16_t n) { outw(kPortVersion, n); }
void unplug_write_build(uint32_t n) { outl(kPortMagic, n); }
void unplug_write_mask(uint16_t mask) { outw(kPortMagic, mask); }

void unplug_log(const char* line) {
  for (; *line != '\0'; ++line) outb(kPortVersion, static_cast<uint8_t>(*line));
  outb(kPortVersion, '\n');
}

}  // namespace pvio::guest
