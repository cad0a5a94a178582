// Workload runner: `mode=boot|workload|xcheck|unplug|crash|hostile|xen-probe|hypercalls|evtchn|
// control|hostile-xen disk=ide|pv xfer=dma|pio rw=read|write|randread|randwrite bs=4096 qd=N
// count=N | time=MS verify=1 seed=S size=BYTES`, PV tuning `devid= poll_us= poll_adapt= ring_order=
// indirect= persistent=`, and `mode=xcheck from=ide|pv to=pv|ide` (write through one disk,
// read back and verify through the other, same boot). `mode=net net=pv|e1000 op=tx|rx|echo
// pkt= count= time= idle= wait= batch= vif= halt= spin_us= go= dst=MAC` runs a network workload on the PV
// NIC (net_workload.cc) or the emulated e1000 (e1000.cc; `nic=` is the same key as `net=`).
// Results are one `PVIO-RESULT {json}` line on the console; latencies come from the TSC.
#include "workload.h"

#include <stddef.h>

#include <new>

#include "alloc.h"
#include "arch.h"
#include "console.h"
#include "cpl_probe.h"
#include "cpu.h"
#include "ide.h"
#include "e1000.h"
#include "net_workload.h"
#include "pci.h"
#include "pv_disk.h"
#include "smp.h"
#include "pvio/guest/pattern.h"
#include "pvio/guest/rng.h"
#include "xen.h"
#include "xen_modes.h"
#include "xen_platform.h"

extern "C" size_t strlen(const char*);
extern "C" void* memset(void*, int, size_t);

