// pvio-domain: runs one user-mode guest domain (memory, shared pages, event channels) and
// serves the domain control protocol until SIGINT/SIGTERM. With --vbd it runs blkfront for
// device/vbd/DEVID and, with --fuse, exposes that PV disk as MOUNTPOINT/disk until unmounted.
// With --vif it runs netfront for device/vif/DEVID and exposes that PV NIC on the host as the
// TAP interface NAME (default pvnet<domid>.<devid>).
//
//   pvio-domain --domid N [--memory-mib M] [--grant-frames G] [--socket PATH]
//               [--vbd DEVID [--fuse MOUNTPOINT] | --vif DEVID [--tap NAME] [--vif-queues Q]]
//               [--xenstore-socket PATH]
// One PV device per process: each binding owns the guest's xenstore ring.
// The guest reaches xenstore over its ring page; --xenstore-socket uses pvio-xenstored's unix
// socket instead (Dom0 rights), for daemons that do not serve guest rings.
#include <spdlog/spdlog.h>

#include <chrono>
#include <csignal>
#include <pthread.h>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "pvio/blkfront_user/device.h"
#include "pvio/blkfront_user/fuse_disk.h"
#include "pvio/domain/domain.h"
#include "pvio/domain/xenstore_relay.h"
#include "pvio/netfront_user/tap_nic.h"

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
               "[--socket PATH]\n"
               "                   [--vbd DEVID [--fuse MOUNTPOINT] | --vif DEVID [--tap NAME] "
               "[--vif-queues Q]]\n"
               "                   [--xenstore-socket PATH]\n");
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

// The domain loop on a thread; blkfront for device/vbd/<devid> on its core thread; the FUSE
// loop (if asked) on this one until unmounted or signalled.
int run_with_vbd(pvio::domain::Domain& d, std::uint32_t devid, const std::string& mountpoint,
                 const std::string& xenstore_socket) {
  namespace bu = pvio::blkfront::user;
  // Signals go to this thread only (libfuse ends its loop from the handler it runs here):
  // the threads started below inherit a mask blocking them.
  sigset_t sigs, old;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, &old);
  int loop_rc = 0;
  std::thread loop([&] { loop_rc = d.run(); });
  int rc = 0;
  {
    std::unique_ptr<bu::XenstoreAccess> xs = xenstore_socket.empty()
                                                 ? bu::make_ring_xenstore(d)
                                                 : bu::make_socket_xenstore(xenstore_socket,
                                                                            d.domid());
    if (!xs) {
      pthread_sigmask(SIG_SETMASK, &old, nullptr);
      spdlog::error("domain {}: cannot reach xenstore at {}", d.domid(), xenstore_socket);
      d.stop();
      loop.join();
      return -EIO;
    }
    bu::DeviceConfig dc;
    dc.devid = devid;
    bu::Device dev(d, std::move(xs), dc);
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    // The toolstack may create the device a little after the domain: keep trying until
    // stopped.
    while (!g_stop_requested) {
      rc = dev.connect(5000);
      if (rc == 0) break;
      spdlog::info("domain {}: vbd {} not connected yet ({}), retrying", d.domid(), devid, rc);
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (rc == 0) {
      const pvio::blkfront::DiskInfo info = dev.disk();
      spdlog::info("domain {}: vbd {} connected, {} sectors{}", d.domid(), devid, info.sectors,
                   info.read_only() ? " (read-only)" : "");
      if (!mountpoint.empty() && !g_stop_requested) {
        bu::FuseOptions fo;
        fo.mountpoint = mountpoint;
        fo.install_signal_handlers = true;
        rc = bu::serve_fuse(dev, fo, [&] {
          spdlog::info("domain {}: vbd {} mounted at {}", d.domid(), devid, mountpoint);
        });
        if (rc != 0) spdlog::error("domain {}: FUSE at {}: {}", d.domid(), mountpoint, rc);
      } else {
        while (!g_stop_requested) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      dev.close(5000);
    }
  }
  d.stop();
  loop.join();
  return rc != 0 ? rc : loop_rc;
}

// The domain loop on a thread; netfront for device/vif/<devid> on the NIC's thread, which
// connects whenever the toolstack and the backend are ready and reconnects after a backend
// restart; this thread waits for a signal.
int run_with_vif(pvio::domain::Domain& d, const pvio::netfront::user::TapConfig& tc,
                 const std::string& xenstore_socket) {
  namespace bu = pvio::blkfront::user;
  sigset_t sigs, old;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, &old);
  int loop_rc = 0;
  std::thread loop([&] { loop_rc = d.run(); });
  int rc = 0;
  {
    std::unique_ptr<bu::XenstoreAccess> xs = xenstore_socket.empty()
                                                 ? bu::make_ring_xenstore(d)
                                                 : bu::make_socket_xenstore(xenstore_socket,
                                                                            d.domid());
    std::unique_ptr<pvio::netfront::user::TapNic> nic;
    if (!xs) {
      spdlog::error("domain {}: cannot reach xenstore at {}", d.domid(), xenstore_socket);
      rc = -EIO;
    } else {
      try {
        nic = std::make_unique<pvio::netfront::user::TapNic>(d, std::move(xs), tc);
        spdlog::info("domain {}: vif {} is TAP {}", d.domid(), tc.devid, nic->ifname());
      } catch (const std::exception& e) {
        spdlog::error("domain {}: vif {}: {}", d.domid(), tc.devid, e.what());
        rc = -EIO;
      }
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    while (rc == 0 && !g_stop_requested)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    nic.reset();  // orderly close, TAP removed
  }
  d.stop();
  loop.join();
  return rc != 0 ? rc : loop_rc;
}

}  // namespace

