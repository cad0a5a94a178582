// pvio-netback: the Dom0 network backend service. Watches xenstore for backend/vif devices and
// serves each through the netback datapath, all of them ports of one learning switch.
//   pvio-netback [--xenstore PATH] [--uplink KIND:ARG]... [--vif-uplink tap|none]
//                [--max-queues N] [--stats-file PATH] [--memory-mb N]
//                [--log-level trace|debug|info|warn|error]
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "pvio/netback/uplink.h"
#include "pvio/netback/xenbus.h"

namespace {

pvio::netback::NetbackService* g_service = nullptr;

void on_signal(int) {
  if (g_service != nullptr) g_service->stop();
}

std::string default_xenstore_path() {
  if (const char* p = std::getenv("XENSTORED_PATH"); p != nullptr && *p != '\0') return p;
  const char* run = std::getenv("XDG_RUNTIME_DIR");
  const std::string dir = (run != nullptr && *run != '\0') ? std::string(run) + "/pvio" : "/run/pvio";
  return dir + "/xenstored.sock";
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--xenstore PATH] [--uplink KIND:ARG]... [--vif-uplink tap|none]\n"
               "          [--max-queues N] [--stats-file PATH] [--memory-mb N] [--log-level LEVEL]\n"
               "  KIND:ARG is tap:IFNAME, af_packet:IFACE or memif:SOCKET (shared by every vif);\n"
               "  --vif-uplink tap gives each vif its own TAP interface vif<domid>.<devid> unless\n"
               "  its backend's `uplink` key says otherwise.\n",
               argv0);
  return 2;
}

bool to_uint(const char* s, unsigned* out) {
  char* end = nullptr;
  const unsigned long v = std::strtoul(s, &end, 10);
  if (end == s || *end != '\0' || v > 0xFFFFFFFFul) return false;
  *out = static_cast<unsigned>(v);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  pvio::netback::ServiceOptions opts;
  std::string level = "info";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--xenstore" && has_value) {
      opts.xenstore_socket = argv[++i];
    } else if (a == "--uplink" && has_value) {
      pvio::netback::UplinkSpec spec;
      if (!pvio::netback::parse_uplink(argv[++i], &spec)) return usage(argv[0]);
      opts.uplinks.push_back(argv[i]);
    } else if (a == "--vif-uplink" && has_value) {
      opts.default_vif_uplink = argv[++i];
      if (opts.default_vif_uplink != "tap" && opts.default_vif_uplink != "none") return usage(argv[0]);
    } else if (a == "--max-queues" && has_value) {
      if (!to_uint(argv[++i], &opts.max_queues) || opts.max_queues == 0 ||
          opts.max_queues > pvio::netback::kMaxQueues)
        return usage(argv[0]);
    } else if (a == "--stats-file" && has_value) {
      opts.stats_file = argv[++i];
    } else if (a == "--memory-mb" && has_value) {
      if (!to_uint(argv[++i], &opts.dpdk.memory_mb) || opts.dpdk.memory_mb < 64) return usage(argv[0]);
    } else if (a == "--log-level" && has_value) {
      level = argv[++i];
    } else {
      return usage(argv[0]);
    }
  }
  if (opts.xenstore_socket.empty()) opts.xenstore_socket = default_xenstore_path();
  spdlog::set_level(spdlog::level::from_str(level));

  try {
    pvio::netback::NetbackService service(opts);
    g_service = &service;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
    spdlog::info("pvio-netback: serving backend/vif (xenstore {}, {} uplink(s), vif uplink {})",
                 opts.xenstore_socket, opts.uplinks.size(), opts.default_vif_uplink);
    const int rc = service.run();
    g_service = nullptr;
    return rc;
  } catch (const std::exception& e) {
    spdlog::error("pvio-netback: {}", e.what());
    return 1;
  }
}
