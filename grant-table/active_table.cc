// ActiveGrantTable: per-granting-domain pin counts shared by the mappers of one process.
#include "pvio/grant_table/active_table.h"

#include <map>
#include <thread>
#include <utility>

namespace pvio::gnttab {

void ActiveGrantTable::Entry::yield() { std::this_thread::yield(); }

ActiveGrantTable::ActiveGrantTable() : chunks_(new std::atomic<Entry*>[kMaxFrames]) {
  for (std::uint32_t i = 0; i < kMaxFrames; ++i) chunks_[i].store(nullptr, std::memory_order_relaxed);
}

ActiveGrantTable::~ActiveGrantTable() {
  for (std::uint32_t i = 0; i < nr_frames_; ++i) delete[] chunks_[i].load(std::memory_order_relaxed);
}

bool ActiveGrantTable::reserve(std::uint32_t nr_frames) {
  if (nr_frames > kMaxFrames) return false;
  std::lock_guard lk(grow_);
  for (; nr_frames_ < nr_frames; ++nr_frames_)
    chunks_[nr_frames_].store(new Entry[kEntriesPerFrame], std::memory_order_release);
  return true;
}

std::uint32_t ActiveGrantTable::pin_count(grant_ref_t ref) const {
  if (ref / kEntriesPerFrame >= kMaxFrames) return 0;
  Entry* chunk = chunks_[ref / kEntriesPerFrame].load(std::memory_order_acquire);
  if (chunk == nullptr) return 0;
  Entry& e = chunk[ref % kEntriesPerFrame];
  e.acquire();
  const std::uint32_t n = e.pins();
  e.release();
  return n;
}

namespace {

// A table lives as long as a mapper holds it; `memory` outlives every mapper over it, so
// its address cannot be reused for another domain while the weak entry is alive.
std::shared_ptr<ActiveGrantTable> lookup(const GuestMemory& memory, domid_t granting_domid,
                                         bool fresh) {
  static std::mutex mu;
  static std::map<std::pair<const GuestMemory*, domid_t>, std::weak_ptr<ActiveGrantTable>> tables;
  std::lock_guard lk(mu);
  for (auto it = tables.begin(); it != tables.end();)
    it = it->second.expired() ? tables.erase(it) : std::next(it);
  auto& slot = tables[{&memory, granting_domid}];
  if (auto t = slot.lock(); t && !fresh) return t;
  auto t = std::make_shared<ActiveGrantTable>();
  slot = t;
  return t;
}

}  // namespace

std::shared_ptr<ActiveGrantTable> ActiveGrantTable::of(const GuestMemory& memory,
                                                       domid_t granting_domid) {
  return lookup(memory, granting_domid, false);
}

std::shared_ptr<ActiveGrantTable> ActiveGrantTable::fresh(const GuestMemory& memory,
                                                          domid_t granting_domid) {
  return lookup(memory, granting_domid, true);
}

}  // namespace pvio::gnttab
