// pvio down: stop pvio-netback, pvio-blkback and pvio-xenstored started by `pvio up`. Domains are left
// alone (`pvio destroy` them first).
#include <cstdio>

#include "pvio_cli.h"

namespace pvio::cli {
namespace {

int run(const std::vector<std::string>& args) {
  if (!args.empty()) return fail("down", "takes no arguments");
  for (const char* name : {"netback", "blkback", "xenstored"}) {
    if (auto pid = running_pid(name)) {
      stop_process(name);
      std::printf("%s stopped (pid %d)\n", name, static_cast<int>(*pid));
    } else {
      ::unlink(pid_file(name).c_str());
    }
  }
  return 0;
}

}  // namespace

PVIO_VERB("down", "", "stop pvio-netback, pvio-blkback and pvio-xenstored", run);

}  // namespace pvio::cli
