// The portable netfront core: one PV network interface of this guest, as Linux xen-netfront
// drives it. The XenBus handshake lives in core/xenbus.cc; the datapath in core/tx.cc
// (transmit: packets copied into granted pages, one slot per page, GSO/checksum flags) and
// core/rx.cc (receive buffers posted and refilled, responses gathered into packets). All of it
// is freestanding (no exceptions, RTTI, heap or OS calls) and reaches the world only through
// the Platform seam.
//
// Memory: the caller hands in one block of storage (storage_bytes(limits) bytes, 16-byte
// aligned) at construction; queues live in it. Data pages come from Platform::alloc_page at
// connect time (one per tx and rx ring slot) and are kept for reuse.
//
// Trust: the backend is untrusted. Every response is copied out of the ring once and checked;
// an impossible producer index, an id that names no request in flight, or a page the backend
// still has mapped after answering marks the device broken: the datapath stops, the frontend
// asks the backend to close, and the device comes back on the next handshake. Malformed
// packets (negative status, offset+length beyond the page, too many slots, unknown extras)
// are dropped and counted.
//
// Threading: not thread-safe. A binding calls every method from one thread or under one lock.
// The receive handler runs inside handle_event(); it must not call back into the core except
// send().
#pragma once

#include <cstddef>
#include <cstdint>

#include "pvio/netfront/platform.h"
#include "pvio/xen/io/netif.h"
#include "pvio/xen/io/xenbus.h"

namespace pvio::netfront {

using XenbusState = xs::XenbusState;

inline constexpr std::uint32_t kRingSize = 256;  // netif rings are one page: 256 slots each
inline constexpr std::uint32_t kPageSize = 4096;
// XEN_NETBK_LEGACY_SLOTS_MAX: a backend may refuse packets of more slots than this, so a
// packet never takes more (a 64 KiB GSO packet in whole pages needs 16).
inline constexpr std::uint32_t kMaxSlotsPerPacket = 18;

// Offloads of one packet, in netif's terms.
struct Offload {
  bool csum_blank = false;      // the L4 checksum is partial: the receiver fills it in
  bool data_validated = false;  // the checksum was verified (or needs no verification)
  std::uint8_t gso_type = netif::kGsoTypeNone;  // kGsoTypeTcpv4 / kGsoTypeTcpv6
  std::uint16_t gso_size = 0;   // MSS of a GSO packet
};

// A piece of a packet to transmit, in any memory the core can read.
struct Frag {
  const void* data = nullptr;
  std::uint32_t len = 0;
};

struct TxPacket {
  const Frag* frags = nullptr;  // the Ethernet frame, scatter-gathered
  std::uint32_t nr_frags = 0;
  Offload offload;
  std::uint16_t queue = 0;      // taken modulo the negotiated queue count
  // More packets follow at once: leave the request unpublished (no req_prod update, no
  // notification) until a send without `more` or push_tx() — Linux's xmit_more.
  bool more = false;
  // Handed to the tx-done handler once the backend has answered this packet (or the
  // connection is torn down with it in flight): a binding that must hold on to its packet
  // until then (NDIS completes a send only then) keys it by this.
  void* cookie = nullptr;
};

enum class TxStatus : std::uint8_t {
  Ok,            // copied onto the ring; the caller's memory may be reused at once
  Busy,          // no room on the queue's ring now; retry after handle_event()
  Invalid,       // empty, larger than 64 KiB, or GSO without a size
  NotSupported,  // an offload the backend did not offer
  NoDevice,      // not connected, or broken
};
const char* tx_status_name(TxStatus s);

// A received packet: pieces in the core's rx pages, valid only during the handler call.
struct RxFrag {
  const std::uint8_t* data = nullptr;
  std::uint32_t len = 0;
};
struct RxPacket {
  const RxFrag* frags = nullptr;
  std::uint32_t nr_frags = 0;
  std::uint32_t len = 0;  // sum of the frags
  Offload offload;
  std::uint16_t queue = 0;
};
using RxHandler = void (*)(void* cookie, const RxPacket& pkt);
// A sent packet with a cookie is done: `ok` is false when the backend answered with an error
// or the packet was still in flight when the connection was torn down. Runs inside
// handle_event() or the control-plane call that tore the rings down; it must not call back
// into the core.
using TxDoneHandler = void (*)(void* cookie, void* pkt_cookie, bool ok);

// What the caller lets the core use at most; fixed at construction, with the storage.
struct Limits {
  std::uint32_t max_queues = 4;  // multi-queue-num-queues at most
  bool sg = true;                // offer feature-sg (multi-slot packets)
  bool gso = true;               // use the backend's GSO offer for sending (with sg)
  // Offer feature-gso-tcpv4/v6: take GSO packets (up to 64 KiB) from the backend. A binding
  // whose receive buffers are frame-sized turns this off.
  bool rx_gso = true;
};

// Features in force for the current connection (backend offer AND our limits).
struct Negotiated {
  std::uint32_t nr_queues = 0;
  bool split_event_channels = false;
  bool sg = false;
  bool gso_tcpv4 = false;
  bool gso_tcpv6 = false;
  bool csum = false;       // the backend accepts csum_blank (no feature-no-csum-offload)
  bool ipv6_csum = false;  // feature-ipv6-csum-offload
};

struct Stats {
  std::uint64_t tx_packets = 0;
  std::uint64_t tx_bytes = 0;
  std::uint64_t tx_slots = 0;
  std::uint64_t tx_errors = 0;        // responses NETIF_RSP_ERROR / DROPPED
  std::uint64_t tx_busy = 0;          // send() answered Busy
  std::uint64_t rx_packets = 0;
  std::uint64_t rx_bytes = 0;
  std::uint64_t rx_errors = 0;        // malformed packets dropped
  std::uint64_t rx_gso = 0;
  std::uint64_t notifications = 0;    // event-channel sends
  std::uint64_t protocol_errors = 0;  // what made the device broken
  std::uint64_t grants_leaked = 0;    // pages the backend kept mapped at teardown
  std::uint64_t reconnects = 0;       // handshakes completed after the first
};

class Netfront {
 public:
  static constexpr std::uint32_t kMaxQueues = 16;
  static constexpr std::size_t kPathMax = 128;

