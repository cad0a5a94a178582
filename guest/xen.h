// Xen HVM start-up of the test guest, as a Linux HVM guest does it: find Xen's CPUID leaves,
// load the hypercall page through the MSR they name, map shared_info and the grant frames with
// XENMEM_add_to_physmap, set the upcall vector (HVM_PARAM_CALLBACK_IRQ, vector type) with an
// IDT entry and LAPIC EOI, scan the 2-level event bits on each upcall, and talk to xenstore on
// the ring page the VMM publishes.
#pragma once

#include <stdint.h>

#include "pvio/grant_table/grant_table.h"
#include "pvio/hv_abi/ports.h"
#include "pvio/xen/arch-x86/cpuid.h"
#include "pvio/xen/event_channel.h"
#include "pvio/xen/grant_table.h"
#include "pvio/xen/hvm/hvm_op.h"
#include "pvio/xen/hvm/params.h"
#include "pvio/xen/memory.h"
#include "pvio/xen/sched.h"
#include "pvio/xen/version.h"
#include "pvio/xen/xen.h"

namespace pvio::guest {

inline constexpr unsigned kGuestGrantFrames = 4;
inline constexpr uint8_t kUpcallVector = 0xf3;

// How xen_init asks Xen to call it back (command line `callback=`). Each ends in the same
// handler on kUpcallVector, which EOIs the LAPIC.
enum class UpcallDelivery : uint8_t {
  kCallbackVector,  // `vector`: HVM_PARAM_CALLBACK_IRQ, vector type
  kPciIntx,         // `intx`: HVM_PARAM_CALLBACK_IRQ, PCI INTx of the Xen platform device,
                    // its IOAPIC pin routed level-triggered to the vector
  kGsi,             // `gsi`: HVM_PARAM_CALLBACK_IRQ, GSI type on kCallbackGsi, likewise
  kUpcallVector,    // `upcall-vector`: HVMOP_set_evtchn_upcall_vector for vCPU 0
};
inline constexpr unsigned kCallbackGsi = 22;
bool parse_upcall_delivery(const char* s, UpcallDelivery* out);
const char* to_string(UpcallDelivery d);
// Chooses the delivery for the coming xen_init (default: the callback vector).
void set_upcall_delivery(UpcallDelivery d);

struct XenInfo {
  bool found = false;
  bool via_port = false;          // leaves came from pvio-hv's CPUID port, not CPUID
  uint32_t base = 0;              // leaf base (0x40000000 + n * 0x100)
  uint32_t version = 0;
  uint32_t hypercall_msr = 0;
  uint64_t hypercall_page = 0;    // guest-physical address of the page
  uint64_t shared_info_gfn = 0;
  uint64_t grant_frame_gfn[kGuestGrantFrames] = {};
  uint32_t nr_grant_frames = 0, max_grant_frames = 0;
  uint64_t store_pfn = 0, console_pfn = 0;
  uint32_t store_evtchn = 0, console_evtchn = 0;
  uint64_t doorbell_mmio_gpa = 0;  // pvio-hv's MMIO doorbell (kHvmParamPvioDoorbellGpa), or 0
  UpcallDelivery delivery = UpcallDelivery::kCallbackVector;
  uint64_t callback_irq = 0;       // the HVM_PARAM_CALLBACK_IRQ value set (0 for upcall-vector)
  bool upcall_ready = false;
};

// Raw hypercall through the page (entry `nr`, Xen's argument registers). Requires xen_init.
int64_t hypercall(unsigned nr, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0,
                  uint64_t a4 = 0, uint64_t a5 = 0);

// Finds the leaves and loads the hypercall page only. False if this is not a Xen-compatible
// platform.
bool xen_detect(XenInfo* info);
// Full start-up: detect, shared_info, grant table, upcall vector. Prints what failed and
// returns false then.
bool xen_init(XenInfo* info);  // a second call returns the first one's result
const XenInfo& xen_info();

// Event channels. send() rings the doorbell for ports bound to Dom0 and makes the
// EVTCHNOP_send hypercall otherwise.
int64_t evtchn_alloc_unbound(uint16_t remote_dom, uint32_t* port);
int64_t evtchn_send(uint32_t port);
int64_t evtchn_close(uint32_t port);
// Events received on `port` since boot (counted by the upcall handler).
uint64_t evtchn_events(uint32_t port);
uint64_t upcalls();

// Doorbell for Dom0 ports: the MMIO one (a store; default when pvio-hv offers it) or the port
// (`out`, which traps at CPL3). Returns whether the MMIO doorbell is now in use.
bool use_mmio_doorbell(bool on);
uint64_t doorbell_mmio_gpa();  // in use, 0 for the port
struct DoorbellCounts {
  uint64_t mmio = 0, pio = 0;  // doorbells rung each way since boot
};
DoorbellCounts doorbell_counts();

// Event delivery without the interrupt, usable at CPL3 (plain and locked memory accesses
// only): mask/unmask a port in shared_info (unmask scans if an event arrived while masked), and
// scan the pending events as the upcall handler does, counting them in evtchn_events.
void mask_port(uint32_t port);
void unmask_port(uint32_t port);
unsigned poll_events();
void count_event(uint32_t port);
// Sleeps (sti; hlt) until an upcall arrives, or returns at once if `port` has more events
// than `seen`.
void evtchn_wait(uint32_t port, uint64_t seen);
// The same over several ports: returns at once if the sum of their events is not seen_total.
void evtchn_wait_any(const uint32_t* ports, unsigned n, uint64_t seen_total);

evtchn::shared_info* shared_info();
gnttab::GrantTable& grant_table();

}  // namespace pvio::guest
