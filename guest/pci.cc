// Bus-0 scan over configuration mechanism #1.
#include "pci.h"

#include "arch.h"
#include "console.h"

namespace pvio::guest {

namespace {
uint32_t address(uint8_t slot, uint8_t function, uint8_t reg) {
  return 0x80000000u | (uint32_t{slot} << 11) | (uint32_t{function} << 8) | (reg & 0xfcu);
}
}  // namespace

uint32_t pci_read32(uint8_t slot, uint8_t function, uint8_t reg) {
  outl(0xcf8, address(slot, function, reg));
  return inl(0xcfc);
}

void pci_write32(uint8_t slot, uint8_t function, uint8_t reg, uint32_t value) {
  outl(0xcf8, address(slot, function, reg));
  outl(0xcfc, value);
}

uint16_t pci_read16(uint8_t slot, uint8_t function, uint8_t reg) {
  outl(0xcf8, address(slot, function, reg));
  return inw(static_cast<uint16_t>(0xcfc + (reg & 2)));
}

void pci_write16(uint8_t slot, uint8_t function, uint8_t reg, uint16_t value) {
  outl(0xcf8, address(slot, function, reg));
  outw(static_cast<uint16_t>(0xcfc + (reg & 2)), value);
}

PciScan pci_enumerate() {
  PciScan scan;
  for (uint8_t slot = 0; slot < 32; ++slot) {
    for (uint8_t fn = 0; fn < 8; ++fn) {
      const uint32_t id = pci_read32(slot, fn, 0x00);
      if ((id & 0xffff) == 0xffff) {
        if (fn == 0) break;
        continue;
      }
      const uint32_t cls = pci_read32(slot, fn, 0x08);
      kprintf("pci 00:%u.%u %x:%x class %x\n", slot, fn, id & 0xffff, id >> 16, cls >> 8);
      ++scan.functions;
      if ((cls >> 16) == 0x0101 && !scan.ide.found) scan.ide = {slot, fn, true};
      if (id == 0x00015853u) scan.xen_platform = {slot, fn, true};
      if ((cls >> 16) == 0x0200) ++scan.nics;
      // Functions 1-7 exist only behind a multi-function header.
      if (fn == 0 && !((pci_read32(slot, 0, 0x0c) >> 16) & 0x80)) break;
    }
  }
  return scan;
}

}  // namespace pvio::guest
