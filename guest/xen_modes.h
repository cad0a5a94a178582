// Guest modes for the Xen HVM interface (see xen_modes.cc).
#pragma once

#include <stdint.h>

namespace pvio::guest {

[[noreturn]] void run_xen_probe(bool use_xenstore);
[[noreturn]] void run_hypercall_checks(uint64_t mem_bytes);
[[noreturn]] void run_evtchn_echo(uint64_t count);
// mode=control: the guest's PV control driver and nothing else: watches control/shutdown in its
// home, acknowledges "poweroff"/"halt"/"reboot" by clearing the node and calls
// SCHEDOP_shutdown with SHUTDOWN_poweroff or SHUTDOWN_reboot, as a Linux or Mini-OS guest does.
[[noreturn]] void run_control();
[[noreturn]] void run_hostile_xen(uint64_t count, uint64_t seed, uint64_t mem_bytes);

}  // namespace pvio::guest
