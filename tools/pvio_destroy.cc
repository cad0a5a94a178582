// pvio destroy NAME|N: stop the domain's monitor (so nothing restarts it) and its process,
// release it from xenstore, remove its home and the backend directories that served it. The
// process goes first, while xenstored still serves its ring: its frontends close their
// devices in order (Closing, the backend's Closed, grants ended) instead of blocking on a
// ring nobody answers until they are killed. The domain's log stays in the run directory.
#include <cstdio>

#include "domain_builder.h"
#include "pvio_cli.h"

namespace pvio::cli {
namespace {

int run(const std::vector<std::string>& args) {
  if (args.size() != 1) return fail("destroy", "usage: pvio destroy NAME|N");
  auto xs = connect_xenstore("destroy");
  if (!xs) return 1;
  domid_t domid = 0;
  if (auto found = find_domain(*xs, args[0])) {
    domid = *found;
  } else if (!parse_domid(args[0], &domid)) {
    return fail("destroy", "no domain " + args[0]);
  }
  const std::string d = std::to_string(domid);
  const std::string proc = "domain-" + d;
  stop_process(monitor_name(domid));
  const bool had_process = running_pid(proc).has_value();
  stop_process(proc);
  const xs::XsError rel = xs->release(domid);
  const bool had_home = xs->read("/local/domain/" + d + "/domid").ok();
  teardown_domain(*xs, domid, true);
  if (!had_process && !had_home && rel != xs::XsError::None)
    return fail("destroy", "no domain " + args[0]);
  std::printf("domain %s destroyed\n", d.c_str());
  return 0;
}

}  // namespace

PVIO_VERB("destroy", "NAME|N", "release, stop and forget a domain", run);

}  // namespace pvio::cli
