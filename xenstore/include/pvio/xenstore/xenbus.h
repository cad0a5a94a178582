// The XenBus device state machine (io/xenbus.h) shared by every frontend and backend:
// states, their names, which transitions are legal, and reading/writing "<dir>/state".
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pvio/xenstore/guest_client.h"
#include "pvio/xen/io/xenbus.h"
#include "pvio/xen/io/xs_wire.h"

namespace pvio::xs {

// Legal moves of the handshake: forward through Initialising -> (InitWait) -> (Initialised)
// -> Connected, Connected <-> Reconfiguring -> Reconfigured, and Closing/Closed from any live
// state (error paths close from anywhere); Closed may restart at Initialising (reconnect) or
// go back to Unknown (device removed). Staying in the same state is always allowed.
inline constexpr bool xenbus_transition_allowed(XenbusState from, XenbusState to) {
  using S = XenbusState;
  if (from == to) return true;
  switch (to) {
    case S::Unknown: return from == S::Closed;
    case S::Initialising: return from == S::Unknown || from == S::Closed;
    case S::InitWait: return from == S::Initialising;
    case S::Initialised: return from == S::Initialising || from == S::InitWait;
    case S::Connected:
      return from == S::Initialising || from == S::InitWait || from == S::Initialised ||
             from == S::Reconfigured;
    case S::Closing: return from != S::Closed && from != S::Unknown;
    case S::Closed: return true;
    case S::Reconfiguring: return from == S::Connected;
    case S::Reconfigured: return from == S::Reconfiguring;
  }
  return false;
}

namespace detail {
// "<dir>/state" into buf; false if it does not fit.
inline bool state_path(const char* dir, char* buf, size_t cap) {
  size_t n = __builtin_strlen(dir);
  if (n + sizeof("/state") > cap) return false;
  __builtin_memcpy(buf, dir, n);
  __builtin_memcpy(buf + n, "/state", sizeof("/state"));
  return true;
}
}  // namespace detail

// Guest-side helpers over GuestClient. A missing or unparsable node reads as Unknown, as
// Linux's xenbus_read_driver_state does.
template <unsigned N>
XenbusState xenbus_read_state(GuestClient<N>& c, const char* dir, uint32_t tx = 0) {
  char path[256];
  char val[16];
  size_t len = 0;
  XenbusState s = XenbusState::Unknown;
  if (!detail::state_path(dir, path, sizeof(path))) return s;
  if (c.read(path, val, sizeof(val), &len, tx) != XsError::None) return XenbusState::Unknown;
  if (!xenbus_parse_state(val, len, &s)) return XenbusState::Unknown;
  return s;
}

// Writes the new state if the move from the current one is legal (EINVAL otherwise), inside
// a transaction retried on EAGAIN, as Linux's xenbus_switch_state.
template <unsigned N>
XsError xenbus_switch_state(GuestClient<N>& c, const char* dir, XenbusState to) {
  char path[256];
  if (!detail::state_path(dir, path, sizeof(path))) return XsError::Inval;
  for (int attempt = 0; attempt < 16; ++attempt) {
    uint32_t tx = 0;
    XsError e = c.transaction_start(&tx);
    if (e != XsError::None) return e;
    // A state we may not read is an error; a missing one is Unknown.
    char val[16];
    size_t len = 0;
    XenbusState from = XenbusState::Unknown;
    e = c.read(path, val, sizeof(val), &len, tx);
    if (e == XsError::None) {
      if (!xenbus_parse_state(val, len, &from)) from = XenbusState::Unknown;
    } else if (e != XsError::NoEnt) {
      c.transaction_end(tx, false);
      return e;
    }
    if (!xenbus_transition_allowed(from, to)) {
      c.transaction_end(tx, false);
      return XsError::Inval;
    }
    char v[2] = {static_cast<char>('0' + static_cast<int>(to)), '\0'};
    e = c.write(path, v, 1, tx);
    if (e != XsError::None) {
      c.transaction_end(tx, false);
      return e;
    }
    e = c.transaction_end(tx, true);
    if (e != XsError::Again) return e;
  }
  return XsError::Again;
}

}  // namespace pvio::xs
