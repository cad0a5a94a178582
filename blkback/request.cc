// parse_request(): every check xen-blkback's dispatch_rw_block_io / dispatch_discard_io makes,
// on a private copy of the slot, with checked arithmetic for the sector range.
#include "pvio/blkback/request.h"

#include <cstring>
#include <limits>

namespace pvio::blkback {
namespace {

constexpr std::uint64_t kMaxSector = std::numeric_limits<std::uint64_t>::max() / blkif::kSectorSize;

// The sector range [sector, sector + n) must lie on the disk; its byte offset must fit 64 bits.
RequestError check_range(std::uint64_t sector, std::uint64_t n, const DiskLimits& limits) {
  std::uint64_t end = 0;
  if (__builtin_add_overflow(sector, n, &end) || end > kMaxSector) return RequestError::Overflow;
  if (end > limits.nr_sectors) return RequestError::BeyondEnd;
  return RequestError::None;
}

// first_sect/last_sect name 512-byte sectors of one 4 KiB frame, inclusive (blkif.h).
RequestError take_segments(std::span<const blkif::blkif_request_segment> in, ParsedRequest& out) {
  std::uint64_t sectors = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const blkif::blkif_request_segment s = in[i];
    if (s.first_sect > s.last_sect || s.last_sect >= blkif::kSectorsPerPage)
      return RequestError::BadSegment;
    const unsigned n = s.last_sect - s.first_sect + 1u;
    out.seg[i] = Segment{s.gref, static_cast<std::uint16_t>(s.first_sect * blkif::kSectorSize),
                         static_cast<std::uint16_t>(n * blkif::kSectorSize)};
    sectors += n;
  }
  out.nr_segments = static_cast<std::uint32_t>(in.size());
  out.nr_sectors = sectors;
  return RequestError::None;
}

RequestError parse_direct(const RawRequest& raw, const DiskLimits& limits, ParsedRequest& out) {
  switch (raw.operation) {
    case blkif::kOpRead: out.kind = Kind::Read; break;
    case blkif::kOpWrite: out.kind = Kind::Write; break;
    case blkif::kOpWriteBarrier:
      if (!limits.barrier) return RequestError::UnsupportedOp;
      out.kind = Kind::Barrier;
      break;
    case blkif::kOpFlushDiskcache:
      if (!limits.flush) return RequestError::UnsupportedOp;
      out.kind = Kind::Flush;
      break;
    default: return RequestError::UnsupportedOp;
  }
  out.sector = raw.sector_number;
  const unsigned nseg = raw.nr_segments;
  // A flush or barrier without data is a pure ordering request; READ and WRITE need data.
  const bool data_required = out.kind == Kind::Read || out.kind == Kind::Write;
  if ((nseg == 0 && data_required) || nseg > blkif::kMaxSegmentsPerRequest)
    return RequestError::BadSegmentCount;
  if (nseg != 0 && out.kind != Kind::Read && limits.read_only) return RequestError::ReadOnly;
  if (const RequestError e = take_segments(std::span(raw.seg, nseg), out); e != RequestError::None)
    return e;
  if (nseg == 0) return RequestError::None;
  return check_range(out.sector, out.nr_sectors, limits);
}

RequestError parse_discard(const RawRequest& raw, const DiskLimits& limits, ParsedRequest& out) {
  blkif::blkif_request_discard d;
  static_assert(sizeof(d) <= sizeof(raw));
  std::memcpy(&d, &raw, sizeof(d));  // from the private copy, not from the ring
  out.kind = Kind::Discard;
  if (!limits.discard) return RequestError::UnsupportedOp;
  if ((d.flag & blkif::kDiscardSecure) && !limits.discard_secure) return RequestError::SecureDiscard;
  if (limits.read_only) return RequestError::ReadOnly;
  out.sector = d.sector_number;
  out.nr_sectors = d.nr_sectors;
  return check_range(out.sector, out.nr_sectors, limits);
}

RequestError parse_indirect(const RawRequest& raw, const DiskLimits& limits,
                            IndirectPageReader* pages, ParsedRequest& out) {
  blkif::blkif_request_indirect ind;
  static_assert(sizeof(ind) <= sizeof(raw));
  std::memcpy(&ind, &raw, sizeof(ind));
  out.indirect = true;
  if (limits.max_indirect_segments == 0 || pages == nullptr) return RequestError::UnsupportedOp;
  if (ind.indirect_op == blkif::kOpRead) {
    out.kind = Kind::Read;
  } else if (ind.indirect_op == blkif::kOpWrite) {
    out.kind = Kind::Write;
  } else {
    return RequestError::BadIndirectOp;
  }
  out.sector = ind.sector_number;
  const unsigned nseg = ind.nr_segments;
  const unsigned max = limits.max_indirect_segments < kMaxIndirectSegments
                           ? limits.max_indirect_segments
                           : kMaxIndirectSegments;
  if (nseg == 0 || nseg > max) return RequestError::BadSegmentCount;
  // The page count follows from nr_segments alone (INDIRECT_PAGES in xen-blkback).
  const unsigned nr_pages = (nseg + blkif::kSegmentsPerIndirectPage - 1) /
                            blkif::kSegmentsPerIndirectPage;
  if (nr_pages > blkif::kMaxIndirectPagesPerRequest) return RequestError::BadSegmentCount;
  if (out.kind == Kind::Write && limits.read_only) return RequestError::ReadOnly;

  // Copy the segment arrays out of the granted pages once; only the copy is validated and used.
  std::array<blkif::blkif_request_segment, kMaxIndirectSegments> segs;
  unsigned done = 0;
  for (unsigned p = 0; p < nr_pages; ++p) {
    const unsigned n = nseg - done < blkif::kSegmentsPerIndirectPage
                           ? nseg - done
                           : blkif::kSegmentsPerIndirectPage;
    if (pages->read(ind.indirect_grefs[p], std::span(segs.data() + done, n)) != 0)
      return RequestError::IndirectPage;
    done += n;
  }
  if (const RequestError e = take_segments(std::span(segs.data(), nseg), out);
      e != RequestError::None)
    return e;
  return check_range(out.sector, out.nr_sectors, limits);
}

}  // namespace

