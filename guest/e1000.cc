// Polled e1000 driver of the test guest (see e1000.h) and its tx/rx/echo workloads.
#include "e1000.h"

#include "alloc.h"
#include "arch.h"
#include "console.h"
#include "cpu.h"
#include "pci.h"
#include "pvio/guest/net_frame.h"

extern "C" void* memcpy(void*, const void*, size_t);

// Interrupt entry: caller-saved registers around the C handler (40 bytes pushed by the CPU,
// nine pushes keep RSP 16-byte aligned for the call).
asm(R"(
  .text
  .global e1000_irq_entry
e1000_irq_entry:
  pushq %rax
  pushq %rcx
  pushq %rdx
  pushq %rsi
  pushq %rdi
  pushq %r8
  pushq %r9
  pushq %r10
  pushq %r11
  call e1000_irq_handler
  popq %r11
  popq %r10
  popq %r9
  popq %r8
  popq %rdi
  popq %rsi
  popq %rdx
  popq %rcx
  popq %rax
  iretq
)");
extern "C" char e1000_irq_entry[];

namespace pvio::guest {

namespace {
// Register offsets and bits (Intel 8254x developer's manual, chapter 13).
constexpr uint32_t kCtrl = 0x0, kEerd = 0x14, kIcr = 0xc0, kImc = 0xd8, kRctl = 0x100,
                   kTctl = 0x400, kRdbal = 0x2800, kRdbah = 0x2804, kRdlen = 0x2808,
                   kRdh = 0x2810, kRdt = 0x2818, kTdbal = 0x3800, kTdbah = 0x3804,
                   kTdlen = 0x3808, kTdh = 0x3810, kTdt = 0x3818, kStatus = 0x8;
constexpr uint32_t kCtrlRst = 1u << 26, kCtrlSlu = 1u << 6;
constexpr uint32_t kRctlEn = 1u << 1, kRctlBam = 1u << 15, kRctlSecrc = 1u << 26;
constexpr uint32_t kTctlEn = 1u << 1, kTctlPsp = 1u << 3;
constexpr uint8_t kCmdEop = 0x01, kCmdIfcs = 0x02, kCmdRs = 0x08;
constexpr uint8_t kDd = 0x01, kEop = 0x02;

constexpr uint32_t kIms = 0xd0, kIcrRxt0 = 1u << 7;
constexpr uint8_t kIrqVector = 0xe0;
constexpr uint64_t kLapicEoi = 0xFEE000B0;

// What the handler touches (it runs at CPL0 on any stack).
volatile uint64_t g_irq_count = 0;
uint64_t g_irq_bar0 = 0;

uint64_t to_ns(uint64_t cycles, uint64_t khz) { return cycles * 1000000ull / khz; }

bool streq(const char* a, const char* b) {
  while (*a && *a == *b) ++a, ++b;
  return *a == *b;
}
}  // namespace

uint32_t E1000Nic::rd(uint32_t reg) {
  ++mmio_reads;
  return mmio_read32(bar0_ + reg);
}

void E1000Nic::wr(uint32_t reg, uint32_t value) {
  ++mmio_writes;
  mmio_write32(bar0_ + reg, value);
}

bool E1000Nic::open() {
  uint8_t slot = 0;
  bool found = false;
  for (; slot < 32 && !found; ++slot) found = pci_read32(slot, 0, 0x00) == 0x100e8086u;
  if (!found) {
    kprintf("PVIO-GUEST no e1000 (8086:100E) on bus 0\n");
    return false;
  }
  --slot;
  bar0_ = pci_read32(slot, 0, 0x10) & ~uint64_t{0xf};
  irq_line_ = static_cast<uint8_t>(pci_read32(slot, 0, 0x3c));
  pci_write16(slot, 0, 0x04, static_cast<uint16_t>(pci_read16(slot, 0, 0x04) | 0x6));  // memory, bus master
  wr(kCtrl, kCtrlRst);
  for (int i = 0; i < 1000 && (rd(kCtrl) & kCtrlRst); ++i) {
  }
  wr(kImc, ~0u);  // polled: no interrupts
  (void)rd(kIcr);
  wr(kCtrl, rd(kCtrl) | kCtrlSlu);
  // EEPROM: MAC in words 0-2; words 0x00-0x3f sum to 0xBABA.
  uint16_t sum = 0;
  for (uint32_t w = 0; w < 64; ++w) {
    wr(kEerd, (w << 8) | 1);
    uint32_t v = 0;
    for (int i = 0; i < 1000 && !((v = rd(kEerd)) & 0x10); ++i) {
    }
    const auto word = static_cast<uint16_t>(v >> 16);
    sum = static_cast<uint16_t>(sum + word);
    if (w < 3) mac_[2 * w] = static_cast<uint8_t>(word), mac_[2 * w + 1] = static_cast<uint8_t>(word >> 8);
  }
  if (sum != 0xbaba) {
    kprintf("PVIO-GUEST e1000: EEPROM checksum %x, not 0xbaba\n", sum);
    return false;
  }
  if (!(rd(kStatus) & 2)) kprintf("e1000: link down\n");
  rx_ = static_cast<Desc*>(alloc(kRxSlots * sizeof(Desc), 128));
  tx_ = static_cast<Desc*>(alloc(kTxSlots * sizeof(Desc), 128));
  rx_buf_ = static_cast<uint8_t*>(alloc(uint64_t{kRxSlots} * kBufBytes, 4096));
  tx_buf_ = static_cast<uint8_t*>(alloc(uint64_t{kTxSlots} * kBufBytes, 4096));
  if (!rx_ || !tx_ || !rx_buf_ || !tx_buf_) {
    kprintf("PVIO-GUEST e1000: out of memory for the rings\n");
    return false;
  }
  for (uint32_t i = 0; i < kRxSlots; ++i) {
    rx_[i].addr = reinterpret_cast<uint64_t>(rx_buf_ + uint64_t{i} * kBufBytes);
    rx_[i].lower = 0;
    rx_[i].upper = 0;
  }
  for (uint32_t i = 0; i < kTxSlots; ++i) {
    tx_[i].addr = reinterpret_cast<uint64_t>(tx_buf_ + uint64_t{i} * kBufBytes);
    tx_[i].lower = 0;
    tx_[i].upper = kDd;  // free
  }
  // The guest's virtual addresses are its physical ones (pvio-hv's identity map).
  const auto rx_pa = reinterpret_cast<uint64_t>(rx_), tx_pa = reinterpret_cast<uint64_t>(tx_);
  wr(kRdbal, static_cast<uint32_t>(rx_pa));
  wr(kRdbah, static_cast<uint32_t>(rx_pa >> 32));
  wr(kRdlen, kRxSlots * sizeof(Desc));
  wr(kRdh, 0);
  wr(kRdt, kRxSlots - 1);  // one slot stays empty: head == tail means "no buffers"
  wr(kTdbal, static_cast<uint32_t>(tx_pa));
  wr(kTdbah, static_cast<uint32_t>(tx_pa >> 32));
  wr(kTdlen, kTxSlots * sizeof(Desc));
  wr(kTdh, 0);
  wr(kTdt, 0);
  wr(kRctl, kRctlEn | kRctlBam | kRctlSecrc);  // 2 KiB buffers
  wr(kTctl, kTctlEn | kTctlPsp | (0x0f << 4) | (0x40 << 12));
  kprintf("e1000: 00:%u.0 bar0 %lx mac %x:%x:%x:%x:%x:%x\n", slot, bar0_, mac_[0], mac_[1],
          mac_[2], mac_[3], mac_[4], mac_[5]);
  return true;
}

void E1000Nic::enable_rx_interrupt() {
  g_irq_bar0 = bar0_;
  set_interrupt_gate(kIrqVector, reinterpret_cast<uint64_t>(e1000_irq_entry));
  ioapic_route_level(irq_line_, kIrqVector);
  wr(kIms, kIcrRxt0);
}

uint64_t E1000Nic::interrupts() const { return g_irq_count; }

void E1000Nic::wait_rx(uint64_t seen) {
  // cli, check, then sti;hlt (one step for the CPL3 emulation): an interrupt after the check
  // still ends the hlt.
  asm volatile("cli" ::: "memory");
  if (g_irq_count != seen || (rx_[rx_next_].upper & kDd)) {
    asm volatile("sti" ::: "memory");
    return;
  }
  ++hlts;
  asm volatile("sti\n hlt" ::: "memory");
}

uint32_t E1000Nic::reclaim_tx() {
  while (tx_clean_ != tx_pushed_ && (tx_[tx_clean_].upper & kDd)) tx_clean_ = (tx_clean_ + 1) % kTxSlots;
  return (tx_clean_ + kTxSlots - tx_tail_ - 1) % kTxSlots;
}

bool E1000Nic::queue_tx(const uint8_t* frame, uint32_t len) {
  if (len > kBufBytes || (tx_tail_ + 1) % kTxSlots == tx_clean_) return false;
  memcpy(tx_buf_ + uint64_t{tx_tail_} * kBufBytes, frame, len);
  tx_[tx_tail_].lower = len | (uint32_t{kCmdEop | kCmdIfcs | kCmdRs} << 24);
  tx_[tx_tail_].upper = 0;
  tx_tail_ = (tx_tail_ + 1) % kTxSlots;
  return true;
}

void E1000Nic::push_tx() {
  if (tx_pushed_ == tx_tail_) return;
  asm volatile("" ::: "memory");
  wr(kTdt, tx_tail_);
  tx_pushed_ = tx_tail_;
}

uint32_t E1000Nic::poll_rx(RxFn fn, void* cookie) {
  uint32_t n = 0, last = kRxSlots;
  while (n < kRxSlots - 1 && (rx_[rx_next_].upper & kDd)) {
    const uint32_t lower = rx_[rx_next_].lower, upper = rx_[rx_next_].upper;
    // Frames up to 1514 bytes fit one 2 KiB buffer; a frame without EOP or with an error is
    // handed over flagged.
    const bool error = !(upper & kEop) || ((upper >> 8) & 0xff) != 0;
    fn(cookie, rx_buf_ + uint64_t{rx_next_} * kBufBytes, lower & 0xffff, error);
    rx_[rx_next_].upper = 0;
    last = rx_next_;
    rx_next_ = (rx_next_ + 1) % kRxSlots;
    ++n;
  }
  if (n != 0) {
    asm volatile("" ::: "memory");
    wr(kRdt, last);  // the slots up to `last` are the device's again
  }
  return n;
}

// ---- workloads -----------------------------------------------------------------------------

namespace {

struct Counts {
  uint64_t reads, writes, traps, hlts, irqs;
};
Counts counts(const E1000Nic& nic) {
  return {nic.mmio_reads, nic.mmio_writes, cpl3_trap_counts().emulated, nic.hlts, nic.interrupts()};
}

void print_common(const Counts& a, const Counts& b, uint64_t tx_packets, uint64_t rx_packets,
                  uint64_t khz) {
  // Register accesses, halts and the handler's ICR read per interrupt: each a VM exit.
  const uint64_t irqs = b.irqs - a.irqs, hlts = b.hlts - a.hlts;
  const uint64_t exits = (b.reads - a.reads) + (b.writes - a.writes) + hlts + irqs;
  kprintf("\"tx_packets\":%lu,\"rx_packets\":%lu,\"mmio_reads\":%lu,\"mmio_writes\":%lu,"
          "\"hlts\":%lu,\"interrupts\":%lu,\"guest_exits\":%lu,\"cpl3_traps\":%lu,"
          "\"tsc_khz\":%lu,\"cpl\":%u}\n",
          tx_packets, rx_packets, b.reads - a.reads, b.writes - a.writes, hlts, irqs, exits,
          b.traps - a.traps, khz, current_cpl());
}

void send_hello(E1000Nic& nic, const NetOptions& o, uint8_t* frame) {
  net_frame_fill(frame, kNetMinFrame, o.dst, nic.mac(), kHelloSeq);
  if (nic.queue_tx(frame, kNetMinFrame)) nic.push_tx();
  nic.reclaim_tx();
}

void on_go(void* cookie, const uint8_t* f, uint32_t len, bool error) {
  if (!error && net_frame_is_ours(f, len) && net_frame_seq(f) != kHelloSeq) *static_cast<bool*>(cookie) = true;
}

[[noreturn]] void run_tx(E1000Nic& nic, const NetOptions& o, uint64_t khz) {
  auto* frame = static_cast<uint8_t*>(alloc(2048, 64));
  if (o.go) {
    bool go = false;
    const uint64_t start = rdtsc();
    uint64_t last = 0;
    while (!go && rdtsc() - start < o.wait_ms * khz) {
      if (last == 0 || rdtsc() - last >= 100 * khz) send_hello(nic, o, frame), last = rdtsc();
      nic.poll_rx(on_go, &go);
    }
    if (!go) {
      kprintf("PVIO-GUEST net: no go frame in %lu ms\n", o.wait_ms);
      shutdown(kExitErrors);
    }
  }
  net_frame_fill(frame, static_cast<uint32_t>(o.pkt), o.dst, nic.mac(), 0);
  const uint64_t max = o.count ? o.count : ~uint64_t{0};
  const uint64_t limit = o.time_ms * khz;
  const Counts a = counts(nic);
  uint64_t sent = 0, queued = 0;
  const uint64_t start = rdtsc();
  while (sent < max && (limit == 0 || rdtsc() - start < limit)) {
    net_frame_set_seq(frame, static_cast<uint32_t>(o.pkt), static_cast<uint32_t>(sent));
    if (nic.queue_tx(frame, static_cast<uint32_t>(o.pkt))) {
      ++sent;
      if (++queued >= o.batch || sent == max) nic.push_tx(), queued = 0;
      continue;
    }
    nic.push_tx();
    queued = 0;
    nic.reclaim_tx();
  }
  nic.push_tx();
  while (!nic.tx_idle()) {
  }
  const uint64_t elapsed_ns = to_ns(rdtsc() - start, khz);
  const Counts b = counts(nic);
  kprintf("PVIO-RESULT {\"mode\":\"net\",\"net\":\"e1000\",\"op\":\"tx\",\"pkt\":%lu,"
          "\"packets\":%lu,\"bytes\":%lu,\"elapsed_ns\":%lu,\"pps\":%lu,\"errors\":0,",
          o.pkt, sent, sent * o.pkt, elapsed_ns,
          elapsed_ns ? sent * uint64_t{1000000000} / elapsed_ns : 0);
  print_common(a, b, sent, 0, khz);
  shutdown(kExitOk);
}

struct RxState {
  E1000Nic* nic;
  const NetOptions* o;
  bool echo;
  uint64_t packets, bytes, bad, foreign, hellos_seen, echo_busy, rx_errors, echoed;
  uint64_t first_tsc, last_tsc;
  uint32_t max_seq;
  uint8_t reply[2048];
};
RxState g_rx;

void on_rx(void* cookie, const uint8_t* f, uint32_t len, bool error) {
  auto* s = static_cast<RxState*>(cookie);
  if (error) {
    ++s->rx_errors;
    return;
  }
  if (!net_frame_is_ours(f, len)) {
    ++s->foreign;
    return;
  }
  const uint32_t seq = net_frame_seq(f);
  if (seq == kHelloSeq) {
    ++s->hellos_seen;
    return;
  }
  const uint64_t now = rdtsc();
  if (s->packets == 0) s->first_tsc = now;
  s->last_tsc = now;
  ++s->packets;
  s->bytes += len;
  if (seq > s->max_seq) s->max_seq = seq;
  if (s->o->verify && !net_frame_payload_ok(f, len)) ++s->bad;
  if (!s->echo || len > sizeof(s->reply)) return;
  memcpy(s->reply, f, len);
  for (int i = 0; i < 6; ++i) s->reply[i] = f[6 + i], s->reply[6 + i] = s->nic->mac()[i];
  if (s->nic->queue_tx(s->reply, len)) {
    ++s->echoed;
  } else {
    ++s->echo_busy;
  }
}

[[noreturn]] void run_rx(E1000Nic& nic, const NetOptions& o, uint64_t khz) {
  RxState& s = g_rx;
  s.nic = &nic;
  s.o = &o;
  s.echo = streq(o.op, "echo");
  auto* hello = static_cast<uint8_t*>(alloc(2048, 64));
  const Counts a = counts(nic);
  const uint64_t hello_every = 100 * khz, wait = o.wait_ms * khz, idle_limit = o.idle_ms * khz;
  const uint64_t spin = o.spin_us * khz / 1000;
  const uint64_t start = rdtsc();
  uint64_t last_hello = 0, hellos = 0, last_count = 0, last_progress = start;
  bool timed_out = false;
  for (;;) {
    const uint64_t now = rdtsc();
    if (s.packets == 0) {
      if (hellos == 0 || now - last_hello >= hello_every) {
        send_hello(nic, o, hello);
        ++hellos;
        last_hello = now;
      }
      if (now - start >= wait) {
        timed_out = true;
        break;
      }
    } else {
      if (s.packets != last_count) last_count = s.packets, last_progress = now;
      if (o.count && s.packets >= o.count) break;
      if (o.time_ms && now - s.first_tsc >= o.time_ms * khz) break;
      if (now - last_progress >= idle_limit) break;
    }
    const uint64_t irqs = nic.interrupts();
    nic.poll_rx(on_rx, &s);
    if (s.echo) {
      nic.push_tx();
      nic.reclaim_tx();
    }
    // Before the first frame the hellos must go on (the guest has no timer): no halt.
    if (o.halt == 1 && s.packets != 0 && s.packets == last_count && rdtsc() - last_progress >= spin)
      nic.wait_rx(irqs);
  }
  nic.push_tx();
  for (int i = 0; i < 100000 && !nic.tx_idle(); ++i) {
  }
  const Counts b = counts(nic);
  const uint64_t elapsed_ns = s.packets > 1 ? to_ns(s.last_tsc - s.first_tsc, khz) : 0;
  const uint64_t lost = s.packets && s.max_seq + 1ull > s.packets ? s.max_seq + 1ull - s.packets : 0;
  const uint64_t errors = s.bad + s.rx_errors + s.echo_busy + (timed_out ? 1 : 0) +
                          (o.count && s.packets < o.count ? 1 : 0);
  if (timed_out) kprintf("PVIO-GUEST net: no frame in %lu ms\n", o.wait_ms);
  kprintf("PVIO-RESULT {\"mode\":\"net\",\"net\":\"e1000\",\"op\":\"%s\",\"pkt\":%lu,"
          "\"packets\":%lu,\"bytes\":%lu,\"elapsed_ns\":%lu,\"pps\":%lu,\"bad\":%lu,"
          "\"lost\":%lu,\"foreign\":%lu,\"hellos\":%lu,\"echo_busy\":%lu,\"rx_errors\":%lu,"
          "\"errors\":%lu,",
          o.op, o.pkt, s.packets, s.bytes, elapsed_ns,
          elapsed_ns ? (s.packets - 1) * uint64_t{1000000000} / elapsed_ns : 0, s.bad, lost,
          s.foreign, hellos, s.echo_busy, s.rx_errors, errors);
  print_common(a, b, s.echoed + hellos, s.packets, khz);
  shutdown(errors ? kExitErrors : kExitOk);
}

}  // namespace

void run_e1000_workload(const NetOptions& o, uint64_t khz) {
  const bool tx = streq(o.op, "tx");
  if ((!tx && !streq(o.op, "rx") && !streq(o.op, "echo")) || o.pkt < kNetMinFrame ||
      o.pkt > kNetMaxFrame || o.batch == 0 || (tx && o.count == 0 && o.time_ms == 0)) {
    kprintf("PVIO-GUEST unsupported net workload (op=tx|rx|echo, pkt 60..1514, tx needs count "
            "or time)\n");
    shutdown(kExitBadCmdline);
  }
  static E1000Nic nic;
  if (!nic.open()) shutdown(kExitNoDevice);
  // halt=1 on rx/echo: sleep on the RX interrupt when idle (tx and the default poll).
  if (!tx && o.halt == 1) nic.enable_rx_interrupt();
  if (tx) run_tx(nic, o, khz);
  run_rx(nic, o, khz);
}

}  // namespace pvio::guest

// Reading ICR acknowledges every cause and drops INTx; then the LAPIC EOI (the IOAPIC entry is
// level triggered: the EOI clears its remote IRR).
extern "C" void e1000_irq_handler() {
  using namespace pvio::guest;
  g_irq_count = g_irq_count + 1;
  (void)mmio_read32(g_irq_bar0 + 0xc0);
  mmio_write32(kLapicEoi, 0);
}
