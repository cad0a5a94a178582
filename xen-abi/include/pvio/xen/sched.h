// Xen's scheduler interface (xen/include/public/sched.h): SCHEDOP_* sub-commands of
// HYPERVISOR_sched_op and the shutdown reasons.
#pragma once

#include <stdint.h>

#include "pvio/xen/xen.h"

namespace pvio::xen {

inline constexpr unsigned SCHEDOP_yield = 0;
inline constexpr unsigned SCHEDOP_block = 1;
inline constexpr unsigned SCHEDOP_shutdown = 2;
inline constexpr unsigned SCHEDOP_poll = 3;

inline constexpr uint32_t SHUTDOWN_poweroff = 0;
inline constexpr uint32_t SHUTDOWN_reboot = 1;
inline constexpr uint32_t SHUTDOWN_suspend = 2;
inline constexpr uint32_t SHUTDOWN_crash = 3;
inline constexpr uint32_t SHUTDOWN_watchdog = 4;

struct sched_shutdown {
  uint32_t reason;  // SHUTDOWN_*
};
static_assert(sizeof(sched_shutdown) == 4);
// SCHEDOP_poll: block until one of the listed ports is pending or the timeout (absolute
// system time in ns, 0 = none) passes.
struct sched_poll {
  xen_guest_handle_t ports;  // evtchn_port_t[nr_ports]
  uint32_t nr_ports;
  uint64_t timeout;
};

}  // namespace pvio::xen
