// XenBus device states (Xen's public io/xenbus.h, enum xenbus_state), the value stored in a
// device's "state" node, and their names. The handshake rules built on them live in
// xenstore/ (pvio/xenstore/xenbus.h).
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace pvio::xs {

enum class XenbusState : uint8_t {
  Unknown = 0,
  Initialising = 1,
  InitWait = 2,       // backend: waiting for frontend details (hotplug done)
  Initialised = 3,    // frontend: details written, waiting for the backend
  Connected = 4,
  Closing = 5,        // device is being torn down; the peer should close too
  Closed = 6,
  Reconfiguring = 7,  // backend only
  Reconfigured = 8,
};

inline constexpr const char* xenbus_state_name(XenbusState s) {
  switch (s) {
    case XenbusState::Unknown: return "Unknown";
    case XenbusState::Initialising: return "Initialising";
    case XenbusState::InitWait: return "InitWait";
    case XenbusState::Initialised: return "Initialised";
    case XenbusState::Connected: return "Connected";
    case XenbusState::Closing: return "Closing";
    case XenbusState::Closed: return "Closed";
    case XenbusState::Reconfiguring: return "Reconfiguring";
    case XenbusState::Reconfigured: return "Reconfigured";
  }
  return "Invalid";
}

// Parses the value stored in xenstore: a decimal number 0..8 (as Linux's xenbus_read_driver_
// state, which treats anything else as Unknown). False for anything that is not one.
inline constexpr bool xenbus_parse_state(const char* s, size_t len, XenbusState* out) {
  while (len > 0 && s[len - 1] == '\0') --len;
  if (len != 1 || s[0] < '0' || s[0] > '8') return false;
  *out = static_cast<XenbusState>(s[0] - '0');
  return true;
}

}  // namespace pvio::xs
