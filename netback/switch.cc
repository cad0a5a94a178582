// The learning switch: MAC table with ageing, flooding, per-port inbound rings, and the grace
// period that lets the control plane detach a port while other threads forward.
#include "pvio/netback/switch.h"

#include <rte_ether.h>
#include <rte_errno.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

#include "pvio/event_channel/notifier.h"
#include "pvio/netback/dpdk.h"

namespace pvio::netback {
namespace {

std::uint64_t mac_key(const MacAddr& m) {
  std::uint64_t k = 0;
  for (std::uint8_t b : m) k = (k << 8) | b;
  return k | (1ull << 63);
}

std::uint32_t mac_hash(std::uint64_t key) {
  key ^= key >> 29;
  key *= 0xbf58476d1ce4e5b9ull;
  key ^= key >> 32;
  return static_cast<std::uint32_t>(key);
}

// Spreads a vif's incoming packets over its queues by flow (addresses and ports).
unsigned pick_queue(const rte_mbuf* m, unsigned nr_queues) {
  if (nr_queues <= 1) return 0;
  const std::uint32_t len = rte_pktmbuf_data_len(m);
  const std::uint8_t* p = rte_pktmbuf_mtod(m, const std::uint8_t*);
  std::uint32_t h = 0;
  for (std::uint32_t i = 0; i < 12 && i < len; ++i) h = h * 31 + p[i];
  if (len >= 38 && p[12] == 0x08 && p[13] == 0x00)
    for (std::uint32_t i = 26; i < 38; ++i) h = h * 31 + p[i];  // IPv4 addresses and ports
  return mac_hash(h) % nr_queues;
}

}  // namespace

bool parse_mac(const std::string& s, MacAddr* out) {
  unsigned v[6];
  char tail;
  if (std::sscanf(s.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4],
                  &v[5], &tail) != 6)
    return false;
  for (int i = 0; i < 6; ++i) (*out)[i] = static_cast<std::uint8_t>(v[i]);
  return true;
}

