// xennet's device power states: OID_PNP_QUERY_POWER and OID_PNP_SET_POWER. D3 closes the
// backend connection as Linux's xen-netfront does on suspend (Closing, Closed, every grant and
// event channel released); D0 opens a new one (features and MAC read again, new rings, grants
// and channels) and brings the link back.
//
// NDIS (6.20, no NDIS_MINIPORT_ATTRIBUTES_NO_PAUSE_ON_SUSPEND) pauses the adapter before it
// asks for a low-power state and restarts it only after OID_PNP_SET_POWER(D0): in D3 no send
// is outstanding, every receive NBL is back, and nothing may be indicated.
#include <cstring>

#include "adapter.h"

namespace pvio::windows::xennet {

namespace {
constexpr std::uint32_t kConnectTimeoutMs = 30000;
constexpr std::uint32_t kCloseTimeoutMs = 5000;

// The OID's buffer holds one NDIS_DEVICE_POWER_STATE, copied once.
NDIS_STATUS read_state(PVOID buf, ULONG len, ULONG& read, ULONG& needed,
                       NDIS_DEVICE_POWER_STATE& out) {
  if (len < sizeof(NDIS_DEVICE_POWER_STATE)) {
    needed = sizeof(NDIS_DEVICE_POWER_STATE);
    return NDIS_STATUS_INVALID_LENGTH;
  }
  ULONG v;
  std::memcpy(&v, buf, sizeof v);
  if (v < NdisDeviceStateD0 || v > NdisDeviceStateD3) return NDIS_STATUS_INVALID_DATA;
  out = static_cast<NDIS_DEVICE_POWER_STATE>(v);
  read = sizeof v;
  return NDIS_STATUS_SUCCESS;
}
}  // namespace

// NDIS documents that a miniport always answers success: nothing here can stop D1-D3, which
// are all handled as D3 (the connection is closed either way).
NDIS_STATUS Adapter::query_power(PVOID buf, ULONG len, ULONG& read, ULONG& needed) {
  NDIS_DEVICE_POWER_STATE s;
  const NDIS_STATUS st = read_state(buf, len, read, needed, s);
  return st == NDIS_STATUS_INVALID_DATA ? NDIS_STATUS_SUCCESS : st;
}

NDIS_STATUS Adapter::set_power(PVOID buf, ULONG len, ULONG& read, ULONG& needed) {
  NDIS_DEVICE_POWER_STATE s;
  const NDIS_STATUS st = read_state(buf, len, read, needed, s);
  if (st != NDIS_STATUS_SUCCESS) return st;
  if (s == NdisDeviceStateD0) power_up();
  else power_down();
  return NDIS_STATUS_SUCCESS;
}

void Adapter::power_down() {
  steady_ = false;  // watches now only wake the core's xs_wait (control_step)
  KeWaitForSingleObject(&control_mutex_, Executive, KernelMode, FALSE, nullptr);
  if (low_power_ || core_ == nullptr) {
    steady_ = true;
    KeSetEvent(&control_mutex_, 0, FALSE);
    return;
  }
  Deferred d;
  KIRQL irql;
  lock(irql);
  low_power_ = true;
  control_busy_ = true;  // the datapath stays off the core until D0
  // Paused already (NDIS's rule), so nothing should be queued; a send that still is goes back
  // with the low-power status.
  fail_queued(NDIS_STATUS_LOW_POWER_STATE, d);
  unlock(irql);
  flush(d);

  // Closing, wait for the backend to close, end every grant, close the channels, Closed. Sends
  // still on the ring (none when paused) come back through the tx-done handler as failures.
  if (core_->close(kCloseTimeoutMs) != 0) logf(DPFLTR_WARNING_LEVEL, "backend did not close in time");
  lock(irql);
  events_pending_ = false;  // the channels are gone
  take_core_done(d);
  unlock(irql);
  flush(d);
  // NDIS asks for "unknown" out of D0 (NDIS_STATUS_LINK_STATE), not "disconnected".
  if (link_indicated_ != MediaConnectStateUnknown) indicate_link(MediaConnectStateUnknown);
  steady_ = true;
  KeSetEvent(&control_mutex_, 0, FALSE);
}

void Adapter::power_up() {
  steady_ = false;  // watches now only wake the core's xs_wait (control_step)
  KeWaitForSingleObject(&control_mutex_, Executive, KernelMode, FALSE, nullptr);
  if (!low_power_ || core_ == nullptr) {
    steady_ = true;
    KeSetEvent(&control_mutex_, 0, FALSE);
    return;
  }
  low_power_ = false;
  // A backend that is slow or gone does not hold up the OID: the handshake goes on from the
  // watch thread (control_step), and the link comes up when it finishes.
  int rc = core_->reopen();
  if (rc == 0) rc = core_->connect(kConnectTimeoutMs);
  if (rc != 0) logf(DPFLTR_WARNING_LEVEL, "backend not connected on return to D0; waiting for it");
  if (rc == 0 && std::memcmp(core_->mac(), mac_, sizeof mac_) != 0)
    logf(DPFLTR_WARNING_LEVEL, "the backend's MAC changed while in D3; NDIS keeps the old one");

  Deferred d;
  KIRQL irql;
  lock(irql);
  control_busy_ = false;
  take_core_done(d);
  if (events_pending_) {
    events_pending_ = false;
    datapath_events(d);
  }
  unlock(irql);
  flush(d);
  if (core_->carrier()) indicate_link(MediaConnectStateConnected);
  else if (link_indicated_ != MediaConnectStateDisconnected) indicate_link(MediaConnectStateDisconnected);
  steady_ = true;
  KeSetEvent(&control_mutex_, 0, FALSE);
}

}  // namespace pvio::windows::xennet
