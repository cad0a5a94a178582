// Bump allocator over the guest RAM above the kernel image, and page blocks that can be given
// back (ring pages a frontend frees on every reconnect). Memory is identity mapped, so an
// allocation's address is also its guest-physical address (what DMA descriptors need).
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace pvio::guest {

void alloc_init(uint64_t start, uint64_t end);
// Zeroed, `align` a power of two; returns null when RAM is exhausted.
void* alloc(uint64_t size, uint64_t align = 4096);
// Like alloc, without zeroing (large arrays the caller fills itself).
void* alloc_uninit(uint64_t size, uint64_t align = 4096);
uint64_t alloc_free_bytes();

// 2^order zeroed pages (order <= kMaxPageOrder), page aligned: a block freed earlier with the
// same order is reused before the bump pointer moves. Null when RAM is exhausted.
constexpr unsigned kMaxPageOrder = 8;
void* page_alloc(unsigned order);
void page_free(void* block, unsigned order);
// Blocks waiting on the free lists, in pages.
uint64_t page_pool_pages();

}  // namespace pvio::guest
