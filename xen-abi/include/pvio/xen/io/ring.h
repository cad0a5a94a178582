// Xen's shared-ring layout (xen/include/public/io/ring.h): the header at the start of every
// ring page and the ring-size rule (__CONST_RING_SIZE). The FrontRing/BackRing that follow the
// notify rules on this layout are in ring/ (pvio/ring/ring.h).
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace pvio::ring {

using RingIdx = uint32_t;  // Xen's RING_IDX: free-running, wraps at 2^32

inline constexpr size_t kPageSize = 4096;
// Largest multi-page ring a backend offers (max-ring-page-order; Linux's
// XENBUS_MAX_RING_GRANT_ORDER): 2^4 pages.
inline constexpr size_t kMaxRingPageOrder = 4;

// The 64-byte header at the start of every shared ring page (Xen's struct __name##_sring
// before `ring[]`): producer/event indices, the private pad union and the reserved pad.
struct SringHeader {
  RingIdx req_prod;
  RingIdx req_event;
  RingIdx rsp_prod;
  RingIdx rsp_event;
  uint8_t pvt_pad[4];
  uint8_t pad[44];
};
static_assert(sizeof(SringHeader) == 64);
static_assert(offsetof(SringHeader, req_prod) == 0);
static_assert(offsetof(SringHeader, req_event) == 4);
static_assert(offsetof(SringHeader, rsp_prod) == 8);
static_assert(offsetof(SringHeader, rsp_event) == 12);
static_assert(offsetof(SringHeader, pvt_pad) == 16);

// One slot holds either a request or the response that later replaces it.
template <typename Req, typename Rsp>
union SringEntry {
  Req req;
  Rsp rsp;
};

// Xen's __RD32: round down to a power of two.
constexpr uint32_t round_down_pow2(uint32_t x) {
  if (x == 0) return 0;
  uint32_t p = 1;
  while (p <= x / 2) p <<= 1;
  return p;
}

// Xen's __CONST_RING_SIZE: entries that fit in `bytes` after the header, rounded down to a
// power of two so indices can be masked.
template <typename Req, typename Rsp>
constexpr uint32_t ring_size(size_t bytes) {
  if (bytes <= sizeof(SringHeader)) return 0;
  return round_down_pow2(
      static_cast<uint32_t>((bytes - sizeof(SringHeader)) / sizeof(SringEntry<Req, Rsp>)));
}

// Bytes taken by a ring of 2^order pages.
constexpr size_t ring_bytes(unsigned ring_page_order) { return kPageSize << ring_page_order; }

}  // namespace pvio::ring
