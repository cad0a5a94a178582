// The guest's one xenstore connection: the ring page the VMM publishes (HVM_PARAM_STORE_PFN),
// shared by every PV driver of the test guest (blkfront's and netfront's bindings).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pvio/xenstore/guest_client.h"

namespace pvio::guest {

using XsClient = xs::GuestClient<8>;

// Connects on the first call (xen_init must have run); nullptr without a store ring or upcall.
XsClient* xs_ring();
// XsError as a negative Xen errno (public/errno.h), the seams' convention.
int xs_errno(xs::XsError e);
// Read a node into buf with a NUL after it; 0 or -errno.
int xs_ring_read(const char* path, char* buf, size_t cap, size_t& len);
// Waits until any watch of this guest fired (or events were lost: callers reread their state
// anyway), or timeout_ms passes (-ETIMEDOUT). Control path only: a bounded spin on the ring,
// since the guest has no timer to wake a hlt.
int xs_ring_wait(uint32_t timeout_ms, uint64_t tsc_khz);

}  // namespace pvio::guest
