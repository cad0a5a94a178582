// One vif queue's private state: its two rings, its grant mapper, the private copies of tx
// slots, and the mbufs waiting for rx buffers. Driven by exactly one thread, so nothing here
// is locked; counters are single-writer.
#pragma once

#include <rte_mbuf.h>

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "pvio/grant_table/grant_mapper.h"
#include "pvio/netback/vif.h"
#include "pvio/ring/io_rings.h"

namespace pvio::netback {

class VifQueue {
 public:
  VifQueue(Vif& vif, unsigned index);
  ~VifQueue();

  // One pass over both rings; returns whether anything was done.
  bool tx_round();
  bool rx_round();
  // Before sleeping: re-enables ring events and says whether work arrived meanwhile.
  bool final_check();
  // How long the thread may sleep (ns; -1 for no limit): credit refill, rx polling.
  std::int64_t sleep_limit_ns(std::uint64_t now) const;
  void push_and_notify();

  bool broken() const { return broken_.load(std::memory_order_acquire); }
  void fatal(const std::string& why);
  void add_stats(VifQueueStats& s) const;
  unsigned reader() const { return reader_; }

 private:
  struct TxPending {  // one packet between parse and grant-copy completion
    rte_mbuf* m;
    std::uint32_t first_op, nr_ops;
    std::uint32_t nr_slots;
    bool csum_blank, data_validated;
    std::uint8_t gso_type;
    std::uint16_t gso_size;
    std::array<TxSlot, kMaxPacketSlots> slot;
  };

  void map_rings();
  void tx_respond(const TxSlot* slots, std::uint32_t n, std::int16_t status);
  bool tx_credit_ok(std::uint32_t size, std::uint64_t now);
  rte_mbuf* tx_build(const ParsedTxPacket& p);
  bool tx_finish_mbuf(rte_mbuf* m, const TxPending& t);
  bool rx_segment_head();
  void mcast_update(const ParsedTxPacket& p);
  unsigned rx_slots_needed(const rte_mbuf* m) const;
  bool rx_deliver(rte_mbuf* m);

  Vif& vif_;
  const VifConfig& cfg_;
  unsigned index_;
  unsigned reader_;
  std::unique_ptr<gnttab::GrantMapper> mapper_;
  gnttab::grant_handle_t tx_handle_ = 0, rx_handle_ = 0;
  bool tx_mapped_ = false, rx_mapped_ = false;
  netif::TxBackRing tx_;
  netif::RxBackRing rx_;
  std::atomic<bool> broken_{false};
  bool tx_rsp_pending_ = false, rx_rsp_pending_ = false;

  // Tx: private copies of published slots not yet parsed (at most one ring's worth).
  std::array<netif::netif_tx_request, 256> tx_slots_;
  std::uint32_t tx_slot_count_ = 0;
  std::vector<TxPending> tx_pending_;
  std::vector<gnttab::gnttab_copy> tx_ops_;
  std::vector<rte_mbuf*> tx_out_;
  ParsedTxPacket parsed_;
  // Credit (Linux's remaining_credit / credit_timeout).
  std::uint64_t remaining_credit_ = 0;
  std::uint64_t next_credit_ns_ = 0;
  bool credit_blocked_ = false;

  // Rx: mbufs taken from the inbound ring and not yet delivered, oldest first.
  std::vector<rte_mbuf*> rx_backlog_;
  std::uint32_t rx_backlog_head_ = 0;
  std::vector<gnttab::gnttab_copy> rx_ops_;
  struct RxRsp {
    netif::netif_rx_response rsp;
    bool extra;
  };
  std::vector<RxRsp> rx_rsps_;
  std::vector<rte_mbuf*> rx_done_;
  bool rx_stalled_ = false;  // the head packet waits for rx buffers

  Counter tx_packets_, tx_bytes_, rx_packets_, rx_bytes_, tx_mcast_, tx_gso_, rx_gso_,
      rx_segmented_, grant_errors_,
      ring_errors_, notifications_, credit_waits_;
  std::array<Counter, kTxErrorCount> tx_errors_;
  std::array<Counter, kDropCount> drops_;
};

}  // namespace pvio::netback
