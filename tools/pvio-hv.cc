// pvio-hv: one VMM process per HVM domain. Boots a guest kernel ELF on KVM with a serial
// console, the Xen platform PCI device, an emulated PIIX IDE disk backed by a file and Xen's
// HVM interface for PV drivers; with --domid (or --control-socket) it serves the domain
// control protocol so Dom0 services (xenstored, blkback) can attach to the domain.
//
// Exit status: 0 guest powered off with code 0; 2 guest powered off with a non-zero code
// (guest-reported failure); 3 domain crashed; 4 guest asked for a reboot (left to the
// toolstack); 5 destroyed by the toolstack (SIGTERM/SIGINT); 1 host-side error (KVM, files,
// kernel image); 64 usage error. SIGUSR2 prints the counters (PVIO-HV-STATS) while running.
#include <fcntl.h>
#include <sys/stat.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <atomic>
#include <exception>
#include <functional>
#include <thread>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "pvio/control/run_dir.h"
#include "pvio/hypervisor/devices/debug_exit.h"
#include "pvio/hypervisor/devices/e1000.h"
#include "pvio/hypervisor/devices/e1000_uplink.h"
#include "pvio/hypervisor/devices/ide.h"
#include "pvio/hypervisor/devices/serial.h"
#include "pvio/hypervisor/devices/xen_console.h"
#include "pvio/hypervisor/devices/xen_platform.h"
#include "pvio/hv_abi/boot_info.h"
#include "pvio/hypervisor/vm.h"

namespace {

using namespace pvio::hv;

constexpr int kExitOk = 0, kExitHostError = 1, kExitGuestFailure = 2, kExitCrashed = 3,
              kExitReboot = 4, kExitDestroyed = 5, kExitUsage = 64;

// The toolstack's signals, taken by one thread with sigwait: SIGTERM/SIGINT destroy the domain
// (as `xl destroy`: the vCPUs stop, the Dom0 services see the control connection close, the
// counters are printed), SIGUSR2 prints the counters now. Blocked in every thread.
class ToolstackSignals {
 public:
  ToolstackSignals() {
    sigemptyset(&set_);
    for (int sig : {SIGTERM, SIGINT, SIGUSR2}) sigaddset(&set_, sig);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
  }
  // `destroy` and `report` run on the signal thread.
  void start(std::function<void()> destroy, std::function<void()> report) {
    thread_ = std::thread([this, destroy = std::move(destroy), report = std::move(report)] {
      for (;;) {
        int sig = 0;
        if (sigwait(&set_, &sig) != 0 || done_) return;
        if (sig == SIGUSR2) {
          report();
        } else {
          destroyed_ = true;
          destroy();
        }
      }
    });
  }
  void stop() {
    if (!thread_.joinable()) return;
    done_ = true;
    pthread_kill(thread_.native_handle(), SIGUSR2);
    thread_.join();
  }
  ~ToolstackSignals() { stop(); }
  bool destroyed() const { return destroyed_; }

