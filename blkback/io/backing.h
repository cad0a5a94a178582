// Opening a backing (raw file or block device) for the I/O engines: O_DIRECT probing, size,
// sector sizes and discard support. Internal to blkback/io.
#pragma once

#include "pvio/blkback/io_engine.h"

namespace pvio::blkback {

// Owns the backing's file descriptor.
class Backing {
 public:
  // Throws std::system_error when the path cannot be opened or is neither a regular file nor a
  // block device, or when DirectIo::Require is asked of a backing without O_DIRECT.
  explicit Backing(const BackingOptions& options);
  ~Backing();
  Backing(const Backing&) = delete;
  Backing& operator=(const Backing&) = delete;

  int fd() const { return fd_; }
  const BackingInfo& info() const { return info_; }

  // Synchronous discard of [offset, offset + length): BLKDISCARD on block devices, hole punch
  // (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) on files. Returns 0 or -errno.
  int discard(std::uint64_t offset, std::uint64_t length) const;

  // Synchronous fdatasync. Returns 0 or -errno.
  int datasync() const;

 private:
  int fd_ = -1;
  BackingInfo info_;
};

}  // namespace pvio::blkback
