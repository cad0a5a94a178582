// The granting side of a v1 grant table, as a guest frontend drives it (Linux
// drivers/xen/grant-table.c is the model). Freestanding: no exceptions, no heap, no OS calls;
// the caller supplies the table frames and the storage for the free list, so the same code runs
// in a bare-metal guest kernel, a user-mode guest and a Windows driver.
//
// Protocol rules implemented (xen/include/public/grant_table.h):
//  - Introducing an entry: write domid, write frame, write barrier, then write flags with the
//    type. Here: relaxed stores of domid/frame followed by a release store of flags.
//  - Invalidating an unused GTF_permit_access entry: read flags, require neither GTF_reading
//    nor GTF_writing, then compare-exchange flags to 0 (gnttab_end_foreign_access_ref). If the
//    other side holds the entry busy the revoke fails and the ref stays granted.
//  - Refs 0 .. GNTTAB_NR_RESERVED_ENTRIES-1 belong to the toolstack (console, xenstore); they
//    are never on the free list but can be (re)written with grant_access_ref().
//
// Not synchronised: callers that grant from several CPUs serialise calls themselves (Linux
// holds gnttab_list_lock). Every entry update is atomic with respect to the mapping side.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "pvio/xen/grant_table.h"

namespace pvio::gnttab {

class GrantTable {
 public:
  // `frames`: nr_frames pointers to the table's 4 KiB frames (512 entries each), 8-byte aligned.
  // `free_storage`: storage_len refs of bookkeeping owned by the caller (a static array works);
  // refs at or beyond storage_len are never handed out. Both must outlive the table. All
  // non-reserved entries are invalidated: the table takes them over.
  GrantTable(grant_entry_v1* const* frames, std::uint32_t nr_frames, grant_ref_t* free_storage,
             std::uint32_t storage_len)
      : frames_(frames), next_(free_storage) {
    const std::uint64_t entries = std::uint64_t{nr_frames} * kEntriesPerFrame;
    nr_entries_ = static_cast<std::uint32_t>(entries < storage_len ? entries : storage_len);
    if (frames_ == nullptr || next_ == nullptr) nr_entries_ = 0;
    for (grant_ref_t ref = 0; ref < nr_entries_ && ref < GNTTAB_NR_RESERVED_ENTRIES; ++ref)
      next_[ref] = kReserved;
    head_ = kInvalidGrantRef;
    for (grant_ref_t ref = nr_entries_; ref-- > GNTTAB_NR_RESERVED_ENTRIES;) {
      grant_entry_v1& e = entry(ref);
      flags_ref(ref).store(0, std::memory_order_relaxed);
      std::atomic_ref<domid_t>(e.domid).store(0, std::memory_order_relaxed);
      std::atomic_ref<std::uint32_t>(e.frame).store(0, std::memory_order_relaxed);
      next_[ref] = head_;
      head_ = ref;
      ++free_count_;
    }
    std::atomic_thread_fence(std::memory_order_release);
  }

  GrantTable(const GrantTable&) = delete;
  GrantTable& operator=(const GrantTable&) = delete;

  // Grants `domid` access to guest frame `frame`. Returns the ref, or kInvalidGrantRef when the
  // table is full or the frame does not fit a v1 entry (32 bits).
  grant_ref_t grant_access(domid_t domid, std::uint64_t frame, bool readonly) {
    if (frame > 0xFFFFFFFFu || head_ == kInvalidGrantRef) return kInvalidGrantRef;
    const grant_ref_t ref = head_;
    head_ = next_[ref];
    next_[ref] = kInUse;
    --free_count_;
    publish(ref, domid, static_cast<std::uint32_t>(frame), readonly);
    return ref;
  }

  // Writes an entry the caller already owns: a reserved ref (console, xenstore) or a ref it got
  // from grant_access() and whose previous grant it ended or wants to replace while unused
  // (Linux gnttab_grant_foreign_access_ref). Fails for free refs, out-of-range refs and entries
  // the other side currently holds busy.
  bool grant_access_ref(grant_ref_t ref, domid_t domid, std::uint64_t frame, bool readonly) {
    if (ref >= nr_entries_ || frame > 0xFFFFFFFFu) return false;
    if (next_[ref] != kReserved && next_[ref] != kInUse) return false;
    // Invalidate first (fails while busy), so the mapper never pins a half-rewritten entry.
    if (!revoke(ref)) return false;
    publish(ref, domid, static_cast<std::uint32_t>(frame), readonly);
    return true;
  }

