// A guest built inside the test process for the netback datapath tests: memfd-backed memory
// with real v1 grant-table frames (gnttab::GrantTable), and per vif queue a real tx and rx
// FrontRing on granted pages, a kick eventfd towards the backend and an event eventfd back.
// Packets are posted as netfront posts them, or written slot by slot for hostile tests.
#pragma once

#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "pvio/event_channel/notifier.h"
#include "pvio/grant_table/grant_table.h"
#include "pvio/netback/dpdk.h"
#include "pvio/netback/vif.h"
#include "pvio/ring/io_rings.h"

namespace pvio::netback::test {

class TestGuest {
 public:
  static constexpr std::uint64_t kBaseGfn = 0x1000;
  static constexpr std::uint32_t kTableFrames = 8;

  explicit TestGuest(domid_t domid, std::uint32_t pages = 4096) : domid_(domid), pages_(pages) {
    fd_ = ::memfd_create("pvio-test-net-guest", MFD_CLOEXEC);
    if (fd_ < 0 || ::ftruncate(fd_, static_cast<off_t>(std::uint64_t{pages} * 4096)) != 0)
      throw std::runtime_error("memfd");
    void* p = ::mmap(nullptr, std::uint64_t{pages} * 4096, PROT_READ | PROT_WRITE, MAP_SHARED,
                     fd_, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap");
    host_ = static_cast<std::uint8_t*>(p);
    if (!mem_.add_region(kBaseGfn * 4096, std::uint64_t{pages} * 4096, host_))
      throw std::runtime_error("add_region");
    for (std::uint32_t i = 0; i < kTableFrames; ++i) {
      table_gfns_.push_back(kBaseGfn + i);
      frames_.push_back(reinterpret_cast<gnttab::grant_entry_v1*>(page(kBaseGfn + i)));
    }
    free_storage_.resize(std::size_t{kTableFrames} * gnttab::kEntriesPerFrame);
    table_ = std::make_unique<gnttab::GrantTable>(frames_.data(), kTableFrames,
                                                  free_storage_.data(),
                                                  static_cast<std::uint32_t>(free_storage_.size()));
    for (std::uint64_t g = kBaseGfn + pages - 1; g >= kBaseGfn + kTableFrames; --g)
      free_pages_.push_back(g);
  }
  ~TestGuest() {
    ::munmap(host_, std::uint64_t{pages_} * 4096);
    ::close(fd_);
  }
  TestGuest(const TestGuest&) = delete;
  TestGuest& operator=(const TestGuest&) = delete;

  domid_t domid() const { return domid_; }
  const GuestMemory& memory() const { return mem_; }
  const std::vector<std::uint64_t>& table_gfns() const { return table_gfns_; }
  gnttab::GrantTable& gnttab() { return *table_; }
  std::uint8_t* page(std::uint64_t gfn) const { return mem_.frame(gfn); }
  std::uint64_t alloc_page() {
    if (free_pages_.empty()) throw std::runtime_error("guest out of pages");
    const std::uint64_t g = free_pages_.back();
    free_pages_.pop_back();
    return g;
  }

 private:
  domid_t domid_;
  std::uint32_t pages_;
  int fd_ = -1;
  std::uint8_t* host_ = nullptr;
  GuestMemory mem_;
  std::vector<std::uint64_t> table_gfns_;
  std::vector<gnttab::grant_entry_v1*> frames_;
  std::vector<grant_ref_t> free_storage_;
  std::unique_ptr<gnttab::GrantTable> table_;
  std::vector<std::uint64_t> free_pages_;
};

// An Ethernet frame: dst, src, ethertype 0x88B5 (local experimental), payload pattern.
inline std::vector<std::uint8_t> make_frame(const MacAddr& dst, const MacAddr& src,
                                            std::size_t len, std::uint8_t seed) {
  std::vector<std::uint8_t> f(len);
  std::memcpy(f.data(), dst.data(), 6);
  std::memcpy(f.data() + 6, src.data(), 6);
  f[12] = 0x88;
  f[13] = 0xB5;
  for (std::size_t i = 14; i < len; ++i) f[i] = static_cast<std::uint8_t>(seed + i * 7);
  return f;
}

struct RxPacket {
  std::vector<std::uint8_t> data;
  std::uint16_t flags = 0;  // first response's NETRXF_*
  std::uint32_t slots = 0;
  std::int16_t status = 0;  // negative when an error was reported
  std::uint8_t gso_type = 0;  // from a GSO extra after the first response
  std::uint16_t gso_size = 0;
};

// The frontend end of one vif queue: one tx and one rx ring page, one event channel.
class GuestVif {
 public:
  static constexpr evtchn_port_t kPort = 1;
  static constexpr unsigned kRxBuffers = 256;

