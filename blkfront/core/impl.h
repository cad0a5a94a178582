// Types shared by the blkfront core's control plane (xenbus.cc) and datapath (blkfront.cc):
// the per-queue ring state, the tag (shadow) table, page pools, and freestanding string helpers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pvio/blkfront/blkfront.h"
#include "pvio/ring/io_rings.h"

namespace pvio::blkfront {

// One segment of a request in flight: which frame the backend was given and, for data that
// went through a core page, where it comes from / goes to in the caller's memory.
struct Blkfront::Seg {
  grant_ref_t gref = kInvalidGrantRef;
  std::int32_t pool = -1;           // pool page index, or -1: the caller's page was granted
  std::uint32_t io_byte = 0;        // offset of this segment's data within the I/O
  std::uint16_t len = 0;            // bytes
};

// The tag table entry of one request on a ring (Linux's blk_shadow). Its index is the
// request id: a response's id is looked up here and nowhere else.
struct Blkfront::Shadow {
  BlockIo* io = nullptr;            // null: free
  std::uint32_t next_free = 0;
  std::uint8_t operation = 0;       // the op on the wire (kOpIndirect for indirect requests)
  std::uint16_t nr_segs = 0;
  std::uint8_t nr_indirect = 0;
  bool bounced = false;             // data went through pool pages
};

// A page the core owns and grants: ring-independent bounce/persistent pool and indirect pages.
struct Blkfront::PoolPage {
  GuestPages page;
  grant_ref_t gref = kInvalidGrantRef;  // persistent grant, or kInvalid while not granted
  bool lost = false;                    // backend kept it mapped: never reused
};

struct Blkfront::Queue {
  blkif::FrontRing ring;
  GuestPages ring_pages;            // 2^order contiguous pages
  grant_ref_t ring_refs[kMaxRingPages] = {};
  evtchn_port_t port = 0;
  bool port_valid = false;
  bool ring_allocated = false;

  Shadow* shadow = nullptr;         // ring_size entries
  std::uint32_t shadow_free = 0;    // head of the free list, ring_size when empty
  std::uint32_t shadow_used = 0;
  Seg* segs = nullptr;              // ring_size * max_segs, shadow i owns [i*max_segs, ...)
  PoolPage* indirect = nullptr;     // ring_size * indirect_per_req, shadow i owns a slice
  PoolPage* pool = nullptr;         // pool_size pages
  std::uint32_t* pool_free = nullptr;  // stack of free pool indices
  std::uint32_t pool_free_count = 0;
  std::uint32_t pool_size = 0;

  BlockIo* pending_head = nullptr;  // FIFO of I/Os with sectors not yet in requests
  BlockIo* pending_tail = nullptr;
};

namespace detail {

// Decimal formatting and parsing without libc.
inline std::size_t format_uint(char* out, std::size_t cap, std::uint64_t v) {
  char tmp[24];
  std::size_t n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  if (n + 1 > cap) {
    if (cap) out[0] = '\0';
    return 0;
  }
  for (std::size_t i = 0; i < n; ++i) out[i] = tmp[n - 1 - i];
  out[n] = '\0';
  return n;
}

// Strict: digits only, at least one, no overflow. Xenstore values come from another domain.
inline bool parse_uint(const char* s, std::size_t len, std::uint64_t& out) {
  while (len > 0 && s[len - 1] == '\0') --len;
  if (len == 0 || len > 20) return false;
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < len; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    const std::uint64_t d = static_cast<std::uint64_t>(s[i] - '0');
    if (v > (~std::uint64_t{0} - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

// Bounded path builder: appends pieces, remembers overflow.
class PathBuf {
 public:
  explicit PathBuf(const char* base) { add(base); }
  PathBuf& add(const char* s) {
    const std::size_t n = std::strlen(s);
    if (len_ + n + 1 > sizeof(buf_)) {
      overflow_ = true;
      return *this;
    }
    std::memcpy(buf_ + len_, s, n + 1);
    len_ += n;
    return *this;
  }
  PathBuf& add_uint(std::uint64_t v) {
    char tmp[24];
    format_uint(tmp, sizeof(tmp), v);
    return add(tmp);
  }
  const char* c_str() const { return buf_; }
  bool ok() const { return !overflow_; }

 private:
  char buf_[Blkfront::kPathMax + 32] = {};
  std::size_t len_ = 0;
  bool overflow_ = false;
};

inline constexpr std::size_t align16(std::size_t n) { return (n + 15) & ~std::size_t{15}; }

}  // namespace detail
}  // namespace pvio::blkfront
