// pvio destroy N: stop the domain's process, release it from xenstore, remove its home and the
// backend directories that served it. The process goes first, while xenstored still serves its
// ring: its frontends close their devices in order (Closing, the backend's Closed, grants
// ended) instead of blocking on a ring nobody answers until they are killed.
#include <cstdio>

#include "pvio_cli.h"

namespace pvio::cli {
namespace {

int run(const std::vector<std::string>& args) {
  domid_t domid = 0;
  if (args.size() != 1 || !parse_domid(args[0], &domid)) return fail("destroy", "usage: pvio destroy N");
  auto xs = connect_xenstore("destroy");
  if (!xs) return 1;
  const std::string d = std::to_string(domid);
  const std::string proc = "domain-" + d;
  const bool had_process = running_pid(proc).has_value();
  stop_process(proc);
  remove_user_domain_vbd(domid);
  const xs::XsError rel = xs->release(domid);
  const bool had_home = xs->read("/local/domain/" + d + "/domid").ok();
  xs->rm("/local/domain/" + d);
  if (auto kinds = xs->directory("/local/domain/0/backend"); kinds.ok())
    for (const auto& kind : kinds.value) xs->rm("/local/domain/0/backend/" + kind + "/" + d);
  if (!had_process && !had_home && rel != xs::XsError::None)
    return fail("destroy", "no domain " + d);
  std::printf("domain %s destroyed\n", d.c_str());
  return 0;
}

}  // namespace

PVIO_VERB("destroy", "N", "release, stop and forget a domain", run);

}  // namespace pvio::cli
