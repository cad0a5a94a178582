// xenbus child enumeration (see enumerate.h).
#include "enumerate.h"

#include <cstring>

namespace pvio::windows::xenbus {

bool ChildList::contains(const Child& c) const {
  for (std::uint32_t i = 0; i < count; ++i)
    if (items[i] == c) return true;
  return false;
}

void add_directory(const char* reply, std::size_t len, PVIO_XEN_DEVICE_KIND kind, ChildList& out) {
  std::size_t i = 0;
  while (i < len) {
    const char* name = reply + i;
    std::size_t n = 0;
    while (i + n < len && name[n] != '\0') ++n;
    i += n + 1;
    if (n == 0) continue;
    std::uint64_t v = 0;
    bool ok = n <= 10;
    for (std::size_t k = 0; ok && k < n; ++k) {
      if (name[k] < '0' || name[k] > '9') ok = false;
      else v = v * 10 + static_cast<std::uint64_t>(name[k] - '0');
    }
    if (ok && (v > 0xFFFFFFFFu || (n > 1 && name[0] == '0'))) ok = false;
    const Child c{kind, static_cast<std::uint32_t>(v)};
    if (!ok || out.count == kMaxChildren || out.contains(c)) {
      ++out.ignored;
      continue;
    }
    out.items[out.count++] = c;
  }
}

void diff(const ChildList& before, const ChildList& now, ChildList& added, ChildList& removed) {
  added = ChildList{};
  removed = ChildList{};
  for (std::uint32_t i = 0; i < now.count; ++i)
    if (!before.contains(now.items[i])) added.items[added.count++] = now.items[i];
  for (std::uint32_t i = 0; i < before.count; ++i)
    if (!now.contains(before.items[i])) removed.items[removed.count++] = before.items[i];
}

namespace {
std::size_t put(const char* s, char* out, std::size_t cap) {
  const std::size_t n = std::strlen(s);
  if (n + 1 > cap) return 0;
  std::memcpy(out, s, n + 1);
  return n;
}
}  // namespace

std::size_t hardware_id(PVIO_XEN_DEVICE_KIND kind, char* out, std::size_t cap) {
  return put(kind == PvioXenVbd ? "XENBUS\\VBD" : "XENBUS\\VIF", out, cap);
}

std::size_t instance_id(const Child& c, char* out, std::size_t cap) {
  char digits[11];
  std::size_t n = 0;
  std::uint32_t v = c.devid;
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  if (n + 1 > cap) return 0;
  for (std::size_t i = 0; i < n; ++i) out[i] = digits[n - 1 - i];
  out[n] = '\0';
  return n;
}

}  // namespace pvio::windows::xenbus
