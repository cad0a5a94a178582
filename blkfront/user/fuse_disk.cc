// FUSE front of a user-mode guest's PV disk: one regular file backed by blkfront I/O.
//
// Semantics chosen:
//  - direct_io on every open: the kernel passes each read/write through unchanged, so there
//    is no page cache between the application and the PV disk, and a write returns only after
//    the backend answered it. Sector-aligned requests go straight to the disk; unaligned ones
//    are read-modify-write of the covering sectors, serialised among themselves.
//  - fsync/fdatasync: BLKIF_OP_FLUSH_DISKCACHE (or WRITE_BARRIER). When the backend offers
//    neither, fsync still succeeds: nothing is cached on this side (see above), so there is
//    nothing this process could write back.
//  - fallocate(PUNCH_HOLE | KEEP_SIZE): the whole sectors inside go as DISCARD, the partial
//    sectors at the edges are written with zeros; a backend without discard gets zeros
//    written over the whole range. Plain allocation inside the disk is a no-op (the disk is
//    fully provisioned); anything else is EOPNOTSUPP.
//  - The file has the disk's size and cannot be resized (truncate to another size: EPERM).
#define FUSE_USE_VERSION 312
#include "pvio/blkfront_user/fuse_disk.h"

#include <fcntl.h>
#include <fuse3/fuse.h>
#include <linux/falloc.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <signal.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

namespace pvio::blkfront::user {
namespace {

constexpr std::uint64_t kSector = 512;

int to_errno(IoStatus st) {
  switch (st) {
    case IoStatus::Ok: return 0;
    case IoStatus::NotSupported: return -EOPNOTSUPP;
    case IoStatus::Invalid: return -EINVAL;
    case IoStatus::ReadOnly: return -EROFS;
    case IoStatus::NoResources: return -ENOMEM;
    default: return -EIO;
  }
}

struct FuseDisk {
  FuseDisk(Device& d, std::string n) : dev(d), name(std::move(n)) {}
  Device& dev;
  std::string name;  // "/disk"
  std::uint64_t size = 0;
  bool read_only = false;
  std::mutex rmw_mu;  // unaligned writes: one read-modify-write at a time

  static FuseDisk& self() { return *static_cast<FuseDisk*>(fuse_get_context()->private_data); }

  // Bytes [off, off+len) of the disk (inside it) into buf.
  int read_range(char* buf, std::uint64_t off, std::uint64_t len) {
    if (off % kSector == 0 && len % kSector == 0) return to_errno(dev.read(off, buf, len));
    const std::uint64_t a0 = off / kSector * kSector;
    const std::uint64_t a1 = (off + len + kSector - 1) / kSector * kSector;
    std::vector<char> tmp(a1 - a0);
    if (const int rc = to_errno(dev.read(a0, tmp.data(), tmp.size())); rc != 0) return rc;
    std::memcpy(buf, tmp.data() + (off - a0), len);
    return 0;
  }

  int write_range(const char* buf, std::uint64_t off, std::uint64_t len) {
    if (off % kSector == 0 && len % kSector == 0) return to_errno(dev.write(off, buf, len));
    const std::uint64_t a0 = off / kSector * kSector;
    const std::uint64_t a1 = (off + len + kSector - 1) / kSector * kSector;
    std::vector<char> tmp(a1 - a0);
    std::lock_guard lk(rmw_mu);
    // Only the first and last sector hold bytes we do not overwrite.
    if (const int rc = to_errno(dev.read(a0, tmp.data(), kSector)); rc != 0) return rc;
    if (a1 - a0 > kSector) {
      const int rc = to_errno(dev.read(a1 - kSector, tmp.data() + tmp.size() - kSector, kSector));
      if (rc != 0) return rc;
    }
    std::memcpy(tmp.data() + (off - a0), buf, len);
    return to_errno(dev.write(a0, tmp.data(), tmp.size()));
  }

