// Block-device wire protocol (Xen public io/blkif.h): requests, responses, ops and status
// codes, with Xen's exact x86-64 layout. Ring types pair them with ring.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pvio/ring/ring.h"
#include "pvio/ring/xen_types.h"

namespace pvio::blkif {

using blkif_vdev_t = std::uint16_t;
using blkif_sector_t = std::uint64_t;

// Operations (BLKIF_OP_*).
inline constexpr std::uint8_t kOpRead = 0;
inline constexpr std::uint8_t kOpWrite = 1;
inline constexpr std::uint8_t kOpWriteBarrier = 2;
inline constexpr std::uint8_t kOpFlushDiskcache = 3;
inline constexpr std::uint8_t kOpReserved1 = 4;
inline constexpr std::uint8_t kOpDiscard = 5;
inline constexpr std::uint8_t kOpIndirect = 6;

inline constexpr unsigned kMaxSegmentsPerRequest = 11;        // BLKIF_MAX_SEGMENTS_PER_REQUEST
inline constexpr unsigned kMaxIndirectPagesPerRequest = 8;    // BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST
inline constexpr std::uint8_t kDiscardSecure = 1u << 0;       // BLKIF_DISCARD_SECURE
inline constexpr unsigned kSectorSize = 512;                  // first_sect/last_sect unit
inline constexpr unsigned kSectorsPerPage = ring::kPageSize / kSectorSize;

// Status codes (BLKIF_RSP_*).
inline constexpr std::int16_t kRspEopnotsupp = -2;
inline constexpr std::int16_t kRspError = -1;
inline constexpr std::int16_t kRspOkay = 0;

// VDISK_* bits of the backend's `info` node.
inline constexpr unsigned kVdiskCdrom = 0x1;
inline constexpr unsigned kVdiskRemovable = 0x2;
inline constexpr unsigned kVdiskReadonly = 0x4;

struct blkif_request_segment {
  grant_ref_t gref;         // granted frame holding the data
  std::uint8_t first_sect;  // first 512-byte sector in the frame (inclusive)
  std::uint8_t last_sect;   // last sector in the frame (inclusive)
};

struct blkif_request {
  std::uint8_t operation;
  std::uint8_t nr_segments;
  blkif_vdev_t handle;
  std::uint64_t id;  // echoed in the response
  blkif_sector_t sector_number;
  blkif_request_segment seg[kMaxSegmentsPerRequest];
};

// Same slot as blkif_request when operation == kOpDiscard.
struct blkif_request_discard {
  std::uint8_t operation;
  std::uint8_t flag;  // kDiscardSecure or 0
  blkif_vdev_t handle;
  std::uint64_t id;
  blkif_sector_t sector_number;
  std::uint64_t nr_sectors;
};

// Same slot as blkif_request when operation == kOpIndirect: segments live in granted pages,
// each an array of blkif_request_segment.
struct blkif_request_indirect {
  std::uint8_t operation;    // kOpIndirect
  std::uint8_t indirect_op;  // kOpRead or kOpWrite
  std::uint16_t nr_segments;
  std::uint64_t id;
  blkif_sector_t sector_number;
  blkif_vdev_t handle;
  grant_ref_t indirect_grefs[kMaxIndirectPagesPerRequest];
};

struct blkif_response {
  std::uint64_t id;
  std::uint8_t operation;
  std::int16_t status;
};

inline constexpr unsigned kSegmentsPerIndirectPage =
    ring::kPageSize / sizeof(blkif_request_segment);

static_assert(sizeof(blkif_request_segment) == 8);
static_assert(sizeof(blkif_request) == 112);
static_assert(offsetof(blkif_request, id) == 8);
static_assert(offsetof(blkif_request, sector_number) == 16);
static_assert(offsetof(blkif_request, seg) == 24);
static_assert(sizeof(blkif_request_discard) == 32);
static_assert(offsetof(blkif_request_discard, nr_sectors) == 24);
static_assert(sizeof(blkif_request_indirect) == 64);
static_assert(offsetof(blkif_request_indirect, indirect_grefs) == 28);
static_assert(sizeof(blkif_response) == 16);
static_assert(offsetof(blkif_response, status) == 10);
static_assert(kSegmentsPerIndirectPage == 512);

using FrontRing = ring::FrontRing<blkif_request, blkif_response>;
using BackRing = ring::BackRing<blkif_request, blkif_response>;
inline constexpr std::uint32_t kRingSizeOnePage =
    ring::ring_size<blkif_request, blkif_response>(ring::kPageSize);
static_assert(kRingSizeOnePage == 32);

}  // namespace pvio::blkif
