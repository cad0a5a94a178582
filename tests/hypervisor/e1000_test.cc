// The e1000 model driven through the I/O bus exactly as vCPU exits drive it, without KVM:
// PCI/EEPROM/PHY, TX and RX rings, interrupt moderation, TSO, and hostile descriptor input.
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "guest_ram.h"
#include "pvio/hypervisor/devices/e1000.h"

namespace pvio::hv {
namespace {

using testing::GuestRam;
using namespace e1000_reg;
using namespace e1000_bit;
constexpr std::uint64_t kMmio = 0xfebc0000;
constexpr std::uint16_t kIo = 0xc040;
constexpr std::uint64_t kTxRing = 0x10000, kRxRing = 0x11000, kBuf = 0x20000;

class E1000Test : public ::testing::Test {
 protected:
  void SetUp() override {
    E1000::Config config;
    auto nic = std::make_unique<E1000>(
        ram_.memory, config,
        [this](unsigned gsi, bool level) {
          gsi_ = gsi;
          level_ = level;
        },
        [this](std::span<const std::uint8_t> f) { sent_.emplace_back(f.begin(), f.end()); },
        [this] { return now_; });
    nic_ = nic.get();
    ASSERT_TRUE(bus_.map_pio(0xcf8, 8, &pci_, 0));
    ASSERT_TRUE(pci_.add(3, 0, std::move(nic), &bus_));
  }

  void wr(std::uint32_t reg, std::uint32_t v) {
    std::uint8_t d[4];
    std::memcpy(d, &v, 4);
    bus_.handle_mmio(kMmio + reg, true, 4, d);
  }
  std::uint32_t rd(std::uint32_t reg) {
    std::uint8_t d[4] = {};
    bus_.handle_mmio(kMmio + reg, false, 4, d);
    std::uint32_t v;
    std::memcpy(&v, d, 4);
    return v;
  }
  void out32(std::uint16_t port, std::uint32_t v) {
    std::uint8_t d[4];
    std::memcpy(d, &v, 4);
    bus_.handle_pio(port, true, 4, 1, d);
  }
  std::uint32_t in32(std::uint16_t port) {
    std::uint8_t d[4] = {};
    bus_.handle_pio(port, false, 4, 1, d);
    std::uint32_t v;
    std::memcpy(&v, d, 4);
    return v;
  }
  std::uint32_t config(unsigned reg) {
    out32(0xcf8, 0x80000000u | (3 << 11) | reg);
    return in32(0xcfc);
  }
  E1000Desc* desc(std::uint64_t ring, unsigned i) {
    return reinterpret_cast<E1000Desc*>(ram_.base + ring + 16 * i);
  }
  void tx_ring(std::uint32_t entries = 8) {
    wr(kTdbal, kTxRing);
    wr(kTdbah, 0);
    wr(kTdlen, entries * 16);
    wr(kTdh, 0);
    wr(kTdt, 0);
    wr(kTctl, kTctlEn);
  }
  void rx_ring(std::uint32_t entries = 8, std::uint32_t filled = 7) {
    for (unsigned i = 0; i < entries; ++i) *desc(kRxRing, i) = {kBuf + 0x1000 * i, 0, 0};
    wr(kRdbal, kRxRing);
    wr(kRdbah, 0);
    wr(kRdlen, entries * 16);
    wr(kRdh, 0);
    wr(kRdt, filled);
    wr(kRctl, kRctlEn | kRctlBam | kRctlSecrc);  // 2 KiB buffers, FCS stripped
  }
  // A frame addressed to the NIC's MAC with a recognisable payload.
  std::vector<std::uint8_t> frame(std::size_t len, std::uint8_t seed) {
    std::vector<std::uint8_t> f(len);
    std::memcpy(f.data(), nic_->mac().data(), 6);
    for (std::size_t i = 6; i < len; ++i) f[i] = static_cast<std::uint8_t>(seed + i);
    return f;
  }

