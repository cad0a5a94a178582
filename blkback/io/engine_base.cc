// Shared engine machinery: slot accounting, request validation, early completions, eventfd.
#include "engine_base.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <limits>
#include <system_error>

namespace pvio::blkback {

std::uint64_t IoEngine::ack_event() {
  std::uint64_t count = 0;
  if (::read(event_fd(), &count, sizeof count) != static_cast<ssize_t>(sizeof count)) return 0;
  return count;
}

EngineBase::EngineBase(const BackingOptions& options, const EngineConfig& config)
    : backing_(options), config_(config) {
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  const std::uint32_t depth = config_.queue_depth;
  slots_.resize(depth);
  iov_pool_.resize(std::size_t{depth} * config_.max_segments);
  free_.reserve(depth);
  ready_.resize(depth);
  for (std::uint32_t i = 0; i < depth; ++i) {
    slots_[i].iov = &iov_pool_[std::size_t{i} * config_.max_segments];
    free_.push_back(depth - 1 - i);
  }
}

EngineBase::~EngineBase() {
  if (event_fd_ >= 0) ::close(event_fd_);
}

int EngineBase::load(const IoRequest& req, Slot& s) const {
  const BackingInfo& info = backing_.info();
  constexpr std::uint64_t kMaxOff = std::numeric_limits<off_t>::max();
  s.op = req.op;
  s.offset = req.offset;
  s.iovcnt = 0;
  s.length = 0;
  switch (req.op) {
    case IoOp::Read:
    case IoOp::Write: {
      if (req.op == IoOp::Write && info.read_only) return -EBADF;
      if (req.iov == nullptr || req.iovcnt == 0 || req.iovcnt > config_.max_segments)
        return -EINVAL;
      const std::uint64_t mem_mask = info.dio_mem_align - 1;
      const std::uint64_t off_mask = info.dio_offset_align - 1;
      if (req.offset & off_mask) return -EINVAL;
      std::uint64_t total = 0;
      for (std::uint32_t i = 0; i < req.iovcnt; ++i) {
        const iovec v = req.iov[i];
        const auto base = reinterpret_cast<std::uintptr_t>(v.iov_base);
        // O_DIRECT alignment is checked here, for every engine alike, so a misaligned buffer
        // gets -EINVAL up front rather than whatever the file system would do with it.
        if ((base & mem_mask) || (v.iov_len & off_mask)) return -EINVAL;
        if (v.iov_len > kMaxOff - total) return -EINVAL;
        total += v.iov_len;
        if (v.iov_len == 0) continue;
        // Adjacent buffers (consecutive pages of one guest mapping) become one iovec, so a
        // request over contiguous memory can use a single READ_FIXED/WRITE_FIXED.
        if (s.iovcnt > 0) {
          iovec& last = s.iov[s.iovcnt - 1];
          if (static_cast<std::uint8_t*>(last.iov_base) + last.iov_len == v.iov_base) {
            last.iov_len += v.iov_len;
            continue;
          }
        }
        s.iov[s.iovcnt++] = v;
      }
      if (req.offset > kMaxOff - total) return -EINVAL;
      if (s.iovcnt == 0) {  // all-empty: keep one zero-length iovec for the kernel
        s.iov[0] = iovec{req.iov[0].iov_base, 0};
        s.iovcnt = 1;
      }
      s.length = total;
      return 0;
    }
    case IoOp::Flush:
      return 0;
    case IoOp::Discard:
      if (info.read_only) return -EBADF;
      if (!info.discard_supported) return -EOPNOTSUPP;
      if (req.length == 0 || req.offset > kMaxOff || req.length > kMaxOff - req.offset)
        return -EINVAL;
      s.length = req.length;
      return 0;
  }
  return -EINVAL;  // an op value outside the enum
}

std::size_t EngineBase::submit(std::span<const IoRequest> reqs) {
  const std::size_t n = std::min<std::size_t>(reqs.size(), free_.size());
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t idx = free_.back();
    free_.pop_back();
    ++in_flight_;
    Slot& s = slots_[idx];
    s.tag = reqs[i].tag;
    const int err = load(reqs[i], s);
    if (err != 0) {
      ++stats_.rejected;
      complete_now(idx, err);
    } else {
      queue(idx);
    }
  }
  stats_.submitted += n;
  if (n > 0) flush_batch();
  if (signal_pending_) {
    signal_pending_ = false;
    const std::uint64_t one = 1;
    // Cannot fail short of counter overflow (2^64 - 2 unacked signals).
    [[maybe_unused]] const ssize_t w = ::write(event_fd_, &one, sizeof one);
  }
  return n;
}

void EngineBase::complete_now(std::uint32_t idx, std::int64_t result) {
  slots_[idx].result = result;
  ready_[(ready_head_ + ready_count_) % ready_.size()] = idx;
  ++ready_count_;
  signal_pending_ = true;
}

std::size_t EngineBase::reap(std::span<IoCompletion> out, std::size_t min_complete) {
  const std::size_t want = std::min<std::size_t>({min_complete, in_flight_, out.size()});
  std::size_t got = 0;
  while (ready_count_ > 0 && got < out.size()) {
    const std::uint32_t idx = ready_[ready_head_];
    ready_head_ = (ready_head_ + 1) % ready_.size();
    --ready_count_;
    out[got++] = IoCompletion{slots_[idx].tag, slots_[idx].result};
    free_.push_back(idx);
    --in_flight_;
  }
  if (got < out.size() && in_flight_ > 0) {
    const std::size_t need = want > got ? want - got : 0;
    std::span<IoCompletion> rest = out.subspan(got);
    const std::size_t k = reap_kernel(rest, need);
    for (std::size_t i = 0; i < k; ++i) {
      const auto idx = static_cast<std::uint32_t>(rest[i].tag);
      rest[i].tag = slots_[idx].tag;
      free_.push_back(idx);
      --in_flight_;
    }
    got += k;
  }
  stats_.completed += got;
  return got;
}

}  // namespace pvio::blkback
