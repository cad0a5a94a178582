// The vif's control ring (feature-ctrl-ring; Linux xen-netback's hash.c and the control part of
// interface.c): hash algorithm, flags, key and mapping table set by the frontend, and the
// Toeplitz flow hash that steers packets to the vif's queues with them. The ring is served by
// the thread of queue 0; the hash state is read by every forwarding thread, so it is kept in
// atomics (a frontend changing it mid-packet only changes that packet's queue).
#pragma once

#include <rte_mbuf.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "pvio/grant_table/grant_mapper.h"
#include "pvio/netback/vif.h"
#include "pvio/ring/io_rings.h"

namespace pvio::netback {

inline constexpr unsigned kMaxHashKeySize = 40;       // XEN_NETBK_MAX_HASH_KEY_SIZE
inline constexpr unsigned kMaxHashMappingSize = 128;  // XEN_NETBK_MAX_HASH_MAPPING_SIZE
inline constexpr std::uint32_t kHashFlagsSupported =
    netif::kCtrlHashTypeIpv4 | netif::kCtrlHashTypeIpv4Tcp | netif::kCtrlHashTypeIpv6 |
    netif::kCtrlHashTypeIpv6Tcp;

struct HashConfig {
  std::atomic<std::uint32_t> algorithm{netif::kCtrlHashAlgorithmNone};
  std::atomic<std::uint32_t> flags{0};
  std::atomic<std::uint32_t> mapping_size{0};
  std::array<std::atomic<std::uint8_t>, kMaxHashKeySize> key{};
  std::array<std::atomic<std::uint32_t>, kMaxHashMappingSize> mapping{};
};

// netif.h's Toeplitz: for each bit of `data`, left to right, XOR in the left-most 32 bits of
// the key when the bit is set, then shift the key left by one.
std::uint32_t toeplitz_hash(const std::uint8_t* key, std::size_t key_len, const std::uint8_t* data,
                            std::size_t len);
// The hash of a frame under `flags` (XEN_NETIF_CTRL_HASH_TYPE_*), or false when no enabled
// type applies (not IP, fragments, flags off).
bool flow_hash(const HashConfig& h, const rte_mbuf* m, std::uint32_t* out);

class CtrlRing {
 public:
  // Maps the ring (throws std::invalid_argument when the grant does not map).
  CtrlRing(const VifConfig& cfg, HashConfig& hash);
  ~CtrlRing();
  // Serves every pending request; false when there was none. A bad producer index sets *why.
  bool round(std::string* why);
  // Before sleeping: asks for an event on the next request; true when one arrived meanwhile.
  bool final_check(std::string* why);
  std::uint64_t requests() const { return requests_.load(std::memory_order_relaxed); }

 private:
  std::uint32_t handle(const netif::xen_netif_ctrl_request& req, std::uint32_t* data);
  std::uint32_t set_key(grant_ref_t gref, std::uint32_t len);
  std::uint32_t set_mapping(grant_ref_t gref, std::uint32_t len, std::uint32_t off);

  const VifConfig& cfg_;
  HashConfig& hash_;
  std::unique_ptr<gnttab::GrantMapper> mapper_;
  gnttab::grant_handle_t handle_ = 0;
  netif::CtrlBackRing ring_;
  std::atomic<std::uint64_t> requests_{0};
  alignas(4096) std::uint8_t page_[4096];
};

}  // namespace pvio::netback