  // Revokes the grant unless the other side has it mapped or is copying (GTF_reading /
  // GTF_writing set). On success a non-reserved ref goes back to the free list.
  bool end_access(grant_ref_t ref) {
    if (ref >= nr_entries_) return false;
    if (next_[ref] != kReserved && next_[ref] != kInUse) return false;
    if (!revoke(ref)) return false;
    if (next_[ref] == kInUse) {
      next_[ref] = head_;
      head_ = ref;
      ++free_count_;
    }
    return true;
  }

  // The shared entry of `ref` (null beyond the table), for the owner of the domain releasing
  // the busy bits a dead mapper left (gnttab::release_dead_mapper), as Xen does when it
  // releases the mappings of a domain that died.
  grant_entry_v1* shared_entry(grant_ref_t ref) const {
    if (ref >= nr_entries_) return nullptr;
    return &frames_[ref / kEntriesPerFrame][ref % kEntriesPerFrame];
  }

  // True while the other side holds the entry mapped or is copying through it.
  bool is_busy(grant_ref_t ref) const {
    if (ref >= nr_entries_) return false;
    return flags_ref(ref).load(std::memory_order_acquire) & (GTF_reading | GTF_writing);
  }

  // Current GTF_* flags of an entry (0 for refs outside the table).
  std::uint16_t flags(grant_ref_t ref) const {
    return ref < nr_entries_ ? flags_ref(ref).load(std::memory_order_acquire) : 0;
  }

  std::uint32_t nr_entries() const { return nr_entries_; }
  std::uint32_t free_count() const { return free_count_; }

 private:
  static constexpr grant_ref_t kInUse = 0xFFFFFFFEu;
  static constexpr grant_ref_t kReserved = 0xFFFFFFFDu;

  grant_entry_v1& entry(grant_ref_t ref) const {
    return frames_[ref / kEntriesPerFrame][ref % kEntriesPerFrame];
  }
  std::atomic_ref<std::uint16_t> flags_ref(grant_ref_t ref) const {
    return std::atomic_ref<std::uint16_t>(entry(ref).flags);
  }

  // gnttab_end_foreign_access_ref_v1: clear the flags only if neither busy bit is set; the
  // acquire half orders the other side's last accesses before any reuse of the frame.
  bool revoke(grant_ref_t ref) {
    std::atomic_ref<std::uint16_t> flags = flags_ref(ref);
    std::uint16_t cur = flags.load(std::memory_order_relaxed);
    do {
      if (cur & (GTF_reading | GTF_writing)) return false;
    } while (!flags.compare_exchange_weak(cur, 0, std::memory_order_acq_rel,
                                          std::memory_order_relaxed));
    return true;
  }

  void publish(grant_ref_t ref, domid_t domid, std::uint32_t frame, bool readonly) {
    grant_entry_v1& e = entry(ref);
    std::atomic_ref<domid_t>(e.domid).store(domid, std::memory_order_relaxed);
    std::atomic_ref<std::uint32_t>(e.frame).store(frame, std::memory_order_relaxed);
    // wmb() before the type: the mapper must never see a valid type with a stale frame/domid.
    const auto flags =
        static_cast<std::uint16_t>(GTF_permit_access | (readonly ? GTF_readonly : 0));
    flags_ref(ref).store(flags, std::memory_order_release);
  }

  grant_entry_v1* const* frames_;
  grant_ref_t* next_;  // per ref: next free ref, kInUse or kReserved
  std::uint32_t nr_entries_ = 0;
  std::uint32_t free_count_ = 0;
  grant_ref_t head_ = kInvalidGrantRef;
};

// A GrantTable that carries its own free-list storage, for callers with a fixed table size
// (a static object in a guest kernel, for instance). The storage base comes first so it exists
// before GrantTable's constructor fills it.
template <std::uint32_t NrFrames>
struct GrantTableStorage {
  grant_ref_t free_storage[NrFrames * kEntriesPerFrame];
};

template <std::uint32_t NrFrames>
class FixedGrantTable : private GrantTableStorage<NrFrames>, public GrantTable {
 public:
  explicit FixedGrantTable(grant_entry_v1* const* frames)
      : GrantTable(frames, NrFrames, this->free_storage, NrFrames * kEntriesPerFrame) {}
};

}  // namespace pvio::gnttab
