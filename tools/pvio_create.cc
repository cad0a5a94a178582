// pvio create: start a user-mode domain (pvio-domain), write its xenstore home the way xl
// does, and introduce it to xenstored, which then serves the guest over its ring page. With
// --vif MAC the domain runs netfront for vif 0, which appears on the host as a TAP interface,
// and the vif's nodes are written as `pvio network-attach` writes them.
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "pvio/control/client.h"
#include "pvio/control/run_dir.h"
#include "pvio_cli.h"

namespace pvio::cli {
namespace {

using xs::XsError;

int run(const std::vector<std::string>& args) {
  std::string bad;
  auto o = parse_options(args, {"--domid", "--name", "--memory-mib", "--grant-frames", "--vbd",
                                "--fuse", "--vif", "--tap", "--uplink"},
                         {"--xenstore-relay"}, &bad);
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

  // The toolstack learns the xenstore page and port as xl does from the domain builder: here
  // by attaching over the control protocol (and detaching again).
  std::unique_ptr<control::ControlClient> cc;
  if (!wait_ready(pid, 5000, [&] { return control::ControlClient::attach(sock, domid, &cc) == 0; })) {
    stop_process(proc);
    remove_user_domain_vbd(domid);
    return fail("create", "pvio-domain did not come up; see " + log);
  }
  const uint64_t gfn = cc->xenstore_gfn();
  const evtchn_port_t port = cc->xenstore_port();
  cc->detach();
  cc.reset();

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
          "--xenstore-relay]",
          "start a user-mode domain and introduce it to xenstore", run);

}  // namespace pvio::cli
