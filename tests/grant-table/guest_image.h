// The grant-table suite's test guest (tests/common's GuestImage): kPages pages at
// guest-physical kBaseGfn, a two-frame v1 grant table followed by data pages.
#pragma once

#include <cstdint>

#include "pvio/test/guest_image.h"

namespace pvio::gnttab::test {

class GuestImage : public pvio::test::GuestImage {
 public:
  static constexpr std::uint64_t kBaseGfn = 0x100;
  static constexpr std::uint64_t kPages = 64;
  static constexpr std::uint32_t kTableFrames = 2;
  static constexpr std::uint64_t kFirstDataGfn = kBaseGfn + kTableFrames;
  static constexpr std::uint64_t kOutsideGfn = kBaseGfn + kPages + 10;  // not guest memory
  static constexpr std::uint64_t kTableGfns[kTableFrames] = {kBaseGfn, kBaseGfn + 1};

  GuestImage() : pvio::test::GuestImage({"pvio-test-guest", kBaseGfn, kPages, kTableFrames}) {}
};

// FNV-1a over a byte range, to compare page contents across processes.
inline std::uint64_t fnv1a(const std::uint8_t* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace pvio::gnttab::test
