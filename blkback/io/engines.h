// Constructors of the engine modules, used by make_engine(). Internal to blkback/io.
#pragma once

#include <memory>

#include "engine_base.h"

namespace pvio::blkback {

std::unique_ptr<IoEngine> make_uring_engine(const BackingOptions& options,
                                            const EngineConfig& config);
std::unique_ptr<IoEngine> make_aio_engine(const BackingOptions& options,
                                          const EngineConfig& config);
std::unique_ptr<IoEngine> make_null_engine(const BackingOptions& options,
                                           const EngineConfig& config);
std::unique_ptr<IoEngine> make_sync_engine(const BackingOptions& options,
                                           const EngineConfig& config);

}  // namespace pvio::blkback
