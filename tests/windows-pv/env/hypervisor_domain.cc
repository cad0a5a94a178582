// hypervisor.h over a user-mode pvio domain (see hypervisor_domain.h).
#include "hypervisor_domain.h"

#include <atomic>

#include "hypervisor.h"
#include "kernel.h"
#include "pvio/domain/domain.h"
#include "pvio/xen/hvm/params.h"

namespace pvio::windows::test {

namespace {
domain::Domain* g_dom = nullptr;
ULONG g_vector = 0;
std::atomic<std::uint64_t> g_callback_via{0};
std::atomic<int> g_connections{0};
std::atomic<PDEVICE_OBJECT> g_platform_pdo{nullptr};

bool platform_in_d0() {
  PDEVICE_OBJECT pdo = g_platform_pdo.load();
  if (pdo == nullptr) return true;
  PDEVICE_OBJECT top = attached_top(pdo);
  if (top == pdo) return true;
  const DEVICE_POWER_STATE s = device_power_state(top);
  return s == PowerDeviceUnspecified || s == PowerDeviceD0;  // started devices are in D0
}

// The platform ISR on its line; out of D0 it must leave every pending bit where it is.
bool raise_checked() {
  if (platform_in_d0() || g_dom == nullptr) return raise_interrupt(g_vector);
  auto* s = reinterpret_cast<xen::shared_info*>(g_dom->shared_info());
  const std::uint8_t upcall = __atomic_load_n(&s->vcpu_info[0].evtchn_upcall_pending, __ATOMIC_ACQUIRE);
  const xen::xen_ulong_t sel = __atomic_load_n(&s->vcpu_info[0].evtchn_pending_sel, __ATOMIC_ACQUIRE);
  xen::xen_ulong_t pending[xen::kBitsPerEvtchnWord];
  for (unsigned w = 0; w < xen::kBitsPerEvtchnWord; ++w)
    pending[w] = __atomic_load_n(&s->evtchn_pending[w], __ATOMIC_ACQUIRE);
  const bool claimed = raise_interrupt(g_vector);
  // Only the guest clears these bits (Xen only sets them): a cleared one was taken.
  bool touched = upcall != 0 && __atomic_load_n(&s->vcpu_info[0].evtchn_upcall_pending, __ATOMIC_ACQUIRE) == 0;
  touched |= (sel & ~__atomic_load_n(&s->vcpu_info[0].evtchn_pending_sel, __ATOMIC_ACQUIRE)) != 0;
  for (unsigned w = 0; w < xen::kBitsPerEvtchnWord; ++w)
    touched |= (pending[w] & ~__atomic_load_n(&s->evtchn_pending[w], __ATOMIC_ACQUIRE)) != 0;
  if (touched) violation("the platform ISR took events from shared_info while its device was out of D0");
  if (claimed) violation("the platform ISR claimed an interrupt while its device was out of D0");
  return claimed;
}
}  // namespace

void set_platform_device(PDEVICE_OBJECT pdo) { g_platform_pdo = pdo; }
bool raise_shared_interrupt() { return raise_checked(); }

void set_hypervisor_domain(domain::Domain* dom, ULONG upcall_vector) {
  g_dom = dom;
  g_vector = upcall_vector;
  g_callback_via = 0;
}
std::uint64_t callback_via() { return g_callback_via.load(); }
int hypervisor_connections() { return g_connections.load(); }

}  // namespace pvio::windows::test

namespace pvio::windows::xenbus {

using test::g_dom;

NTSTATUS hv_connect(XenPages* out) {
  test::require_irql(PASSIVE_LEVEL, "hv_connect");
  if (g_dom == nullptr) return STATUS_NO_SUCH_DEVICE;  // "not running on Xen"
  out->shared_info = reinterpret_cast<xen::shared_info*>(g_dom->shared_info());
  // The frames are consecutive guest frames in the domain's one mapping of its RAM.
  const auto frames = g_dom->grant_frame_gfns();
  out->grant_entries = reinterpret_cast<gnttab::grant_entry_v1*>(g_dom->page(frames[0]));
  for (std::size_t i = 1; i < frames.size(); ++i)
    if (g_dom->page(frames[i]) != g_dom->page(frames[0]) + i * 4096) return STATUS_UNSUCCESSFUL;
  out->nr_grant_entries = static_cast<std::uint32_t>(frames.size() * gnttab::kEntriesPerFrame);
  out->store = reinterpret_cast<xs::xenstore_domain_interface*>(g_dom->xenstore_interface());
  out->store_port = g_dom->xenstore_port();
  ++test::g_connections;
  return STATUS_SUCCESS;
}

void hv_disconnect() {
  test::require_irql(PASSIVE_LEVEL, "hv_disconnect");
  --test::g_connections;
}

long hv_set_callback_via(std::uint64_t value) {
  test::require_irql(PASSIVE_LEVEL, "HVMOP_set_param");
  test::g_callback_via = value;
  if (value == 0) {
    // No route: Xen leaves the events pending in shared_info and raises nothing.
    g_dom->set_upcall_hook([] {});
    return 0;
  }
  // Only the PCI INTx route is modelled: the line is the platform device's interrupt.
  if ((value >> xen::HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT) != xen::HVM_PARAM_CALLBACK_TYPE_PCI_INTX)
    return -22;
  g_dom->set_upcall_hook([] {
    if (!test::platform_in_d0())
      test::violation("Xen raised the platform device's INTx while the device was out of D0 "
                      "(the callback route must be cleared first: no ISR may claim the line)");
    test::raise_checked();
  });
  return 0;
}

long hv_evtchn_alloc_unbound(domid_t remote, evtchn_port_t* port) {
  test::require_irql(PASSIVE_LEVEL, "EVTCHNOP_alloc_unbound");
  const evtchn::PortResult r = g_dom->alloc_unbound(remote, nullptr);
  if (r.rc != 0) return r.rc;
  *port = r.port;
  return 0;
}
long hv_evtchn_close(evtchn_port_t port) {
  test::require_irql(PASSIVE_LEVEL, "EVTCHNOP_close");
  return g_dom->close(port);
}
long hv_evtchn_send(evtchn_port_t port) {
  test::require_irql(DISPATCH_LEVEL, "EVTCHNOP_send");
  return g_dom->send(port);
}
long hv_evtchn_unmask(evtchn_port_t port) {
  test::require_irql(DISPATCH_LEVEL, "EVTCHNOP_unmask");
  return g_dom->unmask(port);
}

UnplugOutcome hv_unplug_emulated_devices() {
  return UnplugOutcome{false, 0, "no device model (user-mode domain)"};
}

}  // namespace pvio::windows::xenbus
