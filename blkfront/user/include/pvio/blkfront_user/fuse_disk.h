// The PV disk of a user-mode guest, exposed to the host through FUSE as one regular file
// (`disk` by default) of the disk's size, so unmodified tools (mkfs, losetup, fio) run over
// the PV path. Every read/write is direct I/O (FOPEN_DIRECT_IO: no page cache in between), so
// a write is acknowledged only after the backend completed it; fsync maps to FLUSH; a
// punched hole (fallocate PUNCH_HOLE|KEEP_SIZE) maps to DISCARD.
#pragma once

#include <functional>
#include <string>

#include "pvio/blkfront_user/device.h"

namespace pvio::blkfront::user {

struct FuseOptions {
  std::string mountpoint;
  std::string file_name = "disk";
  unsigned max_threads = 16;          // FUSE worker threads (each may have one I/O in flight)
  bool install_signal_handlers = false;  // SIGINT/SIGTERM/SIGHUP end the loop (unmount)
};

// Mounts, calls on_mounted (if set), serves until the file system is unmounted (umount,
// fusermount3 -u) or a handled signal arrives, and unmounts. 0 or -errno.
int serve_fuse(Device& dev, const FuseOptions& opts,
               const std::function<void()>& on_mounted = nullptr);

}  // namespace pvio::blkfront::user
