// Parsing of one blkif request into a typed, validated value (Firecracker's request.rs is the
// model): the ring slot is copied out of shared memory once, every field is checked against the
// negotiated features and the disk, and the result is either a ParsedRequest or a RequestError.
// Nothing after parse_request() looks at guest-written bytes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "pvio/xen/io/blkif.h"

namespace pvio::blkback {

// Linux xen-blkback's MAX_INDIRECT_SEGMENTS: the most feature-max-indirect-segments we offer.
inline constexpr unsigned kMaxIndirectSegments = 256;

enum class RequestError : std::uint8_t {
  None = 0,
  UnsupportedOp,        // unknown operation, or a feature that was not offered -> EOPNOTSUPP
  BadSegmentCount,      // nr_segments 0 (where data is required) or over the limit
  BadSegment,           // first_sect > last_sect, or last_sect past the 4 KiB page
  BeyondEnd,            // the sector range ends past the disk
  Overflow,             // sector + length does not fit 64 bits
  ReadOnly,             // write or discard on a read-only disk
  BadIndirectOp,        // indirect_op is not READ or WRITE
  IndirectPage,         // an indirect segment page could not be read (grant error)
  SecureDiscard,        // BLKIF_DISCARD_SECURE without feature-discard-secure -> EOPNOTSUPP
  Count_,
};

inline constexpr std::size_t kRequestErrorCount = static_cast<std::size_t>(RequestError::Count_);
const char* request_error_name(RequestError e);

// The status code the frontend gets for an invalid request (BLKIF_RSP_*).
constexpr std::int16_t response_status(RequestError e) {
  return (e == RequestError::UnsupportedOp || e == RequestError::SecureDiscard)
             ? blkif::kRspEopnotsupp
             : blkif::kRspError;
}

enum class Kind : std::uint8_t {
  Read,     // read segments from disk into guest pages
  Write,    // write guest pages to disk
  Barrier,  // drain, write the segments (if any), flush (BLKIF_OP_WRITE_BARRIER)
  Flush,    // drain, write the segments (if any), flush (BLKIF_OP_FLUSH_DISKCACHE)
  Discard,  // [sector, sector + nr_sectors)
};

// One validated segment: a byte range inside one granted 4 KiB frame.
struct Segment {
  grant_ref_t gref = 0;
  std::uint16_t offset = 0;  // bytes into the frame (first_sect * 512)
  std::uint16_t length = 0;  // bytes, 512..4096, multiple of 512
};

// What the backend has negotiated and what the disk is.
struct DiskLimits {
  std::uint64_t nr_sectors = 0;  // disk size in 512-byte sectors
  bool read_only = false;
  bool flush = true;                     // feature-flush-cache
  bool barrier = true;                   // feature-barrier
  bool discard = false;                  // feature-discard
  bool discard_secure = false;           // feature-discard-secure
  unsigned max_indirect_segments = 0;    // feature-max-indirect-segments; 0: not offered
};

struct ParsedRequest {
  std::uint64_t id = 0;         // echoed in the response
  std::uint8_t operation = 0;   // the wire operation, echoed in the response
  Kind kind = Kind::Read;
  bool indirect = false;
  std::uint64_t sector = 0;      // 512-byte units
  std::uint64_t nr_sectors = 0;  // total length in 512-byte units
  std::uint32_t nr_segments = 0;
  std::array<Segment, kMaxIndirectSegments> seg;

  bool writes_guest_pages() const { return kind == Kind::Read; }
  std::uint64_t offset_bytes() const { return sector * blkif::kSectorSize; }
  std::uint64_t length_bytes() const { return nr_sectors * blkif::kSectorSize; }
};

// Reads the segment array of one indirect page out of guest memory into private memory, once.
// Implemented by the datapath with a grant copy; the fuzzer supplies its own bytes.
class IndirectPageReader {
 public:
  virtual ~IndirectPageReader() = default;
  // Copies out.size() segments from the start of the frame granted as `gref`. Returns
  // GNTST_okay (0) or a negative GNTST_* status.
  virtual std::int16_t read(grant_ref_t gref, std::span<blkif::blkif_request_segment> out) = 0;
};

// A ring slot as copied out of shared memory: the bytes of blkif_request, which is the largest
// request layout. The discard and indirect layouts are reinterpreted from this private copy, so
// the shared slot is read exactly once whatever the operation says.
using RawRequest = blkif::blkif_request;

// The request layout of the frontend's ABI (its `protocol` key, XEN_IO_PROTO_ABI_*).
enum class BlkifProtocol : std::uint8_t { X86_64, X86_32 };

// Parses the frontend's `protocol` value: empty means the native ABI (x86_64-abi here). False
// for anything else, which the control plane answers with an error node and Closing.
bool parse_blkif_protocol(std::string_view value, BlkifProtocol* out);
const char* blkif_protocol_name(BlkifProtocol p);

// Converts a slot copied from an x86_32-abi ring into the native layout (Linux's
// blkif_get_x86_32_req): field by field for the operation's layout, from the private copy.
// An unknown operation keeps operation and id, so it can be answered.
RawRequest from_x86_32(const blkif::blkif_x86_32_request& in);

// Validates `raw` into `out`. On error `out.id` and `out.operation` are still set from the
// copy, so the caller can answer the request. `pages` may be null when indirect is not offered.
RequestError parse_request(const RawRequest& raw, const DiskLimits& limits,
                           IndirectPageReader* pages, ParsedRequest& out);

}  // namespace pvio::blkback
