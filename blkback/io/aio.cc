// libaio engine: io_submit batches of iocbs (preadv/pwritev/fdsync), io_getevents, eventfd
// via io_set_eventfd. Linux AIO is only asynchronous with O_DIRECT; on a buffered backing
// io_submit itself does the I/O. Discard, and flush when the kernel refuses IOCB_CMD_FDSYNC
// on the file, run synchronously inside submit() (counted in stats().sync_ops).
#include <libaio.h>

#include <cerrno>
#include <cstdint>
#include <system_error>
#include <vector>

#include "engines.h"

namespace pvio::blkback {
namespace {

class AioEngine final : public EngineBase {
 public:
  AioEngine(const BackingOptions& options, const EngineConfig& config)
      : EngineBase(options, config) {
    if (int r = io_setup(static_cast<int>(config.queue_depth), &ctx_); r < 0)
      throw std::system_error(-r, std::generic_category(), "io_setup");
    iocbs_.resize(config.queue_depth);
    batch_.reserve(config.queue_depth);
    events_.resize(config.queue_depth);
  }

  ~AioEngine() override {
    // In-flight iocbs reference caller buffers: wait for them before the context goes.
    std::vector<IoCompletion> sink(queue_depth());
    while (in_flight() > 0) {
      if (reap(sink, 1) == 0) break;
    }
    io_destroy(ctx_);
  }

  std::string_view name() const override { return "aio"; }

 protected:
  void queue(std::uint32_t idx) override {
    Slot& s = slot(idx);
    const int fd = backing_file().fd();
    iocb& cb = iocbs_[idx];
    switch (s.op) {
      case IoOp::Read:
        io_prep_preadv(&cb, fd, s.iov, static_cast<int>(s.iovcnt),
                       static_cast<long long>(s.offset));
        break;
      case IoOp::Write:
        io_prep_pwritev(&cb, fd, s.iov, static_cast<int>(s.iovcnt),
                        static_cast<long long>(s.offset));
        break;
      case IoOp::Flush:
        if (stats_.flush_fallback_sync) {
          ++stats_.sync_ops;
          complete_now(idx, backing_file().datasync());
          return;
        }
        io_prep_fdsync(&cb, fd);
        break;
      case IoOp::Discard:
        // Linux AIO has no discard command.
        ++stats_.sync_ops;
        complete_now(idx, backing_file().discard(s.offset, s.length));
        return;
    }
    io_set_eventfd(&cb, event_fd());
    cb.data = reinterpret_cast<void*>(static_cast<std::uintptr_t>(idx));
    batch_.push_back(&cb);
  }

  void flush_batch() override {
    std::size_t done = 0;
    while (done < batch_.size()) {
      ++stats_.submit_calls;
      const int r = io_submit(ctx_, static_cast<long>(batch_.size() - done), &batch_[done]);
      if (r > 0) {
        done += static_cast<std::size_t>(r);
        continue;
      }
      if (r == -EINTR) continue;
      // The iocb at `done` was refused (io_submit reports the first failure): finish it here
      // and carry on with the rest of the batch.
      iocb* cb = batch_[done++];
      const auto idx = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(cb->data));
      if (cb->aio_lio_opcode == IO_CMD_FDSYNC && r == -EINVAL) {
        // The file has no fsync for AIO: use fdatasync from here on, synchronously.
        stats_.flush_fallback_sync = true;
        ++stats_.sync_ops;
        complete_now(idx, backing_file().datasync());
      } else {
        ++stats_.rejected;
        complete_now(idx, r == 0 ? -EIO : r);
      }
    }
    batch_.clear();
  }

  std::size_t reap_kernel(std::span<IoCompletion> out, std::size_t min_complete) override {
    const long max = static_cast<long>(std::min(out.size(), events_.size()));
    for (;;) {
      const int r =
          io_getevents(ctx_, static_cast<long>(min_complete), max, events_.data(), nullptr);
      if (r == -EINTR) continue;
      if (r < 0) return 0;
      for (int i = 0; i < r; ++i) {
        const io_event& ev = events_[i];
        const auto idx = static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(ev.data));
        // res carries bytes or a negative errno in an unsigned long.
        out[i] = IoCompletion{idx, static_cast<std::int64_t>(static_cast<long>(ev.res))};
      }
      return static_cast<std::size_t>(r);
    }
  }

 private:
  io_context_t ctx_ = nullptr;
  std::vector<iocb> iocbs_;
  std::vector<iocb*> batch_;
  std::vector<io_event> events_;
};

}  // namespace

std::unique_ptr<IoEngine> make_aio_engine(const BackingOptions& options,
                                          const EngineConfig& config) {
  return std::make_unique<AioEngine>(options, config);
}

}  // namespace pvio::blkback
