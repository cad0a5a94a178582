// The network workloads of the test kernel (mode=net): transmit, receive, echo.
#pragma once

#include <stdint.h>

namespace pvio::guest {

struct NetOptions {
  char op[8] = "tx";         // tx | rx | echo
  uint64_t pkt = 64;         // frame bytes without FCS, 60..1514
  uint64_t count = 0;        // packets (tx: to send; rx/echo: to expect); 0 = by time only
  uint64_t time_ms = 0;      // tx: sending time; rx/echo: time after the first frame
  uint64_t idle_ms = 3000;   // rx/echo: stop after this long without a frame (after the first)
  uint64_t wait_ms = 30000;  // rx/echo: how long to wait for the first frame
  uint64_t batch = 32;       // tx: packets per publication (one notification at most)
  uint64_t vif = 0;          // device/vif/<vif>
  // 1: halt for the backend's event when idle instead of polling. Default (255): tx halts (a
  // tx response always comes; the spin would take the CPU the backend needs), rx and echo poll
  // (the guest has no timer: a halt after the sender stopped would never end).
  uint64_t halt = 255;
  // rx/echo with halt=1: keep polling this long after the last frame before halting (a reply
  // that comes within it costs no halt and no upcall; 0 halts at the first empty poll).
  uint64_t spin_us = 0;
  uint64_t go = 0;           // tx: send hellos and start only when a frame of ours arrives
  uint64_t verify = 1;       // rx/echo: check every frame's payload
  uint8_t dst[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};  // tx and hello destination
};

// Runs the workload on the PV NIC, prints one PVIO-RESULT line and powers off. xen_init must
// have run.
[[noreturn]] void run_net_workload(const NetOptions& o, uint64_t tsc_khz);

}  // namespace pvio::guest
