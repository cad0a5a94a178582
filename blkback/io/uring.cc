// io_uring engine (the default): one io_uring_submit per batch, the backing as registered file
// 0, optional registered buffers for READ_FIXED/WRITE_FIXED, completions signalled through a
// registered eventfd. Discard on a block device is the one synchronous path (BLKDISCARD ioctl).
#include <liburing.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <system_error>
#include <vector>

#include "engines.h"

namespace pvio::blkback {
namespace {

class UringEngine final : public EngineBase {
 public:
  UringEngine(const BackingOptions& options, const EngineConfig& config)
      : EngineBase(options, config) {
    io_uring_params params{};
    if (config.sqpoll) {
      params.flags |= IORING_SETUP_SQPOLL;
      params.sq_thread_idle = 100;  // ms before the kernel thread sleeps
    }
    // CQ twice the SQ (the default) and in-flight capped at queue_depth <= SQ size: the CQ
    // can never overflow.
    if (int r = io_uring_queue_init_params(config.queue_depth, &ring_, &params); r < 0)
      throw std::system_error(-r, std::generic_category(), "io_uring_queue_init");
    sqpoll_ = config.sqpoll;
    const int fd = backing_file().fd();
    if (int r = io_uring_register_files(&ring_, &fd, 1); r < 0) {
      io_uring_queue_exit(&ring_);
      throw std::system_error(-r, std::generic_category(), "io_uring_register_files");
    }
    if (int r = io_uring_register_eventfd(&ring_, event_fd()); r < 0) {
      io_uring_queue_exit(&ring_);
      throw std::system_error(-r, std::generic_category(), "io_uring_register_eventfd");
    }
    cqes_.resize(std::size_t{config.queue_depth});
  }

  ~UringEngine() override {
    // Requests still in flight reference caller buffers: let them finish before the ring
    // goes, so the kernel never writes into memory the caller has since reused.
    std::vector<IoCompletion> sink(queue_depth());
    while (in_flight() > 0) {
      if (reap(sink, 1) == 0) break;
    }
    io_uring_queue_exit(&ring_);
  }

  std::string_view name() const override { return "uring"; }

  int register_buffers(std::span<const iovec> regions) override {
    if (in_flight() > 0) return -EBUSY;
    if (!fixed_.empty()) {
      io_uring_unregister_buffers(&ring_);
      fixed_.clear();
    }
    if (regions.empty()) return 0;
    const int r =
        io_uring_register_buffers(&ring_, regions.data(), static_cast<unsigned>(regions.size()));
    if (r < 0) return r;
    fixed_.assign(regions.begin(), regions.end());
    return 0;
  }

 protected:
  void queue(std::uint32_t idx) override {
    Slot& s = slot(idx);
    if (s.op == IoOp::Discard && backing().block_device) {
      // No asynchronous BLKDISCARD in the io_uring this targets (liburing 2.3): do it inline.
      ++stats_.sync_ops;
      complete_now(idx, backing_file().discard(s.offset, s.length));
      return;
    }
    // SQ entries not yet consumed by the kernel all belong to slots in flight, and the SQ has
    // at least queue_depth entries, so a free slot always finds a free SQE.
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      ++stats_.rejected;
      complete_now(idx, -EAGAIN);
      return;
    }
    switch (s.op) {
      case IoOp::Read:
      case IoOp::Write: {
        const int buf = s.iovcnt == 1 ? fixed_index(s.iov[0]) : -1;
        const bool rd = s.op == IoOp::Read;
        if (buf >= 0) {
          ++stats_.fixed_buffer_ops;
          if (rd)
            io_uring_prep_read_fixed(sqe, 0, s.iov[0].iov_base,
                                     static_cast<unsigned>(s.iov[0].iov_len), s.offset, buf);
          else
            io_uring_prep_write_fixed(sqe, 0, s.iov[0].iov_base,
                                      static_cast<unsigned>(s.iov[0].iov_len), s.offset, buf);
        } else if (rd) {
          io_uring_prep_readv(sqe, 0, s.iov, s.iovcnt, s.offset);
        } else {
          io_uring_prep_writev(sqe, 0, s.iov, s.iovcnt, s.offset);
        }
        break;
      }
      case IoOp::Flush:
        io_uring_prep_fsync(sqe, 0, IORING_FSYNC_DATASYNC);
        break;
      case IoOp::Discard:
        io_uring_prep_fallocate(sqe, 0, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                static_cast<off_t>(s.offset), static_cast<off_t>(s.length));
        break;
    }
    sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, idx);
    ++prepared_;
  }

  void flush_batch() override {
    if (prepared_ == 0) return;
    prepared_ = 0;
    push();
  }

  std::size_t reap_kernel(std::span<IoCompletion> out, std::size_t min_complete) override {
    std::size_t got = 0;
    for (;;) {
      const unsigned n = io_uring_peek_batch_cqe(
          &ring_, cqes_.data(), static_cast<unsigned>(std::min(out.size() - got, cqes_.size())));
      for (unsigned i = 0; i < n; ++i)
        out[got++] = IoCompletion{io_uring_cqe_get_data64(cqes_[i]), cqes_[i]->res};
      io_uring_cq_advance(&ring_, n);
      if (got >= min_complete || got == out.size()) return got;
      if (!sqpoll_ && io_uring_sq_ready(&ring_) > 0) push();  // left over from a failed submit
      io_uring_cqe* cqe = nullptr;
      const int r = io_uring_wait_cqes(&ring_, &cqe, static_cast<unsigned>(min_complete - got),
                                       nullptr, nullptr);
      if (r < 0 && r != -EINTR && r != -EAGAIN && r != -ETIME) return got;
    }
  }

 private:
  // Index of the registered buffer holding all of `v`, or -1.
  int fixed_index(const iovec& v) const {
    if (v.iov_len > UINT32_MAX) return -1;  // READ_FIXED lengths are 32-bit
    const auto* p = static_cast<const std::uint8_t*>(v.iov_base);
    for (std::size_t i = 0; i < fixed_.size(); ++i) {
      const auto* b = static_cast<const std::uint8_t*>(fixed_[i].iov_base);
      if (p >= b && v.iov_len <= fixed_[i].iov_len &&
          static_cast<std::size_t>(p - b) <= fixed_[i].iov_len - v.iov_len)
        return static_cast<int>(i);
    }
    return -1;
  }

  void push() {
    ++stats_.submit_calls;
    for (int tries = 0; tries < 8; ++tries) {
      const int r = io_uring_submit(&ring_);
      // Anything the kernel did not take stays in the SQ and goes with the next push().
      if (r >= 0 || (r != -EINTR && r != -EAGAIN)) return;
    }
  }

  io_uring ring_{};
  bool sqpoll_ = false;
  unsigned prepared_ = 0;
  std::vector<iovec> fixed_;
  std::vector<io_uring_cqe*> cqes_;
};

}  // namespace

std::unique_ptr<IoEngine> make_uring_engine(const BackingOptions& options,
                                            const EngineConfig& config) {
  return std::make_unique<UringEngine>(options, config);
}

}  // namespace pvio::blkback
