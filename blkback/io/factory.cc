// make_engine(): the engine registry.
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
  if (engine == "uring" || engine.empty()) return make_uring_engine(backing, config);
  if (engine == "aio") return make_aio_engine(backing, config);
  if (engine == "null") return make_null_engine(backing, config);
  throw std::invalid_argument("unknown I/O engine '" + std::string(engine) +
                              "' (uring, aio, null)");
}

}  // namespace pvio::blkback
