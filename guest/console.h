// Serial console (COM1, 16550) and a small printf for the guest.
#pragma once

#include <stdint.h>

namespace pvio::guest {

void console_init();
void console_write(const char* s, unsigned long len);
// Supports %s %c %d %u %x %p and the l / ll length modifiers, %%.
void kprintf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

}  // namespace pvio::guest
