// Intel 82540EM gigabit NIC (8086:100E), the e1000 every guest OS has a driver for, modelled at
// register level as the emulated baseline next to the PV NIC: MMIO BAR0 and the IOADDR/IODATA
// I/O BAR1, EEPROM through EERD, PHY through MDIC, interrupt cause/mask with ITR, RDTR/RADV and
// TIDV/TADV moderation, legacy RX/TX descriptor rings, the TCP/IP context descriptor with
// checksum offload and TSO, and the statistics registers. Facts from Intel's PCI/PCI-X Family
// of Gigabit Ethernet Controllers Software Developer's Manual (8254x). Every register access is
// a VM exit counted on this device; the frames go to and come from a NetBackend.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <span>
#include <string_view>
#include <vector>

#include "pvio/grant_table/guest_memory.h"
#include "pvio/hypervisor/domain.h"
#include "pvio/hypervisor/pci.h"

namespace pvio::hv {

// Register offsets in BAR0 (8254x manual, table 13-2).
namespace e1000_reg {
inline constexpr std::uint32_t kCtrl = 0x0000, kStatus = 0x0008, kEecd = 0x0010,
                               kEerd = 0x0014, kCtrlExt = 0x0018, kMdic = 0x0020,
                               kIcr = 0x00c0, kItr = 0x00c4, kIcs = 0x00c8, kIms = 0x00d0,
                               kImc = 0x00d8, kRctl = 0x0100, kTctl = 0x0400,
                               kRdbal = 0x2800, kRdbah = 0x2804, kRdlen = 0x2808,
                               kRdh = 0x2810, kRdt = 0x2818, kRdtr = 0x2820, kRadv = 0x282c,
                               kTdbal = 0x3800, kTdbah = 0x3804, kTdlen = 0x3808,
                               kTdh = 0x3810, kTdt = 0x3818, kTidv = 0x3820, kTadv = 0x382c,
                               kRxcsum = 0x5000, kMta = 0x5200, kRal0 = 0x5400, kRah0 = 0x5404;
// Statistics (clear on read): 0x4000-0x40ff.
inline constexpr std::uint32_t kMpc = 0x4010, kGprc = 0x4074, kBprc = 0x4078, kMprc = 0x407c,
                               kGptc = 0x4080, kGorcl = 0x4088, kGorch = 0x408c,
                               kGotcl = 0x4090, kGotch = 0x4094, kRnbc = 0x40a0, kRoc = 0x40ac,
                               kTorl = 0x40c0, kTorh = 0x40c4, kTotl = 0x40c8, kToth = 0x40cc,
                               kTpr = 0x40d0, kTpt = 0x40d4, kMptc = 0x40f0, kBptc = 0x40f4,
                               kTsctc = 0x40f8, kTsctfc = 0x40fc;
inline constexpr std::uint32_t kStatsFirst = 0x4000, kStatsEnd = 0x4100;
inline constexpr std::uint32_t kBar0Size = 0x20000, kIoBarSize = 8;
}  // namespace e1000_reg

namespace e1000_bit {
inline constexpr std::uint32_t kCtrlSlu = 1u << 6, kCtrlRst = 1u << 26, kCtrlPhyRst = 1u << 31;
inline constexpr std::uint32_t kStatusFd = 1u << 0, kStatusLu = 1u << 1,
                               kStatusSpeed1000 = 2u << 6;
inline constexpr std::uint32_t kEerdStart = 1u << 0, kEerdDone = 1u << 4;
inline constexpr std::uint32_t kEecdPres = 1u << 8;
inline constexpr std::uint32_t kMdicOpWrite = 1u << 26, kMdicOpRead = 2u << 26,
                               kMdicReady = 1u << 28, kMdicIntEnable = 1u << 29,
                               kMdicError = 1u << 30;
inline constexpr std::uint32_t kIcrTxdw = 1u << 0, kIcrTxqe = 1u << 1, kIcrLsc = 1u << 2,
                               kIcrRxdmt0 = 1u << 4, kIcrRxo = 1u << 6, kIcrRxt0 = 1u << 7,
                               kIcrMdac = 1u << 9;
inline constexpr std::uint32_t kRctlEn = 1u << 1, kRctlUpe = 1u << 3, kRctlMpe = 1u << 4,
                               kRctlLpe = 1u << 5, kRctlBam = 1u << 15, kRctlBsex = 1u << 25,
                               kRctlSecrc = 1u << 26;
inline constexpr std::uint32_t kTctlEn = 1u << 1;
inline constexpr std::uint32_t kRahAv = 1u << 31;
inline constexpr std::uint32_t kRdtrFpd = 1u << 31;
// Descriptor bits: legacy TX CMD / extended DCMD and TUCMD share the low bits.
inline constexpr std::uint8_t kTxCmdEop = 0x01, kTxCmdIfcs = 0x02, kTxCmdIc = 0x04,
                              kTxCmdTse = 0x04, kTxCmdRs = 0x08, kTxCmdDext = 0x20,
                              kTxCmdIde = 0x80;
inline constexpr std::uint8_t kTucmdTcp = 0x01, kTucmdIp = 0x02;
inline constexpr std::uint8_t kPoptsIxsm = 0x01, kPoptsTxsm = 0x02;
inline constexpr std::uint8_t kDescDd = 0x01, kRxEop = 0x02, kRxIxsm = 0x04;
inline constexpr std::uint8_t kRxErrRxe = 0x80;
}  // namespace e1000_bit

// One 16-byte descriptor as the guest lays it out (legacy RX, legacy/extended TX).
struct E1000Desc {
  std::uint64_t addr;
  std::uint32_t lower;  // RX: length | csum << 16; TX legacy: length | cso << 16 | cmd << 24
  std::uint32_t upper;  // RX: status | errors << 8 | special << 16; TX: status | css/popts << 8
};
static_assert(sizeof(E1000Desc) == 16);

// Why the device refused something the guest handed it; each counted, the packet dropped.
enum class E1000Error {
  kRingLength,          // RDLEN/TDLEN zero or not a multiple of 128
  kRingOutsideRam,      // the descriptor ring is not in guest RAM
  kRingIndex,           // head or tail beyond the ring
  kBufferOutsideRam,    // a packet buffer is not (entirely) in guest RAM
  kTxTooLong,           // a TX packet (descriptor chain without EOP) beyond the largest frame
  kTxBadContext,        // TSO or checksum offsets outside the packet, MSS 0
  kRxBufferTooSmall,    // a received frame needs more descriptors than the ring offers
  kCount,
};
std::string_view to_string(E1000Error e);

struct E1000Stats {
  std::uint64_t tx_packets = 0, tx_bytes = 0, rx_packets = 0, rx_bytes = 0;
  std::uint64_t rx_no_buffer = 0;   // frames dropped for want of RX descriptors
  std::uint64_t rx_filtered = 0;    // frames not addressed to us (or RX disabled)
  std::uint64_t interrupts = 0;     // INTx assertions
  std::array<std::uint64_t, static_cast<std::size_t>(E1000Error::kCount)> errors{};
  std::uint64_t error_total() const {
    std::uint64_t n = 0;
    for (auto e : errors) n += e;
    return n;
  }
};

class E1000 : public PciFunction, public Device {
 public:
  using TransmitFn = std::function<void(std::span<const std::uint8_t> frame)>;
  using ClockFn = std::function<std::uint64_t()>;  // monotonic nanoseconds
  using Mac = std::array<std::uint8_t, 6>;

