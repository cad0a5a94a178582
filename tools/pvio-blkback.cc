// pvio-blkback: the Dom0 block backend service. Watches xenstore for backend/vbd devices and
// serves each through the blkback datapath.
//   pvio-blkback [--xenstore PATH] [--engine auto|uring|aio|sync|null] [--threads N] [--max-queues N]
//                [--max-ring-page-order N] [--max-indirect-segments N] [--no-persistent]
//                [--log-level trace|debug|info|warn|error]
#include <signal.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>

#include "pvio/control/run_dir.h"
#include "pvio/blkback/xenbus.h"

namespace {

pvio::blkback::BlkbackService* g_service = nullptr;

void on_signal(int) {
  if (g_service != nullptr) g_service->stop();
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--xenstore PATH] [--engine auto|uring|aio|sync|null] [--threads N]\n"
               "          [--max-queues N] [--max-ring-page-order N] [--max-indirect-segments N]\n"
               "          [--no-persistent] [--poll-us US] [--log-level LEVEL]\n"
               "  --threads: worker threads per vbd (default: one per queue the frontend opens, at most\n"
               "  one per host CPU).\n"
               "  --poll-us: after work a worker keeps polling its rings up to this long before it\n"
               "  sleeps, the budget adapting to how soon work comes back (default 50 where the\n"
               "  host has more than one CPU, else 0; a vbd's poll-us node overrides it).\n"
               "  PATH defaults to $XENSTORED_PATH, else $PVIO_RUN_DIR/xenstored.sock;\n"
               "  domain sockets are found as the domains publish them ($PVIO_RUN_DIR).\n",
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
  pvio::blkback::ServiceOptions opts;
  // Polling pays where a core is spare for it (measured in docs/bench.md: on two cores it took
  // 4 KiB QD1 on tmpfs from 81 K to 310 K IOPS); the adaptive budget stops it when idle.
  opts.poll_us = std::thread::hardware_concurrency() > 1 ? 50 : 0;
  std::string level = "info";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--xenstore" && has_value) {
      opts.xenstore_socket = argv[++i];
    } else if (a == "--engine" && has_value) {
      opts.engine = argv[++i];
    } else if (a == "--threads" && has_value) {
      if (!to_uint(argv[++i], &opts.threads) || opts.threads == 0) return usage(argv[0]);
    } else if (a == "--max-queues" && has_value) {
      if (!to_uint(argv[++i], &opts.max_queues) || opts.max_queues == 0) return usage(argv[0]);
    } else if (a == "--max-ring-page-order" && has_value) {
      if (!to_uint(argv[++i], &opts.max_ring_page_order) || opts.max_ring_page_order > 4)
        return usage(argv[0]);
    } else if (a == "--max-indirect-segments" && has_value) {
      if (!to_uint(argv[++i], &opts.max_indirect_segments) || opts.max_indirect_segments > 256)
        return usage(argv[0]);
    } else if (a == "--poll-us" && has_value) {
      if (!to_uint(argv[++i], &opts.poll_us) || opts.poll_us > 100'000) return usage(argv[0]);
    } else if (a == "--no-persistent") {
      opts.persistent = false;
    } else if (a == "--log-level" && has_value) {
      level = argv[++i];
    } else {
      return usage(argv[0]);
    }
  }
  if (opts.engine != "auto" && opts.engine != "uring" && opts.engine != "aio" && opts.engine != "sync" &&
      opts.engine != "null")
    return usage(argv[0]);
  if (opts.xenstore_socket.empty()) opts.xenstore_socket = pvio::control::xenstored_socket_path();
  spdlog::set_level(spdlog::level::from_str(level));

  try {
    pvio::blkback::BlkbackService service(opts);
    g_service = &service;
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, nullptr);
    sigaction(SIGINT, &sa, nullptr);
    signal(SIGPIPE, SIG_IGN);
    spdlog::info("pvio-blkback: serving backend/vbd (xenstore {}, engine {}, {} thread(s) per vbd)",
                 opts.xenstore_socket, opts.engine,
                 opts.threads == 0 ? std::string("one per queue") : std::to_string(opts.threads));
    const int rc = service.run();
    g_service = nullptr;
    return rc;
  } catch (const std::exception& e) {
    spdlog::error("pvio-blkback: {}", e.what());
    return 1;
  }
}
