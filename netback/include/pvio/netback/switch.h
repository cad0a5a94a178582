// The L2 learning switch inside pvio-netback and the port interface its members implement
// (vifs and DPDK uplinks). Forwarding is lock-free: ports sit in a fixed table read with
// acquire loads, MAC entries are single words updated with compare-exchange, and packets reach
// a port through one multi-producer rte_ring per port queue that only its own thread drains.
#pragma once

#include <rte_mbuf.h>
#include <rte_ring.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace pvio::netback {

inline constexpr unsigned kMaxPorts = 64;
inline constexpr unsigned kMaxQueues = 8;        // multi-queue-max-queues we offer at most
inline constexpr unsigned kInboundRingSize = 1024;  // mbufs waiting for one port queue

using MacAddr = std::array<std::uint8_t, 6>;
bool parse_mac(const std::string& s, MacAddr* out);
std::string mac_string(const MacAddr& m);

// Packet drops counted at a port, by cause.
enum class Drop : std::uint8_t {
  SpoofedSource,   // a vif sent from a MAC other than its configured `mac`
  InboundFull,     // the port's inbound ring was full (its guest or device is not keeping up)
  NoMbuf,          // the packet pool was exhausted
  NoRxBuffers,     // the frontend has no rx buffers (and no sg) for a packet this big
  ChecksumSetup,   // NETTXF_csum_blank on a packet that is not TCP/UDP over IPv4/IPv6
  GsoUnsupported,  // a GSO packet that could not be cut into segments (MSS over 2 KiB, no mbufs)
  TxFailed,        // the uplink device refused the packet
  Count_,
};
inline constexpr std::size_t kDropCount = static_cast<std::size_t>(Drop::Count_);
const char* drop_name(Drop d);

// A counter written by one thread and read by others (relaxed load/store, no locked op), or by
// several when `add_shared` is used.
struct Counter {
  std::atomic<std::uint64_t> v{0};
  void add(std::uint64_t n = 1) {
    v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void add_shared(std::uint64_t n = 1) { v.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t get() const { return v.load(std::memory_order_relaxed); }
};

class Switch;

// A switch port: a vif or an uplink device. The switch enqueues packets for the port into
// inbound(q); the port's thread for queue q drains it. A thread about to sleep sets
// sleeping(q) and re-checks its ring; a producer that finds the flag set wakes it.
class Port {
 public:
  Port(std::string name, unsigned nr_queues);
  virtual ~Port();
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  const std::string& name() const { return name_; }
  unsigned nr_queues() const { return nr_queues_; }
  rte_ring* inbound(unsigned q) const { return inbound_[q]; }
  int wake_fd(unsigned q) const { return wake_fd_[q]; }
  std::atomic<bool>& sleeping(unsigned q) { return sleeping_[q]; }
  void wake(unsigned q);
  Counter& drops(Drop d) { return drops_[static_cast<std::size_t>(d)]; }
  std::uint64_t drop_count(Drop d) const { return drops_[static_cast<std::size_t>(d)].get(); }

  // Which of the port's queues takes `m`: a flow hash by default; vifs with a control ring use
  // the frontend's Toeplitz key and mapping table.
  virtual unsigned select_queue(const rte_mbuf* m) const;
  // Whether a flooded multicast frame to `dst` is wanted (vifs with multicast control filter).
  virtual bool wants_multicast(const MacAddr& dst) const { (void)dst; return true; }
  // Run to completion: a port that can transmit from the forwarding thread itself (an uplink
  // device, under its own lock) takes the batch here and returns true; false means the switch
  // queues it on inbound(q) for the port's thread (vifs: only their thread owns their rings).
  virtual bool send_direct(rte_mbuf** pkts, unsigned n) { (void)pkts; (void)n; return false; }
  // The switch port id while attached, else -1.
  int id() const { return id_; }

 private:
  friend class Switch;
  std::string name_;
  unsigned nr_queues_;
  std::array<rte_ring*, kMaxQueues> inbound_{};
  std::array<int, kMaxQueues> wake_fd_{};
  std::array<std::atomic<bool>, kMaxQueues> sleeping_{};
  std::array<Counter, kDropCount> drops_;
  int id_ = -1;
};

class Switch {
 public:
  explicit Switch(std::uint64_t ageing_ns = 300'000'000'000ull);
  ~Switch();
  Switch(const Switch&) = delete;
  Switch& operator=(const Switch&) = delete;

  // Attaches a port (throws std::runtime_error when the table is full). Control plane only.
  void attach(Port& port);
  // Detaches it and waits until no forwarding thread can still reach it. Packets left in its
  // inbound rings are freed. Control plane only, never from a forwarding thread.
  void detach(Port& port);

  // Forwarding thread registration: each thread calling forward() has a reader slot.
  unsigned register_reader();
  void unregister_reader(unsigned reader);

  // Forwards `n` packets that arrived on `src`: learns their source MACs, then delivers each to
  // the learned port, or floods it (broadcast, multicast, unknown unicast). Consumes the mbufs.
  void forward(unsigned reader, Port& src, rte_mbuf** pkts, unsigned n);

  // The port a MAC was learned on, or -1 (for tests and status output).
  int lookup(const MacAddr& mac) const;

 private:
  struct MacEntry {
    std::atomic<std::uint64_t> key{0};   // 1 << 63 | mac, 0 when empty
    std::atomic<std::uint32_t> port{0};  // generation << 8 | port id
    std::atomic<std::uint64_t> seen{0};  // ns, steady clock
  };
  static constexpr unsigned kMacTableSize = 4096;
  static constexpr unsigned kProbe = 8;
  static constexpr unsigned kMaxReaders = 256;

  void learn(const MacAddr& mac, unsigned port_id, std::uint64_t now);
  int lookup_at(const MacAddr& mac, std::uint64_t now) const;
  struct Batch;
  void deliver(Batch& b, Port& dst, rte_mbuf* m);
  void flush(Batch& b);

  std::uint64_t ageing_ns_;
  std::array<std::atomic<Port*>, kMaxPorts> ports_{};
  std::array<std::atomic<std::uint32_t>, kMaxPorts> generation_{};
  std::atomic<unsigned> port_limit_{0};  // one past the highest slot ever used: flood bound
  std::unique_ptr<MacEntry[]> macs_;
  // Reader epochs (odd while inside forward()), for detach()'s grace period.
  std::array<std::atomic<std::uint64_t>, kMaxReaders> epochs_{};
  std::array<std::atomic<bool>, kMaxReaders> reader_used_{};
  std::mutex control_;
};

}  // namespace pvio::netback
