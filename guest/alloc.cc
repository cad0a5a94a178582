// Bump allocator: nothing is freed; the test kernel allocates once per workload.
#include "alloc.h"

extern "C" void* memset(void*, int, size_t);

namespace pvio::guest {

namespace {
uint64_t next_ = 0, end_ = 0;
}

void alloc_init(uint64_t start, uint64_t end) {
  next_ = start;
  end_ = end;
}

void* alloc_uninit(uint64_t size, uint64_t align) {
  const uint64_t p = (next_ + align - 1) & ~(align - 1);
  if (p < next_ || p > end_ || size > end_ - p) return nullptr;
  next_ = p + size;
  return reinterpret_cast<void*>(p);
}

void* alloc(uint64_t size, uint64_t align) {
  void* p = alloc_uninit(size, align);
  if (p != nullptr) memset(p, 0, size);
  return p;
}

uint64_t alloc_free_bytes() { return end_ - next_; }

}  // namespace pvio::guest
