// pvio create: start a domain, write its xenstore home the way xl does, and introduce it to
// xenstored, which then serves the guest over its ring page. Two kinds: a user-mode domain
// (pvio-domain; with a vbd it runs blkfront, with a vif netfront, which appears on the host as
// a TAP interface) and an HVM/PVH domain run by pvio-hv (a kernel). Vifs are written as
// `pvio network-attach` writes them, vbds as `pvio block-attach` does.
//
// `pvio create FILE` reads an xl.cfg-style file and, like xl, leaves a monitor behind: a
// process of its own that sees how the domain ends and applies on_poweroff / on_reboot /
// on_crash. The flag forms start the domain and return; nothing watches it afterwards.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "domain_builder.h"
#include "pvio_cli.h"
#include "xl_config.h"

namespace pvio::cli {
namespace {

constexpr const char* kUserUsage =
    "usage: pvio create [--domid N] [--name NAME] [--memory-mib M] [--vbd DEVID [--fuse "
    "MOUNTPOINT]] [--vif MAC [--tap NAME] [--uplink NAME]] [--xenstore-relay (no devices)]";
constexpr const char* kHvmUsage =
    "usage: pvio create --kernel ELF [--domid N] [--name NAME] [--mem SIZE] [--vcpus N] "
    "[--cmdline STR] [--vbd DEVID:IMG[:r]] [--vif MAC [--uplink NAME]] "
    "[--nic e1000[,ifname=IF][,mac=MAC]]";

int report(const DomainPlan& p, pid_t pid) {
  std::printf("domain %u (%s) created: %s, %s pid %d\n", p.domid, p.name.c_str(),
              domain_kind_name(p.kind), p.kind == DomainKind::User ? "pvio-domain" : "pvio-hv",
              static_cast<int>(pid));
  return 0;
}

int build_and_report(DomainPlan& plan) {
  auto xs = connect_xenstore("create");
  if (!xs) return 1;
  pid_t pid = -1;
  std::string err;
  if (!build_domain(*xs, &plan, &pid, &err)) return fail("create", err);
  return report(plan, pid);
}

// `pvio create --kernel ELF`: pvio-hv runs the domain (PVH or pvio's own ELF kernels).
int run_hvm(const Options& o) {
  DomainPlan p;
  if (!o.positional.empty() || (o.has("--domid") && !parse_domid(o.get("--domid"), &p.domid)) ||
      o.has("--fuse") || o.has("--xenstore-relay") || o.has("--memory-mib") ||
      o.has("--grant-frames") || o.has("--tap"))
    return fail("create", kHvmUsage);
  // --vbd DEVID:IMG[:r]: a disk (devid as in block-attach: a number or xvdX).
  if (o.has("--vbd")) {
    const std::string v = o.get("--vbd");
    const auto colon = v.find(':');
    VbdSpec vbd;
    if (colon == std::string::npos || !parse_vdev(v.substr(0, colon), &vbd.devid))
      return fail("create", "--vbd is DEVID:IMG[:r] (xvda or 51712)");
    std::string img = v.substr(colon + 1);
    vbd.mode = "w";
    if (img.size() > 2 && img.ends_with(":r")) {
      vbd.mode = "r";
      img.resize(img.size() - 2);
    }
    std::error_code ec;
    vbd.params = std::filesystem::absolute(img, ec).lexically_normal();
    if (const std::string why = unusable_backing(img, vbd.params, ec); !why.empty())
      return fail("create", why);
    ::stat(vbd.params.c_str(), &vbd.st);
    p.vbds.push_back(vbd);
  }
  if (o.has("--vif")) {
    VifSpec vif;
    if (!parse_mac(o.get("--vif"), &vif.mac))
      return fail("create", "--vif takes a unicast MAC address aa:bb:cc:dd:ee:ff");
    vif.uplink = o.get("--uplink");
    p.vifs.push_back(vif);
  } else if (o.has("--uplink")) {
    return fail("create", kHvmUsage);
  }
  {
    std::string digits = o.get("--mem", "64M");
    if (!digits.empty() && (digits.back() == 'M' || digits.back() == 'm')) digits.pop_back();
    if (!parse_uint(digits, &p.memory_mib) || p.memory_mib < 4 || p.memory_mib > 3072)
      return fail("create", "--mem is 4M .. 3072M");
  }
  uint64_t vcpus = 1;
  if (o.has("--vcpus") && (!parse_uint(o.get("--vcpus"), &vcpus) || vcpus == 0 || vcpus > 64))
    return fail("create", "--vcpus is 1 .. 64");
  p.vcpus = static_cast<unsigned>(vcpus);
  p.kernel = o.get("--kernel");
  std::string err;
  const auto kind = kernel_kind(p.kernel, &err);
  if (!kind) return fail("create", err);
  p.kind = *kind;
  p.name = o.get("--name");
  p.cmdline = o.get("--cmdline");
  p.nic = o.get("--nic");
  return build_and_report(p);
}

// The flag form of a user-mode domain.
int run_user(const Options& o) {
  DomainPlan p;
  if (!o.positional.empty() || (o.has("--domid") && !parse_domid(o.get("--domid"), &p.domid)) ||
      (o.has("--memory-mib") && !parse_uint(o.get("--memory-mib"), &p.memory_mib)) ||
      (o.has("--grant-frames") && !parse_uint(o.get("--grant-frames"), &p.grant_frames)) ||
      (o.has("--fuse") && !o.has("--vbd")) ||
      (o.has("--xenstore-relay") && (o.has("--vbd") || o.has("--vif"))) ||
      ((o.has("--tap") || o.has("--uplink")) && !o.has("--vif")) || o.has("--vcpus"))
    return fail("create", kUserUsage);
  if (o.has("--vif")) {
    VifSpec vif;
    if (!parse_mac(o.get("--vif"), &vif.mac)) return fail("create", "bad --vif MAC");
    vif.uplink = o.get("--uplink");
    p.vifs.push_back(vif);
    p.tap = o.get("--tap");
  }
  // A PV disk served by blkfront inside the domain (connects once `pvio block-attach` gives
  // it a backend), optionally exposed on the host through FUSE.
  if (o.has("--vbd")) {
    uint64_t devid = 0;
    if (!parse_uint(o.get("--vbd"), &devid) || devid == 0 || devid > 0xFFFFFFFFu)
      return fail("create", "--vbd takes a device number (51712 is xvda)");
    p.user_vbd = static_cast<uint32_t>(devid);
    if (o.has("--fuse")) {
      std::error_code ec;
      p.fuse_mountpoint = std::filesystem::absolute(o.get("--fuse"), ec).lexically_normal();
    }
  }
  p.xenstore_relay = o.has("--xenstore-relay");
  p.name = o.get("--name");
  return build_and_report(p);
}

// `pvio create FILE`: parse, check, then fork the monitor, which builds the domain (so the
// domain's process is its child and it reads how it ended), reports back over a pipe, and
// stays to apply the file's on_* policies.
int run_file(const std::string& path, const Options& o) {
  if (o.positional.size() != 1 || !o.values.empty())
    return fail("create", "usage: pvio create FILE (the flags are for the other forms)");
  std::ifstream f(path);
  if (!f) return fail("create", path + ": " + std::strerror(errno));
  std::stringstream text;
  text << f.rdbuf();
  DomainConfigFile cfg;
  ConfigError cerr;
  std::error_code ec;
  const std::string base = std::filesystem::absolute(path, ec).parent_path().string();
  if (!parse_xl_config(text.str(), base, &cfg, &cerr)) return fail("create", cerr.to_string(path));
  DomainPlan plan;
  if (!plan_from_config(cfg, &plan, &cerr)) return fail("create", cerr.to_string(path));
  if (!connect_xenstore("create")) return 1;

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return fail("create", std::strerror(errno));
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t monitor = ::fork();
  if (monitor < 0) return fail("create", std::strerror(errno));
  if (monitor == 0) {
    ::close(fds[0]);
    ::setsid();
    // Like any daemon, it holds no one's working directory (every path in the plan is
    // absolute: the file's own are resolved against its directory; so are the run-dir
    // variables from here on).
    for (const char* var : {"PVIO_RUN_DIR", "XENSTORED_PATH", "XDG_RUNTIME_DIR"}) {
      const char* v = std::getenv(var);
      std::error_code aec;
      if (v != nullptr && *v != '\0' && *v != '/')
        ::setenv(var, std::filesystem::absolute(v, aec).c_str(), 1);
    }
    (void)!::chdir("/");
    // Nothing of the caller's terminal or pipes stays open in the monitor.
    const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    for (int fd = 0; fd < 3; ++fd) ::dup2(null, fd);
    auto xs = xs::Client::connect(xenstored_socket());
    pid_t pid = -1;
    std::string err, msg;
    if (!xs) {
      msg = "E cannot reach pvio-xenstored";
    } else if (!build_domain(*xs, &plan, &pid, &err)) {
      msg = "E " + err;
    } else {
      write_pid_file(monitor_name(plan.domid), ::getpid());
      msg = "O " + std::to_string(plan.domid) + " " + std::to_string(pid);
    }
    (void)!::write(fds[1], msg.data(), msg.size());
    ::close(fds[1]);
    if (pid < 0) ::_exit(1);
    xs.reset();
    const std::string log = run_dir() + "/domain-" + std::to_string(plan.domid) + ".log";
    const int logfd = ::open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (logfd >= 0) ::dup2(logfd, 2);
    monitor_domain(plan, pid);
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string msg;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) break;
    msg.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  unsigned domid = 0;
  int pid = 0;
  if (std::sscanf(msg.c_str(), "O %u %d", &domid, &pid) == 2) {
    std::printf("domain %u (%s) created from %s: %s, pid %d; monitor pid %d (on_poweroff=%s "
                "on_reboot=%s on_crash=%s)\n",
                domid, plan.name.c_str(), path.c_str(), domain_kind_name(plan.kind), pid,
                static_cast<int>(monitor), on_event_name(plan.on_poweroff),
                on_event_name(plan.on_reboot), on_event_name(plan.on_crash));
    return 0;
  }
  int status = 0;
  ::waitpid(monitor, &status, 0);
  return fail("create", msg.starts_with("E ") ? msg.substr(2) : "the monitor died while building");
}

int run(const std::vector<std::string>& args) {
  std::string bad;
  auto o = parse_options(args, {"--domid", "--name", "--memory-mib", "--grant-frames", "--vbd",
                                "--fuse", "--vif", "--tap", "--uplink", "--kernel", "--mem",
                                "--cmdline", "--vcpus", "--nic"},
                         {"--xenstore-relay"}, &bad);
  if (!o) return fail("create", "unknown option " + bad);
  if (!o->positional.empty()) return run_file(o->positional[0], *o);
  if (o->has("--kernel")) return run_hvm(*o);
  if (o->has("--mem") || o->has("--cmdline") || o->has("--nic"))
    return fail("create", "--mem, --cmdline and --nic need --kernel");
  return run_user(*o);
}

}  // namespace

PVIO_VERB("create", "FILE  |  [--domid N] [--name NAME] [--memory-mib M] [--grant-frames G] "
          "[--vbd DEVID [--fuse MOUNTPOINT]] [--vif MAC [--tap NAME] [--uplink NAME]] "
          "[--xenstore-relay (no devices)]  |  --kernel ELF [--domid N] [--name NAME] [--mem SIZE] "
          "[--vcpus N] [--cmdline STR] [--vbd DEVID:IMG[:r]] [--vif MAC [--uplink NAME]] "
          "[--nic e1000[,ifname=IF][,mac=MAC]]",
          "start a domain from an xl.cfg file (monitored), or a user-mode or HVM/PVH domain "
          "from flags", run);

}  // namespace pvio::cli
