// What the `pvio` verbs share; see pvio_cli.h.
#include "pvio_cli.h"

#include <sys/sysmacros.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include <linux/fs.h>
#include <sys/ioctl.h>

#include "pvio/control/run_dir.h"

namespace pvio::cli {
namespace {

std::map<std::string, Verb>& registry() {
  static std::map<std::string, Verb> r;
  return r;
}

bool exited(pid_t pid) {
  // Our own child: reap it if it is done. Someone else's: ask the kernel whether it exists.
  int status = 0;
  const pid_t r = ::waitpid(pid, &status, WNOHANG);
  if (r == pid) return true;
  if (r < 0 && errno == ECHILD) return ::kill(pid, 0) != 0 && errno == ESRCH;
  return false;
}

}  // namespace

VerbRegistration::VerbRegistration(const Verb& v) { registry().emplace(v.name, v); }
const std::map<std::string, Verb>& verbs() { return registry(); }

int fail(const std::string& verb, const std::string& message) {
  std::fprintf(stderr, "pvio %s: %s\n", verb.c_str(), message.c_str());
  return 1;
}

std::string Options::get(const std::string& o, const std::string& fallback) const {
  auto it = values.find(o);
  return it == values.end() ? fallback : it->second;
}

std::optional<Options> parse_options(const std::vector<std::string>& args,
                                     const std::vector<std::string>& with_value,
                                     const std::vector<std::string>& flags, std::string* bad) {
  Options o;
  auto in = [](const std::vector<std::string>& v, const std::string& s) {
    for (const auto& x : v)
      if (x == s) return true;
    return false;
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.starts_with("--")) {
      if (in(with_value, a) && i + 1 < args.size()) {
        o.values[a] = args[++i];
      } else if (in(flags, a)) {
        o.values[a] = "";
      } else {
        *bad = a;
        return std::nullopt;
      }
    } else {
      o.positional.push_back(a);
    }
  }
  return o;
}

bool parse_uint(const std::string& s, std::uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

bool parse_domid(const std::string& s, domid_t* out) {
  std::uint64_t v = 0;
  if (!parse_uint(s, &v) || v == 0 || v >= 0x7FF0) return false;  // DOMID_FIRST_RESERVED
  *out = static_cast<domid_t>(v);
  return true;
}

std::string run_dir() {
  const std::string dir = control::run_dir();
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  ::chmod(dir.c_str(), 0700);
  return dir;
}

std::string xenstored_socket() {
  run_dir();  // made if missing, for the default path
  return control::xenstored_socket_path();
}

std::unique_ptr<xs::Client> connect_xenstore(const std::string& verb) {
  const std::string path = xenstored_socket();
  auto c = xs::Client::connect(path);
  if (!c)
    fail(verb, "cannot reach pvio-xenstored at " + path + " (" + std::strerror(errno) +
                   "); is `pvio up` done?");
  // A verb that waits (block-attach, destroy) outlives a restart of pvio-xenstored: it
  // reconnects for a while, then fails as if the daemon had never been there.
  c->enable_reconnect({.first_delay_ms = 20, .max_delay_ms = 500, .give_up_ms = 10000});
  return c;
}

std::string find_program(const std::string& name) {
  std::string env = name;  // pvio-xenstored -> PVIO_XENSTORED
  for (char& c : env) c = (c == '-') ? '_' : static_cast<char>(std::toupper(c));
  if (const char* p = std::getenv(env.c_str()); p != nullptr && *p != '\0') return p;
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto dir = self.parent_path();
    // Installed side by side, or the build tree (tools/ next to xenstore/, domain/, ...).
    const char* places[] = {".", "../xenstore", "../domain", "../blkback", "../netback", "../blkfront/user",
                            "../netfront/user",
                            "../hypervisor"};
    for (const char* p : places) {
      const auto cand = dir / p / name;
      if (::access(cand.c_str(), X_OK) == 0) return cand.lexically_normal().string();
    }
  }
  return name;
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& log_path) {
  const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log < 0) return -errno;
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int e = errno;
    ::close(log);
    return -e;
  }
  if (pid == 0) {
    ::setsid();
    const int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    ::dup2(log, 1);
    ::dup2(log, 2);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(log);
  return pid;
}

