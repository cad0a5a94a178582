// pvio-domain: runs one user-mode guest domain (memory, shared pages, event channels) and
// serves the domain control protocol until SIGINT/SIGTERM or until the toolstack asks it to
// shut down. With --vbd it runs blkfront for device/vbd/DEVID and, with --fuse, exposes that
// PV disk as MOUNTPOINT/disk until unmounted. With --vif it runs netfront for device/vif/DEVID
// and exposes that PV NIC on the host as the TAP interface NAME (default pvnet<domid>.<devid>).
// A disk and a NIC may be served together: they share the guest's one xenstore ring.
//
//   pvio-domain --domid N [--memory-mib M] [--grant-frames G] [--socket PATH]
//               [--vbd DEVID [--fuse MOUNTPOINT]] [--vif DEVID [--tap NAME] [--vif-queues Q]]
//               [--xenstore-socket PATH | --xenstore-relay PATH]
// The guest reaches xenstore over its ring page; --xenstore-socket uses pvio-xenstored's unix
// socket instead (Dom0 rights), for daemons that do not serve guest rings. --xenstore-relay
// hands the ring to a host socket (tests, debugging) and so takes no devices.
//
// Like a Xen guest with PV drivers, it watches control/shutdown in its home: "poweroff" (or
// "halt") and "reboot" are acknowledged by clearing the node, the NIC and then the disk are
// closed in order (Closing, the backend's Closed, grants ended) and the process exits.
// Exit status, the same codes as pvio-hv's so one toolstack monitor reads both: 0 powered off
// through control/shutdown; 4 asked to reboot; 5 stopped by the host (SIGTERM/SIGINT, or its
// FUSE disk unmounted); 1 host-side error; 64 usage.
#include <spdlog/spdlog.h>

#include <chrono>
#include <csignal>
#include <pthread.h>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "pvio/blkfront_user/device.h"
#include "pvio/blkfront_user/fuse_disk.h"
#include "pvio/blkfront_user/xenstore_access.h"
#include "pvio/domain/domain.h"
#include "pvio/domain/xenstore_relay.h"
#include "pvio/event_channel/port_table.h"
#include "pvio/netfront_user/tap_nic.h"

namespace {

namespace bu = pvio::blkfront::user;

constexpr int kExitPoweroff = 0;
constexpr int kExitHostError = 1;
constexpr int kExitReboot = 4;
constexpr int kExitStopped = 5;
constexpr int kExitUsage = 64;

volatile std::sig_atomic_t g_stop_requested = 0;
// What control/shutdown asked for: 0 nothing yet, else the exit status to end with.
std::atomic<int> g_shutdown_exit{-1};

void on_signal(int) { g_stop_requested = 1; }

int usage() {
  std::fprintf(stderr,
               "usage: pvio-domain --domid N [--memory-mib M] [--grant-frames G] "
               "[--socket PATH]\n"
               "                   [--vbd DEVID [--fuse MOUNTPOINT]] [--vif DEVID [--tap NAME] "
               "[--vif-queues Q]]\n"
               "                   [--xenstore-socket PATH | --xenstore-relay PATH]\n");
  return kExitUsage;
}

bool parse_u64(const char* s, std::uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0') return false;
  *out = v;
  return true;
}

struct Devices {
  std::uint32_t vbd = 0;  // 0: none
  std::string fuse_mountpoint;
  std::optional<pvio::netfront::user::TapConfig> vif;
};

// The guest's side of control/shutdown, on its own thread. It starts talking once xenstored
// serves the ring (the xenstore port is bound), so a domain that is never introduced has no
// request stuck on its ring.
class ShutdownWatch {
 public:
  ShutdownWatch(pvio::domain::Domain& d, std::unique_ptr<bu::XenstoreAccess> xs,
                bool over_ring, pthread_t main_thread)
      : d_(d), xs_(std::move(xs)), over_ring_(over_ring), main_(main_thread),
        thread_([this] { run(); }) {}
  ~ShutdownWatch() {
    done_.store(true);
    thread_.join();
  }

 private:
  bool ring_served() const {
    pvio::evtchn::ChannelStatus st;
    return d_.status(d_.xenstore_port(), &st) == 0 &&
           st.status == pvio::evtchn::kEvtchnStatInterdomain;
  }
  bool stopping() const { return done_.load() || g_stop_requested != 0; }

