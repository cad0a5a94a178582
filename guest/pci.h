// PCI configuration mechanism #1 and bus-0 enumeration for the guest.
#pragma once

#include <stdint.h>

namespace pvio::guest {

struct PciAddress {
  uint8_t slot = 0, function = 0;
  bool found = false;
};

uint32_t pci_read32(uint8_t slot, uint8_t function, uint8_t reg);
void pci_write32(uint8_t slot, uint8_t function, uint8_t reg, uint32_t value);
uint16_t pci_read16(uint8_t slot, uint8_t function, uint8_t reg);
void pci_write16(uint8_t slot, uint8_t function, uint8_t reg, uint16_t value);

struct PciScan {
  PciAddress ide;           // class 01:01
  PciAddress xen_platform;  // 5853:0001
  unsigned nics = 0;        // class 02:00 (Ethernet)
  unsigned functions = 0;
};

// Prints every function found on bus 0.
PciScan pci_enumerate();

}  // namespace pvio::guest