bool wait_ready(pid_t pid, int timeout_ms, const std::function<bool()>& ready) {
  for (int waited = 0; waited <= timeout_ms; waited += 20) {
    if (ready()) return true;
    if (exited(pid)) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return ready();
}

std::string pid_file(const std::string& name) { return run_dir() + "/" + name + ".pid"; }

bool write_pid_file(const std::string& name, pid_t pid) {
  std::ofstream f(pid_file(name), std::ios::trunc);
  f << pid << "\n";
  return static_cast<bool>(f);
}

bool process_alive(pid_t pid) {
  if (pid <= 0 || exited(pid)) return false;
  // A zombie is not running; /proc tells (state 'Z').
  std::ifstream st("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (std::getline(st, line)) {
    const auto close = line.rfind(')');
    if (close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z')
      return false;
  }
  return true;
}

std::optional<pid_t> running_pid(const std::string& name) {
  std::ifstream f(pid_file(name));
  long v = 0;
  if (!(f >> v) || v <= 0) return std::nullopt;
  const pid_t pid = static_cast<pid_t>(v);
  if (!process_alive(pid)) return std::nullopt;
  return pid;
}

namespace {
std::string vbd_record(domid_t domid) {
  return run_dir() + "/domain-" + std::to_string(domid) + ".vbd";
}
}  // namespace

bool write_user_domain_vbd(domid_t domid, const UserDomainVbd& vbd) {
  std::ofstream f(vbd_record(domid), std::ios::trunc);
  f << vbd.devid << "\n" << vbd.fuse_mountpoint << "\n";
  return static_cast<bool>(f);
}

std::optional<UserDomainVbd> read_user_domain_vbd(domid_t domid) {
  std::ifstream f(vbd_record(domid));
  UserDomainVbd v;
  std::string devid;
  if (!std::getline(f, devid)) return std::nullopt;
  std::uint64_t n = 0;
  if (!parse_uint(devid, &n) || n > 0xFFFFFFFFu) return std::nullopt;
  v.devid = static_cast<std::uint32_t>(n);
  std::getline(f, v.fuse_mountpoint);
  return v;
}

void remove_user_domain_vbd(domid_t domid) { ::unlink(vbd_record(domid).c_str()); }

void stop_process(const std::string& name, int timeout_ms) {
  if (auto pid = running_pid(name)) {
    ::kill(*pid, SIGTERM);
    bool gone = false;
    for (int waited = 0; waited < timeout_ms && !gone; waited += 20) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      gone = !running_pid(name).has_value();
    }
    if (!gone) ::kill(*pid, SIGKILL);
  }
  ::unlink(pid_file(name).c_str());
}

namespace {
int read_state(xs::Client& xs, const std::string& dir) {
  uint64_t v = 0;
  auto r = xs.read(dir + "/state");
  return r.ok() && parse_uint(r.value, &v) ? static_cast<int>(v) : -1;
}
}  // namespace

int close_and_remove_device(xs::Client& xs, const std::string& verb, const std::string& be,
                            const std::string& fe, int connected_above, bool force,
                            int timeout_ms) {
  if (!force && read_state(xs, fe) > connected_above) {
    xs.watch(be + "/state", "detach");
    xs.write(be + "/online", "0");
    xs.write(be + "/state", "5");  // XenbusStateClosing
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (read_state(xs, be) != 6 /* Closed */) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0)
        return fail(verb, "backend did not close in time; use --force to remove it");
      xs.read_watch(static_cast<int>(left.count()));
    }
    xs.unwatch(be + "/state", "detach");
  }
  const xs::XsError e = with_transaction(xs, [&](uint32_t tx) {
    xs::XsError r = xs.rm(be, tx);
    const xs::XsError f = xs.rm(fe, tx);
    if (r == xs::XsError::None || r == xs::XsError::NoEnt)
      r = f == xs::XsError::NoEnt ? xs::XsError::None : f;
    return r;
  });
  if (e != xs::XsError::None) return fail(verb, std::string("xenstore: ") + xs::xs_error_name(e));
  return 0;
}

xs::XsError with_transaction(xs::Client& c, const std::function<xs::XsError(uint32_t)>& body) {
  for (int attempt = 0; attempt < 32; ++attempt) {
    auto tx = c.transaction_start();
    if (!tx.ok()) return tx.error;
    const xs::XsError e = body(tx.value);
    if (e != xs::XsError::None) {
      c.transaction_end(tx.value, false);
      return e;
    }
    const xs::XsError end = c.transaction_end(tx.value, true);
    if (end != xs::XsError::Again) return end;
  }
  return xs::XsError::Again;
}