 private:
  sigset_t set_;
  std::thread thread_;
  std::atomic<bool> done_{false}, destroyed_{false};
};

void usage() {
  std::fprintf(stderr,
               "usage: pvio-hv --kernel guest.elf [--mem 256M] [--vcpus N] [--cmdline \"...\"]\n"
               "               [--disk ide=FILE] [--nic e1000[,ifname=IF][,mac=MAC]]\n"
               "               [--serial-log FILE] [--console]\n"
               "               [--domid N] [--control-socket PATH]\n"
               "               [--console-socket PATH] [--console-log FILE]\n"
               "               [--pv-driver-blacklist PRODUCT[/BUILD]]...\n"
               "  --domid serves the domain control protocol on the pvio-domain socket path\n"
               "  ($PVIO_RUN_DIR/domain-N.sock, else $XDG_RUNTIME_DIR/pvio/..., else /run/pvio/...);\n"
               "  --control-socket picks the path. The PV console ring (HVM_PARAM_CONSOLE_PFN)\n"
               "  goes to --console-log and to a client on --console-socket (`pvio console`).\n"
               "  Without --serial-log the guest console goes to standard output; --console\n"
               "  also copies it there when a log file is given. Exit counters are printed\n"
               "  to standard error as one 'PVIO-HV-STATS {json}' line.\n"
               "  --nic e1000 adds an emulated Intel 82540EM (PCI slot 4, INTx on GSI 16) whose\n"
               "  frames go out on host interface IF through a packet socket (normally the TAP\n"
               "  that pvio-netback serves with --uplink tap:IF); without ifname it has no wire.\n"
               "  --pv-driver-blacklist refuses PV drivers of a product (pvdrivers.h name) and\n"
               "  build in Xen's unplug protocol: they read the blacklisted magic and their unplug\n"
               "  request is ignored, so the guest keeps its emulated devices.\n");
}

void print_nic_stats(const E1000& nic, const E1000Uplink& uplink) {
  const E1000Stats& s = nic.stats();
  std::string errors;
  for (std::size_t i = 0; i < s.errors.size(); ++i) {
    if (s.errors[i] == 0) continue;
    errors += (errors.empty() ? "\"" : ",\"") +
              std::string(to_string(static_cast<E1000Error>(i))) + "\":" + std::to_string(s.errors[i]);
  }
  std::fprintf(stderr,
               "PVIO-HV-E1000 {\"tx_packets\":%" PRIu64 ",\"tx_bytes\":%" PRIu64
               ",\"rx_packets\":%" PRIu64 ",\"rx_bytes\":%" PRIu64 ",\"rx_no_buffer\":%" PRIu64
               ",\"rx_filtered\":%" PRIu64 ",\"interrupts\":%" PRIu64 ",\"uplink_tx_dropped\":%" PRIu64
               ",\"mmio_exits\":%" PRIu64 ",\"pio_exits\":%" PRIu64 ",\"errors\":{%s}}\n",
               s.tx_packets, s.tx_bytes, s.rx_packets, s.rx_bytes, s.rx_no_buffer, s.rx_filtered,
               s.interrupts, uplink.tx_dropped(), nic.counters().mmio_exits,
               nic.counters().pio_exits, errors.c_str());
}

// "e1000[,ifname=IF][,mac=aa:bb:cc:dd:ee:ff]"
bool parse_nic(const std::string& v, std::string* ifname, E1000::Mac* mac) {
  std::size_t at = 0;
  bool first = true;
  while (at <= v.size()) {
    const std::size_t comma = std::min(v.find(',', at), v.size());
    const std::string item = v.substr(at, comma - at);
    at = comma + 1;
    if (first) {
      if (item != "e1000") return false;
      first = false;
    } else if (item.rfind("ifname=", 0) == 0 && item.size() > 7) {
      *ifname = item.substr(7);
    } else if (item.rfind("mac=", 0) == 0) {
      unsigned b[6];
      if (std::sscanf(item.c_str() + 4, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4],
                      &b[5]) != 6)
        return false;
      for (int i = 0; i < 6; ++i) (*mac)[i] = static_cast<std::uint8_t>(b[i]);
      if ((*mac)[0] & 1) return false;  // a multicast address cannot be a NIC's
    } else {
      return false;
    }
  }
  return !first;
}

std::uint64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::uint64_t(ts.tv_sec) * 1000000000u + std::uint64_t(ts.tv_nsec);
}

// "PRODUCT[/BUILD]": Xen's /mh/driver-blacklist/<product>/<build> as a command-line option.
bool parse_blacklist(const std::string& v, std::vector<PvDriverBlacklistEntry>* out) {
  PvDriverBlacklistEntry e;
  const std::size_t slash = v.find('/');
  e.product = v.substr(0, slash);
  if (e.product.empty()) return false;
  if (slash != std::string::npos) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long b = std::strtoull(v.c_str() + slash + 1, &end, 10);
    if (errno != 0 || end == v.c_str() + slash + 1 || *end != 0 || b > 0xffffffffull) return false;
    e.build = static_cast<std::uint32_t>(b);
  }
  out->push_back(std::move(e));
  return true;
}

bool parse_size(const std::string& s, std::uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str()) return false;
  std::uint64_t mult = 1;
  const std::string suffix(end);
  if (suffix == "" || suffix == "B") mult = 1;
  else if (suffix == "K" || suffix == "k") mult = 1ull << 10;
  else if (suffix == "M" || suffix == "m") mult = 1ull << 20;
  else if (suffix == "G" || suffix == "g") mult = 1ull << 30;
  else return false;
  if (v > ~0ull / mult) return false;
  *out = v * mult;
  return true;
}

bool read_file(const std::string& path, std::vector<std::uint8_t>* out) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  std::uint8_t buf[65536];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out->insert(out->end(), buf, buf + n);
  const bool ok = !std::ferror(f);
  std::fclose(f);
  return ok;
}