  GuestRam ram_{1 << 20};
  IoBus bus_;
  PciBus pci_;
  E1000* nic_ = nullptr;
  std::vector<std::vector<std::uint8_t>> sent_;
  std::uint64_t now_ = 1000;
  unsigned gsi_ = 0;
  bool level_ = false;
};

TEST_F(E1000Test, PciIdentityAndBars) {
  EXPECT_EQ(config(0x00), 0x100e8086u);
  EXPECT_EQ(config(0x08) >> 8, 0x020000u);
  EXPECT_EQ(config(0x10), kMmio);
  out32(0xcfc, 0xffffffffu);
  EXPECT_EQ(config(0x10), 0xfffe0000u);  // 128 KiB memory BAR
  out32(0xcf8, 0x80000000u | (3 << 11) | 0x10);
  out32(0xcfc, kMmio);
  EXPECT_EQ(config(0x14), kIo | 1u);
  EXPECT_EQ(config(0x3c) & 0xffff, 0x0110u);  // INTA#, line 16
  EXPECT_EQ(rd(kStatus) & kStatusLu, kStatusLu);
}

TEST_F(E1000Test, EepromHoldsMacAndValidChecksum) {
  std::uint16_t words[64];
  std::uint16_t sum = 0;
  for (unsigned i = 0; i < 64; ++i) {
    wr(kEerd, (i << 8) | kEerdStart);
    const std::uint32_t v = rd(kEerd);
    ASSERT_TRUE(v & kEerdDone);
    words[i] = static_cast<std::uint16_t>(v >> 16);
    sum = static_cast<std::uint16_t>(sum + words[i]);
  }
  EXPECT_EQ(sum, 0xbaba);
  const auto& mac = nic_->mac();
  EXPECT_EQ(words[0], mac[0] | (mac[1] << 8));
  EXPECT_EQ(words[2], mac[4] | (mac[5] << 8));
  // The same register through the I/O BAR (IOADDR/IODATA), one more exit each.
  out32(kIo, kEerd);
  out32(kIo + 4, (1u << 8) | kEerdStart);
  EXPECT_EQ(in32(kIo + 4) >> 16, words[1]);
  EXPECT_EQ(rd(kRal0) & 0xff, mac[0]);
  EXPECT_TRUE(rd(kRah0) & kRahAv);
}

TEST_F(E1000Test, MdicReadsPhyAndRejectsOtherAddresses) {
  wr(kMdic, kMdicOpRead | (1u << 21) | (2u << 16));
  std::uint32_t v = rd(kMdic);
  EXPECT_TRUE(v & kMdicReady);
  EXPECT_EQ(v & 0xffff, 0x0141u);
  wr(kMdic, kMdicOpRead | (1u << 21) | (1u << 16));
  EXPECT_TRUE(rd(kMdic) & 0x4);  // link status
  wr(kMdic, kMdicOpRead | (5u << 21) | (2u << 16));
  EXPECT_TRUE(rd(kMdic) & kMdicError);
}

TEST_F(E1000Test, TransmitsFrameWritesBackAndInterrupts) {
  tx_ring();
  wr(kIms, kIcrTxdw);
  const auto f = frame(100, 1);
  std::memcpy(ram_.base + kBuf, f.data(), f.size());
  *desc(kTxRing, 0) = {kBuf, 100u | (std::uint32_t{kTxCmdEop | kTxCmdRs | kTxCmdIfcs} << 24), 0};
  wr(kTdt, 1);
  ASSERT_EQ(sent_.size(), 1u);
  EXPECT_EQ(sent_[0], f);
  EXPECT_TRUE(desc(kTxRing, 0)->upper & kDescDd);
  EXPECT_EQ(rd(kTdh), 1u);
  EXPECT_TRUE(level_);
  EXPECT_EQ(gsi_, 16u);
  EXPECT_TRUE(rd(kIcr) & kIcrTxdw);
  EXPECT_FALSE(level_);          // read-to-clear deasserts the line
  EXPECT_EQ(rd(kIcr), 0u);
  EXPECT_EQ(rd(kGptc), 1u);
  EXPECT_EQ(rd(kGotcl), 100u);
  EXPECT_EQ(rd(kGptc), 0u);      // statistics clear on read
}

TEST_F(E1000Test, ReceivesFrameIntoRingAndFiltersOthers) {
  rx_ring();
  wr(kIms, kIcrRxt0);
  const auto f = frame(200, 7);
  ASSERT_TRUE(nic_->receive(f));
  const E1000Desc* d = desc(kRxRing, 0);
  EXPECT_EQ(d->lower & 0xffff, 200u);
  EXPECT_EQ(d->upper & 0xff, kDescDd | kRxEop | kRxIxsm);
  EXPECT_EQ(std::memcmp(ram_.base + kBuf, f.data(), f.size()), 0);
  EXPECT_EQ(rd(kRdh), 1u);
  EXPECT_TRUE(level_);
  EXPECT_TRUE(rd(kIcr) & kIcrRxt0);
  auto other = f;
  other[5] ^= 1;  // another unicast address
  EXPECT_FALSE(nic_->receive(other));
  EXPECT_EQ(rd(kRdh), 1u);
  std::vector<std::uint8_t> bcast(64, 0xff);
  EXPECT_TRUE(nic_->receive(bcast));
  EXPECT_EQ(rd(kGprc), 2u);
  EXPECT_EQ(rd(kBprc), 1u);
}

TEST_F(E1000Test, KeepsFcsUnlessStrippedAndSpansBuffers) {
  rx_ring();
  wr(kRctl, kRctlEn | kRctlLpe | (3u << 16));  // 256-byte buffers, FCS kept
  const auto f = frame(600, 3);
  ASSERT_TRUE(nic_->receive(f));
  EXPECT_EQ(rd(kRdh), 3u);  // 604 bytes in 256-byte buffers
  EXPECT_EQ(desc(kRxRing, 0)->upper & kRxEop, 0u);
  EXPECT_EQ(desc(kRxRing, 2)->lower & 0xffff, 604u - 512u);
  EXPECT_TRUE(desc(kRxRing, 2)->upper & kRxEop);
  EXPECT_EQ(std::memcmp(ram_.base + kBuf + 0x2000, f.data() + 512, 88), 0);
}

TEST_F(E1000Test, NoDescriptorsDropsAndCounts) {
  rx_ring(8, 0);  // head == tail: nothing given to the device
  EXPECT_FALSE(nic_->receive(frame(64, 1)));
  EXPECT_EQ(nic_->stats().rx_no_buffer, 1u);
  EXPECT_EQ(rd(kRnbc), 1u);
  EXPECT_EQ(rd(kRdh), 0u);
}

TEST_F(E1000Test, ReceiveDelayTimerAndItrModerateInterrupts) {
  rx_ring();
  wr(kIms, kIcrRxt0);
  wr(kRdtr, 10);  // 10.24 us after the last frame
  wr(kRadv, 15);  // but no later than 15.36 us after the first
  ASSERT_TRUE(nic_->receive(frame(64, 1)));
  EXPECT_FALSE(level_);
  now_ += 8000;
  ASSERT_TRUE(nic_->receive(frame(64, 2)));
  EXPECT_NE(nic_->service(now_), 0u);
  EXPECT_FALSE(level_);
  now_ = 1000 + 15 * 1024;  // the absolute timer expires first
  EXPECT_EQ(nic_->service(now_), 0u);
  EXPECT_TRUE(level_);
  EXPECT_TRUE(rd(kIcr) & kIcrRxt0);
  EXPECT_FALSE(level_);

  // ITR: the next assertion waits for 100 * 256 ns after the previous one.
  wr(kRdtr, 0);
  wr(kRadv, 0);
  wr(kItr, 100);
  wr(kIcs, kIcrRxt0);
  EXPECT_TRUE(level_);
  rd(kIcr);
  now_ += 1000;
  ASSERT_TRUE(nic_->receive(frame(64, 3)));
  EXPECT_FALSE(level_);
  const std::uint64_t due = nic_->service(now_);
  EXPECT_GT(due, now_);
  nic_->service(due);
  EXPECT_TRUE(level_);
}

// A TCP/IPv4 packet of 14+20+20 header bytes and `payload` bytes, TCP checksum seeded with the
// pseudo-header sum without length as a TSO driver does.
std::vector<std::uint8_t> tcp_packet(const E1000::Mac& dst, std::size_t payload) {
  std::vector<std::uint8_t> p(54 + payload);
  std::memcpy(p.data(), dst.data(), 6);
  p[12] = 0x08;
  std::uint8_t* ip = &p[14];
  ip[0] = 0x45;
  ip[4] = 0x12, ip[5] = 0x34;  // identification
  ip[8] = 64;
  ip[9] = 6;
  const std::uint8_t addrs[8] = {10, 0, 0, 1, 10, 0, 0, 2};
  std::memcpy(ip + 12, addrs, 8);
  std::uint8_t* tcp = &p[34];
  tcp[4] = 0, tcp[5] = 0, tcp[6] = 0x10, tcp[7] = 0;  // seq 0x1000
  tcp[12] = 0x50;
  tcp[13] = 0x18 | 0x01;  // ACK PSH FIN
  std::uint32_t s = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  tcp[16] = static_cast<std::uint8_t>(s >> 8), tcp[17] = static_cast<std::uint8_t>(s);
  for (std::size_t i = 0; i < payload; ++i) p[54 + i] = static_cast<std::uint8_t>(i * 13);
  return p;
}

std::uint16_t csum(const std::uint8_t* p, std::size_t n, std::uint32_t s = 0) {
  for (std::size_t i = 0; i + 1 < n; i += 2) s += (p[i] << 8) | p[i + 1];
  if (n & 1) s += p[n - 1] << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<std::uint16_t>(s);
}

TEST_F(E1000Test, TsoSegmentsWithCorrectHeadersAndChecksums) {
  tx_ring();
  const auto p = tcp_packet(nic_->mac(), 2500);
  std::memcpy(ram_.base + kBuf, p.data(), p.size());
  // Context: IPCSS 14, IPCSO 24, TUCSS 34, TUCSO 50, TUCMD TSE|IP|TCP, HDRLEN 54, MSS 1000.
  const std::uint64_t offsets = 14 | (24u << 8) | (std::uint64_t{34} << 32) | (std::uint64_t{50} << 40);
  *desc(kTxRing, 0) = {offsets, 2500u | (std::uint32_t{kTxCmdDext | kTxCmdTse | kTucmdIp | kTucmdTcp} << 24),
                       (54u << 8) | (1000u << 16)};
  *desc(kTxRing, 1) = {kBuf, static_cast<std::uint32_t>(p.size()) | (1u << 20) |
                                 (std::uint32_t{kTxCmdDext | kTxCmdTse | kTxCmdEop | kTxCmdRs} << 24),
                       std::uint32_t{kPoptsIxsm | kPoptsTxsm} << 8};
  wr(kTdt, 2);
  ASSERT_EQ(sent_.size(), 3u);
  std::size_t offset = 0;
  for (std::size_t i = 0; i < 3; ++i) {
    const auto& s = sent_[i];
    const std::size_t n = i < 2 ? 1000 : 500;
    ASSERT_EQ(s.size(), 54 + n);
    EXPECT_EQ((s[16] << 8) | s[17], static_cast<int>(40 + n));  // IP total length
    EXPECT_EQ((s[18] << 8) | s[19], static_cast<int>(0x1234 + i));
    EXPECT_EQ(csum(&s[14], 20), 0xffff);                          // IP header checksum
    const std::uint32_t seq = (s[38] << 24) | (s[39] << 16) | (s[40] << 8) | s[41];
    EXPECT_EQ(seq, 0x1000 + offset);
    EXPECT_EQ(s[47] & 0x09, i < 2 ? 0 : 0x09);                    // FIN/PSH only on the last
    // TCP checksum over the pseudo-header (addresses, protocol, length) and the segment.
    const std::uint32_t pseudo = 0x0a00 + 0x0001 + 0x0a00 + 0x0002 + 6 + (20 + n);
    EXPECT_EQ(csum(&s[34], 20 + n, pseudo), 0xffff);
    EXPECT_EQ(std::memcmp(&s[54], &p[54 + offset], n), 0);
    offset += n;
  }
  EXPECT_EQ(nic_->stats().error_total(), 0u);
}

TEST_F(E1000Test, LegacyChecksumOffloadInsertsSum) {
  tx_ring();
  auto f = frame(80, 9);
  f[60] = f[61] = 0;
  std::memcpy(ram_.base + kBuf, f.data(), f.size());
  // CSO 60, CSS 34, IC.
  *desc(kTxRing, 0) = {kBuf, 80u | (60u << 16) | (std::uint32_t{kTxCmdEop | kTxCmdIc} << 24), 34u << 8};
  wr(kTdt, 1);
  ASSERT_EQ(sent_.size(), 1u);
  EXPECT_EQ(csum(&sent_[0][34], 80 - 34), 0xffff);
}

TEST_F(E1000Test, HostileRingGeometryIsCountedAndIgnored) {
  wr(kTdbal, kTxRing);
  wr(kTdlen, 16 * 4);  // 64 bytes: not a multiple of 128
  wr(kTctl, kTctlEn);
  wr(kTdt, 1);
  EXPECT_EQ(nic_->stats().errors[static_cast<int>(E1000Error::kRingLength)], 2u);  // TCTL, TDT
  wr(kTdlen, 128);
  wr(kTdt, 200);  // beyond the 8-entry ring
  EXPECT_EQ(nic_->stats().errors[static_cast<int>(E1000Error::kRingIndex)], 1u);
  wr(kTdbal, 0xfff00000);  // ring outside the 1 MiB of RAM
  wr(kTdt, 1);
  EXPECT_EQ(nic_->stats().errors[static_cast<int>(E1000Error::kRingOutsideRam)], 1u);
  EXPECT_TRUE(sent_.empty());

  rx_ring();
  wr(kRdlen, 100);  // masked to 0 (bits 19:7)
  EXPECT_FALSE(nic_->receive(frame(64, 1)));
  wr(kRdlen, 128);
  wr(kRdh, 9);
  EXPECT_FALSE(nic_->receive(frame(64, 1)));
  EXPECT_EQ(nic_->stats().errors[static_cast<int>(E1000Error::kRingIndex)], 2u);
  EXPECT_EQ(nic_->counters().invalid_requests, nic_->stats().error_total());
}

TEST_F(E1000Test, HostileBuffersNeverTouchHostMemoryOutsideRam) {
  tx_ring();
  // TX: a buffer past the end of RAM and one whose length runs past it.
  *desc(kTxRing, 0) = {0x100000, 64u | (std::uint32_t{kTxCmdEop | kTxCmdRs} << 24), 0};
  *desc(kTxRing, 1) = {0xfff00, 0x400u | (std::uint32_t{kTxCmdEop | kTxCmdRs} << 24), 0};
  *desc(kTxRing, 2) = {~std::uint64_t{0} - 8, 64u | (std::uint32_t{kTxCmdEop} << 24), 0};
  wr(kTdt, 3);
  EXPECT_TRUE(sent_.empty());
  EXPECT_EQ(nic_->stats().errors[static_cast<int>(E1000Error::kBufferOutsideRam)], 3u);
  EXPECT_EQ(rd(kTdh), 3u);
  EXPECT_TRUE(desc(kTxRing, 1)->upper & kDescDd);  // consumed and completed
  // RX: the descriptor's buffer is outside RAM: completed with the RX error bit, frame dropped.
  rx_ring();
  desc(kRxRing, 0)->addr = 0x200000;
  EXPECT_FALSE(nic_->receive(frame(64, 1)));
  EXPECT_EQ(desc(kRxRing, 0)->upper & 0xffff, std::uint32_t{kDescDd | kRxEop | kRxIxsm} | (kRxErrRxe << 8));
  EXPECT_EQ(rd(kRdh), 1u);
  EXPECT_TRUE(nic_->receive(frame(64, 2)));  // the next descriptor is fine
}

TEST_F(E1000Test, ChainWithoutEopIsBoundedPerDoorbellAndDroppedWhenTooLong) {
  tx_ring(8);
  for (unsigned i = 0; i < 8; ++i) *desc(kTxRing, i) = {kBuf, 4096u, 0};  // no EOP anywhere
  // The guest keeps moving the tail around the ring: each doorbell is one bounded pass.
  std::uint32_t tail = 0;
  for (int round = 0; round < 10; ++round) {
    tail = (tail + 7) % 8;
    wr(kTdt, tail);
    EXPECT_EQ(rd(kTdh), tail);
  }
  EXPECT_TRUE(sent_.empty());
  EXPECT_GE(nic_->stats().errors[static_cast<int>(E1000Error::kTxTooLong)], 1u);
  // EOP ends the dropped packet; the next packet goes out whole.
  *desc(kTxRing, tail) = {kBuf, 64u | (std::uint32_t{kTxCmdEop} << 24), 0};
  *desc(kTxRing, (tail + 1) % 8) = {kBuf, 64u | (std::uint32_t{kTxCmdEop} << 24), 0};
  wr(kTdt, (tail + 2) % 8);
  ASSERT_EQ(sent_.size(), 1u);
  EXPECT_EQ(sent_[0].size(), 64u);
}

TEST_F(E1000Test, TsoWithBadContextIsDropped) {
  tx_ring();
  const auto p = tcp_packet(nic_->mac(), 100);
  std::memcpy(ram_.base + kBuf, p.data(), p.size());
  // HDRLEN beyond the packet and MSS 0.
  *desc(kTxRing, 0) = {14 | (24u << 8) | (std::uint64_t{34} << 32) | (std::uint64_t{50} << 40),
                       100u | (std::uint32_t{kTxCmdDext | kTxCmdTse | kTucmdIp | kTucmdTcp} << 24),
                       (200u << 8)};
  *desc(kTxRing, 1) = {kBuf, static_cast<std::uint32_t>(p.size()) | (1u << 20) |
                                 (std::uint32_t{kTxCmdDext | kTxCmdTse | kTxCmdEop} << 24), 0};
  wr(kTdt, 2);
  EXPECT_TRUE(sent_.empty());
  EXPECT_EQ(nic_->stats().errors[static_cast<int>(E1000Error::kTxBadContext)], 1u);
}

TEST_F(E1000Test, EveryRegisterAccessIsOneExitOnTheDevice) {
  const std::uint64_t before = nic_->counters().mmio_exits;
  rd(kStatus);
  wr(kIms, 0);
  EXPECT_EQ(nic_->counters().mmio_exits, before + 2);
  out32(kIo, kStatus);
  in32(kIo + 4);
  EXPECT_EQ(nic_->counters().pio_exits, 2u);
}

}  // namespace
}  // namespace pvio::hv
