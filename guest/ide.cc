// Polled ATA driver for the PIIX IDE model.
#include "ide.h"

#include "alloc.h"
#include "arch.h"
#include "console.h"

namespace pvio::guest {

namespace {
constexpr uint8_t kBsy = 0x80, kDrq = 0x08, kErr = 0x01, kDf = 0x20;
constexpr uint32_t kPollLimit = 1000000;
uint32_t saved_bar4 = 0;
uint16_t saved_command = 0;

IdeStatus wait_not_busy(IdeDisk& d, uint8_t* status) {
  for (uint32_t i = 0; i < kPollLimit; ++i) {
    const uint8_t s = inb(d.cmd + 7);
    if (!(s & kBsy)) {
      *status = s;
      return IdeStatus::kOk;
    }
  }
  return IdeStatus::kTimeout;
}

void task_file(IdeDisk& d, uint64_t lba, uint32_t count, uint8_t command) {
  outb(d.cmd + 6, 0x40);  // master, LBA
  outb(d.cmd + 2, static_cast<uint8_t>(count >> 8));
  outb(d.cmd + 3, static_cast<uint8_t>(lba >> 24));
  outb(d.cmd + 4, static_cast<uint8_t>(lba >> 32));
  outb(d.cmd + 5, static_cast<uint8_t>(lba >> 40));
  outb(d.cmd + 2, static_cast<uint8_t>(count));
  outb(d.cmd + 3, static_cast<uint8_t>(lba));
  outb(d.cmd + 4, static_cast<uint8_t>(lba >> 8));
  outb(d.cmd + 5, static_cast<uint8_t>(lba >> 16));
  outb(d.cmd + 7, command);
}
}  // namespace

const char* to_string(IdeStatus s) {
  switch (s) {
    case IdeStatus::kOk: return "ok";
    case IdeStatus::kTimeout: return "timeout";
    case IdeStatus::kDeviceError: return "device error";
    case IdeStatus::kDmaError: return "DMA error";
    case IdeStatus::kNoDrq: return "no data request";
  }
  return "?";
}

void ide_soft_reset(IdeDisk& d) {
  outb(d.ctl, 0x06);  // SRST, nIEN
  outb(d.ctl, 0x02);
  uint8_t s;
  wait_not_busy(d, &s);
  outb(d.bm, 0);
  outb(d.bm + 2, 0x26);  // clear error + interrupt, drive 0 DMA capable
}

void ide_restore_pci(IdeDisk& d) {
  pci_write32(d.pci.slot, d.pci.function, 0x20, saved_bar4);
  pci_write16(d.pci.slot, d.pci.function, 0x04, saved_command);
}

IdeStatus ide_identify(IdeDisk& d, uint16_t words[256]) {
  outb(d.cmd + 6, 0xa0);
  outb(d.cmd + 7, 0xec);
  uint8_t s;
  if (wait_not_busy(d, &s) != IdeStatus::kOk) return IdeStatus::kTimeout;
  if (s & kErr) return IdeStatus::kDeviceError;
  if (!(s & kDrq)) return IdeStatus::kNoDrq;
  insl(d.cmd, words, 128);
  return IdeStatus::kOk;
}

bool ide_init(IdeDisk* disk, PciAddress pci) {
  IdeDisk& d = *disk;
  d.pci = pci;
  const uint32_t bar4 = pci_read32(pci.slot, pci.function, 0x20);
  if (!(bar4 & 1)) return false;
  d.bm = static_cast<uint16_t>(bar4 & 0xfffc);
  saved_bar4 = bar4;
  saved_command = static_cast<uint16_t>(pci_read16(pci.slot, pci.function, 0x04) | 0x5);
  pci_write16(pci.slot, pci.function, 0x04, saved_command);  // I/O + bus master
  d.prd = static_cast<uint32_t*>(alloc(4096, 4096));
  if (!d.prd) return false;
  ide_soft_reset(d);
  uint16_t w[256];
  const IdeStatus st = ide_identify(d, w);
  if (st != IdeStatus::kOk) {
    kprintf("ide: IDENTIFY failed: %s\n", to_string(st));
    return false;
  }
  for (unsigned i = 0; i < 20; ++i) {
    d.model[2 * i] = static_cast<char>(w[27 + i] >> 8);
    d.model[2 * i + 1] = static_cast<char>(w[27 + i]);
  }
  for (int i = 39; i >= 0 && d.model[i] == ' '; --i) d.model[i] = 0;
  d.lba48 = w[83] & (1u << 10);
  d.sectors = d.lba48 ? (uint64_t{w[100]} | (uint64_t{w[101]} << 16) | (uint64_t{w[102]} << 32) |
                         (uint64_t{w[103]} << 48))
                      : (uint64_t{w[60]} | (uint64_t{w[61]} << 16));
  kprintf("ide: '%s' %lu sectors, lba48=%u, bus master at 0x%x\n", d.model, d.sectors,
          d.lba48 ? 1u : 0u, d.bm);
  return true;
}

IdeStatus ide_pio(IdeDisk& d, bool write, uint64_t lba, uint32_t count, void* buf) {
  auto* p = static_cast<uint8_t*>(buf);
  task_file(d, lba, count, write ? 0x34 : 0x24);  // WRITE/READ SECTORS EXT
  for (uint32_t i = 0; i < count; ++i, p += 512) {
    uint8_t s;
    if (wait_not_busy(d, &s) != IdeStatus::kOk) return IdeStatus::kTimeout;
    if (s & (kErr | kDf)) return IdeStatus::kDeviceError;
    if (!(s & kDrq)) return IdeStatus::kNoDrq;
    if (write) outsl(d.cmd, p, 128); else insl(d.cmd, p, 128);
  }
  uint8_t s;
  if (wait_not_busy(d, &s) != IdeStatus::kOk) return IdeStatus::kTimeout;
  return (s & (kErr | kDf)) ? IdeStatus::kDeviceError : IdeStatus::kOk;
}

IdeStatus ide_dma_raw(IdeDisk& d, bool write, uint64_t lba, uint32_t count, uint32_t prd_gpa,
                      uint8_t* bm_status_out) {
  const uint8_t dir = write ? 0x00 : 0x08;  // 0x08: the controller writes to memory
  outb(d.bm, 0);
  outb(d.bm + 2, 0x26);
  outl(d.bm + 4, prd_gpa);
  outb(d.bm, dir);
  task_file(d, lba, count, write ? 0x35 : 0x25);  // WRITE/READ DMA EXT
  outb(d.bm, dir | 1);
  uint8_t bms = 0;
  uint32_t i = 0;
  for (; i < kPollLimit; ++i) {
    bms = inb(d.bm + 2);
    if (!(bms & 0x01) || (bms & 0x06)) break;
  }
  outb(d.bm, dir);
  const uint8_t s = inb(d.cmd + 7);
  if (bm_status_out) *bm_status_out = bms;
  if (i == kPollLimit) return IdeStatus::kTimeout;
  if (bms & 0x02) return IdeStatus::kDmaError;
  if (s & (kErr | kDf)) return IdeStatus::kDeviceError;
  return IdeStatus::kOk;
}

IdeStatus ide_dma(IdeDisk& d, bool write, uint64_t lba, uint32_t count, void* buf) {
  // One PRD entry per piece that does not cross a 64 KiB boundary; 512 entries per page.
  uint64_t addr = reinterpret_cast<uint64_t>(buf);
  uint64_t left = uint64_t{count} * 512;
  unsigned n = 0;
  while (left) {
    if (n == 512) return IdeStatus::kDmaError;
    uint64_t len = 0x10000 - (addr & 0xffff);
    if (len > left) len = left;
    d.prd[2 * n] = static_cast<uint32_t>(addr);
    d.prd[2 * n + 1] = static_cast<uint32_t>(len & 0xffff);
    addr += len;
    left -= len;
    ++n;
  }
  d.prd[2 * (n - 1) + 1] |= 0x80000000u;
  return ide_dma_raw(d, write, lba, count, static_cast<uint32_t>(reinterpret_cast<uint64_t>(d.prd)),
                     nullptr);
}

IdeStatus ide_flush(IdeDisk& d) {
  outb(d.cmd + 6, 0x40);
  outb(d.cmd + 7, 0xea);  // FLUSH CACHE EXT
  uint8_t s;
  if (wait_not_busy(d, &s) != IdeStatus::kOk) return IdeStatus::kTimeout;
  return (s & kErr) ? IdeStatus::kDeviceError : IdeStatus::kOk;
}

}  // namespace pvio::guest
