// Xen's event-channel interface (xen/include/public/event_channel.h): EVTCHNOP_* numbers, the
// EVTCHNSTAT_* values and the argument structs of HYPERVISOR_event_channel_op, and the size of
// the 2-level ABI whose bits live in shared_info (xen.h).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pvio/xen/xen.h"

namespace pvio::evtchn {

using xen::shared_info;
using xen::vcpu_info;
using xen::xen_ulong_t;

inline constexpr unsigned kLegacyMaxVcpus = xen::XEN_LEGACY_MAX_VCPUS;
inline constexpr unsigned kBitsPerWord = xen::kBitsPerEvtchnWord;  // BITS_PER_EVTCHN_WORD
// EVTCHN_2L_NR_CHANNELS: one selector bit per pending word, one pending bit per port.
inline constexpr unsigned kNrEventChannels = kBitsPerWord * kBitsPerWord;

// EVTCHNOP_* command numbers.
inline constexpr unsigned kEvtchnOpBindInterdomain = 0;
inline constexpr unsigned kEvtchnOpBindVirq = 1;
inline constexpr unsigned kEvtchnOpBindPirq = 2;
inline constexpr unsigned kEvtchnOpClose = 3;
inline constexpr unsigned kEvtchnOpSend = 4;
inline constexpr unsigned kEvtchnOpStatus = 5;
inline constexpr unsigned kEvtchnOpAllocUnbound = 6;
inline constexpr unsigned kEvtchnOpBindIpi = 7;
inline constexpr unsigned kEvtchnOpBindVcpu = 8;
inline constexpr unsigned kEvtchnOpUnmask = 9;

// EVTCHNSTAT_* values reported by EVTCHNOP_status (kEvtchnStatX is EVTCHNSTAT_x).
inline constexpr uint32_t kEvtchnStatClosed = 0;
inline constexpr uint32_t kEvtchnStatUnbound = 1;
inline constexpr uint32_t kEvtchnStatInterdomain = 2;
inline constexpr uint32_t kEvtchnStatPirq = 3;
inline constexpr uint32_t kEvtchnStatVirq = 4;
inline constexpr uint32_t kEvtchnStatIpi = 5;

struct evtchn_alloc_unbound {
  domid_t dom, remote_dom;
  evtchn_port_t port;  // OUT
};
struct evtchn_bind_interdomain {
  domid_t remote_dom;
  uint16_t pad0;
  evtchn_port_t remote_port;
  evtchn_port_t local_port;  // OUT
};
// VIRQ_* numbers bound with EVTCHNOP_bind_virq (xen.h): per-vCPU virtual interrupts.
inline constexpr uint32_t VIRQ_TIMER = 0;  // the vCPU's one-shot timer (set_timer_op)
inline constexpr uint32_t NR_VIRQS = 24;

struct evtchn_bind_virq {
  uint32_t virq;       // VIRQ_*
  uint32_t vcpu;       // the vCPU that receives it
  evtchn_port_t port;  // OUT
};
struct evtchn_port_op {  // evtchn_send, evtchn_close, evtchn_unmask: just the port
  evtchn_port_t port;
};
struct evtchn_status {
  domid_t dom;
  uint16_t pad0;
  evtchn_port_t port;
  uint32_t status;  // OUT: EVTCHNSTAT_*
  uint32_t vcpu;    // OUT
  union {
    struct {
      domid_t dom;
    } unbound;
    struct {
      domid_t dom;
      uint16_t pad;
      evtchn_port_t port;
    } interdomain;
    uint32_t pirq;
    uint32_t virq;
  } u;
};

static_assert(sizeof(evtchn_alloc_unbound) == 8);
static_assert(sizeof(evtchn_bind_interdomain) == 12);
static_assert(sizeof(evtchn_bind_virq) == 12);
static_assert(sizeof(evtchn_status) == 24);
static_assert(offsetof(evtchn_status, u) == 16);

}  // namespace pvio::evtchn
