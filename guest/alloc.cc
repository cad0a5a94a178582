// Bump allocator (the test kernel allocates once per workload) and per-order free lists of page
// blocks, so what a frontend frees on a reconnect is what its next connection gets.
#include "alloc.h"

extern "C" void* memset(void*, int, size_t);

namespace pvio::guest {

namespace {
uint64_t next_ = 0, end_ = 0;
// A freed block holds the link to the next one of its order in its first word.
void* free_blocks_[kMaxPageOrder + 1] = {};
uint64_t pooled_pages_ = 0;
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

void* page_alloc(unsigned order) {
  if (order > kMaxPageOrder) return nullptr;
  const uint64_t bytes = uint64_t{4096} << order;
  void* block = free_blocks_[order];
  if (block == nullptr) return alloc(bytes, 4096);
  free_blocks_[order] = *static_cast<void**>(block);
  pooled_pages_ -= uint64_t{1} << order;
  memset(block, 0, bytes);
  return block;
}

void page_free(void* block, unsigned order) {
  if (block == nullptr || order > kMaxPageOrder) return;
  *static_cast<void**>(block) = free_blocks_[order];
  free_blocks_[order] = block;
  pooled_pages_ += uint64_t{1} << order;
}

uint64_t page_pool_pages() { return pooled_pages_; }

}  // namespace pvio::guest
