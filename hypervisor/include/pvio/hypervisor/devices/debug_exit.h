// Debug exit port (like QEMU's isa-debug-exit): an `out` of a value to kDebugExitPort powers
// the domain off with that value as its exit code. Xen's SCHEDOP_shutdown takes the same path.
#pragma once

#include "pvio/hypervisor/domain.h"
#include "pvio/hypervisor/io_bus.h"

namespace pvio::hv {

class DebugExit : public Device {
 public:
  explicit DebugExit(ShutdownFn shutdown) : Device("debug-exit"), shutdown_(std::move(shutdown)) {}
  std::uint32_t pio_read(int, std::uint16_t, unsigned) override { return 0; }
  void pio_write(int, std::uint16_t, unsigned, std::uint32_t value) override {
    shutdown_(ShutdownReason::kPoweroff, value);
  }

 private:
  ShutdownFn shutdown_;
};

}  // namespace pvio::hv