xs::XsError write_domain_home(xs::Client& c, domid_t domid, const std::string& name,
                              uint64_t memory_kib) {
  using xs::NodePerm;
  using xs::XsPerm;
  const std::vector<NodePerm> ro = {{0, XsPerm::None}, {domid, XsPerm::Read}};
  const std::vector<NodePerm> rw = {{domid, XsPerm::None}};
  const std::string home = "/local/domain/" + std::to_string(domid);
  struct Node {
    std::string path;
    std::string value;
    const std::vector<NodePerm>& perms;
    bool dir;
  };
  const Node nodes[] = {
      {home, "", ro, true},
      {home + "/name", name, ro, false},
      {home + "/domid", std::to_string(domid), ro, false},
      {home + "/memory", "", ro, true},
      {home + "/memory/target", std::to_string(memory_kib), ro, false},
      {home + "/device", "", ro, true},
      {home + "/control", "", ro, true},
      {home + "/control/shutdown", "", rw, false},
      {home + "/data", "", rw, true},
      {home + "/drivers", "", rw, true},
      {home + "/feature", "", rw, true},
      {home + "/attr", "", rw, true},
      {home + "/error", "", rw, true},
  };
  return with_transaction(c, [&](uint32_t tx) {
    for (const Node& n : nodes) {
      xs::XsError e = n.dir ? c.mkdir(n.path, tx) : c.write(n.path, n.value, tx);
      if (e == xs::XsError::None) e = c.set_perms(n.path, n.perms, tx);
      if (e != xs::XsError::None) return e;
    }
    return xs::XsError::None;
  });
}

// Xen's vbd numbering (docs/misc/vbd-interface), the inverse of block-attach's parse_vdev.
std::string vdev_name(uint32_t devid) {
  uint32_t disk;
  if ((devid >> 8) == 202 && (devid & 0xF) == 0) {
    disk = (devid >> 4) & 0xF;
  } else if ((devid >> 28) == 1 && (devid & 0xFF) == 0) {
    disk = (devid >> 8) & 0xFFFFF;
  } else {
    return std::to_string(devid);
  }
  std::string s;
  if (disk >= 26) s += static_cast<char>('a' + disk / 26 - 1);
  s += static_cast<char>('a' + disk % 26);
  return "xvd" + s;
}

namespace {

using DirKeys = std::vector<std::pair<std::string, std::string>>;

// mkdir + permissions on the directory and on each key, inside transaction `tx`.
xs::XsError write_dir(xs::Client& c, uint32_t tx, const std::string& path, const DirKeys& keys,
                      const std::vector<xs::NodePerm>& perms) {
  xs::XsError r = c.mkdir(path, tx);
  if (r == xs::XsError::None) r = c.set_perms(path, perms, tx);
  for (const auto& [k, v] : keys) {
    if (r != xs::XsError::None) break;
    r = c.write(path + "/" + k, v, tx);
    if (r == xs::XsError::None) r = c.set_perms(path + "/" + k, perms, tx);
  }
  return r;
}

}  // namespace

xs::XsError write_vbd(xs::Client& c, domid_t domid, const VbdSpec& spec) {
  using xs::XsPerm;
  const std::string d = std::to_string(domid);
  const std::string fe = "/local/domain/" + d + "/device/vbd/" + std::to_string(spec.devid);
  const std::string be = "/local/domain/0/backend/vbd/" + d + "/" + std::to_string(spec.devid);
  // xl's permissions: the frontend directory belongs to the guest and the backend (Dom0) may
  // read it; the backend directory belongs to Dom0 and the guest may read it.
  const std::vector<xs::NodePerm> fe_perms = {{domid, XsPerm::None}, {0, XsPerm::Read}};
  const std::vector<xs::NodePerm> be_perms = {{0, XsPerm::None}, {domid, XsPerm::Read}};
  const bool blk = S_ISBLK(spec.st.st_mode);
  DirKeys be_keys = {
      {"frontend", fe},
      {"frontend-id", d},
      {"online", "1"},
      {"removable", "0"},
      {"bootable", "1"},
      {"state", "1"},  // XenbusStateInitialising
      {"dev", vdev_name(spec.devid)},
      {"type", blk ? "phy" : "file"},
      {"mode", spec.mode},
      {"device-type", "disk"},
      {"discard-enable", spec.mode == "w" ? "1" : "0"},
      {"params", spec.params},
  };
  // What Linux's hotplug script writes for xen-blkback: the device's major:minor in hex.
  if (blk) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%x:%x", major(spec.st.st_rdev), minor(spec.st.st_rdev));
    be_keys.emplace_back("physical-device", buf);
  }
  if (!spec.engine.empty()) be_keys.emplace_back("engine", spec.engine);
  const DirKeys fe_keys = {
      {"backend", be},
      {"backend-id", "0"},
      {"state", "1"},
      {"virtual-device", std::to_string(spec.devid)},
      {"device-type", "disk"},
  };
  return with_transaction(c, [&](uint32_t tx) {
    const xs::XsError r = write_dir(c, tx, fe, fe_keys, fe_perms);
    return r == xs::XsError::None ? write_dir(c, tx, be, be_keys, be_perms) : r;
  });
}

