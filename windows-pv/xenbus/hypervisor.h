// The hypervisor as xenbus.sys uses it: the per-domain pages (shared_info, grant-table frames,
// xenstore ring), event-channel operations and the upcall route. On Windows these are
// hypercalls through the installed hypercall page (hypervisor_hvm.cc); the host tests map
// them onto a user-mode pvio domain (tests/windows-pv/env/hypervisor_domain.cc), so the bus
// driver above runs unchanged against the real pvio services.
#pragma once

#include <cstdint>

#include "pvio/wdk/wdm.h"
#include "pvio/xen/grant_table.h"
#include "pvio/xen/io/xs_wire.h"
#include "pvio/xen/xen.h"

namespace pvio::windows::xenbus {

struct XenPages {
  xen::shared_info* shared_info = nullptr;
  gnttab::grant_entry_v1* grant_entries = nullptr;  // nr_grant_frames frames, contiguous in VA
  std::uint32_t nr_grant_entries = 0;
  xs::xenstore_domain_interface* store = nullptr;
  evtchn_port_t store_port = 0;
};

// PASSIVE_LEVEL. Finds Xen, installs the hypercall page, maps shared_info and the grant-table
// frames (XENMEM_add_to_physmap) and the xenstore ring (HVM_PARAM_STORE_PFN / _EVTCHN).
NTSTATUS hv_connect(XenPages* out);
// PASSIVE_LEVEL. Undoes hv_connect (the upcall route must already be cleared).
void hv_disconnect();

// HVM_PARAM_CALLBACK_IRQ (0 clears the route). PASSIVE_LEVEL.
long hv_set_callback_via(std::uint64_t value);

// EVTCHNOP_*: alloc_unbound and close at PASSIVE_LEVEL, send and unmask at any IRQL up to
// DISPATCH_LEVEL. 0 or a negative Xen errno.
long hv_evtchn_alloc_unbound(domid_t remote, evtchn_port_t* port);
long hv_evtchn_close(evtchn_port_t port);
long hv_evtchn_send(evtchn_port_t port);
long hv_evtchn_unmask(evtchn_port_t port);

// The emulated-device unplug at START_DEVICE: reads the registry state, probes the ports,
// decides (unplug.h) and writes the mask. False when the protocol is absent.
struct UnplugOutcome {
  bool protocol_present = false;
  std::uint16_t mask = 0;
  const char* reason = "";
};
UnplugOutcome hv_unplug_emulated_devices();

// HVM_PARAM_CALLBACK_IRQ for a PCI INTx line (Xen's hvm/params.h: type 1, domain in bits
// 47:32, bus 31:16, devfn 15:8, INTx 1:0 with 0 = INTA).
constexpr std::uint64_t callback_via_pci_intx(std::uint16_t segment, std::uint8_t bus,
                                              std::uint8_t device, std::uint8_t function,
                                              std::uint8_t intx) {
  return (std::uint64_t{1} << 56) | (std::uint64_t{segment} << 32) |
         (std::uint64_t{bus} << 16) |
         (std::uint64_t{static_cast<std::uint8_t>((device << 3) | (function & 7))} << 8) |
         (intx & 3u);
}

}  // namespace pvio::windows::xenbus
