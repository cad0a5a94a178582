// xenbus's child devices: one per numeric node under device/vbd and device/vif of this guest
// (the frontend directories the toolstack creates), with the PnP identities Windows matches
// against xenvbd.inf / xennet.inf. Freestanding: runs over any xenstore reader with
// XS_DIRECTORY, in xenbus.sys over its ring client and in the tests over a user-mode domain's
// ring served by the real pvio-xenstored.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pvio/windows/xen_interface.h"

namespace pvio::windows::xenbus {

struct Child {
  PVIO_XEN_DEVICE_KIND kind = PvioXenVbd;
  std::uint32_t devid = 0;
  bool operator==(const Child& o) const { return kind == o.kind && devid == o.devid; }
};

inline constexpr std::uint32_t kMaxChildren = 64;
struct ChildList {
  Child items[kMaxChildren];
  std::uint32_t count = 0;
  std::uint32_t ignored = 0;  // names that are not device numbers, or beyond kMaxChildren
  bool contains(const Child& c) const;
};

// Adds the children named in an XS_DIRECTORY reply (NUL-separated names) of `kind`'s
// directory. Names must be decimal device numbers below 2^32; anything else is ignored.
void add_directory(const char* reply, std::size_t len, PVIO_XEN_DEVICE_KIND kind, ChildList& out);

// Reads device/vbd and device/vif through `xs` (GuestClient-like: directory(path, buf, cap,
// &len) returning xs::XsError) into `out`. A missing directory is no children. Returns false
// when xenstore failed otherwise.
template <class Xs, class Error>
bool enumerate(Xs& xs, ChildList& out, Error none, Error noent) {
  static char buf[4096];  // xenbus enumerates from one thread at a time
  out = ChildList{};
  const struct {
    const char* path;
    PVIO_XEN_DEVICE_KIND kind;
  } dirs[] = {{"device/vbd", PvioXenVbd}, {"device/vif", PvioXenVif}};
  for (const auto& d : dirs) {
    std::size_t len = 0;
    const Error e = xs.directory(d.path, buf, sizeof buf, &len);
    if (e == noent) continue;
    if (e != none) return false;
    add_directory(buf, len, d.kind, out);
  }
  return true;
}

// Children in `now` and not in `before` (to create PDOs for) and the reverse (to report
// missing in the next BusRelations answer).
void diff(const ChildList& before, const ChildList& now, ChildList& added, ChildList& removed);

// PnP identities (IRP_MN_QUERY_ID): hardware ID "XENBUS\VBD" / "XENBUS\VIF" (what the INFs
// match), device ID the same, instance ID the device number in decimal. `out` gets a NUL-
// terminated ASCII string; returns its length or 0 when cap is too small.
std::size_t hardware_id(PVIO_XEN_DEVICE_KIND kind, char* out, std::size_t cap);
std::size_t instance_id(const Child& c, char* out, std::size_t cap);

}  // namespace pvio::windows::xenbus