  static std::size_t storage_bytes(const Limits& limits);

  // `devid`: the node under device/vif/. `storage` must be 16-byte aligned,
  // storage_bytes(limits) long, and outlive this object.
  Netfront(Platform& platform, std::uint32_t devid, const Limits& limits, void* storage,
           std::size_t storage_len);
  ~Netfront();
  Netfront(const Netfront&) = delete;
  Netfront& operator=(const Netfront&) = delete;

  void set_rx_handler(RxHandler fn, void* cookie) {
    rx_handler_ = fn;
    rx_cookie_ = cookie;
  }
  void set_tx_done_handler(TxDoneHandler fn, void* cookie) {
    tx_done_ = fn;
    tx_done_cookie_ = cookie;
  }

  // ---- control plane (core/xenbus.cc) ----
  // Reads device/vif/<devid>/{backend,backend-id,mac}, switches to Initialising and watches
  // the backend's state. 0 or -errno.
  int start();
  // The backend's directory changed: advance the handshake as Linux's netback_changed does
  // (InitWait -> rings, rx buffers, keys, Connected; Closing/Closed -> tear down, Closed;
  // Closed on both ends -> Initialising again, ready for a (restarted) backend). 0 or -errno.
  int backend_changed();
  // Blocking helper over xs_wait: run backend_changed() until both ends are Connected.
  int connect(std::uint32_t timeout_ms);
  // Orderly close: Closing, wait for the backend to close, end every grant, Closed.
  int close(std::uint32_t timeout_ms);
  // After a completed close(): allow the device to connect again (a binding coming back from a
  // low-power state). The MAC is read and checked again here, the backend's features by the
  // next handshake; connect() then waits for the backend to finish closing, offers
  // Initialising and builds new rings, grants and event channels. 0 or -errno.
  int reopen();

