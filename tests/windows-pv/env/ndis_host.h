// NDIS for the host: implements the NDIS routines xennet imports (pvio/wdk/ndis.h) and drives
// miniport adapters the way NDIS 6 does: MiniportInitializeEx at PASSIVE_LEVEL (the adapter
// is then Paused), MiniportRestart, sends at DISPATCH_LEVEL, receive indications returned
// from a protocol thread at DISPATCH_LEVEL, MiniportPause (possibly pending until
// NdisMPauseComplete), MiniportHaltEx of a paused adapter. It enforces the documented
// contracts, recording a violation (kernel.h) for each broken rule:
//   - every sent NBL is completed exactly once, never with NDIS_STATUS_PENDING; once
//     completed its NBL, NET_BUFFERs, MDLs and data are poisoned and checked at halt, so a
//     driver that writes to it afterwards is caught (one that reads it gets garbage);
//   - receive NBLs come from the miniport's own pools, are not indicated twice, are not
//     changed while the protocol owns them, and are only indicated while the adapter runs;
//   - a pause completes only when no send is outstanding and every receive NBL is back;
//   - the *_DISPATCH_LEVEL flags match the caller's IRQL and each routine's IRQL limit holds;
//   - at halt every pool, NBL and MDL the miniport allocated has been freed;
//   - power (NDIS 6.20 without NDIS_MINIPORT_ATTRIBUTES_NO_PAUSE_ON_SUSPEND): a low-power
//     state is entered as NDIS does it, pause, OID_PNP_QUERY_POWER, OID_PNP_SET_POWER, and
//     left with OID_PNP_SET_POWER(D0), then restart; both OIDs must succeed; from the pause
//     until the restart no send may be completed and no receive indicated, and in D3 (after
//     the SET_POWER OID returned) nothing at all may be indicated; power management
//     capabilities are checked as NDIS checks them (revision 2 general attributes carry
//     NDIS_PM_CAPABILITIES in PowerManagementCapabilitiesEx and NULL in the old member).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "pvio/wdk/ndis.h"

namespace pvio::windows::test {

// One NBL to send: one frame per NET_BUFFER, each split over `mdl_pieces` MDLs.
struct SendNbl {
  std::vector<std::vector<std::uint8_t>> frames;
  PVOID checksum_info = nullptr;  // NetBufferListInfo[TcpIpChecksumNetBufferListInfo]
  PVOID lso_info = nullptr;       // NetBufferListInfo[TcpLargeSendNetBufferListInfo]
  unsigned mdl_pieces = 1;
  // The protocol asks only for offloads the miniport has enabled; a test of the miniport's
  // answer to a request it did not advertise sets this.
  bool beyond_advertised = false;
};

struct ReceivedFrame {
  std::vector<std::uint8_t> data;
  NDIS_TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO checksum{};
};

class NdisHost {
 public:
  static NdisHost& instance();
  bool registered() const { return registered_; }

  struct Adapter;
  // MiniportInitializeEx for the device whose lower device is `lower`; the adapter is Paused
  // on success.
  NDIS_STATUS initialize(PDEVICE_OBJECT lower, Adapter** out);
  NDIS_STATUS restart(Adapter* a);
  // MiniportPause, then waits (up to timeout_ms) for it to finish. Sets *status to what the
  // handler returned. False on timeout.
  bool pause(Adapter* a, int timeout_ms, NDIS_STATUS* status = nullptr);
  // MiniportPause from another thread (NDIS pauses while protocols still send); wait with
  // wait_paused().
  void pause_async(Adapter* a);
  bool wait_paused(Adapter* a, int timeout_ms);
  void halt(Adapter* a);

  // A sleep as NDIS drives it: pause (waiting up to timeout_ms), OID_PNP_QUERY_POWER(D3),
  // OID_PNP_SET_POWER(D3). False when the pause did not finish or an OID failed. A miniport
  // without NDIS_MINIPORT_ATTRIBUTES_NO_HALT_ON_SUSPEND and without wake-up capability would
  // be halted instead; that is a test error here.
  bool suspend(Adapter* a, int timeout_ms);
  // The way back: OID_PNP_SET_POWER(D0), then MiniportRestart. False when either failed.
  bool resume(Adapter* a);
  bool low_power(Adapter* a);
  bool no_halt_on_suspend(Adapter* a);
  // The NDIS_PM_CAPABILITIES the miniport reported (have = false: none).
  NDIS_PM_CAPABILITIES pm_capabilities(Adapter* a, bool* have);

  // MiniportSendNetBufferLists at DISPATCH_LEVEL with the NBLs chained; returns their ids.
  std::vector<std::uint64_t> send(Adapter* a, const std::vector<SendNbl>& nbls);
  bool wait_sends(Adapter* a, int timeout_ms);  // until none is outstanding
  std::size_t outstanding_sends(Adapter* a);
  NDIS_STATUS send_status(Adapter* a, std::uint64_t id);  // NDIS_STATUS_PENDING until done
  PVOID completed_lso_info(Adapter* a, std::uint64_t id);
  // The NBL that carried send `id` (poisoned once completed): for tests that break a rule.
  PNET_BUFFER_LIST nbl_of(Adapter* a, std::uint64_t id);

  // Receive indications: frames in order; with hold set the protocol keeps the NBLs until
  // release_held().
  std::vector<ReceivedFrame> take_received(Adapter* a);
  bool wait_received(Adapter* a, std::size_t count, int timeout_ms);
  void set_hold(Adapter* a, bool hold);
  std::size_t held(Adapter* a);
  void release_held(Adapter* a);
  std::size_t resources_indications(Adapter* a);