  void run() {
    while (over_ring_ && !stopping() && !ring_served())
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (stopping() || xs_->watch("control/shutdown", "pvio-domain-shutdown") != 0) return;
    while (!stopping()) {
      std::string v;
      if (xs_->read("control/shutdown", &v) == 0 && !v.empty()) {
        const int code = v == "reboot" ? kExitReboot
                         : (v == "poweroff" || v == "halt") ? kExitPoweroff
                                                            : -1;
        if (code >= 0) {
          // Acknowledged by clearing the node, as Linux's and Mini-OS's drivers do.
          xs_->write("control/shutdown", "");
          spdlog::info("domain {}: control/shutdown = {}", d_.domid(), v);
          g_shutdown_exit.store(code);
          pthread_kill(main_, SIGTERM);  // ends the FUSE loop too, like a host stop
          return;
        }
        spdlog::warn("domain {}: ignoring control/shutdown = {}", d_.domid(), v);
      }
      xs_->wait(200);
      xs_->drain_events();
    }
  }

  pvio::domain::Domain& d_;
  std::unique_ptr<bu::XenstoreAccess> xs_;
  bool over_ring_;
  pthread_t main_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// netfront for the vif, its NIC thread connecting whenever the toolstack and the backend are
// ready (and again after a backend restart). 0 or -EIO.
int start_nic(pvio::domain::Domain& d, const pvio::netfront::user::TapConfig& tc,
              std::unique_ptr<bu::XenstoreAccess> xs,
              std::unique_ptr<pvio::netfront::user::TapNic>* nic) {
  if (!xs) {
    spdlog::error("domain {}: cannot reach xenstore for vif {}", d.domid(), tc.devid);
    return -EIO;
  }
  try {
    *nic = std::make_unique<pvio::netfront::user::TapNic>(d, std::move(xs), tc);
    spdlog::info("domain {}: vif {} is TAP {}", d.domid(), tc.devid, (*nic)->ifname());
    return 0;
  } catch (const std::exception& e) {
    spdlog::error("domain {}: vif {}: {}", d.domid(), tc.devid, e.what());
    return -EIO;
  }
}

// blkfront's handshake for the vbd. The toolstack may create the device a little after the
// domain (`pvio block-attach`): keep trying until stopped. True once Connected.
bool connect_disk(pvio::domain::Domain& d, bu::Device& dev, std::uint32_t devid) {
  while (!g_stop_requested) {
    const int rc = dev.connect(5000);
    if (rc == 0) {
      const pvio::blkfront::DiskInfo info = dev.disk();
      spdlog::info("domain {}: vbd {} connected, {} sectors{}", d.domid(), devid, info.sectors,
                   info.read_only() ? " (read-only)" : "");
      return true;
    }
    spdlog::info("domain {}: vbd {} not connected yet ({}), retrying", d.domid(), devid, rc);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return false;
}

// The domain loop on a thread; the devices' frontends on their own threads; this thread
// waits for a stop (or serves FUSE until one), then closes the NIC, then the disk, and only
// then stops the loop, so the closes still get their events.
int run_guest(pvio::domain::Domain& d, const Devices& devs, const std::string& xenstore_socket,
              bool watch_shutdown) {
  // Signals go to this thread only: the threads started below inherit a mask blocking them.
  sigset_t sigs, old;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sigs, s);
  pthread_sigmask(SIG_BLOCK, &sigs, &old);
  int loop_rc = 0;
  std::thread loop([&] { loop_rc = d.run(); });

  // The ring's client takes the xenstore port's handler: only when someone here uses it (a
  // domain with a relay has neither devices nor the shutdown watch; the relay owns the port).
  std::unique_ptr<bu::SharedRingXenstore> ring;
  if (xenstore_socket.empty() && (devs.vbd != 0 || devs.vif || watch_shutdown))
    ring = std::make_unique<bu::SharedRingXenstore>(d);
  auto open_xs = [&]() -> std::unique_ptr<bu::XenstoreAccess> {
    return ring ? ring->open() : bu::make_socket_xenstore(xenstore_socket, d.domid());
  };

  int rc = 0;
  {
    std::unique_ptr<pvio::netfront::user::TapNic> nic;
    std::unique_ptr<bu::Device> dev;
    std::unique_ptr<ShutdownWatch> watch;
    if (devs.vif) rc = start_nic(d, *devs.vif, open_xs(), &nic);
    if (rc == 0 && devs.vbd != 0) {
      if (auto xs = open_xs()) {
        bu::DeviceConfig dc;
        dc.devid = devs.vbd;
        dev = std::make_unique<bu::Device>(d, std::move(xs), dc);
      } else {
        spdlog::error("domain {}: cannot reach xenstore for vbd {}", d.domid(), devs.vbd);
        rc = -EIO;
      }
    }
    if (rc == 0 && watch_shutdown) {
      if (auto xs = open_xs())
        watch = std::make_unique<ShutdownWatch>(d, std::move(xs), ring != nullptr, pthread_self());
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);

    const bool connected = rc == 0 && dev && connect_disk(d, *dev, devs.vbd);
    if (rc == 0 && connected && !devs.fuse_mountpoint.empty() && !g_stop_requested) {
      bu::FuseOptions fo;
      fo.mountpoint = devs.fuse_mountpoint;
      fo.install_signal_handlers = true;
      rc = bu::serve_fuse(*dev, fo, [&] {
        spdlog::info("domain {}: vbd {} mounted at {}", d.domid(), devs.vbd, devs.fuse_mountpoint);
      });
      if (rc != 0) spdlog::error("domain {}: FUSE at {}: {}", d.domid(), devs.fuse_mountpoint, rc);
    } else {
      while (rc == 0 && !g_stop_requested)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    watch.reset();
    nic.reset();  // orderly close, TAP removed
    if (dev && connected) dev->close(5000);
    // A request still waiting for a xenstored that went away must not keep the process.
    if (ring) ring->abandon();
    dev.reset();
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
  // The relay owns the xenstore port handler: a domain with a relay has no devices and does
  // not watch control/shutdown itself.
  const bool have_vif = vif != ~0ull;
  if (!have_domid || (!fuse_mountpoint.empty() && vbd == 0) ||
      ((vbd != 0 || have_vif) && !relay_path.empty()) ||
      (!relay_path.empty() && !xenstore_socket.empty()) ||
      (!have_vif && (!tap_name.empty() || vif_queues != 1)))
    return usage();

  // Handlers first: the socket is live as soon as the domain exists.
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);

  std::unique_ptr<pvio::domain::Domain> d;
  if (int rc = pvio::domain::Domain::create(cfg, &d); rc != 0) {
    spdlog::error("domain {}: cannot create: {}", cfg.domid, std::strerror(-rc));
    return kExitHostError;
  }
  std::unique_ptr<pvio::domain::XenstoreRelay> relay;
  if (!relay_path.empty()) {
    if (int rc = pvio::domain::XenstoreRelay::start(*d, relay_path, &relay); rc != 0) {
      spdlog::error("domain {}: xenstore relay {}: {}", cfg.domid, relay_path, std::strerror(-rc));
      return kExitHostError;
    }
  }

  spdlog::info("domain {}: {} MiB, socket {}, shared_info gfn {}, xenstore gfn {} port {}, "
               "{} grant frames from gfn {}",
               d->domid(), d->memory_bytes() >> 20, d->socket_path(),
               pvio::domain::kSharedInfoGfn, d->xenstore_gfn(), d->xenstore_port(),
               d->grant_frame_gfns().size(), pvio::domain::kFirstGrantFrameGfn);
  Devices devs;
  devs.vbd = static_cast<std::uint32_t>(vbd);
  devs.fuse_mountpoint = fuse_mountpoint;
  if (have_vif) {
    pvio::netfront::user::TapConfig tc;
    tc.devid = static_cast<std::uint32_t>(vif);
    tc.ifname = tap_name;
    tc.limits.max_queues = static_cast<std::uint32_t>(vif_queues);
    devs.vif = tc;
  }
  const int rc = run_guest(*d, devs, xenstore_socket, relay_path.empty());
  relay.reset();
  if (rc != 0) {
    spdlog::error("domain {}: loop failed: {}", cfg.domid, std::strerror(-rc));
    return kExitHostError;
  }
  const int shutdown = g_shutdown_exit.load();
  spdlog::info("domain {}: stopped ({})", cfg.domid,
               shutdown == kExitReboot     ? "reboot"
               : shutdown == kExitPoweroff ? "poweroff"
                                           : "stopped by the host");
  return shutdown >= 0 ? shutdown : kExitStopped;
}