xs::XsError write_vif(xs::Client& c, domid_t domid, const VifSpec& vif) {
  using xs::NodePerm;
  using xs::XsPerm;
  const std::string d = std::to_string(domid);
  const std::string id = std::to_string(vif.devid);
  const std::string fe = "/local/domain/" + d + "/device/vif/" + id;
  const std::string be = "/local/domain/0/backend/vif/" + d + "/" + id;
  const std::vector<NodePerm> fe_perms = {{domid, XsPerm::None}, {0, XsPerm::Read}};
  const std::vector<NodePerm> be_perms = {{0, XsPerm::None}, {domid, XsPerm::Read}};
  std::vector<std::pair<std::string, std::string>> be_keys = {
      {"frontend", fe}, {"frontend-id", d}, {"online", "1"}, {"state", "1"},
      {"mac", vif.mac}, {"handle", id},     {"type", "vif"},
  };
  if (!vif.uplink.empty()) be_keys.emplace_back("uplink", vif.uplink);
  const std::vector<std::pair<std::string, std::string>> fe_keys = {
      {"backend", be}, {"backend-id", "0"}, {"state", "1"}, {"handle", id}, {"mac", vif.mac},
  };
  return with_transaction(c, [&](uint32_t tx) {
    auto dir = [&](const std::string& path,
                   const std::vector<std::pair<std::string, std::string>>& keys,
                   const std::vector<NodePerm>& perms) {
      xs::XsError r = c.mkdir(path, tx);
      if (r == xs::XsError::None) r = c.set_perms(path, perms, tx);
      for (const auto& [k, v] : keys) {
        if (r != xs::XsError::None) break;
        r = c.write(path + "/" + k, v, tx);
        if (r == xs::XsError::None) r = c.set_perms(path + "/" + k, perms, tx);
      }
      return r;
    };
    xs::XsError r = dir(fe, fe_keys, fe_perms);
    return r == xs::XsError::None ? dir(be, be_keys, be_perms) : r;
  });
}

// Xen's vbd numbering (docs/misc/vbd-interface): xvdX is (202 << 8) | (disk << 4) for the
// first 16 disks, (1 << 28) | (disk << 8) beyond. A bare number is taken as the devid itself.
bool parse_vdev(const std::string& v, uint32_t* devid) {
  uint64_t n = 0;
  if (parse_uint(v, &n)) {
    if (n == 0 || n > 0xFFFFFFFFu) return false;
    *devid = static_cast<uint32_t>(n);
    return true;
  }
  if (!v.starts_with("xvd") || v.size() < 4 || v.size() > 5) return false;
  uint32_t disk = 0;
  for (std::size_t i = 3; i < v.size(); ++i) {
    if (v[i] < 'a' || v[i] > 'z') return false;
    disk = disk * 26 + static_cast<uint32_t>(v[i] - 'a') + (i + 1 < v.size() ? 1 : 0);
  }
  *devid = disk < 16 ? (202u << 8) | (disk << 4) : (1u << 28) | (disk << 8);
  return true;
}

// Why FILE cannot back a disk, or "" if it can: it must exist, be a regular file or a block
// device, and hold at least one 512-byte sector (blkfront reports a 0-sector disk as absent).
std::string unusable_backing(const std::string& given, const std::string& path,
                             const std::error_code& ec) {
  if (ec) return given + ": " + ec.message();
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return given + ": " + std::strerror(errno);
  std::uint64_t bytes = 0;
  if (S_ISREG(st.st_mode)) {
    bytes = static_cast<std::uint64_t>(st.st_size);
  } else if (S_ISBLK(st.st_mode)) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return given + ": " + std::strerror(errno);
    const int rc = ::ioctl(fd, BLKGETSIZE64, &bytes);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return given + ": cannot read the device size: " + std::strerror(err);
  } else {
    return given + " is not a regular file or block device";
  }
  if (bytes < 512)
    return given + " is " + std::to_string(bytes) +
           " bytes long: a disk needs at least one 512-byte sector";
  return "";
}

bool parse_mac(const std::string& s, std::string* out) {
  if (s.size() != 17) return false;
  std::string m;
  for (std::size_t i = 0; i < 17; ++i) {
    const char ch = s[i];
    if (i % 3 == 2) {
      if (ch != ':') return false;
      m += ':';
      continue;
    }
    if (!std::isxdigit(static_cast<unsigned char>(ch))) return false;
    m += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  }
  const int first = std::stoi(m.substr(0, 2), nullptr, 16);
  if (first & 1) return false;  // a multicast address cannot be an interface's
  *out = m;
  return true;
}

std::string random_mac() {
  std::random_device rd;
  char buf[18];
  std::snprintf(buf, sizeof buf, "00:16:3e:%02x:%02x:%02x", rd() & 0x7F, rd() & 0xFF, rd() & 0xFF);
  return buf;
}

}  // namespace pvio::cli
