// 16550A UART at COM1 (0x3F8): enough of THR/RBR, IER, IIR, LCR (with DLAB), MCR, LSR, MSR and
// SCR for a guest to print. Output goes to a log file descriptor and optionally a terminal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "pvio/hypervisor/io_bus.h"

namespace pvio::hv {

inline constexpr std::uint16_t kCom1Port = 0x3f8;

class Serial16550 : public Device {
 public:
  // Either fd may be -1. The device does not own them.
  Serial16550(int log_fd, int console_fd) : Device("serial"), log_fd_(log_fd), console_fd_(console_fd) {}
  ~Serial16550() override;

  std::uint32_t pio_read(int region, std::uint16_t offset, unsigned size) override;
  void pio_write(int region, std::uint16_t offset, unsigned size, std::uint32_t value) override;
  void flush();
  // Console output that did not come through the UART registers (Xen's console_io).
  void write_console(const char* s, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) emit(s[i]);
  }

 private:
  void emit(char c);

  int log_fd_, console_fd_;
  std::string pending_;  // buffered to whole lines so a log reader sees complete lines
  std::uint8_t ier_ = 0, lcr_ = 0x03, mcr_ = 0, scr_ = 0, dll_ = 0x0c, dlm_ = 0;
};

}  // namespace pvio::hv
