// pvio-domain: runs one user-mode guest domain (memory, shared pages, event channels) and
// serves the domain control protocol until SIGINT/SIGTERM.
//
//   pvio-domain --domid N [--memory-mib M] [--grant-frames G] [--socket PATH]
#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>

#include "pvio/domain/domain.h"
#include "pvio/domain/xenstore_relay.h"

namespace {

pvio::domain::Domain* volatile g_domain = nullptr;
volatile std::sig_atomic_t g_stop_requested = 0;

void on_signal(int) {
  g_stop_requested = 1;
  if (g_domain != nullptr) g_domain->stop();
}

int usage() {
  std::fprintf(stderr,
               "usage: pvio-domain --domid N [--memory-mib M] [--grant-frames G] "
               "[--socket PATH]\n");
  return 2;
}

bool parse_u64(const char* s, std::uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0') return false;
  *out = v;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  pvio::domain::DomainConfig cfg;
  bool have_domid = false;
  std::string relay_path;  // the guest's xenstore ring as a host socket (tests, debugging)
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    std::uint64_t v = 0;
    if (a == "--domid" && parse_u64(argv[i + 1], &v) && v > 0 && v < 0x7FF0) {
      cfg.domid = static_cast<pvio::domid_t>(v);
      have_domid = true;
    } else if (a == "--memory-mib" && parse_u64(argv[i + 1], &v) && v > 0 && v <= (1u << 20)) {
      cfg.memory_bytes = v << 20;
    } else if (a == "--grant-frames" && parse_u64(argv[i + 1], &v) && v > 0 && v <= 32) {
      cfg.nr_grant_frames = static_cast<std::uint32_t>(v);
    } else if (a == "--socket") {
      cfg.socket_path = argv[i + 1];
    } else if (a == "--xenstore-relay") {
      relay_path = argv[i + 1];
    } else {
      return usage();
    }
    ++i;
  }
  if (!have_domid) return usage();

  // Handlers first: the socket is live as soon as the domain exists.
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  std::unique_ptr<pvio::domain::Domain> d;
  if (int rc = pvio::domain::Domain::create(cfg, &d); rc != 0) {
    spdlog::error("domain {}: cannot create: {}", cfg.domid, std::strerror(-rc));
    return 1;
  }
  g_domain = d.get();
  std::unique_ptr<pvio::domain::XenstoreRelay> relay;
  if (!relay_path.empty()) {
    if (int rc = pvio::domain::XenstoreRelay::start(*d, relay_path, &relay); rc != 0) {
      spdlog::error("domain {}: xenstore relay {}: {}", cfg.domid, relay_path, std::strerror(-rc));
      return 1;
    }
  }
  if (g_stop_requested) d->stop();

  spdlog::info("domain {}: {} MiB, socket {}, shared_info gfn {}, xenstore gfn {} port {}, "
               "{} grant frames from gfn {}",
               d->domid(), d->memory_bytes() >> 20, d->socket_path(),
               pvio::domain::kSharedInfoGfn, d->xenstore_gfn(), d->xenstore_port(),
               d->grant_frame_gfns().size(), pvio::domain::kFirstGrantFrameGfn);
  const int rc = d->run();
  g_domain = nullptr;
  if (rc != 0) spdlog::error("domain {}: loop failed: {}", cfg.domid, std::strerror(-rc));
  spdlog::info("domain {}: stopped", cfg.domid);
  return rc == 0 ? 0 : 1;
}
