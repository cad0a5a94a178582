// pvio list: the domains xenstore knows, like `xl list`: name, domid, kind (user, hvm, pvh),
// state, memory, vCPUs and devices (vbd:xvda vif:0).
#include <algorithm>
#include <cstdio>
#include <vector>

#include "domain_builder.h"
#include "pvio_cli.h"

namespace pvio::cli {
namespace {

std::string devices(xs::Client& xs, const std::string& home) {
  std::string s;
  if (auto vbds = xs.directory(home + "/device/vbd"); vbds.ok())
    for (const auto& id : vbds.value) {
      uint64_t devid = 0;
      s += (s.empty() ? "" : " ") + std::string("vbd:") +
           (parse_uint(id, &devid) && devid <= 0xFFFFFFFFu ? vdev_name(static_cast<uint32_t>(devid)) : id);
    }
  if (auto vifs = xs.directory(home + "/device/vif"); vifs.ok())
    for (const auto& id : vifs.value) s += (s.empty() ? "" : " ") + std::string("vif:") + id;
  return s.empty() ? "-" : s;
}

int run(const std::vector<std::string>& args) {
  if (!args.empty()) return fail("list", "takes no arguments");
  auto xs = connect_xenstore("list");
  if (!xs) return 1;
  std::printf("%-20s %5s %-5s %-15s %8s %5s  %s\n", "Name", "ID", "Kind", "State", "Mem(MiB)",
              "VCPUs", "Devices");
  std::printf("%-20s %5d %-5s %-15s %8s %5s  %s\n", "Domain-0", 0, "host", "running", "-", "-",
              "-");
  auto doms = xs->directory("/local/domain");
  if (!doms.ok()) return 0;
  std::vector<domid_t> ids;  // by domid, as xl lists them
  for (const auto& id : doms.value) {
    domid_t domid = 0;
    if (parse_domid(id, &domid)) ids.push_back(domid);
  }
  std::sort(ids.begin(), ids.end());
  for (const domid_t domid : ids) {
    const std::string id = std::to_string(domid);
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
    const auto rec = read_domain_record(domid);
    std::printf("%-20s %5s %-5s %-15s %8s %5s  %s\n", name.ok() ? name.value.c_str() : "-",
                id.c_str(), rec ? domain_kind_name(rec->kind) : "-", state, mib.c_str(),
                rec ? std::to_string(rec->vcpus).c_str() : "-", devices(*xs, home).c_str());
  }
  return 0;
}

}  // namespace

PVIO_VERB("list", "", "list domains: name, id, kind, state, memory, vCPUs, devices", run);

}  // namespace pvio::cli
