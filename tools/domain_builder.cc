// Building, tearing down and monitoring domains (domain_builder.h).
#include "domain_builder.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <thread>

#include "pvio/control/client.h"
#include "pvio/control/run_dir.h"
#include "pvio/hypervisor/elf_loader.h"

namespace pvio::cli {
namespace {

using xs::XsError;

// pvio-hv's and pvio-domain's exit codes (tools/pvio-hv.cc, domain/pvio_domain.cc).
constexpr int kExitPoweroff = 0;
constexpr int kExitGuestFailure = 2;  // powered off with a non-zero code
constexpr int kExitCrashed = 3;
constexpr int kExitReboot = 4;
constexpr int kExitDestroyed = 5;

std::string dom_file(domid_t domid, const std::string& suffix) {
  return run_dir() + "/domain-" + std::to_string(domid) + suffix;
}

// Serialises creates in one run directory, so two of them cannot pick the same domid or name.
class CreateLock {
 public:
  CreateLock() {
    fd_ = ::open((run_dir() + "/create.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ >= 0) ::flock(fd_, LOCK_EX);
  }
  ~CreateLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the lock
  }
  CreateLock(const CreateLock&) = delete;
  CreateLock& operator=(const CreateLock&) = delete;

 private:
  int fd_ = -1;
};

bool has_home(xs::Client& xs, domid_t d) {
  return xs.read("/local/domain/" + std::to_string(d) + "/domid").ok();
}

// The first domid without a home in xenstore and without a process, as xl allocates.
domid_t free_domid(xs::Client& xs) {
  for (domid_t d = 1; d < xen::DOMID_FIRST_RESERVED; ++d)
    if (!running_pid("domain-" + std::to_string(d)) && !has_home(xs, d)) return d;
  return 0;
}

std::optional<domid_t> domain_named(xs::Client& xs, const std::string& name) {
  if (name == "Domain-0") return 0;
  auto doms = xs.directory("/local/domain");
  if (!doms.ok()) return std::nullopt;
  for (const auto& id : doms.value) {
    domid_t d = 0;
    if (!parse_domid(id, &d)) continue;
    auto n = xs.read("/local/domain/" + id + "/name");
    if (n.ok() && n.value == name) return d;
  }
  return std::nullopt;
}

// The last lines of a log, for an error message.
std::string log_tail(const std::string& path, std::size_t lines = 6) {
  std::ifstream f(path);
  std::deque<std::string> tail;
  for (std::string l; std::getline(f, l);) {
    tail.push_back(l);
    if (tail.size() > lines) tail.pop_front();
  }
  std::string s;
  for (const auto& l : tail) s += "\n  | " + l;
  return s;
}

// Attaches once over the control protocol to learn the xenstore page and port, as xl learns
// them from the domain builder (the process serves the protocol on the domain's socket).
// True when the child `pid` exits (and is reaped) within ms milliseconds.
bool exited_within(pid_t pid, int ms) {
  for (int waited = 0;; waited += 20) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return true;
    if (waited >= ms) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool learn_xenstore_ring(pid_t pid, domid_t domid, const std::string& sock, uint64_t* gfn,
                         evtchn_port_t* port) {
  std::unique_ptr<control::ControlClient> cc;
  if (!wait_ready(pid, 5000, [&] { return control::ControlClient::attach(sock, domid, &cc) == 0; }))
    return false;
  *gfn = cc->xenstore_gfn();
  *port = cc->xenstore_port();
  cc->detach();
  return true;
}

// Every file a domain's process and its build leave in the run directory.
void remove_domain_files(domid_t domid, bool keep_log) {
  for (const char* suffix : {".pid", ".info", ".vbd", ".sock", ".console.sock",
                             ".xenstore.sock"})
    ::unlink(dom_file(domid, suffix).c_str());
  ::unlink(control::domain_socket_path(domid).c_str());
  if (!keep_log) {
    ::unlink(dom_file(domid, ".log").c_str());
    ::unlink(dom_file(domid, ".console.log").c_str());
  }
}

void remove_domain_nodes(xs::Client& xs, domid_t domid) {
  const std::string d = std::to_string(domid);
  xs.rm("/local/domain/" + d);
  if (auto kinds = xs.directory("/local/domain/0/backend"); kinds.ok())
    for (const auto& kind : kinds.value) xs.rm("/local/domain/0/backend/" + kind + "/" + d);
}

bool write_record(domid_t domid, const DomainPlan& p) {
  std::ofstream f(dom_file(domid, ".info"), std::ios::trunc);
  f << "kind " << domain_kind_name(p.kind) << "\nvcpus " << p.vcpus << "\n";
  return static_cast<bool>(f);
}

// The process's command line for the plan.
std::vector<std::string> domain_argv(const DomainPlan& p, const std::string& sock) {
  const std::string d = std::to_string(p.domid);
  const std::string proc = "domain-" + d;
  if (p.kind != DomainKind::User) {
    std::vector<std::string> argv = {find_program("pvio-hv"), "--kernel", p.kernel, "--domid", d,
                                     "--mem", std::to_string(p.memory_mib) + "M",
                                     "--vcpus", std::to_string(p.vcpus),
                                     "--control-socket", sock,
                                     // The PV console, for `pvio console` and its log.
                                     "--console-socket", dom_file(p.domid, ".console.sock"),
                                     "--console-log", dom_file(p.domid, ".console.log")};
    if (!p.cmdline.empty()) argv.insert(argv.end(), {"--cmdline", p.cmdline});
    if (!p.nic.empty()) argv.insert(argv.end(), {"--nic", p.nic});
    return argv;
  }
  std::vector<std::string> argv = {find_program("pvio-domain"), "--domid", d,
                                   "--memory-mib", std::to_string(p.memory_mib),
                                   "--grant-frames", std::to_string(p.grant_frames),
                                   "--socket", sock};
  if (p.xenstore_relay)
    argv.insert(argv.end(), {"--xenstore-relay", dom_file(p.domid, ".xenstore.sock")});
  if (p.user_vbd != 0) {
    argv.insert(argv.end(), {"--vbd", std::to_string(p.user_vbd)});
    if (!p.fuse_mountpoint.empty()) argv.insert(argv.end(), {"--fuse", p.fuse_mountpoint});
  }
  if (!p.vifs.empty()) {
    argv.insert(argv.end(), {"--vif", std::to_string(p.vifs[0].devid)});
    if (!p.tap.empty()) argv.insert(argv.end(), {"--tap", p.tap});
  }
  return argv;
}

}  // namespace

const char* domain_kind_name(DomainKind k) {
  switch (k) {
    case DomainKind::User: return "user";
    case DomainKind::Hvm: return "hvm";
    case DomainKind::Pvh: return "pvh";
  }
  return "user";
}

std::string monitor_name(domid_t domid) { return "domain-" + std::to_string(domid) + ".monitor"; }

std::optional<DomainKind> kernel_kind(const std::string& path, std::string* err) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    *err = path + ": " + std::strerror(errno);
    return std::nullopt;
  }
  const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(f)),
                                        std::istreambuf_iterator<char>());
  return hv::is_pvh_elf(bytes) ? DomainKind::Pvh : DomainKind::Hvm;
}

