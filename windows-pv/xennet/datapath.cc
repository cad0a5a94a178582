// xennet's datapath: NBLs to netfront packets (checksum and LSO information mapped to netif
// flags and GSO), send completion when the backend answers, received packets into NBLs of the
// preallocated pool, and pause / restart. Nothing here allocates.
#include <cstring>

#include "adapter.h"
#include "checksum.h"

namespace pvio::windows::xennet {

namespace {
constexpr std::uint32_t kMaxFrags = 32;

std::uintptr_t pending_nbs(PNET_BUFFER_LIST nbl) {
  return reinterpret_cast<std::uintptr_t>(nbl->MiniportReserved[0]);
}
void set_pending_nbs(PNET_BUFFER_LIST nbl, std::uintptr_t n) {
  nbl->MiniportReserved[0] = reinterpret_cast<PVOID>(n);
}
PNET_BUFFER_LIST queue_next(PNET_BUFFER_LIST nbl) {
  return static_cast<PNET_BUFFER_LIST>(nbl->MiniportReserved[1]);
}
void set_queue_next(PNET_BUFFER_LIST nbl, PNET_BUFFER_LIST next) {
  nbl->MiniportReserved[1] = next;
}
// The one's-complement sum of bytes [from, from + len) of a frame held in `frags` (not
// folded): a piece starting at an odd offset is summed byte-swapped (RFC 1071 section 2(B)).
std::uint32_t sum_frags(const netfront::Frag* frags, std::uint32_t n, std::uint32_t from,
                        std::uint32_t len) {
  std::uint64_t s = 0;
  std::uint32_t at = 0;       // offset of frags[i] in the frame
  std::uint32_t summed = 0;   // bytes of the range summed so far
  for (std::uint32_t i = 0; i < n && summed < len; at += frags[i].len, ++i) {
    const std::uint32_t lo = from > at ? from - at : 0;
    if (lo >= frags[i].len) continue;
    std::uint32_t k = frags[i].len - lo;
    if (k > len - summed) k = len - summed;
    std::uint16_t c = csum_fold(csum_add(0, static_cast<const std::uint8_t*>(frags[i].data) + lo, k));
    if (summed & 1) c = static_cast<std::uint16_t>(c << 8 | c >> 8);
    s += c;
    summed += k;
  }
  while (s >> 32) s = (s & 0xFFFFFFFFu) + (s >> 32);
  return static_cast<std::uint32_t>(s);
}

void append(PNET_BUFFER_LIST& head, PNET_BUFFER_LIST& tail, PNET_BUFFER_LIST nbl) {
  nbl->Next = nullptr;
  if (tail != nullptr) tail->Next = nbl;
  else head = nbl;
  tail = nbl;
}
}  // namespace

// ---- send ----

void Adapter::send(PNET_BUFFER_LIST nbls, ULONG) {
  Deferred d;
  KIRQL irql;
  lock(irql);
  for (PNET_BUFFER_LIST nbl = nbls, next; nbl != nullptr; nbl = next) {
    next = nbl->Next;
    nbl->Status = NDIS_STATUS_SUCCESS;
    if (state_ != RunState::Running || low_power_) {
      // A paused (or pausing) miniport completes new sends at once (NDIS: MiniportPause); out
      // of D0 with the low-power status (OID_PNP_SET_POWER).
      nbl->Status = low_power_ ? NDIS_STATUS_LOW_POWER_STATE : NDIS_STATUS_PAUSED;
      append(d.done_head, d.done_tail, nbl);
      continue;
    }
    std::uintptr_t n = 0;
    for (PNET_BUFFER nb = nbl->FirstNetBuffer; nb != nullptr; nb = nb->Next) ++n;
    ++tx_outstanding_;
    set_pending_nbs(nbl, n + 1);  // +1 until it leaves the queue: no early completion
    set_queue_next(nbl, nullptr);
    if (txq_tail_ != nullptr) set_queue_next(txq_tail_, nbl);
    else txq_head_ = nbl;
    txq_tail_ = nbl;
  }
  if (!control_busy_) drain_tx(d);
  unlock(irql);
  flush(d);
}

// Puts queued NET_BUFFERs on the ring until it is full; what does not fit stays queued and
// goes out when the backend's responses free slots (datapath_events).
void Adapter::drain_tx(Deferred& d) {
  while (txq_head_ != nullptr) {
    PNET_BUFFER_LIST nbl = txq_head_;
    PNET_BUFFER nb = txq_next_nb_ != nullptr ? txq_next_nb_ : nbl->FirstNetBuffer;
    for (; nb != nullptr; nb = nb->Next) {
      netfront::TxStatus st;
      send_one(nbl, nb, st);
      if (st == netfront::TxStatus::Busy) {
        txq_next_nb_ = nb;
        core_->push_tx();
        take_core_done(d);
        return;
      }
      if (st != netfront::TxStatus::Ok) nb_done(nbl, NDIS_STATUS_FAILURE);
    }
    txq_next_nb_ = nullptr;
    txq_head_ = queue_next(nbl);
    if (txq_head_ == nullptr) txq_tail_ = nullptr;
    nb_done(nbl, NDIS_STATUS_SUCCESS);  // the queue's own reference
  }
  core_->push_tx();
  take_core_done(d);
}

// One NET_BUFFER (one Ethernet frame) to the core, which copies it into granted pages.
bool Adapter::send_one(PNET_BUFFER_LIST nbl, PNET_BUFFER nb, netfront::TxStatus& st) {
  st = netfront::TxStatus::Invalid;
  netfront::Frag frags[kMaxFrags + 1];
  std::uint32_t n = 0;
  const std::uint32_t total = nb->DataLength;
  std::uint32_t left = total;
  std::uint32_t off = nb->CurrentMdlOffset;
  for (PMDL mdl = nb->CurrentMdl; left > 0 && mdl != nullptr; mdl = mdl->Next, off = 0) {
    if (n == kMaxFrags || off > mdl->ByteCount) return false;
    auto* va = static_cast<const std::uint8_t*>(
        MmGetSystemAddressForMdlSafe(mdl, NormalPagePriority | MdlMappingNoExecute));
    if (va == nullptr) return false;
    const std::uint32_t avail = mdl->ByteCount - off;
    const std::uint32_t take = avail < left ? avail : left;
    if (take == 0) continue;
    frags[n].data = va + off;
    frags[n].len = take;
    ++n;
    left -= take;
  }
  if (left != 0 || total == 0) return false;

  netfront::TxPacket pkt;
  pkt.frags = frags;
  pkt.nr_frags = n;
  pkt.more = true;  // published by push_tx() at the end of the batch
  pkt.cookie = nbl;

  NDIS_TCP_LARGE_SEND_OFFLOAD_NET_BUFFER_LIST_INFO lso;
  lso.Value = nbl->NetBufferListInfo[TcpLargeSendNetBufferListInfo];
  NDIS_TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO csum;
  csum.Value = nbl->NetBufferListInfo[TcpIpChecksumNetBufferListInfo];
  const bool is_lso = lso.LsoV1Transmit.MSS != 0;
  const bool lso_v2 = is_lso && lso.Transmit.Type == NDIS_TCP_LARGE_SEND_OFFLOAD_V2_TYPE;
  const bool l4_csum = !is_lso && (csum.Transmit.TcpChecksum || csum.Transmit.UdpChecksum);
  const bool ip_csum = !is_lso && csum.Transmit.IpHeaderChecksum && csum.Transmit.IsIPv4;
  bool lso_v6 = false;
  if (is_lso) {
    lso_v6 = lso_v2 ? lso.LsoV2Transmit.IPVersion == NDIS_TCP_LARGE_SEND_OFFLOAD_IPv6
                    : csum.Transmit.IsIPv6;
    // An LSO switched off by OID_TCP_OFFLOAD_PARAMETERS: NDIS documents that such NBLs are
    // dropped (completed with a failure), never sent whole.
    const bool on = lso_v2 ? (lso_v6 ? offloads_.lso_v2_ip6 && encap_ip6_
                                     : offloads_.lso_v2_ip4 && encap_ip4_)
                           : !lso_v6 && offloads_.lso_v1 && encap_ip4_;
    if (!on || lso.LsoV1Transmit.MSS > 0xFFFF) return false;
  }

  std::uint32_t tcp_payload = 0;
  if (is_lso || l4_csum || ip_csum) {
    // Copy the headers aside and patch them: a send NBL's data is read-only to a miniport.
    std::uint32_t h = total < sizeof tx_hdr_ ? total : static_cast<std::uint32_t>(sizeof tx_hdr_);
    std::uint32_t fi = 0, fo = 0;
    for (std::uint32_t got = 0; got < h;) {
      const std::uint32_t k = frags[fi].len - fo < h - got ? frags[fi].len - fo : h - got;
      std::memcpy(tx_hdr_ + got, static_cast<const std::uint8_t*>(frags[fi].data) + fo, k);
      got += k;
      fo += k;
      if (fo == frags[fi].len) {
        ++fi;
        fo = 0;
      }
    }
    if (is_lso && !fix_lso_lengths(tx_hdr_, h, total)) return false;
    const L4Info l4 = find_l4(tx_hdr_, h, total);
    bool software_l4 = false;
    if (is_lso) {
      if (!l4.ok || l4.proto != kIpProtoTcp || l4.ipv6 != lso_v6) return false;
      const std::uint32_t thl = (tx_hdr_[l4.l4_offset + 12] >> 4) * 4u;
      // Only the checksum field (within h, find_l4 checked) is patched: TCP options may run
      // past the copy.
      if (thl < 20 || l4.l4_len < thl) return false;
      tcp_payload = l4.l4_len - thl;
      if (!l4.ipv6) ipv4_header_checksum(tx_hdr_, l4);
      // The stack left the pseudo-header sum without the length; a netif GSO packet carries
      // it with the whole packet's L4 length (Linux's CHECKSUM_PARTIAL of a GSO skb).
      const std::uint16_t p = pseudo_header_sum(tx_hdr_, l4);
      tx_hdr_[l4.csum_offset] = static_cast<std::uint8_t>(p >> 8);
      tx_hdr_[l4.csum_offset + 1] = static_cast<std::uint8_t>(p);
      pkt.offload.gso_type = lso_v6 ? netif::kGsoTypeTcpv6 : netif::kGsoTypeTcpv4;
      pkt.offload.gso_size = static_cast<std::uint16_t>(lso.LsoV1Transmit.MSS);
    } else {
      if (!l4.ok && l4_csum) return false;  // cannot offload what we cannot find
      // The IPv4 header checksum is always xennet's own work, enabled or not.
      if (ip_csum && l4.ip_offset + 20 <= h && !l4.ipv6) ipv4_header_checksum(tx_hdr_, l4);
      if (l4_csum) {
        const bool tcp = l4.proto == kIpProtoTcp;
        const bool on = l4.ipv6 ? (tcp ? offloads_.tcp6_tx : offloads_.udp6_tx) && encap_ip6_
                                : (tcp ? offloads_.tcp4_tx : offloads_.udp4_tx) && encap_ip4_;
        if (on) {
          const std::uint16_t p = pseudo_header_sum(tx_hdr_, l4);
          tx_hdr_[l4.csum_offset] = static_cast<std::uint8_t>(p >> 8);
          tx_hdr_[l4.csum_offset + 1] = static_cast<std::uint8_t>(p);
          pkt.offload.csum_blank = true;
        } else {
          // Asked for an offload that is switched off: the stack should not, but the frame
          // must still leave with a correct checksum, so it is computed here.
          tx_hdr_[l4.csum_offset] = tx_hdr_[l4.csum_offset + 1] = 0;
          software_l4 = true;
        }
      }
    }
    // The frame is now: the patched headers, then the rest of the original fragments.
    netfront::Frag patched[kMaxFrags + 1];
    std::uint32_t m = 0;
    patched[m++] = {tx_hdr_, h};
    for (; fi < n; ++fi, fo = 0)
      patched[m++] = {static_cast<const std::uint8_t*>(frags[fi].data) + fo, frags[fi].len - fo};
    std::memcpy(frags, patched, sizeof(netfront::Frag) * m);
    pkt.nr_frags = m;
    if (software_l4) {
      std::uint16_t c = static_cast<std::uint16_t>(~csum_fold(
          pseudo_header_sum(tx_hdr_, l4) + sum_frags(frags, m, l4.l4_offset, l4.l4_len)));
      if (c == 0 && l4.proto == kIpProtoUdp) c = 0xFFFF;  // RFC 768: 0 means "no checksum"
      tx_hdr_[l4.csum_offset] = static_cast<std::uint8_t>(c >> 8);
      tx_hdr_[l4.csum_offset + 1] = static_cast<std::uint8_t>(c);
    }
  }

  st = core_->send(pkt);
  if (st != netfront::TxStatus::Ok) return false;
  if (is_lso) {
    // The completion: LSOv1 reports the TCP payload sent; LSOv2 zeroes Reserved. The type
    // stays what the protocol set.
    NDIS_TCP_LARGE_SEND_OFFLOAD_NET_BUFFER_LIST_INFO done;
    done.Value = nullptr;
    if (lso_v2) {
      done.LsoV2TransmitComplete.Type = NDIS_TCP_LARGE_SEND_OFFLOAD_V2_TYPE;
    } else {
      done.LsoV1TransmitComplete.Type = NDIS_TCP_LARGE_SEND_OFFLOAD_V1_TYPE;
      done.LsoV1TransmitComplete.TcpPayload = tcp_payload;
    }
    nbl->NetBufferListInfo[TcpLargeSendNetBufferListInfo] = done.Value;
  }
  return true;
}

// A NET_BUFFER of `nbl` is finished (or the queue let go of it): the first failure is the
// NBL's status; the last one completes it.
void Adapter::nb_done(PNET_BUFFER_LIST nbl, NDIS_STATUS st) {
  if (st != NDIS_STATUS_SUCCESS && nbl->Status == NDIS_STATUS_SUCCESS) nbl->Status = st;
  const std::uintptr_t left = pending_nbs(nbl) - 1;
  set_pending_nbs(nbl, left);
  if (left != 0) return;
  --tx_outstanding_;
  if (nbl->Status == NDIS_STATUS_SUCCESS) ++xmit_ok_;
  else ++xmit_error_;
  append(core_done_head_, core_done_tail_, nbl);
}

void Adapter::on_tx_done(void* ctx, void* pkt_cookie, bool ok) {
  static_cast<Adapter*>(ctx)->nb_done(static_cast<PNET_BUFFER_LIST>(pkt_cookie),
                                      ok ? NDIS_STATUS_SUCCESS : NDIS_STATUS_FAILURE);
}

void Adapter::take_core_done(Deferred& d) {
  if (core_done_head_ == nullptr) return;
  if (d.done_tail != nullptr) d.done_tail->Next = core_done_head_;
  else d.done_head = core_done_head_;
  d.done_tail = core_done_tail_;
  core_done_head_ = core_done_tail_ = nullptr;
}

// Everything still waiting for ring space is completed with `st` (pause).
void Adapter::fail_queued(NDIS_STATUS st, Deferred& d) {
  while (txq_head_ != nullptr) {
    PNET_BUFFER_LIST nbl = txq_head_;
    PNET_BUFFER nb = txq_next_nb_ != nullptr ? txq_next_nb_ : nbl->FirstNetBuffer;
    for (; nb != nullptr; nb = nb->Next) nb_done(nbl, st);
    txq_next_nb_ = nullptr;
    txq_head_ = queue_next(nbl);
    nb_done(nbl, NDIS_STATUS_SUCCESS);  // the queue's reference
  }
  txq_tail_ = nullptr;
  take_core_done(d);
}

// ---- events and receive ----

VOID Adapter::on_event(PVOID ctx, ULONG) {
  auto* a = static_cast<Adapter*>(ctx);
  Deferred d;
  KIRQL irql;
  a->lock(irql);
  if (a->control_busy_) {
    a->events_pending_ = true;
  } else {
    a->datapath_events(d);
  }
  a->check_pause(d);
  a->unlock(irql);
  a->flush(d);
}

void Adapter::datapath_events(Deferred& d) {
  rx_sink_ = &d;
  core_->handle_all_events();
  rx_sink_ = nullptr;
  drain_tx(d);  // responses freed ring slots
}

void Adapter::on_rx(void* ctx, const netfront::RxPacket& pkt) {
  auto* a = static_cast<Adapter*>(ctx);
  Deferred* d = a->rx_sink_;
  // Paused or pausing: nothing may be indicated; a zero packet filter asks for nothing.
  if (d == nullptr || a->state_ != RunState::Running || a->packet_filter_ == 0) return;
  if (pkt.len > kRxBufferBytes) {
    ++a->rcv_error_;
    return;
  }
  PNET_BUFFER_LIST nbl = a->rx_free_;
  if (nbl == nullptr) {
    ++a->rcv_no_buffer_;  // every buffer is up the stack: drop, as a NIC out of descriptors
    return;
  }
  a->rx_free_ = nbl->Next;
  --a->rx_free_count_;
  PNET_BUFFER nb = nbl->FirstNetBuffer;
  auto* buf = static_cast<std::uint8_t*>(nb->CurrentMdl->MappedSystemVa);
  std::uint32_t at = 0;
  for (std::uint32_t i = 0; i < pkt.nr_frags; ++i) {
    std::memcpy(buf + at, pkt.frags[i].data, pkt.frags[i].len);
    at += pkt.frags[i].len;
  }
  nb->DataOffset = 0;
  nb->CurrentMdlOffset = 0;
  nb->DataLength = pkt.len;

  // netif's flags to NDIS's receive checksum information. A partial checksum (csum_blank:
  // the sender left it to the receiver) has no NDIS equivalent: it is completed here.
  NDIS_TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO ci;
  ci.Value = nullptr;
  L4Info l4;
  bool valid = false;
  if (pkt.offload.csum_blank) {
    valid = complete_partial_checksum(buf, pkt.len, l4);
  } else if (pkt.offload.data_validated) {
    l4 = find_l4(buf, pkt.len, pkt.len);
    valid = l4.ok;
  }
  // Only what NDIS has enabled for receive is reported; the rest the stack checks itself.
  if (valid) {
    const Offloads& on = a->offloads_;
    const bool tcp = l4.proto == kIpProtoTcp;
    const bool l4_on = l4.ipv6 ? (tcp ? on.tcp6_rx : on.udp6_rx) && a->encap_ip6_
                               : (tcp ? on.tcp4_rx : on.udp4_rx) && a->encap_ip4_;
    if (l4_on && tcp) ci.Receive.TcpChecksumSucceeded = 1;
    if (l4_on && !tcp) ci.Receive.UdpChecksumSucceeded = 1;
    // netif validates L4 only: the IPv4 header checksum is checked here.
    if (!l4.ipv6 && on.ip4_csum_rx && a->encap_ip4_) {
      if (ipv4_header_ok(buf, pkt.len, l4)) ci.Receive.IpChecksumSucceeded = 1;
      else ci.Receive.IpChecksumFailed = 1;
    }
  }
  nbl->NetBufferListInfo[TcpIpChecksumNetBufferListInfo] = ci.Value;
  nbl->Status = NDIS_STATUS_SUCCESS;

  nbl->Next = nullptr;
  ++a->rcv_ok_;
  if (a->rx_free_count_ < kRxLowWater) {
    // Low on NBLs: this one comes back when the indication returns.
    if (d->res_tail != nullptr) d->res_tail->Next = nbl;
    else d->res_head = nbl;
    d->res_tail = nbl;
    ++d->res_count;
    return;
  }
  if (d->rx_tail != nullptr) d->rx_tail->Next = nbl;
  else d->rx_head = nbl;
  d->rx_tail = nbl;
  ++d->rx_count;
  ++a->rx_outstanding_;
}

void Adapter::return_nbls(PNET_BUFFER_LIST nbls, ULONG) {
  Deferred d;
  KIRQL irql;
  lock(irql);
  for (PNET_BUFFER_LIST nbl = nbls, next; nbl != nullptr; nbl = next) {
    next = nbl->Next;
    nbl->Next = rx_free_;
    rx_free_ = nbl;
    ++rx_free_count_;
    --rx_outstanding_;
  }
  check_pause(d);
  unlock(irql);
  flush(d);
}

// ---- pause / restart ----

// lock_ held: the last send completed or receive NBL returned finishes a pending pause.
void Adapter::check_pause(Deferred& d) {
  if (state_ == RunState::Pausing && tx_outstanding_ == 0 && rx_outstanding_ == 0) {
    state_ = RunState::Paused;
    d.pause_complete = true;
  }
}

NDIS_STATUS Adapter::pause() {
  Deferred d;
  KIRQL irql;
  lock(irql);
  state_ = RunState::Pausing;
  // What has not reached the ring is completed now; what is on it waits for the backend.
  if (!control_busy_) fail_queued(NDIS_STATUS_PAUSED, d);
  check_pause(d);
  const bool done = d.pause_complete;
  d.pause_complete = false;  // returned as NDIS_STATUS_SUCCESS, not NdisMPauseComplete
  unlock(irql);
  flush(d);
  return done ? NDIS_STATUS_SUCCESS : NDIS_STATUS_PENDING;
}

NDIS_STATUS Adapter::restart() {
  KIRQL irql;
  lock(irql);
  state_ = RunState::Running;
  unlock(irql);
  return NDIS_STATUS_SUCCESS;
}

// lock_ not held: hand NDIS what the locked section collected, completions first.
void Adapter::flush(Deferred& d) {
  const bool dispatch = KeGetCurrentIrql() == DISPATCH_LEVEL;
  if (d.done_head != nullptr)
    NdisMSendNetBufferListsComplete(handle_, d.done_head,
                                    dispatch ? NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL : 0);
  if (d.rx_head != nullptr)
    NdisMIndicateReceiveNetBufferLists(handle_, d.rx_head, NDIS_DEFAULT_PORT_NUMBER, d.rx_count,
                                       dispatch ? NDIS_RECEIVE_FLAGS_DISPATCH_LEVEL : 0);
  if (d.res_head != nullptr) {
    NdisMIndicateReceiveNetBufferLists(
        handle_, d.res_head, NDIS_DEFAULT_PORT_NUMBER, d.res_count,
        NDIS_RECEIVE_FLAGS_RESOURCES | (dispatch ? NDIS_RECEIVE_FLAGS_DISPATCH_LEVEL : 0));
    KIRQL irql;
    lock(irql);
    for (PNET_BUFFER_LIST nbl = d.res_head, next; nbl != nullptr; nbl = next) {
      next = nbl->Next;
      nbl->Next = rx_free_;
      rx_free_ = nbl;
      ++rx_free_count_;
    }
    unlock(irql);
  }
  if (d.pause_complete) NdisMPauseComplete(handle_);
}

}  // namespace pvio::windows::xennet
