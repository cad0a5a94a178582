// pvio block-attach N FILE: create a virtual block device for domain N backed by FILE (a
// regular file or a block device), writing the backend and frontend nodes as xl does, which
// pvio-blkback (and Linux's xen-blkback/blkfront) pick up.
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "pvio_cli.h"

namespace pvio::cli {
namespace {

using xs::XsError;

// Xen's vbd numbering (docs/misc/vbd-interface): xvdX is (202 << 8) | (disk << 4) for the
// first 16 disks, (1 << 28) | (disk << 8) beyond. A bare number is taken as the devid itself.
bool parse_vdev(const std::string& v, uint32_t* devid) {
  uint64_t n = 0;
  if (parse_uint(v, &n)) {
    if (n == 0 || n > 0xFFFFFFFFu) return false;
    *devid = static_cast<uint32_t>(n);
    return true;
  }
  if (!v.starts_with("xvd") || v.size() < 4 || v.size() > 5) return false;
  uint32_t disk = 0;
  for (std::size_t i = 3; i < v.size(); ++i) {
    if (v[i] < 'a' || v[i] > 'z') return false;
    disk = disk * 26 + static_cast<uint32_t>(v[i] - 'a') + (i + 1 < v.size() ? 1 : 0);
  }
  *devid = disk < 16 ? (202u << 8) | (disk << 4) : (1u << 28) | (disk << 8);
  return true;
}

int run(const std::vector<std::string>& args) {
  std::string bad;
  auto o = parse_options(args, {"--vdev", "--mode", "--engine"}, {}, &bad);
  domid_t domid = 0;
  if (!o || o->positional.size() != 2 || !parse_domid(o->positional[0], &domid))
    return fail("block-attach", "usage: pvio block-attach N FILE [--vdev xvda|DEVID] "
                                "[--mode r|w] [--engine uring|aio|null]");
  const std::string mode = o->get("--mode", "w");
  if (mode != "r" && mode != "w") return fail("block-attach", "--mode is r or w");
  const std::string engine = o->get("--engine");
  if (!engine.empty() && engine != "uring" && engine != "aio" && engine != "null")
    return fail("block-attach", "--engine is uring, aio or null");
  std::error_code ec;
  const std::string params = std::filesystem::absolute(o->positional[1], ec).lexically_normal();
  struct stat st{};
  if (ec || ::stat(params.c_str(), &st) != 0 || !(S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)))
    return fail("block-attach", o->positional[1] + " is not a regular file or block device");

  auto xs = connect_xenstore("block-attach");
  if (!xs) return 1;
  const std::string d = std::to_string(domid);
  const std::string home = "/local/domain/" + d;
  if (!xs->read(home + "/domid").ok()) return fail("block-attach", "no domain " + d);

  uint32_t devid = 0;
  if (o->has("--vdev")) {
    if (!parse_vdev(o->get("--vdev"), &devid)) return fail("block-attach", "bad --vdev");
  } else {
    // The first xvd that is free, as xl picks.
    for (uint32_t disk = 0; disk < 26 && devid == 0; ++disk) {
      const uint32_t cand = (202u << 8) | (disk << 4);
      if (!xs->read(home + "/device/vbd/" + std::to_string(cand) + "/backend").ok()) devid = cand;
    }
  }
  const std::string fe = home + "/device/vbd/" + std::to_string(devid);
  const std::string be = "/local/domain/0/backend/vbd/" + d + "/" + std::to_string(devid);
  if (xs->read(fe + "/backend").ok() || xs->read(be + "/frontend").ok())
    return fail("block-attach", "domain " + d + " already has vbd " + std::to_string(devid));

  VbdSpec spec;
  spec.devid = devid;
  spec.params = params;
  spec.mode = mode;
  spec.engine = engine;
  spec.st = st;
  const XsError e = write_vbd(*xs, domid, spec);
  if (e != XsError::None) return fail("block-attach", std::string("xenstore: ") + xs::xs_error_name(e));
  std::printf("vbd %u (%s) for domain %s: %s, mode %s\n", devid, vdev_name(devid).c_str(),
              d.c_str(), params.c_str(), mode.c_str());
  return 0;
}

}  // namespace

PVIO_VERB("block-attach", "N FILE [--vdev xvda|DEVID] [--mode r|w] [--engine uring|aio|null]",
          "give domain N a virtual block device backed by FILE", run);

}  // namespace pvio::cli
