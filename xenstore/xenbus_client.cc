// XenBus state helpers over the Dom0 client; see xenbus_client.h.
#include "pvio/xenstore/xenbus_client.h"

#include <string>

namespace pvio::xs {

XenbusState xenbus_read_state(Client& c, std::string_view dir, uint32_t tx) {
  auto r = c.read(std::string(dir) + "/state", tx);
  XenbusState s = XenbusState::Unknown;
  if (!r.ok() || !xenbus_parse_state(r.value.data(), r.value.size(), &s))
    return XenbusState::Unknown;
  return s;
}

XsError xenbus_switch_state(Client& c, std::string_view dir, XenbusState to) {
  const std::string path = std::string(dir) + "/state";
  for (int attempt = 0; attempt < 16; ++attempt) {
    auto tx = c.transaction_start();
    if (!tx.ok()) return tx.error;
    // A state we may not read is an error; a missing one is Unknown.
    auto cur = c.read(path, tx.value);
    XenbusState from = XenbusState::Unknown;
    if (cur.ok()) {
      if (!xenbus_parse_state(cur.value.data(), cur.value.size(), &from))
        from = XenbusState::Unknown;
    } else if (cur.error != XsError::NoEnt) {
      c.transaction_end(tx.value, false);
      return cur.error;
    } else if (c.read(std::string(dir), tx.value).error == XsError::NoEnt) {
      // The toolstack removed the device: writing the state would bring its directory back
      // (a write makes missing parents), a stale node nobody cleans up. Linux's
      // xenbus_switch_state gives up when it cannot read the state, too.
      c.transaction_end(tx.value, false);
      return XsError::NoEnt;
    }
    if (!xenbus_transition_allowed(from, to)) {
      c.transaction_end(tx.value, false);
      return XsError::Inval;
    }
    XsError e = c.write(path, std::to_string(static_cast<int>(to)), tx.value);
    if (e != XsError::None) {
      c.transaction_end(tx.value, false);
      return e;
    }
    e = c.transaction_end(tx.value, true);
    if (e != XsError::Again) return e;
  }
  return XsError::Again;
}

}  // namespace pvio::xs