  // A query OID request at PASSIVE_LEVEL.
  NDIS_STATUS query(Adapter* a, NDIS_OID oid, void* buf, ULONG len, ULONG* written = nullptr);
  NDIS_STATUS set(Adapter* a, NDIS_OID oid, const void* buf, ULONG len);
  // Link-state indications so far (MediaConnectState of each).
  std::vector<NDIS_MEDIA_CONNECT_STATE> link_states(Adapter* a);
  bool wait_link(Adapter* a, NDIS_MEDIA_CONNECT_STATE s, int timeout_ms);
  const NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES& general(Adapter* a);
  // The offload attributes set at initialisation (zeroed when none were set), the offload
  // configuration as last set or indicated, and every NDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG.
  bool has_offload(Adapter* a);
  NDIS_OFFLOAD offload_hardware(Adapter* a);
  NDIS_OFFLOAD offload_default(Adapter* a);
  NDIS_OFFLOAD offload_current(Adapter* a);
  std::vector<NDIS_OFFLOAD> offload_indications(Adapter* a);

  // ---- the NDIS routines (ndis.cc's extern "C" entry points forward here) ----
  NDIS_STATUS register_driver(PNDIS_MINIPORT_DRIVER_CHARACTERISTICS c, PNDIS_HANDLE out);
  NDIS_STATUS set_attributes(NDIS_HANDLE h, PNDIS_MINIPORT_ADAPTER_ATTRIBUTES attrs);
  void device_property(NDIS_HANDLE h, PDEVICE_OBJECT* pdo, PDEVICE_OBJECT* fdo,
                       PDEVICE_OBJECT* next);
  NDIS_HANDLE alloc_pool(NDIS_HANDLE h, PNET_BUFFER_LIST_POOL_PARAMETERS p);
  void free_pool(NDIS_HANDLE pool);
  PNET_BUFFER_LIST alloc_nbl(NDIS_HANDLE pool, PMDL chain, ULONG offset, SIZE_T length);
  void free_nbl(PNET_BUFFER_LIST nbl);
  PMDL alloc_mdl(NDIS_HANDLE h, PVOID va, ULONG len);
  void free_mdl(PMDL mdl);
  void send_complete(NDIS_HANDLE h, PNET_BUFFER_LIST nbls, ULONG flags);
  void indicate_receive(NDIS_HANDLE h, PNET_BUFFER_LIST nbls, ULONG count, ULONG flags);
  void indicate_status(NDIS_HANDLE h, PNDIS_STATUS_INDICATION ind);
  void pause_complete(NDIS_HANDLE h);

  enum class State { Initializing, Paused, Running, Pausing, Halted };
  struct Pool {
    Adapter* adapter;
    std::set<PNET_BUFFER_LIST> nbls;
  };
  struct SentBlock {
    std::uint64_t id;
    std::unique_ptr<std::uint8_t[]> mem;  // NBL, NBs, MDLs, data
    std::size_t size;
    bool poisoned = false;
  };
  struct Adapter {
    PDEVICE_OBJECT lower = nullptr;
    std::uint8_t fdo[64] = {};
    NDIS_HANDLE context = nullptr;
    bool in_initialize = false;
    bool have_registration = false;
    ULONG attribute_flags = 0;
    bool have_pm = false;
    NDIS_PM_CAPABILITIES pm{};
    bool low_power = false;     // D3: after OID_PNP_SET_POWER(D3) returned, until the D0 one
    bool in_set_power = false;  // an OID_PNP_SET_POWER is being handled
    bool have_general = false;
    NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES general{};
    bool have_offload = false;
    NDIS_OFFLOAD offload_hw{}, offload_default{}, offload_current{};
    std::vector<NDIS_OFFLOAD> offload_indications;
    State state = State::Initializing;
    bool pause_pending = false;

    std::map<PNET_BUFFER_LIST, std::unique_ptr<SentBlock>> outstanding;
    std::map<std::uint64_t, NDIS_STATUS> status;
    std::map<std::uint64_t, PVOID> lso_done;
    std::vector<std::unique_ptr<SentBlock>> completed;  // poisoned, checked at halt
    std::set<PNET_BUFFER_LIST> completed_nbls;
    std::map<std::uint64_t, PNET_BUFFER_LIST> nbl_by_id;

    std::set<Pool*> pools;
    std::set<PMDL> mdls;
    std::map<PNET_BUFFER_LIST, std::vector<std::uint8_t>> with_protocol;  // NBL -> snapshot
    std::deque<ReceivedFrame> received;
    std::deque<PNET_BUFFER_LIST> to_return;
    bool hold = false;
    std::size_t resources_indications = 0;  // NBLs indicated with NDIS_RECEIVE_FLAGS_RESOURCES
    std::vector<NDIS_MEDIA_CONNECT_STATE> links;
    std::thread pauser;
  };

 private:
  NdisHost();
  ~NdisHost();
  Adapter* from_handle(NDIS_HANDLE h);
  void returner_loop();
  void check_pause_done(Adapter* a);  // mu_ held
  NDIS_STATUS power_oid(Adapter* a, NDIS_OID oid, NDIS_DEVICE_POWER_STATE s);

  bool registered_ = false;
  NDIS_MINIPORT_DRIVER_CHARACTERISTICS chars_{};
  std::mutex mu_;
  std::condition_variable cv_;
  std::set<Adapter*> adapters_;
  std::set<Pool*> all_pools_;
  std::uint64_t next_id_ = 1;
  bool stop_ = false;
  std::thread returner_;
};

}  // namespace pvio::windows::test
