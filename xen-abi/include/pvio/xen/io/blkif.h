// Block-device wire protocol (Xen public io/blkif.h): requests, responses, ops and status
// codes. The native structs take the layout of the ABI they are compiled for (x86-64, or
// x86-32 where uint64_t is 4-byte aligned inside structs); the explicit blkif_x86_32_* and
// blkif_x86_64_* structs let a 64-bit backend serve either protocol (the frontend's
// `protocol` key), as Linux's xen-blkback does. Ring types pair them in pvio/ring/io_rings.h.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pvio/xen/io/ring.h"
#include "pvio/xen/xen.h"

namespace pvio::blkif {

using blkif_vdev_t = uint16_t;
using blkif_sector_t = uint64_t;

// Operations (BLKIF_OP_*).
inline constexpr uint8_t kOpRead = 0;
inline constexpr uint8_t kOpWrite = 1;
inline constexpr uint8_t kOpWriteBarrier = 2;
inline constexpr uint8_t kOpFlushDiskcache = 3;
inline constexpr uint8_t kOpReserved1 = 4;
inline constexpr uint8_t kOpDiscard = 5;
inline constexpr uint8_t kOpIndirect = 6;

inline constexpr unsigned kMaxSegmentsPerRequest = 11;        // BLKIF_MAX_SEGMENTS_PER_REQUEST
inline constexpr unsigned kMaxIndirectPagesPerRequest = 8;    // BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST
inline constexpr uint8_t kDiscardSecure = 1u << 0;       // BLKIF_DISCARD_SECURE
inline constexpr unsigned kSectorSize = 512;                  // first_sect/last_sect unit
inline constexpr unsigned kSectorsPerPage = ring::kPageSize / kSectorSize;

// Status codes (BLKIF_RSP_*).
inline constexpr int16_t kRspEopnotsupp = -2;
inline constexpr int16_t kRspError = -1;
inline constexpr int16_t kRspOkay = 0;

// VDISK_* bits of the backend's `info` node.
inline constexpr unsigned kVdiskCdrom = 0x1;
inline constexpr unsigned kVdiskRemovable = 0x2;
inline constexpr unsigned kVdiskReadonly = 0x4;

struct blkif_request_segment {
  grant_ref_t gref;         // granted frame holding the data
  uint8_t first_sect;  // first 512-byte sector in the frame (inclusive)
  uint8_t last_sect;   // last sector in the frame (inclusive)
};

struct blkif_request {
  uint8_t operation;
  uint8_t nr_segments;
  blkif_vdev_t handle;
  uint64_t id;  // echoed in the response
  blkif_sector_t sector_number;
  blkif_request_segment seg[kMaxSegmentsPerRequest];
};

// Same slot as blkif_request when operation == kOpDiscard.
struct blkif_request_discard {
  uint8_t operation;
  uint8_t flag;  // kDiscardSecure or 0
  blkif_vdev_t handle;
  uint64_t id;
  blkif_sector_t sector_number;
  uint64_t nr_sectors;
};

// Same slot as blkif_request when operation == kOpIndirect: segments live in granted pages,
// each an array of blkif_request_segment.
struct blkif_request_indirect {
  uint8_t operation;    // kOpIndirect
  uint8_t indirect_op;  // kOpRead or kOpWrite
  uint16_t nr_segments;
  uint64_t id;
  blkif_sector_t sector_number;
  blkif_vdev_t handle;
  grant_ref_t indirect_grefs[kMaxIndirectPagesPerRequest];
#if defined(PVIO_XEN_ABI_X86_32)
  uint64_t pad;  // keeps the request 64 bytes on x86-32
#endif
};

struct blkif_response {
  uint64_t id;
  uint8_t operation;
  int16_t status;
};

// The `protocol` values a frontend may write (XEN_IO_PROTO_ABI_*); absent means the backend's
// native ABI.
inline constexpr const char kProtoAbiX86_32[] = "x86_32-abi";
inline constexpr const char kProtoAbiX86_64[] = "x86_64-abi";

// The x86-32 layout, whatever this compiler's ABI: uint64_t fields aligned to 4 bytes.
#pragma pack(push, 4)
struct blkif_x86_32_request {
  uint8_t operation;
  uint8_t nr_segments;
  blkif_vdev_t handle;
  uint64_t id;
  blkif_sector_t sector_number;
  blkif_request_segment seg[kMaxSegmentsPerRequest];
};
struct blkif_x86_32_request_discard {
  uint8_t operation;
  uint8_t flag;
  blkif_vdev_t handle;
  uint64_t id;
  blkif_sector_t sector_number;
  uint64_t nr_sectors;
};
struct blkif_x86_32_request_indirect {
  uint8_t operation;
  uint8_t indirect_op;
  uint16_t nr_segments;
  uint64_t id;
  blkif_sector_t sector_number;
  blkif_vdev_t handle;
  grant_ref_t indirect_grefs[kMaxIndirectPagesPerRequest];
  uint64_t pad;
};
struct blkif_x86_32_response {
  uint64_t id;
  uint8_t operation;
  int16_t status;
};
#pragma pack(pop)

// The x86-64 layout, whatever this compiler's ABI: uint64_t fields aligned to 8 bytes.
struct blkif_x86_64_request {
  uint8_t operation;
  uint8_t nr_segments;
  blkif_vdev_t handle;
  alignas(8) uint64_t id;
  alignas(8) blkif_sector_t sector_number;
  blkif_request_segment seg[kMaxSegmentsPerRequest];
};
struct blkif_x86_64_request_discard {
  uint8_t operation;
  uint8_t flag;
  blkif_vdev_t handle;
  alignas(8) uint64_t id;
  alignas(8) blkif_sector_t sector_number;
  alignas(8) uint64_t nr_sectors;
};
struct blkif_x86_64_request_indirect {
  uint8_t operation;
  uint8_t indirect_op;
  uint16_t nr_segments;
  alignas(8) uint64_t id;
  alignas(8) blkif_sector_t sector_number;
  blkif_vdev_t handle;
  grant_ref_t indirect_grefs[kMaxIndirectPagesPerRequest];
};
struct blkif_x86_64_response {
  alignas(8) uint64_t id;
  uint8_t operation;
  int16_t status;
};

inline constexpr unsigned kSegmentsPerIndirectPage =
    ring::kPageSize / sizeof(blkif_request_segment);

static_assert(sizeof(blkif_request_segment) == 8);
static_assert(kSegmentsPerIndirectPage == 512);

static_assert(sizeof(blkif_x86_32_request) == 108);
static_assert(offsetof(blkif_x86_32_request, id) == 4);
static_assert(offsetof(blkif_x86_32_request, sector_number) == 12);
static_assert(offsetof(blkif_x86_32_request, seg) == 20);
static_assert(sizeof(blkif_x86_32_request_discard) == 28);
static_assert(offsetof(blkif_x86_32_request_discard, nr_sectors) == 20);
static_assert(sizeof(blkif_x86_32_request_indirect) == 64);
static_assert(offsetof(blkif_x86_32_request_indirect, handle) == 20);
static_assert(offsetof(blkif_x86_32_request_indirect, indirect_grefs) == 24);
static_assert(sizeof(blkif_x86_32_response) == 12);
static_assert(offsetof(blkif_x86_32_response, status) == 10);

static_assert(sizeof(blkif_x86_64_request) == 112);
static_assert(offsetof(blkif_x86_64_request, id) == 8);
static_assert(offsetof(blkif_x86_64_request, sector_number) == 16);
static_assert(offsetof(blkif_x86_64_request, seg) == 24);
static_assert(sizeof(blkif_x86_64_request_discard) == 32);
static_assert(offsetof(blkif_x86_64_request_discard, nr_sectors) == 24);
static_assert(sizeof(blkif_x86_64_request_indirect) == 64);
static_assert(offsetof(blkif_x86_64_request_indirect, indirect_grefs) == 28);
static_assert(sizeof(blkif_x86_64_response) == 16);
static_assert(offsetof(blkif_x86_64_response, status) == 10);

// The native structs are one of the two explicit layouts.
#if defined(PVIO_XEN_ABI_X86_64)
static_assert(sizeof(blkif_request) == sizeof(blkif_x86_64_request));
static_assert(offsetof(blkif_request, seg) == offsetof(blkif_x86_64_request, seg));
static_assert(sizeof(blkif_request_indirect) == sizeof(blkif_x86_64_request_indirect));
static_assert(sizeof(blkif_response) == sizeof(blkif_x86_64_response));
inline constexpr const char* kProtoAbiNative = kProtoAbiX86_64;
#else
static_assert(sizeof(blkif_request) == sizeof(blkif_x86_32_request));
static_assert(offsetof(blkif_request, seg) == offsetof(blkif_x86_32_request, seg));
static_assert(sizeof(blkif_request_indirect) == sizeof(blkif_x86_32_request_indirect));
static_assert(sizeof(blkif_response) == sizeof(blkif_x86_32_response));
inline constexpr const char* kProtoAbiNative = kProtoAbiX86_32;
#endif

inline constexpr uint32_t kRingSizeOnePage =
    ring::ring_size<blkif_request, blkif_response>(ring::kPageSize);
static_assert(kRingSizeOnePage == 32);
static_assert(ring::ring_size<blkif_x86_32_request, blkif_x86_32_response>(ring::kPageSize) == 32);

}  // namespace pvio::blkif
