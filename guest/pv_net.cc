// Bare-metal binding of the netfront core for the test guest. Everything runs on vCPU 0 with
// the core called only from the workload's loop: the upcall handler just counts events per
// port (xen.cc), so the core needs no locking.
#include "pv_net.h"

#include <new>

#include "alloc.h"
#include "arch.h"
#include "console.h"
#include "xen.h"
#include "xs_ring.h"

extern "C" size_t strlen(const char*);

namespace pvio::guest {

namespace {

constexpr const char kWatchToken[] = "netfront";
alignas(netfront::Netfront) unsigned char g_front_storage[sizeof(netfront::Netfront)];

// "device/vif/<devid>/backend"
void format_vif_path(char* out, size_t cap, uint32_t devid) {
  const char prefix[] = "device/vif/";
  const char suffix[] = "/backend";
  char digits[12];
  size_t nd = 0;
  do {
    digits[nd++] = static_cast<char>('0' + devid % 10);
    devid /= 10;
  } while (devid != 0);
  size_t n = 0;
  for (size_t i = 0; prefix[i] && n + 1 < cap; ++i) out[n++] = prefix[i];
  while (nd > 0 && n + 1 < cap) out[n++] = digits[--nd];
  for (size_t i = 0; suffix[i] && n + 1 < cap; ++i) out[n++] = suffix[i];
  out[n] = '\0';
}

}  // namespace

bool NetPlatform::init(uint64_t tsc_khz) {
  khz_ = tsc_khz ? tsc_khz : 1000000;
  return xs_ring() != nullptr;
}

// Ring pages come from the page pool: a reconnect frees the old rings and takes them back.
bool NetPlatform::alloc_page(netfront::GuestPage& out) {
  void* p = page_alloc(0);
  if (p == nullptr) return false;
  out.addr = p;
  out.gfn = reinterpret_cast<uint64_t>(p) >> 12;  // identity mapped
  return true;
}
void NetPlatform::free_page(const netfront::GuestPage& page) { page_free(page.addr, 0); }

grant_ref_t NetPlatform::grant_access(domid_t domid, uint64_t gfn, bool readonly) {
  return grant_table().grant_access(domid, gfn, readonly);
}
bool NetPlatform::end_access(grant_ref_t ref) { return grant_table().end_access(ref); }

int NetPlatform::evtchn_alloc_unbound(domid_t remote, evtchn_port_t& port) {
  uint32_t p = 0;
  const int64_t rc = guest::evtchn_alloc_unbound(remote, &p);
  if (rc != 0) return static_cast<int>(rc);
  port = p;
  return 0;
}
void NetPlatform::evtchn_close(evtchn_port_t port) { (void)guest::evtchn_close(port); }
void NetPlatform::notify(evtchn_port_t port) {
  ++counters.doorbells;
  const uint64_t t0 = rdtsc();
  (void)evtchn_send(port);
  counters.doorbell_cycles += rdtsc() - t0;
}

int NetPlatform::xs_read(const char* path, char* buf, size_t cap, size_t& len) {
  return xs_ring_read(path, buf, cap, len);
}
int NetPlatform::xs_write(const char* path, const char* value) {
  return xs_errno(xs_ring()->write(path, value, strlen(value)));
}
int NetPlatform::xs_remove(const char* path) { return xs_errno(xs_ring()->rm(path)); }
int NetPlatform::xs_watch(const char* path) { return xs_errno(xs_ring()->watch(path, kWatchToken)); }
void NetPlatform::xs_unwatch(const char* path) { (void)xs_ring()->unwatch(path, kWatchToken); }
int NetPlatform::xs_wait(uint32_t timeout_ms) { return xs_ring_wait(timeout_ms, khz_); }

void NetPlatform::log(netfront::LogLevel level, const char* msg) {
  static const char* const kNames[] = {"debug", "info", "warn", "error"};
  kprintf("netfront %s: %s\n", kNames[static_cast<unsigned>(level) & 3], msg);
}

bool PvNic::open(uint64_t tsc_khz, uint32_t devid, uint32_t timeout_ms) {
  if (!platform_.init(tsc_khz)) {
    kprintf("PVIO-GUEST net: no Xen interface or xenstore ring\n");
    return false;
  }
  netfront::Limits limits;
  limits.max_queues = 1;  // one vCPU
  limits.gso = false;     // the workloads send whole frames
  const size_t bytes = netfront::Netfront::storage_bytes(limits);
  void* storage = alloc(bytes, 16);
  if (storage == nullptr) {
    kprintf("PVIO-GUEST net: no memory for netfront (%lu bytes)\n", bytes);
    return false;
  }
  // The toolstack may still be writing the vif when the guest gets here: wait for its node.
  {
    char path[64], value[128];
    size_t len = 0;
    format_vif_path(path, sizeof(path), devid);
    const uint64_t deadline = rdtsc() + uint64_t{timeout_ms} * platform_.khz();
    while (platform_.xs_read(path, value, sizeof(value), len) != 0) {
      if (rdtsc() >= deadline) {
        kprintf("PVIO-GUEST net: no %s in xenstore\n", path);
        return false;
      }
      for (int i = 0; i < 100000; ++i) asm volatile("pause");
    }
  }
  front_ = new (g_front_storage) netfront::Netfront(platform_, devid, limits, storage, bytes);
  if (int rc = front_->start(); rc != 0) {
    kprintf("PVIO-GUEST net: netfront start on vif %u failed: %d\n", devid, rc);
    return false;
  }
  if (int rc = front_->connect(timeout_ms); rc != 0 || !front_->carrier()) {
    kprintf("PVIO-GUEST net: netfront connect failed: %d (state %u, backend %u)\n", rc,
            static_cast<unsigned>(front_->state()), static_cast<unsigned>(front_->backend_state()));
    return false;
  }
  tx_port_ = front_->tx_port(0);
  rx_port_ = front_->rx_port(0);
  char mac[18];
  for (int i = 0; i < 6; ++i) {
    const char* hex = "0123456789abcdef";
    mac[3 * i] = hex[front_->mac()[i] >> 4];
    mac[3 * i + 1] = hex[front_->mac()[i] & 15];
    mac[3 * i + 2] = i < 5 ? ':' : '\0';
  }
  const auto& n = front_->negotiated();
  kprintf("net: vif %u connected to %s: mac %s, %u queue(s), split channels %u "
          "(tx port %u, rx port %u), sg %u, csum %u\n",
          devid, front_->backend_path(), mac, n.nr_queues,
          n.split_event_channels ? 1u : 0u, tx_port_, rx_port_, n.sg ? 1u : 0u, n.csum ? 1u : 0u);
  return true;
}

void PvNic::mask_events() {
  mask_port(tx_port_);
  if (rx_port_ != tx_port_) mask_port(rx_port_);
}

void PvNic::unmask_events() {
  unmask_port(tx_port_);
  if (rx_port_ != tx_port_) unmask_port(rx_port_);
}

void PvNic::poll() {
  front_->handle_all_events();
  ++platform_.counters.polls;
}

void PvNic::wait_event() {
  // Unmasking scans what arrived while masked (counted without an interrupt); only when
  // nothing did does the vCPU halt, woken by the event the last poll's rsp_event asked for.
  const uint32_t ports[2] = {tx_port_, rx_port_};
  const unsigned n = rx_port_ != tx_port_ ? 2 : 1;
  unmask_events();
  uint64_t now = 0;
  for (unsigned i = 0; i < n; ++i) now += evtchn_events(ports[i]);
  if (now == seen_) {
    ++platform_.counters.hlts;
    evtchn_wait_any(ports, n, now);
    now = 0;
    for (unsigned i = 0; i < n; ++i) now += evtchn_events(ports[i]);
  }
  seen_ = now;
  mask_events();
}

}  // namespace pvio::guest
