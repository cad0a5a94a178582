// Software page walk over guest RAM (Intel SDM vol. 3, 4.5 "4-level paging").
#include "pvio/hypervisor/page_walk.h"

#include <cstring>

namespace pvio::hv {

namespace {

constexpr std::uint64_t kCr0Pg = 1u << 31;
constexpr std::uint64_t kCr4Pae = 1u << 5, kCr4La57 = 1u << 12;
constexpr std::uint64_t kEferLma = 1u << 10;
constexpr std::uint64_t kPresent = 1, kPageSize = 1u << 7;
constexpr std::uint64_t kAddrMask = 0x000ffffffffff000ull;  // bits 51:12
constexpr std::uint64_t kHighReserved = 0x7ff0000000000000ull;  // bits 62:52 (63 is XD)

// Reads entry `index` of the table at `table_gpa`, once.
WalkStatus read_entry(const GuestMemory& memory, std::uint64_t table_gpa, unsigned index,
                      std::uint64_t* entry) {
  const std::uint8_t* p = memory.range(table_gpa + index * 8ull, 8);
  if (p == nullptr) return WalkStatus::kTableOutsideRam;
  std::memcpy(entry, p, 8);
  if ((*entry & kPresent) == 0) return WalkStatus::kNotPresent;
  if ((*entry & kHighReserved) != 0) return WalkStatus::kReservedBit;
  return WalkStatus::kOk;
}

}  // namespace

std::string_view to_string(WalkStatus s) {
  switch (s) {
    case WalkStatus::kOk: return "ok";
    case WalkStatus::kNotPresent: return "not present";
    case WalkStatus::kReservedBit: return "reserved bit set";
    case WalkStatus::kTableOutsideRam: return "page table outside guest RAM";
    case WalkStatus::kNonCanonical: return "non-canonical address";
    case WalkStatus::kOutside4G: return "address above 4 GiB with paging off";
    case WalkStatus::kUnsupportedMode: return "unsupported paging mode";
  }
  return "unknown";
}

WalkStatus translate_gva(const GuestMemory& memory, const PagingState& paging, std::uint64_t gva,
                         std::uint64_t* gpa) {
  if ((paging.cr0 & kCr0Pg) == 0) {
    if (gva > 0xffffffffull) return WalkStatus::kOutside4G;
    *gpa = gva;
    return WalkStatus::kOk;
  }
  if ((paging.efer & kEferLma) == 0 || (paging.cr4 & kCr4Pae) == 0 ||
      (paging.cr4 & kCr4La57) != 0)
    return WalkStatus::kUnsupportedMode;
  // Bits 63:47 must be a sign extension of bit 47.
  const std::uint64_t top = gva >> 47;
  if (top != 0 && top != 0x1ffff) return WalkStatus::kNonCanonical;

  std::uint64_t e;
  WalkStatus st = read_entry(memory, paging.cr3 & kAddrMask, (gva >> 39) & 511, &e);
  if (st != WalkStatus::kOk) return st;
  if (e & kPageSize) return WalkStatus::kReservedBit;  // no large pages at the PML4 level
  st = read_entry(memory, e & kAddrMask, (gva >> 30) & 511, &e);
  if (st != WalkStatus::kOk) return st;
  if (e & kPageSize) {  // 1 GiB page
    *gpa = (e & kAddrMask & ~0x3fffffffull) | (gva & 0x3fffffffull);
    return WalkStatus::kOk;
  }
  st = read_entry(memory, e & kAddrMask, (gva >> 21) & 511, &e);
  if (st != WalkStatus::kOk) return st;
  if (e & kPageSize) {  // 2 MiB page
    *gpa = (e & kAddrMask & ~0x1fffffull) | (gva & 0x1fffffull);
    return WalkStatus::kOk;
  }
  st = read_entry(memory, e & kAddrMask, (gva >> 12) & 511, &e);
  if (st != WalkStatus::kOk) return st;
  *gpa = (e & kAddrMask) | (gva & 0xfffull);
  return WalkStatus::kOk;
}

}  // namespace pvio::hv
