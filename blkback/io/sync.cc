// Synchronous engine: preadv/pwritev/fdatasync/discard inside submit(), on the backend's own
// thread. For a backing in memory (tmpfs, ramfs) that is the fastest path there is: the copy
// is the whole cost, and io_uring or Linux AIO would hand every request to a kernel worker
// thread first (io_uring punts buffered I/O on tmpfs to io-wq; AIO runs it synchronously in
// io_submit anyway). On a disk it would block the queue for every I/O, so `auto` picks it only
// for memory file systems.
#include <sys/uio.h>

#include <cerrno>

#include "engines.h"

namespace pvio::blkback {
namespace {

class SyncEngine final : public EngineBase {
 public:
  using EngineBase::EngineBase;
  std::string_view name() const override { return "sync"; }

 protected:
  void queue(std::uint32_t idx) override {
    Slot& s = slot(idx);
    ++stats_.sync_ops;
    switch (s.op) {
      case IoOp::Read: complete_now(idx, transfer(s, false)); return;
      case IoOp::Write: complete_now(idx, transfer(s, true)); return;
      case IoOp::Flush: complete_now(idx, backing_file().datasync()); return;
      case IoOp::Discard: complete_now(idx, backing_file().discard(s.offset, s.length)); return;
    }
    complete_now(idx, -EINVAL);
  }
  void flush_batch() override {}
  std::size_t reap_kernel(std::span<IoCompletion>, std::size_t) override { return 0; }

 private:
  // The whole request, resumed after a short transfer (a signal, or a file that shrank
  // underneath: then the short count is the result, as the other engines report it).
  std::int64_t transfer(Slot& s, bool write) {
    iovec* iov = s.iov;
    int cnt = static_cast<int>(s.iovcnt);
    std::uint64_t done = 0;
    while (done < s.length) {
      const auto off = static_cast<off_t>(s.offset + done);
      const ssize_t n = write ? ::pwritev(backing_file().fd(), iov, cnt, off)
                              : ::preadv(backing_file().fd(), iov, cnt, off);
      if (n < 0) {
        if (errno == EINTR) continue;
        return done != 0 ? static_cast<std::int64_t>(done) : -errno;
      }
      if (n == 0) break;
      done += static_cast<std::uint64_t>(n);
      // Step past what moved; the slot's iovecs are the engine's own copy, so they may be
      // advanced in place.
      auto left = static_cast<std::size_t>(n);
      while (cnt > 0 && left >= iov->iov_len) {
        left -= iov->iov_len;
        ++iov;
        --cnt;
      }
      if (cnt > 0) {
        iov->iov_base = static_cast<char*>(iov->iov_base) + left;
        iov->iov_len -= left;
      }
    }
    return static_cast<std::int64_t>(done);
  }
};

}  // namespace

std::unique_ptr<IoEngine> make_sync_engine(const BackingOptions& options,
                                           const EngineConfig& config) {
  return std::make_unique<SyncEngine>(options, config);
}

}  // namespace pvio::blkback
