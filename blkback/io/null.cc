// Null engine: opens the backing like the others (same size, same validation) but does no
// I/O. Every valid request completes inside submit() with the full length for Read/Write
// (buffers left untouched) and 0 otherwise, so a benchmark through it measures the
// framework's own cost.
#include "engines.h"

namespace pvio::blkback {
namespace {

class NullEngine final : public EngineBase {
 public:
  using EngineBase::EngineBase;
  std::string_view name() const override { return "null"; }

 protected:
  void queue(std::uint32_t idx) override {
    const Slot& s = slot(idx);
    const bool data = s.op == IoOp::Read || s.op == IoOp::Write;
    complete_now(idx, data ? static_cast<std::int64_t>(s.length) : 0);
  }
  void flush_batch() override {}
  std::size_t reap_kernel(std::span<IoCompletion>, std::size_t) override { return 0; }
};

}  // namespace

std::unique_ptr<IoEngine> make_null_engine(const BackingOptions& options,
                                           const EngineConfig& config) {
  return std::make_unique<NullEngine>(options, config);
}

}  // namespace pvio::blkback
