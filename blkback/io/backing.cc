// Backing open and probe: tries O_DIRECT and falls back to buffered I/O when the file system
// refuses it, then reads size and sector sizes from the block layer (or stat for files).
#include "backing.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <system_error>

namespace pvio::blkback {
namespace {

[[noreturn]] void throw_errno(int err, const std::string& what) {
  throw std::system_error(err, std::generic_category(), what);
}

// A value from the block queue's sysfs attributes (partitions keep theirs in the parent's
// queue/). Returns 0 when absent.
std::uint64_t queue_attr(dev_t rdev, const char* attr) {
  const std::string base =
      "/sys/dev/block/" + std::to_string(major(rdev)) + ":" + std::to_string(minor(rdev));
  for (const char* dir : {"/queue/", "/../queue/"}) {
    std::ifstream in(base + dir + attr);
    std::uint64_t v = 0;
    if (in >> v) return v;
  }
  return 0;
}

int open_backing(const std::string& path, bool read_only, bool direct) {
  int flags = (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (direct) flags |= O_DIRECT;
  return ::open(path.c_str(), flags);
}

// Whether an aligned one-block read at offset 0 works through `fd` (some file systems accept
// O_DIRECT at open and refuse it at I/O time).
bool direct_read_works(int fd, std::uint32_t mem_align, std::uint32_t offset_align) {
  const std::size_t len = std::max<std::size_t>({offset_align, mem_align, 4096});
  void* buf = nullptr;
  if (posix_memalign(&buf, std::max<std::size_t>(mem_align, 4096), len) != 0) return false;
  const ssize_t r = ::pread(fd, buf, len, 0);
  const int err = errno;
  std::free(buf);
  return r >= 0 || err != EINVAL;
}

}  // namespace

Backing::Backing(const BackingOptions& options) {
  const bool want_direct = options.direct != DirectIo::Off;
  int fd = open_backing(options.path, options.read_only, want_direct);
  bool direct = want_direct;
  if (fd < 0 && want_direct && errno == EINVAL && options.direct == DirectIo::Auto) {
    fd = open_backing(options.path, options.read_only, false);
    direct = false;
  }
  if (fd < 0) throw_errno(errno, "open " + options.path);
  fd_ = fd;

  struct statx stx {};
  if (::statx(fd_, "", AT_EMPTY_PATH, STATX_BASIC_STATS | STATX_DIOALIGN, &stx) != 0) {
    const int err = errno;
    ::close(fd_);
    throw_errno(err, "statx " + options.path);
  }
  const bool is_blk = S_ISBLK(stx.stx_mode);
  if (!is_blk && !S_ISREG(stx.stx_mode)) {
    ::close(fd_);
    throw_errno(EINVAL, options.path + " is neither a regular file nor a block device");
  }
  info_.block_device = is_blk;
  info_.read_only = options.read_only;

  if (is_blk) {
    const dev_t rdev = makedev(stx.stx_rdev_major, stx.stx_rdev_minor);
    std::uint64_t size = 0;
    int lss = 0;
    unsigned int pss = 0;
    if (::ioctl(fd_, BLKGETSIZE64, &size) != 0 || ::ioctl(fd_, BLKSSZGET, &lss) != 0 ||
        ::ioctl(fd_, BLKPBSZGET, &pss) != 0) {
      const int err = errno;
      ::close(fd_);
      throw_errno(err, "block device ioctls on " + options.path);
    }
    info_.size_bytes = size;
    info_.logical_sector_size = static_cast<std::uint32_t>(lss);
    info_.physical_sector_size = std::max<std::uint32_t>(pss, info_.logical_sector_size);
    const std::uint64_t discard_max = queue_attr(rdev, "discard_max_bytes");
    info_.discard_supported = !options.read_only && discard_max > 0;
    if (info_.discard_supported) {
      info_.discard_granularity = static_cast<std::uint32_t>(
          std::max<std::uint64_t>(queue_attr(rdev, "discard_granularity"), lss));
    }
  } else {
    info_.size_bytes = stx.stx_size;
    info_.logical_sector_size = 512;
    info_.physical_sector_size = std::max<std::uint32_t>(stx.stx_blksize, 512);
  }

  // O_DIRECT alignment: the kernel's own figures when it gives them (STATX_DIOALIGN, Linux
  // 6.1+; dio_mem_align == 0 means the file system has no O_DIRECT), else the logical sector.
  std::uint32_t mem_align = info_.logical_sector_size;
  std::uint32_t off_align = info_.logical_sector_size;
  bool dio_possible = true;
  if (stx.stx_mask & STATX_DIOALIGN) {
    dio_possible = stx.stx_dio_mem_align != 0;
    mem_align = std::max<std::uint32_t>(stx.stx_dio_mem_align, 1);
    off_align = std::max<std::uint32_t>(stx.stx_dio_offset_align, 1);
  }
  if (direct && !(dio_possible && direct_read_works(fd_, mem_align, off_align))) {
    ::close(fd_);
    fd_ = -1;
    if (options.direct == DirectIo::Require)
      throw_errno(EINVAL, "O_DIRECT not supported on " + options.path);
    fd = open_backing(options.path, options.read_only, false);
    if (fd < 0) throw_errno(errno, "open " + options.path);
    fd_ = fd;
    direct = false;
  }
  if (direct && !is_blk && off_align > info_.logical_sector_size) {
    // A file on a 4 KiB-sector device cannot take 512-byte direct I/O: report the real unit.
    info_.logical_sector_size = off_align;
    info_.physical_sector_size = std::max(info_.physical_sector_size, off_align);
  }
  info_.direct_io = direct;
  info_.dio_mem_align = direct ? mem_align : 1;
  info_.dio_offset_align = direct ? off_align : 1;

  if (!is_blk && !options.read_only) {
    // Hole punching is a per-file-system feature: punch past EOF (KEEP_SIZE, no data there)
    // and see whether the file system knows the operation.
    const std::uint64_t probe_at = (stx.stx_size + 4095) & ~std::uint64_t{4095};
    const int r = ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              static_cast<off_t>(probe_at), 4096);
    info_.discard_supported = r == 0;
    if (info_.discard_supported)
      info_.discard_granularity = std::max<std::uint32_t>(stx.stx_blksize, 512);
  }
}

Backing::~Backing() {
  if (fd_ >= 0) ::close(fd_);
}

int Backing::discard(std::uint64_t offset, std::uint64_t length) const {
  if (info_.block_device) {
    std::uint64_t range[2] = {offset, length};
    return ::ioctl(fd_, BLKDISCARD, range) == 0 ? 0 : -errno;
  }
  return ::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(offset),
                     static_cast<off_t>(length)) == 0
             ? 0
             : -errno;
}

int Backing::datasync() const { return ::fdatasync(fd_) == 0 ? 0 : -errno; }

}  // namespace pvio::blkback
