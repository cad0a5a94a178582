// GrantMapper: Xen's map/unmap/copy checks on a grant table read through GuestMemory.
#include "pvio/grant_table/grant_mapper.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>

// The copy path's helpers are small and run per op; force them into their callers.
#define PVIO_GNTTAB_HOT [[gnu::always_inline]] inline

namespace pvio::gnttab {

namespace {

// The (flags, domid) header of a v1 entry as one little-endian 32-bit word, as Xen's
// union grant_combo sees it.
constexpr std::uint32_t kFlagsMask = 0xFFFFu;
constexpr unsigned kDomidShift = 16;
// Xen gives up after this many failed exchanges: a guest can rewrite the word faster than we
// can retry, and must not be able to make us spin.
constexpr int kMaxStatusRetries = 4;

std::atomic_ref<std::uint32_t> header_word(std::uint8_t* entry) {
  return std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(entry));
}

}  // namespace

GrantMapper::GrantMapper(domid_t granting_domid, domid_t mapper_domid,
                         const GuestMemory& memory, std::span<const std::uint64_t> table_gfns,
                         std::size_t max_handles, std::shared_ptr<ActiveGrantTable> active)
    : granting_domid_(granting_domid),
      mapper_domid_(mapper_domid),
      memory_(memory),
      active_(active ? std::move(active) : ActiveGrantTable::of(memory, granting_domid)),
      max_handles_(max_handles) {
  if (table_gfns.size() > ActiveGrantTable::kMaxFrames ||
      !active_->reserve(static_cast<std::uint32_t>(table_gfns.size())))
    throw std::invalid_argument("grant table too large");
  for (std::uint64_t gfn : table_gfns) {
    std::uint8_t* host = memory_.frame(gfn);
    if (host == nullptr)
      throw std::invalid_argument("grant table frame " + std::to_string(gfn) +
                                  " is outside the domain's memory");
    if (reinterpret_cast<std::uintptr_t>(host) % alignof(std::uint32_t) != 0)
      throw std::invalid_argument("grant table frame is not aligned for atomic access");
    table_frames_.push_back(host);
  }
  nr_entries_ = static_cast<std::uint32_t>(table_frames_.size() * kEntriesPerFrame);
}

GrantMapper::~GrantMapper() {
  for (std::size_t h = 0; h < maptrack_.size(); ++h)
    if (maptrack_[h].in_use) unmap(static_cast<grant_handle_t>(h));
}

PVIO_GNTTAB_HOT std::uint8_t* GrantMapper::entry(grant_ref_t ref) const {
  return table_frames_[ref / kEntriesPerFrame] + (ref % kEntriesPerFrame) * sizeof(grant_entry_v1);
}

std::uint32_t GrantMapper::pin_count(grant_ref_t ref) const {
  if (ref >= nr_entries_) return 0;
  return active_->pin_count(ref);
}

// _set_status_v1: set GTF_reading (+ GTF_writing) with a bounded compare-exchange loop on the
// (flags, domid) word. Type and domid are checked only by the first user; later users rely on
// the active entry (the guest cannot revoke a busy entry without cheating, and cheating only
// affects its own frame).
PVIO_GNTTAB_HOT grant_status GrantMapper::set_status(grant_ref_t ref, bool readonly, bool mapflag,
                                                     bool pinned) {
  std::atomic_ref<std::uint32_t> word = header_word(entry(ref));
  const std::uint16_t type_mask = GTF_type_mask | (mapflag ? GTF_sub_page : 0);
  std::uint32_t cur = word.load(std::memory_order_relaxed);
  for (int retries = 0;; ++retries) {
    const auto flags = static_cast<std::uint16_t>(cur & kFlagsMask);
    const auto domid = static_cast<domid_t>(cur >> kDomidShift);
    if (!pinned && ((flags & type_mask) != GTF_permit_access || domid != mapper_domid_))
      return GNTST_permission_denied;
    std::uint32_t want = cur | GTF_reading;
    if (!readonly) {
      if (flags & GTF_readonly) return GNTST_permission_denied;
      want |= GTF_writing;
    }
    // Acquire pairs with the guest's release store of the flags: the frame we read next is at
    // least as new as the flags we validated.
    if (word.compare_exchange_strong(cur, want, std::memory_order_acquire,
                                     std::memory_order_relaxed))
      return GNTST_okay;
    if (retries == kMaxStatusRetries) return GNTST_general_error;
  }
}

PVIO_GNTTAB_HOT void GrantMapper::clear_status(grant_ref_t ref, std::uint16_t bits) {
  if (bits == 0) return;
  // Release: our accesses to the frame happen before the guest can see the entry idle.
  header_word(entry(ref)).fetch_and(~std::uint32_t{bits}, std::memory_order_release);
}

