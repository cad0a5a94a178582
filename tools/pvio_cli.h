// The `pvio` toolstack CLI: the verb registry and what verbs share (run dir, finding and
// starting the daemons, pid files, the xenstore connection, option parsing). Each verb lives
// in its own tools/pvio_<verb>.cc and registers itself with a static PVIO_VERB(...).
#pragma once

#include <sys/stat.h>

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

#include "pvio/xen/xen.h"
#include "pvio/xenstore/client.h"

namespace pvio::cli {

struct Verb {
  const char* name;
  const char* usage;    // arguments after the verb
  const char* summary;  // one line for `pvio help`
  int (*run)(const std::vector<std::string>& args);  // exit status
};

// Static registration: `static pvio::cli::VerbRegistration reg{{"name", ...}};`
struct VerbRegistration {
  explicit VerbRegistration(const Verb& v);
};
const std::map<std::string, Verb>& verbs();

// Prints "pvio <verb>: <message>" to stderr and returns 1.
int fail(const std::string& verb, const std::string& message);

// Options: `--name value` pairs and `--flag`s, and positional arguments, in order.
struct Options {
  std::map<std::string, std::string> values;
  std::vector<std::string> positional;
  bool has(const std::string& o) const { return values.contains(o); }
  std::string get(const std::string& o, const std::string& fallback = {}) const;
};
// `with_value` lists the options that take a value, `flags` those that do not; anything else
// starting with "--" is an error (returned in *bad).
std::optional<Options> parse_options(const std::vector<std::string>& args,
                                     const std::vector<std::string>& with_value,
                                     const std::vector<std::string>& flags, std::string* bad);
bool parse_domid(const std::string& s, domid_t* out);  // 1 .. DOMID_FIRST_RESERVED-1
bool parse_uint(const std::string& s, std::uint64_t* out);

// $PVIO_RUN_DIR, else $XDG_RUNTIME_DIR/pvio, else /run/pvio; created (0700) if missing.
std::string run_dir();
// $XENSTORED_PATH, else <run dir>/xenstored.sock (what pvio-xenstored listens on).
std::string xenstored_socket();
// Connects to pvio-xenstored; prints why not and returns null on failure.
std::unique_ptr<xs::Client> connect_xenstore(const std::string& verb);

// The path of a pvio program: $PVIO_<NAME> (e.g. PVIO_XENSTORED for pvio-xenstored), else
// beside this executable or in the build tree's folders next to it, else the bare name for
// a PATH search.
std::string find_program(const std::string& name);

// Starts `argv` in its own session with stdin from /dev/null and stdout/stderr appended to
// `log_path`. The pid, or -errno.
pid_t spawn(const std::vector<std::string>& argv, const std::string& log_path);
// Polls `ready` every 20 ms for up to timeout_ms; gives up early if `pid` exits.
bool wait_ready(pid_t pid, int timeout_ms, const std::function<bool()>& ready);

// Pid files: <run dir>/<name>.pid.
std::string pid_file(const std::string& name);

// What `pvio create` records in the run directory about a user-mode domain's PV disk, so
// block-attach can wait until the disk is usable.
struct UserDomainVbd {
  std::uint32_t devid = 0;
  std::string fuse_mountpoint;  // empty: no FUSE exposure
};
bool write_user_domain_vbd(domid_t domid, const UserDomainVbd& vbd);
std::optional<UserDomainVbd> read_user_domain_vbd(domid_t domid);
void remove_user_domain_vbd(domid_t domid);
bool write_pid_file(const std::string& name, pid_t pid);
// Whether `pid` runs (not exited, not a zombie); reaps it if it is our exited child.
bool process_alive(pid_t pid);
// The pid in the file if that process is alive, else nullopt.
std::optional<pid_t> running_pid(const std::string& name);
// SIGTERM, up to timeout_ms for it to exit, then SIGKILL. Removes the pid file.
void stop_process(const std::string& name, int timeout_ms = 5000);

// A xenstore transaction body retried while the commit answers EAGAIN.
// The detach half of xl's device removal, shared by block-detach and network-detach: unless
// `force`, or the frontend never got past `connected_above` (nothing to close), the backend goes
// online=0 and Closing and must reach Closed within `timeout_ms`; then both directories go in
// one transaction. Returns the exit status, having printed the failure for `verb`.
int close_and_remove_device(xs::Client& xs, const std::string& verb, const std::string& be,
                            const std::string& fe, int connected_above, bool force,
                            int timeout_ms);

xs::XsError with_transaction(xs::Client& c, const std::function<xs::XsError(uint32_t tx)>& body);

// A domain's xenstore home as libxl writes it, in one transaction: /local/domain/N with name,
// domid, memory/target (KiB), device/ and control/ owned by Dom0 and readable by the guest
// (libxl's roperm); control/shutdown, data/, drivers/, feature/, attr/, error/ owned by the
// guest (rwperm).
xs::XsError write_domain_home(xs::Client& c, domid_t domid, const std::string& name,
                              uint64_t memory_kib);

// Xen's name of a vbd devid (xvda for 51712), or the number.
std::string vdev_name(uint32_t devid);

// A virtual block device as xl writes it (docs/toolstack.md).
struct VbdSpec {
  uint32_t devid = 0;
  std::string params;  // absolute path of the file or block device
  std::string mode;    // "r" or "w"
  std::string engine;  // optional blkback engine
  struct stat st{};    // of params
};
// Writes the vbd's backend and frontend directories in one transaction.
xs::XsError write_vbd(xs::Client& c, domid_t domid, const VbdSpec& spec);

// A virtual network interface as xl writes it (libxl's vif device): the backend directory
// /local/domain/0/backend/vif/<domid>/<devid> (Dom0's, readable by the guest) and the frontend
// directory /local/domain/<domid>/device/vif/<devid> (the guest's, readable by Dom0), both
// with `mac` and `handle`, in one transaction. `uplink` (empty: the backend's default) names
// the backend port the vif is switched to. Shared by `pvio create --vif` and
// `pvio network-attach`.
struct VifSpec {
  uint32_t devid = 0;
  std::string mac;     // aa:bb:cc:dd:ee:ff
  std::string uplink;  // optional
};
xs::XsError write_vif(xs::Client& c, domid_t domid, const VifSpec& vif);
// Xen's vbd numbering (docs/misc/vbd-interface): xvdX is (202 << 8) | (disk << 4) for the
// first 16 disks, (1 << 28) | (disk << 8) beyond. A bare number is taken as the devid itself.
bool parse_vdev(const std::string& v, uint32_t* devid);
// Why `path` (as the user gave it: `given`) cannot back a disk, or "" if it can: it must exist,
// be a regular file or a block device, and hold at least one 512-byte sector.
std::string unusable_backing(const std::string& given, const std::string& path,
                             const std::error_code& ec);

// "aa:bb:cc:dd:ee:ff", hex digits, unicast; normalised to lower case.
bool parse_mac(const std::string& s, std::string* out);
// Xen's OUI 00:16:3e with three random bytes, as xl picks.
std::string random_mac();

}  // namespace pvio::cli

#define PVIO_CLI_CONCAT2(a, b) a##b
#define PVIO_CLI_CONCAT(a, b) PVIO_CLI_CONCAT2(a, b)
// One per tools/pvio_<verb>.cc: PVIO_VERB("name", "usage", "summary", run_function);
#define PVIO_VERB(name, usage, summary, fn)                                  \
  static const ::pvio::cli::VerbRegistration PVIO_CLI_CONCAT(pvio_verb_, __LINE__) { \
    ::pvio::cli::Verb { name, usage, summary, fn }                           \
  }
