// Compile-time ABI check against Debian's Xen headers, for the ABI this translation unit is
// compiled for: built natively (x86-64) and with -m32 (x86-32) by tests/interop/meson.build.
// Every struct of abi_list.h must have Xen's size and field offsets; a mismatch fails the
// build of this file, i.e. the test.
#include "ours.h"
#include "theirs.h"

#define ABI_SIZE(ours, theirs) \
  static_assert(sizeof(ours) == sizeof(theirs), "size of " #ours " differs from Xen's");
#define ABI_FIELD(ours, theirs, field)                                  \
  static_assert(__builtin_offsetof(ours, field) == __builtin_offsetof(theirs, field), \
                "offset of " #ours "::" #field " differs from Xen's");
#include "abi_list.h"

// Ring sizes of one page, computed by Xen's macro and by ours.
static_assert(pvio::blkif::kRingSizeOnePage == __CONST_RING_SIZE(blkif, 4096));
static_assert(pvio::ring::ring_size<pvio::netif::netif_tx_request, pvio::netif::netif_tx_response>(
                  4096) == __CONST_RING_SIZE(netif_tx, 4096));
static_assert(pvio::ring::ring_size<pvio::netif::netif_rx_request, pvio::netif::netif_rx_response>(
                  4096) == __CONST_RING_SIZE(netif_rx, 4096));

int main() { return 0; }
