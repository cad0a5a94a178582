// pvio block-attach N FILE: create a virtual block device for domain N backed by FILE (a
// regular file or a block device), writing the backend and frontend nodes as xl does, which
// pvio-blkback (and Linux's xen-blkback/blkfront) pick up.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <chrono>
#include <filesystem>
#include <thread>

#include "pvio_cli.h"

namespace pvio::cli {
namespace {

using xs::XsError;

// Returns once the disk is usable: the frontend is Connected and, for a user-mode domain that
// exposes this vbd through FUSE (`pvio create --vbd DEVID --fuse MNT`), MNT/disk exists. A
// backend that fails (error node, Closing) fails the attach. Other guests connect when they
// boot; for them there is nothing to wait for.
int wait_usable(xs::Client& xs, domid_t domid, uint32_t devid, const std::string& fe,
                const std::string& be, int wait_s) {
  const std::optional<UserDomainVbd> local = read_user_domain_vbd(domid);
  if (wait_s == 0 || !local || local->devid != devid) return 0;
  const std::string disk = local->fuse_mountpoint.empty() ? "" : local->fuse_mountpoint + "/disk";
  const auto state = [&](const std::string& dir) {
    auto r = xs.read(dir + "/state");
    return r.ok() ? r.value : std::string();
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(wait_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto err = xs.read(be + "/error"); err.ok() && !err.value.empty())
      return fail("block-attach", "backend failed: " + err.value);
    struct stat st{};
    if (state(fe) == "4" && (disk.empty() || ::stat(disk.c_str(), &st) == 0)) {
      if (!disk.empty()) std::printf("disk ready at %s\n", disk.c_str());
      return 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return fail("block-attach", "the disk is attached but domain " + std::to_string(domid) +
                                  " did not connect it within " + std::to_string(wait_s) +
                                  " s (frontend state " + state(fe) + ", backend state " +
                                  state(be) + "); see its log in the run directory");
}

int run(const std::vector<std::string>& args) {
  std::string bad;
  auto o = parse_options(args, {"--vdev", "--mode", "--engine", "--wait"}, {}, &bad);
  domid_t domid = 0;
  if (!o || o->positional.size() != 2 || !parse_domid(o->positional[0], &domid))
    return fail("block-attach", "usage: pvio block-attach N FILE [--vdev xvda|DEVID] "
                                "[--mode r|w] [--engine auto|uring|aio|sync|null] [--wait SECONDS]");
  const std::string mode = o->get("--mode", "w");
  if (mode != "r" && mode != "w") return fail("block-attach", "--mode is r or w");
  const std::string engine = o->get("--engine");
  if (!engine.empty() && engine != "auto" && engine != "uring" && engine != "aio" && engine != "sync" &&
      engine != "null")
    return fail("block-attach", "--engine is auto, uring, aio, sync or null");
  std::error_code ec;
  const std::string params = std::filesystem::absolute(o->positional[1], ec).lexically_normal();
  if (const std::string why = unusable_backing(o->positional[1], params, ec); !why.empty())
    return fail("block-attach", why);
  struct stat st{};
  ::stat(params.c_str(), &st);
  uint64_t wait_s = 30;
  if (o->has("--wait") && !parse_uint(o->get("--wait"), &wait_s))
    return fail("block-attach", "--wait takes seconds");

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
  return wait_usable(*xs, domid, devid, fe, be, static_cast<int>(wait_s));
}

}  // namespace

PVIO_VERB("block-attach", "N FILE [--vdev xvda|DEVID] [--mode r|w] [--engine auto|uring|aio|sync|null]",
          "give domain N a virtual block device backed by FILE", run);

}  // namespace pvio::cli
