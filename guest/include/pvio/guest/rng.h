// The guest workload's block picker, xorshift64*: deterministic from the seed, so a verify pass
// can replay the LBA sequence and a host-side peer (pvio bench's native run) draws the same
// blocks.
#pragma once

#include <stdint.h>

namespace pvio::guest {

struct Rng {
  uint64_t s;
  explicit constexpr Rng(uint64_t seed) : s(seed ? seed : 0x9e3779b97f4a7c15ull) {}
  constexpr uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545f4914f6cdd1dull;
  }
};

}  // namespace pvio::guest
