// PRD table parsing: every entry and buffer must lie in guest RAM and follow the PIIX rules.
#include <gtest/gtest.h>

#include "guest_ram.h"
#include "pvio/hypervisor/devices/ide.h"

namespace pvio::hv {
namespace {

using testing::GuestRam;
constexpr std::uint32_t kEot = bmide::kPrdEot;
constexpr std::uint64_t kRamSize = 1 << 20;
constexpr std::uint32_t kTable = 0x1000;

TEST(PrdTable, SingleEntryResolvesToHostMemory) {
  GuestRam ram(kRamSize);
  ram.put_prd(kTable, 0, 0x20000, kEot | 4096);
  std::vector<PrdSegment> segs;
  ASSERT_EQ(parse_prd_table(ram.memory, kTable, 4096, &segs), PrdStatus::kOk);
  ASSERT_EQ(segs.size(), 1u);
  EXPECT_EQ(segs[0].host, ram.base + 0x20000);
  EXPECT_EQ(segs[0].length, 4096u);
}

TEST(PrdTable, ScatterListStopsAtTransferLengthAndZeroMeans64K) {
  GuestRam ram(kRamSize);
  ram.put_prd(kTable, 0, 0x30000, 0);  // 0 = 64 KiB
  ram.put_prd(kTable, 1, 0x50000, 1024);
  ram.put_prd(kTable, 2, 0x60000, kEot | 4096);
  std::vector<PrdSegment> segs;
  ASSERT_EQ(parse_prd_table(ram.memory, kTable, 0x10000 + 1024 + 512, &segs), PrdStatus::kOk);
  ASSERT_EQ(segs.size(), 3u);
  EXPECT_EQ(segs[0].length, 0x10000u);
  EXPECT_EQ(segs[1].length, 1024u);
  EXPECT_EQ(segs[2].length, 512u);  // only what the transfer needs
  EXPECT_EQ(segs[2].host, ram.base + 0x60000);
}

TEST(PrdTable, TableOutsideOrStraddlingRamIsRefused) {
  GuestRam ram(kRamSize);
  std::vector<PrdSegment> segs;
  EXPECT_EQ(parse_prd_table(ram.memory, kRamSize + 0x1000, 512, &segs), PrdStatus::kTableOutsideRam);
  EXPECT_EQ(parse_prd_table(ram.memory, kRamSize - 4, 512, &segs), PrdStatus::kTableOutsideRam);
  EXPECT_EQ(parse_prd_table(ram.memory, 0xfffffffc, 512, &segs), PrdStatus::kTableOutsideRam);
}

TEST(PrdTable, BufferOutsideOrStraddlingRamIsRefused) {
  GuestRam ram(kRamSize);
  std::vector<PrdSegment> segs;
  ram.put_prd(kTable, 0, 0xfff00000, kEot | 4096);
  EXPECT_EQ(parse_prd_table(ram.memory, kTable, 4096, &segs), PrdStatus::kBufferOutsideRam);
  ram.put_prd(kTable, 0, kRamSize, kEot | 512);
  EXPECT_EQ(parse_prd_table(ram.memory, kTable, 512, &segs), PrdStatus::kBufferOutsideRam);
  // The second entry of a valid-looking list points past RAM.
  ram.put_prd(kTable, 0, 0x20000, 512);
  ram.put_prd(kTable, 1, kRamSize + 0x10000, kEot | 512);
  EXPECT_EQ(parse_prd_table(ram.memory, kTable, 1024, &segs), PrdStatus::kBufferOutsideRam);
}

TEST(PrdTable, MalformedEntriesAreRefused) {
  GuestRam ram(kRamSize);
  std::vector<PrdSegment> segs;
  ram.put_prd(kTable, 0, 0x20001, kEot | 512);
  EXPECT_EQ(parse_prd_table(ram.memory, kTable, 512, &segs), PrdStatus::kOddAddressOrCount);
  ram.put_prd(kTable, 0, 0x20000, kEot | 511);
  EXPECT_EQ(parse_prd_table(ram.memory, kTable, 512, &segs), PrdStatus::kOddAddressOrCount);
  ram.put_prd(kTable, 0, 0x2f000, kEot | 0x2000);  // crosses 0x30000
  EXPECT_EQ(parse_prd_table(ram.memory, kTable, 0x2000, &segs), PrdStatus::kBufferCrosses64K);
  ram.put_prd(kTable, 0, 0x20000, kEot | 512);  // EOT before 4 KiB are covered
  EXPECT_EQ(parse_prd_table(ram.memory, kTable, 4096, &segs), PrdStatus::kTooShort);
}

TEST(PrdTable, TableWithoutEotMayNotRunPastItsWindow) {
  GuestRam ram(kRamSize);
  // 8192 entries of 2 bytes fill the whole 64 KiB window at 0x40000 and cover only 16 KiB.
  for (unsigned i = 0; i < 8192; ++i) ram.put_prd(0x40000, i, 0x20000, 2);
  std::vector<PrdSegment> segs;
  EXPECT_EQ(parse_prd_table(ram.memory, 0x40000, 0x10000, &segs), PrdStatus::kNoEndOfTable);
  // A table starting at the window's last entry may not continue into the next window.
  ram.put_prd(0x4fff8, 0, 0x20000, 512);
  ram.put_prd(0x50000, 0, 0x20000, kEot | 512);
  EXPECT_EQ(parse_prd_table(ram.memory, 0x4fff8, 1024, &segs), PrdStatus::kNoEndOfTable);
}

}  // namespace
}  // namespace pvio::hv
