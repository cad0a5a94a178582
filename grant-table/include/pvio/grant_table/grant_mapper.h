// The mapping side of a v1 grant table, for Dom0 services: map/unmap and GNTTABOP_copy against
// one granting domain whose memory this process already has mapped (a GuestMemory). Plays the
// part Xen's common/grant_table.c plays for a backend, with the same checks and status codes.
//
// Protocol rules implemented (Xen __gnttab_map_grant_ref, _set_status_v1, gnttab_copy):
//  - A ref is valid only below frames * 512; otherwise GNTST_bad_gntref. The table itself is
//    read through GuestMemory at the gfns given at construction.
//  - The first user of an entry (map or copy) checks type == GTF_permit_access (and, for maps,
//    no GTF_sub_page) and entry.domid == the mapper's domid, then sets GTF_reading (and
//    GTF_writing for writable use) with a compare-exchange on the 32-bit (flags, domid) word.
//    A guest racing that update makes the exchange fail; it is retried with the new value up to
//    five times and then refused (GNTST_general_error, "shared grant entry is unstable").
//    Wrong type or domid, or a writable use of a GTF_readonly entry: GNTST_permission_denied.
//  - The entry's frame is read once, after the busy bits are set, and translated through
//    GuestMemory (GNTST_bad_page if it lies outside the guest's memory). The resulting pointer
//    is kept in the active entry: while the entry stays pinned, later maps and copies use it and
//    nothing the guest writes to the entry can move them to another frame.
//  - Per-ref pin counts (Xen's active entry), kept in the granting domain's ActiveGrantTable,
//    which every mapper of that domain in this process shares: GTF_writing is cleared when the
//    last writer in the process goes away, GTF_reading when the last user goes away, whichever
//    mapper pinned it. A pinned entry serves only the mapping domain that pinned it first
//    (another one gets GNTST_permission_denied). Copies pin only while the copy call runs (a
//    batch pins a chunk of up to 32 ops, copies them in order, then unpins them).
//  - Copy: each end is a gref of the granting domain or a local page (domid DOMID_SELF, else
//    GNTST_permission_denied); offset + len must stay within one page on both ends
//    (GNTST_bad_copy_arg).
//
// A mapper is not thread-safe (one per ring or queue, or serialise its calls); mappers of the
// same domain on different threads are safe together, through the shared active table.
// Destroying a mapper releases every mapping it still holds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "pvio/grant_table/active_table.h"
#include "pvio/xen/grant_table.h"
#include "pvio/grant_table/guest_memory.h"

namespace pvio::gnttab {

// One GNTTABOP_map_grant_ref in a batch. `dom` must be the mapper's granting domain
// (GNTST_bad_domain otherwise); `flags` takes GNTMAP_readonly. The memory is already mapped in
// this process, so instead of taking a host address the op returns where the frame is.
struct MapOp {
  grant_ref_t ref = 0;          // IN
  domid_t dom = 0;              // IN
  std::uint32_t flags = 0;      // IN: GNTMAP_*
  std::int16_t status = 0;      // OUT: GNTST_*
  grant_handle_t handle = 0;    // OUT: valid when status == GNTST_okay
  std::uint8_t* host_addr = nullptr;  // OUT: the granted 4 KiB frame
};

struct UnmapOp {
  grant_handle_t handle = 0;  // IN
  std::int16_t status = 0;    // OUT: GNTST_okay or GNTST_bad_handle
};

struct MapResult {
  grant_status status = GNTST_general_error;
  grant_handle_t handle = 0;
  std::uint8_t* addr = nullptr;  // start of the granted frame; readable, writable unless readonly
};

class GrantMapper {
 public:
  static constexpr std::size_t kDefaultMaxHandles = 1u << 16;

  // `table_gfns`: guest frame numbers of the granting domain's grant-table frames, in order.
  // Throws std::invalid_argument (a set-up error, not a datapath one) if one of them is not
  // in `memory`, or there are more than ActiveGrantTable::kMaxFrames. `memory` must outlive the
  // mapper. The pin counts are ActiveGrantTable::of(memory, granting_domid), unless `active`
  // names a table to share explicitly.
  GrantMapper(domid_t granting_domid, domid_t mapper_domid, const GuestMemory& memory,
              std::span<const std::uint64_t> table_gfns,
              std::size_t max_handles = kDefaultMaxHandles,
              std::shared_ptr<ActiveGrantTable> active = nullptr);
  ~GrantMapper();

  GrantMapper(const GrantMapper&) = delete;
  GrantMapper& operator=(const GrantMapper&) = delete;

  MapResult map(grant_ref_t ref, bool readonly);
  void map(std::span<MapOp> ops);

  grant_status unmap(grant_handle_t handle);
  void unmap(std::span<UnmapOp> ops);

  // GNTTABOP_copy: performs every op, writes each op's status.
  void copy(std::span<gnttab_copy> ops);
  grant_status copy(gnttab_copy& op);

  domid_t granting_domid() const { return granting_domid_; }
  domid_t mapper_domid() const { return mapper_domid_; }
  std::uint32_t nr_entries() const { return nr_entries_; }
  // Pins on `ref` (read-only + writable) held by every mapper sharing this one's active table.
  std::uint32_t pin_count(grant_ref_t ref) const;
  const std::shared_ptr<ActiveGrantTable>& active_table() const { return active_; }
  std::size_t mapping_count() const { return live_handles_; }

 private:
  struct Maptrack {
    grant_ref_t ref = 0;
    bool readonly = false;
    bool in_use = false;
    grant_handle_t next_free = 0;
  };

  grant_status pin(grant_ref_t ref, bool readonly, bool mapflag, std::uint8_t** frame);
  void unpin(grant_ref_t ref, bool readonly);
  grant_status set_status(grant_ref_t ref, bool readonly, bool mapflag, bool pinned);
  void clear_status(grant_ref_t ref, std::uint16_t bits);
  std::uint8_t* entry(grant_ref_t ref) const;
  grant_status resolve(const gnttab_copy_ptr& ptr, bool is_gref, bool readonly,
                       std::uint8_t** out);
  // Trivial on purpose: copy() keeps an uninitialised array of these on the stack.
  struct PreparedCopy {
    std::uint8_t* src;
    std::uint8_t* dst;
    std::uint16_t len;
    bool src_gref;
    bool dst_gref;
    grant_ref_t src_ref;
    grant_ref_t dst_ref;
  };
  grant_status prepare_copy(const gnttab_copy& op, PreparedCopy& p);
  void finish_copy(const PreparedCopy& p);

  domid_t granting_domid_;
  domid_t mapper_domid_;
  const GuestMemory& memory_;
  std::vector<std::uint8_t*> table_frames_;
  std::uint32_t nr_entries_ = 0;
  std::shared_ptr<ActiveGrantTable> active_;
  std::vector<Maptrack> maptrack_;
  std::size_t max_handles_;
  grant_handle_t free_handle_ = kNoHandle;
  std::size_t live_handles_ = 0;

  static constexpr grant_handle_t kNoHandle = 0xFFFFFFFFu;
};

}  // namespace pvio::gnttab
