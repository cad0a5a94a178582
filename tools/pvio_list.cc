// pvio list: the domains xenstore knows, with their state, like `xl list`.
#include <cstdio>

#include "pvio_cli.h"

namespace pvio::cli {
namespace {

int run(const std::vector<std::string>& args) {
  if (!args.empty()) return fail("list", "takes no arguments");
  auto xs = connect_xenstore("list");
  if (!xs) return 1;
  std::printf("%-20s %5s %8s  %s\n", "Name", "ID", "Mem(MiB)", "State");
  std::printf("%-20s %5d %8s  %s\n", "Domain-0", 0, "-", "running");
  auto doms = xs->directory("/local/domain");
  if (!doms.ok()) return 0;
  for (const auto& id : doms.value) {
    domid_t domid = 0;
    if (!parse_domid(id, &domid)) continue;
    const std::string home = "/local/domain/" + id;
    const auto name = xs->read(home + "/name");
    const auto mem = xs->read(home + "/memory/target");
    uint64_t kib = 0;
    const std::string mib = mem.ok() && parse_uint(mem.value, &kib) ? std::to_string(kib / 1024) : "-";
    const bool process = running_pid("domain-" + id).has_value();
    const auto intro = xs->is_domain_introduced(domid);
    const bool introduced = intro.ok() && intro.value;
    // running: process up and served by xenstored; dying: one of the two is gone.
    const char* state = process && introduced ? "running"
                        : process             ? "not-introduced"
                        : introduced          ? "dying"
                                              : "dead";
    std::printf("%-20s %5s %8s  %s\n", name.ok() ? name.value.c_str() : "-", id.c_str(),
                mib.c_str(), state);
  }
  return 0;
}

}  // namespace

PVIO_VERB("list", "", "list domains with their state", run);

}  // namespace pvio::cli
