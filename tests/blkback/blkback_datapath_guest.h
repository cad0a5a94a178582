// A guest built inside the test process for the blkback datapath tests: a memfd-backed
// GuestMemory with real v1 grant-table frames driven by gnttab::GrantTable, and per queue a
// real FrontRing on granted pages, a kick eventfd towards the backend and an event eventfd
// back. Requests are built as blkfront builds them (or written raw, for hostile tests).
#pragma once

#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <stdexcept>
#include <vector>

#include "pvio/blkback/blkback.h"
#include "pvio/event_channel/notifier.h"
#include "pvio/grant_table/grant_table.h"
#include "pvio/ring/io_rings.h"
#include "pvio/test/guest_image.h"

namespace pvio::blkback::test {

// 8192 grant entries in kTableFrames frames at kBaseGfn; the other pages are handed out by
// alloc_page(), highest first.
class TestGuest {
 public:
  static constexpr std::uint64_t kBaseGfn = 0x1000;
  static constexpr std::uint32_t kTableFrames = 16;

  explicit TestGuest(domid_t domid, std::uint32_t pages = 8192)
      : domid_(domid), image_({"pvio-test-blk-guest", kBaseGfn, pages, kTableFrames}) {
    image_.grant_table();
    for (std::uint64_t g = kBaseGfn + pages - 1; g >= kBaseGfn + kTableFrames; --g)
      free_pages_.push_back(g);
  }

  domid_t domid() const { return domid_; }
  const GuestMemory& memory() const { return image_.memory(); }
  const std::vector<std::uint64_t>& table_gfns() const { return image_.table_gfns(); }
  gnttab::GrantTable& gnttab() { return image_.grant_table(); }
  std::uint8_t* page(std::uint64_t gfn) const { return image_.page(gfn); }

  std::uint64_t alloc_page() {
    if (free_pages_.empty()) throw std::runtime_error("guest out of pages");
    const std::uint64_t g = free_pages_.back();
    free_pages_.pop_back();
    return g;
  }
  void free_page(std::uint64_t gfn) { free_pages_.push_back(gfn); }

 private:
  domid_t domid_;
  pvio::test::GuestImage image_;
  std::vector<std::uint64_t> free_pages_;
};

// The frontend end of one queue.
class GuestQueue {
 public:
  static constexpr evtchn_port_t kPort = 1;

  GuestQueue(TestGuest& guest, unsigned ring_page_order, domid_t backend = 0)
      : guest_(guest), backend_(backend) {
    const unsigned n = 1u << ring_page_order;
    // Ring pages deliberately not contiguous in guest memory: the backend must build its own
    // contiguous view. Allocate 2n and keep every other page.
    std::vector<std::uint64_t> spare;
    for (unsigned i = 0; i < n; ++i) {
      ring_gfns_.push_back(guest_.alloc_page());
      if (n > 1) spare.push_back(guest_.alloc_page());
    }
    for (std::uint64_t g : spare) guest_.free_page(g);
    // Contiguous private copy of the ring for FrontRing: the frontend sees the ring through
    // the same pages, so build it in a contiguous alias of them.
    alias_len_ = std::size_t{n} * 4096;
    void* va = ::mmap(nullptr, alias_len_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (unsigned i = 0; i < n; ++i)
      ::mremap(guest_.page(ring_gfns_[i]), 0, 4096, MREMAP_MAYMOVE | MREMAP_FIXED,
               static_cast<std::uint8_t*>(va) + std::size_t{i} * 4096);
    alias_ = va;
    ring_.init(alias_, alias_len_);
    for (std::uint64_t g : ring_gfns_)
      ring_refs_.push_back(guest_.gnttab().grant_access(backend_, g, false));
    kick_fd_ = evtchn::eventfd_create(true);
    event_fd_ = evtchn::eventfd_create(true);
    doorbell_.set(kPort, event_fd_);
  }
  ~GuestQueue() {
    ::munmap(alias_, alias_len_);
    ::close(kick_fd_);
    ::close(event_fd_);
  }
  GuestQueue(const GuestQueue&) = delete;
  GuestQueue& operator=(const GuestQueue&) = delete;

  QueueConfig config() {
    QueueConfig c;
    c.ring_refs = ring_refs_;
    c.kick_fd = kick_fd_;
    c.notifier = &doorbell_;
    c.notify_port = kPort;
    return c;
  }

  blkif::FrontRing& ring() { return ring_; }
  ring::SringHeader* sring() { return ring_.sring(); }
  // The shared slot for ring index `idx`, as the guest can scribble on it.
  blkif::blkif_request* slot(ring::RingIdx idx) {
    auto* entries = reinterpret_cast<ring::SringEntry<blkif::blkif_request, blkif::blkif_response>*>(
        static_cast<std::uint8_t*>(alias_) + sizeof(ring::SringHeader));
    return &entries[idx & (ring_.size() - 1)].req;
  }

  // Copies `req` (any of the three layouts, at most one slot) into the next slot.
  template <typename T>
  void post(const T& req) {
    static_assert(sizeof(T) <= sizeof(blkif::blkif_request));
    blkif::blkif_request* s = ring_.next_request();
    std::memset(s, 0, sizeof(*s));
    std::memcpy(s, &req, sizeof(T));
  }
  void push() {
    if (ring_.push_requests()) evtchn::eventfd_signal(kick_fd_);
  }
  void kick() { evtchn::eventfd_signal(kick_fd_); }

  // Collects responses until `n` have arrived or `timeout_ms` passed without an event.
  std::vector<blkif::blkif_response> wait(std::size_t n, int timeout_ms = 20000) {
    std::vector<blkif::blkif_response> out;
    while (out.size() < n) {
      const ring::RingCheck c = ring_.final_check_for_responses();
      if (!c.ok()) break;
      for (std::uint32_t i = 0; i < c.count; ++i) {
        blkif::blkif_response r;
        ring_.consume_response(r);
        out.push_back(r);
      }
      if (c.count != 0) continue;
      pollfd p{event_fd_, POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) <= 0) break;
      std::uint64_t v;
      [[maybe_unused]] const ssize_t r = ::read(event_fd_, &v, sizeof v);
    }
    return out;
  }

  // One request, one response.
  template <typename T>
  blkif::blkif_response roundtrip(const T& req) {
    post(req);
    push();
    const auto r = wait(1);
    if (r.empty()) return blkif::blkif_response{~0ull, 0xFF, 0x7FFF};
    return r[0];
  }

  TestGuest& guest() { return guest_; }
  domid_t backend() const { return backend_; }

 private:
  TestGuest& guest_;
  domid_t backend_;
  std::vector<std::uint64_t> ring_gfns_;
  std::vector<grant_ref_t> ring_refs_;
  void* alias_ = nullptr;
  std::size_t alias_len_ = 0;
  blkif::FrontRing ring_;
  int kick_fd_ = -1;
  int event_fd_ = -1;
  evtchn::EventfdDoorbell doorbell_;
};

}  // namespace pvio::blkback::test
