// Persistent grants for backends that negotiated `feature-persistent` (blkif.h; Linux
// xen-blkback's persistent_gnt tree is the model): a gref stays mapped across requests, so a
// frontend that reuses a fixed pool of granted pages costs one map per page, not one per request.
//
// Rules implemented:
//  - Persistent mappings are writable, as in xen-blkback: the same page carries reads and
//    writes. A read-only request for a grant the guest made read-only falls back to a one-off
//    read-only mapping, unmapped on put().
//  - The cache is bounded. On a miss with the cache full, the least recently used mapping no
//    request is using is unmapped; if every cached mapping is in use, the grant is mapped for
//    this request only (xen-blkback does the same when max_persistent_grants is reached).
//  - Every mapping is released on flush_unused() (unused ones) and on destruction (all).
//
// Every operation is O(1) without allocation: grefs index a flat array (grefs are bounded by
// the grant table the mapper reads), which points into a fixed pool of max_grants entries
// threaded on an intrusive LRU list of the unused ones.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "pvio/grant_table/grant_mapper.h"

namespace pvio::gnttab {

class PersistentGrantCache {
 public:
  // A mapping lent to one request; give it back with put().
  struct Grant {
    grant_status status = GNTST_general_error;
    grant_ref_t ref = 0;
    std::uint8_t* addr = nullptr;  // the granted frame
    bool persistent = false;       // false: a one-off mapping that put() unmaps
    grant_handle_t handle = 0;
  };

  // xen-blkback's default max_persistent_grants.
  static constexpr std::size_t kDefaultMaxGrants = 1056;

  explicit PersistentGrantCache(GrantMapper& mapper, std::size_t max_grants = kDefaultMaxGrants);
  ~PersistentGrantCache();

  PersistentGrantCache(const PersistentGrantCache&) = delete;
  PersistentGrantCache& operator=(const PersistentGrantCache&) = delete;

  // The hit paths are inline: they run per segment of every request.
  Grant get(grant_ref_t ref, bool readonly) {
    if (ref < slot_of_.size()) {
      if (const std::uint32_t i = slot_of_[ref]; i != kNone) {
        ++hits_;
        Entry& e = pool_[i];
        if (e.users++ == 0) lru_unlink(i);
        return Grant{GNTST_okay, ref, e.addr, true, e.handle};
      }
    }
    return get_miss(ref, readonly);
  }
  void put(const Grant& grant) {
    if (grant.status != GNTST_okay) return;
    if (!grant.persistent) return put_one_off(grant);
    if (grant.ref >= slot_of_.size()) return;
    const std::uint32_t i = slot_of_[grant.ref];
    if (i == kNone || pool_[i].users == 0) return;
    if (--pool_[i].users == 0) lru_push_back(i);
  }

  // Unmaps every cached mapping no request is using; returns how many.
  std::size_t flush_unused();

  std::size_t size() const { return size_; }
  std::size_t capacity() const { return max_grants_; }
  bool contains(grant_ref_t ref) const { return ref < slot_of_.size() && slot_of_[ref] != kNone; }
  std::uint64_t hits() const { return hits_; }
  std::uint64_t misses() const { return misses_; }
  std::uint64_t evictions() const { return evictions_; }

 private:
  static constexpr std::uint32_t kNone = 0xFFFFFFFFu;

  struct Entry {
    std::uint8_t* addr = nullptr;
    grant_ref_t ref = 0;
    grant_handle_t handle = 0;
    std::uint32_t users = 0;
    std::uint32_t prev = kNone;  // LRU links while users == 0; `next` links the free list too
    std::uint32_t next = kNone;
  };

  void lru_unlink(std::uint32_t i) {
    Entry& e = pool_[i];
    (e.prev == kNone ? lru_head_ : pool_[e.prev].next) = e.next;
    (e.next == kNone ? lru_tail_ : pool_[e.next].prev) = e.prev;
    e.prev = e.next = kNone;
  }
  void lru_push_back(std::uint32_t i) {
    Entry& e = pool_[i];
    e.prev = lru_tail_;
    e.next = kNone;
    (lru_tail_ == kNone ? lru_head_ : pool_[lru_tail_].next) = i;
    lru_tail_ = i;
  }
  Grant get_miss(grant_ref_t ref, bool readonly);
  void put_one_off(const Grant& grant);
  void evict(std::uint32_t i);

  GrantMapper& mapper_;
  std::size_t max_grants_;
  std::vector<std::uint32_t> slot_of_;  // gref -> pool index, kNone when not cached
  std::vector<Entry> pool_;
  std::uint32_t free_ = kNone;      // free pool entries, linked through `next`
  std::uint32_t lru_head_ = kNone;  // least recently used unused entry
  std::uint32_t lru_tail_ = kNone;
  std::size_t size_ = 0;
  std::uint64_t hits_ = 0;
  std::uint64_t misses_ = 0;
  std::uint64_t evictions_ = 0;
};

}  // namespace pvio::gnttab
