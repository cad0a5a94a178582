// SCSI command parsing and the locally answered commands of xenvbd (SBC-3 / SPC-4 subsets
// that Windows' disk class driver sends to a direct-access block device).
#include "scsi.h"

#include <cstring>

namespace pvio::windows::xenvbd {

namespace {

constexpr std::uint8_t kTestUnitReady = 0x00;
constexpr std::uint8_t kRequestSense = 0x03;
constexpr std::uint8_t kRead6 = 0x08;
constexpr std::uint8_t kWrite6 = 0x0A;
constexpr std::uint8_t kInquiry = 0x12;
constexpr std::uint8_t kModeSense6 = 0x1A;
constexpr std::uint8_t kStartStopUnit = 0x1B;
constexpr std::uint8_t kPreventAllowRemoval = 0x1E;
constexpr std::uint8_t kReadCapacity10 = 0x25;
constexpr std::uint8_t kRead10 = 0x28;
constexpr std::uint8_t kWrite10 = 0x2A;
constexpr std::uint8_t kVerify10 = 0x2F;
constexpr std::uint8_t kSynchronizeCache10 = 0x35;
constexpr std::uint8_t kUnmap = 0x42;
constexpr std::uint8_t kModeSense10 = 0x5A;
constexpr std::uint8_t kRead16 = 0x88;
constexpr std::uint8_t kWrite16 = 0x8A;
constexpr std::uint8_t kSynchronizeCache16 = 0x91;
constexpr std::uint8_t kServiceActionIn16 = 0x9E;
constexpr std::uint8_t kReadCapacity16Sa = 0x10;
constexpr std::uint8_t kReportLuns = 0xA0;

constexpr std::uint8_t kAscInvalidOpcode = 0x20;
constexpr std::uint8_t kAscLbaOutOfRange = 0x21;
constexpr std::uint8_t kAscInvalidFieldInCdb = 0x24;
constexpr std::uint8_t kAscInvalidFieldInParameterList = 0x26;
constexpr std::uint8_t kAscWriteProtected = 0x27;
constexpr std::uint8_t kAscParameterListLength = 0x1A;

std::uint16_t be16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] << 8 | p[1]); }
std::uint32_t be32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}
std::uint64_t be64(const std::uint8_t* p) { return std::uint64_t{be32(p)} << 32 | be32(p + 4); }
void put16(std::uint8_t* p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 8);
  p[1] = static_cast<std::uint8_t>(v);
}
void put32(std::uint8_t* p, std::uint32_t v) {
  put16(p, v >> 16);
  put16(p + 2, v & 0xFFFF);
}
void put64(std::uint8_t* p, std::uint64_t v) {
  put32(p, static_cast<std::uint32_t>(v >> 32));
  put32(p + 4, static_cast<std::uint32_t>(v));
}

ScsiCommand check(std::uint8_t key, std::uint8_t asc) {
  ScsiCommand c;
  c.kind = CommandKind::Check;
  c.sense = Sense{key, asc, 0};
  return c;
}

// Builds a response in a scratch page, then hands out what the allocation length and the
// buffer allow (SPC-4 4.2.5.6: a short allocation length truncates, it is not an error).
struct Reply {
  std::uint8_t bytes[256] = {};
  std::uint32_t len = 0;
};

ScsiCommand local(const Reply& r, std::uint32_t alloc_len, std::uint8_t* buffer,
                  std::uint32_t buffer_len) {
  ScsiCommand c;
  c.kind = CommandKind::Local;
  std::uint32_t n = r.len;
  if (n > alloc_len) n = alloc_len;
  if (n > buffer_len) n = buffer_len;
  if (n > 0 && buffer != nullptr) std::memcpy(buffer, r.bytes, n);
  c.data_len = buffer != nullptr ? n : 0;
  return c;
}

void put_ascii(std::uint8_t* p, std::uint32_t width, const char* s) {
  std::uint32_t i = 0;
  for (; i < width && s[i] != '\0'; ++i) p[i] = static_cast<std::uint8_t>(s[i]);
  for (; i < width; ++i) p[i] = ' ';
}

// "vbd-<devid>": the unit serial number and the vendor-specific designator.
std::uint32_t serial(std::uint32_t devid, char* out) {
  char digits[12];
  std::uint32_t n = 0;
  do {
    digits[n++] = static_cast<char>('0' + devid % 10);
    devid /= 10;
  } while (devid != 0);
  std::memcpy(out, "vbd-", 4);
  for (std::uint32_t i = 0; i < n; ++i) out[4 + i] = digits[n - 1 - i];
  out[4 + n] = '\0';
  return 4 + n;
}

