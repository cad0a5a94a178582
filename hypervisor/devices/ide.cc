// PIIX3 IDE controller model: task-file registers, PIO and bus-master DMA, PRD validation.
#include "pvio/hypervisor/devices/ide.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>

namespace pvio::hv {

namespace {
constexpr int kRegionCommand = 0;
constexpr int kRegionControl = 1;
constexpr int kRegionBar4 = 104;  // PciFunction tags BAR i as 100 + i
constexpr std::uint64_t kPrdWindow = 0x10000;

// ATA strings are stored as byte-swapped 16-bit words, space padded.
void put_ata_string(std::uint16_t* words, unsigned nwords, const char* s) {
  const std::size_t len = std::strlen(s);
  for (unsigned i = 0; i < nwords; ++i) {
    const char a = 2 * i < len ? s[2 * i] : ' ';
    const char b = 2 * i + 1 < len ? s[2 * i + 1] : ' ';
    words[i] = static_cast<std::uint16_t>((static_cast<std::uint8_t>(a) << 8) |
                                          static_cast<std::uint8_t>(b));
  }
}
}  // namespace

std::string_view to_string(PrdStatus s) {
  switch (s) {
    case PrdStatus::kOk: return "ok";
    case PrdStatus::kTableOutsideRam: return "PRD table outside guest RAM";
    case PrdStatus::kNoEndOfTable: return "PRD table has no EOT within its 64 KiB window";
    case PrdStatus::kBufferOutsideRam: return "PRD buffer outside guest RAM";
    case PrdStatus::kBufferCrosses64K: return "PRD buffer crosses a 64 KiB boundary";
    case PrdStatus::kOddAddressOrCount: return "PRD address or byte count is odd";
    case PrdStatus::kTooShort: return "PRD table shorter than the transfer";
  }
  return "unknown";
}

PrdStatus parse_prd_table(const GuestMemory& memory, std::uint32_t table_gpa,
                          std::uint64_t transfer_bytes, std::vector<PrdSegment>* out) {
  out->clear();
  std::uint64_t covered = 0;
  std::uint64_t entry_gpa = table_gpa & ~std::uint32_t{3};
  const std::uint64_t window_end = (entry_gpa & ~(kPrdWindow - 1)) + kPrdWindow;
  while (covered < transfer_bytes) {
    const std::uint8_t* raw = memory.range(entry_gpa, 8);
    if (raw == nullptr) return PrdStatus::kTableOutsideRam;
    if (entry_gpa + 8 > window_end) return PrdStatus::kNoEndOfTable;
    // One copy of the entry: the guest may rewrite the table while we look at it.
    std::uint32_t addr, ctl;
    std::memcpy(&addr, raw, 4);
    std::memcpy(&ctl, raw + 4, 4);
    if ((addr & 1) || (ctl & 1)) return PrdStatus::kOddAddressOrCount;
    std::uint32_t length = ctl & 0xffff;
    if (length == 0) length = 0x10000;
    if ((addr & (kPrdWindow - 1)) + std::uint64_t{length} > kPrdWindow)
      return PrdStatus::kBufferCrosses64K;
    const std::uint64_t use = std::min<std::uint64_t>(length, transfer_bytes - covered);
    std::uint8_t* host = memory.range(addr, use);
    if (host == nullptr) return PrdStatus::kBufferOutsideRam;
    out->push_back({host, static_cast<std::uint32_t>(use)});
    covered += use;
    if (covered < transfer_bytes && (ctl & bmide::kPrdEot)) return PrdStatus::kTooShort;
    entry_gpa += 8;
  }
  return PrdStatus::kOk;
}

PiixIde::PiixIde(const GuestMemory& memory, int disk_fd, std::uint64_t disk_bytes, IrqFn irq,
                 std::uint16_t bmide_port)
    : PciFunction(PciId{0x8086, 0x7010, 0x01, 0x01, 0x80, 0x00}),  // prog-if: legacy + bus master
      Device("ide"),
      memory_(memory),
      fd_(disk_fd),
      sectors_(disk_bytes / kSectorSize),
      irq_(std::move(irq)) {
  add_io_bar(4, bmide::kBarSize, bmide_port);
  // As firmware leaves it: I/O decode and bus mastering on.
  set16(pci_reg::kCommand, pci_reg::kCommandIo | pci_reg::kCommandMaster);
  reset();
}

bool PiixIde::attach_legacy(IoBus* bus) {
  return bus->map_pio(kIdePrimaryCommandPort, 8, this, kRegionCommand) &&
         bus->map_pio(kIdePrimaryControlPort, 1, this, kRegionControl);
}

void PiixIde::set_irq(bool level) {
  if (level && (control_ & ata::kControlNien)) level = false;
  if (level == irq_level_) return;
  irq_level_ = level;
  if (irq_) irq_(kIdePrimaryIrq, level);
}

void PiixIde::reset() {
  // Power-on / SRST signature of an ATA device (ATA/ATAPI-7 9.12).
  nsector_ = 1;
  lbal_ = 1;
  lbam_ = lbah_ = 0;
  error_ = 0x01;  // diagnostic: device 0 passed
  device_ = 0xa0;
  status_ = ata::kStatusDrdy | ata::kStatusDsc;
  pio_ = Pio::kNone;
  dma_ = Dma::kNone;
  set_irq(false);
}

bool PiixIde::unplug_disk() {
  if (!present_) return true;
  // Drain: every command runs to completion inside the exit that starts it (PIO sectors are
  // written as each one fills, DMA in one go), so what is left is at most a PIO write whose
  // last sector has not arrived and an armed DMA not yet started: neither was acknowledged.
  pio_ = Pio::kNone;
  dma_ = Dma::kNone;
  bm_status_ &= static_cast<std::uint8_t>(~bmide::kStatusActive);
  // Flush: every write the guest saw complete reaches the file's storage before the disk goes
  // (what a PV backend reads next is the same file).
  const bool flushed = ::fdatasync(fd_) == 0;
  present_ = false;
  status_ = 0;
  error_ = 0;
  set_irq(false);
  return flushed;
}

std::uint32_t PiixIde::pio_read(int region, std::uint16_t offset, unsigned size) {
  // An unplugged drive leaves an empty channel: its registers read 0 (as QEMU's empty bus).
  if (!present_ && region != kRegionBar4) return 0;
  switch (region) {
    case kRegionCommand: return command_read(offset, size);
    case kRegionControl:  // alternate status: does not acknowledge the interrupt
      return drive_selected() ? status_ : 0;
    case kRegionBar4: return bm_read(offset, size);
  }
  return ~0u;
}

void PiixIde::pio_write(int region, std::uint16_t offset, unsigned size, std::uint32_t value) {
  if (!present_ && region != kRegionBar4) return;  // no drive to take a command
  switch (region) {
    case kRegionCommand: command_write(offset, size, value); break;
    case kRegionControl: control_write(static_cast<std::uint8_t>(value)); break;
    case kRegionBar4: bm_write(offset, size, value); break;
  }
}

std::uint32_t PiixIde::command_read(unsigned reg, unsigned size) {
  const bool hob = control_ & ata::kControlHob;
  switch (reg) {
    case 0: {
      std::uint32_t v = ~0u;
      if (drive_selected() && pio_ == Pio::kIn) pio_data_read(reinterpret_cast<std::uint8_t*>(&v), size);
      return v;
    }
    case 1: return hob ? hob_feature_ : error_;
    case 2: return hob ? hob_nsector_ : nsector_;
    case 3: return hob ? hob_lbal_ : lbal_;
    case 4: return hob ? hob_lbam_ : lbam_;
    case 5: return hob ? hob_lbah_ : lbah_;
    case 6: return device_;
    case 7:
      if (!drive_selected()) return 0;  // no slave device: reads as 0
      set_irq(false);                   // reading status acknowledges INTRQ
      return status_;
  }
  return ~0u;
}

void PiixIde::command_write(unsigned reg, unsigned size, std::uint32_t value) {
  const auto v = static_cast<std::uint8_t>(value);
  if (reg >= 1 && reg <= 6) control_ &= static_cast<std::uint8_t>(~ata::kControlHob);
  switch (reg) {
    case 0:
      if (drive_selected() && pio_ == Pio::kOut)
        pio_data_write(reinterpret_cast<const std::uint8_t*>(&value), size);
      break;
    case 1: hob_feature_ = feature_; feature_ = v; break;
    case 2: hob_nsector_ = nsector_; nsector_ = v; break;
    case 3: hob_lbal_ = lbal_; lbal_ = v; break;
    case 4: hob_lbam_ = lbam_; lbam_ = v; break;
    case 5: hob_lbah_ = lbah_; lbah_ = v; break;
    case 6: device_ = static_cast<std::uint8_t>(v | 0xa0); break;
    case 7:
      if (drive_selected()) execute(v);
      break;
  }
}

void PiixIde::control_write(std::uint8_t value) {
  const bool was_reset = control_ & ata::kControlSrst;
  control_ = value;
  if (value & ata::kControlSrst) {
    status_ = ata::kStatusBsy;
    pio_ = Pio::kNone;
    dma_ = Dma::kNone;
  } else if (was_reset) {
    reset();
  }
  if (value & ata::kControlNien) set_irq(false);
}

std::uint32_t PiixIde::bm_read(unsigned offset, unsigned size) {
  std::uint8_t regs[bmide::kBarSize] = {};
  regs[bmide::kCommand] = bm_command_;
  regs[bmide::kStatus] = bm_status_;
  std::memcpy(&regs[bmide::kPrdTable], &bm_prd_, 4);
  if (offset >= bmide::kBarSize || offset + size > bmide::kBarSize) return ~0u;
  std::uint32_t v = 0;
  std::memcpy(&v, &regs[offset], size);  // offsets 8..15 (secondary channel) read as 0
  return v;
}

void PiixIde::bm_write(unsigned offset, unsigned size, std::uint32_t value) {
  for (unsigned i = 0; i < size; ++i) {
    const unsigned off = offset + i;
    const auto b = static_cast<std::uint8_t>(value >> (8 * i));
    if (off == bmide::kCommand) {
      const bool was_started = bm_command_ & bmide::kCmdStart;
      bm_command_ = b & (bmide::kCmdStart | bmide::kCmdToMemory);
      if (!(b & bmide::kCmdStart)) {
        bm_status_ &= static_cast<std::uint8_t>(~bmide::kStatusActive);
      } else if (!was_started) {
        bm_status_ |= bmide::kStatusActive;
        if (dma_ != Dma::kNone) run_dma();
      }
    } else if (off == bmide::kStatus) {
      // Error and interrupt bits are write-1-to-clear; the drive DMA-capable bits are plain.
      constexpr std::uint8_t kW1c = bmide::kStatusError | bmide::kStatusIrq;
      constexpr std::uint8_t kRw = bmide::kStatusDrive0Dma | bmide::kStatusDrive1Dma;
      std::uint8_t s = bm_status_;
      s = static_cast<std::uint8_t>(s & ~(b & kW1c));
      s = static_cast<std::uint8_t>((s & ~kRw) | (b & kRw));
      bm_status_ = s;
    } else if (off >= bmide::kPrdTable && off < bmide::kPrdTable + 4) {
      const unsigned shift = 8 * (off - bmide::kPrdTable);
      bm_prd_ = (bm_prd_ & ~(0xffu << shift)) | (std::uint32_t{b} << shift);
      bm_prd_ &= ~std::uint32_t{3};
    }
  }
}

bool PiixIde::lba_range(bool lba48, std::uint64_t* lba, std::uint32_t* count) {
  if (lba48) {
    *lba = (std::uint64_t{hob_lbah_} << 40) | (std::uint64_t{hob_lbam_} << 32) |
           (std::uint64_t{hob_lbal_} << 24) | (std::uint64_t{lbah_} << 16) |
           (std::uint64_t{lbam_} << 8) | lbal_;
    *count = (std::uint32_t{hob_nsector_} << 8) | nsector_;
    if (*count == 0) *count = 65536;
  } else {
    if (!(device_ & 0x40)) return false;  // CHS addressing is not supported
    *lba = (std::uint64_t{device_ & 0x0fu} << 24) | (std::uint64_t{lbah_} << 16) |
           (std::uint64_t{lbam_} << 8) | lbal_;
    *count = nsector_ == 0 ? 256 : nsector_;
  }
  return *lba <= sectors_ && *count <= sectors_ - *lba;
}

void PiixIde::complete(std::uint8_t status) {
  status_ = status;
  set_irq(true);
}

void PiixIde::abort_command(std::uint8_t error) {
  ++counters_.invalid_requests;
  error_ = error;
  pio_ = Pio::kNone;
  dma_ = Dma::kNone;
  complete(ata::kStatusDrdy | ata::kStatusDsc | ata::kStatusErr);
}

void PiixIde::execute(std::uint8_t command) {
  std::uint64_t lba = 0;
  std::uint32_t count = 0;
  error_ = 0;
  pio_ = Pio::kNone;
  dma_ = Dma::kNone;
  switch (command) {
    case ata::kCmdIdentify: identify(); return;
    case ata::kCmdReadSectors:
    case ata::kCmdReadSectorsExt:
    case ata::kCmdWriteSectors:
    case ata::kCmdWriteSectorsExt: {
      const bool ext = command == ata::kCmdReadSectorsExt || command == ata::kCmdWriteSectorsExt;
      if (!lba_range(ext, &lba, &count)) return abort_command(ata::kErrorIdnf | ata::kErrorAbrt);
      const bool in = command == ata::kCmdReadSectors || command == ata::kCmdReadSectorsExt;
      start_pio(in ? Pio::kIn : Pio::kOut, lba, count);
      return;
    }
    case ata::kCmdReadDma:
    case ata::kCmdReadDmaExt:
    case ata::kCmdWriteDma:
    case ata::kCmdWriteDmaExt: {
      const bool ext = command == ata::kCmdReadDmaExt || command == ata::kCmdWriteDmaExt;
      if (!lba_range(ext, &lba, &count)) return abort_command(ata::kErrorIdnf | ata::kErrorAbrt);
      dma_ = (command == ata::kCmdReadDma || command == ata::kCmdReadDmaExt) ? Dma::kRead
                                                                             : Dma::kWrite;
      dma_lba_ = lba;
      dma_count_ = count;
      status_ = ata::kStatusDrdy | ata::kStatusDsc | ata::kStatusDrq;
      if (bm_command_ & bmide::kCmdStart) run_dma();
      return;
    }
    case ata::kCmdFlushCache:
    case ata::kCmdFlushCacheExt:
      if (::fdatasync(fd_) != 0) return abort_command(ata::kErrorAbrt);
      complete(ata::kStatusDrdy | ata::kStatusDsc);
      return;
    case ata::kCmdSetFeatures:  // transfer mode and cache settings: accepted, nothing to change
      complete(ata::kStatusDrdy | ata::kStatusDsc);
      return;
    default:
      return abort_command(ata::kErrorAbrt);
  }
}

void PiixIde::identify() {
  std::uint16_t w[256] = {};
  w[0] = 0x0040;  // fixed device
  w[1] = 16383;   // legacy CHS geometry
  w[3] = 16;
  w[6] = 63;
  put_ata_string(&w[10], 10, "PVIO00000001");
  put_ata_string(&w[23], 4, "0.1");
  put_ata_string(&w[27], 20, "PVIO PIIX IDE DISK");
  w[47] = 0x8001;  // READ/WRITE MULTIPLE: 1 sector
  w[49] = 0x0300;  // LBA and DMA supported
  w[53] = 0x0006;  // words 64-70 and 88 valid
  const std::uint64_t lba28 = std::min<std::uint64_t>(sectors_, 0x0fffffff);
  w[60] = static_cast<std::uint16_t>(lba28);
  w[61] = static_cast<std::uint16_t>(lba28 >> 16);
  w[63] = 0x0007;  // multiword DMA 0-2 supported
  w[64] = 0x0003;  // PIO 3-4
  w[80] = 0x00f0;  // ATA-4..7
  w[82] = 0x4000;
  w[83] = 0x7400;  // LBA48, FLUSH CACHE, FLUSH CACHE EXT
  w[84] = 0x4000;
  w[85] = 0x4000;
  w[86] = 0x3400;
  w[87] = 0x4000;
  w[88] = 0x203f;  // UDMA 0-5 supported, mode 5 selected
  for (unsigned i = 0; i < 4; ++i) w[100 + i] = static_cast<std::uint16_t>(sectors_ >> (16 * i));
  std::memcpy(buf_, w, sizeof(w));
  buf_pos_ = 0;
  pio_ = Pio::kIn;
  pio_left_ = 1;
  pio_lba_ = 0;
  complete(ata::kStatusDrdy | ata::kStatusDsc | ata::kStatusDrq);
}

void PiixIde::start_pio(Pio dir, std::uint64_t lba, std::uint32_t count) {
  pio_ = dir;
  pio_lba_ = lba;
  pio_left_ = count;
  buf_pos_ = 0;
  if (dir == Pio::kIn) {
    pio_next_sector();
  } else {
    status_ = ata::kStatusDrdy | ata::kStatusDsc | ata::kStatusDrq;  // no interrupt before the first block
  }
}

void PiixIde::pio_next_sector() {
  const ssize_t n = ::pread(fd_, buf_, kSectorSize, static_cast<off_t>(pio_lba_ * kSectorSize));
  if (n != static_cast<ssize_t>(kSectorSize)) return abort_command(ata::kErrorUnc | ata::kErrorAbrt);
  buf_pos_ = 0;
  complete(ata::kStatusDrdy | ata::kStatusDsc | ata::kStatusDrq);
}

void PiixIde::pio_data_read(std::uint8_t* dst, unsigned size) {
  const unsigned n = std::min<unsigned>(size, kSectorSize - buf_pos_);
  std::memcpy(dst, buf_ + buf_pos_, n);
  buf_pos_ += n;
  if (buf_pos_ < kSectorSize) return;
  ++pio_lba_;
  if (--pio_left_ > 0) return pio_next_sector();
  pio_ = Pio::kNone;
  status_ = ata::kStatusDrdy | ata::kStatusDsc;
}

void PiixIde::pio_data_write(const std::uint8_t* src, unsigned size) {
  const unsigned n = std::min<unsigned>(size, kSectorSize - buf_pos_);
  std::memcpy(buf_ + buf_pos_, src, n);
  buf_pos_ += n;
  if (buf_pos_ < kSectorSize) return;
  const ssize_t w = ::pwrite(fd_, buf_, kSectorSize, static_cast<off_t>(pio_lba_ * kSectorSize));
  if (w != static_cast<ssize_t>(kSectorSize)) return abort_command(ata::kErrorUnc | ata::kErrorAbrt);
  ++pio_lba_;
  buf_pos_ = 0;
  if (--pio_left_ > 0) return complete(ata::kStatusDrdy | ata::kStatusDsc | ata::kStatusDrq);
  pio_ = Pio::kNone;
  complete(ata::kStatusDrdy | ata::kStatusDsc);
}

void PiixIde::run_dma() {
  const Dma dir = dma_;
  dma_ = Dma::kNone;
  const auto fail = [&](std::uint8_t error) {
    bm_status_ = static_cast<std::uint8_t>((bm_status_ & ~bmide::kStatusActive) |
                                           bmide::kStatusError | bmide::kStatusIrq);
    abort_command(error);
  };
  // The bus-master direction must agree with the command (PIIX3: bit 3 = write to memory).
  const bool to_memory = bm_command_ & bmide::kCmdToMemory;
  if (to_memory != (dir == Dma::kRead)) return fail(ata::kErrorAbrt);
  const std::uint64_t bytes = std::uint64_t{dma_count_} * kSectorSize;
  if (parse_prd_table(memory_, bm_prd_, bytes, &segments_) != PrdStatus::kOk)
    return fail(ata::kErrorAbrt);

  std::uint64_t offset = dma_lba_ * kSectorSize;
  std::size_t next = 0;
  while (next < segments_.size()) {
    iovec iov[64];
    int n = 0;
    std::uint64_t chunk = 0;
    for (; n < 64 && next < segments_.size(); ++n, ++next) {
      iov[n] = {segments_[next].host, segments_[next].length};
      chunk += segments_[next].length;
    }
    const ssize_t done = dir == Dma::kRead ? ::preadv(fd_, iov, n, static_cast<off_t>(offset))
                                           : ::pwritev(fd_, iov, n, static_cast<off_t>(offset));
    // Short transfers are not retried: a regular file only returns short at EOF, which the
    // LBA range check already excludes, so a short count is a host I/O error.
    if (done != static_cast<ssize_t>(chunk)) return fail(ata::kErrorUnc | ata::kErrorAbrt);
    offset += chunk;
  }
  bm_status_ = static_cast<std::uint8_t>((bm_status_ & ~bmide::kStatusActive) | bmide::kStatusIrq);
  complete(ata::kStatusDrdy | ata::kStatusDsc);
}

}  // namespace pvio::hv