bool plan_from_config(const DomainConfigFile& cfg, DomainPlan* plan, ConfigError* err) {
  auto bad = [&](const std::string& key, const std::string& msg) {
    auto it = cfg.key_lines.find(key);
    *err = ConfigError{it == cfg.key_lines.end() ? 0 : it->second, key, msg};
    return false;
  };
  DomainPlan p;
  p.name = cfg.name;
  p.domid = cfg.domid ? static_cast<domid_t>(*cfg.domid) : 0;
  p.memory_mib = cfg.memory_mib;
  p.vcpus = cfg.vcpus;
  p.cmdline = cfg.cmdline;
  p.on_poweroff = cfg.on_poweroff;
  p.on_reboot = cfg.on_reboot;
  p.on_crash = cfg.on_crash;
  if (cfg.kernel.empty()) {
    p.kind = DomainKind::User;
    if (!cfg.cmdline.empty()) return bad("cmdline", "a user-mode domain (no kernel) has no command line");
    if (cfg.vcpus != 1)
      return bad("vcpus", "a user-mode domain is a host process with no vCPUs of its own; leave vcpus at 1");
    if (cfg.disks.size() > 1) return bad("disk", "a user-mode domain serves one disk");
    if (cfg.vifs.size() > 1) return bad("vif", "a user-mode domain serves one vif");
  } else {
    std::string why;
    const auto kind = kernel_kind(cfg.kernel, &why);
    if (!kind) return bad("kernel", why);
    p.kernel = cfg.kernel;
    p.kind = *kind;
    if (cfg.memory_mib < 4 || cfg.memory_mib > 3072)
      return bad("memory", "pvio-hv runs 4 to 3072 MiB");
    if (p.kind == DomainKind::Pvh && cfg.vcpus != 1)
      return bad("vcpus", "a PVH kernel is started on one vCPU");
  }
  std::set<std::uint32_t> devids;
  for (const DiskConfig& dc : cfg.disks) {
    VbdSpec v;
    if (!parse_vdev(dc.vdev, &v.devid)) return bad("disk", "vdev '" + dc.vdev + "' is not xvdX or a device number");
    if (!devids.insert(v.devid).second) return bad("disk", "vdev " + dc.vdev + " given twice");
    std::error_code ec;
    const std::string abs = std::filesystem::absolute(dc.target, ec).lexically_normal().string();
    if (const std::string why = unusable_backing(dc.target, abs, ec); !why.empty())
      return bad("disk", why);
    ::stat(abs.c_str(), &v.st);
    v.params = abs;
    v.mode = dc.access == "ro" ? "r" : "w";
    p.vbds.push_back(v);
  }
  if (p.kind == DomainKind::User && !p.vbds.empty()) p.user_vbd = p.vbds[0].devid;
  for (std::size_t i = 0; i < cfg.vifs.size(); ++i) {
    VifSpec v;
    v.devid = static_cast<uint32_t>(i);
    if (cfg.vifs[i].mac.empty()) {
      v.mac = random_mac();
    } else if (!parse_mac(cfg.vifs[i].mac, &v.mac)) {
      return bad("vif", "mac '" + cfg.vifs[i].mac + "' is not a unicast MAC");
    }
    v.uplink = cfg.vifs[i].bridge;
    p.vifs.push_back(v);
  }
  *plan = p;
  return true;
}