ScsiCommand inquiry(const std::uint8_t* cdb, const Geometry& geo, std::uint8_t* buf,
                    std::uint32_t len) {
  const bool evpd = (cdb[1] & 0x01) != 0;
  const std::uint8_t page = cdb[2];
  const std::uint32_t alloc = be16(cdb + 3);
  Reply r;
  std::uint8_t* b = r.bytes;
  if (!evpd) {
    if (page != 0) return check(kSenseIllegalRequest, kAscInvalidFieldInCdb);
    b[0] = 0x00;  // direct-access block device, connected
    b[2] = 0x06;  // SPC-4
    b[3] = 0x02;  // response data format 2
    b[4] = 36 - 5;
    b[7] = 0x02;  // CmdQue: tagged queuing
    put_ascii(b + 8, 8, "PVIO");
    put_ascii(b + 16, 16, "PV DISK");
    put_ascii(b + 32, 4, "0001");
    r.len = 36;
    return local(r, alloc, buf, len);
  }
  b[1] = page;
  switch (page) {
    case 0x00: {
      const std::uint8_t pages[] = {0x00, 0x80, 0x83, 0xB0, 0xB1, 0xB2};
      std::memcpy(b + 4, pages, sizeof pages);
      put16(b + 2, sizeof pages);
      r.len = 4 + sizeof pages;
      break;
    }
    case 0x80: {
      char s[20];
      const std::uint32_t n = serial(geo.devid, s);
      std::memcpy(b + 4, s, n);
      put16(b + 2, n);
      r.len = 4 + n;
      break;
    }
    case 0x83: {
      // One T10 vendor ID designator, ASCII: "PVIO    vbd-<devid>".
      char s[20];
      const std::uint32_t n = serial(geo.devid, s);
      std::uint8_t* d = b + 4;
      d[0] = 0x02;  // code set: ASCII
      d[1] = 0x01;  // association: logical unit; designator type: T10 vendor ID
      put_ascii(d + 4, 8, "PVIO");
      std::memcpy(d + 12, s, n);
      d[3] = static_cast<std::uint8_t>(8 + n);
      put16(b + 2, 4 + 8 + n);
      r.len = 4 + 4 + 8 + n;
      break;
    }
    case 0xB0: {  // block limits (SBC-3 6.5.3)
      put16(b + 2, 0x3C);
      const std::uint32_t max_blocks = geo.max_transfer_bytes / geo.block_size;
      put32(b + 8, max_blocks);
      put32(b + 12, max_blocks);
      if (geo.discard) {
        put32(b + 20, 0xFFFFFFFFu);  // any LBA count per descriptor (split below 2^32 sectors)
        put32(b + 24, kMaxUnmapDescriptors);
        const std::uint32_t gran = geo.discard_granularity > geo.block_size
                                       ? geo.discard_granularity / geo.block_size
                                       : 1;
        put32(b + 28, gran);
      }
      r.len = 64;
      break;
    }
    case 0xB1: {  // block device characteristics: not rotating
      put16(b + 2, 0x3C);
      put16(b + 4, 0x0001);
      r.len = 64;
      break;
    }
    case 0xB2: {  // logical block provisioning
      put16(b + 2, 4);
      b[5] = geo.discard ? 0x80 : 0x00;  // LBPU: UNMAP supported
      b[6] = geo.discard ? 0x02 : 0x00;  // thin provisioned
      r.len = 8;
      break;
    }
    default:
      return check(kSenseIllegalRequest, kAscInvalidFieldInCdb);
  }
  return local(r, alloc, buf, len);
}

// The caching mode page (SBC-3 6.4.5): WCE says a cache exists that SYNCHRONIZE CACHE flushes.
std::uint32_t caching_page(const Geometry& geo, std::uint8_t* p) {
  p[0] = 0x08;
  p[1] = 0x12;
  p[2] = geo.flush ? 0x04 : 0x00;
  return 20;
}

ScsiCommand mode_sense(const std::uint8_t* cdb, bool ten, const Geometry& geo,
                       std::uint8_t* buf, std::uint32_t len) {
  const std::uint8_t page = cdb[2] & 0x3F;
  const std::uint8_t pc = cdb[2] >> 6;
  const std::uint32_t alloc = ten ? be16(cdb + 7) : cdb[4];
  if (pc == 3) return check(kSenseIllegalRequest, 0x39);  // saving parameters not supported
  Reply r;
  const std::uint32_t hdr = ten ? 8 : 4;
  std::uint32_t n = hdr;
  if (page == 0x08 || page == 0x3F) {
    n += caching_page(geo, r.bytes + n);
    if (pc == 1) std::memset(r.bytes + hdr + 2, 0, 18);  // changeable values: none
  } else {
    return check(kSenseIllegalRequest, kAscInvalidFieldInCdb);
  }
  const std::uint8_t dsp = geo.read_only ? 0x80 : 0x00;  // WP
  if (ten) {
    put16(r.bytes, n - 2);
    r.bytes[3] = dsp;
  } else {
    r.bytes[0] = static_cast<std::uint8_t>(n - 1);
    r.bytes[2] = dsp;
  }
  r.len = n;
  return local(r, alloc, buf, len);
}