bool parse_blkif_protocol(std::string_view value, BlkifProtocol* out) {
  if (value.empty() || value == blkif::kProtoAbiX86_64) {
    *out = BlkifProtocol::X86_64;
    return true;
  }
  if (value == blkif::kProtoAbiX86_32) {
    *out = BlkifProtocol::X86_32;
    return true;
  }
  return false;
}

const char* blkif_protocol_name(BlkifProtocol p) {
  return p == BlkifProtocol::X86_32 ? blkif::kProtoAbiX86_32 : blkif::kProtoAbiX86_64;
}

RawRequest from_x86_32(const blkif::blkif_x86_32_request& in) {
  RawRequest out;
  std::memset(&out, 0, sizeof(out));
  out.operation = in.operation;
  switch (in.operation) {
    case blkif::kOpRead:
    case blkif::kOpWrite:
    case blkif::kOpWriteBarrier:
    case blkif::kOpFlushDiskcache:
      out.nr_segments = in.nr_segments;
      out.handle = in.handle;
      out.id = in.id;
      out.sector_number = in.sector_number;
      // All slots: the count is validated later against the native copy, never used here.
      std::memcpy(out.seg, in.seg, sizeof(out.seg));
      break;
    case blkif::kOpDiscard: {
      blkif::blkif_x86_32_request_discard d;
      std::memcpy(&d, &in, sizeof(d));
      blkif::blkif_request_discard n;
      std::memset(&n, 0, sizeof(n));
      n.operation = d.operation;
      n.flag = d.flag;
      n.handle = d.handle;
      n.id = d.id;
      n.sector_number = d.sector_number;
      n.nr_sectors = d.nr_sectors;
      std::memcpy(&out, &n, sizeof(n));
      break;
    }
    case blkif::kOpIndirect: {
      blkif::blkif_x86_32_request_indirect d;
      std::memcpy(&d, &in, sizeof(d));
      blkif::blkif_request_indirect n;
      std::memset(&n, 0, sizeof(n));
      n.operation = d.operation;
      n.indirect_op = d.indirect_op;
      n.nr_segments = d.nr_segments;
      n.id = d.id;
      n.sector_number = d.sector_number;
      n.handle = d.handle;
      std::memcpy(n.indirect_grefs, d.indirect_grefs, sizeof(n.indirect_grefs));
      std::memcpy(&out, &n, sizeof(n));
      break;
    }
    default:
      // The id sits at the same offset in every x86_32 layout (after the first 4 bytes).
      out.id = in.id;
      break;
  }
  return out;
}

const char* request_error_name(RequestError e) {
  switch (e) {
    case RequestError::None: return "none";
    case RequestError::UnsupportedOp: return "unsupported-op";
    case RequestError::BadSegmentCount: return "bad-segment-count";
    case RequestError::BadSegment: return "bad-segment";
    case RequestError::BeyondEnd: return "beyond-end";
    case RequestError::Overflow: return "overflow";
    case RequestError::ReadOnly: return "read-only";
    case RequestError::BadIndirectOp: return "bad-indirect-op";
    case RequestError::IndirectPage: return "indirect-page";
    case RequestError::SecureDiscard: return "secure-discard";
    case RequestError::Count_: break;
  }
  return "unknown";
}

RequestError parse_request(const RawRequest& raw, const DiskLimits& limits,
                           IndirectPageReader* pages, ParsedRequest& out) {
  out.id = raw.id;
  out.operation = raw.operation;
  out.kind = Kind::Read;
  out.indirect = false;
  out.sector = 0;
  out.nr_sectors = 0;
  out.nr_segments = 0;
  switch (raw.operation) {
    case blkif::kOpDiscard: return parse_discard(raw, limits, out);
    case blkif::kOpIndirect: return parse_indirect(raw, limits, pages, out);
    default: return parse_direct(raw, limits, out);
  }
}

}  // namespace pvio::blkback
