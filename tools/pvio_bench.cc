// pvio bench: the project's main job. Boots the test guest on pvio-hv with the emulated IDE disk
// and the PV disk on one backing file, runs the same workloads through each and through every
// host-native engine (bench_native.cc) and fio on the same file, and prints a table with ratios
// against the best native engine; writes JSON and an SVG. Network rows: the same guest with a
// vif on pvio-netback, whose memif uplink faces pvio-netpeer (a DPDK loop on the host), against
// pvio-netpeer alone on a memif pair (the limit): 64 B and 1500 B transmit and receive rates and
// a ping-pong latency.
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "pvio/control/client.h"
#include "pvio/control/run_dir.h"
#include "pvio/guest/pattern.h"
#include "pvio/guest/result_line.h"
#include "pvio/guest/rng.h"
#include "bench_native.h"
#include "pvio_cli.h"

namespace pvio::cli {
namespace {

using guest::json_number;
using guest::report_line;
using guest::slurp;
using xs::XsError;

constexpr std::uint32_t kXvda = 51712;  // (202 << 8) | (0 << 4)

struct Workload {
  std::string name;
  std::string rw;  // randread | read | write | randwrite
  std::uint64_t bs;
  std::uint64_t qd;
};

const std::vector<Workload> kWorkloads = {
    {"rand4k-qd1", "randread", 4096, 1},
    {"rand4k-qd32", "randread", 4096, 32},
    {"seqread64k", "read", 65536, 8},
    {"seqwrite64k", "write", 65536, 8},
};

// A network workload: `op` names what the guest does (tx, rx, echo for the ping-pong).
struct NetWorkload {
  std::string name, op;
  std::uint32_t pkt;
};

const std::vector<NetWorkload> kNetWorkloads = {
    {"tx64", "tx", 64}, {"tx1500", "tx", 1500}, {"rx64", "rx", 64}, {"rx1500", "rx", 1500},
    {"pingpong", "echo", 64},
};
constexpr std::uint64_t kPingCount = 500;
constexpr const char* kGuestMac = "00:16:3e:00:00:99";

struct Result {
  std::string engine, workload;
  std::uint64_t qd = 0, ops = 0, bytes = 0, elapsed_ns = 0, p50_ns = 0, p99_ns = 0, errors = 0;
  double exits_per_io = -1;  // VM exits per I/O; -1: not applicable (native)
  // Host CPU per I/O over the timed phase: the guest's (pvio-hv) and the backend's for ide/pv,
  // the bench process's own threads (with io_uring's workers and SQPOLL thread) for native.
  double cpu_ns_per_io = -1, guest_cpu_ns_per_io = -1, backend_cpu_ns_per_io = -1;
  std::string detail;        // extra JSON members
  bool ok = false;
  std::string why;
  double iops() const { return elapsed_ns ? ops * 1e9 / static_cast<double>(elapsed_ns) : 0; }
  double mbps() const { return elapsed_ns ? bytes * 1e3 / static_cast<double>(elapsed_ns) : 0; }
};

std::string json_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    o += c;
  }
  return o;
}

std::string guest_kernel() {
  if (const char* p = std::getenv("PVIO_GUEST"); p != nullptr && *p != '\0') return p;
  std::error_code ec;
  const auto dir = std::filesystem::read_symlink("/proc/self/exe", ec).parent_path();
  for (const char* p : {"pvio-guest.elf", "../guest/pvio-guest.elf", "../share/pvio/pvio-guest.elf"}) {
    const auto cand = dir / p;
    if (!ec && ::access(cand.c_str(), R_OK) == 0) return cand.lexically_normal().string();
  }
  return "";
}

// Runs `fn` with standard output silenced (verbs called from here print their own lines).
int quietly(const std::function<int()>& fn) {
  std::fflush(stdout);
  const int saved = ::dup(STDOUT_FILENO);
  const int nul = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  ::dup2(nul, STDOUT_FILENO);
  const int rc = fn();
  std::fflush(stdout);
  ::dup2(saved, STDOUT_FILENO);
  ::close(saved);
  ::close(nul);
  return rc;
}

// ---- the HVM domain: pvio-hv plus the toolstack's part (home, vbd, introduce) ----

struct BootOptions {
  std::string hv, kernel, file, workdir, backend_engine = "auto";
  std::string nic;  // pvio-hv --nic value (the emulated e1000), empty for none
  std::uint64_t mem_bytes = 256ull << 20;
  unsigned vcpus = 1;  // pvio-hv --vcpus; the guest opens one PV disk queue per vCPU
  int timeout_s = 120;
  std::string vif_mac;  // non-empty: the guest also gets vif 0 with this MAC
};

struct Boot {
  int status = -1;  // pvio-hv's exit status
  std::string serial, err, why;
  // Host CPU time between the guest's "PVIO-PHASE begin" and "PVIO-PHASE end" console lines
  // (its timed phase): every thread of pvio-hv (vCPUs, device and timer threads) and of
  // pvio-blkback. -1 when the markers were not both seen.
  std::int64_t guest_cpu_ns = -1, backend_cpu_ns = -1;
};

// CPU time of every thread of `pid` so far (the first field of each task's schedstat, ns), or
// -1 when the process is gone.
std::int64_t process_cpu_ns(pid_t pid) {
  std::error_code ec;
  std::int64_t total = 0;
  bool any = false;
  for (const auto& t : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream f(t.path() / "schedstat");
    std::int64_t ns = 0;
    if (f >> ns) {
      total += ns;
      any = true;
    }
  }
  return any ? total : -1;
}

