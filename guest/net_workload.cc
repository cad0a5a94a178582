// mode=net net=pv op=tx|rx|echo pkt=BYTES count=N time=MS: the test guest's network workloads
// on netfront, with the results as one PVIO-RESULT line.
//  - tx: send frames of `pkt` bytes as fast as the ring takes them (published in batches of
//    `batch`), for `count` frames or `time` ms; the rate counts frames the backend answered OK.
//    With go=1 the guest first sends hellos until a frame of ours arrives (the host's "go"),
//    so a host-side counter is attached before the first frame.
//  - rx: send a hello frame (repeated every 100 ms until the first frame arrives, so the host
//    knows the guest listens and the switch learns its MAC), then count the frames that arrive,
//    checking their payload and sequence numbers.
//  - echo: as rx, and every frame goes straight back with its MACs swapped (ping-pong: the
//    host measures the round trip).
#include "net_workload.h"

#include <stddef.h>

#include "alloc.h"
#include "arch.h"
#include "console.h"
#include "cpu.h"
#include "pv_net.h"
#include "pvio/guest/net_frame.h"
#include "xen.h"

namespace pvio::guest {

namespace {

uint64_t to_ns(uint64_t cycles, uint64_t khz) { return cycles * 1000000ull / khz; }

bool streq(const char* a, const char* b) {
  while (*a && *a == *b) ++a, ++b;
  return *a == *b;
}

struct RxState {
  PvNic* nic = nullptr;
  const NetOptions* o = nullptr;
  bool echo = false;
  uint64_t packets = 0, bytes = 0, bad = 0, foreign = 0, hellos_seen = 0, echo_busy = 0;
  uint64_t first_tsc = 0, last_tsc = 0;
  uint32_t max_seq = 0;
  uint8_t linear[2048];
};
RxState g_rx;

void on_rx(void* cookie, const netfront::RxPacket& pkt) {
  auto* s = static_cast<RxState*>(cookie);
  const uint8_t* f = pkt.frags[0].data;
  if (pkt.nr_frags > 1) {
    if (pkt.len > sizeof(s->linear)) {
      ++s->bad;
      return;
    }
    uint32_t at = 0;
    for (uint32_t i = 0; i < pkt.nr_frags; ++i)
      for (uint32_t k = 0; k < pkt.frags[i].len; ++k) s->linear[at++] = pkt.frags[i].data[k];
    f = s->linear;
  }
  if (!net_frame_is_ours(f, pkt.len)) {
    ++s->foreign;  // the host stack's own traffic on a TAP uplink (IPv6 DAD, ...)
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
  s->bytes += pkt.len;
  if (seq > s->max_seq) s->max_seq = seq;
  if (s->o->verify && !net_frame_payload_ok(f, pkt.len)) ++s->bad;
  if (!s->echo) return;
  // Back to the sender: destination = its source, source = ours, the rest as received.
  uint8_t hdr[12];
  for (int i = 0; i < 6; ++i) hdr[i] = f[6 + i], hdr[6 + i] = s->nic->mac()[i];
  const netfront::Frag frags[2] = {{hdr, 12}, {f + 12, pkt.len - 12}};
  netfront::TxPacket tp;
  tp.frags = frags;
  tp.nr_frags = 2;
  if (s->nic->front().send(tp) != netfront::TxStatus::Ok) ++s->echo_busy;
}

void send_hello(PvNic& nic, const NetOptions& o, uint8_t* frame) {
  net_frame_fill(frame, kNetMinFrame, o.dst, nic.mac(), kHelloSeq);
  const netfront::Frag frag{frame, kNetMinFrame};
  netfront::TxPacket tp;
  tp.frags = &frag;
  tp.nr_frags = 1;
  (void)nic.front().send(tp);
}

struct Snapshot {
  PvCounters c;
  netfront::Stats s;
  uint64_t upcalls = 0;
  DoorbellCounts d;
  Cpl3TrapCounts t;
};
Snapshot snap(PvNic& nic) {
  return {nic.platform().counters, nic.front().stats(), upcalls(), doorbell_counts(),
          cpl3_trap_counts()};
}

// The members every result line carries: what the guest did that exits, and the core's counts.
void print_common(const Snapshot& a, const Snapshot& b, uint64_t khz) {
  const uint64_t doorbells = b.c.doorbells - a.c.doorbells, hlts = b.c.hlts - a.c.hlts;
  kprintf("\"tx_packets\":%lu,\"tx_errors\":%lu,\"tx_busy\":%lu,\"rx_packets\":%lu,"
          "\"rx_errors\":%lu,\"notifications\":%lu,\"doorbells\":%lu,\"hlts\":%lu,"
          "\"upcalls\":%lu,\"guest_exits\":%lu,\"polls\":%lu,\"doorbell_ns\":%lu,"
          "\"mmio_doorbells\":%lu,\"pio_doorbells\":%lu,\"cpl3_traps\":%lu,"
          "\"protocol_errors\":%lu,\"tsc_khz\":%lu,\"cpl\":%u}\n",
          b.s.tx_packets - a.s.tx_packets, b.s.tx_errors - a.s.tx_errors,
          b.s.tx_busy - a.s.tx_busy, b.s.rx_packets - a.s.rx_packets,
          b.s.rx_errors - a.s.rx_errors, b.s.notifications - a.s.notifications, doorbells, hlts,
          b.upcalls - a.upcalls, doorbells + hlts, b.c.polls - a.c.polls,
          doorbells ? to_ns(b.c.doorbell_cycles - a.c.doorbell_cycles, khz) / doorbells : 0,
          b.d.mmio - a.d.mmio, b.d.pio - a.d.pio, b.t.emulated - a.t.emulated,
          b.s.protocol_errors - a.s.protocol_errors, khz, current_cpl());
}

void idle(PvNic& nic, const NetOptions& o) {
  if (o.halt) nic.wait_event();
}

void on_go(void* cookie, const netfront::RxPacket& pkt) {
  if (pkt.nr_frags >= 1 && net_frame_is_ours(pkt.frags[0].data, pkt.frags[0].len) &&
      net_frame_seq(pkt.frags[0].data) != kHelloSeq)
    *static_cast<bool*>(cookie) = true;
}

// Hellos every 100 ms until the host answers with any frame of ours; false after wait_ms.
bool wait_for_go(PvNic& nic, const NetOptions& o, uint64_t khz, uint8_t* frame) {
  bool go = false;
  nic.front().set_rx_handler(on_go, &go);
  const uint64_t start = rdtsc();
  uint64_t last = 0;
  while (!go) {
    const uint64_t now = rdtsc();
    if (now - start >= o.wait_ms * khz) break;
    if (last == 0 || now - last >= 100 * khz) {
      send_hello(nic, o, frame);
      last = now;
    }
    nic.poll();
  }
  nic.front().set_rx_handler(nullptr, nullptr);
  return go;
}

[[noreturn]] void run_tx(PvNic& nic, const NetOptions& o, uint64_t khz) {
  auto* frame = static_cast<uint8_t*>(alloc(2048, 64));
  if (o.go && !wait_for_go(nic, o, khz, frame)) {
    kprintf("PVIO-GUEST net: no go frame in %lu ms\n", o.wait_ms);
    shutdown(kExitErrors);
  }
  net_frame_fill(frame, static_cast<uint32_t>(o.pkt), o.dst, nic.mac(), 0);
  const netfront::Frag frag{frame, static_cast<uint32_t>(o.pkt)};
  netfront::TxPacket tp;
  tp.frags = &frag;
  tp.nr_frags = 1;
  const uint32_t idle_space = nic.front().tx_space(0);
  const uint64_t max = o.count ? o.count : ~uint64_t{0};
  const uint64_t limit = o.time_ms * khz;
  const Snapshot a = snap(nic);
  uint64_t sent = 0, refused = 0;
  const uint64_t start = rdtsc();
  while (sent < max && (limit == 0 || rdtsc() - start < limit)) {
    net_frame_set_seq(frame, static_cast<uint32_t>(o.pkt), static_cast<uint32_t>(sent));
    tp.more = (sent + 1) % o.batch != 0 && sent + 1 < max;
    const netfront::TxStatus st = nic.front().send(tp);
    if (st == netfront::TxStatus::Ok) {
      ++sent;
      continue;
    }
    if (st != netfront::TxStatus::Busy) {
      kprintf("PVIO-GUEST net: send failed: %s\n", netfront::tx_status_name(st));
      ++refused;
      break;
    }
    // Ring full: publish what waits, take the answers back, retry.
    nic.front().push_tx();
    nic.poll();
    if (nic.front().tx_space(0) == 0) idle(nic, o);
  }
  nic.front().push_tx();
  // Every frame answered before the clock stops.
  while (nic.front().tx_space(0) < idle_space && nic.front().carrier()) {
    nic.poll();
    if (nic.front().tx_space(0) < idle_space) idle(nic, o);
  }
  const uint64_t elapsed_ns = to_ns(rdtsc() - start, khz);
  const Snapshot b = snap(nic);
  const uint64_t errors = (b.s.tx_errors - a.s.tx_errors) + refused +
                          (nic.front().carrier() ? 0 : 1);
  kprintf("PVIO-RESULT {\"mode\":\"net\",\"net\":\"pv\",\"op\":\"tx\",\"pkt\":%lu,"
          "\"packets\":%lu,\"bytes\":%lu,\"elapsed_ns\":%lu,\"pps\":%lu,\"errors\":%lu,",
          o.pkt, sent, sent * o.pkt, elapsed_ns,
          elapsed_ns ? sent * uint64_t{1000000000} / elapsed_ns : 0, errors);
  print_common(a, b, khz);
  shutdown(errors ? kExitErrors : kExitOk);
}

[[noreturn]] void run_rx(PvNic& nic, const NetOptions& o, uint64_t khz) {
  RxState& s = g_rx;
  s.nic = &nic;
  s.o = &o;
  s.echo = streq(o.op, "echo");
  nic.front().set_rx_handler(on_rx, &s);
  auto* hello = static_cast<uint8_t*>(alloc(2048, 64));
  const Snapshot a = snap(nic);
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
    nic.poll();
    if (s.echo) nic.front().push_tx();
    if (!nic.front().carrier()) break;
    // Before the first frame the hellos must go on (the host may not listen yet): no halt.
    if (s.packets != 0 && s.packets == last_count && rdtsc() - last_progress >= spin) idle(nic, o);
  }
  // Echoes still on the ring go out before the result.
  nic.front().push_tx();
  for (int i = 0; i < 1000; ++i) nic.poll();
  const Snapshot b = snap(nic);
  const uint64_t elapsed_ns = s.packets > 1 ? to_ns(s.last_tsc - s.first_tsc, khz) : 0;
  // Frames between the first and the highest sequence number that never arrived (the sender
  // numbers from 0).
  const uint64_t lost = s.packets && s.max_seq + 1ull > s.packets ? s.max_seq + 1ull - s.packets : 0;
  const uint64_t errors = s.bad + (b.s.rx_errors - a.s.rx_errors) + s.echo_busy +
                          (timed_out ? 1 : 0) + (nic.front().carrier() ? 0 : 1) +
                          (o.count && s.packets < o.count ? 1 : 0);
  if (timed_out) kprintf("PVIO-GUEST net: no frame in %lu ms\n", o.wait_ms);
  kprintf("PVIO-RESULT {\"mode\":\"net\",\"net\":\"pv\",\"op\":\"%s\",\"pkt\":%lu,"
          "\"packets\":%lu,\"bytes\":%lu,\"elapsed_ns\":%lu,\"pps\":%lu,\"bad\":%lu,"
          "\"lost\":%lu,\"foreign\":%lu,\"hellos\":%lu,\"echo_busy\":%lu,\"errors\":%lu,",
          o.op, o.pkt, s.packets, s.bytes, elapsed_ns,
          elapsed_ns ? (s.packets - 1) * uint64_t{1000000000} / elapsed_ns : 0, s.bad, lost, s.foreign,
          hellos, s.echo_busy, errors);
  print_common(a, b, khz);
  shutdown(errors ? kExitErrors : kExitOk);
}

}  // namespace

void run_net_workload(const NetOptions& o, uint64_t khz) {
  const bool tx = streq(o.op, "tx");
  if ((!tx && !streq(o.op, "rx") && !streq(o.op, "echo")) || o.pkt < kNetMinFrame ||
      o.pkt > kNetMaxFrame || o.batch == 0 || (tx && o.count == 0 && o.time_ms == 0)) {
    kprintf("PVIO-GUEST unsupported net workload (op=tx|rx|echo, pkt 60..1514, tx needs count "
            "or time)\n");
    shutdown(kExitBadCmdline);
  }
  NetOptions opts = o;
  if (opts.halt == 255) opts.halt = tx ? 1 : 0;
  static PvNic nic;
  if (!nic.open(khz, static_cast<uint32_t>(o.vif), 20000)) shutdown(kExitNoDevice);
  nic.mask_events();
  if (tx) run_tx(nic, opts, khz);
  run_rx(nic, opts, khz);
}

}  // namespace pvio::guest