bool build_domain(xs::Client& xs, DomainPlan* plan, pid_t* pid_out, std::string* err) {
  CreateLock lock;
  DomainPlan& p = *plan;
  const domid_t asked = p.domid;
  if (p.domid == 0) p.domid = free_domid(xs);
  if (p.domid == 0) return *err = "no free domid", false;
  const std::string d = std::to_string(p.domid);
  const std::string proc = "domain-" + d;
  if (running_pid(proc) || has_home(xs, p.domid)) {
    *err = "domain " + d + " already exists";
    if (asked == 0) *err += " (its home appeared while picking a free domid)";
    return false;
  }
  const std::string name = p.name.empty() ? proc : p.name;
  domid_t as_number = 0;
  if (parse_domid(name, &as_number) || name == "Domain-0")
    return *err = "name '" + name + "' would be taken for a domid", false;
  if (auto other = domain_named(xs, name))
    return *err = "name '" + name + "' is already used by domain " + std::to_string(*other), false;

  // From here on every step is undone if a later one fails.
  bool made_mountpoint = false;
  pid_t pid = -1;
  auto undo = [&](const std::string& why, bool with_log) {
    if (pid > 0) stop_process(proc);
    const std::string tail = with_log ? log_tail(dom_file(p.domid, ".log")) : "";
    xs.release(p.domid);
    remove_domain_nodes(xs, p.domid);
    remove_domain_files(p.domid, false);
    remove_user_domain_vbd(p.domid);
    if (made_mountpoint) ::rmdir(p.fuse_mountpoint.c_str());
    *err = why + tail;
    p.domid = asked;
    return false;
  };

  if (!p.fuse_mountpoint.empty() && !std::filesystem::exists(p.fuse_mountpoint)) {
    // The mount point is made if missing, as `mount` users expect a tool to do for them.
    std::error_code ec;
    std::filesystem::create_directories(p.fuse_mountpoint, ec);
    if (ec) return undo("cannot make " + p.fuse_mountpoint + ": " + ec.message(), false);
    made_mountpoint = true;
  }
  const std::string sock = control::domain_socket_path(p.domid);
  const char* program = p.kind == DomainKind::User ? "pvio-domain" : "pvio-hv";
  const std::string log = dom_file(p.domid, ".log");
  if (!p.continue_log) std::rename(log.c_str(), (log + ".1").c_str());
  pid = spawn(domain_argv(p, sock), log);
  if (pid < 0) {
    const int e = -pid;
    pid = -1;
    return undo(std::string("cannot start ") + program + ": " + std::strerror(e), false);
  }
  write_pid_file(proc, pid);
  if (p.user_vbd != 0) write_user_domain_vbd(p.domid, UserDomainVbd{p.user_vbd, p.fuse_mountpoint});

  uint64_t gfn = 0;
  evtchn_port_t port = 0;
  if (!learn_xenstore_ring(pid, p.domid, sock, &gfn, &port))
    return undo(std::string(program) + " did not come up; its log:", true);

  // Home and devices before INTRODUCE, so the guest finds its devices at its first look.
  XsError e = write_domain_home(xs, p.domid, name, p.memory_mib * 1024);
  for (const VbdSpec& v : p.vbds)
    if (e == XsError::None) e = write_vbd(xs, p.domid, v);
  for (const VifSpec& v : p.vifs)
    if (e == XsError::None) e = write_vif(xs, p.domid, v);
  if (e == XsError::None) e = xs.introduce(p.domid, gfn, port);
  if (e != XsError::None) {
    // xenstored refuses to introduce a domain whose process is gone (it cannot attach): then
    // the process's own reason (e.g. a kernel that does not load) is the one to give.
    if (exited_within(pid, 2000)) {
      pid = -1;
      return undo(std::string(program) + " exited; its log:", true);
    }
    return undo(std::string("xenstore: ") + xs::xs_error_name(e), false);
  }
  if (!write_record(p.domid, p)) return undo("cannot write " + dom_file(p.domid, ".info"), false);
  p.name = name;
  *pid_out = pid;
  return true;
}