namespace pvio::guest {

namespace {

struct Options {
  char mode[16] = "";
  char disk[16] = "none";
  char xfer[8] = "dma";
  char rw[16] = "randread";
  uint64_t bs = 4096, qd = 1, count = 0, time_ms = 0, verify = 0, seed = 1, size = 0;
  uint64_t xenstore = 0;
  // PV disk: virtual-device number (xvda), spin before halting, limits offered to blkfront.
  uint64_t devid = 51712, poll_us = 20, ring_order = 2, indirect = 32, persistent = 0;
  uint64_t poll_adapt = 1;  // the spin adapts between 0 and poll_us (0: always poll_us)
  // PV disk queues (multi-queue-num-queues), one per vCPU: 0 = as many as vCPUs booted. With
  // more than one, vCPU q drives queue q (run_pv_mq_workload).
  uint64_t queues = 0, vcpus = 1;
  // fill=0: writes send the buffer as filled once at set-up instead of the pattern of each
  // block (benchmarks, where filling 64 KiB per write would dominate); the data on disk then
  // does not follow pattern_word.
  uint64_t fill = 1;
  char from[8] = "ide";
  char to[8] = "pv";
  // How Xen calls the guest back (xen.h, UpcallDelivery).
  UpcallDelivery callback = UpcallDelivery::kCallbackVector;
  // mode=unplug: whether the guest has a PV disk driver (and so unplugs the IDE disk), and
  // what it tells the unplug protocol about itself (pvdrivers.h: 0xffff is "experimental").
  // `unplug` is the mask it writes (Xen's bits: 1 IDE disks, 2 NICs); pvdisk=0 writes none.
  uint64_t pvdisk = 1, product = 0xffff, build = 1, unplug = 1;
  // Privilege level the workload and xcheck modes run at. On a PVM host guest CPL0 code is
  // interpreted and CPL3 code runs natively, but port I/O at CPL3 traps to the #GP emulator
  // (docs/bench.md): so the PV disk and xcheck default to 3, the port-bound IDE workload to 0.
  // Other modes always run at 0. 255 = not given.
  uint64_t cpl = 255;
  // PV doorbell: `mmio` (pvio-hv's MMIO doorbell, a store; default when offered) or `pio`.
  char doorbell[8] = "mmio";
  // Network workloads (mode=net).
  char net[8] = "pv";
  NetOptions netw;
  bool verify_given = false;
};

// The timed phase's bounds on the console, for a host that wants to sample its own CPU time
// over exactly that phase (pvio bench's CPU per I/O).
void phase_marker(bool begin) { kprintf(begin ? "PVIO-PHASE begin\n" : "PVIO-PHASE end\n"); }

bool parse_mac(const char* s, uint8_t* mac) {
  for (int i = 0; i < 6; ++i) {
    unsigned v = 0;
    for (int k = 0; k < 2; ++k, ++s) {
      const char c = *s;
      const unsigned d = c >= '0' && c <= '9' ? static_cast<unsigned>(c - '0')
                         : c >= 'a' && c <= 'f' ? static_cast<unsigned>(c - 'a' + 10)
                         : c >= 'A' && c <= 'F' ? static_cast<unsigned>(c - 'A' + 10)
                                                : 16u;
      if (d == 16) return false;
      v = v * 16 + d;
    }
    mac[i] = static_cast<uint8_t>(v);
    if (i < 5 && *s++ != ':') return false;
  }
  return *s == '\0';
}

bool streq(const char* a, const char* b) {
  while (*a && *a == *b) ++a, ++b;
  return *a == *b;
}

bool parse_u64(const char* s, uint64_t* out) {
  uint64_t v = 0;
  if (!*s) return false;
  for (; *s; ++s) {
    unsigned d;
    if (*s >= '0' && *s <= '9') d = static_cast<unsigned>(*s - '0');
    else if (*s == 'k' || *s == 'K') { v *= 1024; continue; }
    else if (*s == 'm' || *s == 'M') { v *= 1024 * 1024; continue; }
    else return false;
    if (v > (~uint64_t{0} - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

void copy_word(char* dst, size_t cap, const char* src) {
  size_t i = 0;
  for (; src[i] && i + 1 < cap; ++i) dst[i] = src[i];
  dst[i] = 0;
}

bool parse_cmdline(const char* cmdline, Options* o) {
  char tok[128];
  const char* p = cmdline;
  while (*p) {
    while (*p == ' ') ++p;
    size_t n = 0;
    while (*p && *p != ' ') {
      if (n + 1 < sizeof(tok)) tok[n++] = *p;
      ++p;
    }
    tok[n] = 0;
    if (n == 0) continue;
    char* eq = tok;
    while (*eq && *eq != '=') ++eq;
    if (!*eq) {
      kprintf("cmdline: ignoring '%s'\n", tok);
      continue;
    }
    *eq = 0;
    const char* key = tok;
    const char* val = eq + 1;
    bool ok = true;
    if (streq(key, "mode")) copy_word(o->mode, sizeof(o->mode), val);
    else if (streq(key, "disk")) copy_word(o->disk, sizeof(o->disk), val);
    else if (streq(key, "xfer")) copy_word(o->xfer, sizeof(o->xfer), val);
    else if (streq(key, "rw")) copy_word(o->rw, sizeof(o->rw), val);
    else if (streq(key, "bs")) ok = parse_u64(val, &o->bs);
    else if (streq(key, "qd")) ok = parse_u64(val, &o->qd);
    else if (streq(key, "count")) ok = parse_u64(val, &o->count);
    else if (streq(key, "time")) ok = parse_u64(val, &o->time_ms);
    else if (streq(key, "verify")) ok = parse_u64(val, &o->verify), o->verify_given = true;
    else if (streq(key, "net") || streq(key, "nic")) copy_word(o->net, sizeof(o->net), val);
    else if (streq(key, "op")) copy_word(o->netw.op, sizeof(o->netw.op), val);
    else if (streq(key, "pkt")) ok = parse_u64(val, &o->netw.pkt);
    else if (streq(key, "idle")) ok = parse_u64(val, &o->netw.idle_ms);
    else if (streq(key, "wait")) ok = parse_u64(val, &o->netw.wait_ms);
    else if (streq(key, "batch")) ok = parse_u64(val, &o->netw.batch);
    else if (streq(key, "vif")) ok = parse_u64(val, &o->netw.vif);
    else if (streq(key, "halt")) ok = parse_u64(val, &o->netw.halt);
    else if (streq(key, "spin_us")) ok = parse_u64(val, &o->netw.spin_us);
    else if (streq(key, "go")) ok = parse_u64(val, &o->netw.go);
    else if (streq(key, "dst")) ok = parse_mac(val, o->netw.dst);
    else if (streq(key, "seed")) ok = parse_u64(val, &o->seed);
    else if (streq(key, "size")) ok = parse_u64(val, &o->size);
    else if (streq(key, "xenstore")) ok = parse_u64(val, &o->xenstore);
    else if (streq(key, "devid")) ok = parse_u64(val, &o->devid);
    else if (streq(key, "poll_us")) ok = parse_u64(val, &o->poll_us);
    else if (streq(key, "poll_adapt")) ok = parse_u64(val, &o->poll_adapt);
    else if (streq(key, "queues")) ok = parse_u64(val, &o->queues) && o->queues <= kMaxCpus;
    else if (streq(key, "ring_order")) ok = parse_u64(val, &o->ring_order);
    else if (streq(key, "indirect")) ok = parse_u64(val, &o->indirect);
    else if (streq(key, "persistent")) ok = parse_u64(val, &o->persistent);
    else if (streq(key, "fill")) ok = parse_u64(val, &o->fill);
    else if (streq(key, "cpl")) ok = parse_u64(val, &o->cpl) && (o->cpl == 0 || o->cpl == 3);
    else if (streq(key, "doorbell")) {
      copy_word(o->doorbell, sizeof(o->doorbell), val);
      ok = streq(o->doorbell, "mmio") || streq(o->doorbell, "pio");
    } else if (streq(key, "callback")) ok = parse_upcall_delivery(val, &o->callback);
    else if (streq(key, "pvdisk")) ok = parse_u64(val, &o->pvdisk);
    else if (streq(key, "unplug")) ok = parse_u64(val, &o->unplug) && o->unplug <= 0xffff;
    else if (streq(key, "product")) ok = parse_u64(val, &o->product) && o->product <= 0xffff;
    else if (streq(key, "build")) ok = parse_u64(val, &o->build) && o->build <= 0xffffffffu;
    else if (streq(key, "from")) copy_word(o->from, sizeof(o->from), val);
    else if (streq(key, "to")) copy_word(o->to, sizeof(o->to), val);
    else kprintf("cmdline: ignoring unknown key '%s'\n", key);
    if (!ok) {
      kprintf("PVIO-GUEST bad value for %s: '%s'\n", key, val);
      return false;
    }
  }
  o->netw.count = o->count;
  o->netw.time_ms = o->time_ms;
  if (o->verify_given) o->netw.verify = o->verify;
  if (!o->mode[0]) copy_word(o->mode, sizeof(o->mode), streq(o->disk, "none") ? "boot" : "workload");
  return true;
}


void heapsort(uint64_t* a, uint64_t n) {
  auto sift = [a](uint64_t i, uint64_t len) {
    for (;;) {
      uint64_t m = i, l = 2 * i + 1, r = l + 1;
      if (l < len && a[l] > a[m]) m = l;
      if (r < len && a[r] > a[m]) m = r;
      if (m == i) return;
      const uint64_t t = a[i];
      a[i] = a[m];
      a[m] = t;
      i = m;
    }
  };
  for (uint64_t i = n / 2; i-- > 0;) sift(i, n);
  for (uint64_t end = n; end-- > 1;) {
    const uint64_t t = a[0];
    a[0] = a[end];
    a[end] = t;
    sift(0, end);
  }
}

uint64_t to_ns(uint64_t cycles, uint64_t khz) { return cycles * 1000000ull / khz; }

// Guest CPU speed: nanoseconds per 1000 iterations of a two-instruction loop. On hosts where
// KVM ends up emulating guest instructions this is microseconds, and it decides how much the
// per-I/O instruction count of a driver matters.
uint64_t loop_ns_per_1000(uint64_t khz) {
  uint64_t x = 1;
  const uint64_t t0 = rdtsc();
  for (int i = 0; i < 1000; ++i) asm volatile("imul $3, %0, %0" : "+r"(x));
  return to_ns(rdtsc() - t0, khz);
}

void fill_pattern(uint64_t* buf, uint64_t bytes, uint64_t seed, uint64_t disk_offset) {
  for (uint64_t i = 0; i < bytes / 8; ++i) buf[i] = pattern_word(seed, disk_offset + 8 * i);
}

bool check_pattern(const uint64_t* buf, uint64_t bytes, uint64_t seed, uint64_t disk_offset) {
  for (uint64_t i = 0; i < bytes / 8; ++i)
    if (buf[i] != pattern_word(seed, disk_offset + 8 * i)) return false;
  return true;
}

bool find_ide(IdeDisk* disk) {
  const PciScan scan = pci_enumerate();
  if (scan.xen_platform.found)
    kprintf("xen-platform: 5853:0001 at 00:%u.%u, PV drivers can be loaded\n",
            scan.xen_platform.slot, scan.xen_platform.function);
  if (!scan.ide.found) return false;
  return ide_init(disk, scan.ide);
}

[[noreturn]] void run_pv_workload(const Options& o, uint64_t khz);

[[noreturn]] void run_workload(const Options& o, uint64_t khz) {
  if (streq(o.disk, "pv")) run_pv_workload(o, khz);
  IdeDisk disk;
  if (!streq(o.disk, "ide") || !find_ide(&disk)) {
    kprintf("PVIO-GUEST no usable disk '%s'\n", o.disk);
    shutdown(kExitNoDevice);
  }
  const bool dma = streq(o.xfer, "dma");
  const bool write = streq(o.rw, "write") || streq(o.rw, "randwrite");
  const bool random = streq(o.rw, "randread") || streq(o.rw, "randwrite");
  if ((!dma && !streq(o.xfer, "pio")) ||
      (!write && !random && !streq(o.rw, "read") && !streq(o.rw, "randread")) || o.bs == 0 ||
      o.bs % 512 || o.bs > (1u << 20) || o.qd != 1) {
    kprintf("PVIO-GUEST unsupported workload (IDE: qd=1, bs multiple of 512 up to 1M)\n");
    shutdown(kExitBadCmdline);
  }
  const uint64_t disk_bytes = disk.sectors * 512;
  const uint64_t span = (o.size && o.size < disk_bytes) ? o.size : disk_bytes;
  const uint64_t blocks = span / o.bs;
  const uint32_t sectors = static_cast<uint32_t>(o.bs / 512);
  if (blocks == 0) {
    kprintf("PVIO-GUEST disk smaller than one block\n");
    shutdown(kExitBadCmdline);
  }
  const uint64_t max_ops = o.count ? o.count : (o.time_ms ? (1u << 20) : 256);
  auto* buf = static_cast<uint64_t*>(alloc(o.bs, 0x10000));
  auto* lat = static_cast<uint64_t*>(alloc_uninit(max_ops * 8, 8));
  if (!buf || !lat) {
    kprintf("PVIO-GUEST out of memory for %lu ops\n", max_ops);
    shutdown(kExitBadCmdline);
  }
  auto xfer = [&](bool w, uint64_t block) {
    const uint64_t lba = block * sectors;
    return dma ? ide_dma(disk, w, lba, sectors, buf) : ide_pio(disk, w, lba, sectors, buf);
  };

  Rng rng(o.seed);
  uint64_t ops = 0, errors = 0, verify_failures = 0, verified = 0;
  const uint64_t limit_cycles = o.time_ms * khz;
  phase_marker(true);
  const uint64_t start = rdtsc();
  while (ops < max_ops) {
    const uint64_t block = random ? rng.next() % blocks : ops % blocks;
    if (write && (o.fill || o.verify || ops == 0)) fill_pattern(buf, o.bs, o.seed, block * o.bs);
    const uint64_t t0 = rdtsc();
    const IdeStatus st = xfer(write, block);
    const uint64_t t1 = rdtsc();
    lat[ops++] = t1 - t0;
    if (st != IdeStatus::kOk) {
      if (errors++ < 4) kprintf("PVIO-GUEST I/O error at block %lu: %s\n", block, to_string(st));
    } else if (!write && o.verify) {
      ++verified;
      if (!check_pattern(buf, o.bs, o.seed, block * o.bs) && verify_failures++ < 4)
        kprintf("PVIO-GUEST verify failure at block %lu\n", block);
    }
    if (limit_cycles && t1 - start >= limit_cycles) break;
  }
  const uint64_t elapsed = rdtsc() - start;
  phase_marker(false);
  if (write && ide_flush(disk) != IdeStatus::kOk) ++errors;
  if (write && o.verify) {
    // Read back what was written, replaying the same block sequence.
    Rng replay(o.seed);
    for (uint64_t i = 0; i < ops; ++i) {
      const uint64_t block = random ? replay.next() % blocks : i % blocks;
      if (xfer(false, block) != IdeStatus::kOk) {
        ++errors;
        continue;
      }
      ++verified;
      if (!check_pattern(buf, o.bs, o.seed, block * o.bs) && verify_failures++ < 4)
        kprintf("PVIO-GUEST verify failure at block %lu\n", block);
    }
  }
  heapsort(lat, ops);
  const uint64_t elapsed_ns = to_ns(elapsed, khz);
  const uint64_t iops = elapsed_ns ? ops * 1000000000ull / elapsed_ns : 0;
  kprintf("PVIO-RESULT {\"mode\":\"workload\",\"disk\":\"ide\",\"xfer\":\"%s\",\"rw\":\"%s\","
          "\"bs\":%lu,\"qd\":1,\"ops\":%lu,\"bytes\":%lu,\"elapsed_ns\":%lu,\"iops\":%lu,"
          "\"p50_ns\":%lu,\"p99_ns\":%lu,\"errors\":%lu,\"verify_failures\":%lu,"
          "\"verified_blocks\":%lu,\"tsc_khz\":%lu,\"loop_ns\":%lu,\"cpl\":%u}\n",
          dma ? "dma" : "pio", o.rw, o.bs, ops, ops * o.bs, elapsed_ns, iops,
          to_ns(lat[(ops - 1) * 50 / 100], khz), to_ns(lat[(ops - 1) * 99 / 100], khz), errors,
          verify_failures, verified, khz, loop_ns_per_1000(khz), current_cpl());
  shutdown(errors || verify_failures ? kExitErrors : kExitOk);
}

// ---- the PV disk ----

bool open_pv(PvDisk* pv, const Options& o, uint64_t khz) {
  XenInfo info;
  if (!xen_init(&info)) return false;
  if (!use_mmio_doorbell(streq(o.doorbell, "mmio")) && streq(o.doorbell, "mmio"))
    kprintf("pv: no MMIO doorbell offered, using the port\n");
  blkfront::Limits limits;
  limits.max_queues = static_cast<uint32_t>(o.queues ? o.queues : 1);  // one per vCPU
  limits.max_ring_page_order = static_cast<uint32_t>(o.ring_order > 4 ? 4 : o.ring_order);
  limits.max_indirect_segments = static_cast<uint32_t>(o.indirect > 256 ? 256 : o.indirect);
  limits.use_persistent = o.persistent != 0;
  limits.pool_pages = o.persistent ? 512 : 32;
  pv->set_adaptive(o.poll_adapt != 0);
  return pv->open(khz, static_cast<uint32_t>(o.devid), limits, 20000);
}

// One in-flight I/O slot: its own data pages, reused for every I/O it carries.
struct PvQueue;
struct PvSlot {
  blkfront::BlockIo io;
  blkfront::DataPage* pages = nullptr;
  uint64_t* buf = nullptr;
  uint64_t block = 0, t0 = 0;
  PvQueue* q = nullptr;
};

// One queue's share of the workload, shared with the completion callback (which runs inside
// the core's handle_event and resubmits its slot, so a batch of completions ends in one kick).
// With several queues each is touched only by its vCPU (and by vCPU 0 before the start and
// after the end).
struct alignas(64) PvQueue {
  PvDisk* pv = nullptr;
  uint32_t index = 0, port = 0, nr_queues = 1;
  PvSlot* slots = nullptr;
  uint64_t* lat = nullptr;
  uint64_t lat_cap = 0, qd = 0, ops = 0, issued = 0, max_ops = 0, inflight = 0;
  uint64_t start = 0, end = 0, limit_cycles = 0, poll_cycles = 0, blocks = 0, bs = 0, seed = 0;
  uint64_t errors = 0, verify_failures = 0, verified = 0, sleeps = 0, spins = 0;
  bool write = false, random = false, verify = false, stop = false, fill = true;
  Rng rng{1};
};

void pv_issue(PvSlot* s) {
  PvQueue& q = *s->q;
  // Random: anywhere on the disk. Sequential: queue q walks its own 1/n of the disk (as fio's
  // jobs with offset_increment), so the queues' streams stay sequential.
  const uint64_t slice = q.blocks / q.nr_queues ? q.blocks / q.nr_queues : 1;
  s->block = q.random ? q.rng.next() % q.blocks
                      : (q.index * slice + q.issued % slice) % q.blocks;
  ++q.issued;
  if (q.write && q.fill) fill_pattern(s->buf, q.bs, q.seed, s->block * q.bs);
  s->io.op = q.write ? blkfront::Op::Write : blkfront::Op::Read;
  s->io.sector = s->block * (q.bs / 512);
  s->io.nr_sectors = static_cast<uint32_t>(q.bs / 512);
  s->io.queue = static_cast<uint16_t>(q.index);
  ++q.inflight;
  s->t0 = rdtsc();
  q.pv->submit(&s->io);
}

void pv_done(blkfront::BlockIo* io) {
  const uint64_t t1 = rdtsc();
  auto* s = static_cast<PvSlot*>(io->cookie);
  PvQueue& q = *s->q;
  if (q.ops < q.lat_cap) q.lat[q.ops] = t1 - s->t0;
  ++q.ops;
  --q.inflight;
  if (io->status != blkfront::IoStatus::Ok) {
    if (q.errors++ < 4)
      kprintf("PVIO-GUEST pv queue %u I/O error at block %lu: %s\n", q.index, s->block,
              blkfront::io_status_name(io->status));
  } else if (!q.write && q.verify) {
    ++q.verified;
    if (!check_pattern(s->buf, q.bs, q.seed, s->block * q.bs) && q.verify_failures++ < 4)
      kprintf("PVIO-GUEST verify failure at block %lu (queue %u)\n", s->block, q.index);
  }
  if (q.issued >= q.max_ops || (q.limit_cycles && t1 - q.start >= q.limit_cycles)) q.stop = true;
  if (!q.stop) pv_issue(s);
}

// Sets queue `index` of `nr_queues` up for the workload: its slots, each with its own data
// pages filled with the pattern, and room for `lat_cap` latencies at `lat`. False when memory
// runs out (said on the console).
bool pv_queue_init(PvQueue* q, PvDisk* pv, const Options& o, uint32_t index, uint32_t nr_queues,
                   uint64_t blocks, bool random, uint64_t* lat, uint64_t lat_cap, uint64_t khz) {
  q->pv = pv;
  q->index = index;
  q->nr_queues = nr_queues;
  q->port = pv->front().queue_port(index);
  q->lat = lat;
  q->lat_cap = lat_cap;
  q->qd = o.qd;
  q->poll_cycles = o.poll_us * khz / 1000;
  q->blocks = blocks;
  q->bs = o.bs;
  q->seed = o.seed;
  q->random = random;
  q->fill = o.fill != 0 || o.verify != 0;
  q->slots = static_cast<PvSlot*>(alloc(sizeof(PvSlot) * o.qd, 64));
  if (!q->slots) {
    kprintf("PVIO-GUEST out of memory for queue %u\n", index);
    return false;
  }
  const uint32_t nr_pages = static_cast<uint32_t>(o.bs / 4096);
  for (uint64_t k = 0; k < o.qd; ++k) {
    PvSlot* s = new (&q->slots[k]) PvSlot;
    s->q = q;
    s->buf = static_cast<uint64_t*>(alloc(o.bs, 4096));
    s->pages = static_cast<blkfront::DataPage*>(alloc(sizeof(blkfront::DataPage) * nr_pages, 8));
    if (!s->buf || !s->pages) {
      kprintf("PVIO-GUEST out of memory for qd %lu x %lu bytes\n", o.qd, o.bs);
      return false;
    }
    fill_pattern(s->buf, o.bs, o.seed, 0);
    for (uint32_t j = 0; j < nr_pages; ++j) {
      s->pages[j].addr = reinterpret_cast<uint8_t*>(s->buf) + j * 4096;
      s->pages[j].gfn = reinterpret_cast<uint64_t>(s->pages[j].addr) >> 12;
    }
    s->io.pages = s->pages;
    s->io.nr_pages = nr_pages;
    s->io.done = pv_done;
    s->io.cookie = s;
  }
  return true;
}

// Starts a phase on queue q: counters cleared, the RNG replayed from the queue's seed (queue 0
// from the workload's), the queue filled. The caller holds the device lock if there is one.
void pv_queue_start(PvQueue& q) {
  q.ops = q.issued = q.inflight = 0;
  q.stop = false;
  q.rng = Rng(q.seed + q.index * 0x9e3779b97f4a7c15ull);
  q.start = rdtsc();
  for (uint64_t i = 0; i < q.qd && q.issued < q.max_ops; ++i) pv_issue(&q.slots[i]);
}

// Runs one phase on the single queue, waiting the upcall way (spin, then halt); returns the
// elapsed TSC cycles.
uint64_t pv_run_phase(PvQueue& q, bool write, bool verify, uint64_t max_ops, uint64_t limit_cycles) {
  q.write = write;
  q.verify = verify;
  q.max_ops = max_ops;
  q.limit_cycles = limit_cycles;
  pv_queue_start(q);
  while (q.inflight > 0) q.pv->process(true, q.poll_cycles);
  q.end = rdtsc();
  return q.end - q.start;
}

// ---- the PV disk, one queue per vCPU ----

// The blkfront core is single-threaded: its calls (submit, handle_event and the completion
// callbacks they run) are serialised by one device lock, as Linux's blkfront did before
// blk-mq. What runs in parallel is everything outside the core: each vCPU waits for its own
// queue's event, and pvio-blkback serves each queue from its own thread.
uint32_t g_dev_lock = 0;
void dev_lock() {
  while (__atomic_exchange_n(&g_dev_lock, 1u, __ATOMIC_ACQUIRE) != 0)
    while (__atomic_load_n(&g_dev_lock, __ATOMIC_RELAXED) != 0) asm volatile("pause");
}
void dev_unlock() { __atomic_store_n(&g_dev_lock, 0u, __ATOMIC_RELEASE); }

// Appends `sep` and v in decimal at buf[pos] (NUL-terminated, truncated to cap); new length.
size_t append_u64(char* buf, size_t cap, size_t pos, const char* sep, uint64_t v) {
  char digits[21];
  unsigned nd = 0;
  do {
    digits[nd++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  for (; *sep && pos + 1 < cap; ++sep) buf[pos++] = *sep;
  while (nd && pos + 1 < cap) buf[pos++] = digits[--nd];
  buf[pos] = 0;
  return pos;
}

bool test_and_clear_pending(uint32_t port) {
  uint64_t* word = reinterpret_cast<uint64_t*>(&shared_info()->evtchn_pending[port / 64]);
  const uint64_t bit = uint64_t{1} << (port % 64);
  return (__atomic_fetch_and(word, ~bit, __ATOMIC_ACQ_REL) & bit) != 0;
}

// One queue's phase, on its own vCPU at CPL3: fill the queue, then take responses as they come,
// spinning up to poll_cycles after the last progress and then sleeping in pvio-hv on the
// queue's (masked) port with SCHEDOP_poll.
uint64_t mq_run_queue(void* arg) {
  PvQueue& q = *static_cast<PvQueue*>(arg);
  dev_lock();
  pv_queue_start(q);
  uint64_t connection = q.pv->front().stats().reconnects;
  dev_unlock();
  uint64_t last_progress = rdtsc();
  while (q.inflight > 0) {
    test_and_clear_pending(q.port);  // before looking: a later response sets it again
    const uint64_t before = q.ops;
    dev_lock();
    q.pv->front().handle_event(q.index);
    dev_unlock();
    const uint64_t now = rdtsc();
    if (q.ops != before) {
      last_progress = now;
      continue;
    }
    if (now - last_progress < q.poll_cycles) {
      ++q.spins;
      asm volatile("pause");
      continue;
    }
    // Idle for the whole spin: vCPU 0 also follows the backend (a restarted pvio-blkback closes
    // the device and offers it again; the core resubmits what was in flight, on queue q modulo
    // the queues the new backend grants). After a reconnect each queue takes its new port and
    // masks it, as the run started.
    dev_lock();
    if (q.index == 0) q.pv->follow_backend();
    const uint64_t now_connection = q.pv->front().stats().reconnects;
    if (now_connection != connection && q.pv->front().connected()) {
      connection = now_connection;
      q.port = q.pv->front().queue_port(q.index);
      if (q.port != 0) mask_port(q.port);
    }
    dev_unlock();
    ++q.sleeps;
    sched_poll_ports(&q.port, 1);
    last_progress = rdtsc();
  }
  q.end = rdtsc();
  return 0;
}

// Runs one phase on every queue at once: queue 0 here on vCPU 0, queue q on vCPU q. Returns
// the cycles from the first start to the last end.
uint64_t mq_run_phase(PvQueue* qs, uint32_t n, bool write, bool verify, uint64_t max_ops_each,
                      uint64_t limit_cycles) {
  for (uint32_t i = 0; i < n; ++i) {
    qs[i].write = write;
    qs[i].verify = verify;
    qs[i].max_ops = max_ops_each;
    qs[i].limit_cycles = limit_cycles;
  }
  for (uint32_t i = 1; i < n; ++i)
    if (!start_on_cpu(i, mq_run_queue, &qs[i])) {
      kprintf("PVIO-GUEST vCPU %u could not take queue %u\n", i, i);
      shutdown(kExitErrors);
    }
  mq_run_queue(&qs[0]);
  for (uint32_t i = 1; i < n; ++i)
    while (!cpu_job_done(i, nullptr)) sched_poll_ports(nullptr, 0);
  uint64_t first = qs[0].start, last = qs[0].end;
  for (uint32_t i = 1; i < n; ++i) {
    if (qs[i].start < first) first = qs[i].start;
    if (qs[i].end > last) last = qs[i].end;
  }
  return last - first;
}

[[noreturn]] void run_pv_mq_workload(const Options& o, uint64_t khz) {
  const bool write = streq(o.rw, "write") || streq(o.rw, "randwrite");
  const bool random = streq(o.rw, "randread") || streq(o.rw, "randwrite");
  static PvDisk pv;
  if (!open_pv(&pv, o, khz)) shutdown(kExitNoDevice);
  const uint32_t n = pv.front().negotiated().nr_queues;
  if (n < o.queues) kprintf("pv: the backend offers %u queue(s) of the %lu asked for\n", n, o.queues);
  if (!wait_cpus_online(n, 10000, khz)) {
    kprintf("PVIO-GUEST only %u of %u vCPUs came online\n", cpus_online(), n);
    shutdown(kExitNoDevice);
  }
  const uint64_t disk_bytes = pv.sectors() * 512;
  const uint64_t span = (o.size && o.size < disk_bytes) ? o.size : disk_bytes;
  const uint64_t blocks = span / o.bs;
  if (blocks == 0) {
    kprintf("PVIO-GUEST disk smaller than one block\n");
    shutdown(kExitBadCmdline);
  }
  // Per queue: count/n I/Os, or as many as fit in time_ms (latencies kept for the first 2M/n).
  const uint64_t max_each = o.count ? (o.count + n - 1) / n : (o.time_ms ? (1u << 21) / n : 256);
  auto* qs = static_cast<PvQueue*>(alloc(sizeof(PvQueue) * n, 64));
  auto* lat = static_cast<uint64_t*>(alloc_uninit(max_each * n * 8, 8));
  if (!qs || !lat) {
    kprintf("PVIO-GUEST out of memory for %u queues\n", n);
    shutdown(kExitBadCmdline);
  }
  for (uint32_t i = 0; i < n; ++i)
    if (!pv_queue_init(new (&qs[i]) PvQueue, &pv, o, i, n, blocks, random, lat + i * max_each,
                       max_each, khz))
      shutdown(kExitBadCmdline);
  // Events are taken by polling each queue's port, never by upcall: mask them for the run.
  for (uint32_t i = 0; i < n; ++i) mask_port(qs[i].port);
  const PvCounters c0 = pv.platform().counters;
  const blkfront::Stats s0 = pv.front().stats();
  const Cpl3TrapCounts t0 = cpl3_trap_counts();
  phase_marker(true);
  const uint64_t elapsed = mq_run_phase(qs, n, write, !write && o.verify != 0, max_each,
                                        o.time_ms * khz);
  phase_marker(false);
  const PvCounters c1 = pv.platform().counters;
  const blkfront::Stats s1 = pv.front().stats();
  const Cpl3TrapCounts t1 = cpl3_trap_counts();
  uint64_t ops = 0, nlat = 0, errors = 0, verify_failures = 0, verified = 0, sleeps = 0;
  char per_queue[160] = "";
  size_t pq = 0;
  for (uint32_t i = 0; i < n; ++i) {
    PvQueue& q = qs[i];
    const uint64_t kept = q.ops < q.lat_cap ? q.ops : q.lat_cap;
    for (uint64_t k = 0; k < kept; ++k) lat[nlat + k] = q.lat[k];  // compact
    nlat += kept;
    ops += q.ops;
    errors += q.errors;
    verify_failures += q.verify_failures;
    verified += q.verified;
    sleeps += q.sleeps;
    pq = append_u64(per_queue, sizeof(per_queue), pq, i ? "," : "", q.ops);
  }
  heapsort(lat, nlat);
  const uint64_t p50 = nlat ? to_ns(lat[(nlat - 1) * 50 / 100], khz) : 0;
  const uint64_t p99 = nlat ? to_ns(lat[(nlat - 1) * 99 / 100], khz) : 0;
  // The flush waits the single-queue way (upcalls), so the ports are unmasked for it.
  for (uint32_t i = 0; i < n; ++i) unmask_port(qs[i].port);
  if (write && pv.flush_sync() != blkfront::IoStatus::Ok) ++errors;
  if (write && o.verify) {
    // Read back what each queue wrote, replaying its block sequence.
    for (uint32_t i = 0; i < n; ++i) mask_port(qs[i].port);
    for (uint32_t i = 0; i < n; ++i) qs[i].errors = qs[i].verify_failures = qs[i].verified = 0;
    for (uint32_t i = 0; i < n; ++i) qs[i].lat_cap = 0;
    // Each queue replays exactly as many I/Os as it wrote.
    for (uint32_t i = 0; i < n; ++i) {
      const uint64_t wrote = qs[i].ops;
      qs[i].write = false;
      qs[i].verify = true;
      qs[i].max_ops = wrote;
      qs[i].limit_cycles = 0;
    }
    for (uint32_t i = 1; i < n; ++i)
      if (qs[i].max_ops && !start_on_cpu(i, mq_run_queue, &qs[i])) shutdown(kExitErrors);
    if (qs[0].max_ops) mq_run_queue(&qs[0]);
    for (uint32_t i = 1; i < n; ++i)
      while (qs[i].max_ops && !cpu_job_done(i, nullptr)) sched_poll_ports(nullptr, 0);
    for (uint32_t i = 0; i < n; ++i) {
      errors += qs[i].errors;
      verify_failures += qs[i].verify_failures;
      verified += qs[i].verified;
    }
    for (uint32_t i = 0; i < n; ++i) unmask_port(qs[i].port);
  }
  const uint64_t elapsed_ns = to_ns(elapsed, khz);
  const uint64_t iops = elapsed_ns ? ops * 1000000000ull / elapsed_ns : 0;
  const auto& neg = pv.front().negotiated();
  const uint64_t doorbells = c1.doorbells - c0.doorbells;
  kprintf("PVIO-RESULT {\"mode\":\"workload\",\"disk\":\"pv\",\"rw\":\"%s\",\"bs\":%lu,"
          "\"qd\":%lu,\"queues\":%u,\"vcpus\":%lu,\"queue_ops\":[%s],\"ops\":%lu,\"bytes\":%lu,"
          "\"elapsed_ns\":%lu,\"iops\":%lu,\"p50_ns\":%lu,\"p99_ns\":%lu,\"errors\":%lu,"
          "\"verify_failures\":%lu,\"verified_blocks\":%lu,\"tsc_khz\":%lu,\"requests\":%lu,"
          "\"notifications\":%lu,\"doorbells\":%lu,\"hlts\":0,\"poll_sleeps\":%lu,"
          "\"ring_slots\":%u,\"ring_order\":%u,\"indirect\":%u,\"persistent\":%u,"
          "\"poll_us\":%lu,\"cpl\":%u,\"doorbell\":\"%s\",\"cpl3_traps\":%lu,\"reconnects\":%lu}\n",
          o.rw, o.bs, o.qd, n, o.vcpus, per_queue, ops, ops * o.bs, elapsed_ns, iops, p50, p99,
          errors, verify_failures, verified, khz, s1.requests - s0.requests,
          s1.notifications - s0.notifications, doorbells, sleeps, neg.ring_size,
          neg.ring_page_order, neg.max_indirect_segments, neg.persistent ? 1u : 0u, o.poll_us,
          current_cpl(), doorbell_mmio_gpa() ? "mmio" : "pio", t1.emulated - t0.emulated,
          pv.front().stats().reconnects - s0.reconnects);
  shutdown(errors || verify_failures ? kExitErrors : kExitOk);
}

[[noreturn]] void run_pv_workload(const Options& o, uint64_t khz) {
  const bool write = streq(o.rw, "write") || streq(o.rw, "randwrite");
  const bool random = streq(o.rw, "randread") || streq(o.rw, "randwrite");
  if ((!write && !random && !streq(o.rw, "read")) || o.bs == 0 || o.bs % 4096 ||
      o.bs > (1u << 20) || o.qd == 0 || o.qd > 256) {
    kprintf("PVIO-GUEST unsupported workload (PV: bs multiple of 4096 up to 1M, qd 1..256)\n");
    shutdown(kExitBadCmdline);
  }
  if (o.queues > 1) run_pv_mq_workload(o, khz);
  static PvDisk pv;
  if (!open_pv(&pv, o, khz)) shutdown(kExitNoDevice);
  const uint64_t disk_bytes = pv.sectors() * 512;
  const uint64_t span = (o.size && o.size < disk_bytes) ? o.size : disk_bytes;
  const uint64_t blocks = span / o.bs;
  if (blocks == 0) {
    kprintf("PVIO-GUEST disk smaller than one block\n");
    shutdown(kExitBadCmdline);
  }
  const uint64_t max_ops = o.count ? o.count : (o.time_ms ? (1u << 21) : 256);
  auto* lat = static_cast<uint64_t*>(alloc_uninit(max_ops * 8, 8));
  static PvQueue q;
  if (!lat) {
    kprintf("PVIO-GUEST out of memory for %lu ops\n", max_ops);
    shutdown(kExitBadCmdline);
  }
  if (!pv_queue_init(&q, &pv, o, 0, 1, blocks, random, lat, max_ops, khz)) shutdown(kExitBadCmdline);
  const uint64_t poll_cycles = q.poll_cycles;

  const PvCounters c0 = pv.platform().counters;
  const blkfront::Stats s0 = pv.front().stats();
  const uint64_t heap0 = alloc_free_bytes();  // reconnects must not move the bump pointer
  const uint64_t up0 = upcalls();
  const DoorbellCounts d0 = doorbell_counts();
  const Cpl3TrapCounts t0 = cpl3_trap_counts();
  phase_marker(true);
  const uint64_t elapsed = pv_run_phase(q, write, !write && o.verify != 0, max_ops, o.time_ms * khz);
  phase_marker(false);
  const uint64_t ops = q.ops;
  const PvCounters c1 = pv.platform().counters;
  const blkfront::Stats s1 = pv.front().stats();
  const uint64_t up1 = upcalls();
  const DoorbellCounts d1 = doorbell_counts();
  const Cpl3TrapCounts t1 = cpl3_trap_counts();
  heapsort(lat, ops < max_ops ? ops : max_ops);
  const uint64_t nlat = ops < max_ops ? ops : max_ops;
  const uint64_t p50 = nlat ? to_ns(lat[(nlat - 1) * 50 / 100], khz) : 0;
  const uint64_t p99 = nlat ? to_ns(lat[(nlat - 1) * 99 / 100], khz) : 0;

  uint64_t errors = q.errors, verify_failures = q.verify_failures, verified = q.verified;
  if (write && pv.flush_sync() != blkfront::IoStatus::Ok) ++errors;
  if (write && o.verify) {
    // Read back what was written, replaying the same block sequence.
    q.errors = q.verify_failures = q.verified = 0;
    q.lat_cap = 0;
    pv_run_phase(q, false, true, ops, 0);
    errors += q.errors;
    verify_failures += q.verify_failures;
    verified += q.verified;
  }
  const uint64_t elapsed_ns = to_ns(elapsed, khz);
  const uint64_t iops = elapsed_ns ? ops * 1000000000ull / elapsed_ns : 0;
  const auto& n = pv.front().negotiated();
  const uint64_t reconnects = pv.front().stats().reconnects - s0.reconnects;
  const uint64_t heap_growth = heap0 - alloc_free_bytes();
  const uint64_t doorbells = c1.doorbells - c0.doorbells, hlts = c1.hlts - c0.hlts;
  kprintf("PVIO-RESULT {\"mode\":\"workload\",\"disk\":\"pv\",\"rw\":\"%s\",\"bs\":%lu,"
          "\"qd\":%lu,\"ops\":%lu,\"bytes\":%lu,\"elapsed_ns\":%lu,\"iops\":%lu,\"p50_ns\":%lu,"
          "\"p99_ns\":%lu,\"errors\":%lu,\"verify_failures\":%lu,\"verified_blocks\":%lu,"
          "\"tsc_khz\":%lu,\"requests\":%lu,\"indirect_requests\":%lu,\"notifications\":%lu,"
          "\"doorbells\":%lu,\"hlts\":%lu,\"upcalls\":%lu,\"guest_exits\":%lu,"
          "\"ring_slots\":%u,\"ring_order\":%u,\"indirect\":%u,\"persistent\":%u,\"poll_us\":%lu,"
          "\"polls\":%lu,\"doorbell_ns\":%lu,\"loop_ns\":%lu,\"cpl\":%u,\"doorbell\":\"%s\","
          "\"mmio_doorbells\":%lu,\"pio_doorbells\":%lu,\"cpl3_traps\":%lu,"
          "\"cpl3_doorbell_traps\":%lu,\"reconnects\":%lu,\"heap_growth\":%lu,"
          "\"pooled_pages\":%lu,\"poll_adapt\":%lu,\"spin_budget_ns\":%lu}\n",
          o.rw, o.bs, o.qd, ops, ops * o.bs, elapsed_ns, iops, p50, p99, errors, verify_failures,
          verified, khz, s1.requests - s0.requests, s1.indirect_requests - s0.indirect_requests,
          s1.notifications - s0.notifications, doorbells, hlts, up1 - up0, doorbells + hlts,
          n.ring_size, n.ring_page_order, n.max_indirect_segments, n.persistent ? 1u : 0u,
          o.poll_us, c1.polls - c0.polls,
          doorbells ? to_ns(c1.doorbell_cycles - c0.doorbell_cycles, khz) / doorbells : 0,
          loop_ns_per_1000(khz), current_cpl(), doorbell_mmio_gpa() ? "mmio" : "pio",
          d1.mmio - d0.mmio, d1.pio - d0.pio, t1.emulated - t0.emulated,
          t1.doorbell_outs - t0.doorbell_outs, reconnects, heap_growth, page_pool_pages(),
          o.poll_adapt, to_ns(pv.spin_budget_cycles() < poll_cycles ? pv.spin_budget_cycles() : poll_cycles, khz));
  shutdown(errors || verify_failures ? kExitErrors : kExitOk);
}

// Same data both ways: write the pattern over `size` bytes through one disk, then read every
// block back through the other and verify it, in the same boot.
[[noreturn]] void run_xcheck(const Options& o, uint64_t khz) {
  const bool ide_first = streq(o.from, "ide");
  if (!((ide_first && streq(o.to, "pv")) || (streq(o.from, "pv") && streq(o.to, "ide"))) ||
      o.bs == 0 || o.bs % 4096 || o.bs > (1u << 16)) {
    kprintf("PVIO-GUEST xcheck needs from=ide to=pv or from=pv to=ide, bs multiple of 4K <= 64K\n");
    shutdown(kExitBadCmdline);
  }
  IdeDisk ide;
  if (!find_ide(&ide)) {
    kprintf("PVIO-GUEST xcheck: no IDE disk\n");
    shutdown(kExitNoDevice);
  }
  static PvDisk pv;
  if (!open_pv(&pv, o, khz)) shutdown(kExitNoDevice);
  if (pv.sectors() != ide.sectors)
    kprintf("PVIO-GUEST xcheck: disk sizes differ (ide %lu, pv %lu sectors)\n", ide.sectors,
            pv.sectors());
  const uint64_t disk_bytes = (ide.sectors < pv.sectors() ? ide.sectors : pv.sectors()) * 512;
  const uint64_t span = (o.size && o.size < disk_bytes) ? o.size : disk_bytes;
  const uint64_t blocks = span / o.bs;
  const uint32_t sectors = static_cast<uint32_t>(o.bs / 512);
  auto* buf = static_cast<uint64_t*>(alloc(o.bs, 0x10000));
  if (!buf || blocks == 0) shutdown(kExitBadCmdline);
  auto io = [&](bool use_ide, bool w, uint64_t block) {
    if (use_ide) return ide_dma(ide, w, block * sectors, sectors, buf) == IdeStatus::kOk;
    return pv.rw_sync(w, block * sectors, sectors, buf) == blkfront::IoStatus::Ok;
  };
  uint64_t errors = 0, verify_failures = 0, verified = 0;
  for (uint64_t b = 0; b < blocks; ++b) {
    fill_pattern(buf, o.bs, o.seed, b * o.bs);
    if (!io(ide_first, true, b) && errors++ < 4)
      kprintf("PVIO-GUEST xcheck: write of block %lu through %s failed\n", b, o.from);
  }
  if (ide_first ? ide_flush(ide) != IdeStatus::kOk : pv.flush_sync() != blkfront::IoStatus::Ok)
    ++errors;
  for (uint64_t b = 0; b < blocks; ++b) {
    memset(buf, 0, o.bs);
    if (!io(!ide_first, false, b)) {
      if (errors++ < 4) kprintf("PVIO-GUEST xcheck: read of block %lu through %s failed\n", b, o.to);
      continue;
    }
    ++verified;
    if (!check_pattern(buf, o.bs, o.seed, b * o.bs) && verify_failures++ < 4)
      kprintf("PVIO-GUEST xcheck: block %lu read through %s differs\n", b, o.to);
  }
  kprintf("PVIO-RESULT {\"mode\":\"xcheck\",\"from\":\"%s\",\"to\":\"%s\",\"bs\":%lu,"
          "\"blocks\":%lu,\"bytes\":%lu,\"errors\":%lu,\"verify_failures\":%lu,"
          "\"verified_blocks\":%lu,\"seed\":%lu,\"cpl\":%u}\n",
          o.from, o.to, o.bs, blocks, blocks * o.bs, errors, verify_failures, verified, o.seed,
          current_cpl());
  shutdown(errors || verify_failures || verified != blocks ? kExitErrors : kExitOk);
}

// mode=unplug: what a PV driver set does at boot before it takes over from the emulated disk
// (Xen's unplug protocol). The pattern goes onto the IDE disk by DMA without a flush (the
// unplug has to flush it), the driver announces itself on the platform device's ports (magic,
// version, product, build, one log line), unplugs the IDE disks and reads the pattern back
// through the PV disk; the IDE channel must be empty by then. pvdisk=0 is a guest without a
// PV disk driver: the same announcement, no unplug, and the IDE disk goes on working (the
// pattern is read back through it). A blacklisted driver (magic 0xd249) does not unplug.
// unplug=MASK picks what goes (2: the NICs only; the pattern is then read back through IDE).
[[noreturn]] void run_unplug(const Options& o, uint64_t khz) {
  IdeDisk ide;
  if (!find_ide(&ide)) {
    kprintf("PVIO-GUEST unplug: no IDE disk\n");
    shutdown(kExitNoDevice);
  }
  const uint64_t span = o.size ? o.size : 65536;
  const uint64_t bs = o.bs, blocks = span / bs;
  const uint32_t sectors = static_cast<uint32_t>(bs / 512);
  auto* buf = static_cast<uint64_t*>(alloc(bs, 0x10000));
  if (!buf || blocks == 0 || bs % 4096 || bs > 0x10000 || span > ide.sectors * 512) {
    kprintf("PVIO-GUEST unplug needs bs a multiple of 4K <= 64K and size within the disk\n");
    shutdown(kExitBadCmdline);
  }
  uint64_t errors = 0, verify_failures = 0, verified = 0;
  for (uint64_t b = 0; b < blocks; ++b) {
    fill_pattern(buf, bs, o.seed, b * bs);
    if (ide_dma(ide, true, b * sectors, sectors, buf) != IdeStatus::kOk) ++errors;
  }

  const uint16_t magic = unplug_read_magic();
  const bool protocol = magic == kUnplugMagic;
  const uint8_t version = protocol ? unplug_read_version() : 0;
  if (protocol && version >= 1) {
    unplug_write_product(static_cast<uint16_t>(o.product));
    unplug_write_build(static_cast<uint32_t>(o.build));
  }
  const uint16_t magic_after = protocol ? unplug_read_magic() : magic;
  // Logging is allowed once the magic was seen, blacklisted or not (the protocol's rule).
  if (magic_after == kUnplugMagic || magic_after == kUnplugMagicBlacklisted)
    unplug_log(o.pvdisk ? "pvio test guest: PV disk driver loaded, unplugging the IDE disks"
                        : "pvio test guest: no PV disk driver, keeping the IDE disk");
  const unsigned nics_before = pci_enumerate().nics;
  const bool unplug = o.pvdisk != 0 && magic_after == kUnplugMagic;
  if (unplug) unplug_write_mask(static_cast<uint16_t>(o.unplug));

  // What the emulated channel shows now: an empty one after an unplug of the IDE disks; and
  // the NICs left on the bus.
  const uint8_t status_after = inb(static_cast<uint16_t>(ide.cmd + 7));
  uint16_t words[256];
  const IdeStatus identify_after = ide_identify(ide, words);
  const unsigned nics_after = pci_enumerate().nics;

  static PvDisk pv;
  const bool through_pv = unplug && (o.unplug & kUnplugAllIdeDisks);
  if (through_pv && !open_pv(&pv, o, khz)) shutdown(kExitNoDevice);
  for (uint64_t b = 0; b < blocks; ++b) {
    memset(buf, 0, bs);
    const bool ok = through_pv
                        ? pv.rw_sync(false, b * sectors, sectors, buf) == blkfront::IoStatus::Ok
                        : ide_dma(ide, false, b * sectors, sectors, buf) == IdeStatus::kOk;
    if (!ok) {
      if (errors++ < 4) kprintf("PVIO-GUEST unplug: read of block %lu failed\n", b);
      continue;
    }
    ++verified;
    if (!check_pattern(buf, bs, o.seed, b * bs) && verify_failures++ < 4)
      kprintf("PVIO-GUEST unplug: block %lu differs\n", b);
  }
  kprintf("PVIO-RESULT {\"mode\":\"unplug\",\"magic\":%u,\"version\":%u,\"magic_after\":%u,"
          "\"unplugged\":%u,\"ide_status_after\":%u,\"ide_identify_after\":\"%s\","
          "\"read_through\":\"%s\",\"blocks\":%lu,\"errors\":%lu,\"verify_failures\":%lu,"
          "\"verified_blocks\":%lu,\"nics_before\":%u,\"nics_after\":%u,\"upcalls\":%lu,"
          "\"callback\":\"%s\"}\n",
          magic, version, magic_after, unplug ? 1u : 0u, status_after, to_string(identify_after),
          through_pv ? "pv" : "ide", blocks, errors, verify_failures, verified, nics_before,
          nics_after, upcalls(), to_string(o.callback));
  shutdown(errors || verify_failures || verified != blocks ? kExitErrors : kExitOk);
}

// Random port and MMIO accesses and malformed PRD tables, for a fixed count. The VMM must
// survive all of it and keep the IDE device usable; every bad PRD table must be refused.
[[noreturn]] void run_hostile(const Options& o, const pvio::hv::BootInfo* info) {
  IdeDisk disk;
  const bool have_ide = streq(o.disk, "ide") && find_ide(&disk);
  const uint64_t count = o.count ? o.count : 2000;
  const uint64_t mem = info->mem_bytes;
  Rng rng(o.seed);
  // A 64 KiB window filled with 2-byte PRD entries and no EOT, and a small valid buffer.
  auto* window = static_cast<uint32_t*>(alloc(0x10000, 0x10000));
  auto* table = static_cast<uint32_t*>(alloc(4096, 4096));
  auto* data = static_cast<uint8_t*>(alloc(0x10000, 0x10000));
  if (!window || !table || !data) shutdown(kExitBadCmdline);
  for (unsigned i = 0; i < 0x10000 / 8; ++i) {
    window[2 * i] = static_cast<uint32_t>(reinterpret_cast<uint64_t>(data));
    window[2 * i + 1] = 2;
  }
  uint64_t port_ops = 0, ide_pokes = 0, mmio_ops = 0, bad_prd = 0, rejected = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t r = rng.next();
    const unsigned action = static_cast<unsigned>(r % 4);
    if (action == 0 || (!have_ide && action != 3)) {
      const auto port = static_cast<uint16_t>(r >> 8);
      // The console and the power-off port are the guest's own channel to its owner. The
      // hypercall and CPUID ports answer in the guest's registers, which the compiler keeps
      // live across an `out` (the RNG state among them): an `outl` there zeroed the state and
      // every later op was outb(0, 0). Those ports have their own hostile-xen mode.
      // The unplug protocol's ports (0x10-0x1f) are skipped too: a write there may take the
      // IDE disk away, which is the protocol working, not an attack; hv_unit_test drives them.
      if ((port >= 0x3f8 && port <= 0x3ff) || port == pvio::hv::kDebugExitPort ||
          port == pvio::hv::kHypercallPort || port == pvio::hv::kCpuidPort ||
          (port >= 0x10 && port <= 0x1f))
        continue;
      const auto value = static_cast<uint32_t>(r >> 24);
      switch ((r >> 40) % 6) {
        case 0: outb(port, static_cast<uint8_t>(value)); break;
        case 1: outw(port, static_cast<uint16_t>(value)); break;
        case 2: outl(port, value); break;
        case 3: (void)inb(port); break;
        case 4: (void)inw(port); break;
        default: (void)inl(port); break;
      }
      ++port_ops;
    } else if (action == 1) {
      const unsigned pick = static_cast<unsigned>((r >> 8) % 25);
      const uint16_t port = pick < 8 ? static_cast<uint16_t>(disk.cmd + pick)
                            : pick == 8 ? disk.ctl
                                        : static_cast<uint16_t>(disk.bm + (pick - 9));
      if ((r >> 16) & 1) outb(port, static_cast<uint8_t>(r >> 24)); else (void)inb(port);
      ++ide_pokes;
    } else if (action == 2) {
      ide_restore_pci(disk);
      ide_soft_reset(disk);
      const auto buf = static_cast<uint32_t>(reinterpret_cast<uint64_t>(data));
      uint32_t prd_gpa = static_cast<uint32_t>(reinterpret_cast<uint64_t>(table));
      uint32_t sectors = 8;
      const unsigned kind = static_cast<unsigned>((r >> 8) % 6);
      switch (kind) {
        case 0:  // buffer beyond guest RAM
          table[0] = static_cast<uint32_t>((mem + (r >> 16) % (0xc0000000u - mem)) & ~uint64_t{0xfff});
          table[1] = 0x80000000u | 4096;
          break;
        case 1:  // table itself outside guest RAM
          prd_gpa = static_cast<uint32_t>(mem + 0x1000);
          break;
        case 2:  // table straddling the end of guest RAM
          prd_gpa = static_cast<uint32_t>(mem - 4);
          break;
        case 3:  // no EOT before the table's 64 KiB window ends (64 KiB transfer, 16 KiB listed)
          prd_gpa = static_cast<uint32_t>(reinterpret_cast<uint64_t>(window));
          sectors = 128;
          break;
        case 4:  // EOT before the transfer is covered
          table[0] = buf;
          table[1] = 0x80000000u | 512;
          break;
        default:  // odd byte count
          table[0] = buf;
          table[1] = 0x80000000u | 4095;
          break;
      }
      uint8_t bms = 0;
      const IdeStatus st = ide_dma_raw(disk, (r >> 20) & 1, 0, sectors, prd_gpa, &bms);
      ++bad_prd;
      if (st == IdeStatus::kDmaError && (inb(disk.cmd + 7) & 0x01)) {
        ++rejected;
      } else {
        kprintf("PVIO-GUEST bad PRD table kind %u was not refused (%s, bm status %x)\n", kind,
                to_string(st), bms);
      }
    } else {
      // Unbacked guest-physical space between RAM and the LAPIC/IOAPIC (left alone: an INIT
      // IPI to ourselves would be the guest's own doing, not an attack on the VMM).
      const uint64_t addr = (mem + (r >> 8) % (0xfec00000u - mem)) & ~uint64_t{3};
      if ((r >> 4) & 1) mmio_write32(addr, static_cast<uint32_t>(r >> 32)); else (void)mmio_read32(addr);
      ++mmio_ops;
    }
  }
  uint64_t ide_ok = 0;
  if (have_ide) {
    ide_restore_pci(disk);
    ide_soft_reset(disk);
    uint16_t w[256];
    ide_ok = ide_identify(disk, w) == IdeStatus::kOk &&
             ide_dma(disk, false, 0, 8, data) == IdeStatus::kOk;
  }
  const uint64_t errors = (bad_prd - rejected) + (have_ide && !ide_ok ? 1 : 0);
  kprintf("PVIO-RESULT {\"mode\":\"hostile\",\"ops\":%lu,\"port_accesses\":%lu,"
          "\"ide_pokes\":%lu,\"mmio_accesses\":%lu,\"bad_prd\":%lu,\"bad_prd_rejected\":%lu,"
          "\"ide_ok_after\":%lu,\"errors\":%lu}\n",
          count, port_ops, ide_pokes, mmio_ops, bad_prd, rejected, ide_ok, errors);
  shutdown(errors ? kExitErrors : kExitOk);
}

[[noreturn]] void run_net(const Options& o, uint64_t khz) {
  if (streq(o.net, "e1000")) run_e1000_workload(o.netw, khz);
  if (!streq(o.net, "pv")) {
    kprintf("PVIO-GUEST no usable NIC '%s'\n", o.net);
    shutdown(kExitNoDevice);
  }
  XenInfo info;
  if (!xen_init(&info)) shutdown(kExitNoDevice);
  if (!use_mmio_doorbell(streq(o.doorbell, "mmio")) && streq(o.doorbell, "mmio"))
    kprintf("net: no MMIO doorbell offered, using the port\n");
  run_net_workload(o.netw, khz);
}

// The workload, xcheck and net modes, entered at CPL3 through run_at_cpl3 (they power off).
struct UserRun {
  const Options* o;
  uint64_t khz;
};
alignas(16) unsigned char g_user_stack[65536];

uint64_t run_disk_mode(void* arg) {
  const auto* r = static_cast<const UserRun*>(arg);
  if (streq(r->o->mode, "net")) run_net(*r->o, r->khz);
  if (streq(r->o->mode, "workload")) run_workload(*r->o, r->khz);
  run_xcheck(*r->o, r->khz);
}

}  // namespace

void run_command_line(const pvio::hv::BootInfo* info) {
  Options o;
  if (!parse_cmdline(info->cmdline, &o)) shutdown(kExitBadCmdline);
  o.vcpus = info->vcpus ? info->vcpus : 1;
  if (o.queues == 0) o.queues = o.vcpus;
  if (o.queues > o.vcpus) {
    kprintf("PVIO-GUEST queues=%lu needs as many vCPUs (booted on %lu)\n", o.queues, o.vcpus);
    shutdown(kExitBadCmdline);
  }
  set_upcall_delivery(o.callback);
  const uint64_t khz = info->tsc_khz ? info->tsc_khz : 1000000;  // assume 1 GHz if unknown
  if (o.cpl == 255) o.cpl = streq(o.mode, "workload") && streq(o.disk, "ide") ? 0 : 3;
  if (o.cpl == 3 &&
      (streq(o.mode, "workload") || streq(o.mode, "xcheck") || streq(o.mode, "net"))) {
    // Xen start-up (CPUID, the hypercall MSR, upcall set-up) is kernel work, done here at CPL0.
    const bool pv = streq(o.disk, "pv") || streq(o.mode, "xcheck") || streq(o.mode, "net");
    XenInfo xen;
    if (pv && !xen_init(&xen)) kprintf("PVIO-GUEST xen start-up failed\n");
    UserRun run{&o, khz};
    run_at_cpl3(run_disk_mode, &run, g_user_stack + sizeof(g_user_stack));
    shutdown(kExitErrors);  // not reached: both modes power off
  }
  if (streq(o.mode, "crash")) {
    kprintf("mode=crash: loading an empty IDT and faulting\n");
    triple_fault();
  }
  if (streq(o.mode, "hostile")) run_hostile(o, info);
  if (streq(o.mode, "unplug")) run_unplug(o, khz);
  if (streq(o.mode, "xen-probe")) run_xen_probe(o.xenstore != 0);
  if (streq(o.mode, "hypercalls")) run_hypercall_checks(info->mem_bytes);
  if (streq(o.mode, "control")) run_control();
  if (streq(o.mode, "evtchn")) run_evtchn_echo(o.count ? o.count : 16);
  if (streq(o.mode, "hostile-xen")) run_hostile_xen(o.count ? o.count : 1000, o.seed, info->mem_bytes);
  if (streq(o.mode, "workload")) run_workload(o, khz);
  if (streq(o.mode, "xcheck")) run_xcheck(o, khz);
  if (streq(o.mode, "net")) run_net(o, khz);
  if (streq(o.mode, "cpl-probe")) run_cpl_probe(khz, o.count);
  if (streq(o.mode, "boot")) {
    const PciScan scan = pci_enumerate();
    // Every vCPU pvio-hv started reaches its job loop (guest/smp.cc).
    wait_cpus_online(static_cast<unsigned>(o.vcpus), 10000, khz);
    kprintf("PVIO-RESULT {\"mode\":\"boot\",\"pci_functions\":%u,\"xen_platform\":%u,"
            "\"cpus_online\":%u}\n",
            scan.functions, scan.xen_platform.found ? 1u : 0u, cpus_online());
    shutdown(kExitOk);
  }
  kprintf("PVIO-GUEST unknown mode '%s'\n", o.mode);
  shutdown(kExitBadCmdline);
}

}  // namespace pvio::guest