  XenbusState state() const { return state_; }
  XenbusState backend_state() const { return backend_state_; }
  // Both ends Connected and no protocol error: packets flow.
  bool carrier() const {
    return state_ == XenbusState::Connected && backend_state_ == XenbusState::Connected &&
           !broken_;
  }
  bool broken() const { return broken_; }
  const std::uint8_t* mac() const { return mac_; }
  const Negotiated& negotiated() const { return neg_; }
  const Stats& stats() const { return stats_; }
  domid_t backend_id() const { return backend_id_; }
  const char* backend_path() const { return backend_path_; }
  std::uint32_t nr_queues() const { return nr_queues_; }
  // Ports of queue q (the same port twice without split event channels); 0 when none.
  evtchn_port_t tx_port(std::uint32_t q) const;
  evtchn_port_t rx_port(std::uint32_t q) const;

  // ---- datapath (core/tx.cc, core/rx.cc) ----
  TxStatus send(const TxPacket& pkt);
  // Publishes what send(more) left on every queue's ring, one notification per queue at most.
  void push_tx();
  // Free tx slots on queue q (a packet needs one per 4 KiB, plus one for GSO).
  std::uint32_t tx_space(std::uint32_t q) const;
  // An event on one of queue q's ports (or the binding polls): reclaim tx slots, deliver
  // received packets, refill the rx ring.
  void handle_event(std::uint32_t q);
  void handle_all_events();

 private:
  struct TxSlot;
  struct RxSlot;
  struct Queue;

  // xenbus.cc
  int talk_to_backend();
  int read_features();
  int write_keys();
  int setup_queue(Queue& q);
  void teardown_datapath();
  void backend_gone(const char* why);
  int read_backend_uint(const char* key, std::uint64_t& out, std::uint64_t dflt);
  int read_state(const char* dir, XenbusState& out);
  int switch_state(XenbusState s);
  int write_front(const char* key, const char* value);
  int write_front_uint(const char* key, std::uint64_t v);
  void remove_front_keys();
  bool read_mac();
  void request_disconnect();
  void logf(LogLevel l, const char* a, const char* b = nullptr, std::uint64_t n = ~0ull);

  // tx.cc
  void tx_reclaim(Queue& q);
  void tx_publish(Queue& q);
  void tx_release_all(Queue& q);
  // rx.cc
  void rx_refill(Queue& q);
  void rx_process(Queue& q);
  bool rx_slot(Queue& q, std::uint32_t idx, const netif::netif_rx_response& rsp);
  void rx_deliver(Queue& q);
  void rx_release_all(Queue& q);
  void datapath_broken(const char* why, std::uint64_t n = ~0ull);

  Platform& pf_;
  std::uint32_t devid_;
  Limits limits_;
  std::uint8_t* storage_;
  std::size_t storage_len_;

  XenbusState state_ = XenbusState::Unknown;
  XenbusState backend_state_ = XenbusState::Unknown;
  bool started_ = false;
  bool closing_ = false;
  bool ever_connected_ = false;
  bool backend_connected_once_ = false;  // on this connection
  bool rings_up_ = false;
  bool broken_ = false;
  char front_path_[kPathMax] = {};
  char backend_path_[kPathMax] = {};
  domid_t backend_id_ = 0;
  std::uint8_t mac_[6] = {};
  Negotiated neg_;
  Stats stats_;
  RxHandler rx_handler_ = nullptr;
  void* rx_cookie_ = nullptr;
  TxDoneHandler tx_done_ = nullptr;
  void* tx_done_cookie_ = nullptr;

  Queue* queues_ = nullptr;
  std::uint32_t nr_queues_ = 0;
  std::uint32_t depth_ = 0;
};

}  // namespace pvio::netfront
