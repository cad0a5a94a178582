// A guest domain's memory as seen from the process that holds it mapped (the domain itself, or
// a Dom0 service that received the memfd through the domain control protocol): a small table
// of guest-physical regions and where each is mapped here. Every guest-supplied address or
// frame number is translated through it, and anything outside a region translates to null.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pvio/ring/ring.h"

namespace pvio {

struct MemRegion {
  std::uint64_t gpa = 0;        // guest-physical start, page aligned
  std::uint64_t size = 0;       // bytes, page aligned
  std::uint8_t* host = nullptr;  // where those bytes are mapped in this process
};

class GuestMemory {
 public:
  static constexpr std::size_t kMaxRegions = 8;
  static constexpr std::uint64_t kPageShift = 12;

  // Regions must be page aligned and must not overlap. Returns false otherwise or when full.
  bool add_region(std::uint64_t gpa, std::uint64_t size, std::uint8_t* host) {
    if (count_ == kMaxRegions || size == 0 || host == nullptr) return false;
    if ((gpa | size) & (ring::kPageSize - 1)) return false;
    if (gpa + size < gpa) return false;
    for (std::size_t i = 0; i < count_; ++i) {
      const MemRegion& r = regions_[i];
      if (gpa < r.gpa + r.size && r.gpa < gpa + size) return false;
    }
    regions_[count_++] = {gpa, size, host};
    return true;
  }

  // Host address of guest-physical [gpa, gpa + len), or null unless it lies in one region.
  std::uint8_t* range(std::uint64_t gpa, std::uint64_t len) const {
    for (std::size_t i = 0; i < count_; ++i) {
      const MemRegion& r = regions_[i];
      if (gpa >= r.gpa && gpa - r.gpa <= r.size && len <= r.size - (gpa - r.gpa))
        return r.host + (gpa - r.gpa);
    }
    return nullptr;
  }

  // Host address of guest frame `gfn` (one page), or null.
  std::uint8_t* frame(std::uint64_t gfn) const {
    if (gfn > (~std::uint64_t{0} >> kPageShift)) return nullptr;
    return range(gfn << kPageShift, ring::kPageSize);
  }

  std::size_t region_count() const { return count_; }
  const MemRegion& region(std::size_t i) const { return regions_[i]; }

 private:
  MemRegion regions_[kMaxRegions];
  std::size_t count_ = 0;
};

}  // namespace pvio