  struct Config {
    Mac mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
    // INTA# drives this GSI: an IOAPIC-only pin (GSIs 0-15 also reach the 8259 PIC, which an
    // IOAPIC guest leaves unprogrammed), as PCI INTx lines sit on pins 16-23.
    unsigned gsi = 16;
    std::uint32_t mmio_base = 0xfebc0000;  // BAR0
    std::uint16_t io_base = 0xc040;        // BAR1
  };

  // The largest frame either direction carries without TSO (a 16 KiB jumbo buffer).
  static constexpr std::size_t kMaxFrame = 16384;
  // A TSO packet: headers plus at most 64 KiB of payload, as the IP length field allows.
  static constexpr std::size_t kMaxTsoPacket = 65536 + 256;

  E1000(const GuestMemory& memory, const Config& config, IrqFn irq, TransmitFn transmit,
        ClockFn clock);

  std::uint64_t mmio_read(int region, std::uint64_t offset, unsigned size) override;
  void mmio_write(int region, std::uint64_t offset, unsigned size, std::uint64_t value) override;
  std::uint32_t pio_read(int region, std::uint16_t offset, unsigned size) override;
  void pio_write(int region, std::uint16_t offset, unsigned size, std::uint32_t value) override;

  // A frame from the backend (without FCS) into the RX ring. False if it was dropped. The
  // caller holds the same lock as the vCPU exits.
  bool receive(std::span<const std::uint8_t> frame);
  // Fires the moderated interrupts that are due at `now_ns`; returns the next deadline in
  // nanoseconds, or 0 if none is armed. Called by the backend thread (under the device lock).
  std::uint64_t service(std::uint64_t now_ns);

