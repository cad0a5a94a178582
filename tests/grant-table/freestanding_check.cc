// Compiled with -ffreestanding -fno-exceptions -fno-rtti: the granting side must build as kernel
// code does. Exercises every member so each is instantiated under those flags.
#include "pvio/grant_table/grant_table.h"

namespace pvio::gnttab {

grant_ref_t freestanding_grant_table_check(grant_entry_v1* const* frames, grant_ref_t* storage) {
  GrantTable table(frames, 1, storage, kEntriesPerFrame);
  const grant_ref_t ref = table.grant_access(0, 1, true);
  table.grant_access_ref(GNTTAB_RESERVED_XENSTORE, 0, 2, false);
  if (table.is_busy(ref) || table.flags(ref) == 0) return kInvalidGrantRef;
  table.end_access(ref);
  return table.free_count() + table.nr_entries();
}

std::uint32_t freestanding_fixed_table_check(grant_entry_v1* const* frames) {
  FixedGrantTable<1> table(frames);
  return table.grant_access(0, 3, false);
}

}  // namespace pvio::gnttab
