// Driver for the emulated PIIX IDE controller: primary channel master, LBA48, PIO and
// bus-master DMA, polled (interrupts stay disabled in the test kernel).
#pragma once

#include <stdint.h>

#include "pci.h"

namespace pvio::guest {

enum class IdeStatus { kOk, kTimeout, kDeviceError, kDmaError, kNoDrq };

struct IdeDisk {
  uint16_t cmd = 0x1f0, ctl = 0x3f6, bm = 0;
  PciAddress pci;
  uint64_t sectors = 0;
  bool lba48 = false;
  uint32_t* prd = nullptr;  // one page, 64 KiB window, for the driver's own PRD tables
  char model[41] = {};
};

const char* to_string(IdeStatus s);

// Finds the bus-master BAR, enables I/O decode and bus mastering, resets and identifies.
bool ide_init(IdeDisk* disk, PciAddress pci);
// Restores the PCI command register and BAR4 (the hostile workload scribbles on them).
void ide_restore_pci(IdeDisk& disk);
void ide_soft_reset(IdeDisk& disk);
IdeStatus ide_identify(IdeDisk& disk, uint16_t words[256]);

IdeStatus ide_pio(IdeDisk& disk, bool write, uint64_t lba, uint32_t count, void* buf);
// `buf` must be physically contiguous (identity mapped) and 2-byte aligned.
IdeStatus ide_dma(IdeDisk& disk, bool write, uint64_t lba, uint32_t count, void* buf);
// Starts a DMA command with a caller-built PRD table at `prd_gpa` (for the hostile workload).
IdeStatus ide_dma_raw(IdeDisk& disk, bool write, uint64_t lba, uint32_t count, uint32_t prd_gpa,
                      uint8_t* bm_status_out);
IdeStatus ide_flush(IdeDisk& disk);

}  // namespace pvio::guest
