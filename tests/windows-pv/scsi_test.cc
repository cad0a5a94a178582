// xenvbd's SCSI parsing (xenvbd/scsi.cc): each CDB becomes the right block I/O, local answer
// or check condition, against a disk geometry; UNMAP parameter lists are validated.
#include "scsi.h"

#include <gtest/gtest.h>

namespace pvio::windows::xenvbd {
namespace {

Geometry disk(std::uint32_t block) {
  Geometry g;
  g.sectors512 = 1u << 20;  // 512 MiB
  g.block_size = block;
  g.physical_block_size = 4096;
  g.flush = true;
  g.discard = true;
  g.devid = 768;
  return g;
}

TEST(XenvbdScsi, Read16ConvertsLogicalBlocksToSectors) {
  const std::uint8_t cdb[16] = {0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 2, 0, 0};
  const ScsiCommand c = parse_command(cdb, 16, disk(4096), nullptr, 8192);
  EXPECT_EQ(c.kind, CommandKind::Read);
  EXPECT_EQ(c.sector, 0x10u * 8);
  EXPECT_EQ(c.nr_sectors, 16u);
  EXPECT_EQ(c.data_len, 8192u);
}

TEST(XenvbdScsi, WritePastTheEndAndOnReadOnlyDisksFail) {
  Geometry g = disk(512);
  const std::uint8_t past[10] = {0x2A, 0, 0, 0x0F, 0xFF, 0xFF, 0, 0, 2, 0};
  ScsiCommand c = parse_command(past, 10, g, nullptr, 1024);
  EXPECT_EQ(c.kind, CommandKind::Check);
  EXPECT_EQ(c.sense.asc, 0x21);
  g.read_only = true;
  const std::uint8_t ok[10] = {0x2A, 0, 0, 0, 0, 0, 0, 0, 1, 0};
  c = parse_command(ok, 10, g, nullptr, 512);
  EXPECT_EQ(c.kind, CommandKind::Check);
  EXPECT_EQ(c.sense.key, kSenseDataProtect);
}

TEST(XenvbdScsi, ShortBufferIsRejectedNotOverrun) {
  const std::uint8_t cdb[10] = {0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0};
  const ScsiCommand c = parse_command(cdb, 10, disk(512), nullptr, 512);
  EXPECT_EQ(c.kind, CommandKind::Check);
}

TEST(XenvbdScsi, ReadCapacity16ReportsBlocksExponentAndProvisioning) {
  const std::uint8_t cdb[16] = {0x9E, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0};
  std::uint8_t buf[32] = {};
  const ScsiCommand c = parse_command(cdb, 16, disk(512), buf, sizeof buf);
  ASSERT_EQ(c.kind, CommandKind::Local);
  EXPECT_EQ(c.data_len, 32u);
  EXPECT_EQ(buf[7], 0xFF);  // last LBA 0xFFFFF
  EXPECT_EQ(buf[6], 0xFF);
  EXPECT_EQ(buf[5], 0x0F);
  EXPECT_EQ(buf[10], 0x02);  // 512
  EXPECT_EQ(buf[13], 3);     // 8 logical blocks per physical block
  EXPECT_EQ(buf[14] & 0x80, 0x80);  // LBPME
}

TEST(XenvbdScsi, InquiryIsTruncatedToTheAllocationLength) {
  const std::uint8_t cdb[6] = {0x12, 0, 0, 0, 8, 0};
  std::uint8_t buf[64] = {};
  const ScsiCommand c = parse_command(cdb, 6, disk(512), buf, sizeof buf);
  ASSERT_EQ(c.kind, CommandKind::Local);
  EXPECT_EQ(c.data_len, 8u);
}

TEST(XenvbdScsi, VpdSerialNamesTheDevice) {
  const std::uint8_t cdb[6] = {0x12, 1, 0x80, 0, 64, 0};
  std::uint8_t buf[64] = {};
  const ScsiCommand c = parse_command(cdb, 6, disk(512), buf, sizeof buf);
  ASSERT_EQ(c.kind, CommandKind::Local);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(buf + 4), buf[3]), "vbd-768");
}

TEST(XenvbdScsi, SynchronizeCacheIsAFlushOnlyWithABackendCache) {
  const std::uint8_t cdb[10] = {0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  Geometry g = disk(512);
  EXPECT_EQ(parse_command(cdb, 10, g, nullptr, 0).kind, CommandKind::Flush);
  g.flush = false;
  EXPECT_EQ(parse_command(cdb, 10, g, nullptr, 0).kind, CommandKind::Local);
}

TEST(XenvbdScsi, UnmapListsAreValidated) {
  const Geometry g = disk(4096);
  std::uint8_t list[8 + 32] = {};
  list[3] = 32;
  list[8 + 7] = 1;     // LBA 1
  list[8 + 11] = 2;    // 2 blocks
  list[24 + 7] = 100;  // LBA 100
  list[24 + 11] = 0;   // 0 blocks: skipped
  UnmapRange out[kMaxUnmapDescriptors];
  Sense s;
  ASSERT_EQ(parse_unmap(list, sizeof list, g, out, kMaxUnmapDescriptors, s), 1);
  EXPECT_EQ(out[0].sector, 8u);
  EXPECT_EQ(out[0].nr_sectors, 16u);
  list[3] = 31;  // not a multiple of 16
  EXPECT_EQ(parse_unmap(list, sizeof list, g, out, kMaxUnmapDescriptors, s), -1);
  list[3] = 48;  // longer than the list
  EXPECT_EQ(parse_unmap(list, sizeof list, g, out, kMaxUnmapDescriptors, s), -1);
  list[3] = 16;
  list[8 + 2] = 0xFF;  // beyond the disk
  EXPECT_EQ(parse_unmap(list, sizeof list, g, out, kMaxUnmapDescriptors, s), -1);
  EXPECT_EQ(s.asc, 0x21);
}

TEST(XenvbdScsi, UnknownOpcodesAndShortCdbsFail) {
  const std::uint8_t cdb[16] = {0xC1};
  EXPECT_EQ(parse_command(cdb, 16, disk(512), nullptr, 0).kind, CommandKind::Check);
  const std::uint8_t rd16[16] = {0x88};
  EXPECT_EQ(parse_command(rd16, 10, disk(512), nullptr, 0).kind, CommandKind::Check);
}

}  // namespace
}  // namespace pvio::windows::xenvbd
