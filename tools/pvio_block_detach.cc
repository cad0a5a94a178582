// pvio block-detach N xvda|DEVID: take a virtual block device away as xl does: the backend
// is told to close (online=0, state=Closing), the toolstack waits for it to reach Closed
// (when a frontend was ever connected), then both directories are removed.
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
    return fail("block-detach", "usage: pvio block-detach N xvda|DEVID [--force] [--timeout-ms T]");
  auto xs = connect_xenstore("block-detach");
  if (!xs) return 1;
  const std::string d = std::to_string(domid);
  // Accept the devid or the name the backend recorded in `dev`.
  std::string devid = o->positional[1];
  uint64_t n = 0;
  if (!parse_uint(devid, &n)) {
    devid.clear();
    if (auto ids = xs->directory("/local/domain/0/backend/vbd/" + d); ids.ok())
      for (const auto& id : ids.value)
        if (auto dev = xs->read("/local/domain/0/backend/vbd/" + d + "/" + id + "/dev");
            dev.ok() && dev.value == o->positional[1])
          devid = id;
  }
  const std::string be = "/local/domain/0/backend/vbd/" + d + "/" + devid;
  const std::string fe = "/local/domain/" + d + "/device/vbd/" + devid;
  if (devid.empty() || !xs->read(be + "/frontend").ok())
    return fail("block-detach", "domain " + d + " has no vbd " + o->positional[1]);

  // A frontend that never got past InitWait was never connected: nothing to close.
  if (const int rc = close_and_remove_device(*xs, "block-detach", be, fe, 2, o->has("--force"),
                                             timeout_ms);
      rc != 0)
    return rc;
  std::printf("vbd %s of domain %s detached\n", devid.c_str(), d.c_str());
  return 0;
}

}  // namespace

PVIO_VERB("block-detach", "N xvda|DEVID [--force] [--timeout-ms T]",
          "remove a virtual block device from domain N", run);

}  // namespace pvio::cli
