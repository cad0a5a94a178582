// Intel 82540EM (e1000) model: registers, EEPROM/PHY, interrupt moderation, legacy descriptor
// rings with bounded work per doorbell, checksum offload and TSO.
#include "pvio/hypervisor/devices/e1000.h"

#include <algorithm>
#include <cstring>

namespace pvio::hv {

namespace {
using namespace e1000_reg;
using namespace e1000_bit;

constexpr int kRegionIo = 101;  // BAR1 (PciFunction tags BAR i as 100 + i); BAR0 is 100
constexpr std::uint64_t kUsPerUnit = 1024;     // RDTR/RADV/TIDV/TADV unit: 1.024 us
constexpr std::uint64_t kItrUnitNs = 256;      // ITR unit: 256 ns
constexpr std::uint32_t kDtypShift = 20, kDtypMask = 0xfu << kDtypShift;
constexpr std::uint32_t kDtypContext = 0, kDtypData = 1;

// PHY registers (IEEE 802.3 clause 22) of the 82540EM's integrated M88E1011 PHY.
constexpr unsigned kPhyCtrl = 0, kPhyStatus = 1, kPhyId1 = 2, kPhyId2 = 3, kPhyAutonegAdv = 4,
                   kPhyLpAbility = 5, kPhy1000tCtrl = 9, kPhy1000tStatus = 10,
                   kPhySpecCtrl = 16, kPhySpecStatus = 17;
constexpr std::uint16_t kPhyCtrlReset = 0x8000, kPhyCtrlRestartAn = 0x0200;
constexpr unsigned kPhyAddress = 1;

std::uint32_t sum16(const std::uint8_t* p, std::size_t n, std::uint32_t sum = 0) {
  for (std::size_t i = 0; i + 1 < n; i += 2) sum += (std::uint32_t{p[i]} << 8) | p[i + 1];
  if (n & 1) sum += std::uint32_t{p[n - 1]} << 8;
  return sum;
}
std::uint16_t fold(std::uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(sum);
}
void put_be16(std::uint8_t* p, std::uint16_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
std::uint16_t get_be16(const std::uint8_t* p) {
  return static_cast<std::uint16_t>((p[0] << 8) | p[1]);
}
std::uint32_t get_be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}
void put_be32(std::uint8_t* p, std::uint32_t v) {
  put_be16(p, static_cast<std::uint16_t>(v >> 16));
  put_be16(p + 2, static_cast<std::uint16_t>(v));
}

// IEEE 802.3 FCS (CRC-32, reflected polynomial 0xEDB88320), appended little-endian.
std::uint32_t crc32(const std::uint8_t* p, std::size_t n) {
  std::uint32_t crc = ~0u;
  for (std::size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
  }
  return ~crc;
}

std::uint64_t earliest(std::uint64_t a, std::uint64_t b) {
  if (a == 0) return b;
  if (b == 0) return a;
  return std::min(a, b);
}
}  // namespace

std::string_view to_string(E1000Error e) {
  switch (e) {
    case E1000Error::kRingLength: return "ring length not a nonzero multiple of 128";
    case E1000Error::kRingOutsideRam: return "descriptor ring outside guest RAM";
    case E1000Error::kRingIndex: return "head or tail beyond the ring";
    case E1000Error::kBufferOutsideRam: return "packet buffer outside guest RAM";
    case E1000Error::kTxTooLong: return "TX packet longer than the largest frame";
    case E1000Error::kTxBadContext: return "TX offload offsets outside the packet";
    case E1000Error::kRxBufferTooSmall: return "RX frame needs more descriptors than the ring has";
    case E1000Error::kCount: break;
  }
  return "unknown";
}

E1000::E1000(const GuestMemory& memory, const Config& config, IrqFn irq, TransmitFn transmit,
             ClockFn clock)
    : PciFunction(PciId{0x8086, 0x100e, 0x02, 0x00, 0x00, 0x03}),  // Ethernet controller
      Device("e1000"),
      memory_(memory),
      irq_(std::move(irq)),
      transmit_(std::move(transmit)),
      clock_(std::move(clock)),
      gsi_(config.gsi),
      mac_(config.mac),
      regs_(kBar0Size / 4, 0) {
  add_mmio_bar(0, kBar0Size, config.mmio_base);
  add_io_bar(1, kIoBarSize, config.io_base);
  set_subsystem(0x8086, 0x001e);
  set_interrupt(static_cast<std::uint8_t>(config.gsi), 1);  // INTA#
  set16(pci_reg::kCommand, pci_reg::kCommandIo | pci_reg::kCommandMemory | pci_reg::kCommandMaster);

  // EEPROM: MAC in words 0-2 (little-endian byte pairs), device and vendor IDs in 0x0d/0x0e,
  // and word 0x3f chosen so that words 0x00-0x3f sum to 0xBABA (manual 5.6.1).
  for (unsigned i = 0; i < 3; ++i)
    eeprom_[i] = static_cast<std::uint16_t>(mac_[2 * i] | (mac_[2 * i + 1] << 8));
  eeprom_[0x0a] = 0x4408;  // initialization control 1: valid signature (bits 15:14 = 01b)
  eeprom_[0x0b] = 0x001e;  // subsystem ID
  eeprom_[0x0c] = 0x8086;  // subsystem vendor
  eeprom_[0x0d] = 0x100e;
  eeprom_[0x0e] = 0x8086;
  std::uint16_t sum = 0;
  for (unsigned i = 0; i < 0x3f; ++i) sum = static_cast<std::uint16_t>(sum + eeprom_[i]);
  eeprom_[0x3f] = static_cast<std::uint16_t>(0xbaba - sum);
  tx_.data.reserve(kMaxTsoPacket);
  seg_.reserve(kMaxFrame + 4);
  reset();
}

void E1000::error(E1000Error e) {
  ++stats_.errors[static_cast<std::size_t>(e)];
  ++counters_.invalid_requests;
}

void E1000::phy_reset() {
  phy_.fill(0);
  phy_[kPhyCtrl] = 0x1140;                 // autonegotiation enabled, full duplex, 1000 Mb/s
  phy_[kPhyStatus] = 0x796d;               // link up, autonegotiation complete
  phy_[kPhyId1] = 0x0141;                  // Marvell OUI
  phy_[kPhyId2] = 0x0c20;                  // M88E1011
  phy_[kPhyAutonegAdv] = 0x0de1;
  phy_[kPhyLpAbility] = 0x45e1;            // partner: 10/100 full/half, acknowledged
  phy_[kPhy1000tCtrl] = 0x0e00;
  phy_[kPhy1000tStatus] = 0x3c00;          // partner 1000 full/half, local and remote OK
  phy_[kPhySpecCtrl] = 0x0060;
  phy_[kPhySpecStatus] = 0xac00;           // 1000 Mb/s, full duplex, resolved, link
}

void E1000::reset() {
  std::fill(regs_.begin(), regs_.end(), 0);
  r(kCtrl) = kCtrlSlu | (1u << 0);  // full duplex, link up forced as firmware leaves it
  r(kStatus) = kStatusFd | kStatusLu | kStatusSpeed1000;
  r(kEecd) = kEecdPres;
  r(kRal0) = std::uint32_t{mac_[0]} | (std::uint32_t{mac_[1]} << 8) |
             (std::uint32_t{mac_[2]} << 16) | (std::uint32_t{mac_[3]} << 24);
  r(kRah0) = std::uint32_t{mac_[4]} | (std::uint32_t{mac_[5]} << 8) | kRahAv;
  r(kMdic) = kMdicReady;
  phy_reset();
  ctx_ = {};
  tx_.data.clear();
  tx_.dropping = tx_.started = false;
  itr_next_ = itr_wait_ = rx_delay_ = rx_absolute_ = tx_delay_ = tx_absolute_ = 0;
  if (irq_level_ && irq_) irq_(gsi_, false);
  irq_level_ = false;
}

// ---- register access -------------------------------------------------------------------------

std::uint64_t E1000::mmio_read(int, std::uint64_t offset, unsigned size) {
  if (offset >= kBar0Size) return ~std::uint64_t{0};
  const auto reg = static_cast<std::uint32_t>(offset & ~std::uint64_t{3});
  const std::uint64_t v = reg_read(reg) >> (8 * (offset & 3));
  return size >= 4 ? v : v & ((std::uint64_t{1} << (8 * size)) - 1);
}

void E1000::mmio_write(int, std::uint64_t offset, unsigned size, std::uint64_t value) {
  // The manual requires 32-bit accesses; an 8-byte store is two register writes, narrower
  // stores are ignored.
  if (offset >= kBar0Size || (offset & 3)) return;
  const auto reg = static_cast<std::uint32_t>(offset);
  if (size == 4) {
    reg_write(reg, static_cast<std::uint32_t>(value));
  } else if (size == 8 && reg + 4 < kBar0Size) {
    reg_write(reg, static_cast<std::uint32_t>(value));
    reg_write(reg + 4, static_cast<std::uint32_t>(value >> 32));
  }
}

// BAR1: IOADDR at 0 selects a register, IODATA at 4 reads or writes it (manual 13.2).
std::uint32_t E1000::pio_read(int region, std::uint16_t offset, unsigned size) {
  if (region != kRegionIo || size != 4) return ~0u;
  if (offset == 0) return ioaddr_;
  if (offset == 4 && ioaddr_ < kBar0Size) return reg_read(ioaddr_ & ~3u);
  return ~0u;
}

void E1000::pio_write(int region, std::uint16_t offset, unsigned size, std::uint32_t value) {
  if (region != kRegionIo || size != 4) return;
  if (offset == 0) ioaddr_ = value & (kBar0Size - 1) & ~3u;
  if (offset == 4) reg_write(ioaddr_, value);
}

std::uint32_t E1000::reg_read(std::uint32_t reg) {
  if (reg == kIcr) {
    const std::uint32_t v = r(kIcr);
    r(kIcr) = 0;  // read to clear (82540EM)
    update_irq();
    return v;
  }
  if (reg >= kStatsFirst && reg < kStatsEnd) {
    const std::uint32_t v = r(reg);
    r(reg) = 0;  // statistics clear on read
    return v;
  }
  if (reg == kImc || reg == kIcs) return 0;  // write-only
  return r(reg);
}

void E1000::reg_write(std::uint32_t reg, std::uint32_t value) {
  switch (reg) {
    case kCtrl:
      if (value & kCtrlRst) return reset();
      if (value & kCtrlPhyRst) phy_reset();
      r(kCtrl) = value & ~(kCtrlRst | kCtrlPhyRst);
      return;
    case kStatus: return;  // read-only
    case kEerd: return eerd_write(value);
    case kEecd: r(kEecd) = (value & ~kEecdPres) | kEecdPres; return;
    case kMdic: return mdic_write(value);
    case kIcr: r(kIcr) &= ~value; return update_irq();  // write 1 to clear
    case kIcs: return set_cause(value);
    case kIms: r(kIms) |= value; return update_irq();
    case kImc: r(kIms) &= ~value; return update_irq();
    case kItr: r(kItr) = value & 0xffff; return;
    case kRctl: r(kRctl) = value; return;
    case kTctl:
      r(kTctl) = value;
      if (value & kTctlEn) transmit_ring();
      return;
    case kRdlen:
    case kTdlen: r(reg) = value & 0xfff80; return;  // bits 19:7, 128-byte granularity
    case kRdbal:
    case kTdbal: r(reg) = value & ~0xfu; return;      // 16-byte aligned
    case kRdh:
    case kRdt:
    case kTdh:
      r(reg) = value & 0xffff;
      return;
    case kTdt:
      r(kTdt) = value & 0xffff;
      if (r(kTctl) & kTctlEn) transmit_ring();
      return;
    case kRdtr:
      r(kRdtr) = value & 0xffff;
      // FPD: flush the pending receive-timer interrupt now.
      if ((value & kRdtrFpd) && (rx_delay_ || rx_absolute_)) {
        rx_delay_ = rx_absolute_ = 0;
        set_cause(kIcrRxt0);
      }
      return;
    case kRadv:
    case kTidv:
    case kTadv: r(reg) = value & 0xffff; return;
  }
  if (reg >= kStatsFirst && reg < kStatsEnd) return;  // statistics are read-only
  r(reg) = value;  // RAL/RAH, MTA, RXCSUM, TIPG, flow control...: stored as written
}

void E1000::eerd_write(std::uint32_t value) {
  if (!(value & kEerdStart)) return;
  const unsigned addr = (value >> 8) & 0xff;
  const std::uint16_t data = addr < eeprom_.size() ? eeprom_[addr] : 0xffff;
  r(kEerd) = (value & 0xff00) | kEerdDone | (std::uint32_t{data} << 16);
}

void E1000::mdic_write(std::uint32_t value) {
  const unsigned reg = (value >> 16) & 0x1f;
  const unsigned phy = (value >> 21) & 0x1f;
  const std::uint32_t op = value & (3u << 26);
  std::uint32_t result = value & ~(kMdicReady | kMdicError);
  if (phy != kPhyAddress || (op != kMdicOpRead && op != kMdicOpWrite)) {
    result |= kMdicError;
  } else if (op == kMdicOpRead) {
    result = (result & ~0xffffu) | phy_[reg];
  } else {
    std::uint16_t data = static_cast<std::uint16_t>(value);
    if (reg == kPhyCtrl) {
      if (data & kPhyCtrlReset) phy_reset();
      data &= static_cast<std::uint16_t>(~(kPhyCtrlReset | kPhyCtrlRestartAn));  // self-clearing
    }
    if (reg != kPhyStatus && reg != kPhyId1 && reg != kPhyId2) phy_[reg] = data;
  }
  r(kMdic) = result | kMdicReady;  // the access completes before the guest can poll
  if (value & kMdicIntEnable) set_cause(kIcrMdac);
}

// ---- interrupts ----------------------------------------------------------------------------

void E1000::set_cause(std::uint32_t bits) {
  r(kIcr) |= bits;
  update_irq();
}

void E1000::update_irq() {
  const bool pending = (r(kIcr) & r(kIms)) != 0;
  if (!pending) {
    itr_wait_ = 0;
    if (irq_level_ && irq_) irq_(gsi_, false);
    irq_level_ = false;
    return;
  }
  if (irq_level_) return;
  // ITR: at most one assertion per ITR * 256 ns (manual 13.4.18).
  const std::uint64_t t = now();
  if (r(kItr) != 0 && itr_next_ != 0 && t < itr_next_) {
    itr_wait_ = itr_next_;
    return;
  }
  itr_wait_ = 0;
  itr_next_ = r(kItr) != 0 ? t + r(kItr) * kItrUnitNs : 0;
  irq_level_ = true;
  ++stats_.interrupts;
  if (irq_) irq_(gsi_, true);
}

void E1000::rx_interrupt() {
  // RDTR: fire RDTR units after the last frame; RADV caps the wait after the first.
  const std::uint32_t rdtr = r(kRdtr), radv = r(kRadv);
  if (rdtr == 0) return set_cause(kIcrRxt0);
  const std::uint64_t t = now();
  rx_delay_ = t + rdtr * kUsPerUnit;
  if (radv != 0 && rx_absolute_ == 0) rx_absolute_ = t + radv * kUsPerUnit;
}

void E1000::tx_interrupt(bool delayed) {
  const std::uint32_t tidv = r(kTidv), tadv = r(kTadv);
  if (!delayed || tidv == 0) {
    tx_delay_ = tx_absolute_ = 0;
    return set_cause(kIcrTxdw);
  }
  const std::uint64_t t = now();
  tx_delay_ = t + tidv * kUsPerUnit;
  if (tadv != 0 && tx_absolute_ == 0) tx_absolute_ = t + tadv * kUsPerUnit;
}

void E1000::unplugged() {
  unplugged_ = true;
  itr_wait_ = rx_delay_ = rx_absolute_ = tx_delay_ = tx_absolute_ = 0;
  if (irq_level_ && irq_) irq_(gsi_, false);
  irq_level_ = false;
}

std::uint64_t E1000::service(std::uint64_t now_ns) {
  if (unplugged_) return 0;
  if ((rx_delay_ && now_ns >= rx_delay_) || (rx_absolute_ && now_ns >= rx_absolute_)) {
    rx_delay_ = rx_absolute_ = 0;
    r(kIcr) |= kIcrRxt0;
  }
  if ((tx_delay_ && now_ns >= tx_delay_) || (tx_absolute_ && now_ns >= tx_absolute_)) {
    tx_delay_ = tx_absolute_ = 0;
    r(kIcr) |= kIcrTxdw;
  }
  if (itr_wait_ && now_ns >= itr_wait_) itr_next_ = 0;
  update_irq();
  std::uint64_t next = earliest(rx_delay_, rx_absolute_);
  next = earliest(next, earliest(tx_delay_, tx_absolute_));
  return earliest(next, itr_wait_);
}

// ---- rings ---------------------------------------------------------------------------------

bool E1000::ring(std::uint32_t base_lo, std::uint32_t len_reg, std::uint32_t head_reg,
                 std::uint32_t tail_reg, std::uint64_t* base, std::uint32_t* count) {
  const std::uint32_t len = r(len_reg);
  if (len == 0 || len % 128 != 0) {
    error(E1000Error::kRingLength);
    return false;
  }
  *base = (std::uint64_t{r(base_lo + 4)} << 32) | r(base_lo);
  *count = len / sizeof(E1000Desc);
  if (memory_.range(*base, len) == nullptr) {
    error(E1000Error::kRingOutsideRam);
    return false;
  }
  if (r(head_reg) >= *count || r(tail_reg) >= *count) {
    error(E1000Error::kRingIndex);
    return false;
  }
  return true;
}

void E1000::add_stat(std::uint32_t reg, std::uint64_t n) {
  const std::uint64_t v = std::uint64_t{r(reg)} + n;
  r(reg) = v > 0xffffffffu ? 0xffffffffu : static_cast<std::uint32_t>(v);  // saturating
}

void E1000::add_stat64(std::uint32_t low, std::uint64_t n) {
  const std::uint64_t v = ((std::uint64_t{r(low + 4)} << 32) | r(low)) + n;
  r(low) = static_cast<std::uint32_t>(v);
  r(low + 4) = static_cast<std::uint32_t>(v >> 32);
}

// ---- receive -------------------------------------------------------------------------------

std::uint32_t E1000::rx_buffer_size() const {
  const std::uint32_t bsize = (r(kRctl) >> 16) & 3;
  if (r(kRctl) & kRctlBsex) return bsize == 0 ? 2048 : 32768u >> bsize;  // 16K, 8K, 4K
  return 2048u >> bsize;                                                 // 2K, 1K, 512, 256
}

bool E1000::accept(std::span<const std::uint8_t> frame) const {
  const std::uint32_t rctl = r(kRctl);
  if (rctl & kRctlUpe) return true;
  const std::uint8_t* da = frame.data();
  if (da[0] & 1) {
    if (std::all_of(da, da + 6, [](std::uint8_t b) { return b == 0xff; }))
      return (rctl & kRctlBam) != 0;
    if (rctl & kRctlMpe) return true;
    // Multicast table: with RCTL.MO = 00, the hash is destination bits [47:36] (manual 13.5.1).
    const unsigned hash = ((da[4] >> 4) | (unsigned{da[5]} << 4)) & 0xfff;
    return (r(kMta + 4 * (hash >> 5)) >> (hash & 31)) & 1;
  }
  for (unsigned i = 0; i < 16; ++i) {
    const std::uint32_t lo = r(kRal0 + 8 * i), hi = r(kRah0 + 8 * i);
    if (!(hi & kRahAv)) continue;
    const std::uint8_t ra[6] = {static_cast<std::uint8_t>(lo), static_cast<std::uint8_t>(lo >> 8),
                                static_cast<std::uint8_t>(lo >> 16), static_cast<std::uint8_t>(lo >> 24),
                                static_cast<std::uint8_t>(hi), static_cast<std::uint8_t>(hi >> 8)};
    if (std::memcmp(ra, da, 6) == 0) return true;
  }
  return false;
}

bool E1000::receive(std::span<const std::uint8_t> in) {
  if (unplugged_) return false;  // no NIC on the bus any more
  const std::uint32_t rctl = r(kRctl);
  if (!(rctl & kRctlEn) || in.size() < 14 || in.size() > kMaxFrame || !accept(in)) {
    ++stats_.rx_filtered;
    return false;
  }
  if (in.size() > 1518 && !(rctl & kRctlLpe)) {
    add_stat(kRoc, 1);
    ++stats_.rx_filtered;
    return false;
  }
  // The wire frame: padded to the 60-byte minimum, the FCS kept unless RCTL.SECRC strips it.
  seg_.assign(in.begin(), in.end());
  if (seg_.size() < 60) seg_.resize(60, 0);
  if (!(rctl & kRctlSecrc)) {
    const std::uint32_t fcs = crc32(seg_.data(), seg_.size());
    for (int i = 0; i < 4; ++i) seg_.push_back(static_cast<std::uint8_t>(fcs >> (8 * i)));
  }

  std::uint64_t base = 0;
  std::uint32_t count = 0;
  if (!ring(kRdbal, kRdlen, kRdh, kRdt, &base, &count)) return false;
  std::uint32_t head = r(kRdh);
  const std::uint32_t tail = r(kRdt);
  // Descriptors the guest gave us: head up to (not including) tail.
  const std::uint32_t available = (tail + count - head) % count;
  const std::uint32_t bsize = rx_buffer_size();
  const std::uint32_t needed = static_cast<std::uint32_t>((seg_.size() + bsize - 1) / bsize);
  if (needed > available) {
    ++stats_.rx_no_buffer;
    add_stat(kRnbc, 1);
    add_stat(kMpc, 1);
    if (count - 1 < needed) error(E1000Error::kRxBufferTooSmall);
    set_cause(kIcrRxo);
    return false;
  }

  auto* descs = reinterpret_cast<E1000Desc*>(memory_.range(base, std::uint64_t{count} * 16));
  const std::uint32_t csum_start = r(kRxcsum) & 0xff;  // PCSS
  const std::uint16_t csum = seg_.size() > csum_start
      ? fold(sum16(seg_.data() + csum_start, seg_.size() - csum_start)) : 0;
  std::size_t done = 0;
  bool ok = true;
  for (std::uint32_t i = 0; i < needed; ++i) {
    E1000Desc d;
    std::memcpy(&d, &descs[head], sizeof(d));  // one copy: the guest may change the ring
    const std::size_t n = std::min<std::size_t>(bsize, seg_.size() - done);
    std::uint8_t* buf = memory_.range(d.addr, n);
    const bool last = i + 1 == needed;
    std::uint8_t status = kDescDd | kRxIxsm;
    std::uint8_t errors = 0;
    std::uint16_t length = static_cast<std::uint16_t>(n);
    if (buf == nullptr) {
      // Answer on the ring: this descriptor completes with the RX error bit, the frame ends.
      error(E1000Error::kBufferOutsideRam);
      errors = kRxErrRxe;
      length = 0;
      ok = false;
    } else {
      std::memcpy(buf, seg_.data() + done, n);
      done += n;
    }
    if (last || !ok) status |= kRxEop;
    d.lower = length | (std::uint32_t{last ? csum : std::uint16_t{0}} << 16);
    d.upper = status | (std::uint32_t{errors} << 8);
    std::memcpy(&descs[head], &d, sizeof(d));
    head = (head + 1) % count;
    if (!ok) break;
  }
  r(kRdh) = head;
  if (!ok) {
    rx_interrupt();
    return false;
  }
  ++stats_.rx_packets;
  stats_.rx_bytes += seg_.size();
  add_stat(kGprc, 1);
  add_stat(kTpr, 1);
  add_stat64(kGorcl, seg_.size());
  add_stat64(kTorl, seg_.size());
  if (seg_[0] & 1) add_stat(std::all_of(seg_.begin(), seg_.begin() + 6,
                                        [](std::uint8_t b) { return b == 0xff; }) ? kBprc : kMprc, 1);
  // RXDMT0 when the free descriptors fall to the RCTL.RDMTS fraction (1/2, 1/4, 1/8).
  const std::uint32_t left = (tail + count - head) % count;
  const unsigned rdmts = (rctl >> 8) & 3;
  if (rdmts < 3 && left <= (count >> (rdmts + 1))) r(kIcr) |= kIcrRxdmt0;
  rx_interrupt();
  return true;
}

// ---- transmit ------------------------------------------------------------------------------

void E1000::transmit_ring() {
  std::uint64_t base = 0;
  std::uint32_t count = 0;
  if (!ring(kTdbal, kTdlen, kTdh, kTdt, &base, &count)) return;
  auto* descs = reinterpret_cast<E1000Desc*>(memory_.range(base, std::uint64_t{count} * 16));
  std::uint32_t head = r(kTdh);
  const std::uint32_t tail = r(kTdt);
  bool written_back = false, delayed = true;
  // Bounded work per doorbell: at most one pass over the ring, whatever the descriptors say.
  for (std::uint32_t n = 0; head != tail && n < count; ++n) {
    E1000Desc d;
    std::memcpy(&d, &descs[head], sizeof(d));  // one copy: the guest may change the ring
    tx_descriptor(d);
    const auto cmd = static_cast<std::uint8_t>(d.lower >> 24);
    if (cmd & kTxCmdRs) {
      d.upper |= kDescDd;
      std::memcpy(&descs[head].upper, &d.upper, 4);
      written_back = true;
      if (!(cmd & kTxCmdIde)) delayed = false;
    }
    head = (head + 1) % count;
  }
  r(kTdh) = head;
  if (written_back) tx_interrupt(delayed);
  if (head == tail) set_cause(kIcrTxqe);
}

void E1000::tx_descriptor(const E1000Desc& d) {
  const auto cmd = static_cast<std::uint8_t>(d.lower >> 24);
  if (!(cmd & kTxCmdDext)) {  // legacy descriptor
    if (!tx_.started) {
      tx_.started = true;
      tx_.tse = false;
      tx_.popts = 0;
    }
    tx_append(d.addr, d.lower & 0xffff);
    if (cmd & kTxCmdEop) {
      // CSO/CSS come with the EOP descriptor (manual 3.3.2).
      tx_.legacy_ic = (cmd & kTxCmdIc) != 0;
      tx_.cso = static_cast<std::uint8_t>(d.lower >> 16);
      tx_.css = static_cast<std::uint8_t>(d.upper >> 8);
      tx_finish();
    }
    return;
  }
  const std::uint32_t dtyp = (d.lower & kDtypMask) >> kDtypShift;
  if (dtyp == kDtypContext) {
    // Context descriptor (manual 3.3.6): offsets in the address field, lengths in the rest.
    const std::uint64_t a = d.addr;
    ctx_.ipcss = static_cast<std::uint8_t>(a);
    ctx_.ipcso = static_cast<std::uint8_t>(a >> 8);
    ctx_.ipcse = static_cast<std::uint16_t>(a >> 16);
    ctx_.tucss = static_cast<std::uint8_t>(a >> 32);
    ctx_.tucso = static_cast<std::uint8_t>(a >> 40);
    ctx_.tucse = static_cast<std::uint16_t>(a >> 48);
    ctx_.paylen = d.lower & 0xfffff;
    ctx_.tucmd = cmd;
    ctx_.hdrlen = static_cast<std::uint8_t>(d.upper >> 8);
    ctx_.mss = static_cast<std::uint16_t>(d.upper >> 16);
    return;
  }
  if (dtyp != kDtypData) {  // reserved type: consumed and ignored, the packet is lost
    tx_.dropping = true;
    error(E1000Error::kTxBadContext);
    if (cmd & kTxCmdEop) tx_finish();
    return;
  }
  if (!tx_.started) {  // POPTS and TSE are taken from the first data descriptor
    tx_.started = true;
    tx_.tse = (cmd & kTxCmdTse) != 0;
    tx_.popts = static_cast<std::uint8_t>(d.upper >> 8);
    tx_.legacy_ic = false;
  }
  tx_append(d.addr, d.lower & 0xfffff);
  if (cmd & kTxCmdEop) tx_finish();
}

void E1000::tx_append(std::uint64_t addr, std::uint32_t length) {
  if (tx_.dropping || length == 0) return;
  const std::size_t limit = tx_.tse ? kMaxTsoPacket : kMaxFrame;
  if (tx_.data.size() + length > limit) {
    error(E1000Error::kTxTooLong);
    tx_.dropping = true;
    tx_.data.clear();
    return;
  }
  const std::uint8_t* src = memory_.range(addr, length);
  if (src == nullptr) {
    error(E1000Error::kBufferOutsideRam);
    tx_.dropping = true;
    tx_.data.clear();
    return;
  }
  tx_.data.insert(tx_.data.end(), src, src + length);
}

void E1000::tx_finish() {
  if (!tx_.dropping && !tx_.data.empty()) {
    if (tx_.tse) {
      tx_segment();
    } else if (tx_.legacy_ic) {
      // Legacy checksum: 16-bit ones' complement from CSS to the end, stored at CSO.
      std::span<std::uint8_t> f(tx_.data);
      if (tx_.css < f.size() && std::size_t{tx_.cso} + 2 <= f.size()) {
        put_be16(&f[tx_.cso], 0);
        put_be16(&f[tx_.cso], static_cast<std::uint16_t>(~fold(sum16(&f[tx_.css], f.size() - tx_.css))));
        tx_out(f);
      } else {
        error(E1000Error::kTxBadContext);
      }
    } else if (tx_checksums(tx_.data, tx_.popts & kPoptsIxsm, tx_.popts & kPoptsTxsm)) {
      tx_out(tx_.data);
    } else {
      error(E1000Error::kTxBadContext);
    }
  }
  tx_.data.clear();
  tx_.dropping = tx_.started = false;
}

// Inserts the IP header checksum and/or the TCP/UDP checksum as the context describes. The
// driver seeds the L4 checksum field with the pseudo-header sum (manual 3.3.5).
bool E1000::tx_checksums(std::span<std::uint8_t> f, bool ip, bool l4) const {
  const auto insert = [&](unsigned start, unsigned offset, unsigned end) {
    const std::size_t stop = end == 0 ? f.size() : std::size_t{end} + 1;  // *CSE is inclusive
    if (start >= stop || stop > f.size() || std::size_t{offset} + 2 > f.size()) return false;
    const std::uint32_t s = sum16(&f[start], stop - start);
    put_be16(&f[offset], static_cast<std::uint16_t>(~fold(s)));
    return true;
  };
  if (ip) {
    if (std::size_t{ctx_.ipcso} + 2 > f.size()) return false;
    put_be16(&f[ctx_.ipcso], 0);
    if (!insert(ctx_.ipcss, ctx_.ipcso, ctx_.ipcse)) return false;
  }
  if (l4 && !insert(ctx_.tucss, ctx_.tucso, ctx_.tucse)) return false;
  return true;
}

// TCP segmentation (manual 3.5): each segment is the header (hdrlen bytes) plus up to MSS bytes
// of payload; the IP total length (or IPv6 payload length), IPv4 identification, TCP sequence
// number and flags and both checksums are rewritten per segment.
void E1000::tx_segment() {
  const std::size_t hdr = ctx_.hdrlen;
  const std::vector<std::uint8_t>& p = tx_.data;
  const bool ipv4 = ctx_.tucmd & kTucmdIp, tcp = ctx_.tucmd & kTucmdTcp;
  if (ctx_.mss == 0 || hdr == 0 || hdr >= p.size() || ctx_.ipcss + 20u > hdr ||
      ctx_.tucss + (tcp ? 20u : 8u) > hdr || ctx_.tucso + 2u > hdr || ctx_.ipcso + 2u > hdr ||
      hdr + ctx_.mss > kMaxFrame) {
    error(E1000Error::kTxBadContext);
    return;
  }
  const std::size_t payload = p.size() - hdr;
  const std::uint16_t ip_id = get_be16(&p[ctx_.ipcss + 4]);
  const std::uint32_t seq = tcp ? get_be32(&p[ctx_.tucss + 4]) : 0;
  const std::uint16_t seed = get_be16(&p[ctx_.tucso]);  // pseudo-header sum without length
  for (std::size_t off = 0, i = 0; off < payload; off += ctx_.mss, ++i) {
    const std::size_t n = std::min<std::size_t>(ctx_.mss, payload - off);
    const bool last = off + n == payload;
    seg_.assign(p.begin(), p.begin() + static_cast<std::ptrdiff_t>(hdr));
    seg_.insert(seg_.end(), p.begin() + static_cast<std::ptrdiff_t>(hdr + off),
                p.begin() + static_cast<std::ptrdiff_t>(hdr + off + n));
    std::uint8_t* ip = &seg_[ctx_.ipcss];
    if (ipv4) {
      put_be16(ip + 2, static_cast<std::uint16_t>(seg_.size() - ctx_.ipcss));
      put_be16(ip + 4, static_cast<std::uint16_t>(ip_id + i));
      put_be16(&seg_[ctx_.ipcso], 0);
      const std::size_t ihl = std::size_t{ip[0] & 0x0fu} * 4;
      const std::size_t end = ctx_.ipcse ? ctx_.ipcse + 1u : ctx_.ipcss + ihl;
      if (end > hdr || end <= ctx_.ipcss) { error(E1000Error::kTxBadContext); return; }
      put_be16(&seg_[ctx_.ipcso],
               static_cast<std::uint16_t>(~fold(sum16(ip, end - ctx_.ipcss))));
    } else {
      put_be16(ip + 4, static_cast<std::uint16_t>(seg_.size() - ctx_.ipcss - 40));
    }
    std::uint8_t* l4 = &seg_[ctx_.tucss];
    const auto l4_len = static_cast<std::uint16_t>(seg_.size() - ctx_.tucss);
    if (tcp) {
      put_be32(l4 + 4, seq + static_cast<std::uint32_t>(off));
      if (!last) l4[13] &= static_cast<std::uint8_t>(~0x09);  // FIN and PSH only on the last
    } else {
      put_be16(l4 + 4, l4_len);
    }
    put_be16(&seg_[ctx_.tucso], seed);
    const std::uint32_t s = sum16(l4, seg_.size() - ctx_.tucss, l4_len);
    put_be16(&seg_[ctx_.tucso], static_cast<std::uint16_t>(~fold(s)));
    tx_out(seg_);
    add_stat(kTsctc, 1);
  }
}

void E1000::tx_out(std::span<const std::uint8_t> frame) {
  if (frame.size() < 14) {
    error(E1000Error::kTxBadContext);
    return;
  }
  ++stats_.tx_packets;
  stats_.tx_bytes += frame.size();
  add_stat(kGptc, 1);
  add_stat(kTpt, 1);
  add_stat64(kGotcl, frame.size());
  add_stat64(kTotl, frame.size());
  if (frame[0] & 1)
    add_stat(std::all_of(frame.begin(), frame.begin() + 6, [](std::uint8_t b) { return b == 0xff; })
                 ? kBptc : kMptc, 1);
  if (transmit_) transmit_(frame);
}

}  // namespace pvio::hv
