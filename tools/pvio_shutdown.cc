// pvio shutdown NAME|N: ask a domain to power off the xl way, by writing "poweroff" to its
// control/shutdown node (its PV drivers watch it: Linux, Mini-OS, pvio-domain), and with -w
// wait until it is gone. What "gone" means is up to the domain's monitor (`pvio create FILE`
// leaves one): destroyed, restarted or preserved, by on_poweroff. A domain without a monitor
// (made with the flag forms of create) is torn down here once its process has ended.
// `pvio reboot` (pvio_reboot.cc) is the same with "reboot".
#include <chrono>
#include <cstdio>
#include <thread>

#include "domain_builder.h"
#include "pvio_cli.h"

namespace pvio::cli {

int request_shutdown(const std::string& verb, const std::vector<std::string>& args,
                     const std::string& reason) {
  const std::string usage = "usage: pvio " + verb + " [-w|--wait] [--timeout S] NAME|N";
  bool wait = false;
  uint64_t timeout_s = 60;
  std::string who;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "-w" || args[i] == "--wait") {
      wait = true;
    } else if (args[i] == "--timeout" && i + 1 < args.size() &&
               parse_uint(args[i + 1], &timeout_s) && timeout_s > 0) {
      ++i;
    } else if (!args[i].starts_with("-") && who.empty()) {
      who = args[i];
    } else {
      return fail(verb, usage);
    }
  }
  if (who.empty()) return fail(verb, usage);
  auto xs = connect_xenstore(verb);
  if (!xs) return 1;
  const auto found = find_domain(*xs, who);
  if (!found) return fail(verb, "no domain " + who);
  const domid_t domid = *found;
  const std::string d = std::to_string(domid);
  const std::string proc = "domain-" + d;
  const auto old_pid = running_pid(proc);
  if (!old_pid) return fail(verb, "domain " + d + " is not running");
  const bool monitored = running_pid(monitor_name(domid)).has_value();
  const std::string node = "/local/domain/" + d + "/control/shutdown";
  if (const xs::XsError e = xs->write(node, reason); e != xs::XsError::None)
    return fail(verb, "cannot write " + node + ": " + xs::xs_error_name(e));
  std::printf("domain %s: %s requested\n", d.c_str(), reason.c_str());
  if (!wait) return 0;

  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    if (!process_alive(*old_pid)) {
      if (!monitored) {
        teardown_domain(*xs, domid, true);
        std::printf("domain %s: shut down (%s); destroyed\n", d.c_str(), reason.c_str());
        return 0;
      }
      const auto now_pid = running_pid(proc);
      const auto intro = xs->is_domain_introduced(domid);
      if (now_pid && *now_pid != *old_pid && intro.ok() && intro.value) {
        std::printf("domain %s: shut down (%s); restarted, pid %d\n", d.c_str(), reason.c_str(),
                    static_cast<int>(*now_pid));
        return 0;
      }
      if (!running_pid(monitor_name(domid))) {
        const bool home = xs->read("/local/domain/" + d + "/domid").ok();
        std::printf("domain %s: shut down (%s); %s\n", d.c_str(), reason.c_str(),
                    home ? "preserved (pvio destroy removes it)" : "destroyed");
        return 0;
      }
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const auto ack = xs->read(node);
  if (process_alive(*old_pid) && ack.ok() && ack.value == reason)
    return fail(verb, "domain " + d + " did not acknowledge control/shutdown within " +
                          std::to_string(timeout_s) + " s (does its kernel watch it?)");
  return fail(verb, "domain " + d + " did not finish shutting down within " +
                        std::to_string(timeout_s) + " s");
}

namespace {
int run(const std::vector<std::string>& args) { return request_shutdown("shutdown", args, "poweroff"); }
}  // namespace

PVIO_VERB("shutdown", "[-w|--wait] [--timeout S] NAME|N",
          "ask a domain to power off (control/shutdown); -w waits until it is gone", run);

}  // namespace pvio::cli
