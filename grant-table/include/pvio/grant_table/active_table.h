// Xen's active grant table (struct active_grant_entry, one table per granting domain): the pin
// counts and the validated frame of every entry some mapper in this process holds busy. All
// GrantMappers of one granting domain share it, so the busy bits (GTF_reading/GTF_writing) a
// mapping relies on stay set until the last user in the process is gone, whichever mapper
// (blkback has one per queue, each on its own worker thread) made it.
//
// Thread-safe: each entry has its own lock (Xen's per-active-entry spinlock), held only while
// the pin counts and the guest's entry word change, never while a frame is accessed.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

#include "pvio/xen/grant_table.h"
#include "pvio/grant_table/guest_memory.h"
#include "pvio/grant_table/maptrack.h"

namespace pvio::gnttab {

class ActiveGrantTable {
 public:
  // Largest grant table it covers (Xen's max_grant_frames is 64 by default; far above that).
  static constexpr std::uint32_t kMaxFrames = 4096;

  struct Entry {
    std::atomic<std::uint32_t> lock{0};
    domid_t domid = 0;          // the mapping domain, while pinned (act->domid)
    std::uint32_t readers = 0;  // read-only pins
    std::uint32_t writers = 0;  // writable pins
    std::uint8_t* frame = nullptr;  // validated host address, fixed while pinned

    void acquire() {
      for (unsigned spins = 0; lock.exchange(1, std::memory_order_acquire) != 0;) {
        while (lock.load(std::memory_order_relaxed) != 0) {
#if defined(__x86_64__) || defined(__i386__)
          __builtin_ia32_pause();
#endif
          // A holder descheduled on an oversubscribed machine: let it run.
          if (++spins % 256 == 0) yield();
        }
      }
    }
    void release() { lock.store(0, std::memory_order_release); }
    std::uint32_t pins() const { return readers + writers; }

   private:
    static void yield();
  };

  // The table of the granting domain whose memory is `memory` (identified by that object and
  // the domid), created on first use and shared until the last holder lets go.
  static std::shared_ptr<ActiveGrantTable> of(const GuestMemory& memory, domid_t granting_domid);
  // A new table for a new attachment to the domain whose memory is `memory`: later of() calls
  // with the same key get it, even if a table of an earlier attachment whose GuestMemory lived
  // at the same address is still held by someone.
  static std::shared_ptr<ActiveGrantTable> fresh(const GuestMemory& memory, domid_t granting_domid);

  // A table of its own, for a caller that shares it explicitly (e.g. two attachments of the
  // same domain with two GuestMemory objects).
  ActiveGrantTable();
  ~ActiveGrantTable();
  ActiveGrantTable(const ActiveGrantTable&) = delete;
  ActiveGrantTable& operator=(const ActiveGrantTable&) = delete;

  // Makes entries [0, nr_frames * 512) addressable. Thread-safe; entries already in use stay
  // where they are. Returns false above kMaxFrames.
  bool reserve(std::uint32_t nr_frames);

  // Entry of `ref`; `ref` must lie below what reserve() covered.
  Entry& entry(grant_ref_t ref) const {
    return chunks_[ref / kEntriesPerFrame].load(std::memory_order_acquire)[ref % kEntriesPerFrame];
  }

  // Pins on `ref` by every mapper sharing the table (0 for refs out of range).
  std::uint32_t pin_count(grant_ref_t ref) const;

  // The maptrack page the guest's owner gave this process (maptrack.h): every busy bit a mapper
  // sets through this table is recorded there first, so the owner can release exactly this
  // process's pins if it dies. Set once, before the first mapper pins anything.
  void set_maptrack(Maptrack m) { maptrack_ = m; }
  Maptrack& maptrack() { return maptrack_; }

 private:
  std::mutex grow_;
  std::uint32_t nr_frames_ = 0;  // guarded by grow_
  std::unique_ptr<std::atomic<Entry*>[]> chunks_;
  Maptrack maptrack_;
};

}  // namespace pvio::gnttab
