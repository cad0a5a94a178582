// Types shared by the netfront core's control plane (xenbus.cc) and datapath (tx.cc, rx.cc):
// per-queue ring state, the tx and rx slot tables, and freestanding string helpers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "pvio/netfront/netfront.h"
#include "pvio/ring/io_rings.h"

namespace pvio::netfront {

// One tx id: the page its data was copied into and the grant the backend reads it through.
// Tx id i always owns page i, so a free id is a free page.
struct Netfront::TxSlot {
  GuestPage page;
  grant_ref_t gref = kInvalidGrantRef;  // valid while the request is in flight
  bool in_use = false;
  void* cookie = nullptr;  // on a packet's first slot: TxPacket::cookie
};

// One rx buffer. Requests carry id == ring index & (kRingSize-1) (as Linux's xennet_rxidx),
// so a response's slot names its buffer; buffer i is Posted while the backend may fill it,
// Held while its data belongs to a packet being gathered, Free otherwise.
struct Netfront::RxSlot {
  enum class State : std::uint8_t { Free, Posted, Held };
  GuestPage page;
  grant_ref_t gref = kInvalidGrantRef;
  State state = State::Free;
};

struct Netfront::Queue {
  netif::TxFrontRing tx;
  netif::RxFrontRing rx;
  GuestPage tx_ring_page;
  GuestPage rx_ring_page;
  bool tx_ring_allocated = false;
  bool rx_ring_allocated = false;
  grant_ref_t tx_ring_ref = kInvalidGrantRef;
  grant_ref_t rx_ring_ref = kInvalidGrantRef;
  evtchn_port_t tx_port = 0;  // == rx_port without split event channels
  evtchn_port_t rx_port = 0;
  bool tx_port_valid = false;
  bool rx_port_valid = false;  // a port of its own (split event channels)

  TxSlot txs[kRingSize];
  std::uint16_t tx_free[kRingSize];
  std::uint32_t tx_free_count = 0;
  bool tx_unpublished = false;  // send(more) left requests behind req_prod

  RxSlot rxs[kRingSize];

  // The packet being gathered from rx responses (it may span several handle_event calls if
  // the backend publishes a packet's slots in pieces).
  bool pend_active = false;
  bool pend_more = false;        // the last data slot had NETRXF_more_data
  bool pend_extra = false;       // an extra-info slot comes next
  bool pend_bad = false;         // drop it when complete
  Offload pend_offload;
  std::uint32_t pend_n = 0;
  std::uint16_t pend_idx[kMaxSlotsPerPacket] = {};
  std::uint16_t pend_off[kMaxSlotsPerPacket] = {};
  std::uint16_t pend_len[kMaxSlotsPerPacket] = {};
};

namespace detail {

inline std::size_t format_uint(char* out, std::size_t cap, std::uint64_t v) {
  char tmp[24];
  std::size_t n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  if (n + 1 > cap) {
    if (cap) out[0] = '\0';
    return 0;
  }
  for (std::size_t i = 0; i < n; ++i) out[i] = tmp[n - 1 - i];
  out[n] = '\0';
  return n;
}

// Strict: digits only, at least one, no overflow. Xenstore values come from another domain.
inline bool parse_uint(const char* s, std::size_t len, std::uint64_t& out) {
  while (len > 0 && s[len - 1] == '\0') --len;
  if (len == 0 || len > 20) return false;
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < len; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    const std::uint64_t d = static_cast<std::uint64_t>(s[i] - '0');
    if (v > (~std::uint64_t{0} - d) / 10) return false;
    v = v * 10 + d;
  }
  out = v;
  return true;
}

// "aa:bb:cc:dd:ee:ff" (xl's form of the `mac` node), hex digits either case.
inline bool parse_mac(const char* s, std::size_t len, std::uint8_t out[6]) {
  while (len > 0 && s[len - 1] == '\0') --len;
  if (len != 17) return false;
  auto hex = [](char c, std::uint8_t& v) {
    if (c >= '0' && c <= '9') v = static_cast<std::uint8_t>(c - '0');
    else if (c >= 'a' && c <= 'f') v = static_cast<std::uint8_t>(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v = static_cast<std::uint8_t>(c - 'A' + 10);
    else return false;
    return true;
  };
  for (int i = 0; i < 6; ++i) {
    std::uint8_t hi, lo;
    if (!hex(s[i * 3], hi) || !hex(s[i * 3 + 1], lo)) return false;
    if (i < 5 && s[i * 3 + 2] != ':') return false;
    out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
  }
  return true;
}

// Bounded path builder: appends pieces, remembers overflow.
class PathBuf {
 public:
  explicit PathBuf(const char* base) { add(base); }
  PathBuf& add(const char* s) {
    const std::size_t n = std::strlen(s);
    if (len_ + n + 1 > sizeof(buf_)) {
      overflow_ = true;
      return *this;
    }
    std::memcpy(buf_ + len_, s, n + 1);
    len_ += n;
    return *this;
  }
  PathBuf& add_uint(std::uint64_t v) {
    char tmp[24];
    format_uint(tmp, sizeof(tmp), v);
    return add(tmp);
  }
  const char* c_str() const { return buf_; }
  bool ok() const { return !overflow_; }

 private:
  char buf_[Netfront::kPathMax + 32] = {};
  std::size_t len_ = 0;
  bool overflow_ = false;
};

inline constexpr std::size_t align16(std::size_t n) { return (n + 15) & ~std::size_t{15}; }

}  // namespace detail
}  // namespace pvio::netfront
