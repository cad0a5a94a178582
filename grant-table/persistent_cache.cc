// PersistentGrantCache: bounded gref -> mapping cache with LRU eviction of unused mappings.
#include "pvio/grant_table/persistent_cache.h"

namespace pvio::gnttab {

PersistentGrantCache::PersistentGrantCache(GrantMapper& mapper, std::size_t max_grants)
    : mapper_(mapper),
      max_grants_(max_grants < kNone ? max_grants : kNone - 1),
      slot_of_(mapper.nr_entries(), kNone) {
  // More entries than grefs would never fill.
  if (max_grants_ > slot_of_.size()) max_grants_ = slot_of_.size();
  pool_.resize(max_grants_);
  for (std::uint32_t i = static_cast<std::uint32_t>(pool_.size()); i-- > 0;) {
    pool_[i].next = free_;
    free_ = i;
  }
}

PersistentGrantCache::~PersistentGrantCache() {
  for (std::uint32_t ref = 0; ref < slot_of_.size(); ++ref)
    if (slot_of_[ref] != kNone) mapper_.unmap(pool_[slot_of_[ref]].handle);
}

PersistentGrantCache::Grant PersistentGrantCache::get_miss(grant_ref_t ref, bool readonly) {
  Grant g;
  g.ref = ref;
  ++misses_;
  if (free_ == kNone && lru_head_ != kNone) evict(lru_head_);

  // Refs past the table are not cached; the mapper refuses them (GNTST_bad_gntref).
  const bool cacheable = free_ != kNone && ref < slot_of_.size();
  MapResult r = mapper_.map(ref, /*readonly=*/!cacheable && readonly);
  if (cacheable && r.status == GNTST_permission_denied && readonly) {
    // A read-only grant cannot back a persistent (writable) mapping; serve this request alone.
    r = mapper_.map(ref, /*readonly=*/true);
    g.status = r.status;
    g.addr = r.addr;
    g.handle = r.handle;
    return g;
  }
  g.status = r.status;
  if (r.status != GNTST_okay) return g;
  g.addr = r.addr;
  g.handle = r.handle;
  if (cacheable) {
    const std::uint32_t i = free_;
    Entry& e = pool_[i];
    free_ = e.next;
    e = Entry{r.addr, ref, r.handle, 1, kNone, kNone};
    slot_of_[ref] = i;
    ++size_;
    g.persistent = true;
  }
  return g;
}

void PersistentGrantCache::put_one_off(const Grant& grant) { mapper_.unmap(grant.handle); }

// Only unused entries are evicted (callers pass the LRU head).
void PersistentGrantCache::evict(std::uint32_t i) {
  Entry& e = pool_[i];
  lru_unlink(i);
  mapper_.unmap(e.handle);
  slot_of_[e.ref] = kNone;
  e.next = free_;
  free_ = i;
  --size_;
  ++evictions_;
}

std::size_t PersistentGrantCache::flush_unused() {
  std::size_t n = 0;
  while (lru_head_ != kNone) {
    evict(lru_head_);
    ++n;
  }
  return n;
}

}  // namespace pvio::gnttab
