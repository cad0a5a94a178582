// pvio network-detach N DEVID|MAC: take a virtual network interface away as xl does: the
// backend is told to close (online=0, state=Closing), the toolstack waits for it to reach
// Closed (when a frontend was ever connected), then both directories are removed.
#include <chrono>
#include <cstdio>

#include "pvio_cli.h"

namespace pvio::cli {
namespace {

using xs::XsError;


int run(const std::vector<std::string>& args) {
  std::string bad;
  auto o = parse_options(args, {"--timeout-ms"}, {"--force"}, &bad);
  domid_t domid = 0;
  uint64_t timeout_ms = 10000;
  if (!o || o->positional.size() != 2 || !parse_domid(o->positional[0], &domid) ||
      (o->has("--timeout-ms") && !parse_uint(o->get("--timeout-ms"), &timeout_ms)))
    return fail("network-detach", "usage: pvio network-detach N DEVID|MAC [--force] [--timeout-ms T]");
  auto xs = connect_xenstore("network-detach");
  if (!xs) return 1;
  const std::string d = std::to_string(domid);
  const std::string vifs = "/local/domain/0/backend/vif/" + d;
  // Accept the devid or the vif's MAC.
  std::string devid = o->positional[1];
  uint64_t n = 0;
  if (!parse_uint(devid, &n)) {
    std::string mac;
    devid.clear();
    if (parse_mac(o->positional[1], &mac))
      if (auto ids = xs->directory(vifs); ids.ok())
        for (const auto& id : ids.value)
          if (auto m = xs->read(vifs + "/" + id + "/mac"); m.ok() && m.value == mac) devid = id;
  }
  const std::string be = vifs + "/" + devid;
  const std::string fe = "/local/domain/" + d + "/device/vif/" + devid;
  if (devid.empty() || !xs->read(be + "/frontend").ok())
    return fail("network-detach", "domain " + d + " has no vif " + o->positional[1]);

  // A frontend that never got past Initialising was never connected: nothing to close.
  if (const int rc = close_and_remove_device(*xs, "network-detach", be, fe, 1, o->has("--force"),
                                             timeout_ms);
      rc != 0)
    return rc;
  std::printf("vif %s of domain %s detached\n", devid.c_str(), d.c_str());
  return 0;
}

}  // namespace

PVIO_VERB("network-detach", "N DEVID|MAC [--force] [--timeout-ms T]",
          "remove a virtual network interface from domain N", run);

}  // namespace pvio::cli
