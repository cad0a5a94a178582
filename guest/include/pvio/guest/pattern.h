// The verifiable data pattern the guest writes and checks, and that host tests compute too:
// every 8-byte word is a hash of (seed, its byte offset on the disk), so any block read back
// can be checked on its own, whatever order or path wrote it.
#pragma once

#include <stdint.h>

namespace pvio::guest {

// splitmix64's finaliser over the disk offset, keyed by the seed.
constexpr uint64_t pattern_word(uint64_t seed, uint64_t disk_offset) {
  uint64_t z = seed + disk_offset * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace pvio::guest
