// The block backend's I/O engine interface: one backing (raw file or block device) served
// asynchronously by io_uring, libaio or a null engine, in the manner of SPDK's bdev modules.
// The datapath hands validated guest requests over as iovecs; completions come back tagged,
// with bytes or -errno, and an eventfd says when to reap.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

namespace pvio::blkback {

enum class IoOp : std::uint8_t {
  Read,     // preadv into iov[0..iovcnt)
  Write,    // pwritev from iov[0..iovcnt)
  Flush,    // fdatasync semantics; offset/iov ignored
  Discard,  // [offset, offset + length): hole punch on files, BLKDISCARD on block devices
};

// One request. The iovec array is copied at submit() and need not outlive that call; the
// buffers it points to must stay valid until the request's completion has been reaped.
struct IoRequest {
  IoOp op = IoOp::Read;
  std::uint64_t offset = 0;    // bytes from the start of the backing
  const iovec* iov = nullptr;  // Read/Write
  std::uint32_t iovcnt = 0;    // Read/Write: 1..EngineConfig::max_segments
  std::uint64_t length = 0;    // Discard only: bytes
  std::uint64_t tag = 0;       // returned untouched in the completion
};

struct IoCompletion {
  std::uint64_t tag = 0;
  // Read/Write: bytes transferred (short at the end of the backing); others: 0; or -errno.
  std::int64_t result = 0;
};

enum class DirectIo : std::uint8_t {
  Auto,     // O_DIRECT when the backing accepts it, buffered otherwise (BackingInfo says which)
  Require,  // O_DIRECT or open fails
  Off,      // buffered (page cache)
};

struct BackingOptions {
  std::string path;
  bool read_only = false;
  DirectIo direct = DirectIo::Auto;
};

struct EngineConfig {
  unsigned queue_depth = 64;    // requests in flight (submitted, not yet reaped), 1..4096
  unsigned max_segments = 256;  // iovecs per request (blkif indirect requests reach 256 pages)
  bool sqpoll = false;          // io_uring only: kernel submission thread (burns a core)
};

// What open() found out; fixed for the engine's lifetime.
struct BackingInfo {
  std::uint64_t size_bytes = 0;
  std::uint32_t logical_sector_size = 512;   // smallest addressable unit (BLKSSZGET)
  std::uint32_t physical_sector_size = 512;  // BLKPBSZGET; st_blksize on files
  std::uint32_t dio_mem_align = 1;           // O_DIRECT buffer alignment (1 when buffered)
  std::uint32_t dio_offset_align = 1;        // O_DIRECT offset/length alignment (1 when buffered)
  bool block_device = false;
  bool read_only = false;
  bool direct_io = false;                    // O_DIRECT in effect
  bool discard_supported = false;
  std::uint32_t discard_granularity = 0;     // bytes; 0 when discard is unsupported
};

struct EngineStats {
  std::uint64_t submitted = 0;         // requests accepted by submit()
  std::uint64_t completed = 0;         // completions handed out by reap()
  std::uint64_t submit_calls = 0;      // batches passed to the kernel (io_uring_submit/io_submit)
  std::uint64_t rejected = 0;          // completed with an error before reaching the kernel
  std::uint64_t sync_ops = 0;          // executed synchronously in submit() (see each engine)
  std::uint64_t fixed_buffer_ops = 0;  // io_uring READ_FIXED/WRITE_FIXED
  bool flush_fallback_sync = false;    // libaio: kernel refused IOCB_CMD_FDSYNC, fdatasync used
};

// One thread drives an engine (submit, reap, ack_event): it is not thread-safe, and needs no
// locks because a backend serves each ring from one thread.
class IoEngine {
 public:
  virtual ~IoEngine() = default;
  IoEngine(const IoEngine&) = delete;
  IoEngine& operator=(const IoEngine&) = delete;

  virtual std::string_view name() const = 0;
  virtual const BackingInfo& backing() const = 0;
  virtual unsigned queue_depth() const = 0;
  virtual unsigned in_flight() const = 0;  // accepted by submit(), not yet returned by reap()

  // Queues the longest prefix of `reqs` that fits in the free queue slots (queue_depth -
  // in_flight) and passes it to the kernel in one batch. Returns how many were accepted; the
  // rest were not touched and may be submitted again after reaping. A request that is invalid
  // (bad op, iovcnt, offset overflow, misaligned under O_DIRECT, write to a read-only backing)
  // is accepted and completes with -EINVAL/-EBADF without reaching the kernel.
  virtual std::size_t submit(std::span<const IoRequest> reqs) = 0;

  // Writes up to out.size() completions, waiting until at least min(min_complete, in_flight,
  // out.size()) are available. Returns the number written. Never blocks when min_complete is 0.
  virtual std::size_t reap(std::span<IoCompletion> out, std::size_t min_complete) = 0;

  // Readable (non-zero counter) once a completion is ready to reap. The engine never reads it:
  // the owner consumes it with ack_event() before reaping, then reaps with min_complete = 0.
  virtual int event_fd() const = 0;

  // Registers fixed buffer regions (e.g. a guest's whole memory mapping); single-range
  // Read/Write requests lying inside one are then issued as READ_FIXED/WRITE_FIXED. Replaces
  // any earlier registration; empty span unregisters. Returns 0 or -errno (-EOPNOTSUPP for
  // engines without registered buffers). Only while nothing is in flight (-EBUSY otherwise).
  virtual int register_buffers(std::span<const iovec> regions) = 0;

  virtual EngineStats stats() const = 0;

  // Reads (and so resets) the completion eventfd; returns its counter, 0 when not signalled.
  std::uint64_t ack_event();

 protected:
  IoEngine() = default;
};

// Opens `backing` and creates an engine: "auto" (default: auto_engine() of the path), "uring",
// "aio", "sync" (preadv/pwritev on the calling thread) or "null". Throws std::system_error when
// the backing cannot be opened or the kernel refuses the engine's set-up, std::invalid_argument
// for an unknown engine name or a bad config.
std::unique_ptr<IoEngine> make_engine(std::string_view engine, const BackingOptions& backing,
                                      const EngineConfig& config = {});
// The engine `auto` picks for a backing path: "sync" for a regular file on tmpfs or ramfs
// (the copy is all the I/O there is), "uring" for everything else.
std::string_view auto_engine(const std::string& path);

}  // namespace pvio::blkback
