// PIIX3-style IDE controller (8086:7010), primary channel, one ATA disk as master, modelled at
// register level: legacy command block 0x1F0-0x1F7, control 0x3F6, bus-master DMA (BMIDE) in
// the I/O BAR4. ATA commands: IDENTIFY DEVICE, READ/WRITE SECTORS (EXT) by PIO, READ/WRITE DMA
// (EXT) through the PRD table, FLUSH CACHE (EXT), SET FEATURES. The disk is a file accessed with
// pread/pwrite. Every guest access is one VM exit, counted on this device.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "pvio/grant_table/guest_memory.h"
#include "pvio/hypervisor/domain.h"
#include "pvio/hypervisor/pci.h"

namespace pvio::hv {

inline constexpr std::uint16_t kIdePrimaryCommandPort = 0x1f0;
inline constexpr std::uint16_t kIdePrimaryControlPort = 0x3f6;
inline constexpr unsigned kIdePrimaryIrq = 14;
inline constexpr std::uint32_t kSectorSize = 512;

// ATA status, error and command values (ATA/ATAPI-7 volume 1).
namespace ata {
inline constexpr std::uint8_t kStatusErr = 0x01, kStatusDrq = 0x08, kStatusDsc = 0x10,
                              kStatusDf = 0x20, kStatusDrdy = 0x40, kStatusBsy = 0x80;
inline constexpr std::uint8_t kErrorAbrt = 0x04, kErrorIdnf = 0x10, kErrorUnc = 0x40;
inline constexpr std::uint8_t kControlNien = 0x02, kControlSrst = 0x04, kControlHob = 0x80;
inline constexpr std::uint8_t kCmdReadSectors = 0x20, kCmdReadSectorsExt = 0x24,
                              kCmdReadDmaExt = 0x25, kCmdWriteSectors = 0x30,
                              kCmdWriteSectorsExt = 0x34, kCmdWriteDmaExt = 0x35,
                              kCmdReadDma = 0xc8, kCmdWriteDma = 0xca, kCmdFlushCache = 0xe7,
                              kCmdFlushCacheExt = 0xea, kCmdIdentify = 0xec,
                              kCmdSetFeatures = 0xef;
}  // namespace ata

// Bus-master IDE registers (PIIX3 datasheet 2.7): offsets in BAR4 for the primary channel.
namespace bmide {
inline constexpr unsigned kCommand = 0, kStatus = 2, kPrdTable = 4, kBarSize = 16;
inline constexpr std::uint8_t kCmdStart = 0x01, kCmdToMemory = 0x08;  // 0x08: device -> RAM
inline constexpr std::uint8_t kStatusActive = 0x01, kStatusError = 0x02, kStatusIrq = 0x04,
                              kStatusDrive0Dma = 0x20, kStatusDrive1Dma = 0x40;
inline constexpr std::uint32_t kPrdEot = 0x80000000u;
}  // namespace bmide

enum class PrdStatus {
  kOk,
  kTableOutsideRam,     // an entry of the table is not in guest RAM
  kNoEndOfTable,        // no EOT bit before the table would cross its 64 KiB boundary
  kBufferOutsideRam,    // an entry's buffer is not (entirely) in guest RAM
  kBufferCrosses64K,    // an entry's buffer crosses a 64 KiB boundary (PIIX rule)
  kOddAddressOrCount,   // bit 0 of address or byte count set (reserved, must be 0)
  kTooShort,            // EOT reached before the transfer's byte count
};

std::string_view to_string(PrdStatus s);

struct PrdSegment {
  std::uint8_t* host;
  std::uint32_t length;
};

// Reads each 8-byte PRD entry once from guest memory at `table_gpa` and resolves it to host
// memory, stopping when `transfer_bytes` are covered. Only on kOk is `out` meaningful.
PrdStatus parse_prd_table(const GuestMemory& memory, std::uint32_t table_gpa,
                          std::uint64_t transfer_bytes, std::vector<PrdSegment>* out);

class PiixIde : public PciFunction, public Device {
 public:
  // `disk_fd` is the backing file (not owned); its size in whole sectors is the disk capacity.
  PiixIde(const GuestMemory& memory, int disk_fd, std::uint64_t disk_bytes, IrqFn irq,
          std::uint16_t bmide_port = 0xc000);