void print_stats(const IoBus& bus, const XenStats& x, const KvmFeatures& f,
                 const std::map<std::string, std::uint64_t>& ops, const XenPlatformStats& p) {
  std::string json = "{\"devices\":{";
  bool first = true;
  for (const Device* d : bus.devices()) {
    const ExitCounters& c = d->counters();
    char buf[256];
    std::snprintf(buf, sizeof(buf),
                  "%s\"%s\":{\"pio_exits\":%" PRIu64 ",\"mmio_exits\":%" PRIu64
                  ",\"invalid_requests\":%" PRIu64 "}",
                  first ? "" : ",", d->name().c_str(), c.pio_exits, c.mmio_exits,
                  c.invalid_requests);
    json += buf;
    first = false;
  }
  char buf[256];
  std::snprintf(buf, sizeof(buf),
                "},\"unassigned\":{\"pio_exits\":%" PRIu64 ",\"mmio_exits\":%" PRIu64
                "},\"total_exits\":%" PRIu64,
                bus.unassigned().pio_exits, bus.unassigned().mmio_exits,
                bus.total_exits() + x.hypercalls + x.doorbell_exits + x.msr_writes);
  json += buf;
  char xen[512];
  std::snprintf(xen, sizeof(xen),
                ",\"xen\":{\"hypercalls\":%" PRIu64 ",\"hypercall_errors\":%" PRIu64
                ",\"unknown_hypercalls\":%" PRIu64 ",\"faults\":%" PRIu64
                ",\"doorbell_exits\":%" PRIu64 ",\"msr_writes\":%" PRIu64
                ",\"upcalls_raised\":%" PRIu64 ",\"upcall_resamples\":%" PRIu64
                ",\"upcall_reasserts\":%" PRIu64 ",\"released_grants\":%" PRIu64 ",\"ops\":{",
                x.hypercalls, x.hypercall_errors, x.unknown_hypercalls, x.faults, x.doorbell_exits,
                x.msr_writes, x.upcalls_raised, x.upcall_resamples, x.upcall_reasserts,
                x.released_grants);
  json += xen;
  // Hypercalls per op and sub-op (hvm_op params by name), e.g. "memory_op.add_to_physmap".
  bool first_op = true;
  for (const auto& [name, count] : ops) {
    json += (first_op ? "\"" : ",\"") + name + "\":" + std::to_string(count);
    first_op = false;
  }
  json += "}}";
  std::snprintf(xen, sizeof(xen),
                ",\"kvm\":{\"ioeventfd\":%d,\"irqfd\":%d,\"irq_routing\":%d,"
                "\"gsi_routing_msi\":%d,\"ioapic_route\":%d,\"user_space_msr\":%d,"
                "\"msr_filter\":%d,\"set_cpuid\":%d,\"translate\":%d}}",
                f.ioeventfd, f.irqfd, f.irq_routing, f.gsi_routing_msi, f.ioapic_route,
                f.user_space_msr, f.msr_filter, f.set_cpuid, f.translate);
  json += xen;
  json.pop_back();  // the closing brace: the platform device's unplug protocol follows
  std::snprintf(xen, sizeof(xen),
                ",\"xen_platform\":{\"unplug_requests\":%" PRIu64 ",\"unplug_refused\":%" PRIu64
                ",\"ide_unplugs\":%" PRIu64 ",\"ide_flush_failures\":%" PRIu64
                ",\"nic_unplugs\":%" PRIu64 ",\"protocol_errors\":%" PRIu64
                ",\"log_lines\":%" PRIu64 ",\"log_dropped\":%" PRIu64
                ",\"product\":%u,\"build\":%u,\"blacklisted\":%d}}",
                p.unplug_requests, p.unplug_refused, p.ide_unplugs, p.ide_flush_failures,
                p.nic_unplugs, p.protocol_errors, p.log_lines, p.log_dropped, p.product, p.build,
                p.blacklisted ? 1 : 0);
  json += xen;
  std::fprintf(stderr, "PVIO-HV-STATS %s\n", json.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string kernel_path, disk_path, log_path, control_path, console_socket, console_log;
  bool serve = false;
  VmConfig config;
  bool console = false;
  bool want_nic = false;
  std::string nic_ifname;
  E1000::Config nic_config;
  std::vector<PvDriverBlacklistEntry> pv_blacklist;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    std::string v;
    if (arg == "--kernel" && value(&kernel_path)) continue;
    if (arg == "--cmdline" && value(&config.cmdline)) continue;
    if (arg == "--serial-log" && value(&log_path)) continue;
    if (arg == "--console") { console = true; continue; }
    if (arg == "--control-socket" && value(&control_path)) { serve = true; continue; }
    if (arg == "--console-socket" && value(&console_socket)) continue;
    if (arg == "--console-log" && value(&console_log)) continue;
    if (arg == "--domid" && value(&v)) {
      const long d = std::atol(v.c_str());
      if (d <= 0 || d >= 0x7FF0) {
        std::fprintf(stderr, "pvio-hv: --domid must be 1..32751\n");
        return kExitUsage;
      }
      config.domid = static_cast<pvio::domid_t>(d);
      serve = true;
      continue;
    }
    if (arg == "--mem" && value(&v) && parse_size(v, &config.mem_bytes)) continue;
    if (arg == "--vcpus" && value(&v)) { config.vcpus = static_cast<unsigned>(std::atoi(v.c_str())); continue; }
    if (arg == "--disk" && value(&v) && v.rfind("ide=", 0) == 0) { disk_path = v.substr(4); continue; }
    if (arg == "--nic" && value(&v) && parse_nic(v, &nic_ifname, &nic_config.mac)) {
      want_nic = true;
      continue;
    }
    if (arg == "--pv-driver-blacklist" && value(&v) && parse_blacklist(v, &pv_blacklist)) continue;
    if (arg == "-h" || arg == "--help") { usage(); return kExitOk; }
    std::fprintf(stderr, "pvio-hv: bad argument '%s'\n", arg.c_str());
    usage();
    return kExitUsage;
  }
  if (kernel_path.empty()) {
    usage();
    return kExitUsage;
  }

  std::string why;
  if (!Vm::kvm_available(&why)) {
    std::fprintf(stderr, "pvio-hv: %s\n", why.c_str());
    return kExitHostError;
  }
  std::vector<std::uint8_t> elf;
  if (!read_file(kernel_path, &elf)) {
    std::fprintf(stderr, "pvio-hv: cannot read kernel %s: %s\n", kernel_path.c_str(), std::strerror(errno));
    return kExitHostError;
  }
  int log_fd = -1, disk_fd = -1;
  if (!log_path.empty()) {
    log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      std::fprintf(stderr, "pvio-hv: cannot open %s: %s\n", log_path.c_str(), std::strerror(errno));
      return kExitHostError;
    }
  }
  const int console_fd = (log_fd < 0 || console) ? STDOUT_FILENO : -1;
  std::uint64_t disk_bytes = 0;
  if (!disk_path.empty()) {
    disk_fd = ::open(disk_path.c_str(), O_RDWR | O_CLOEXEC);
    struct stat st{};
    if (disk_fd < 0 || ::fstat(disk_fd, &st) < 0) {
      std::fprintf(stderr, "pvio-hv: cannot open disk %s: %s\n", disk_path.c_str(), std::strerror(errno));
      return kExitHostError;
    }
    disk_bytes = static_cast<std::uint64_t>(st.st_size);
  }

  int console_log_fd = -1;
  if (!console_log.empty()) {
    console_log_fd = ::open(console_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (console_log_fd < 0) {
      std::fprintf(stderr, "pvio-hv: cannot open %s: %s\n", console_log.c_str(), std::strerror(errno));
      return kExitHostError;
    }
  }

  E1000Uplink uplink;
  if (want_nic && !nic_ifname.empty()) {
    std::string why_not;
    if (uplink.open(nic_ifname, &why_not) != 0) {
      std::fprintf(stderr, "pvio-hv: --nic: %s\n", why_not.c_str());
      return kExitHostError;
    }
  }

  DomainResult result;
  Serial16550* serial = nullptr;
  ToolstackSignals signals;
  try {
    Vm vm(config);
    serial = vm.add_device(std::make_unique<Serial16550>(log_fd, console_fd));
    vm.bus().map_pio(kCom1Port, 8, serial, 0);
    auto* debug_exit = vm.add_device(std::make_unique<DebugExit>(vm.shutdown_fn()));
    vm.bus().map_pio(kDebugExitPort, 1, debug_exit, 0);
    auto* pci = vm.add_device(std::make_unique<PciBus>());
    vm.bus().map_pio(kPciConfigAddressPort, 8, pci, 0);
    pci->add(0, 0, make_host_bridge(), &vm.bus());
    pci->add(1, 0, make_isa_bridge(), &vm.bus());
    PiixIde* ide_disk = nullptr;
    if (disk_fd >= 0) {
      auto ide = std::make_unique<PiixIde>(vm.memory(), disk_fd, disk_bytes, vm.irq_fn());
      ide->attach_legacy(&vm.bus());
      ide_disk = ide.get();
      pci->add(1, 1, std::move(ide), &vm.bus());
    }
    // The unplug protocol's log: the drivers' lines and what the device did, per domain.
    const unsigned domid = config.domid;
    auto platform = std::make_unique<XenPlatform>(
        XenPlatform::Targets{ide_disk, pci, [&uplink] { uplink.detach(); }},
        [domid](std::string_view line) {
          std::fprintf(stderr, "pvio-hv: domain %u: xen-platform: %.*s\n", domid,
                       static_cast<int>(line.size()), line.data());
        },
        monotonic_ns, pv_blacklist);
    platform->attach_fixed_ports(&vm.bus());
    XenPlatform* xen_platform = platform.get();
    pci->add(kXenPlatformSlot, 0, std::move(platform), &vm.bus());
    E1000* nic = nullptr;
    if (want_nic) {
      auto e1000 = std::make_unique<E1000>(
          vm.memory(), nic_config, vm.irq_fn(),
          [&uplink](std::span<const std::uint8_t> f) { uplink.send(f); },
monotonic_ns);
      nic = e1000.get();
      pci->add(4, 0, std::move(e1000), &vm.bus());
    }
    vm.set_console([serial](const char* p, std::size_t n) { serial->write_console(p, n); });
    if (serve) {
      if (control_path.empty()) control_path = pvio::control::domain_socket_path(config.domid);
      if (const auto slash = control_path.rfind('/'); slash != std::string::npos && slash > 0)
        ::mkdir(control_path.substr(0, slash).c_str(), 0700);
      if (const int rc = vm.xen().serve(control_path); rc != 0) {
        std::fprintf(stderr, "pvio-hv: cannot serve the control protocol on %s: %s\n",
                     control_path.c_str(), std::strerror(-rc));
        return kExitHostError;
      }
      std::fprintf(stderr, "pvio-hv: domain %u control socket %s\n", config.domid,
                   control_path.c_str());
    }

    // The PV console backend on the console ring (xenconsoled's job for this domain).
    XenConsole pv_console(reinterpret_cast<pvio::xen::xencons_interface*>(vm.xen().console_page()),
                          [&vm] { vm.xen().notify_console_guest(); }, console_log_fd);
    if (const int rc = pv_console.start(console_socket); rc != 0) {
      std::fprintf(stderr, "pvio-hv: cannot serve the console on %s: %s\n", console_socket.c_str(),
                   std::strerror(-rc));
      return kExitHostError;
    }
    vm.xen().set_console_kick([&pv_console] { pv_console.kick(); });

    const ElfStatus st = vm.load_kernel(elf);
    if (st != ElfStatus::kOk) {
      std::fprintf(stderr, "pvio-hv: cannot load %s: %s\n", kernel_path.c_str(),
                   std::string(to_string(st)).c_str());
      return kExitHostError;
    }
    signals.start([&vm] { vm.request_shutdown(ShutdownReason::kPoweroff, 0); },
                  [&] {
                    XenPlatformStats p;
                    {
                      std::lock_guard lock(vm.device_lock());
                      p = xen_platform->stats();
                    }
                    print_stats(vm.bus(), vm.xen().stats(), vm.kvm_features(), vm.xen().op_counts(), p);
                  });
    if (nic != nullptr && !nic_ifname.empty()) uplink.start(nic, &vm.device_lock());
    // The uplink thread touches the NIC and the VM's lock: it stops before the VM goes, however
    // this scope is left.
    struct StopUplink {
      E1000Uplink& u;
      ~StopUplink() { u.stop(); }
    } stop_uplink{uplink};
    result = vm.run();
    uplink.stop();
    signals.stop();
    vm.xen().stop_serving();
    pv_console.stop();
    serial->flush();
    print_stats(vm.bus(), vm.xen().stats(), vm.kvm_features(), vm.xen().op_counts(),
                xen_platform->stats());
    if (nic != nullptr) print_nic_stats(*nic, uplink);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pvio-hv: %s\n", e.what());
    return kExitHostError;
  }

  if (signals.destroyed()) {
    std::fprintf(stderr, "pvio-hv: domain destroyed by the toolstack\n");
    return kExitDestroyed;
  }
  switch (result.state) {
    case DomainState::kCrashed: {
      const std::string msg = "pvio-hv: " + result.message + "\n";
      std::fputs(msg.c_str(), stderr);
      if (log_fd >= 0) (void)!::write(log_fd, msg.data(), msg.size());
      return kExitCrashed;
    }
    case DomainState::kShutdown:
      if (result.reason == ShutdownReason::kReboot) {
        std::fprintf(stderr, "pvio-hv: guest requested reboot\n");
        return kExitReboot;
      }
      if (result.code != 0) {
        std::fprintf(stderr, "pvio-hv: guest powered off with failure code %u\n", result.code);
        return kExitGuestFailure;
      }
      std::fprintf(stderr, "pvio-hv: guest powered off (code 0)\n");
      return kExitOk;
    case DomainState::kRunning:
      break;
  }
  return kExitHostError;
}
