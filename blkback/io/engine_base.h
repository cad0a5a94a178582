// What every engine shares: the queue slots (one per request in flight), request validation
// and iovec copying, completions that finish without the kernel, and the completion eventfd.
// An engine adds three steps: queue a validated slot, push the batch to the kernel, reap.
#pragma once

#include <cstdint>
#include <vector>

#include "backing.h"
#include "pvio/blkback/io_engine.h"

namespace pvio::blkback {

class EngineBase : public IoEngine {
 public:
  EngineBase(const BackingOptions& options, const EngineConfig& config);
  ~EngineBase() override;

  const BackingInfo& backing() const final { return backing_.info(); }
  unsigned queue_depth() const final { return config_.queue_depth; }
  unsigned in_flight() const final { return in_flight_; }
  int event_fd() const final { return event_fd_; }
  EngineStats stats() const final { return stats_; }
  int register_buffers(std::span<const iovec>) override { return -EOPNOTSUPP; }

  std::size_t submit(std::span<const IoRequest> reqs) final;
  std::size_t reap(std::span<IoCompletion> out, std::size_t min_complete) final;

 protected:
  // A queue slot: a request between submit() and reap(). Its index is what the kernel carries
  // as user data, so a completion can never name a slot we did not hand out.
  struct Slot {
    std::uint64_t tag = 0;
    IoOp op = IoOp::Read;
    std::uint32_t iovcnt = 0;  // after merging adjacent iovecs
    iovec* iov = nullptr;      // config.max_segments entries owned by the engine
    std::uint64_t offset = 0;
    std::uint64_t length = 0;  // Read/Write: sum of iov lengths; Discard: bytes
    std::int64_t result = 0;   // set by complete_now()
  };

  // Hands a validated slot to the engine: it either prepares kernel work for the coming
  // flush_batch() or completes the slot at once with complete_now().
  virtual void queue(std::uint32_t slot) = 0;
  // Passes everything queue() prepared since the last call to the kernel, in one batch.
  virtual void flush_batch() = 0;
  // Completions from the kernel: writes up to out.size() entries {slot index, result}, waiting
  // for at least `min_complete` of them. Returns how many.
  virtual std::size_t reap_kernel(std::span<IoCompletion> out, std::size_t min_complete) = 0;

  // Finishes `slot` without the kernel; reap() hands it out before kernel completions.
  void complete_now(std::uint32_t slot, std::int64_t result);

  Slot& slot(std::uint32_t i) { return slots_[i]; }
  const Backing& backing_file() const { return backing_; }
  const EngineConfig& config() const { return config_; }
  EngineStats stats_;

 private:
  // Copies and checks one request into `s`. Returns 0 or the -errno it must complete with.
  int load(const IoRequest& req, Slot& s) const;

  Backing backing_;
  EngineConfig config_;
  int event_fd_ = -1;
  std::vector<Slot> slots_;
  std::vector<iovec> iov_pool_;
  std::vector<std::uint32_t> free_;   // stack of free slot indices
  std::vector<std::uint32_t> ready_;  // FIFO of slots finished by complete_now()
  std::size_t ready_head_ = 0;
  std::size_t ready_count_ = 0;
  unsigned in_flight_ = 0;
  bool signal_pending_ = false;
};

}  // namespace pvio::blkback
