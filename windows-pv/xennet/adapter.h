// xennet: one NDIS 6 miniport adapter per PV NIC (a child device of xenbus, device/vif/<id>),
// driven by the portable netfront core. control.cc holds the control plane (the Platform seam
// over xenbus's interface, initialise / halt, the handshake and reconnects, link state, OIDs);
// datapath.cc the send and receive paths and pause / restart; power.cc the device power
// states (OID_PNP_QUERY_POWER / OID_PNP_SET_POWER).
//
// Serialisation of the (single-threaded) core, as in xenvbd:
//   datapath  MiniportSendNetBufferLists, MiniportReturnNetBufferLists and the event-channel
//             callback (<= DISPATCH_LEVEL) use the core under lock_ (a spin lock);
//   control   the handshake and reconnects run at PASSIVE_LEVEL (xenstore, memory and event
//             channels need it): MiniportInitializeEx, MiniportHaltEx and xenbus's watch
//             thread. A control step marks the core busy under lock_, runs without it, then
//             replays events the datapath deferred meanwhile. Out of D0 the control plane
//             keeps the core (control_busy_ stays set) and watches leave it alone.
// NDIS is never called with lock_ held: a protocol may send from inside a receive indication
// or a send completion, which would re-enter the lock.
//
// NBL ownership: a send NBL is the miniport's from MiniportSendNetBufferLists until it is
// handed to NdisMSendNetBufferListsComplete; its MiniportReserved[0] counts the NET_BUFFERs
// not yet answered by the backend, MiniportReserved[1] links it on the queue of NBLs waiting
// for ring space. Receive NBLs come from a pool made at initialisation (one frame buffer
// each) and are the protocol's from the indication until MiniportReturnNetBufferLists.
#pragma once

#include <cstdint>

#include "pvio/netfront/netfront.h"
#include "pvio/wdk/ndis.h"
#include "pvio/windows/xen_interface.h"
#include "offload.h"

namespace pvio::windows::xennet {

// Receive NBLs: two rings' worth. Once half of them are up the stack, the rest are indicated
// with NDIS_RECEIVE_FLAGS_RESOURCES (the protocol copies, they come back at once), so a slow
// protocol costs a copy, not a dropped frame.
inline constexpr std::uint32_t kRxNbls = 512;
inline constexpr std::uint32_t kRxLowWater = kRxNbls / 2;
inline constexpr std::uint32_t kRxBufferBytes = 2048;  // one Ethernet frame (with VLAN tag)
inline constexpr std::uint32_t kMtu = 1500;
inline constexpr std::uint32_t kMaxFrame = kMtu + 14;
inline constexpr ULONG64 kLinkSpeedBps = 10'000'000'000ull;  // what we report: 10 Gbit/s
inline constexpr std::uint32_t kMaxMulticast = 32;

enum class RunState : std::uint8_t { Paused, Running, Pausing };

class Adapter {
 public:
  Adapter() = default;
  Adapter(const Adapter&) = delete;
  Adapter& operator=(const Adapter&) = delete;

  // ---- NDIS entry points (driver.cc forwards to them) ----
  NDIS_STATUS initialize(NDIS_HANDLE handle);           // PASSIVE_LEVEL
  void halt();                                          // PASSIVE_LEVEL
  NDIS_STATUS pause();                                  // PASSIVE_LEVEL
  NDIS_STATUS restart();                                // PASSIVE_LEVEL
  NDIS_STATUS oid_request(PNDIS_OID_REQUEST req);       // <= DISPATCH_LEVEL
  void send(PNET_BUFFER_LIST nbls, ULONG send_flags);   // <= DISPATCH_LEVEL
  void return_nbls(PNET_BUFFER_LIST nbls, ULONG flags); // <= DISPATCH_LEVEL

  // ---- xenbus callbacks (xen_interface.h) ----
  static VOID on_event(PVOID ctx, ULONG port);  // DISPATCH_LEVEL
  static VOID on_watch(PVOID ctx, PCSTR path);  // PASSIVE_LEVEL, watch thread

 private:
  class XenPlatform;
  friend class XenPlatform;

  // What the datapath hands to NDIS once lock_ is dropped.
  struct Deferred {
    PNET_BUFFER_LIST done_head = nullptr;  // sends to complete
    PNET_BUFFER_LIST done_tail = nullptr;
    PNET_BUFFER_LIST rx_head = nullptr;    // receives to indicate
    PNET_BUFFER_LIST rx_tail = nullptr;
    ULONG rx_count = 0;
    PNET_BUFFER_LIST res_head = nullptr;   // receives to indicate with the RESOURCES flag
    PNET_BUFFER_LIST res_tail = nullptr;
    ULONG res_count = 0;
    bool pause_complete = false;
  };

  // control.cc
  NDIS_STATUS initialize_steps(NDIS_HANDLE handle);
  NTSTATUS query_xen_interface(PDEVICE_OBJECT lower);
  NDIS_STATUS set_attributes();
  NDIS_STATUS set_offload_attributes();
  void current_offload(NDIS_OFFLOAD& out);  // takes lock_
  void indicate_offload_config();
  bool alloc_rx_pool();
  void free_rx_pool();
  void control_step();
  void indicate_link_if_changed();
  void indicate_link(NDIS_MEDIA_CONNECT_STATE s);
  NDIS_STATUS query_oid(NDIS_OID oid, PVOID buf, ULONG len, ULONG& written, ULONG& needed);
  NDIS_STATUS set_oid(NDIS_OID oid, PVOID buf, ULONG len, ULONG& read, ULONG& needed);
  void logf(ULONG level, const char* msg);