  // Maps the legacy ports on `bus` (the BAR follows the PCI command register).
  bool attach_legacy(IoBus* bus);

  std::uint32_t pio_read(int region, std::uint16_t offset, unsigned size) override;
  void pio_write(int region, std::uint16_t offset, unsigned size, std::uint32_t value) override;

  std::uint64_t sectors() const { return sectors_; }

  // Emulated-device unplug of the disk (Xen's unplug protocol, devices/xen_platform.cc): the
  // drive is drained and its file flushed (fdatasync), then it is gone: the channel reads as
  // an empty one (every task-file register and the alternate status read 0, commands are
  // ignored, INTRQ is low) and the file is never touched again. The controller function stays
  // on the bus, as on a PC whose channel has no drive. Returns whether the flush succeeded
  // (the drive goes either way). A second call does nothing and returns true.
  bool unplug_disk();
  bool disk_present() const { return present_; }

 protected:
  Device* bar_device() override { return this; }

 private:
  enum class Pio { kNone, kIn, kOut };
  enum class Dma { kNone, kRead, kWrite };

  std::uint32_t command_read(unsigned reg, unsigned size);
  void command_write(unsigned reg, unsigned size, std::uint32_t value);
  void control_write(std::uint8_t value);
  std::uint32_t bm_read(unsigned offset, unsigned size);
  void bm_write(unsigned offset, unsigned size, std::uint32_t value);

  void execute(std::uint8_t command);
  void reset();
  bool drive_selected() const { return !(device_ & 0x10); }  // only the master exists
  bool lba_range(bool lba48, std::uint64_t* lba, std::uint32_t* count);
  void start_pio(Pio dir, std::uint64_t lba, std::uint32_t count);
  void pio_next_sector();
  void pio_data_read(std::uint8_t* dst, unsigned size);
  void pio_data_write(const std::uint8_t* src, unsigned size);
  void run_dma();
  void identify();
  void complete(std::uint8_t status);
  void abort_command(std::uint8_t error);
  void set_irq(bool level);

  const GuestMemory& memory_;
  int fd_;
  std::uint64_t sectors_;
  IrqFn irq_;
  bool present_ = true;  // false once the disk was unplugged

  // Task file; hob_* hold the previous write of each register for LBA48 (the two-deep FIFO).
  std::uint8_t feature_ = 0, nsector_ = 0, lbal_ = 0, lbam_ = 0, lbah_ = 0;
  std::uint8_t hob_feature_ = 0, hob_nsector_ = 0, hob_lbal_ = 0, hob_lbam_ = 0, hob_lbah_ = 0;
  std::uint8_t device_ = 0xa0, status_ = ata::kStatusDrdy | ata::kStatusDsc, error_ = 0;
  std::uint8_t control_ = 0;
  bool irq_level_ = false;

  // PIO transfer state: one sector buffered at a time.
  Pio pio_ = Pio::kNone;
  std::uint64_t pio_lba_ = 0;
  std::uint32_t pio_left_ = 0;  // sectors not yet moved through the buffer
  std::uint32_t buf_pos_ = 0;
  std::uint8_t buf_[kSectorSize] = {};

  // DMA: the ATA command arms it, BMIDE start runs it (in either order).
  Dma dma_ = Dma::kNone;
  std::uint64_t dma_lba_ = 0;
  std::uint32_t dma_count_ = 0;
  std::uint8_t bm_command_ = 0, bm_status_ = bmide::kStatusDrive0Dma;
  std::uint32_t bm_prd_ = 0;
  std::vector<PrdSegment> segments_;
};

}  // namespace pvio::hv
