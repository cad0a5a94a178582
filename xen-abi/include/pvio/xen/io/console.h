// Xen's PV console ring (xen/include/public/io/console.h): one shared page, the guest writes
// out[] and reads in[]; indices are free-running and masked by the array size.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace pvio::xen {

using XENCONS_RING_IDX = uint32_t;

struct xencons_interface {
  char in[1024];   // backend -> guest (keyboard input)
  char out[2048];  // guest -> backend (console output)
  XENCONS_RING_IDX in_cons, in_prod;
  XENCONS_RING_IDX out_cons, out_prod;
};

static_assert(sizeof(xencons_interface) == 3088);
static_assert(offsetof(xencons_interface, in_cons) == 3072);
static_assert(offsetof(xencons_interface, out_prod) == 3084);

}  // namespace pvio::xen