// __acquire_grant_for_copy / map_grant_ref under the active entry's lock: the first user
// validates the guest's entry and fixes the frame; later users (of any mapper sharing the
// table) take another pin on it.
PVIO_GNTTAB_HOT grant_status GrantMapper::pin(grant_ref_t ref, bool readonly, bool mapflag,
                                              std::uint8_t** frame) {
  if (ref >= nr_entries_) return GNTST_bad_gntref;
  ActiveGrantTable::Entry& act = active_->entry(ref);
  act.acquire();
  const bool pinned = act.pins() != 0;
  if (pinned && act.domid != mapper_domid_) {
    // Validated for another mapping domain: the guest's entry names only that one.
    act.release();
    return GNTST_permission_denied;
  }
  // The busy bits this pin sets, recorded in the maptrack page before the guest's entry.
  const auto adds = static_cast<std::uint16_t>((pinned ? 0 : GTF_reading) |
                                               (!readonly && act.writers == 0 ? GTF_writing : 0));
  if (adds != 0) {
    active_->maptrack().set(ref, adds);
    const grant_status rc = set_status(ref, readonly, mapflag, pinned);
    if (rc != GNTST_okay) {
      active_->maptrack().clear(ref, adds);
      act.release();
      return rc;
    }
  }
  if (!pinned) {
    // Read the frame exactly once; the pointer computed here is what every user of this pin
    // touches, whatever the guest writes into the entry afterwards.
    const std::uint32_t gfn =
        std::atomic_ref<std::uint32_t>(*reinterpret_cast<std::uint32_t*>(entry(ref) + 4))
            .load(std::memory_order_relaxed);
    std::uint8_t* host = memory_.frame(gfn);
    if (host == nullptr) {
      clear_status(ref, adds);
      active_->maptrack().clear(ref, adds);
      act.release();
      return GNTST_bad_page;
    }
    act.frame = host;
    act.domid = mapper_domid_;
  }
  if (readonly)
    ++act.readers;
  else
    ++act.writers;
  *frame = act.frame;
  act.release();
  return GNTST_okay;
}

PVIO_GNTTAB_HOT void GrantMapper::unpin(grant_ref_t ref, bool readonly) {
  ActiveGrantTable::Entry& act = active_->entry(ref);
  act.acquire();
  std::uint16_t clear = 0;
  if (readonly) {
    --act.readers;
  } else {
    --act.writers;
    if (act.writers == 0) clear |= GTF_writing;
  }
  if (act.pins() == 0) {
    clear |= GTF_reading;
    act.frame = nullptr;
  }
  // Under the lock: a new first user must not set the bits before we cleared ours.
  clear_status(ref, clear);
  active_->maptrack().clear(ref, clear);
  act.release();
}

MapResult GrantMapper::map(grant_ref_t ref, bool readonly) {
  MapResult res;
  if (free_handle_ == kNoHandle && maptrack_.size() >= max_handles_) {
    res.status = GNTST_no_space;
    return res;
  }
  std::uint8_t* frame = nullptr;
  res.status = pin(ref, readonly, /*mapflag=*/true, &frame);
  if (res.status != GNTST_okay) return res;

  grant_handle_t h;
  if (free_handle_ != kNoHandle) {
    h = free_handle_;
    free_handle_ = maptrack_[h].next_free;
  } else {
    h = static_cast<grant_handle_t>(maptrack_.size());
    maptrack_.emplace_back();
  }
  maptrack_[h] = {ref, readonly, true, kNoHandle};
  ++live_handles_;
  res.handle = h;
  res.addr = frame;
  return res;
}

void GrantMapper::map(std::span<MapOp> ops) {
  for (MapOp& op : ops) {
    op.handle = 0;
    op.host_addr = nullptr;
    if (op.dom != granting_domid_) {
      op.status = GNTST_bad_domain;
      continue;
    }
    const MapResult r = map(op.ref, (op.flags & GNTMAP_readonly) != 0);
    op.status = r.status;
    op.handle = r.handle;
    op.host_addr = r.addr;
  }
}

grant_status GrantMapper::unmap(grant_handle_t handle) {
  if (handle >= maptrack_.size() || !maptrack_[handle].in_use) return GNTST_bad_handle;
  Maptrack& mt = maptrack_[handle];
  unpin(mt.ref, mt.readonly);
  mt.in_use = false;
  mt.next_free = free_handle_;
  free_handle_ = handle;
  --live_handles_;
  return GNTST_okay;
}

