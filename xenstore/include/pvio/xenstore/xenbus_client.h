// XenBus state helpers for Dom0 services (backends), over the socket Client.
#pragma once

#include <string_view>

#include "pvio/xenstore/client.h"
#include "pvio/xenstore/xenbus.h"

namespace pvio::xs {

// A missing or unparsable "<dir>/state" reads as Unknown.
XenbusState xenbus_read_state(Client& c, std::string_view dir, uint32_t tx = 0);
// Transactional read-check-write of "<dir>/state", retried on EAGAIN; EINVAL if illegal,
// NOENT (nothing written) once <dir> itself is gone.
XsError xenbus_switch_state(Client& c, std::string_view dir, XenbusState to);

}  // namespace pvio::xs
