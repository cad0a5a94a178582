// pvio up: start pvio-xenstored and pvio-blkback in the background (pid files and logs in the
// run dir). Idempotent: what is already running is left alone.
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

int run(const std::vector<std::string>& args) {
  std::string bad;
  auto o = parse_options(args, {"--engine", "--log-level"}, {"--no-blkback"}, &bad);
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

  if (o->has("--no-blkback")) return 0;
  if (auto pid = running_pid("blkback")) {
    std::printf("blkback already running (pid %d)\n", static_cast<int>(*pid));
    return 0;
  }
  std::vector<std::string> argv = {find_program("pvio-blkback"), "--xenstore", sock,
                                   "--log-level", level};
  if (o->has("--engine")) {
    argv.push_back("--engine");
    argv.push_back(o->get("--engine"));
  }
  // blkback has no readiness signal of its own; it is up once it stays up briefly.
  auto started = std::chrono::steady_clock::now();
  return start("blkback", argv, [&] {
    return std::chrono::steady_clock::now() - started > std::chrono::milliseconds(200) &&
           running_pid("blkback").has_value();
  }, 2000);
}

}  // namespace

PVIO_VERB("up", "[--no-blkback] [--engine uring|aio|null] [--log-level LEVEL]",
          "start pvio-xenstored and pvio-blkback unless they are running", run);

}  // namespace pvio::cli
