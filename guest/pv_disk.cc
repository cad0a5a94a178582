// Bare-metal binding of the blkfront core for the test guest. Everything runs on vCPU 0 with the
// core called only from the main loop: the upcall handler just counts events per port
// (xen.cc), and the loop here calls handle_event, so the core needs no locking.
#include "pv_disk.h"

#include <new>

#include "alloc.h"
#include "arch.h"
#include "console.h"
#include "cpu.h"
#include "xen.h"
#include "xs_ring.h"

extern "C" size_t strlen(const char*);

namespace pvio::guest {

namespace {

constexpr const char kWatchToken[] = "blkfront";

alignas(blkfront::Blkfront) unsigned char g_front_storage[sizeof(blkfront::Blkfront)];

struct SyncIo {
  volatile bool done = false;
};
void sync_done(blkfront::BlockIo* io) { static_cast<SyncIo*>(io->cookie)->done = true; }

// "device/vbd/<devid>/backend"
void format_vbd_path(char* out, size_t cap, uint32_t devid) {
  const char prefix[] = "device/vbd/";
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

// Diagnostic for the benchmark: what 1000 load+store pairs cost on a grant-table frame, on the
// ring page and on plain RAM, and 1000 ALU iterations. Where guest memory is shadowed or
// emulated, these tell which accesses of the datapath are the expensive ones.
uint64_t pairs_ns(volatile uint64_t* p, uint64_t khz) {
  const uint64_t t0 = rdtsc();
  for (int i = 0; i < 1000; ++i) p[i & 7] = p[(i + 1) & 7] + 1;
  return (rdtsc() - t0) * 1000000ull / khz;
}

}  // namespace

void PvDisk::probe_access_cost(uint64_t khz) {
  const XenInfo& info = xen_info();
  // The last 8 words of the last grant frame: entries this guest never hands out first.
  auto* grant = reinterpret_cast<volatile uint64_t*>(
      (info.grant_frame_gfn[kGuestGrantFrames - 1] << 12) + 4096 - 64);
  auto* ram = static_cast<volatile uint64_t*>(alloc(4096));
  uint64_t saved[8];
  for (int i = 0; i < 8; ++i) saved[i] = grant[i];
  const uint64_t g = pairs_ns(grant, khz);
  for (int i = 0; i < 8; ++i) grant[i] = saved[i];
  const uint64_t r = ram != nullptr ? pairs_ns(ram, khz) : 0;
  uint64_t x = 1;
  const uint64_t t0 = rdtsc();
  for (int i = 0; i < 1000; ++i) asm volatile("imul $3, %0, %0" : "+r"(x));
  const uint64_t alu = (rdtsc() - t0) * 1000000ull / khz;
  kprintf("pv: cost of 1000 load+store pairs: grant frame %lu ns, RAM %lu ns; 1000 ALU loop "
          "iterations %lu ns\n", g, r, alu);
}

bool BareMetalPlatform::init(uint64_t tsc_khz) {
  khz_ = tsc_khz ? tsc_khz : 1000000;
  return xs_ring() != nullptr;
}

// Ring pages come from the page pool: a reconnect frees the old ring and takes it back.
bool BareMetalPlatform::alloc_pages(unsigned order, blkfront::GuestPages& out) {
  void* p = page_alloc(order);
  if (p == nullptr) return false;
  out.addr = p;
  out.gfn = reinterpret_cast<uint64_t>(p) >> 12;  // identity mapped
  return true;
}
void BareMetalPlatform::free_pages(unsigned order, const blkfront::GuestPages& pages) {
  page_free(pages.addr, order);
}

grant_ref_t BareMetalPlatform::grant_access(domid_t domid, uint64_t gfn, bool readonly) {
  return grant_table().grant_access(domid, gfn, readonly);
}
bool BareMetalPlatform::end_access(grant_ref_t ref) { return grant_table().end_access(ref); }

int BareMetalPlatform::evtchn_alloc_unbound(domid_t remote, evtchn_port_t& port) {
  uint32_t p = 0;
  const int64_t rc = guest::evtchn_alloc_unbound(remote, &p);
  if (rc != 0) return static_cast<int>(rc);
  port = p;
  return 0;
}
void BareMetalPlatform::evtchn_close(evtchn_port_t port) { (void)guest::evtchn_close(port); }
void BareMetalPlatform::notify(evtchn_port_t port) {
  ++counters.doorbells;
  const uint64_t t0 = rdtsc();
  (void)evtchn_send(port);
  counters.doorbell_cycles += rdtsc() - t0;
}

int BareMetalPlatform::xs_read(const char* path, char* buf, size_t cap, size_t& len) {
  return xs_ring_read(path, buf, cap, len);
}
int BareMetalPlatform::xs_write(const char* path, const char* value) {
  return xs_errno(xs_ring()->write(path, value, strlen(value)));
}
int BareMetalPlatform::xs_remove(const char* path) { return xs_errno(xs_ring()->rm(path)); }
int BareMetalPlatform::xs_watch(const char* path) { return xs_errno(xs_ring()->watch(path, kWatchToken)); }
void BareMetalPlatform::xs_unwatch(const char* path) { (void)xs_ring()->unwatch(path, kWatchToken); }

int BareMetalPlatform::xs_wait(uint32_t timeout_ms) { return xs_ring_wait(timeout_ms, khz_); }

void BareMetalPlatform::log(blkfront::LogLevel level, const char* msg) {
  static const char* const kNames[] = {"debug", "info", "warn", "error"};
  kprintf("blkfront %s: %s\n", kNames[static_cast<unsigned>(level) & 3], msg);
}

bool PvDisk::open(uint64_t tsc_khz, uint32_t devid, const blkfront::Limits& limits,
                  uint32_t timeout_ms) {
  if (!platform_.init(tsc_khz)) {
    kprintf("PVIO-GUEST pv: no Xen interface or xenstore ring\n");
    return false;
  }
  const size_t bytes = blkfront::Blkfront::storage_bytes(limits);
  void* storage = alloc(bytes, 16);
  if (storage == nullptr) {
    kprintf("PVIO-GUEST pv: no memory for blkfront (%lu bytes)\n", bytes);
    return false;
  }
  // The toolstack may still be writing the vbd when the guest gets here: wait for its node.
  {
    char path[64], value[128];
    size_t len = 0;
    format_vbd_path(path, sizeof(path), devid);
    const uint64_t deadline = rdtsc() + uint64_t{timeout_ms} * platform_.khz();
    while (platform_.xs_read(path, value, sizeof(value), len) != 0) {
      if (rdtsc() >= deadline) {
        kprintf("PVIO-GUEST pv: no %s in xenstore\n", path);
        return false;
      }
      for (int i = 0; i < 100000; ++i) asm volatile("pause");
    }
  }
  front_ = new (g_front_storage) blkfront::Blkfront(platform_, devid, limits, storage, bytes);
  if (int rc = front_->start(); rc != 0) {
    kprintf("PVIO-GUEST pv: blkfront start on vbd %u failed: %d\n", devid, rc);
    return false;
  }
  if (int rc = front_->connect(timeout_ms); rc != 0 || !front_->connected()) {
    kprintf("PVIO-GUEST pv: blkfront connect failed: %d (state %u)\n", rc,
            static_cast<unsigned>(front_->state()));
    return false;
  }
  port_ = front_->queue_port(0);
  probe_access_cost(tsc_khz);
  const auto& n = front_->negotiated();
  kprintf("pv: vbd %u connected to %s: %lu sectors, %u queue(s), ring order %u (%u slots), "
          "indirect %u, persistent %u, port %u\n",
          devid, front_->backend_path(), front_->disk().sectors, n.nr_queues, n.ring_page_order,
          n.ring_size, n.max_indirect_segments, n.persistent ? 1u : 0u, port_);
  return true;
}

bool PvDisk::follow_backend() {
  if (xs_ring_wait(0, platform_.khz()) == 0) backend_pending_ = true;
  if (!backend_pending_ && retry_at_ == 0) return false;
  if (retry_at_ != 0 && rdtsc() < retry_at_) return false;
  backend_pending_ = false;
  retry_at_ = 0;
  (void)front_->backend_changed();
  // A failed step is retried after 1 ms doubling to 1 s (the core counts the failures); the
  // guest has no timer, so the wait for it spins instead of halting.
  if (const uint32_t failed = front_->failures_in_a_row(); failed != 0)
    retry_at_ = rdtsc() + (uint64_t{1} << (failed < 10 ? failed : 10)) * platform_.khz();
  if (front_->connected()) port_ = front_->queue_port(0);
  return true;
}

void PvDisk::process(bool wait, uint64_t poll_cycles) {
  // Progress is counted in responses: a completion callback may resubmit at once, so the
  // number of active I/Os says nothing.
  const uint64_t before = front_->stats().responses;
  const uint64_t seen = evtchn_events(port_);
  // Watch events come on the store port: counted before the watch is looked at, so one that
  // arrives after the look still ends the halt below.
  const uint32_t store_port = xen_info().store_evtchn;
  const uint64_t store_seen = evtchn_events(store_port);
  front_->handle_all_events();
  ++platform_.counters.polls;
  if (front_->stats().responses != before) return;
  if (follow_backend() || !wait || front_->active_ios() == 0) return;
  if (retry_at_ != 0) {
    asm volatile("pause");
    return;
  }
  if (!adaptive_ || budget_ > poll_cycles) budget_ = poll_cycles;
  const uint64_t spin = budget_;
  const uint64_t until = rdtsc() + spin;
  // While spinning, the backend's notifications must not interrupt us: at CPL0 with cli; at
  // CPL3, where cli/sti would each trap into this kernel (#GP, emulated), by masking the port in
  // shared_info, which is a locked store. Unmasking scans what arrived meanwhile without an
  // interrupt (unmask_port), so the spin and its end run without a privileged instruction.
  // No PAUSE in this loop: KVM's pause-loop exiting turns a run of PAUSEs into an exit that
  // yields the vCPU thread, which on a loaded host costs a scheduler slice per I/O.
  const bool user = current_cpl() == 3;
  if (spin != 0) {
    if (user) mask_port(port_);
    else asm volatile("cli" ::: "memory");
    while (rdtsc() < until) {
      front_->handle_all_events();
      ++platform_.counters.polls;
      if (front_->stats().responses != before) break;
    }
    if (user) unmask_port(port_);
    else asm volatile("sti" ::: "memory");
  }
  if (front_->stats().responses != before) return;
  // A notification that came while the port was masked (counted by unmask_port): responses.
  if (evtchn_events(port_) != seen) {
    front_->handle_all_events();
    return;
  }
  // Nothing yet: halt until the backend's notification (handle_event re-armed rsp_event in
  // final_check_for_responses, so one is due with the next response). evtchn_wait returns at
  // once if an event arrived since `seen`.
  const uint32_t ports[2] = {port_, store_port};
  const bool halting = evtchn_events(port_) + evtchn_events(store_port) == seen + store_seen;
  if (halting) ++platform_.counters.hlts;
  const uint64_t halted_from = rdtsc();
  evtchn_wait_any(ports, 2, seen + store_seen);
  front_->handle_all_events();
  if (adaptive_ && poll_cycles != 0 && halting) {
    // How long the response took is the halt minus what a halt costs by itself (the exit, the
    // upcall, the way back: here hundreds of microseconds of emulated kernel code, so the raw
    // halt says nothing about the backend). The cost is the shortest halt seen, let drift up
    // slowly so a changed host is followed.
    const uint64_t halted = rdtsc() - halted_from;
    halt_floor_ = halted < halt_floor_ ? halted : halt_floor_ + halt_floor_ / 64;
    const uint64_t waited = spin + (halted - (halted < halt_floor_ ? halted : halt_floor_));
    const uint64_t start = 10 * platform_.khz() / 1000;
    if (waited <= poll_cycles) {
      const uint64_t grown = budget_ * 2 > start ? budget_ * 2 : start;
      budget_ = grown < poll_cycles ? grown : poll_cycles;
    } else {
      budget_ = budget_ / 2 < start ? 0 : budget_ / 2;
    }
  }
}

blkfront::IoStatus PvDisk::rw_sync(bool write, uint64_t sector, uint32_t nr_sectors, void* buf) {
  constexpr uint32_t kMaxPages = 256;
  blkfront::DataPage pages[kMaxPages];
  const uint64_t bytes = uint64_t{nr_sectors} * 512;
  const uint32_t nr_pages = static_cast<uint32_t>((bytes + 4095) / 4096);
  if (nr_pages == 0 || nr_pages > kMaxPages || (reinterpret_cast<uint64_t>(buf) & 4095) != 0)
    return blkfront::IoStatus::Invalid;
  for (uint32_t i = 0; i < nr_pages; ++i) {
    pages[i].addr = static_cast<uint8_t*>(buf) + i * 4096;
    pages[i].gfn = reinterpret_cast<uint64_t>(pages[i].addr) >> 12;
  }
  SyncIo s;
  blkfront::BlockIo io;
  io.op = write ? blkfront::Op::Write : blkfront::Op::Read;
  io.sector = sector;
  io.nr_sectors = nr_sectors;
  io.pages = pages;
  io.nr_pages = nr_pages;
  io.done = sync_done;
  io.cookie = &s;
  front_->submit(&io);
  while (!s.done) process(true, 0);
  return io.status;
}

blkfront::IoStatus PvDisk::flush_sync() {
  const auto& n = front_->negotiated();
  if (!n.flush_cache && !n.barrier) return blkfront::IoStatus::Ok;  // nothing to flush
  SyncIo s;
  blkfront::BlockIo io;
  io.op = blkfront::Op::Flush;
  io.done = sync_done;
  io.cookie = &s;
  front_->submit(&io);
  while (!s.done) process(true, 0);
  return io.status;
}

}  // namespace pvio::guest
