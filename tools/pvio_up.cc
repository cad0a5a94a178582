// pvio up: start pvio-xenstored, pvio-blkback and pvio-netback in the background (pid files,
// logs and netback's stats file in the run dir). Idempotent: what is already running is left
// alone.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "pvio_cli.h"

namespace pvio::cli {
namespace {

bool xenstored_answers(const std::string& sock) {
  auto c = xs::Client::connect(sock);
  return c && c->get_domain_path(0).ok();
}

int start(const std::string& name, const std::vector<std::string>& argv,
          const std::function<bool()>& ready, int timeout_ms) {
  const std::string log = run_dir() + "/" + name + ".log";
  const pid_t pid = spawn(argv, log);
  if (pid < 0) return fail("up", "cannot start " + argv[0] + ": " + std::strerror(-pid));
  write_pid_file(name, pid);
  if (!wait_ready(pid, timeout_ms, ready)) {
    ::unlink(pid_file(name).c_str());
    return fail("up", name + " did not come up; see " + log);
  }
  std::printf("%s started (pid %d, log %s)\n", name.c_str(), static_cast<int>(pid), log.c_str());
  return 0;
}

// A service without a readiness signal of its own is up once it stays up briefly.
std::function<bool()> stays_up(const std::string& name) {
  auto started = std::chrono::steady_clock::now();
  return [started, name] {
    return std::chrono::steady_clock::now() - started > std::chrono::milliseconds(300) &&
           running_pid(name).has_value();
  };
}

int start_blkback(const Options& o, const std::string& sock, const std::string& level) {
  if (auto pid = running_pid("blkback")) {
    std::printf("blkback already running (pid %d)\n", static_cast<int>(*pid));
    return 0;
  }
  std::vector<std::string> argv = {find_program("pvio-blkback"), "--xenstore", sock,
                                   "--log-level", level};
  if (o.has("--engine")) {
    argv.push_back("--engine");
    argv.push_back(o.get("--engine"));
  }
  if (o.has("--backend-poll-us")) {
    argv.push_back("--poll-us");
    argv.push_back(o.get("--backend-poll-us"));
  }
  return start("blkback", argv, stays_up("blkback"), 2000);
}

// pvio-netback: vifs get a TAP interface named after them unless --vif-uplink none; --uplink
// adds a shared uplink (tap:NAME, af_packet:IFACE or memif:SOCKET), repeatable.
int start_netback(const Options& o, const std::vector<std::string>& args, const std::string& sock,
                  const std::string& level) {
  if (auto pid = running_pid("netback")) {
    std::printf("netback already running (pid %d)\n", static_cast<int>(*pid));
    return 0;
  }
  std::vector<std::string> argv = {find_program("pvio-netback"), "--xenstore", sock,
                                   "--log-level", level, "--stats-file",
                                   run_dir() + "/netback.stats", "--vif-uplink",
                                   o.get("--vif-uplink", "tap")};
  // The option parser keeps one value per option; every --uplink is passed on.
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] != "--uplink") continue;
    argv.push_back("--uplink");
    argv.push_back(args[++i]);
  }
  return start("netback", argv, stays_up("netback"), 3000);
}

int run(const std::vector<std::string>& args) {
  std::string bad;
  auto o = parse_options(args, {"--engine", "--log-level", "--uplink", "--vif-uplink", "--backend-poll-us"},
                         {"--no-blkback", "--no-netback"}, &bad);
  if (!o || !o->positional.empty()) return fail("up", "bad argument " + bad);
  const std::string level = o->get("--log-level", "info");
  const std::string sock = xenstored_socket();

  if (auto pid = running_pid("xenstored"); pid && xenstored_answers(sock)) {
    std::printf("xenstored already running (pid %d)\n", static_cast<int>(*pid));
  } else if (xenstored_answers(sock)) {
    std::printf("a xenstored already answers on %s; not starting another\n", sock.c_str());
  } else if (int rc = start("xenstored",
                            {find_program("pvio-xenstored"), "--foreground", "--socket", sock,
                             "--log-level", level},
                            [&] { return xenstored_answers(sock); }, 5000);
             rc != 0) {
    return rc;
  }

  if (!o->has("--no-blkback")) {
    if (int rc = start_blkback(*o, sock, level); rc != 0) return rc;
  }
  if (!o->has("--no-netback")) {
    if (int rc = start_netback(*o, args, sock, level); rc != 0) return rc;
  }
  return 0;
}

}  // namespace

PVIO_VERB("up",
          "[--no-blkback] [--no-netback] [--engine auto|uring|aio|sync|null] [--backend-poll-us US] [--vif-uplink tap|none]\n"
          "       [--uplink tap:NAME|af_packet:IFACE|memif:SOCKET]... [--log-level LEVEL]",
          "start pvio-xenstored, pvio-blkback and pvio-netback unless they are running", run);

}  // namespace pvio::cli
