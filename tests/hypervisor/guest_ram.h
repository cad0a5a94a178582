// A page-aligned buffer registered as guest RAM at guest-physical 0, for device-model tests.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "pvio/grant_table/guest_memory.h"

namespace pvio::hv::testing {

struct GuestRam {
  explicit GuestRam(std::uint64_t size) : size(size) {
    base = static_cast<std::uint8_t*>(std::aligned_alloc(4096, size));
    std::memset(base, 0, size);
    memory.add_region(0, size, base);
  }
  ~GuestRam() { std::free(base); }
  GuestRam(const GuestRam&) = delete;
  GuestRam& operator=(const GuestRam&) = delete;

  void put_prd(std::uint64_t gpa, unsigned index, std::uint32_t addr, std::uint32_t ctl) {
    std::memcpy(base + gpa + 8 * index, &addr, 4);
    std::memcpy(base + gpa + 8 * index + 4, &ctl, 4);
  }

  std::uint64_t size;
  std::uint8_t* base;
  GuestMemory memory;
};

}  // namespace pvio::hv::testing