  int zero_range(std::uint64_t off, std::uint64_t len) {
    constexpr std::uint64_t kChunk = 1 << 20;
    const std::vector<char> zeros(std::min<std::uint64_t>(len, kChunk), 0);
    for (std::uint64_t done = 0; done < len;) {
      const std::uint64_t n = std::min<std::uint64_t>(len - done, kChunk);
      if (const int rc = write_range(zeros.data(), off + done, n); rc != 0) return rc;
      done += n;
    }
    return 0;
  }
};

void* op_init(fuse_conn_info* conn, fuse_config* cfg) {
  cfg->direct_io = 1;
  cfg->kernel_cache = 0;
  cfg->use_ino = 0;
  cfg->attr_timeout = 1.0;
  cfg->entry_timeout = 1.0;
  (void)conn;
  return fuse_get_context()->private_data;
}

int op_getattr(const char* path, struct stat* st, fuse_file_info*) {
  FuseDisk& d = FuseDisk::self();
  std::memset(st, 0, sizeof *st);
  st->st_uid = ::getuid();
  st->st_gid = ::getgid();
  if (std::strcmp(path, "/") == 0) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  if (d.name == path) {
    st->st_mode = S_IFREG | (d.read_only ? 0444 : 0644);
    st->st_nlink = 1;
    st->st_size = static_cast<off_t>(d.size);
    st->st_blocks = static_cast<blkcnt_t>(d.size / 512);
    st->st_blksize = 4096;
    return 0;
  }
  return -ENOENT;
}

int op_readdir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*,
               fuse_readdir_flags) {
  if (std::strcmp(path, "/") != 0) return -ENOENT;
  FuseDisk& d = FuseDisk::self();
  fill(buf, ".", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  fill(buf, "..", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  fill(buf, d.name.c_str() + 1, nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  return 0;
}

int op_open(const char* path, fuse_file_info* fi) {
  FuseDisk& d = FuseDisk::self();
  if (d.name != path) return -ENOENT;
  if (d.read_only && (fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
  fi->direct_io = 1;
  fi->keep_cache = 0;
  return 0;
}

int op_read(const char* path, char* buf, size_t size, off_t off, fuse_file_info*) {
  FuseDisk& d = FuseDisk::self();
  if (d.name != path) return -ENOENT;
  if (off < 0) return -EINVAL;
  const auto o = static_cast<std::uint64_t>(off);
  if (o >= d.size || size == 0) return 0;
  const std::uint64_t n = std::min<std::uint64_t>(size, d.size - o);
  if (const int rc = d.read_range(buf, o, n); rc != 0) return rc;
  return static_cast<int>(n);
}

int op_write(const char* path, const char* buf, size_t size, off_t off, fuse_file_info*) {
  FuseDisk& d = FuseDisk::self();
  if (d.name != path) return -ENOENT;
  if (off < 0) return -EINVAL;
  const auto o = static_cast<std::uint64_t>(off);
  if (size == 0) return 0;
  if (o >= d.size) return -ENOSPC;
  const std::uint64_t n = std::min<std::uint64_t>(size, d.size - o);
  if (const int rc = d.write_range(buf, o, n); rc != 0) return rc;
  return static_cast<int>(n);
}

int op_fsync(const char* path, int, fuse_file_info*) {
  FuseDisk& d = FuseDisk::self();
  if (d.name != path) return -ENOENT;
  const IoStatus st = d.dev.flush();
  // No flush or barrier offered: every write was already answered by the backend and
  // nothing is cached here, so there is nothing left to write back.
  if (st == IoStatus::NotSupported) return 0;
  return to_errno(st);
}

int op_fallocate(const char* path, int mode, off_t off, off_t len, fuse_file_info*) {
  FuseDisk& d = FuseDisk::self();
  if (d.name != path) return -ENOENT;
  if (off < 0 || len <= 0) return -EINVAL;
  const auto o = static_cast<std::uint64_t>(off);
  const auto l = static_cast<std::uint64_t>(len);
  if (mode == 0) return o + l <= d.size ? 0 : -EFBIG;
  if (mode != (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) return -EOPNOTSUPP;
  if (d.read_only) return -EROFS;
  if (o >= d.size) return 0;
  const std::uint64_t end = std::min(o + l, d.size);
  const std::uint64_t a0 = (o + kSector - 1) / kSector * kSector;
  const std::uint64_t a1 = end / kSector * kSector;
  if (a0 >= a1) return d.zero_range(o, end - o);
  if (a0 > o)
    if (const int rc = d.zero_range(o, a0 - o); rc != 0) return rc;
  if (end > a1)
    if (const int rc = d.zero_range(a1, end - a1); rc != 0) return rc;
  const IoStatus st = d.dev.discard(a0, a1 - a0);
  if (st == IoStatus::NotSupported) return d.zero_range(a0, a1 - a0);
  return to_errno(st);
}

int op_truncate(const char* path, off_t size, fuse_file_info*) {
  FuseDisk& d = FuseDisk::self();
  if (d.name != path) return -ENOENT;
  return static_cast<std::uint64_t>(size) == d.size ? 0 : -EPERM;
}

int op_utimens(const char* path, const timespec*, fuse_file_info*) {
  return FuseDisk::self().name == path ? 0 : -ENOENT;
}

}  // namespace

namespace {

// Blocks SIGINT/SIGTERM/SIGHUP and resets them to SIG_DFL (so fuse_set_signal_handlers takes
// them) until unblock(); restores the previous actions and mask on destruction.
class SignalHandover {
 public:
  explicit SignalHandover(bool active) : active_(active) {
    if (!active_) return;
    sigset_t set;
    sigemptyset(&set);
    for (int s : kSignals) sigaddset(&set, s);
    pthread_sigmask(SIG_BLOCK, &set, &old_mask_);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    for (std::size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &dfl, &old_[i]);
  }
  void unblock() {
    if (active_ && !unblocked_) pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
    unblocked_ = true;
  }
  ~SignalHandover() {
    if (!active_) return;
    sigset_t set;
    sigemptyset(&set);
    for (int s : kSignals) sigaddset(&set, s);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    for (std::size_t i = 0; i < kSignals.size(); ++i) sigaction(kSignals[i], &old_[i], nullptr);
    pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  }
  SignalHandover(const SignalHandover&) = delete;
  SignalHandover& operator=(const SignalHandover&) = delete;

 private:
  static constexpr std::array<int, 3> kSignals = {SIGINT, SIGTERM, SIGHUP};
  bool active_;
  bool unblocked_ = false;
  sigset_t old_mask_{};
  struct sigaction old_[3] {};
};

}  // namespace

int serve_fuse(Device& dev, const FuseOptions& opts, const std::function<void()>& on_mounted) {
  if (opts.file_name.empty() || opts.file_name.find('/') != std::string::npos) return -EINVAL;
  FuseDisk disk{dev, "/" + opts.file_name};
  const DiskInfo info = dev.disk();
  disk.size = info.sectors * 512;
  disk.read_only = info.read_only();

  fuse_operations ops{};
  ops.init = op_init;
  ops.getattr = op_getattr;
  ops.readdir = op_readdir;
  ops.open = op_open;
  ops.read = op_read;
  ops.write = op_write;
  ops.fsync = op_fsync;
  ops.fallocate = op_fallocate;
  ops.truncate = op_truncate;
  ops.utimens = op_utimens;

  std::vector<std::string> argv_s = {"pvio-domain", "-o", "fsname=pvio-vbd", "-o",
                                     "subtype=pvio"};
  // root mounts for the loop driver and tools run as other users.
  if (::geteuid() == 0) {
    argv_s.push_back("-o");
    argv_s.push_back("allow_other");
  }
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse* f = fuse_new(&args, &ops, sizeof ops, &disk);
  if (f == nullptr) return -EINVAL;
  // libfuse installs its exit handlers only over SIG_DFL, so a handler the program set earlier
  // would keep the loop running after SIGTERM and leave a dead mount behind once the process
  // is killed. Hand the three signals to libfuse for the life of the mount, with them blocked
  // from before the mount until its handlers are in place (a signal in between is delivered
  // to them, not to the default action), and give the program's handlers back afterwards.
  SignalHandover handover(opts.install_signal_handlers);
  if (fuse_mount(f, opts.mountpoint.c_str()) != 0) {
    fuse_destroy(f);
    return -EIO;
  }
  fuse_session* se = fuse_get_session(f);
  if (opts.install_signal_handlers && fuse_set_signal_handlers(se) != 0) {
    fuse_unmount(f);
    fuse_destroy(f);
    return -EIO;
  }
  handover.unblock();
  spdlog::info("vbd: {} bytes exposed as {}{}", disk.size, opts.mountpoint, disk.name);
  if (on_mounted) on_mounted();
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, opts.max_threads);
  fuse_loop_cfg_set_idle_threads(cfg, opts.max_threads);
  const int rc = fuse_loop_mt(f, cfg);
  fuse_loop_cfg_destroy(cfg);
  if (opts.install_signal_handlers) fuse_remove_signal_handlers(se);
  fuse_unmount(f);
  fuse_destroy(f);
  return rc < 0 ? rc : 0;
}

}  // namespace pvio::blkfront::user
