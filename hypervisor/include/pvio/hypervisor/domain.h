// A domain's life-cycle states and shutdown reasons. The reasons use Xen's SHUTDOWN_* values
// (xen/sched.h) so the debug-exit port now and SCHEDOP_shutdown later feed the same path.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace pvio::hv {

enum class ShutdownReason : std::uint32_t {
  kPoweroff = 0,  // SHUTDOWN_poweroff
  kReboot = 1,    // SHUTDOWN_reboot
  kSuspend = 2,   // SHUTDOWN_suspend
  kCrash = 3,     // SHUTDOWN_crash
  kWatchdog = 4,  // SHUTDOWN_watchdog
};

enum class DomainState { kRunning, kShutdown, kCrashed };

struct DomainResult {
  DomainState state = DomainState::kRunning;
  ShutdownReason reason = ShutdownReason::kPoweroff;
  std::uint32_t code = 0;  // the guest's exit code for kPoweroff
  std::string message;     // for kCrashed: exit reason, vCPU, RIP and registers
};

// How a device asks the domain to stop (thread-safe, first request wins).
using ShutdownFn = std::function<void(ShutdownReason reason, std::uint32_t code)>;
// How a device drives an interrupt line (ISA IRQ / GSI).
using IrqFn = std::function<void(unsigned gsi, bool level)>;

}  // namespace pvio::hv
