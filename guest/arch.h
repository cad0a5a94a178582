// x86-64 port I/O, TSC and control helpers for the freestanding guest.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace pvio::guest {

inline void outb(uint16_t port, uint8_t v) { asm volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
inline void outw(uint16_t port, uint16_t v) { asm volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
inline void outl(uint16_t port, uint32_t v) { asm volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
inline uint8_t inb(uint16_t port) {
  uint8_t v;
  asm volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
inline uint16_t inw(uint16_t port) {
  uint16_t v;
  asm volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
inline uint32_t inl(uint16_t port) {
  uint32_t v;
  asm volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}
// String I/O: one VM exit moves up to a page (KVM batches rep ins/outs).
inline void insl(uint16_t port, void* dst, size_t count) {
  asm volatile("rep insl" : "+D"(dst), "+c"(count) : "d"(port) : "memory");
}
inline void outsl(uint16_t port, const void* src, size_t count) {
  asm volatile("rep outsl" : "+S"(src), "+c"(count) : "d"(port) : "memory");
}
inline uint64_t rdtsc() {
  uint32_t lo, hi;
  asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return (uint64_t{hi} << 32) | lo;
}
inline void mmio_write32(uint64_t addr, uint32_t v) {
  *reinterpret_cast<volatile uint32_t*>(addr) = v;
}
inline uint32_t mmio_read32(uint64_t addr) { return *reinterpret_cast<volatile uint32_t*>(addr); }

// Powers the domain off through pvio-hv's debug-exit port; never returns.
[[noreturn]] void shutdown(uint32_t code);

}  // namespace pvio::guest