ScsiCommand read_capacity(bool sixteen, const std::uint8_t* cdb, const Geometry& geo,
                          std::uint8_t* buf, std::uint32_t len) {
  Reply r;
  const std::uint64_t last = geo.blocks() == 0 ? 0 : geo.blocks() - 1;
  if (!sixteen) {
    put32(r.bytes, last > 0xFFFFFFFFu ? 0xFFFFFFFFu : static_cast<std::uint32_t>(last));
    put32(r.bytes + 4, geo.block_size);
    r.len = 8;
    return local(r, 8, buf, len);
  }
  put64(r.bytes, last);
  put32(r.bytes + 8, geo.block_size);
  std::uint32_t exp = 0;
  while ((geo.block_size << (exp + 1)) <= geo.physical_block_size && exp < 15) ++exp;
  r.bytes[13] = static_cast<std::uint8_t>(exp);
  r.bytes[14] = geo.discard ? 0x80 : 0x00;  // LBPME
  r.len = 32;
  return local(r, be32(cdb + 10), buf, len);
}

ScsiCommand block_io(bool write, std::uint64_t lba, std::uint32_t blocks, const Geometry& geo,
                     std::uint32_t buffer_len) {
  if (lba > geo.blocks() || blocks > geo.blocks() - lba)
    return check(kSenseIllegalRequest, kAscLbaOutOfRange);
  if (write && geo.read_only) return check(kSenseDataProtect, kAscWriteProtected);
  ScsiCommand c;
  if (blocks == 0) {
    c.kind = CommandKind::Local;
    return c;
  }
  const std::uint64_t bytes = std::uint64_t{blocks} * geo.block_size;
  if (bytes > buffer_len) return check(kSenseIllegalRequest, kAscInvalidFieldInCdb);
  const std::uint32_t per_block = geo.block_size / 512;
  c.kind = write ? CommandKind::Write : CommandKind::Read;
  c.sector = lba * per_block;
  c.nr_sectors = blocks * per_block;
  c.data_len = static_cast<std::uint32_t>(bytes);
  return c;
}

}  // namespace