int main(int argc, char** argv) {
  pvio::domain::DomainConfig cfg;
  bool have_domid = false;
  std::string relay_path;  // the guest's xenstore ring as a host socket (tests, debugging)
  std::uint64_t vbd = 0, vif = ~0ull, vif_queues = 1;
  std::string tap_name;
  std::string fuse_mountpoint, xenstore_socket;
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
    } else if (a == "--vbd" && parse_u64(argv[i + 1], &vbd) && vbd > 0 && vbd <= 0xFFFFFFFFu) {
    } else if (a == "--vif" && parse_u64(argv[i + 1], &vif) && vif <= 0xFFFFu) {
    } else if (a == "--tap" && std::strlen(argv[i + 1]) > 0 && std::strlen(argv[i + 1]) < 16) {
      tap_name = argv[i + 1];
    } else if (a == "--vif-queues" && parse_u64(argv[i + 1], &vif_queues) && vif_queues > 0 &&
               vif_queues <= 16) {
    } else if (a == "--fuse") {
      fuse_mountpoint = argv[i + 1];
    } else if (a == "--xenstore-socket") {
      xenstore_socket = argv[i + 1];
    } else {
      return usage();
    }
    ++i;
  }
  // The relay owns the xenstore port handler; blkfront needs the ring for itself.
  const bool have_vif = vif != ~0ull;
  if (!have_domid || (!fuse_mountpoint.empty() && vbd == 0) ||
      ((vbd != 0 || have_vif) && !relay_path.empty()) || (vbd != 0 && have_vif) ||
      (!have_vif && (!tap_name.empty() || vif_queues != 1)))
    return usage();

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
  int rc = 0;
  if (have_vif) {
    pvio::netfront::user::TapConfig tc;
    tc.devid = static_cast<std::uint32_t>(vif);
    tc.ifname = tap_name;
    tc.limits.max_queues = static_cast<std::uint32_t>(vif_queues);
    rc = run_with_vif(*d, tc, xenstore_socket);
  } else if (vbd == 0) {
    rc = d->run();
  } else {
    rc = run_with_vbd(*d, static_cast<std::uint32_t>(vbd), fuse_mountpoint, xenstore_socket);
  }
  g_domain = nullptr;
  if (rc != 0) spdlog::error("domain {}: loop failed: {}", cfg.domid, std::strerror(-rc));
  spdlog::info("domain {}: stopped", cfg.domid);
  return rc == 0 ? 0 : 1;
}