  GuestVif(TestGuest& guest, MacAddr mac) : guest_(guest), mac_(mac) {
    tx_gfn_ = guest_.alloc_page();
    rx_gfn_ = guest_.alloc_page();
    tx_.init(guest_.page(tx_gfn_), 4096);
    rx_.init(guest_.page(rx_gfn_), 4096);
    tx_ref_ = guest_.gnttab().grant_access(0, tx_gfn_, false);
    rx_ref_ = guest_.gnttab().grant_access(0, rx_gfn_, false);
    kick_fd_ = evtchn::eventfd_create(true);
    event_fd_ = evtchn::eventfd_create(true);
    doorbell_.set(kPort, event_fd_);
    // One data page per tx ring slot (netfront's tx grant per fragment), granted read-only.
    for (unsigned i = 0; i < 256; ++i) {
      tx_page_gfn_[i] = guest_.alloc_page();
      tx_page_ref_[i] = guest_.gnttab().grant_access(0, tx_page_gfn_[i], true);
    }
    for (unsigned i = 0; i < kRxBuffers; ++i) {
      rx_page_gfn_[i] = guest_.alloc_page();
      rx_page_ref_[i] = guest_.gnttab().grant_access(0, rx_page_gfn_[i], false);
    }
  }
  ~GuestVif() {
    ::close(kick_fd_);
    ::close(event_fd_);
  }

  const MacAddr& mac() const { return mac_; }
  TestGuest& guest() { return guest_; }

  VifConfig config(const std::string& name) {
    VifConfig c;
    c.name = name;
    c.frontend_domid = guest_.domid();
    c.memory = &guest_.memory();
    c.grant_table_gfns = guest_.table_gfns();
    c.mac = mac_;
    c.sg = true;
    VifQueueConfig q;
    q.tx_ring_ref = tx_ref_;
    q.rx_ring_ref = rx_ref_;
    q.tx_kick_fd = q.rx_kick_fd = kick_fd_;
    q.notifier = &doorbell_;
    q.tx_port = q.rx_port = kPort;
    c.queues.push_back(q);
    return c;
  }

  netif::TxFrontRing& tx() { return tx_; }
  ring::SringHeader* tx_sring() { return tx_.sring(); }
  ring::SringHeader* rx_sring() { return rx_.sring(); }
  void kick() { evtchn::eventfd_signal(kick_fd_); }

  // Raw slot writes (hostile tests): the request lands in the next tx slot as given.
  void post_raw(const netif::netif_tx_request& r) {
    netif::netif_tx_request* s = tx_.next_request();
    std::memcpy(s, &r, sizeof r);
  }
  void post_extra(const netif::netif_extra_info& e) {
    netif::netif_tx_request* s = tx_.next_request();
    std::memset(s, 0, sizeof *s);
    std::memcpy(s, &e, sizeof e);
  }
  void push_tx() {
    if (tx_.push_requests()) kick();
  }

  // The data page behind the next tx slot, and its grant.
  std::uint8_t* tx_page(unsigned i) { return guest_.page(tx_page_gfn_[i & 255]); }
  grant_ref_t tx_gref(unsigned i) const { return tx_page_ref_[i & 255]; }
  unsigned next_tx_index() const { return tx_.req_prod_pvt() & 255; }

  // Posts `frame` as netfront does: fragments of up to `frag` bytes, each in its own granted
  // page; first size = whole packet.
  void send(const std::vector<std::uint8_t>& frame, std::uint16_t flags = 0,
            std::size_t frag = 4096) {
    std::size_t off = 0;
    bool first = true;
    while (off < frame.size() || first) {
      const unsigned i = next_tx_index();
      const std::size_t n = std::min(frag, frame.size() - off);
      std::memcpy(tx_page(i), frame.data() + off, n);
      netif::netif_tx_request r{};
      r.gref = tx_gref(i);
      r.offset = 0;
      r.id = static_cast<std::uint16_t>(i);
      r.size = static_cast<std::uint16_t>(first ? frame.size() : n);
      r.flags = static_cast<std::uint16_t>((first ? flags : 0) |
                                           (off + n < frame.size() ? netif::kTxfMoreData : 0));
      post_raw(r);
      off += n;
      first = false;
    }
  }

