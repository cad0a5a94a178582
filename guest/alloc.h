// Bump allocator over the guest RAM above the kernel image. Memory is identity mapped, so an
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

}  // namespace pvio::guest