  // Unplugged (Xen's unplug protocol, PciBus::unplug): INTx goes low, the moderation timers
  // stop, and frames from the wire are dropped from now on; the BARs are already off the bus.
  void unplugged() override;
  bool is_unplugged() const { return unplugged_; }

  const E1000Stats& stats() const { return stats_; }
  const Mac& mac() const { return mac_; }
  // The EEPROM image (64 words): MAC in words 0-2, checksum word 0x3f.
  const std::array<std::uint16_t, 64>& eeprom() const { return eeprom_; }

 protected:
  Device* bar_device() override { return this; }

 private:
  struct TxContext {
    std::uint8_t ipcss = 0, ipcso = 0, tucss = 0, tucso = 0, tucmd = 0, hdrlen = 0;
    std::uint16_t ipcse = 0, tucse = 0, mss = 0;
    std::uint32_t paylen = 0;
  };
  // The packet being gathered from TX descriptors up to EOP.
  struct TxPacket {
    std::vector<std::uint8_t> data;
    bool dropping = false;     // an error was seen; discard up to EOP
    bool started = false;      // the first descriptor has been seen (POPTS/TSE come from it)
    bool tse = false;
    std::uint8_t popts = 0;
    bool legacy_ic = false;
    std::uint8_t cso = 0, css = 0;
  };

  std::uint32_t reg_read(std::uint32_t reg);
  void reg_write(std::uint32_t reg, std::uint32_t value);
  void reset();
  void phy_reset();
  void mdic_write(std::uint32_t value);
  void eerd_write(std::uint32_t value);
  void set_cause(std::uint32_t bits);
  void update_irq();
  void error(E1000Error e);
  std::uint64_t now() const { return clock_ ? clock_() : 0; }
  std::uint32_t& r(std::uint32_t reg) { return regs_[reg >> 2]; }
  std::uint32_t r(std::uint32_t reg) const { return regs_[reg >> 2]; }
  void add_stat(std::uint32_t reg, std::uint64_t n);
  void add_stat64(std::uint32_t low, std::uint64_t n);

  // Ring geometry checked on every use: the guest may rewrite RDLEN/TDLEN at any time.
  bool ring(std::uint32_t base_lo, std::uint32_t len_reg, std::uint32_t head_reg,
            std::uint32_t tail_reg, std::uint64_t* base, std::uint32_t* count);
  bool accept(std::span<const std::uint8_t> frame) const;
  std::uint32_t rx_buffer_size() const;
  void rx_interrupt();

  void transmit_ring();
  void tx_descriptor(const E1000Desc& d);
  void tx_append(std::uint64_t addr, std::uint32_t length);
  void tx_finish();
  bool tx_checksums(std::span<std::uint8_t> frame, bool ip, bool l4) const;
  void tx_segment();
  void tx_out(std::span<const std::uint8_t> frame);
  void tx_interrupt(bool delayed);

  const GuestMemory& memory_;
  IrqFn irq_;
  TransmitFn transmit_;
  ClockFn clock_;
  unsigned gsi_;
  Mac mac_;
  std::vector<std::uint32_t> regs_;
  std::array<std::uint16_t, 64> eeprom_{};
  std::array<std::uint16_t, 32> phy_{};
  std::uint32_t ioaddr_ = 0;
  bool irq_level_ = false;
  bool unplugged_ = false;
  // Moderation deadlines in ns (0: not armed).
  std::uint64_t itr_next_ = 0;       // earliest next assertion allowed by ITR
  std::uint64_t itr_wait_ = 0;       // an assertion held back by ITR fires at this time
  std::uint64_t rx_delay_ = 0, rx_absolute_ = 0;
  std::uint64_t tx_delay_ = 0, tx_absolute_ = 0;
  TxContext ctx_;
  TxPacket tx_;
  std::vector<std::uint8_t> seg_;  // one TSO segment / one frame with FCS
  E1000Stats stats_;
};

}  // namespace pvio::hv