  // Tx responses: collects until `n` arrived or nothing came for `timeout_ms`.
  std::vector<netif::netif_tx_response> tx_responses(std::size_t n, int timeout_ms = 5000) {
    std::vector<netif::netif_tx_response> out;
    while (out.size() < n) {
      const ring::RingCheck c = tx_.final_check_for_responses();
      if (!c.ok()) break;
      for (std::uint32_t i = 0; i < c.count; ++i) {
        netif::netif_tx_response r;
        tx_.consume_response(r);
        out.push_back(r);
      }
      if (c.count == 0 && !wait_event(timeout_ms)) break;
    }
    return out;
  }

  // Posts every free rx buffer (one page each, request id = buffer index).
  void post_rx_buffers(unsigned n = kRxBuffers) {
    for (unsigned k = 0; k < n && rx_.free_requests() > 0; ++k) {
      const unsigned i = rx_.req_prod_pvt() & (kRxBuffers - 1);
      netif::netif_rx_request r{};
      r.id = static_cast<std::uint16_t>(i);
      r.gref = rx_page_ref_[i];
      rx_.produce_request(r);
    }
    if (rx_.push_requests()) kick();
  }
  // Replaces rx buffer `i`'s grant (hostile tests: read-only, other domain, ended).
  void set_rx_grant(unsigned i, grant_ref_t gref) { rx_page_ref_[i] = gref; }
  std::uint64_t rx_gfn(unsigned i) const { return rx_page_gfn_[i]; }

  // Receives `n` packets (reassembled across NETRXF_more_data), reposting buffers as it goes.
  std::vector<RxPacket> receive(std::size_t n, int timeout_ms = 5000) {
    std::vector<RxPacket> out;
    RxPacket cur;
    while (out.size() < n) {
      const ring::RingCheck c = rx_.final_check_for_responses();
      if (!c.ok()) break;
      for (std::uint32_t k = 0; k < c.count; ++k) {
        netif::netif_rx_response r;
        rx_.consume_response(r);
        if (extra_next_) {
          // netif.h: after a response flagged NETRXF_extra_info comes a netif_extra_info.
          netif::netif_extra_info e;
          std::memcpy(&e, &r, sizeof e);
          if (e.type == netif::kExtraTypeGso) {
            cur.gso_type = e.u.gso.type;
            cur.gso_size = e.u.gso.size;
          }
          extra_next_ = (e.flags & netif::kExtraFlagMore) != 0;
          ++cur.slots;
          if (!extra_next_ && !(cur.flags & netif::kRxfMoreData)) {
            out.push_back(std::move(cur));
            cur = RxPacket{};
          }
          continue;
        }
        if (cur.slots == 0) cur.flags = r.flags;
        extra_next_ = (r.flags & netif::kRxfExtraInfo) != 0;
        ++cur.slots;
        if (r.status < 0) {
          cur.status = r.status;
        } else {
          const std::uint8_t* p = guest_.page(rx_page_gfn_[r.id & (kRxBuffers - 1)]) + r.offset;
          cur.data.insert(cur.data.end(), p, p + r.status);
        }
        if (!(r.flags & netif::kRxfMoreData) && !extra_next_) {
          out.push_back(std::move(cur));
          cur = RxPacket{};
        }
      }
      if (c.count != 0) {
        post_rx_buffers(c.count);
        continue;
      }
      if (!wait_event(timeout_ms)) break;
    }
    return out;
  }
  // Responses the backend has published on the rx ring and we have not consumed.
  std::uint32_t rx_pending() { return rx_.unconsumed_responses().count; }

  bool wait_event(int timeout_ms) {
    // A signal is not an event: DPDK's TAP PMD raises SIGIO when its fd becomes readable, and
    // that ended this wait at once (a frame sent to the TAP was then "not received").
    pollfd p{event_fd_, POLLIN, 0};
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      const int r = ::poll(&p, 1, static_cast<int>(std::max<std::int64_t>(left.count(), 0)));
      if (r > 0) break;
      if (r == 0 || errno != EINTR) return false;
    }
    std::uint64_t v;
    [[maybe_unused]] const ssize_t r = ::read(event_fd_, &v, sizeof v);
    return true;
  }

 private:
  TestGuest& guest_;
  MacAddr mac_;
  std::uint64_t tx_gfn_, rx_gfn_;
  grant_ref_t tx_ref_, rx_ref_;
  netif::TxFrontRing tx_;
  netif::RxFrontRing rx_;
  int kick_fd_ = -1, event_fd_ = -1;
  evtchn::EventfdDoorbell doorbell_;
  std::uint64_t tx_page_gfn_[256];
  grant_ref_t tx_page_ref_[256];
  std::uint64_t rx_page_gfn_[kRxBuffers];
  grant_ref_t rx_page_ref_[kRxBuffers];
  bool extra_next_ = false;
};

}  // namespace pvio::netback::test
