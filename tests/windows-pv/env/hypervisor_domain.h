// xenbus.sys's hypervisor layer (windows-pv/xenbus/hypervisor.h) in the host tests: a user-mode
// pvio domain. Its shared_info, grant-table frames and xenstore ring are the pages the driver
// maps; event-channel operations are the domain's; HVM_PARAM_CALLBACK_IRQ routes the domain's
// upcalls to the interrupt vector the test gave the platform device, so the driver's ISR scans
// shared_info itself. The domain has no device model: the unplug protocol is absent.
#pragma once

#include <cstdint>

#include "pvio/wdk/wdm.h"

namespace pvio::domain {
class Domain;
}

namespace pvio::windows::test {

void set_hypervisor_domain(domain::Domain* dom, ULONG upcall_vector);
// The platform PCI device's PDO: the device whose power state (the driver's PoSetPowerState on
// the stack above it) says whether its ISR may touch shared_info. Out of D0:
//  - Xen raising the INTx line (the callback route still set) is a violation: the line is
//    level-triggered and no ISR may claim it, so it would storm;
//  - an ISR that takes anything from shared_info is a violation.
void set_platform_device(PDEVICE_OBJECT pdo);
// Another device on the platform device's shared INTx line interrupts: the platform ISR runs
// too (with the checks above). Returns whether an ISR claimed the interrupt.
bool raise_shared_interrupt();
// The last HVM_PARAM_CALLBACK_IRQ value the driver set (0: cleared).
std::uint64_t callback_via();
// hv_connect calls not yet undone by hv_disconnect.
int hypervisor_connections();

}  // namespace pvio::windows::test
