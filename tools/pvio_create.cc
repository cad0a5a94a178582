// pvio create: start a domain, write its xenstore home the way xl does, and introduce it to
// xenstored, which then serves the guest over its ring page. Two kinds: a user-mode domain
// (pvio-domain, --domid N; with --vif MAC it runs netfront for vif 0, which appears on the
// host as a TAP interface) and an HVM/PVH domain run by pvio-hv (--kernel ELF). Vifs are
// written as `pvio network-attach` writes them, vbds as `pvio block-attach` does.
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <filesystem>

#include "pvio/control/client.h"
#include "pvio/control/run_dir.h"
#include "pvio_cli.h"

namespace pvio::cli {
namespace {

using xs::XsError;

// The first domid without a home in xenstore and without a process, as xl allocates.
domid_t free_domid(xs::Client& xs) {
  for (domid_t d = 1; d < xen::DOMID_FIRST_RESERVED; ++d)
    if (!running_pid("domain-" + std::to_string(d)) &&
        !xs.read("/local/domain/" + std::to_string(d) + "/domid").ok())
      return d;
  return 0;
}

// Attaches once over the control protocol to learn the xenstore page and port, as xl learns
// them from the domain builder (the process serves the protocol on the domain's socket).
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

// `pvio create --kernel ELF`: pvio-hv runs the domain (PVH or pvio's own ELF kernels).
int run_hvm(const Options& o) {
  const char* usage = "usage: pvio create --kernel ELF [--domid N] [--name NAME] [--mem SIZE] "
                      "[--cmdline STR] [--vbd DEVID:IMG[:r]] [--vif MAC [--uplink NAME]] "
                      "[--nic e1000[,ifname=IF][,mac=MAC]]";
  domid_t domid = 0;
  if (!o.positional.empty() || (o.has("--domid") && !parse_domid(o.get("--domid"), &domid)) ||
      o.has("--fuse") || o.has("--xenstore-relay") || o.has("--memory-mib") ||
      o.has("--grant-frames"))
    return fail("create", usage);
  // --vbd DEVID:IMG[:r]: a disk (devid as in block-attach: a number or xvdX).
  VbdSpec vbd;
  bool has_vbd = false;
  if (o.has("--vbd")) {
    const std::string v = o.get("--vbd");
    const auto colon = v.find(':');
    uint64_t devid = 0;
    if (colon == std::string::npos || !parse_uint(v.substr(0, colon), &devid) || devid == 0 ||
        devid > 0xFFFFFFFFu)
      return fail("create", "--vbd is DEVID:IMG[:r] with a numeric devid (xvda = 51712)");
    std::string img = v.substr(colon + 1);
    vbd.mode = "w";
    if (img.size() > 2 && img.ends_with(":r")) {
      vbd.mode = "r";
      img.resize(img.size() - 2);
    }
    std::error_code ec;
    vbd.params = std::filesystem::absolute(img, ec).lexically_normal();
    if (ec || ::stat(vbd.params.c_str(), &vbd.st) != 0 ||
        !(S_ISREG(vbd.st.st_mode) || S_ISBLK(vbd.st.st_mode)))
      return fail("create", img + " is not a regular file or block device");
    vbd.devid = static_cast<uint32_t>(devid);
    has_vbd = true;
  }
  VifSpec vif;
  if (o.has("--vif")) {
    if (!parse_mac(o.get("--vif"), &vif.mac))
      return fail("create", "--vif takes a unicast MAC address aa:bb:cc:dd:ee:ff");
    vif.uplink = o.get("--uplink");
  } else if (o.has("--uplink") || o.has("--tap")) {
    return fail("create", usage);
  }
  const std::string mem = o.get("--mem", "64M");
  uint64_t mem_mib = 0;
  {
    std::string digits = mem;
    if (!digits.empty() && (digits.back() == 'M' || digits.back() == 'm')) digits.pop_back();
    if (!parse_uint(digits, &mem_mib) || mem_mib < 4 || mem_mib > 3072)
      return fail("create", "--mem is 4M .. 3072M");
  }

  auto xs = connect_xenstore("create");
  if (!xs) return 1;
  if (domid == 0) domid = free_domid(*xs);
  const std::string d = std::to_string(domid);
  const std::string proc = "domain-" + d;
  const std::string home = "/local/domain/" + d;
  if (domid == 0 || running_pid(proc) || xs->read(home + "/domid").ok())
    return fail("create", "domain " + d + " already exists");
  const std::string name = o.get("--name", "domain-" + d);

  const std::string sock = control::domain_socket_path(domid);
  std::vector<std::string> argv = {find_program("pvio-hv"), "--kernel", o.get("--kernel"),
                                   "--domid", d, "--mem", std::to_string(mem_mib) + "M",
                                   "--control-socket", sock,
                                   // The PV console, for `pvio console` and its log.
                                   "--console-socket", run_dir() + "/" + proc + ".console.sock",
                                   "--console-log", run_dir() + "/" + proc + ".console.log"};
  if (o.has("--cmdline")) argv.insert(argv.end(), {"--cmdline", o.get("--cmdline")});
  // The emulated e1000 (pvio-hv checks the value): its wire is host interface IF, normally a
  // TAP that pvio-netback serves (`pvio up --uplink tap:IF`).
  if (o.has("--nic")) argv.insert(argv.end(), {"--nic", o.get("--nic")});
  const std::string log = run_dir() + "/" + proc + ".log";
  const pid_t pid = spawn(argv, log);
  if (pid < 0) return fail("create", std::string("cannot start pvio-hv: ") + std::strerror(-pid));
  write_pid_file(proc, pid);
  uint64_t gfn = 0;
  evtchn_port_t port = 0;
  if (!learn_xenstore_ring(pid, domid, sock, &gfn, &port)) {
    stop_process(proc);
    return fail("create", "pvio-hv did not come up; see " + log);
  }
  // Home and devices before INTRODUCE, so the guest finds its devices at its first look.
  XsError e = write_domain_home(*xs, domid, name, mem_mib * 1024);
  if (e == XsError::None && has_vbd) e = write_vbd(*xs, domid, vbd);
  if (e == XsError::None && !vif.mac.empty()) e = write_vif(*xs, domid, vif);
  if (e == XsError::None) e = xs->introduce(domid, gfn, port);
  if (e != XsError::None) {
    xs->rm(home);
    xs->rm("/local/domain/0/backend/vbd/" + d);
    xs->rm("/local/domain/0/backend/vif/" + d);
    stop_process(proc);
    return fail("create", std::string("xenstore: ") + xs::xs_error_name(e));
  }
  std::printf("domain %u (%s) created: pvio-hv pid %d, xenstore gfn %llu port %u\n", domid,
              name.c_str(), static_cast<int>(pid), static_cast<unsigned long long>(gfn), port);
  return 0;
}

int run(const std::vector<std::string>& args) {
  std::string bad;
  auto o = parse_options(args, {"--domid", "--name", "--memory-mib", "--grant-frames", "--vbd",
                                "--fuse", "--vif", "--tap", "--uplink", "--kernel", "--mem",
                                "--cmdline", "--nic"},
                         {"--xenstore-relay"}, &bad);
  if (o && o->has("--kernel")) return run_hvm(*o);
  if (o && (o->has("--mem") || o->has("--cmdline") || o->has("--nic")))
    return fail("create", "--mem, --cmdline and --nic need --kernel");
  domid_t domid = 0;
  uint64_t memory_mib = 16, grant_frames = 4;
  if (!o || !o->positional.empty() || !parse_domid(o->get("--domid"), &domid) ||
      (o->has("--memory-mib") && !parse_uint(o->get("--memory-mib"), &memory_mib)) ||
      (o->has("--grant-frames") && !parse_uint(o->get("--grant-frames"), &grant_frames)) ||
      (o->has("--fuse") && !o->has("--vbd")) ||
      (o->has("--vbd") && o->has("--xenstore-relay")) ||
      (o->has("--vif") && (o->has("--vbd") || o->has("--xenstore-relay"))) ||
      ((o->has("--tap") || o->has("--uplink")) && !o->has("--vif")))
    return fail("create", "usage: pvio create --domid N [--name NAME] [--memory-mib M] "
                          "[--vbd DEVID [--fuse MOUNTPOINT] | --vif MAC [--tap NAME] "
                          "[--uplink NAME] | --xenstore-relay]");
  VifSpec vif;
  if (o->has("--vif")) {
    if (!parse_mac(o->get("--vif"), &vif.mac)) return fail("create", "bad --vif MAC");
    vif.uplink = o->get("--uplink");
  }
  const std::string name = o->get("--name", "domain-" + std::to_string(domid));
  const std::string proc = "domain-" + std::to_string(domid);

  auto xs = connect_xenstore("create");
  if (!xs) return 1;
  const std::string home = "/local/domain/" + std::to_string(domid);
  if (running_pid(proc) || xs->read(home + "/domid").ok())
    return fail("create", "domain " + std::to_string(domid) + " already exists");

  const std::string sock = control::domain_socket_path(domid);
  std::vector<std::string> argv = {find_program("pvio-domain"), "--domid", std::to_string(domid),
                                   "--memory-mib", std::to_string(memory_mib),
                                   "--grant-frames", std::to_string(grant_frames),
                                   "--socket", sock};
  if (o->has("--xenstore-relay")) {
    argv.push_back("--xenstore-relay");
    argv.push_back(run_dir() + "/" + proc + ".xenstore.sock");
  }
  // A PV disk served by blkfront inside the domain (connects once `pvio block-attach` gives
  // it a backend), optionally exposed on the host through FUSE.
  UserDomainVbd vbd;
  if (o->has("--vbd")) {
    uint64_t devid = 0;
    if (!parse_uint(o->get("--vbd"), &devid) || devid == 0 || devid > 0xFFFFFFFFu)
      return fail("create", "--vbd takes a device number (51712 is xvda)");
    vbd.devid = static_cast<uint32_t>(devid);
    argv.insert(argv.end(), {"--vbd", o->get("--vbd")});
    if (o->has("--fuse")) {
      // The mount point is made if missing, as `mount` users expect a tool to do for them.
      std::error_code ec;
      vbd.fuse_mountpoint = std::filesystem::absolute(o->get("--fuse"), ec).lexically_normal();
      std::filesystem::create_directories(vbd.fuse_mountpoint, ec);
      if (ec) return fail("create", "cannot make " + o->get("--fuse") + ": " + ec.message());
      argv.insert(argv.end(), {"--fuse", vbd.fuse_mountpoint});
    }
  }
  // A PV NIC served by netfront inside the domain, exposed on the host as a TAP interface.
  if (o->has("--vif")) {
    argv.insert(argv.end(), {"--vif", "0"});
    if (o->has("--tap")) argv.insert(argv.end(), {"--tap", o->get("--tap")});
  }
  const std::string log = run_dir() + "/" + proc + ".log";
  const pid_t pid = spawn(argv, log);
  if (pid < 0) return fail("create", std::string("cannot start pvio-domain: ") + std::strerror(-pid));
  write_pid_file(proc, pid);
  if (vbd.devid != 0) write_user_domain_vbd(domid, vbd);

  uint64_t gfn = 0;
  evtchn_port_t port = 0;
  if (!learn_xenstore_ring(pid, domid, sock, &gfn, &port)) {
    stop_process(proc);
    remove_user_domain_vbd(domid);
    return fail("create", "pvio-domain did not come up; see " + log);
  }

  XsError e = write_domain_home(*xs, domid, name, memory_mib * 1024);
  if (e == XsError::None) e = xs->introduce(domid, gfn, port);
  if (e == XsError::None && !vif.mac.empty()) e = write_vif(*xs, domid, vif);
  if (e != XsError::None) {
    xs->rm(home);
    xs->rm("/local/domain/0/backend/vif/" + std::to_string(domid));
    stop_process(proc);
    remove_user_domain_vbd(domid);
    return fail("create", std::string("xenstore: ") + xs::xs_error_name(e));
  }
  std::printf("domain %u (%s) created: pid %d, xenstore gfn %llu port %u\n", domid, name.c_str(),
              static_cast<int>(pid), static_cast<unsigned long long>(gfn), port);
  return 0;
}

}  // namespace

PVIO_VERB("create", "--domid N [--name NAME] [--memory-mib M] [--grant-frames G] "
          "[--vbd DEVID [--fuse MOUNTPOINT] | --vif MAC [--tap NAME] [--uplink NAME] | "
          "--xenstore-relay]  |  --kernel ELF [--domid N] [--name NAME] [--mem SIZE] "
          "[--cmdline STR] [--vbd DEVID:IMG[:r]] [--vif MAC [--uplink NAME]] [--nic e1000[,ifname=IF]]",
          "start a user-mode domain, or an HVM/PVH domain on pvio-hv, and introduce it", run);

}  // namespace pvio::cli
