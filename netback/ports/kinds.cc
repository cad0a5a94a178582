// The uplink port kinds: each is a DPDK virtual device; this table says which driver and how
// its devargs are written.
#include <atomic>
#include <stdexcept>

#include "pvio/netback/uplink.h"

namespace pvio::netback {
namespace {

struct Kind {
  const char* name;
  const char* driver;
  bool needs_arg;
  std::string (*devargs)(const std::string& arg);
};

constexpr Kind kKinds[] = {
    // A host TAP interface named `arg`; the PMD creates it and brings it up on start.
    {"tap", "net_tap", true, [](const std::string& a) { return "iface=" + a; }},
    // AF_PACKET (PACKET_MMAP) on an existing host interface.
    {"af_packet", "net_af_packet", true, [](const std::string& a) { return "iface=" + a; }},
    // Shared-memory packet interface; netback is the server end.
    {"memif", "net_memif", true,
     [](const std::string& a) { return "role=server,id=0,socket=" + a; }},
    // A sink that receives nothing and drops what it is given (benchmarks).
    {"null", "net_null", false, [](const std::string&) { return std::string("no-rx=1"); }},
};

}  // namespace

bool parse_uplink(const std::string& s, UplinkSpec* out) {
  const auto colon = s.find(':');
  out->kind = s.substr(0, colon);
  out->arg = colon == std::string::npos ? "" : s.substr(colon + 1);
  if (out->kind == "none") return out->arg.empty();
  for (const Kind& k : kKinds)
    if (out->kind == k.name) return !k.needs_arg || !out->arg.empty();
  return false;
}

std::pair<std::string, std::string> uplink_devargs(const UplinkSpec& spec) {
  static std::atomic<unsigned> serial{0};
  for (const Kind& k : kKinds) {
    if (spec.kind != k.name) continue;
    return {std::string(k.driver) + std::to_string(serial.fetch_add(1)), k.devargs(spec.arg)};
  }
  throw std::invalid_argument("no DPDK device for uplink kind " + spec.kind);
}

}  // namespace pvio::netback
