// pvio-xenstored: the xenstore daemon, for Dom0 clients on a unix socket and for guests on
// their ring pages (INTRODUCE attaches to the domain through the domain control protocol).
// The store is persisted in a state directory (journal + snapshot, see docs/xenstore.md), so
// a restarted daemon comes back with the same tree and reattaches to every live domain.
//   pvio-xenstored [--socket PATH] [--foreground] [--log-level trace|debug|info|warn|error]
//                  [--state-dir DIR | --no-persist] [--fsync never|always]
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
#include "pvio/xenstore/journal.h"
#include "pvio/xenstore/server.h"

namespace {

std::string default_socket_path() {
  ::mkdir(pvio::control::run_dir().c_str(), 0700);  // the default path's directory
  return pvio::control::xenstored_socket_path();
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--socket PATH] [--foreground] [--log-level LEVEL]\n"
               "          [--state-dir DIR | --no-persist] [--fsync never|always]\n"
               "  PATH defaults to $XENSTORED_PATH, else $PVIO_RUN_DIR/xenstored.sock,\n"
               "  else $XDG_RUNTIME_DIR/pvio/xenstored.sock, else /run/pvio/xenstored.sock\n"
               "  DIR (journal and snapshot) defaults to PATH's directory\n",
               argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string socket_path;
  bool foreground = false;
  std::string level = "info";
  std::string state_dir;
  bool persist = true;
  auto sync = pvio::xs::Journal::Sync::None;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--socket" && i + 1 < argc) {
      socket_path = argv[++i];
    } else if (a == "--foreground" || a == "-F") {
      foreground = true;
    } else if (a == "--log-level" && i + 1 < argc) {
      level = argv[++i];
    } else if (a == "--state-dir" && i + 1 < argc) {
      state_dir = argv[++i];
    } else if (a == "--no-persist") {
      persist = false;
    } else if (a == "--fsync" && i + 1 < argc) {
      std::string v = argv[++i];
      if (v != "never" && v != "always") return usage(argv[0]);
      sync = v == "always" ? pvio::xs::Journal::Sync::Always : pvio::xs::Journal::Sync::None;
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

  if (state_dir.empty()) {
    // Beside the socket: `pvio up` puts both in the run dir, and a daemon started on a
    // private socket (a test, a second instance) never shares another's state.
    const auto slash = socket_path.rfind('/');
    state_dir = slash == std::string::npos ? "." : slash == 0 ? "/" : socket_path.substr(0, slash);
  }
  pvio::xs::Server server;
  std::unique_ptr<pvio::xs::Journal> journal;
  pvio::xs::PersistedState saved;
  if (persist) {
    journal = pvio::xs::Journal::open(state_dir, sync, saved);
    if (!journal) {
      spdlog::error("pvio-xenstored: cannot use state dir {}: {}", state_dir,
                    errno == EWOULDBLOCK ? "another pvio-xenstored holds it" : std::strerror(errno));
      return 1;
    }
  }
  try {
    pvio::xs::Daemon daemon(server, socket_path);
    // Domains' control sockets follow control::domain_socket_path ($PVIO_RUN_DIR, ...).
    pvio::xs::ControlDomainConnector connector(server, daemon);
    if (journal) {
      server.set_journal(journal.get());
      // Reattach before the first client is served: the domains' rings, watches and the
      // tree are all back by the time the socket answers.
      const std::size_t n = server.restore(std::move(saved));
      spdlog::info("pvio-xenstored: state from {}: {} nodes, {} domains reattached", state_dir,
                   server.store().node_count(), n);
      server.snapshot();  // what was recovered becomes the new base; the journal starts empty
    }
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
    if (journal) {
      // The domains stay introduced across a restart: snapshot them, then stop journaling
      // before the connector lets go of their rings.
      server.snapshot();
      server.set_journal(nullptr);
    }
    spdlog::info("pvio-xenstored: shutting down ({} requests served)", server.stats().requests);
    close(sfd);
  } catch (const std::exception& e) {
    spdlog::error("pvio-xenstored: {}", e.what());
    return 1;
  }
  return 0;
}