ScsiCommand parse_command(const std::uint8_t* cdb, std::uint32_t cdb_len, const Geometry& geo,
                          std::uint8_t* buffer, std::uint32_t buffer_len) {
  if (cdb_len == 0) return check(kSenseIllegalRequest, kAscInvalidOpcode);
  const std::uint8_t op = cdb[0];
  // The CDB length follows from the opcode's group (SPC-4 4.2.5.1).
  const std::uint32_t need = op < 0x20 ? 6 : op < 0x60 ? 10 : op >= 0x80 && op < 0xA0 ? 16 : 12;
  if (cdb_len < need) return check(kSenseIllegalRequest, kAscInvalidFieldInCdb);
  switch (op) {
    case kTestUnitReady:
    case kStartStopUnit:
    case kPreventAllowRemoval: {
      ScsiCommand c;
      c.kind = CommandKind::Local;
      return c;
    }
    case kRequestSense: {
      Reply r;
      r.len = build_sense(Sense{}, r.bytes, 18);
      return local(r, cdb[4], buffer, buffer_len);
    }
    case kInquiry:
      return inquiry(cdb, geo, buffer, buffer_len);
    case kModeSense6:
      return mode_sense(cdb, false, geo, buffer, buffer_len);
    case kModeSense10:
      return mode_sense(cdb, true, geo, buffer, buffer_len);
    case kReadCapacity10:
      return read_capacity(false, cdb, geo, buffer, buffer_len);
    case kServiceActionIn16:
      if ((cdb[1] & 0x1F) != kReadCapacity16Sa) return check(kSenseIllegalRequest, kAscInvalidFieldInCdb);
      return read_capacity(true, cdb, geo, buffer, buffer_len);
    case kRead6:
    case kWrite6: {
      const std::uint64_t lba = (std::uint64_t{cdb[1] & 0x1Fu} << 16) | be16(cdb + 2);
      const std::uint32_t n = cdb[4] == 0 ? 256 : cdb[4];  // SBC-3: 0 means 256 blocks
      return block_io(op == kWrite6, lba, n, geo, buffer_len);
    }
    case kRead10:
    case kWrite10:
      return block_io(op == kWrite10, be32(cdb + 2), be16(cdb + 7), geo, buffer_len);
    case kRead16:
    case kWrite16:
      return block_io(op == kWrite16, be64(cdb + 2), be32(cdb + 10), geo, buffer_len);
    case kVerify10: {
      const std::uint64_t lba = be32(cdb + 2);
      const std::uint32_t n = be16(cdb + 7);
      if (lba > geo.blocks() || n > geo.blocks() - lba)
        return check(kSenseIllegalRequest, kAscLbaOutOfRange);
      ScsiCommand c;
      c.kind = CommandKind::Local;
      return c;
    }
    case kSynchronizeCache10:
    case kSynchronizeCache16: {
      ScsiCommand c;
      // Without a backend cache (no flush feature) every completed write is already stable.
      c.kind = geo.flush ? CommandKind::Flush : CommandKind::Local;
      return c;
    }
    case kUnmap: {
      if (!geo.discard) return check(kSenseIllegalRequest, kAscInvalidOpcode);
      if (geo.read_only) return check(kSenseDataProtect, kAscWriteProtected);
      ScsiCommand c;
      c.kind = CommandKind::Unmap;
      c.data_len = be16(cdb + 7);
      if (c.data_len > buffer_len) return check(kSenseIllegalRequest, kAscInvalidFieldInCdb);
      return c;
    }
    case kReportLuns: {
      Reply r;
      put32(r.bytes, 8);  // one LUN: LUN 0 (bytes 8..15 stay zero)
      r.len = 16;
      const std::uint32_t alloc = be32(cdb + 6);
      if (alloc < 16) return check(kSenseIllegalRequest, kAscInvalidFieldInCdb);
      return local(r, alloc, buffer, buffer_len);
    }
    default:
      return check(kSenseIllegalRequest, kAscInvalidOpcode);
  }
}

int parse_unmap(const std::uint8_t* list, std::uint32_t list_len, const Geometry& geo,
                UnmapRange* out, std::uint32_t max, Sense& sense) {
  // Header: UNMAP data length (2), block descriptor data length (2), reserved (4); then
  // 16-byte descriptors: LBA (8), number of blocks (4), reserved (4). SBC-3 5.28.2.
  if (list_len == 0) return 0;
  if (list_len < 8) {
    sense = Sense{kSenseIllegalRequest, kAscParameterListLength, 0};
    return -1;
  }
  const std::uint32_t desc_len = be16(list + 2);
  if (desc_len % 16 != 0 || 8 + desc_len > list_len) {
    sense = Sense{kSenseIllegalRequest, kAscParameterListLength, 0};
    return -1;
  }
  const std::uint32_t n = desc_len / 16;
  if (n > max) {
    sense = Sense{kSenseIllegalRequest, kAscInvalidFieldInParameterList, 0};
    return -1;
  }
  const std::uint32_t per_block = geo.block_size / 512;
  std::uint32_t used = 0;
  for (std::uint32_t i = 0; i < n; ++i) {
    const std::uint8_t* d = list + 8 + 16 * i;
    const std::uint64_t lba = be64(d);
    const std::uint32_t blocks = be32(d + 8);
    if (lba > geo.blocks() || blocks > geo.blocks() - lba) {
      sense = Sense{kSenseIllegalRequest, kAscLbaOutOfRange, 0};
      return -1;
    }
    if (blocks == 0) continue;
    const std::uint64_t sectors = std::uint64_t{blocks} * per_block;
    if (sectors > 0xFFFFFFFFu) {  // a BlockIo carries 32 bits of sectors
      sense = Sense{kSenseIllegalRequest, kAscInvalidFieldInParameterList, 0};
      return -1;
    }
    out[used].sector = lba * per_block;
    out[used].nr_sectors = static_cast<std::uint32_t>(sectors);
    ++used;
  }
  return static_cast<int>(used);
}

std::uint32_t build_sense(const Sense& s, std::uint8_t* buf, std::uint32_t len) {
  std::uint8_t b[18] = {};
  b[0] = 0x70;  // current error, fixed format
  b[2] = s.key;
  b[7] = 10;  // additional sense length
  b[12] = s.asc;
  b[13] = s.ascq;
  const std::uint32_t n = len < sizeof b ? len : sizeof b;
  if (buf != nullptr) std::memcpy(buf, b, n);
  return buf != nullptr ? n : 0;
}

}  // namespace pvio::windows::xenvbd