// Follows a growing console log for the guest's phase markers without re-reading it whole.
class PhaseWatch {
 public:
  explicit PhaseWatch(std::string path) : path_(std::move(path)) {}
  // 0 nothing new, 1 "begin" seen, 2 "end" seen (each reported once, in order).
  int poll() {
    std::ifstream f(path_, std::ios::binary);
    if (!f) return 0;
    f.seekg(static_cast<std::streamoff>(offset_));
    std::string more((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    offset_ += more.size();
    tail_ += more;
    const char* want = stage_ == 0 ? "PVIO-PHASE begin" : "PVIO-PHASE end";
    if (stage_ < 2 && tail_.find(want) != std::string::npos) {
      tail_.clear();
      return ++stage_;
    }
    if (tail_.size() > 64) tail_.erase(0, tail_.size() - 64);
    return 0;
  }

 private:
  std::string path_, tail_;
  std::size_t offset_ = 0;
  int stage_ = 0;
};

domid_t g_next_domid = 0;

// Interrupted (Ctrl-C, SIGTERM): kill the running guest and the services this run started and
// remove the image it made (it may sit in /dev/shm), with async-signal-safe calls only.
volatile pid_t g_guest_pid = -1;
volatile pid_t g_started_pids[3] = {-1, -1, -1};
volatile pid_t g_peer_pid = -1;
char g_image_to_remove[4096] = "";

extern "C" void on_interrupt(int sig) {
  if (g_guest_pid > 0) ::kill(g_guest_pid, SIGKILL);
  if (g_peer_pid > 0) ::kill(g_peer_pid, SIGKILL);
  for (pid_t p : {g_started_pids[0], g_started_pids[1], g_started_pids[2]})
    if (p > 0) ::kill(p, SIGTERM);
  if (g_image_to_remove[0] != '\0') ::unlink(g_image_to_remove);
  ::_exit(128 + sig);
}

domid_t pick_domid(xs::Client& xs) {
  if (g_next_domid == 0) g_next_domid = static_cast<domid_t>(100 + (::getpid() % 500) * 10);
  for (;;) {
    const domid_t d = g_next_domid++;
    if (g_next_domid >= 0x7000) g_next_domid = 100;
    if (!xs.read("/local/domain/" + std::to_string(d) + "/domid").ok() &&
        ::access(control::domain_socket_path(d).c_str(), F_OK) != 0)
      return d;
  }
}

// Boots one guest with `cmdline`, the IDE disk and the PV disk (xvda) on the same file, and
// waits for it to power off.
Boot boot_guest(const BootOptions& bo, xs::Client& xs, const std::string& cmdline) {
  Boot b;
  const domid_t domid = pick_domid(xs);
  const std::string d = std::to_string(domid);
  const std::string serial = bo.workdir + "/guest-" + d + ".serial";
  const std::string err = bo.workdir + "/guest-" + d + ".log";
  std::vector<std::string> argv = {bo.hv, "--kernel", bo.kernel, "--mem", std::to_string(bo.mem_bytes >> 20) + "M",
                                   "--disk", "ide=" + bo.file, "--cmdline", cmdline, "--serial-log", serial,
                                   "--domid", d, "--vcpus", std::to_string(bo.vcpus)};
  if (!bo.nic.empty()) argv.insert(argv.end(), {"--nic", bo.nic});
  const pid_t pid = spawn(argv, err);
  if (pid < 0) {
    b.why = std::string("cannot start pvio-hv: ") + std::strerror(-pid);
    return b;
  }
  g_guest_pid = pid;
  auto cleanup = [&] {
    xs.release(domid);
    xs.rm("/local/domain/" + d);
    xs.rm("/local/domain/0/backend/vbd/" + d);
    if (!bo.vif_mac.empty()) xs.rm("/local/domain/0/backend/vif/" + d);
  };
  // The toolstack's work, as xl does it after building the domain: learn the xenstore page and
  // port, write the home and the vbd, then introduce the domain to xenstored.
  std::unique_ptr<control::ControlClient> cc;
  const std::string sock = control::domain_socket_path(domid);
  bool up = wait_ready(pid, 10000, [&] { return control::ControlClient::attach(sock, domid, &cc) == 0; });
  XsError e = XsError::Io;
  if (up) {
    const std::uint64_t gfn = cc->xenstore_gfn();
    const evtchn_port_t port = cc->xenstore_port();
    cc->detach();
    cc.reset();
    e = write_domain_home(xs, domid, "bench-" + std::to_string(domid), bo.mem_bytes >> 10);
    if (e == XsError::None &&
        quietly([&] {
          return verbs().at("block-attach").run({d, bo.file, "--vdev", "xvda", "--engine", bo.backend_engine});
        }) != 0)
      e = XsError::Io;
    if (e == XsError::None && !bo.vif_mac.empty()) {
      VifSpec vif;
      vif.mac = bo.vif_mac;
      e = write_vif(xs, domid, vif);
    }
    if (e == XsError::None) e = xs.introduce(domid, gfn, port);
  }
  if (!up || e != XsError::None) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    g_guest_pid = -1;
    cleanup();
    b.why = !up ? "pvio-hv did not serve its control socket; see " + err
                : std::string("xenstore set-up failed: ") + xs::xs_error_name(e);
    return b;
  }
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(bo.timeout_s);
  PhaseWatch phase(serial);
  const pid_t backend = running_pid("blkback").value_or(-1);
  std::int64_t guest0 = -1, backend0 = -1;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (const int stage = phase.poll(); stage == 1) {
      guest0 = process_cpu_ns(pid);
      backend0 = backend > 0 ? process_cpu_ns(backend) : -1;
    } else if (stage == 2) {
      const std::int64_t g = process_cpu_ns(pid), k = backend > 0 ? process_cpu_ns(backend) : -1;
      if (guest0 >= 0 && g >= 0) b.guest_cpu_ns = g - guest0;
      if (backend0 >= 0 && k >= 0) b.backend_cpu_ns = k - backend0;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      b.why = "guest did not finish in " + std::to_string(bo.timeout_s) + " s";
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  b.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  g_guest_pid = -1;
  cleanup();
  b.serial = slurp(serial);
  b.err = slurp(err);
  return b;
}

Result guest_run(const BootOptions& bo, xs::Client& xs, const std::string& engine,
                 const Workload& w, std::uint64_t time_ms, std::uint64_t size, std::uint64_t poll_us,
                 bool poll_adapt) {
  Result r;
  r.engine = engine;
  r.workload = w.name;
  const std::uint64_t qd = engine == "ide" ? 1 : w.qd;  // IDE has one command in flight
  r.qd = qd;
  std::string cmd = "mode=workload disk=" + std::string(engine == "ide" ? "ide xfer=dma" : "pv") +
                    " rw=" + w.rw + " bs=" + std::to_string(w.bs) + " qd=" + std::to_string(qd) +
                    " time=" + std::to_string(time_ms) + " size=" + std::to_string(size) +
                    " seed=7 poll_us=" + std::to_string(poll_us) + " poll_adapt=" + (poll_adapt ? "1" : "0");
  // Writes send a buffer filled once: filling 64 KiB per write is guest CPU work that would
  // hide the I/O path being compared (both disks alike).
  if (w.rw == "write" || w.rw == "randwrite") cmd += " fill=0";
  const Boot b = boot_guest(bo, xs, cmd);
  const std::string res = report_line(b.serial, "PVIO-RESULT");
  if (res.empty() || b.status != 0) {
    r.why = b.why.empty() ? "guest exit " + std::to_string(b.status) + ": " +
                                report_line(b.serial, "PVIO-GUEST") + report_line(b.err, "pvio-hv:")
                          : b.why;
    return r;
  }
  r.ops = static_cast<std::uint64_t>(json_number(res, "ops"));
  r.bytes = static_cast<std::uint64_t>(json_number(res, "bytes"));
  r.elapsed_ns = static_cast<std::uint64_t>(json_number(res, "elapsed_ns"));
  r.p50_ns = static_cast<std::uint64_t>(json_number(res, "p50_ns"));
  r.p99_ns = static_cast<std::uint64_t>(json_number(res, "p99_ns"));
  r.errors = static_cast<std::uint64_t>(json_number(res, "errors"));
  if (r.ops && b.guest_cpu_ns >= 0) {
    r.guest_cpu_ns_per_io = static_cast<double>(b.guest_cpu_ns) / r.ops;
    r.backend_cpu_ns_per_io = b.backend_cpu_ns >= 0 ? static_cast<double>(b.backend_cpu_ns) / r.ops : 0;
    r.cpu_ns_per_io = r.guest_cpu_ns_per_io + r.backend_cpu_ns_per_io;
  }
  const std::string stats = report_line(b.err, "PVIO-HV-STATS");
  const long long user_exits = json_number(stats, "total_exits");
  char buf[512];
  if (engine == "ide") {
    // Every IDE register access is an exit to pvio-hv: its device counter is the exact count.
    const auto at = stats.find("\"ide\":{");
    const long long ide_exits = at == std::string::npos ? -1 : json_number(stats, "pio_exits", at);
    if (ide_exits >= 0 && r.ops) r.exits_per_io = static_cast<double>(ide_exits) / r.ops;
    std::snprintf(buf, sizeof(buf), "\"ide_exits\":%lld,\"user_exits_boot\":%lld,\"loop_ns\":%lld",
                  ide_exits, user_exits, json_number(res, "loop_ns"));
  } else {
    // Doorbells (ioeventfd, handled inside KVM) and halts are what the guest's timed phase
    // exits for; exits to pvio-hv over the whole boot (start-up hypercalls) are given apart.
    const long long g = json_number(res, "guest_exits");
    if (g >= 0 && r.ops) r.exits_per_io = static_cast<double>(g) / r.ops;
    std::snprintf(buf, sizeof(buf),
                  "\"requests\":%lld,\"notifications\":%lld,\"doorbells\":%lld,\"hlts\":%lld,"
                  "\"upcalls\":%lld,\"ring_slots\":%lld,\"indirect\":%lld,\"persistent\":%lld,"
                  "\"user_exits_boot\":%lld,\"doorbell_ns\":%lld,\"loop_ns\":%lld",
                  json_number(res, "requests"), json_number(res, "notifications"), json_number(res, "doorbells"),
                  json_number(res, "hlts"), json_number(res, "upcalls"), json_number(res, "ring_slots"),
                  json_number(res, "indirect"), json_number(res, "persistent"), user_exits,
                  json_number(res, "doorbell_ns"), json_number(res, "loop_ns"));
  }
  r.detail = buf;
  r.ok = r.ops > 0 && r.errors == 0;
  if (!r.ok) r.why = "guest reported " + std::to_string(r.errors) + " errors";
  return r;
}

// ---- host-native engines on the same file, and fio beside them ----

constexpr const char* kNativePrefix = "native-";

bool is_native(const std::string& engine) { return engine.rfind(kNativePrefix, 0) == 0; }

// Every host engine on the file, each a row "native-<engine>"; then fio with the best one's
// engine and the same pattern, a row "fio" (when fio is installed).
std::vector<Result> native_runs(const std::string& file, const Workload& w, std::uint64_t time_ms,
                                std::uint64_t size, bool with_fio, std::uint64_t threads = 1,
                                const std::string& row = "") {
  native::Job job;
  job.threads = threads;
  job.file = file;
  job.write = w.rw == "write" || w.rw == "randwrite";
  job.random = w.rw == "randread" || w.rw == "randwrite";
  job.bs = w.bs;
  job.qd = w.qd;
  job.time_ms = time_ms;
  job.size = size;
  std::vector<native::Run> runs;
  std::vector<Result> rs;
  for (const auto& e : native::engines()) {
    timespec c0{}, c1{};
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    native::Run n = native::run(e, job);
    ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    const double cpu_ns = (c1.tv_sec - c0.tv_sec) * 1e9 + static_cast<double>(c1.tv_nsec - c0.tv_nsec);
    Result r;
    r.engine = kNativePrefix + e;
    r.workload = row.empty() ? w.name : row;
    r.qd = w.qd;
    r.ops = n.ops;
    r.bytes = n.bytes;
    r.elapsed_ns = n.elapsed_ns;
    r.p50_ns = n.p50_ns;
    r.p99_ns = n.p99_ns;
    r.errors = n.errors;
    r.ok = n.ok;
    r.why = n.why;
    if (n.ops) r.cpu_ns_per_io = cpu_ns / static_cast<double>(n.ops);
    r.detail = std::string("\"o_direct\":") + (n.direct ? "true" : "false") +
               ",\"threads\":" + std::to_string(threads);
    if (!n.note.empty()) r.detail += ",\"setup\":\"" + json_escape(n.note) + "\"";
    std::fprintf(stderr, "%s%s %.0f ", r.engine.c_str() + 7, n.ok ? "" : "(failed)", r.iops());
    rs.push_back(std::move(r));
    runs.push_back(std::move(n));
  }
  const int b = native::best(runs);
  if (with_fio && b >= 0) {
    const native::FioRun f = native::run_fio(runs[b].engine, job);
    Result r;
    r.engine = "fio";
    r.workload = w.name;
    r.qd = w.qd;
    r.ok = f.iops > 0;
    r.why = f.why;
    // fio reports rates, not counts: one second's worth keeps iops() and mbps() its figures.
    r.elapsed_ns = 1000000000ull;
    r.ops = static_cast<std::uint64_t>(f.iops + 0.5);
    r.bytes = r.ops * w.bs;
    r.p50_ns = static_cast<std::uint64_t>(f.p50_ns);
    r.detail = "\"fio_engine_of\":\"" + runs[b].engine + "\",\"cmdline\":\"" + json_escape(f.cmdline) + "\"";
    rs.push_back(std::move(r));
  }
  return rs;
}

// ---- the network rows: the guest's netfront through pvio-netback to pvio-netpeer ----

const char* peer_mode(const NetWorkload& w) {
  return w.op == "tx" ? "sink" : w.op == "rx" ? "source" : "ping";
}

// Starts pvio-netpeer with its standard output in `out`; the pid or -errno.
pid_t start_peer(const std::string& socket, const NetWorkload& w, std::uint64_t time_ms, bool native,
                 const std::string& out) {
  std::vector<std::string> argv = {find_program("pvio-netpeer"), "--memif", socket, "--mode", peer_mode(w),
                                   "--pkt", std::to_string(w.pkt), "--time-ms", std::to_string(time_ms),
                                   "--count", std::to_string(kPingCount)};
  if (native) argv.push_back("--native");
  const pid_t pid = spawn(argv, out);
  if (pid > 0) g_peer_pid = pid;
  return pid;
}

// Waits for the peer (killed after timeout_s) and returns its PVIO-NETPEER line.
std::string finish_peer(pid_t pid, const std::string& out, int timeout_s) {
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (::waitpid(pid, &status, WNOHANG) != pid) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  g_peer_pid = -1;
  return report_line(slurp(out), "PVIO-NETPEER");
}

bool json_true(const std::string& json, const std::string& key) {
  return json.find("\"" + key + "\":true") != std::string::npos;
}

// pvio-netpeer alone on a memif pair: the limit of the uplink vdev.
Result net_native_run(const BootOptions& bo, const NetWorkload& w, std::uint64_t time_ms) {
  Result r;
  r.engine = "native";
  r.workload = w.name;
  r.qd = 1;
  const std::string out = bo.workdir + "/netpeer-native-" + w.name + ".out";
  const pid_t pid = start_peer(bo.workdir + "/native-memif.sock", w, time_ms, true, out);
  if (pid < 0) {
    r.why = std::string("cannot start pvio-netpeer: ") + std::strerror(-pid);
    return r;
  }
  const std::string line = finish_peer(pid, out, static_cast<int>(time_ms / 1000) + 60);
  r.ops = static_cast<std::uint64_t>(std::max(0LL, json_number(line, "packets")));
  r.bytes = static_cast<std::uint64_t>(std::max(0LL, json_number(line, "bytes")));
  r.elapsed_ns = static_cast<std::uint64_t>(std::max(0LL, json_number(line, "elapsed_ns")));
  if (w.op == "echo") {
    r.p50_ns = static_cast<std::uint64_t>(json_number(line, "p50_ns"));
    r.p99_ns = static_cast<std::uint64_t>(json_number(line, "p99_ns"));
    r.bytes = r.ops * w.pkt;
  }
  r.detail = "\"pkt\":" + std::to_string(w.pkt) + ",\"vdev\":\"memif pair\"";
  r.ok = json_true(line, "ok");
  if (!r.ok) r.why = line.empty() ? "pvio-netpeer printed no result; see " + out : line;
  return r;
}

// The guest's netfront (engine "pv") or its emulated e1000 (engine "e1000", wired by pvio-hv
// to the TAP `e1000_if` that pvio-netback serves as a second uplink): tx counted where the
// frames arrive (pvio-netpeer), rx counted by the guest, ping-pong timed by pvio-netpeer
// against the guest's echo. Both cross the same switch to the same memif uplink.
Result net_guest_run(const BootOptions& bo, xs::Client& xs, const std::string& engine, const NetWorkload& w,
                     std::uint64_t time_ms, const std::string& uplink_socket, const std::string& e1000_if,
                     std::uint64_t poll_us) {
  Result r;
  r.engine = engine;
  const bool e1000 = engine == "e1000";
  r.workload = w.name;
  r.qd = 1;
  const std::string out = bo.workdir + "/netpeer-" + engine + "-" + w.name + ".out";
  const pid_t pid = start_peer(uplink_socket, w, time_ms, false, out);
  if (pid < 0) {
    r.why = std::string("cannot start pvio-netpeer: ") + std::strerror(-pid);
    return r;
  }
  std::string cmd = "mode=net net=" + engine + " op=" + w.op + " pkt=" + std::to_string(w.pkt);
  if (w.op == "tx") cmd += " go=1 time=" + std::to_string(time_ms);
  if (w.op == "rx") cmd += " time=" + std::to_string(time_ms) + " idle=1000";
  // Ping-pong: both NICs' guests poll --poll-us after each frame before halting for the next.
  if (w.op == "echo")
    cmd += " count=" + std::to_string(kPingCount) + " idle=3000 halt=1 spin_us=" + std::to_string(poll_us);
  BootOptions nbo = bo;
  if (e1000) {
    nbo.nic = "e1000,ifname=" + e1000_if + ",mac=" + kGuestMac;
  } else {
    nbo.vif_mac = kGuestMac;
  }
  const Boot b = boot_guest(nbo, xs, cmd);
  const std::string line = finish_peer(pid, out, 30);
  const std::string res = report_line(b.serial, "PVIO-RESULT");
  if (res.empty() || b.status != 0) {
    r.why = b.why.empty() ? "guest exit " + std::to_string(b.status) + ": " + report_line(b.serial, "PVIO-GUEST") +
                                report_line(b.err, "pvio-hv:") + " peer: " + line
                          : b.why;
    return r;
  }
  const long long guest_packets = json_number(res, "packets");
  if (w.op == "tx") {
    r.ops = static_cast<std::uint64_t>(std::max(0LL, json_number(line, "packets")));
    r.bytes = static_cast<std::uint64_t>(std::max(0LL, json_number(line, "bytes")));
    r.elapsed_ns = static_cast<std::uint64_t>(std::max(0LL, json_number(line, "elapsed_ns")));
  } else if (w.op == "rx") {
    r.ops = static_cast<std::uint64_t>(std::max(0LL, guest_packets));
    r.bytes = static_cast<std::uint64_t>(std::max(0LL, json_number(res, "bytes")));
    r.elapsed_ns = static_cast<std::uint64_t>(std::max(0LL, json_number(res, "elapsed_ns")));
  } else {
    r.ops = static_cast<std::uint64_t>(std::max(0LL, json_number(line, "packets")));
    r.bytes = r.ops * w.pkt;
    r.elapsed_ns = static_cast<std::uint64_t>(std::max(0LL, json_number(line, "elapsed_ns")));
    r.p50_ns = static_cast<std::uint64_t>(std::max(0LL, json_number(line, "p50_ns")));
    r.p99_ns = static_cast<std::uint64_t>(std::max(0LL, json_number(line, "p99_ns")));
  }
  r.errors = static_cast<std::uint64_t>(std::max(0LL, json_number(res, "errors")));
  // What the guest exits for per packet it handled: doorbells (ioeventfd, inside KVM) and halts.
  const long long g = json_number(res, "guest_exits");
  if (g >= 0 && guest_packets > 0) r.exits_per_io = static_cast<double>(g) / static_cast<double>(guest_packets);
  // Counters a row does not have (the peer's count on rx, the offered load on tx) are null.
  const auto num = [](long long v) { return v < 0 ? std::string("null") : std::to_string(v); };
  r.detail = "\"pkt\":" + std::to_string(w.pkt) + ",\"guest_packets\":" + num(guest_packets) +
             ",\"guest_elapsed_ns\":" + num(json_number(res, "elapsed_ns")) +
             ",\"peer_packets\":" + num(w.op == "rx" ? -1 : json_number(line, "packets")) +
             ",\"peer_offered\":" + num(w.op == "rx" ? json_number(line, "offered") : -1) +
             ",\"lost\":" + num(json_number(res, "lost"));
  if (e1000) {
    // Register accesses are the e1000's exits; pvio-hv's own count covers the whole boot.
    const std::string nic = report_line(b.err, "PVIO-HV-E1000");
    for (const char* k : {"mmio_reads", "mmio_writes"}) r.detail += std::string(",\"") + k + "\":" + num(json_number(res, k));
    for (const char* k : {"mmio_exits", "interrupts", "rx_no_buffer", "uplink_tx_dropped"})
      r.detail += std::string(",\"hv_") + k + "\":" + num(json_number(nic, k));
  } else {
    for (const char* k : {"notifications", "doorbells", "hlts", "upcalls", "polls", "tx_busy", "doorbell_ns"})
      r.detail += std::string(",\"") + k + "\":" + num(json_number(res, k));
  }
  r.detail += ",\"vdev\":\"memif\"";
  r.ok = r.ops > 1 && r.errors == 0 && (w.op == "rx" || json_true(line, "ok"));
  if (!r.ok) r.why = "guest reported " + std::to_string(r.errors) + " errors; peer: " + line;
  return r;
}

// ---- output ----

const Result* find(const std::vector<Result>& rs, const std::string& engine, const std::string& w) {
  for (const auto& r : rs)
    if (r.engine == engine && r.workload == w && r.ok) return &r;
  return nullptr;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof(b), f, v);
  return b;
}

// The best host-native row of a workload: the most IOPS among the native engines that ran ok.
const Result* best_native(const std::vector<Result>& rs, const std::string& w) {
  const Result* b = nullptr;
  for (const auto& r : rs)
    if (is_native(r.engine) && r.workload == w && r.ok && (b == nullptr || r.iops() > b->iops())) b = &r;
  return b;
}

// Host threads a native engine keeps busy at queue depth qd: psync one per queue slot, SQPOLL
// its submitter and the kernel's polling thread, the others one.
std::uint64_t native_threads(const std::string& engine, std::uint64_t qd) {
  if (engine == "native-psync") return qd;
  if (engine == "native-uring-sqpoll") return 2;
  return 1;
}

// The best native row that uses one host thread: the fair peer of one PV queue (one vCPU, one
// backend thread).
const Result* best_native_one_thread(const std::vector<Result>& rs, const std::string& w) {
  const Result* b = nullptr;
  for (const auto& r : rs)
    if (is_native(r.engine) && r.workload == w && r.ok && native_threads(r.engine, r.qd) == 1 &&
        (b == nullptr || r.iops() > b->iops()))
      b = &r;
  return b;
}

// The rows' engine names in table order: "native" stands for every native engine and fio.
std::vector<std::string> row_engines(const std::vector<std::string>& engines) {
  std::vector<std::string> out;
  for (const auto& e : engines) {
    if (e != "native") {
      out.push_back(e);
      continue;
    }
    for (const auto& n : native::engines()) out.push_back(kNativePrefix + n);
    out.push_back("fio");
  }
  return out;
}

// fio against our best native engine (fio runs that engine): more than 10 % apart means one
// of the two measures something else, and the ratios should not be trusted until it is found.
std::vector<std::string> fio_warnings(const std::vector<Result>& rs, const std::vector<Workload>& ws) {
  std::vector<std::string> out;
  for (const auto& w : ws) {
    const Result *b = best_native(rs, w.name), *f = find(rs, "fio", w.name);
    if (!b || !f) continue;
    const double d = (b->iops() - f->iops()) / f->iops();
    if (std::fabs(d) > 0.10)
      out.push_back(fmt("%+.0f%%", d * 100) + " " + w.name + ": " + b->engine + " " +
                    fmt("%.0f", b->iops()) + " IOPS, fio " + fmt("%.0f", f->iops()));
  }
  return out;
}

// The row name of `workload` run on q queues (PV) or q host threads (native).
std::string mq_row(const std::string& workload, std::uint64_t q) {
  return workload + "/" + std::to_string(q) + "q";
}

void print_mq_table(const std::vector<Result>& rs, const std::vector<Workload>& ws,
                    const std::vector<std::uint64_t>& queue_counts) {
  std::printf("\nmulti-queue: PV with one blkif queue per vCPU (pvio-hv --vcpus N, a blkback thread per\n"
              "queue), each queue at the workload's depth; native with N host threads, each at that\n"
              "depth (psync: one thread per slot), best engine; scaling against 1 queue / 1 thread\n\n");
  std::printf("| workload | queues | PV | PV p50 | best native, N threads | PV/nat | PV scaling | native scaling | CPU us/IO PV (guest+backend) / native |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& w : ws) {
    const Result* pv1 = find(rs, "pv", mq_row(w.name, 1));
    const Result* nat1 = best_native(rs, mq_row(w.name, 1));
    for (const std::uint64_t q : queue_counts) {
      const std::string row = mq_row(w.name, q);
      const Result* pv = find(rs, "pv", row);
      const Result* nat = best_native(rs, row);
      const bool pv_ok = pv && pv->ok, nat_ok = nat && nat->ok;
      std::string cpu = pv_ok && pv->guest_cpu_ns_per_io >= 0
                            ? fmt("%.1f", pv->guest_cpu_ns_per_io / 1e3) + "+" +
                                  fmt("%.1f", pv->backend_cpu_ns_per_io / 1e3)
                            : "-";
      cpu += " / " + (nat_ok && nat->cpu_ns_per_io >= 0 ? fmt("%.1f", nat->cpu_ns_per_io / 1e3) : "-");
      std::printf("| %s | %" PRIu64 " | %s | %s | %s | %s | %s | %s | %s |\n", w.name.c_str(), q,
                  pv_ok ? (fmt("%.1f K", pv->iops() / 1e3)).c_str() : "failed",
                  pv_ok ? (fmt("%.1f us", pv->p50_ns / 1e3)).c_str() : "-",
                  nat_ok ? (fmt("%.1f K ", nat->iops() / 1e3) + (nat->engine.c_str() + 7)).c_str() : "failed",
                  pv_ok && nat_ok ? fmt("%.2fx", pv->iops() / nat->iops()).c_str() : "-",
                  pv_ok && pv1 && pv1->ok ? fmt("%.2fx", pv->iops() / pv1->iops()).c_str() : "-",
                  nat_ok && nat1 && nat1->ok ? fmt("%.2fx", nat->iops() / nat1->iops()).c_str() : "-",
                  cpu.c_str());
    }
  }
}

void print_table(const std::vector<Result>& rs, const std::vector<Workload>& ws,
                 const std::vector<std::string>& engines) {
  std::printf("\n%-12s %-20s %3s %11s %9s %9s %9s %9s %8s %8s %8s %12s\n", "workload", "engine", "qd",
              "IOPS", "MB/s", "p50 us", "p99 us", "exits/IO", "PV/emul", "PV/nat", "PV/nat1",
              "CPU us/IO");
  for (const auto& w : ws) {
    const Result* ide = find(rs, "ide", w.name);
    const Result* nat = best_native(rs, w.name);
    const Result* nat1 = best_native_one_thread(rs, w.name);
    for (const auto& e : row_engines(engines)) {
      const Result* r = nullptr;
      for (const auto& x : rs)
        if (x.engine == e && x.workload == w.name) r = &x;
      if (r == nullptr) continue;
      const std::string name = e + (r == nat ? " *" : "") + (r == nat1 ? " +" : "");
      if (!r->ok) {
        std::printf("%-12s %-20s %3" PRIu64 "  failed: %s\n", w.name.c_str(), name.c_str(), r->qd, r->why.c_str());
        continue;
      }
      std::string vs_ide = "-", vs_nat = "-", vs_nat1 = "-";
      if (e == "pv" && ide) vs_ide = fmt("%.1fx", r->iops() / ide->iops());
      if (e == "pv" && nat) vs_nat = fmt("%.2fx", r->iops() / nat->iops());
      if (e == "pv" && nat1) vs_nat1 = fmt("%.2fx", r->iops() / nat1->iops());
      // Guest + backend for ide and pv (the backend's share after the +), the process for native.
      std::string cpu = "-";
      if (r->cpu_ns_per_io >= 0 && r->guest_cpu_ns_per_io >= 0)
        cpu = fmt("%.1f", r->guest_cpu_ns_per_io / 1e3) + "+" + fmt("%.1f", r->backend_cpu_ns_per_io / 1e3);
      else if (r->cpu_ns_per_io >= 0)
        cpu = fmt("%.1f", r->cpu_ns_per_io / 1e3);
      std::printf("%-12s %-20s %3" PRIu64 " %11.0f %9.1f %9s %9s %9s %8s %8s %8s %12s\n", w.name.c_str(),
                  name.c_str(), r->qd, r->iops(), r->mbps(),
                  e == "fio" && r->p50_ns == 0 ? "-" : fmt("%.1f", r->p50_ns / 1e3).c_str(),
                  e == "fio" ? "-" : fmt("%.1f", r->p99_ns / 1e3).c_str(),
                  r->exits_per_io < 0 ? "-" : fmt("%.2f", r->exits_per_io).c_str(), vs_ide.c_str(),
                  vs_nat.c_str(), vs_nat1.c_str(), cpu.c_str());
    }
  }
  std::printf("* best native engine of the workload (any number of host threads: psync runs one per\n"
              "  queue slot); PV/nat and the targets use it. fio runs that engine.\n"
              "+ best native engine on one host thread: the fair peer of one PV queue (one vCPU, one\n"
              "  backend thread); PV/nat1 uses it.\n"
              "CPU us/IO: host CPU per I/O in the timed phase; ide and pv: pvio-hv (the vCPU, spinning\n"
              "  included) + pvio-blkback; native: the bench's own threads (io_uring workers included).\n");
  for (const auto& w : fio_warnings(rs, ws)) std::printf("WARNING: best native vs fio %s\n", w.c_str());
}

const NetWorkload* net_workload(const std::string& name) {
  for (const auto& w : kNetWorkloads)
    if (w.name == name) return &w;
  return nullptr;
}

void print_net_table(const std::vector<Result>& rs, const std::vector<NetWorkload>& ws,
                     const std::vector<std::string>& engines) {
  std::printf("\n%-12s %-20s %11s %9s %9s %9s %9s %8s %9s\n", "workload", "engine", "Kpps", "Mbit/s",
              "p50 us", "p99 us", "exits/pkt", "PV/nat", "PV/e1000");
  for (const auto& w : ws) {
    const Result* nat = find(rs, "native", w.name);
    const Result* emu = find(rs, "e1000", w.name);
    for (const auto& e : engines) {
      const Result* r = nullptr;
      for (const auto& x : rs)
        if (x.engine == e && x.workload == w.name) r = &x;
      if (r == nullptr) continue;
      if (!r->ok) {
        std::printf("%-12s %-20s  failed: %s\n", w.name.c_str(), e.c_str(), r->why.c_str());
        continue;
      }
      std::string vs_nat = "-";
      if (e == "pv" && nat) {
        vs_nat = w.op == "echo" ? fmt("%+.0f us", (static_cast<double>(r->p50_ns) - static_cast<double>(nat->p50_ns)) / 1e3)
                                : fmt("%.2fx", r->iops() / nat->iops());
      }
      std::string vs_emu = "-";
      if (e == "pv" && emu) {
        vs_emu = w.op == "echo" ? fmt("%.2fx", static_cast<double>(emu->p50_ns) / static_cast<double>(r->p50_ns))
                                : fmt("%.1fx", r->iops() / emu->iops());
      }
      const bool ping = w.op == "echo";
      std::printf("%-12s %-20s %11s %9s %9s %9s %9s %8s %9s\n", w.name.c_str(), e.c_str(),
                  ping ? "-" : fmt("%.1f", r->iops() / 1e3).c_str(),
                  ping ? "-" : fmt("%.1f", r->mbps() * 8).c_str(), ping ? fmt("%.1f", r->p50_ns / 1e3).c_str() : "-",
                  ping ? fmt("%.1f", r->p99_ns / 1e3).c_str() : "-",
                  r->exits_per_io < 0 ? "-" : fmt("%.3f", r->exits_per_io).c_str(), vs_nat.c_str(),
                  vs_emu.c_str());
    }
  }
  std::printf("tx: counted where the frames arrive (pvio-netpeer on netback's memif uplink); rx: counted by the "
              "guest (pvio-netpeer sends as fast as the port takes); native: pvio-netpeer on a memif pair, no guest.\n"
              "PV/nat for pingpong: PV p50 minus native p50. e1000: the emulated NIC on the same switch (a TAP\n"
              "uplink of pvio-netback); PV/e1000 for pingpong: e1000 p50 over PV p50. exits/pkt: guest exits in\n"
              "the timed phase per packet the guest handled (e1000: register accesses, halts, interrupts).\n");
}

struct Target {
  std::string what;
  bool checked = false, met = false;
  std::string figure;
};

std::vector<Target> targets(const std::vector<Result>& rs) {
  std::vector<Target> t(3);
  t[0].what = "PV >= 20x emulated IDE IOPS at 4 KiB QD32";
  t[1].what = "PV >= 0.9x best host-native IOPS at 4 KiB QD32";
  t[2].what = "PV QD1 p50 latency <= best native + 5 us";
  const Result *pv32 = find(rs, "pv", "rand4k-qd32"), *ide32 = find(rs, "ide", "rand4k-qd32"),
               *nat32 = best_native(rs, "rand4k-qd32"), *pv1 = find(rs, "pv", "rand4k-qd1"),
               *nat1 = best_native(rs, "rand4k-qd1");
  if (pv32 && ide32) {
    const double x = pv32->iops() / ide32->iops();
    t[0] = {t[0].what, true, x >= 20, fmt("%.1fx", x)};
  }
  if (pv32 && nat32) {
    const double x = pv32->iops() / nat32->iops();
    t[1] = {t[1].what, true, x >= 0.9, fmt("%.2fx", x) + " (" + nat32->engine + ")"};
  }
  if (pv1 && nat1) {
    const double d = (static_cast<double>(pv1->p50_ns) - static_cast<double>(nat1->p50_ns)) / 1e3;
    t[2] = {t[2].what, true, d <= 5, fmt("%+.1f us", d) + " (" + nat1->engine + ")"};
  }
  for (const char* w : {"tx64", "rx64", "tx1500", "rx1500"}) {
    Target n{std::string("PV >= 0.5x native packets/s, ") + w, false, false, ""};
    const Result *pv = find(rs, "pv", w), *nat = find(rs, "native", w);
    if (pv && nat) {
      const double x = pv->iops() / nat->iops();
      n = {n.what, true, x >= 0.5, fmt("%.2fx", x)};
    }
    t.push_back(n);
  }
  {
    Target n{"PV ping-pong p50 <= native + 10 us", false, false, ""};
    const Result *pv = find(rs, "pv", "pingpong"), *nat = find(rs, "native", "pingpong");
    if (pv && nat) {
      const double d = (static_cast<double>(pv->p50_ns) - static_cast<double>(nat->p50_ns)) / 1e3;
      n = {n.what, true, d <= 10, fmt("%+.1f us", d)};
    }
    t.push_back(n);
  }
  for (const auto& [w, goal] : {std::pair{"tx64", 10.0}, std::pair{"rx64", 10.0}, std::pair{"tx1500", 5.0},
                                 std::pair{"rx1500", 5.0}}) {
    Target n{"PV >= " + fmt("%.0f", goal) + "x emulated e1000 packets/s, " + w, false, false, ""};
    const Result *pv = find(rs, "pv", w), *emu = find(rs, "e1000", w);
    if (pv && emu) {
      const double x = pv->iops() / emu->iops();
      n = {n.what, true, x >= goal, fmt("%.1fx", x)};
    }
    t.push_back(n);
  }
  return t;
}

std::string to_json(const std::vector<Result>& rs, const std::vector<Target>& ts,
                    const std::vector<Workload>& ws, const std::string& file, const std::string& medium,
                    std::uint64_t size, std::uint64_t time_ms) {
  std::string j = "{\n  \"file\": \"" + json_escape(file) + "\",\n  \"medium\": \"" + json_escape(medium) +
                  "\",\n  \"size\": " + std::to_string(size) + ",\n  \"time_ms\": " + std::to_string(time_ms) +
                  ",\n  \"best_native\": {";
  bool first = true;
  for (const auto& w : ws) {
    if (const Result* b = best_native(rs, w.name)) {
      j += std::string(first ? "" : ",") + "\"" + w.name + "\":\"" + b->engine + "\"";
      first = false;
    }
  }
  j += "},\n  \"best_native_one_thread\": {";
  first = true;
  for (const auto& w : ws) {
    if (const Result* b = best_native_one_thread(rs, w.name)) {
      j += std::string(first ? "" : ",") + "\"" + w.name + "\":\"" + b->engine + "\"";
      first = false;
    }
  }
  j += "},\n  \"fio_warnings\": [";
  const auto warns = fio_warnings(rs, ws);
  for (std::size_t i = 0; i < warns.size(); ++i) j += (i ? ",\"" : "\"") + json_escape(warns[i]) + "\"";
  j += "],\n  \"results\": [\n";
  for (std::size_t i = 0; i < rs.size(); ++i) {
    const Result& r = rs[i];
    char b[768];
    std::snprintf(b, sizeof(b),
                  "    {\"engine\":\"%s\",\"workload\":\"%s\",\"qd\":%" PRIu64 ",\"ok\":%s,"
                  "\"ops\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"elapsed_ns\":%" PRIu64
                  ",\"iops\":%.1f,\"mb_s\":%.2f,\"p50_ns\":%" PRIu64 ",\"p99_ns\":%" PRIu64
                  ",\"errors\":%" PRIu64 ",\"exits_per_io\":%s",
                  r.engine.c_str(), r.workload.c_str(), r.qd, r.ok ? "true" : "false", r.ops,
                  r.bytes, r.elapsed_ns, r.iops(), r.mbps(), r.p50_ns, r.p99_ns, r.errors,
                  r.exits_per_io < 0 ? "null" : fmt("%.3f", r.exits_per_io).c_str());
    j += b;
    auto ns_or_null = [](double v) { return v < 0 ? std::string("null") : fmt("%.0f", v); };
    j += ",\"cpu_ns_per_io\":" + ns_or_null(r.cpu_ns_per_io);
    if (r.guest_cpu_ns_per_io >= 0)
      j += ",\"guest_cpu_ns_per_io\":" + ns_or_null(r.guest_cpu_ns_per_io) +
           ",\"backend_cpu_ns_per_io\":" + ns_or_null(r.backend_cpu_ns_per_io);
    if (!r.detail.empty()) j += "," + r.detail;
    if (!r.why.empty()) j += ",\"why\":\"" + json_escape(r.why) + "\"";
    j += i + 1 < rs.size() ? "},\n" : "}\n";
  }
  j += "  ],\n  \"targets\": [\n";
  for (std::size_t i = 0; i < ts.size(); ++i) {
    j += "    {\"target\":\"" + json_escape(ts[i].what) + "\",\"checked\":" +
         (ts[i].checked ? "true" : "false") + ",\"met\":" + (ts[i].met ? "true" : "false") +
         ",\"figure\":\"" + json_escape(ts[i].figure) + "\"}" + (i + 1 < ts.size() ? ",\n" : "\n");
  }
  return j + "  ]\n}\n";
}

// A grouped bar chart of IOPS per workload (log scale: emulated and PV differ by orders of
// magnitude), one colour per engine.
std::string to_svg(const std::vector<Result>& rs, const std::vector<std::string>& ws,
                   const std::vector<std::string>& engines) {
  const int W = 1040, H = 420, left = 70, right = 170, top = 40, bottom = 60;
  const int plot_w = W - left - right, plot_h = H - top - bottom;
  double vmax = 10;
  for (const auto& r : rs)
    if (r.ok) vmax = std::max(vmax, r.iops());
  const double lmax = std::ceil(std::log10(vmax));
  auto y_of = [&](double v) { return top + plot_h - (v <= 1 ? 0 : std::log10(v) / lmax * plot_h); };
  const char* colours[] = {"#d9822b", "#2b7bd9", "#4caf50", "#9c27b0", "#00897b", "#c0ca33", "#795548", "#616161"};
  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n"
    << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    << "<text x=\"" << W / 2 << "\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">pvio bench: "
       "IOPS per disk workload, packets/s per network workload, round trips/s for pingpong "
       "(log scale)</text>\n";
  for (int e = 0; e <= static_cast<int>(lmax); ++e) {
    const double y = y_of(std::pow(10.0, e));
    s << "<line x1=\"" << left << "\" x2=\"" << left + plot_w << "\" y1=\"" << y << "\" y2=\"" << y
      << "\" stroke=\"#ddd\"/>\n<text x=\"" << left - 6 << "\" y=\"" << y + 4
      << "\" text-anchor=\"end\">1e" << e << "</text>\n";
  }
  const double group_w = static_cast<double>(plot_w) / std::max<std::size_t>(ws.size(), 1);
  const double bar_w = group_w * 0.8 / std::max<std::size_t>(engines.size(), 1);
  for (std::size_t g = 0; g < ws.size(); ++g) {
    const double gx = left + g * group_w + group_w * 0.1;
    for (std::size_t e = 0; e < engines.size(); ++e) {
      const Result* r = find(rs, engines[e], ws[g]);
      if (!r) continue;
      const double y = y_of(r->iops());
      s << "<rect x=\"" << gx + e * bar_w << "\" y=\"" << y << "\" width=\"" << bar_w - 2
        << "\" height=\"" << top + plot_h - y << "\" fill=\"" << colours[e % 8] << "\"><title>"
        << engines[e] << " " << ws[g] << ": " << static_cast<long long>(r->iops())
        << "/s</title></rect>\n";
      s << "<text x=\"" << gx + e * bar_w + bar_w / 2 << "\" y=\"" << y - 3
        << "\" text-anchor=\"middle\" font-size=\"9\">" << fmt("%.3g", r->iops()) << "</text>\n";
    }
    s << "<text x=\"" << gx + group_w * 0.4 << "\" y=\"" << top + plot_h + 18
      << "\" text-anchor=\"middle\">" << ws[g] << "</text>\n";
  }
  s << "<line x1=\"" << left << "\" x2=\"" << left << "\" y1=\"" << top << "\" y2=\"" << top + plot_h
    << "\" stroke=\"black\"/>\n<line x1=\"" << left << "\" x2=\"" << left + plot_w << "\" y1=\""
    << top + plot_h << "\" y2=\"" << top + plot_h << "\" stroke=\"black\"/>\n";
  for (std::size_t e = 0; e < engines.size(); ++e) {
    const int y = top + 10 + static_cast<int>(e) * 20;
    s << "<rect x=\"" << W - right + 15 << "\" y=\"" << y << "\" width=\"14\" height=\"14\" fill=\""
      << colours[e % 8] << "\"/>\n<text x=\"" << W - right + 35 << "\" y=\"" << y + 11 << "\">"
      << (engines[e] == "ide"  ? "emulated IDE"
          : engines[e] == "pv" ? "PV (blkfront / netfront)"
          : engines[e] == "e1000" ? "emulated e1000 (network)"
          : engines[e] == "native" ? "host DPDK loop (network)"
          : engines[e] == "fio" ? "fio (best engine)"
                                : "host " + engines[e].substr(7))
      << "</text>\n";
  }
  s << "</svg>\n";
  return s.str();
}

std::vector<std::string> split(const std::string& s, char sep = ',') {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s + sep) {
    if (c == sep) {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

bool parse_bytes(const std::string& s, std::uint64_t* out) {
  std::uint64_t mult = 1;
  std::string n = s;
  if (!n.empty() && (n.back() == 'K' || n.back() == 'M' || n.back() == 'G')) {
    mult = n.back() == 'K' ? 1ull << 10 : n.back() == 'M' ? 1ull << 20 : 1ull << 30;
    n.pop_back();
  }
  std::uint64_t v = 0;
  if (!parse_uint(n, &v) || v == 0) return false;
  *out = v * mult;
  return true;
}

// Drops the file's pages from the page cache (it was just written and fsynced), so the first
// reads of a disk medium go to the device; O_DIRECT engines bypass the cache from then on.
void drop_cached(const std::string& path) {
  if (const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

bool fio_installed() {
  const char* path = std::getenv("PATH");
  for (const auto& dir : split(std::string(path ? path : "/usr/bin:/bin"), ':'))
    if (::access((dir + "/fio").c_str(), X_OK) == 0) return true;
  return false;
}

// Fills the image with the guest's pattern (seed 7) so reads touch real, allocated blocks.
bool make_image(const std::string& path, std::uint64_t size) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  std::vector<std::uint64_t> buf((1 << 20) / 8);
  bool ok = true;
  for (std::uint64_t off = 0; off < size && ok; off += 1 << 20) {
    for (std::size_t k = 0; k < buf.size(); ++k) buf[k] = guest::pattern_word(7, off + 8 * k);
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(1 << 20, size - off));
    ok = ::pwrite(fd, buf.data(), n, static_cast<off_t>(off)) == static_cast<ssize_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

int run(const std::vector<std::string>& args) {
  std::string bad;
  auto o = parse_options(args,
                         {"--file", "--size", "--time-ms", "--workloads", "--engines", "--out",
                          "--mem", "--backend-engine", "--poll-us", "--poll-adapt", "--backend-poll-us", "--guest-cmdline",
                          "--medium", "--vcpus"},
                         {"--keep-services"}, &bad);
  if (!o || !o->positional.empty())
    return fail("bench", "bad argument " + bad + " (see `pvio help`)");
  std::uint64_t size = 256ull << 20, time_ms = 2000, poll_us = 200, poll_adapt = 1;
  BootOptions bo;
  if ((o->has("--size") && !parse_bytes(o->get("--size"), &size)) ||
      (o->has("--time-ms") && !parse_uint(o->get("--time-ms"), &time_ms)) ||
      (o->has("--mem") && !parse_bytes(o->get("--mem"), &bo.mem_bytes)) ||
      (o->has("--poll-us") && !parse_uint(o->get("--poll-us"), &poll_us)) ||
      (o->has("--poll-adapt") && (!parse_uint(o->get("--poll-adapt"), &poll_adapt) || poll_adapt > 1)))
    return fail("bench", "bad number in --size, --time-ms, --mem, --poll-us or --poll-adapt");
  std::uint64_t vcpus = 1;
  if (o->has("--vcpus") && (!parse_uint(o->get("--vcpus"), &vcpus) || vcpus == 0 || vcpus > 8))
    return fail("bench", "--vcpus is 1 .. 8");
  // The main table runs one vCPU (one queue); --vcpus adds the multi-queue rows, or sets the
  // vCPUs of the one --guest-cmdline boot.
  const unsigned max_vcpus = static_cast<unsigned>(vcpus);
  if (o->has("--guest-cmdline")) bo.vcpus = max_vcpus;
  std::vector<Workload> ws;
  std::vector<NetWorkload> nws;
  for (const auto& name : split(o->get("--workloads", "rand4k-qd1,rand4k-qd32,seqread64k,seqwrite64k,"
                                                      "tx64,tx1500,rx64,rx1500,pingpong"))) {
    auto it = std::find_if(kWorkloads.begin(), kWorkloads.end(), [&](const Workload& w) { return w.name == name; });
    if (const NetWorkload* nw = net_workload(name)) {
      nws.push_back(*nw);
      continue;
    }
    if (it == kWorkloads.end())
      return fail("bench", "unknown workload " + name +
                               " (rand4k-qd1, rand4k-qd32, seqread64k, seqwrite64k, tx64, tx1500, rx64, rx1500, pingpong)");
    ws.push_back(*it);
  }
  std::vector<std::string> engines;
  const std::string medium_opt = o->get("--medium", "memory");
  if (medium_opt != "memory" && medium_opt != "disk") return fail("bench", "--medium is memory or disk");
  if (o->has("--medium") && o->has("--file")) return fail("bench", "--medium names where a new image goes; not with --file");
  for (const auto& e : split(o->get("--engines", "ide,pv,e1000,native"))) {
    if (e != "ide" && e != "pv" && e != "e1000" && e != "native")
      return fail("bench", "engines are ide, pv, e1000, native");
    engines.push_back(e);
  }
  bo.backend_engine = o->get("--backend-engine", "auto");
  bo.hv = find_program("pvio-hv");
  bo.kernel = guest_kernel();
  bo.timeout_s = static_cast<int>(time_ms / 1000) * 2 + 60;
  if (bo.kernel.empty()) return fail("bench", "cannot find pvio-guest.elf (set PVIO_GUEST)");
  if (::access("/dev/kvm", R_OK | W_OK) != 0) return fail("bench", "/dev/kvm is not usable here");

  // Work dir for logs (and the image, unless --file).
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/pvio-bench-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return fail("bench", std::string("mkdtemp: ") + std::strerror(errno));
  bo.workdir = tmpl;
  const bool own_image = !o->has("--file");
  // The default image lives in memory (/dev/shm when there is room), so every engine reads the
  // same cached bytes and the table compares the I/O paths, not the host's disk. --medium disk
  // puts it on the work dir's file system, written and then dropped from the page cache.
  std::string image_dir = bo.workdir;
  if (std::error_code ec; own_image && medium_opt == "memory" &&
                          std::filesystem::space("/dev/shm", ec).available > 2 * size && !ec)
    image_dir = "/dev/shm";
  bo.file = own_image ? image_dir + "/pvio-bench-" + std::to_string(::getpid()) + ".img"
                      : std::filesystem::absolute(o->get("--file")).string();
  if (own_image && bo.file.size() < sizeof(g_image_to_remove))
    std::memcpy(g_image_to_remove, bo.file.c_str(), bo.file.size() + 1);
  struct sigaction sa{};
  sa.sa_handler = on_interrupt;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  if (own_image) {
    std::fprintf(stderr, "pvio bench: creating a %" PRIu64 " MiB disk image\n", size >> 20);
    if (!make_image(bo.file, size)) return fail("bench", "cannot create " + bo.file);
    if (medium_opt == "disk") drop_cached(bo.file);
  } else {
    struct stat st{};
    if (::stat(bo.file.c_str(), &st) != 0) return fail("bench", "cannot stat " + bo.file);
    size = std::min<std::uint64_t>(size, static_cast<std::uint64_t>(st.st_size));
  }

  // Dom0 services: start what is not running, and stop again only what we started.
  const bool had_xenstored = running_pid("xenstored").has_value();
  const bool had_blkback = running_pid("blkback").has_value();
  const bool had_netback = running_pid("netback").has_value();
  // The network rows need a pvio-netback whose uplink is the bench's memif socket: one
  // already running serves vifs with its own uplinks, so then they are not measured.
  const auto has_engine = [&](const char* e) { return std::find(engines.begin(), engines.end(), e) != engines.end(); };
  const bool want_net = !nws.empty() && (has_engine("pv") || has_engine("e1000"));
  // The e1000's wire: a TAP that pvio-netback serves as a second uplink.
  const std::string e1000_if = "pvb" + std::to_string(::getpid() % 1000000) + "e1k";
  const std::string uplink_socket = bo.workdir + "/uplink-memif.sock";
  std::string net_unavailable;
  if (want_net && had_netback)
    net_unavailable = "pvio-netback already runs in " + run_dir() +
                      " with its own uplinks; stop it (pvio down) or set PVIO_RUN_DIR to a fresh directory";
  std::vector<std::string> up_args;
  if (want_net && !had_netback) {
    up_args = {"--uplink", "memif:" + uplink_socket, "--vif-uplink", "none"};
    if (has_engine("e1000")) up_args.insert(up_args.end(), {"--uplink", "tap:" + e1000_if});
  } else {
    up_args = {"--no-netback"};
  }
  if (o->has("--backend-poll-us")) {
    up_args.push_back("--backend-poll-us");
    up_args.push_back(o->get("--backend-poll-us"));
  }
  if (quietly([&] { return verbs().at("up").run(up_args); }) != 0) {
    if (own_image) std::filesystem::remove(bo.file);
    return fail("bench", "cannot start the Dom0 services (pvio up); see " + run_dir());
  }
  if (!had_blkback) g_started_pids[0] = running_pid("blkback").value_or(-1);
  if (!had_xenstored) g_started_pids[1] = running_pid("xenstored").value_or(-1);
  if (!had_netback) g_started_pids[2] = running_pid("netback").value_or(-1);
  std::fprintf(stderr, "pvio bench: xenstored %s, blkback %s, netback %s (run dir %s)\n",
               had_xenstored ? "running" : "started",
               had_blkback ? "running" : "started",
               had_netback ? "running" : want_net ? "started with a memif uplink" : "not needed",
               run_dir().c_str());
  auto stop_services = [&] {
    if (o->has("--keep-services")) return;
    if (!had_netback && want_net) stop_process("netback");
    if (!had_blkback) stop_process("blkback");
    if (!had_xenstored) stop_process("xenstored");
  };
  auto xs = connect_xenstore("bench");
  if (!xs) {
    stop_services();
    if (own_image) std::filesystem::remove(bo.file);
    return 1;
  }

  if (o->has("--guest-cmdline")) {  // one boot, for debugging the guest side
    const Boot b = boot_guest(bo, *xs, o->get("--guest-cmdline"));
    std::fputs(b.serial.c_str(), stdout);
    std::fputs(b.err.c_str(), stderr);
    if (!b.why.empty()) std::fprintf(stderr, "pvio bench: %s\n", b.why.c_str());
    stop_services();
    if (own_image) std::filesystem::remove(bo.file);
    std::filesystem::remove_all(bo.workdir);  // the console is printed; nothing else to keep
    return b.status == 0 ? 0 : 1;
  }

  const std::string medium = native::describe_medium(bo.file);
  const bool with_fio = fio_installed();
  std::fprintf(stderr, "pvio bench: image %s on %s; fio %s\n", bo.file.c_str(), medium.c_str(),
               with_fio ? "installed" : "not installed (no anchor)");
  std::vector<Result> rs;
  std::vector<std::string> disk_engines;
  for (const auto& e : engines)
    if (e != "e1000") disk_engines.push_back(e);
  const std::size_t total = ws.size() * disk_engines.size();
  std::size_t n = 0;
  for (const auto& w : ws) {
    for (const auto& e : disk_engines) {
      std::fprintf(stderr, "[%zu/%zu] %-7s %-12s ... ", ++n, total, e.c_str(), w.name.c_str());
      std::fflush(stderr);
      if (e == "native") {
        auto nrs = native_runs(bo.file, w, time_ms, size, with_fio);
        const Result* b = best_native(nrs, w.name);
        const Result* f = find(nrs, "fio", w.name);
        std::fprintf(stderr, "best %s%s\n", b ? b->engine.c_str() : "none",
                     f ? (", fio " + fmt("%.0f", f->iops())).c_str() : "");
        for (auto& r : nrs) rs.push_back(std::move(r));
        continue;
      }
      Result r = guest_run(bo, *xs, e, w, time_ms, size, poll_us, poll_adapt != 0);
      if (r.ok) std::fprintf(stderr, "%.0f IOPS, p50 %.1f us\n", r.iops(), r.p50_ns / 1e3);
      else std::fprintf(stderr, "failed: %s\n", r.why.c_str());
      rs.push_back(std::move(r));
    }
  }
  // Multi-queue: the PV disk with 1, 2, 4 ... up to --vcpus vCPUs (one queue each, each at
  // the workload's depth) beside the native engines with as many host threads.
  std::vector<std::uint64_t> queue_counts;
  if (max_vcpus > 1 && has_engine("pv") && has_engine("native")) {
    for (std::uint64_t q = 1; q < max_vcpus; q *= 2) queue_counts.push_back(q);
    queue_counts.push_back(max_vcpus);
  }
  const std::size_t mq_total = queue_counts.size() * ws.size() * 2;
  std::size_t m = 0;
  for (const auto& w : ws) {
    for (const std::uint64_t q : queue_counts) {
      const std::string row = mq_row(w.name, q);
      std::fprintf(stderr, "[%zu/%zu] pv      %-18s ... ", ++m, mq_total, row.c_str());
      std::fflush(stderr);
      BootOptions mq_bo = bo;
      mq_bo.vcpus = static_cast<unsigned>(q);
      Result r = guest_run(mq_bo, *xs, "pv", w, time_ms, size, poll_us, poll_adapt != 0);
      r.workload = row;
      r.detail += ",\"queues\":" + std::to_string(q);
      if (r.ok) std::fprintf(stderr, "%.0f IOPS, p50 %.1f us\n", r.iops(), r.p50_ns / 1e3);
      else std::fprintf(stderr, "failed: %s\n", r.why.c_str());
      rs.push_back(std::move(r));
      std::fprintf(stderr, "[%zu/%zu] native  %-18s ... ", ++m, mq_total, row.c_str());
      std::fflush(stderr);
      auto nrs = native_runs(bo.file, w, time_ms, size, false, q, row);
      const Result* b = best_native(nrs, row);
      std::fprintf(stderr, "best %s\n", b ? b->engine.c_str() : "none");
      for (auto& x : nrs) rs.push_back(std::move(x));
    }
  }
  // Network rows: pv through pvio-netback to pvio-netpeer, native on pvio-netpeer alone.
  std::vector<std::string> net_engines;
  for (const auto& e : engines)
    if (e == "pv" || e == "e1000" || e == "native") net_engines.push_back(e);
  const std::size_t net_total = nws.size() * net_engines.size();
  std::size_t k = 0;
  for (const auto& w : nws) {
    for (const auto& e : net_engines) {
      std::fprintf(stderr, "[%zu/%zu] %-7s %-12s ... ", ++k, net_total, e.c_str(), w.name.c_str());
      std::fflush(stderr);
      Result r;
      if (e == "native") {
        r = net_native_run(bo, w, time_ms);
      } else if (!net_unavailable.empty()) {
        r.engine = e;
        r.workload = w.name;
        r.qd = 1;
        r.why = net_unavailable;
      } else {
        // pvio-netback creates its TAP uplinks once it runs, after `pvio up` returned.
        for (int i = 0; e == "e1000" && i < 100 && ::if_nametoindex(e1000_if.c_str()) == 0; ++i)
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        r = net_guest_run(bo, *xs, e, w, time_ms, uplink_socket, e1000_if, poll_us);
      }
      if (!r.ok) std::fprintf(stderr, "failed: %s\n", r.why.c_str());
      else if (w.op == "echo") std::fprintf(stderr, "p50 %.1f us, p99 %.1f us\n", r.p50_ns / 1e3, r.p99_ns / 1e3);
      else std::fprintf(stderr, "%.0f packets/s\n", r.iops());
      rs.push_back(std::move(r));
    }
  }
  stop_services();

  std::printf("\nmedium: %s (%s)\n", medium.c_str(), bo.file.c_str());
  if (!ws.empty()) print_table(rs, ws, engines);
  if (!queue_counts.empty()) print_mq_table(rs, ws, queue_counts);
  if (!nws.empty()) print_net_table(rs, nws, net_engines);
  const auto ts = targets(rs);
  std::printf("\ntargets (same run):\n");
  for (const auto& t : ts)
    std::printf("  %-52s %s %s\n", t.what.c_str(), !t.checked ? "not measured" : t.met ? "met" : "SHORT",
                t.figure.c_str());
  const std::string out = o->get("--out", bo.workdir);
  std::filesystem::create_directories(out);
  const std::string json_path = out + "/pvio-bench.json", svg_path = out + "/pvio-bench.svg";
  std::ofstream(json_path) << to_json(rs, ts, ws, bo.file, medium, size, time_ms);
  std::vector<std::string> groups;
  for (const auto& w : ws) groups.push_back(w.name);
  for (const auto& w : nws) groups.push_back(w.name);
  std::vector<std::string> svg_engines = ws.empty() ? std::vector<std::string>{} : row_engines(engines);
  if (!nws.empty() && std::find(engines.begin(), engines.end(), "native") != engines.end())
    svg_engines.push_back("native");
  if (!nws.empty() && ws.empty() && std::find(engines.begin(), engines.end(), "pv") != engines.end())
    svg_engines.insert(svg_engines.begin(), "pv");
  if (!nws.empty() && ws.empty() && std::find(engines.begin(), engines.end(), "e1000") != engines.end())
    svg_engines.insert(svg_engines.begin() + (svg_engines.empty() || svg_engines[0] != "pv" ? 0 : 1), "e1000");
  std::ofstream(svg_path) << to_svg(rs, groups, svg_engines);
  std::printf("\nwrote %s and %s; guest logs in %s\n", json_path.c_str(), svg_path.c_str(),
              bo.workdir.c_str());
  if (own_image) std::filesystem::remove(bo.file);
  bool all_ok = true;
  for (const auto& r : rs) all_ok = all_ok && (r.ok || r.engine == "fio");  // fio: an anchor only
  return all_ok ? 0 : 1;
}

}  // namespace

PVIO_VERB("bench",
          "[--workloads rand4k-qd1,rand4k-qd32,seqread64k,seqwrite64k,tx64,tx1500,rx64,rx1500,pingpong] "
          "[--engines ide,pv,e1000,native] "
          "[--file IMG | --medium memory|disk] [--size 256M] [--time-ms 2000] [--out DIR (default: the run's temp dir)] [--mem 256M] "
          "[--backend-engine auto|uring|aio|sync|null] [--poll-us 200] [--poll-adapt 1] [--backend-poll-us 0] [--vcpus N] [--keep-services] "
          "[--guest-cmdline \"...\"]",
          "emulated IDE vs PV disk vs every host-native engine (and fio) on one file, and PV network vs the "
          "emulated e1000 vs a host DPDK loop on the same uplink vdev, in one run (the main job)", run);

}  // namespace pvio::cli