  // power.cc (PASSIVE_LEVEL, from the OID handler)
  NDIS_STATUS set_power(PVOID buf, ULONG len, ULONG& read, ULONG& needed);
  NDIS_STATUS query_power(PVOID buf, ULONG len, ULONG& read, ULONG& needed);
  void power_down();
  void power_up();

  // datapath.cc
  void lock(KIRQL& old) { old = KeAcquireSpinLockRaiseToDpc(&lock_); }
  void unlock(KIRQL old) { KeReleaseSpinLock(&lock_, old); }
  void datapath_events(Deferred& d);  // lock_ held, core not busy
  void drain_tx(Deferred& d);         // lock_ held, core not busy
  bool send_one(PNET_BUFFER_LIST nbl, PNET_BUFFER nb, netfront::TxStatus& st);
  void nb_done(PNET_BUFFER_LIST nbl, NDIS_STATUS st);  // core owner
  void fail_queued(NDIS_STATUS st, Deferred& d);
  void take_core_done(Deferred& d);
  void check_pause(Deferred& d);
  void flush(Deferred& d);  // lock_ not held
  static void on_rx(void* ctx, const netfront::RxPacket& pkt);
  static void on_tx_done(void* ctx, void* pkt_cookie, bool ok);

  NDIS_HANDLE handle_ = nullptr;
  PVIO_XEN_INTERFACE xen_{};
  bool have_interface_ = false;
  XenPlatform* platform_ = nullptr;
  netfront::Netfront* core_ = nullptr;
  void* core_storage_ = nullptr;
  alignas(16) unsigned char platform_mem_[640];
  alignas(16) unsigned char core_mem_[sizeof(netfront::Netfront)];
  std::uint8_t mac_[6] = {};

  KSPIN_LOCK lock_ = 0;
  KEVENT watch_event_{};    // a watch fired (the core's xs_wait)
  KEVENT control_mutex_{};  // one control step at a time
  volatile bool steady_ = false;  // after initialisation: watches drive the core
  // Out of D0 (set under control_mutex_ and lock_): the backend connection is closed, sends
  // are refused with NDIS_STATUS_LOW_POWER_STATE.
  bool low_power_ = false;

  // Under lock_.
  RunState state_ = RunState::Paused;
  bool control_busy_ = false;     // a control step owns the core
  bool events_pending_ = false;   // an event came while busy
  PNET_BUFFER_LIST txq_head_ = nullptr;  // accepted, waiting for ring space
  PNET_BUFFER_LIST txq_tail_ = nullptr;
  PNET_BUFFER txq_next_nb_ = nullptr;    // the head's first NET_BUFFER not yet on the ring
  std::uint32_t tx_outstanding_ = 0;     // send NBLs not yet completed
  std::uint32_t rx_outstanding_ = 0;     // receive NBLs indicated, not yet returned
  PNET_BUFFER_LIST rx_free_ = nullptr;   // receive NBLs owned by us
  std::uint32_t rx_free_count_ = 0;
  // Sends the core finished (tx-done handler): owned by whoever owns the core.
  PNET_BUFFER_LIST core_done_head_ = nullptr;
  PNET_BUFFER_LIST core_done_tail_ = nullptr;
  Deferred* rx_sink_ = nullptr;          // where on_rx puts packets during handle_event
  ULONG packet_filter_ = 0;
  // Task offloads: what the connection allows (set at initialisation), what NDIS has enabled
  // (OID_TCP_OFFLOAD_PARAMETERS) and whether IEEE 802.3 encapsulation is on per IP version
  // (OID_OFFLOAD_ENCAPSULATION). The datapath honours offloads_ masked by the encapsulation.
  Offloads offloads_hw_{};
  Offloads offloads_{};
  bool encap_ip4_ = true;
  bool encap_ip6_ = true;
  ULONG lookahead_ = kMtu;
  std::uint64_t xmit_ok_ = 0, xmit_error_ = 0, rcv_ok_ = 0, rcv_error_ = 0, rcv_no_buffer_ = 0;

  // Link state as last indicated (control plane only): Unknown out of D0, as NDIS asks.
  NDIS_MEDIA_CONNECT_STATE link_indicated_ = MediaConnectStateDisconnected;

  // The receive pool (allocated in initialize, freed in halt).
  NDIS_HANDLE rx_pool_ = nullptr;
  std::uint8_t* rx_buffers_ = nullptr;
  PNET_BUFFER_LIST rx_nbls_[kRxNbls] = {};
  PMDL rx_mdls_[kRxNbls] = {};
  // Headers of a send with checksum offload, patched (pseudo-header sum) before the core
  // copies the frame: netif's csum_blank means "partial", as Linux's CHECKSUM_PARTIAL.
  std::uint8_t tx_hdr_[128] = {};
};

}  // namespace pvio::windows::xennet