std::string mac_string(const MacAddr& m) {
  char b[18];
  std::snprintf(b, sizeof b, "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
  return b;
}

const char* drop_name(Drop d) {
  switch (d) {
    case Drop::SpoofedSource: return "spoofed-source";
    case Drop::InboundFull: return "inbound-full";
    case Drop::NoMbuf: return "no-mbuf";
    case Drop::NoRxBuffers: return "no-rx-buffers";
    case Drop::ChecksumSetup: return "checksum-setup";
    case Drop::GsoUnsupported: return "gso-unsupported";
    case Drop::TxFailed: return "tx-failed";
    case Drop::Count_: break;
  }
  return "unknown";
}

// ---- Port ----

Port::Port(std::string name, unsigned nr_queues) : name_(std::move(name)), nr_queues_(nr_queues) {
  if (nr_queues == 0 || nr_queues > kMaxQueues) throw std::invalid_argument("bad queue count");
  static std::atomic<unsigned> serial{0};
  for (unsigned q = 0; q < nr_queues; ++q) {
    const std::string rn = "pvio_in_" + std::to_string(serial.fetch_add(1));
    inbound_[q] = rte_ring_create(rn.c_str(), kInboundRingSize, SOCKET_ID_ANY, RING_F_SC_DEQ);
    if (inbound_[q] == nullptr)
      throw std::runtime_error("rte_ring_create: " + std::string(rte_strerror(rte_errno)));
    wake_fd_[q] = evtchn::eventfd_create(/*nonblocking=*/true);
    if (wake_fd_[q] < 0) throw std::runtime_error("eventfd");
  }
}

Port::~Port() {
  for (unsigned q = 0; q < nr_queues_; ++q) {
    if (inbound_[q] != nullptr) {
      rte_mbuf* m;
      while (rte_ring_sc_dequeue(inbound_[q], reinterpret_cast<void**>(&m)) == 0)
        rte_pktmbuf_free(m);
      rte_ring_free(inbound_[q]);
    }
    if (wake_fd_[q] >= 0) ::close(wake_fd_[q]);
  }
}

unsigned Port::select_queue(const rte_mbuf* m) const { return pick_queue(m, nr_queues_); }

void Port::wake(unsigned q) {
  if (sleeping_[q].load(std::memory_order_seq_cst) && sleeping_[q].exchange(false))
    evtchn::eventfd_signal(wake_fd_[q]);
}

// ---- Switch ----

Switch::Switch(std::uint64_t ageing_ns)
    : ageing_ns_(ageing_ns), macs_(new MacEntry[kMacTableSize]) {}

Switch::~Switch() = default;

void Switch::attach(Port& port) {
  std::lock_guard lk(control_);
  for (unsigned i = 0; i < kMaxPorts; ++i) {
    if (ports_[i].load(std::memory_order_relaxed) != nullptr) continue;
    // A new generation makes MAC entries learned on the slot's previous port stale.
    generation_[i].fetch_add(1, std::memory_order_relaxed);
    port.id_ = static_cast<int>(i);
    ports_[i].store(&port, std::memory_order_release);
    if (port_limit_.load(std::memory_order_relaxed) <= i)
      port_limit_.store(i + 1, std::memory_order_release);
    return;
  }
  throw std::runtime_error("switch: no free port");
}

void Switch::detach(Port& port) {
  std::lock_guard lk(control_);
  if (port.id_ < 0) return;
  ports_[static_cast<unsigned>(port.id_)].store(nullptr, std::memory_order_seq_cst);
  port.id_ = -1;
  // Grace period: every reader that was inside forward() (odd epoch) must leave it once.
  for (unsigned r = 0; r < kMaxReaders; ++r) {
    if (!reader_used_[r].load(std::memory_order_acquire)) continue;
    const std::uint64_t e = epochs_[r].load(std::memory_order_seq_cst);
    if ((e & 1) == 0) continue;
    while (epochs_[r].load(std::memory_order_seq_cst) == e) std::this_thread::yield();
  }
}

unsigned Switch::register_reader() {
  for (unsigned r = 0; r < kMaxReaders; ++r) {
    bool expected = false;
    if (reader_used_[r].compare_exchange_strong(expected, true)) return r;
  }
  throw std::runtime_error("switch: too many forwarding threads");
}

void Switch::unregister_reader(unsigned reader) { reader_used_[reader].store(false); }

void Switch::learn(const MacAddr& mac, unsigned port_id, std::uint64_t now) {
  const std::uint64_t key = mac_key(mac);
  const std::uint32_t value = (generation_[port_id].load(std::memory_order_relaxed) << 8) | port_id;
  const std::uint32_t h = mac_hash(key);
  for (unsigned i = 0; i < kProbe; ++i) {
    MacEntry& e = macs_[(h + i) % kMacTableSize];
    std::uint64_t k = e.key.load(std::memory_order_acquire);
    const bool aged = now - e.seen.load(std::memory_order_relaxed) > ageing_ns_;
    if (k != key && k != 0 && !aged) continue;
    if (k != key && !e.key.compare_exchange_strong(k, key)) continue;
    if (e.port.load(std::memory_order_relaxed) != value) e.port.store(value, std::memory_order_relaxed);
    // Refresh at most every millisecond: the line stays shared while a flow is steady.
    if (now - e.seen.load(std::memory_order_relaxed) > 1'000'000)
      e.seen.store(now, std::memory_order_relaxed);
    return;
  }
  // Table neighbourhood full: the MAC is not learned and its traffic is flooded.
}

int Switch::lookup_at(const MacAddr& mac, std::uint64_t now) const {
  const std::uint64_t key = mac_key(mac);
  const std::uint32_t h = mac_hash(key);
  for (unsigned i = 0; i < kProbe; ++i) {
    const MacEntry& e = macs_[(h + i) % kMacTableSize];
    if (e.key.load(std::memory_order_acquire) != key) continue;
    if (now - e.seen.load(std::memory_order_relaxed) > ageing_ns_) return -1;
    const std::uint32_t v = e.port.load(std::memory_order_relaxed);
    const unsigned id = v & 0xFF;
    if (id >= kMaxPorts || (v >> 8) != generation_[id].load(std::memory_order_relaxed)) return -1;
    return static_cast<int>(id);
  }
  return -1;
}

int Switch::lookup(const MacAddr& mac) const {
  const int id = lookup_at(mac, now_ns());
  return id >= 0 && ports_[static_cast<unsigned>(id)].load() != nullptr ? id : -1;
}

// Packets for one port queue are enqueued together: consecutive packets of a burst mostly go
// the same way, and one bulk enqueue costs one compare-exchange on the ring's head.
struct Switch::Batch {
  Port* port = nullptr;
  unsigned queue = 0;
  unsigned n = 0;
  rte_mbuf* pkts[64];
};

void Switch::flush(Batch& b) {
  if (b.n == 0) return;
  if (b.port->send_direct(b.pkts, b.n)) {
    b.n = 0;
    return;
  }
  const unsigned done =
      rte_ring_mp_enqueue_burst(b.port->inbound(b.queue), reinterpret_cast<void**>(b.pkts), b.n, nullptr);
  if (done < b.n) {
    b.port->drops(Drop::InboundFull).add_shared(b.n - done);
    for (unsigned i = done; i < b.n; ++i) rte_pktmbuf_free(b.pkts[i]);
  }
  if (done != 0) b.port->wake(b.queue);
  b.n = 0;
}

void Switch::deliver(Batch& b, Port& dst, rte_mbuf* m) {
  const unsigned q = dst.select_queue(m);
  if (b.n != 0 && (b.port != &dst || b.queue != q || b.n == 64)) flush(b);
  b.port = &dst;
  b.queue = q;
  b.pkts[b.n++] = m;
}

void Switch::forward(unsigned reader, Port& src, rte_mbuf** pkts, unsigned n) {
  std::atomic<std::uint64_t>& epoch = epochs_[reader];
  epoch.store(epoch.load(std::memory_order_relaxed) + 1, std::memory_order_seq_cst);  // odd
  const std::uint64_t now = now_ns();
  const int src_id = src.id();
  Batch batch;
  for (unsigned i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    if (rte_pktmbuf_data_len(m) < sizeof(rte_ether_hdr) || src_id < 0) {
      rte_pktmbuf_free(m);
      continue;
    }
    const auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
    MacAddr s, d;
    std::memcpy(s.data(), eth->src_addr.addr_bytes, 6);
    std::memcpy(d.data(), eth->dst_addr.addr_bytes, 6);
    if ((s[0] & 1) == 0) learn(s, static_cast<unsigned>(src_id), now);
    const bool group = (d[0] & 1) != 0;
    if (!group) {
      const int to = lookup_at(d, now);
      if (to == src_id) {  // the destination is behind the port it came from
        rte_pktmbuf_free(m);
        continue;
      }
      if (to >= 0) {
        if (Port* p = ports_[static_cast<unsigned>(to)].load(std::memory_order_acquire)) {
          deliver(batch, *p, m);
          continue;
        }
      }
    }
    // Flood: a copy to every other port but the last, which gets the original.
    Port* last = nullptr;
    const unsigned limit = port_limit_.load(std::memory_order_acquire);
    for (unsigned id = 0; id < limit; ++id) {
      if (static_cast<int>(id) == src_id) continue;
      Port* p = ports_[id].load(std::memory_order_acquire);
      if (p == nullptr || (group && !p->wants_multicast(d))) continue;
      if (last != nullptr) {
        rte_mbuf* c = rte_pktmbuf_copy(m, packet_pool(), 0, UINT32_MAX);
        if (c == nullptr) {
          last->drops(Drop::NoMbuf).add_shared();
        } else {
          deliver(batch, *last, c);
        }
      }
      last = p;
    }
    if (last != nullptr) {
      deliver(batch, *last, m);
    } else {
      rte_pktmbuf_free(m);
    }
  }
  flush(batch);
  epoch.store(epoch.load(std::memory_order_relaxed) + 1, std::memory_order_seq_cst);  // even
}

}  // namespace pvio::netback
