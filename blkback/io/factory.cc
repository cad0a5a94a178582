// make_engine(): the engine registry, and `auto`: the engine that is fastest for what backs
// the vbd.
#include <sys/stat.h>
#include <sys/statfs.h>

#include <climits>
#include <stdexcept>
#include <string>

#include "engines.h"

namespace pvio::blkback {

std::unique_ptr<IoEngine> make_engine(std::string_view engine, const BackingOptions& backing,
                                      const EngineConfig& config) {
  if (config.queue_depth == 0 || config.queue_depth > 4096)
    throw std::invalid_argument("queue_depth must be 1..4096");
  if (config.max_segments == 0 || config.max_segments > IOV_MAX)
    throw std::invalid_argument("max_segments must be 1..IOV_MAX");
  if (engine == "auto" || engine.empty()) engine = auto_engine(backing.path);
  if (engine == "uring") return make_uring_engine(backing, config);
  if (engine == "aio") return make_aio_engine(backing, config);
  if (engine == "sync") return make_sync_engine(backing, config);
  if (engine == "null") return make_null_engine(backing, config);
  throw std::invalid_argument("unknown I/O engine '" + std::string(engine) +
                              "' (auto, uring, aio, sync, null)");
}

std::string_view auto_engine(const std::string& path) {
  // A regular file on a memory file system: the copy is all the I/O there is, done best on the
  // backend's thread (io_uring would punt each request to an io-wq worker). Anything else (a
  // file on a disk, a block device, which statfs reports as devtmpfs) goes to io_uring.
  constexpr long kTmpfsMagic = 0x01021994, kRamfsMagic = 0x858458f6;
  struct stat st{};
  struct statfs sf{};
  if (::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::statfs(path.c_str(), &sf) == 0 &&
      (static_cast<long>(sf.f_type) == kTmpfsMagic || static_cast<long>(sf.f_type) == kRamfsMagic))
    return "sync";
  return "uring";
}

}  // namespace pvio::blkback
