// Building and tearing down a domain, shared by `pvio create` (its flags and its xl.cfg file
// form), the per-domain monitor that restarts a domain, `pvio destroy` and `pvio shutdown`.
// A build either leaves a running, introduced domain or nothing at all: no process, no
// xenstore node, no file in the run directory.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pvio_cli.h"
#include "xl_config.h"

namespace pvio::cli {

enum class DomainKind : std::uint8_t { User, Hvm, Pvh };
const char* domain_kind_name(DomainKind k);

// Everything needed to start one domain, checked before anything is started.
struct DomainPlan {
  domid_t domid = 0;  // 0: the first free one
  std::string name;   // empty: domain-<domid>
  DomainKind kind = DomainKind::User;
  std::uint64_t memory_mib = 16;
  unsigned vcpus = 1;
  std::uint64_t grant_frames = 4;  // user-mode domains
  std::string kernel;              // HVM/PVH: the ELF pvio-hv boots
  std::string cmdline;
  // HVM: pvio-hv's emulated NIC (`e1000[,ifname=IF][,mac=MAC]`, checked by pvio-hv); its wire
  // is host interface IF, normally a TAP that pvio-netback serves (`pvio up --uplink tap:IF`).
  std::string nic;
  std::vector<VbdSpec> vbds;  // disks with their images, written as block-attach writes them
  std::vector<VifSpec> vifs;  // written as network-attach writes them
  // User-mode only: the vbd devid pvio-domain serves (with or without an image above: without
  // one, `pvio block-attach` gives it its backend later), its FUSE mount point, the TAP name
  // of its vif, and the xenstore relay (tests, debugging; no devices then).
  std::uint32_t user_vbd = 0;
  std::string fuse_mountpoint;
  std::string tap;
  bool xenstore_relay = false;
  // What the domain's end means to its monitor (xl.cfg's on_poweroff, on_reboot, on_crash).
  OnEvent on_poweroff = OnEvent::Destroy;
  OnEvent on_reboot = OnEvent::Restart;
  OnEvent on_crash = OnEvent::Destroy;
  // Set by the monitor for a restart: the log goes on; a new domain starts a new log (the
  // previous domain's becomes domain-N.log.1).
  bool continue_log = false;
};

// A kernel's kind: PVH when it has Xen's PHYS32 entry note, else HVM (pvio's own ELF
// kernels). nullopt with *err set when the file cannot be read.
std::optional<DomainKind> kernel_kind(const std::string& path, std::string* err);

// Turns an xl.cfg file's typed contents into a plan: resolves vdevs, checks every disk image
// and MAC, picks the kind (PVH when the kernel has Xen's PHYS32 entry note). On failure
// returns false with *err naming the key and the line it was given on.
bool plan_from_config(const DomainConfigFile& cfg, DomainPlan* plan, ConfigError* err);

// Starts the domain: checks the name and domid are free (under the run directory's create
// lock), starts its process (pvio-domain or pvio-hv), learns its xenstore ring over the
// control protocol, writes its home and devices, introduces it and records its kind and vCPUs
// for `pvio list`. On success fills plan->domid and *pid; on failure everything is undone and
// *err says why (with the tail of the process's log when the process failed).
bool build_domain(xs::Client& xs, DomainPlan* plan, pid_t* pid, std::string* err);

// The xenstore and run-directory half of a destroy, once the process is gone: XS_RELEASE,
// /local/domain/N and /local/domain/0/backend/*/N removed, pid files, records and sockets
// removed. `keep_log` keeps domain-N.log (the record of what happened).
void teardown_domain(xs::Client& xs, domid_t domid, bool keep_log);

// What `pvio create` records about a domain for `pvio list` (<run dir>/domain-N.info).
struct DomainRecord {
  DomainKind kind = DomainKind::User;
  unsigned vcpus = 1;
};
std::optional<DomainRecord> read_domain_record(domid_t domid);

// A domain named `what`: its domid if `what` is one (with a home or a process), else the
// domain whose name is `what`. nullopt if there is none.
std::optional<domid_t> find_domain(xs::Client& xs, const std::string& what);

// The monitor's pid file name ("domain-N.monitor") for running_pid/stop_process.
std::string monitor_name(domid_t domid);

// Becomes the monitor of the domain just built by this process (its child `pid`): waits for
// the process to end, reads why from its exit status (pvio-hv's and pvio-domain's codes:
// 0/2 poweroff, 4 reboot, 3 crash, 5 destroyed by the host, anything else a crash) and
// applies the plan's policy: destroy tears everything down; restart builds the domain again
// with the same plan and domid; preserve leaves the xenstore home for `pvio destroy`. Returns
// when there is nothing left to watch.
void monitor_domain(DomainPlan plan, pid_t pid);

// `pvio shutdown` / `pvio reboot`: writes `reason` ("poweroff", "reboot") to the domain's
// control/shutdown and, with -w, waits (at most --timeout S) until the domain is gone.
int request_shutdown(const std::string& verb, const std::vector<std::string>& args,
                     const std::string& reason);

}  // namespace pvio::cli
