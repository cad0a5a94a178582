// pvio-xenstored: the xenstore daemon, for Dom0 clients on a unix socket and for guests on
// their ring pages (INTRODUCE attaches to the domain through the domain control protocol).
//   pvio-xenstored [--socket PATH] [--foreground] [--log-level trace|debug|info|warn|error]
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "pvio/control/run_dir.h"
#include "pvio/xenstore/daemon.h"
#include "pvio/xenstore/domain_connector.h"
#include "pvio/xenstore/server.h"

namespace {

std::string default_socket_path() {
  if (const char* p = std::getenv("XENSTORED_PATH"); p != nullptr && *p != '\0') return p;
  const std::string dir = pvio::control::run_dir();
  ::mkdir(dir.c_str(), 0700);
  return dir + "/xenstored.sock";
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--socket PATH] [--foreground] [--log-level LEVEL]\n"
               "  PATH defaults to $XENSTORED_PATH, else $PVIO_RUN_DIR/xenstored.sock,\n"
               "  else $XDG_RUNTIME_DIR/pvio/xenstored.sock, else /run/pvio/xenstored.sock\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path;
  bool foreground = false;
  std::string level = "info";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--socket" && i + 1 < argc) {
      socket_path = argv[++i];
    } else if (a == "--foreground" || a == "-F") {
      foreground = true;
    } else if (a == "--log-level" && i + 1 < argc) {
      level = argv[++i];
    } else {
      return usage(argv[0]);
    }
  }
  if (socket_path.empty()) socket_path = default_socket_path();
  spdlog::set_level(spdlog::level::from_str(level));

  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  sigprocmask(SIG_BLOCK, &mask, nullptr);
  signal(SIGPIPE, SIG_IGN);

  pvio::xs::Server server;
  try {
    pvio::xs::Daemon daemon(server, socket_path);
    // Domains' control sockets follow control::domain_socket_path ($PVIO_RUN_DIR, ...).
    pvio::xs::ControlDomainConnector connector(server, daemon);
    if (!foreground) {
      // The socket is listening before the parent returns, so callers may connect at once.
      pid_t pid = fork();
      if (pid < 0) {
        std::perror("fork");
        return 1;
      }
      if (pid > 0) _exit(0);
      setsid();
    }
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
    if (sfd < 0) {
      std::perror("signalfd");
      return 1;
    }
    spdlog::info("pvio-xenstored listening on {}", socket_path);
    daemon.run(sfd);
    spdlog::info("pvio-xenstored: shutting down ({} requests served)", server.stats().requests);
    close(sfd);
  } catch (const std::exception& e) {
    spdlog::error("pvio-xenstored: {}", e.what());
    return 1;
  }
  return 0;
}
