// PersistentGrantCache: bounded gref -> mapping cache with LRU eviction of unused mappings.
#include "pvio/grant_table/persistent_cache.h"

namespace pvio::gnttab {

PersistentGrantCache::PersistentGrantCache(GrantMapper& mapper, std::size_t max_grants)
    : mapper_(mapper), max_grants_(max_grants) {}

PersistentGrantCache::~PersistentGrantCache() {
  for (auto& [ref, e] : entries_) mapper_.unmap(e.handle);
}

PersistentGrantCache::Grant PersistentGrantCache::get(grant_ref_t ref, bool readonly) {
  Grant g;
  g.ref = ref;
  if (auto it = entries_.find(ref); it != entries_.end()) {
    ++hits_;
    Entry& e = it->second;
    if (e.users++ == 0) unused_lru_.erase(e.lru_pos);
    g.status = GNTST_okay;
    g.addr = e.addr;
    g.persistent = true;
    g.handle = e.handle;
    return g;
  }
  ++misses_;
  if (entries_.size() >= max_grants_ && !unused_lru_.empty()) evict(unused_lru_.front());

  const bool cacheable = entries_.size() < max_grants_;
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
    entries_.emplace(ref, Entry{r.handle, r.addr, 1, {}});
    g.persistent = true;
  }
  return g;
}

void PersistentGrantCache::put(const Grant& grant) {
  if (grant.status != GNTST_okay) return;
  if (!grant.persistent) {
    mapper_.unmap(grant.handle);
    return;
  }
  auto it = entries_.find(grant.ref);
  if (it == entries_.end() || it->second.users == 0) return;
  Entry& e = it->second;
  if (--e.users == 0) e.lru_pos = unused_lru_.insert(unused_lru_.end(), grant.ref);
}

void PersistentGrantCache::evict(grant_ref_t ref) {
  auto it = entries_.find(ref);
  if (it == entries_.end()) return;
  if (it->second.users == 0) unused_lru_.erase(it->second.lru_pos);
  mapper_.unmap(it->second.handle);
  entries_.erase(it);
  ++evictions_;
}

std::size_t PersistentGrantCache::flush_unused() {
  std::size_t n = 0;
  while (!unused_lru_.empty()) {
    evict(unused_lru_.front());
    ++n;
  }
  return n;
}

}  // namespace pvio::gnttab