void GrantMapper::unmap(std::span<UnmapOp> ops) {
  for (UnmapOp& op : ops) op.status = unmap(op.handle);
}

// One end of a copy: pin a gref for the duration of the copy, or take a local page.
// Offsets and length are already checked against the page.
PVIO_GNTTAB_HOT grant_status GrantMapper::resolve(const gnttab_copy_ptr& ptr, bool is_gref,
                                                  bool readonly, std::uint8_t** out) {
  if (!is_gref) {
    // gnttab_copy_lock_domain: only DOMID_SELF may be referenced by frame.
    if (ptr.domid != DOMID_SELF) return GNTST_permission_denied;
    const xen_pfn_t gmfn = ptr.u.gmfn;
    if (gmfn == 0 || gmfn > (UINTPTR_MAX >> kGrantPageShift)) return GNTST_bad_page;
    *out = reinterpret_cast<std::uint8_t*>(static_cast<std::uintptr_t>(gmfn) << kGrantPageShift) +
           ptr.offset;
    return GNTST_okay;
  }
  if (ptr.domid != granting_domid_) return GNTST_bad_domain;
  std::uint8_t* frame = nullptr;
  const grant_status rc = pin(ptr.u.ref, readonly, /*mapflag=*/false, &frame);
  if (rc != GNTST_okay) return rc;
  *out = frame + ptr.offset;
  return GNTST_okay;
}

// First half of an op: check the arguments and pin both ends. Only the IN fields are read: a
// load spanning `status` would wait for an earlier status store queued behind a copy's stores.
PVIO_GNTTAB_HOT grant_status GrantMapper::prepare_copy(const gnttab_copy& op_in, PreparedCopy& p) {
  const gnttab_copy_ptr source = op_in.source;
  const gnttab_copy_ptr dest = op_in.dest;
  const std::uint16_t len = op_in.len;
  const std::uint16_t flags = op_in.flags;
  p.len = len;
  p.src_gref = flags & GNTCOPY_source_gref;
  p.dst_gref = flags & GNTCOPY_dest_gref;
  p.src_ref = source.u.ref;
  p.dst_ref = dest.u.ref;
  if (flags & ~(GNTCOPY_source_gref | GNTCOPY_dest_gref) || source.offset > kGrantPageSize ||
      len > kGrantPageSize - source.offset || dest.offset > kGrantPageSize ||
      len > kGrantPageSize - dest.offset)
    return GNTST_bad_copy_arg;
  grant_status rc = resolve(source, p.src_gref, /*readonly=*/true, &p.src);
  if (rc != GNTST_okay) return rc;
  rc = resolve(dest, p.dst_gref, /*readonly=*/false, &p.dst);
  if (rc != GNTST_okay && p.src_gref) unpin(p.src_ref, true);
  return rc;
}

// Second half: drop the pins (clearing the busy bits when they were the last users).
PVIO_GNTTAB_HOT void GrantMapper::finish_copy(const PreparedCopy& p) {
  if (p.dst_gref) unpin(p.dst_ref, false);
  if (p.src_gref) unpin(p.src_ref, true);
}

grant_status GrantMapper::copy(gnttab_copy& op) {
  PreparedCopy p{};
  const grant_status rc = prepare_copy(op, p);
  if (rc == GNTST_okay) {
    std::memmove(p.dst, p.src, p.len);  // memmove: both ends may be the same granted page
    finish_copy(p);
  }
  op.status = rc;
  return rc;
}

// A batch runs in chunks of three phases: pin every op's ends, copy every op in order, unpin.
// The result is that of running the ops one by one (copies keep their order; each op has its
// own pins and status), but the locked instructions that set and clear the busy bits are no
// longer wedged between copies: on x86 each one waits for every store of the copy before it to
// drain, which made a batch of 4 KiB copies about 20% slower than the memcpy it wraps.
void GrantMapper::copy(std::span<gnttab_copy> ops) {
  constexpr std::size_t kChunk = 32;
  PreparedCopy prep[kChunk];
  grant_status status[kChunk];
  for (std::size_t base = 0; base < ops.size(); base += kChunk) {
    const std::size_t n = std::min(kChunk, ops.size() - base);
    for (std::size_t i = 0; i < n; ++i) status[i] = prepare_copy(ops[base + i], prep[i]);
    for (std::size_t i = 0; i < n; ++i)
      if (status[i] == GNTST_okay) std::memmove(prep[i].dst, prep[i].src, prep[i].len);
    for (std::size_t i = 0; i < n; ++i) {
      if (status[i] == GNTST_okay) finish_copy(prep[i]);
      ops[base + i].status = status[i];
    }
  }
}

}  // namespace pvio::gnttab
