// 16550A UART model: output only, line buffered to the log and the terminal.
#include "pvio/hypervisor/devices/serial.h"

#include <unistd.h>

namespace pvio::hv {

namespace {
constexpr std::uint8_t kLcrDlab = 0x80;
constexpr std::uint8_t kLsrThre = 0x20, kLsrTemt = 0x40;

void write_all(int fd, const char* p, std::size_t n) {
  while (fd >= 0 && n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w <= 0) return;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}
}  // namespace

Serial16550::~Serial16550() { flush(); }

void Serial16550::flush() {
  if (pending_.empty()) return;
  write_all(log_fd_, pending_.data(), pending_.size());
  write_all(console_fd_, pending_.data(), pending_.size());
  pending_.clear();
}

void Serial16550::emit(char c) {
  pending_.push_back(c);
  if (c == '\n' || pending_.size() >= 4096) flush();
}

std::uint32_t Serial16550::pio_read(int, std::uint16_t offset, unsigned) {
  const bool dlab = lcr_ & kLcrDlab;
  switch (offset) {
    case 0: return dlab ? dll_ : 0;  // RBR: no input
    case 1: return dlab ? dlm_ : ier_;
    case 2: return 0xc1;             // IIR: FIFOs enabled, no interrupt pending
    case 3: return lcr_;
    case 4: return mcr_;
    case 5: return kLsrThre | kLsrTemt;  // transmitter always empty: output is synchronous
    case 6: return 0xb0;                 // MSR: DCD, DSR, CTS
    case 7: return scr_;
  }
  return 0xff;
}

void Serial16550::pio_write(int, std::uint16_t offset, unsigned, std::uint32_t value) {
  const auto v = static_cast<std::uint8_t>(value);
  const bool dlab = lcr_ & kLcrDlab;
  switch (offset) {
    case 0:
      if (dlab) dll_ = v; else emit(static_cast<char>(v));
      break;
    case 1:
      if (dlab) dlm_ = v; else ier_ = v & 0x0f;
      break;
    case 3: lcr_ = v; break;
    case 4: mcr_ = v & 0x1f; break;
    case 7: scr_ = v; break;
    default: break;  // FCR and read-only registers
  }
}

}  // namespace pvio::hv
