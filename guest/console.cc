// COM1 output and kprintf.
#include "console.h"

#include <stdarg.h>

#include "arch.h"

namespace pvio::guest {

namespace {
constexpr uint16_t kCom1 = 0x3f8;

void putc(char c) {
  while (!(inb(kCom1 + 5) & 0x20)) {
  }
  outb(kCom1, static_cast<uint8_t>(c));
}

void put_unsigned(unsigned long long v, unsigned base) {
  char buf[24];
  int n = 0;
  do {
    const unsigned d = static_cast<unsigned>(v % base);
    buf[n++] = static_cast<char>(d < 10 ? '0' + d : 'a' + d - 10);
    v /= base;
  } while (v);
  while (n) putc(buf[--n]);
}
}  // namespace

void console_init() {
  outb(kCom1 + 1, 0x00);  // no interrupts
  outb(kCom1 + 3, 0x80);  // DLAB
  outb(kCom1 + 0, 0x01);  // 115200 baud
  outb(kCom1 + 1, 0x00);
  outb(kCom1 + 3, 0x03);  // 8N1
  outb(kCom1 + 2, 0xc7);  // FIFOs on
}

void console_write(const char* s, unsigned long len) {
  for (unsigned long i = 0; i < len; ++i) putc(s[i]);
}

void kprintf(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  for (const char* p = fmt; *p; ++p) {
    if (*p != '%') {
      putc(*p);
      continue;
    }
    ++p;
    int longs = 0;
    while (*p == 'l') {
      ++longs;
      ++p;
    }
    switch (*p) {
      case 's': {
        const char* s = va_arg(ap, const char*);
        while (s && *s) putc(*s++);
        break;
      }
      case 'c': putc(static_cast<char>(va_arg(ap, int))); break;
      case 'd': {
        long long v = longs ? va_arg(ap, long long) : va_arg(ap, int);
        if (v < 0) {
          putc('-');
          v = -v;
        }
        put_unsigned(static_cast<unsigned long long>(v), 10);
        break;
      }
      case 'u':
        put_unsigned(longs ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned), 10);
        break;
      case 'x':
        put_unsigned(longs ? va_arg(ap, unsigned long long) : va_arg(ap, unsigned), 16);
        break;
      case 'p':
        putc('0');
        putc('x');
        put_unsigned(reinterpret_cast<unsigned long long>(va_arg(ap, void*)), 16);
        break;
      case '%': putc('%'); break;
      case '\0': --p; break;
      default: putc('%'); putc(*p); break;
    }
  }
  va_end(ap);
}

}  // namespace pvio::guest
