// The guest's xenstore ring client, shared by the PV drivers' bindings. Waits for replies by
// halting until the store port's next event (xen.cc counts events per port).
#include "xs_ring.h"

#include <new>

#include "arch.h"
#include "xen.h"

namespace pvio::guest {

namespace {

// Xen errno values (public/errno.h).
constexpr int kEperm = 1, kEnoent = 2, kEio = 5, kEagain = 11, kEinval = 22, kEnospc = 28,
              kEtimedout = 110;

struct XsWait {
  uint32_t port = 0;
  uint64_t seen = 0;
};
XsWait g_xs_wait;
void xs_notify(void* ctx) { evtchn_send(static_cast<XsWait*>(ctx)->port); }
void xs_block(void* ctx) {
  auto* w = static_cast<XsWait*>(ctx);
  evtchn_wait(w->port, w->seen);
  w->seen = evtchn_events(w->port);
}
alignas(8) unsigned char g_xs_storage[sizeof(XsClient)];
XsClient* g_xs = nullptr;
unsigned g_lost_seen = 0;

}  // namespace

XsClient* xs_ring() {
  if (g_xs != nullptr) return g_xs;
  const XenInfo& info = xen_info();
  if (!info.upcall_ready || info.store_pfn == 0) return nullptr;
  g_xs_wait.port = info.store_evtchn;
  g_xs_wait.seen = evtchn_events(info.store_evtchn);
  auto* page = reinterpret_cast<xs::xenstore_domain_interface*>(info.store_pfn << 12);
  g_xs = new (g_xs_storage) XsClient(page, xs::GuestPlatform{&g_xs_wait, xs_notify, xs_block});
  return g_xs;
}

int xs_errno(xs::XsError e) {
  switch (e) {
    case xs::XsError::None: return 0;
    case xs::XsError::NoEnt: return -kEnoent;
    case xs::XsError::TooBig: return -kEnospc;
    case xs::XsError::Inval: return -kEinval;
    case xs::XsError::Acces: case xs::XsError::Perm: return -kEperm;
    case xs::XsError::Again: return -kEagain;
    default: return -kEio;
  }
}

int xs_ring_read(const char* path, char* buf, size_t cap, size_t& len) {
  if (cap == 0) return -kEnospc;
  size_t n = 0;
  const int rc = xs_errno(g_xs->read(path, buf, cap - 1, &n));
  if (rc != 0) return rc;
  buf[n] = '\0';
  len = n;
  return 0;
}

int xs_ring_wait(uint32_t timeout_ms, uint64_t tsc_khz) {
  const uint64_t deadline = rdtsc() + uint64_t{timeout_ms} * tsc_khz;
  char path[128], token[32];
  for (;;) {
    bool fired = false;
    while (g_xs->read_watch(path, sizeof(path), token, sizeof(token), false)) fired = true;
    if (g_xs->lost_events() != g_lost_seen) {
      g_lost_seen = g_xs->lost_events();
      fired = true;
    }
    if (fired) return 0;
    if (rdtsc() >= deadline) return -kEtimedout;
    asm volatile("pause");
  }
}

}  // namespace pvio::guest