void teardown_domain(xs::Client& xs, domid_t domid, bool keep_log) {
  xs.release(domid);
  remove_domain_nodes(xs, domid);
  remove_user_domain_vbd(domid);
  remove_domain_files(domid, keep_log);
}

std::optional<DomainRecord> read_domain_record(domid_t domid) {
  std::ifstream f(dom_file(domid, ".info"));
  if (!f) return std::nullopt;
  DomainRecord r;
  std::string key, value;
  while (f >> key >> value) {
    std::uint64_t n = 0;
    if (key == "kind") r.kind = value == "hvm" ? DomainKind::Hvm
                                : value == "pvh" ? DomainKind::Pvh
                                                 : DomainKind::User;
    else if (key == "vcpus" && parse_uint(value, &n)) r.vcpus = static_cast<unsigned>(n);
  }
  return r;
}

std::optional<domid_t> find_domain(xs::Client& xs, const std::string& what) {
  domid_t d = 0;
  if (parse_domid(what, &d) &&
      (has_home(xs, d) || running_pid("domain-" + what) || running_pid(monitor_name(d))))
    return d;
  auto named = domain_named(xs, what);
  if (named && *named != 0) return named;
  return std::nullopt;
}

namespace {

struct Ending {
  const char* what;
  OnEvent action;
};

// How the domain's process ended, from pvio-hv's / pvio-domain's exit status, and what the
// plan says to do about it.
Ending classify_ending(int status, const DomainPlan& plan) {
  if (!WIFEXITED(status)) return {"crashed", plan.on_crash};  // killed by a signal
  switch (WEXITSTATUS(status)) {
    case kExitPoweroff:
    case kExitGuestFailure:
      return {"powered off", plan.on_poweroff};
    case kExitReboot:
      return {"rebooted", plan.on_reboot};
    case kExitDestroyed:
      return {"was stopped by the host", OnEvent::Destroy};
    case kExitCrashed:
    default:
      return {"crashed", plan.on_crash};
  }
}

}  // namespace

void monitor_domain(DomainPlan plan, pid_t pid) {
  const domid_t domid = plan.domid;
  const std::string d = std::to_string(domid);
  auto say = [&](const std::string& s) {
    std::fprintf(stderr, "pvio monitor: domain %s: %s\n", d.c_str(), s.c_str());
    std::fflush(stderr);
  };
  // A domain that keeps ending within seconds of its start is not restarted forever (xl
  // gives up on a domain rebooting too fast, too).
  std::deque<std::chrono::steady_clock::time_point> restarts;
  for (;;) {
    int status = 0;
    pid_t r;
    do {
      r = ::waitpid(pid, &status, 0);
    } while (r < 0 && errno == EINTR);
    if (r != pid) {
      say("lost its process: " + std::string(std::strerror(errno)));
      return;
    }
    const Ending end = classify_ending(status, plan);
    const char* what = end.what;
    const OnEvent action = end.action;
    const std::string how = WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                               : "signal " + std::to_string(WTERMSIG(status));
    say(std::string(what) + " (" + how + "); " + on_event_name(action));
    auto xs = xs::Client::connect(xenstored_socket());
    if (!xs) {
      say("cannot reach pvio-xenstored; leaving the domain as it is");
      ::unlink(pid_file(monitor_name(domid)).c_str());
      return;
    }
    if (action == OnEvent::Preserve) {
      // The home stays (`pvio list` shows the domain as dead) until `pvio destroy`.
      xs->release(domid);
      ::unlink(pid_file("domain-" + d).c_str());
      ::unlink(pid_file(monitor_name(domid)).c_str());
      return;
    }
    teardown_domain(*xs, domid, true);
    if (action == OnEvent::Destroy) {
      ::unlink(pid_file(monitor_name(domid)).c_str());
      return;
    }
    const auto now = std::chrono::steady_clock::now();
    while (!restarts.empty() && now - restarts.front() > std::chrono::seconds(60)) restarts.pop_front();
    if (restarts.size() >= 10) {
      say("restarted 10 times within a minute; destroying it instead");
      ::unlink(pid_file(monitor_name(domid)).c_str());
      return;
    }
    restarts.push_back(now);
    plan.continue_log = true;
    std::string err;
    if (!build_domain(*xs, &plan, &pid, &err)) {
      say("restart failed: " + err);
      ::unlink(pid_file(monitor_name(domid)).c_str());
      return;
    }
    say("restarted: pid " + std::to_string(pid));
  }
}

}  // namespace pvio::cli
