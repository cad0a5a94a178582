// Workload runner: `mode=boot|workload|crash|hostile|xen-probe|hypercalls|evtchn|hostile-xen
// disk=ide xfer=dma|pio
// rw=read|write|randread|randwrite bs=4096 qd=1 count=N | time=MS verify=1 seed=S size=BYTES`.
// Results are one `PVIO-RESULT {json}` line on the console; latencies come from the TSC.
#include "workload.h"

#include <stddef.h>

#include "alloc.h"
#include "arch.h"
#include "console.h"
#include "cpu.h"
#include "ide.h"
#include "pci.h"
#include "pvio/guest/pattern.h"
#include "xen_modes.h"

extern "C" size_t strlen(const char*);

namespace pvio::guest {

namespace {

struct Options {
  char mode[16] = "";
  char disk[16] = "none";
  char xfer[8] = "dma";
  char rw[16] = "randread";
  uint64_t bs = 4096, qd = 1, count = 0, time_ms = 0, verify = 0, seed = 1, size = 0;
  uint64_t xenstore = 0;
};

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
    else if (streq(key, "verify")) ok = parse_u64(val, &o->verify);
    else if (streq(key, "seed")) ok = parse_u64(val, &o->seed);
    else if (streq(key, "size")) ok = parse_u64(val, &o->size);
    else if (streq(key, "xenstore")) ok = parse_u64(val, &o->xenstore);
    else kprintf("cmdline: ignoring unknown key '%s'\n", key);
    if (!ok) {
      kprintf("PVIO-GUEST bad value for %s: '%s'\n", key, val);
      return false;
    }
  }
  if (!o->mode[0]) copy_word(o->mode, sizeof(o->mode), streq(o->disk, "none") ? "boot" : "workload");
  return true;
}

// xorshift64*: deterministic from the seed, so a verify pass can replay the LBA sequence.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed ? seed : 0x9e3779b97f4a7c15ull) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545f4914f6cdd1dull;
  }
};

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

[[noreturn]] void run_workload(const Options& o, uint64_t khz) {
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
  auto* lat = static_cast<uint64_t*>(alloc(max_ops * 8, 8));
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
  const uint64_t start = rdtsc();
  while (ops < max_ops) {
    const uint64_t block = random ? rng.next() % blocks : ops % blocks;
    if (write) fill_pattern(buf, o.bs, o.seed, block * o.bs);
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
          "\"verified_blocks\":%lu,\"tsc_khz\":%lu}\n",
          dma ? "dma" : "pio", o.rw, o.bs, ops, ops * o.bs, elapsed_ns, iops,
          to_ns(lat[(ops - 1) * 50 / 100], khz), to_ns(lat[(ops - 1) * 99 / 100], khz), errors,
          verify_failures, verified, khz);
  shutdown(errors || verify_failures ? kExitErrors : kExitOk);
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
      // The console and the power-off port are the guest's own channel to its owner.
      if ((port >= 0x3f8 && port <= 0x3ff) || port == pvio::hv::kDebugExitPort) continue;
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

}  // namespace

void run_command_line(const pvio::hv::BootInfo* info) {
  Options o;
  if (!parse_cmdline(info->cmdline, &o)) shutdown(kExitBadCmdline);
  const uint64_t khz = info->tsc_khz ? info->tsc_khz : 1000000;  // assume 1 GHz if unknown
  if (streq(o.mode, "crash")) {
    kprintf("mode=crash: loading an empty IDT and faulting\n");
    triple_fault();
  }
  if (streq(o.mode, "hostile")) run_hostile(o, info);
  if (streq(o.mode, "xen-probe")) run_xen_probe(o.xenstore != 0);
  if (streq(o.mode, "hypercalls")) run_hypercall_checks(info->mem_bytes);
  if (streq(o.mode, "evtchn")) run_evtchn_echo(o.count ? o.count : 16);
  if (streq(o.mode, "hostile-xen")) run_hostile_xen(o.count ? o.count : 1000, o.seed, info->mem_bytes);
  if (streq(o.mode, "workload")) run_workload(o, khz);
  if (streq(o.mode, "boot")) {
    const PciScan scan = pci_enumerate();
    kprintf("PVIO-RESULT {\"mode\":\"boot\",\"pci_functions\":%u,\"xen_platform\":%u}\n",
            scan.functions, scan.xen_platform.found ? 1u : 0u);
    shutdown(kExitOk);
  }
  kprintf("PVIO-GUEST unknown mode '%s'\n", o.mode);
  shutdown(kExitBadCmdline);
}

}  // namespace pvio::guest
