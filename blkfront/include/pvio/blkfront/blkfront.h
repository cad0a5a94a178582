// The portable blkfront core: one PV block device of this guest, as Linux xen-blkfront drives
// it. The XenBus handshake lives in core/xenbus.cc, request building and completions in
// core/blkfront.cc; both are freestanding (no exceptions, RTTI, heap or OS calls) and reach the
// world only through the Platform seam.
//
// Memory: the caller hands in one block of storage (storage_bytes(limits) bytes, 16-byte
// aligned) at construction; at connect time the tag (shadow) tables, segment tables and page
// pools are carved out of it to the size negotiated with the backend. I/Os are caller-owned
// BlockIo records that stay alive until their completion callback runs.
//
// Threading: not thread-safe. A binding calls submit(), handle_event(), backend_changed() and
// the blocking helpers from one thread, or under one lock. Completion callbacks run inside
// those calls; they may call submit() again.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pvio/blkfront/platform.h"
#include "pvio/xen/io/blkif.h"
#include "pvio/xen/io/xenbus.h"

namespace pvio::blkfront {

using XenbusState = xs::XenbusState;

enum class Op : std::uint8_t { Read, Write, Flush, Discard };

enum class IoStatus : std::int8_t {
  Ok = 0,
  IoError,       // the backend answered BLKIF_RSP_ERROR
  NotSupported,  // BLKIF_RSP_EOPNOTSUPP, or the backend does not offer the operation
  Invalid,       // bad arguments: alignment, beyond the end of the disk, no data
  ReadOnly,      // write or discard on a read-only disk
  NoDevice,      // the device was closed with the I/O outstanding
  NoResources,   // grant table or guest memory exhausted with nothing in flight to wait for
  Pending,       // not completed yet
};
const char* io_status_name(IoStatus s);

// A page of guest memory owned by the caller (zero-copy I/O).
struct DataPage {
  std::uint64_t gfn = 0;
  void* addr = nullptr;
};

// One block I/O, owned by the caller until `done` runs (like a Linux bio). Sectors are 512
// bytes. Data is either `pages` (nr_pages caller pages, starting `page_offset` bytes into the
// first; granted to the backend directly unless persistent grants are in use) or `buffer`
// (any contiguous memory; copied through the core's own granted pages).
struct BlockIo {
  Op op = Op::Read;
  bool discard_secure = false;   // Discard: BLKIF_DISCARD_SECURE when the backend offers it
  std::uint16_t queue = 0;       // queue hint (taken modulo the negotiated queue count)
  std::uint64_t sector = 0;
  std::uint32_t nr_sectors = 0;  // Read/Write/Discard; 0 for Flush
  const DataPage* pages = nullptr;
  std::uint32_t nr_pages = 0;
  std::uint32_t page_offset = 0;  // multiple of 512, < 4096
  void* buffer = nullptr;
  void (*done)(BlockIo* io) = nullptr;
  void* cookie = nullptr;

  IoStatus status = IoStatus::Pending;  // OUT, valid when done runs

  // Private to the core.
  struct Private {
    BlockIo* prev = nullptr;  // active list: accepted, not completed, in submission order
    BlockIo* next = nullptr;
    BlockIo* next_pending = nullptr;  // queue FIFO of I/Os not fully turned into requests
    std::uint32_t built = 0;          // sectors already in requests
    std::uint32_t outstanding = 0;    // requests on the ring
    std::uint16_t qidx = 0;
    bool started = false;             // first request built (validation done)
    bool all_built = false;           // every sector (or the flush/discard) is on a ring
    IoStatus error = IoStatus::Ok;    // first error of any of its requests
  } priv;
};

// What the caller lets the core use at most; fixed at construction, with the storage.
struct Limits {
  std::uint32_t max_queues = 4;               // multi-queue-num-queues at most
  std::uint32_t max_ring_page_order = 2;      // ring-page-order at most (<= 4)
  std::uint32_t max_indirect_segments = 256;  // 0: never use indirect requests
  std::uint32_t pool_pages = 256;             // bounce / persistent pages per queue
  bool use_persistent = true;                 // offer feature-persistent
};

// The disk as the backend describes it at Connected.
struct DiskInfo {
  std::uint64_t sectors = 0;      // capacity in 512-byte sectors (as Linux reads "sectors")
  std::uint32_t sector_size = 512;
  std::uint32_t physical_sector_size = 512;
  std::uint32_t info = 0;         // VDISK_* bits
  bool read_only() const { return (info & blkif::kVdiskReadonly) != 0; }
};

// Features in force for the current connection (backend offer AND our limits).
struct Negotiated {
  std::uint32_t nr_queues = 0;
  std::uint32_t ring_page_order = 0;
  std::uint32_t ring_size = 0;              // requests per ring
  std::uint32_t max_indirect_segments = 0;  // 0: direct requests only
  bool persistent = false;
  bool flush_cache = false;
  bool barrier = false;
  bool discard = false;
  bool discard_secure = false;
  std::uint32_t discard_granularity = 0;
  std::uint32_t discard_alignment = 0;
};

struct Stats {
  std::uint64_t requests = 0;           // blkif requests put on rings
  std::uint64_t indirect_requests = 0;
  std::uint64_t responses = 0;
  std::uint64_t notifications = 0;      // event-channel sends
  std::uint64_t protocol_errors = 0;    // bad id, duplicate id, wrong op, bad producer index
  std::uint64_t grants_leaked = 0;      // end_access refused: backend kept a frame mapped
  std::uint64_t reconnects = 0;         // handshakes completed after the first
  std::uint64_t resubmitted_ios = 0;    // I/Os re-issued on a new connection
  std::uint64_t handshake_failures = 0;  // handshake steps that failed (the frontend closed)
};

class Blkfront {
 public:
  static constexpr std::uint32_t kMaxQueues = 16;
  static constexpr std::uint32_t kMaxRingPages = 1u << ring::kMaxRingPageOrder;
  static constexpr std::size_t kPathMax = 128;

  // Bytes of storage needed for `limits`.
  static std::size_t storage_bytes(const Limits& limits);

  // `devid`: the virtual-device number, the node under device/vbd/. `storage` must be 16-byte
  // aligned, storage_bytes(limits) long, and outlive this object.
  Blkfront(Platform& platform, std::uint32_t devid, const Limits& limits, void* storage,
           std::size_t storage_len);
  ~Blkfront();
  Blkfront(const Blkfront&) = delete;
  Blkfront& operator=(const Blkfront&) = delete;

  // ---- control plane (core/xenbus.cc) ----
  // Reads device/vbd/<devid>/{backend,backend-id}, switches to Initialising and watches the
  // backend's state. 0 or -errno.
  int start();
  // The backend's directory changed: read its state and advance the handshake as Linux's
  // blkback_changed does (InitWait -> rings + Initialised; Connected -> Connected; Closing /
  // Closed -> tear the rings down keeping I/Os, Closed; InitWait again -> reconnect). Returns
  // 0, or -errno when a step failed (the frontend then closes).
  int backend_changed();
  // Blocking helpers over xs_wait: run backend_changed() until Connected / Closed or timeout.
  int connect(std::uint32_t timeout_ms);
  // Orderly close: Closing, wait for the backend to close, end every grant, Closed. I/Os still
  // outstanding complete with NoDevice. Later submits fail with NoDevice.
  int close(std::uint32_t timeout_ms);
  // Power-down disconnect, as Linux's blkfront_freeze: Closing, wait for the backend to reach
  // Closed, end every grant and close every event channel, Closed. Unlike close(), I/Os still
  // accepted are kept (none should be: the binding quiesces first) and nothing reconnects on its
  // own until resume(). 0, or -errno when the backend did not answer in time (the datapath is
  // torn down anyway; grants it still maps are counted in stats().grants_leaked).
  int suspend(std::uint32_t timeout_ms);
  // After suspend(): a new handshake (Initialising, new rings, grants and event channels; the
  // backend's features and size read again), kept I/Os resubmitted. connect()'s result.
  int resume(std::uint32_t timeout_ms);
  bool suspended() const { return suspended_; }

  XenbusState state() const { return state_; }
  // Handshake failures since the last successful connect: the binding backs off by it before
  // it lets backend_changed() retry (a reconnect is never a tight loop).
  std::uint32_t failures_in_a_row() const { return failures_in_a_row_; }
  bool connected() const { return state_ == XenbusState::Connected; }
  const DiskInfo& disk() const { return disk_; }
  const Negotiated& negotiated() const { return neg_; }
  const Stats& stats() const { return stats_; }
  domid_t backend_id() const { return backend_id_; }
  const char* backend_path() const { return backend_path_; }
  // The event channel of queue q (kept by the binding to route events to handle_event()).
  evtchn_port_t queue_port(std::uint32_t q) const;

  // ---- datapath (core/blkfront.cc) ----
  // Accepts an I/O. It is turned into requests now if connected, or on (re)connection.
  // Arguments that can be checked without the backend fail at once (done runs before return).
  void submit(BlockIo* io);
  // An event arrived on queue q's port (or the binding polls): consume responses, complete
  // I/Os, refill the ring. A hostile backend (bad id, impossible producer index) gets the
  // device disconnected; its I/Os are kept for the next connection.
  void handle_event(std::uint32_t q);
  void handle_all_events();
  // I/Os accepted and not completed.
  std::uint32_t active_ios() const { return active_count_; }

 private:
  struct Seg;
  struct Shadow;
  struct PoolPage;
  struct Queue;

  // xenbus.cc
  int talk_to_backend();
  int connect_datapath();
  void backend_gone(const char* why);
  int read_backend_uint(const char* key, std::uint64_t& out, std::uint64_t dflt);
  int read_state(const char* dir, XenbusState& out);
  int switch_state(XenbusState s);
  int write_front(const char* key, const char* value);
  int write_front_uint(const char* key, std::uint64_t v);
  int setup_rings();
  void free_rings();
  void fail_all(IoStatus st);
  int remove_front_keys();

  // blkfront.cc
  bool carve_queues(std::uint32_t nr_queues, std::uint32_t ring_size);
  bool carve_tables();
  bool setup_pools();
  void free_pools();
  void requeue_active();
  void kick(Queue& q);
  enum class Build : std::uint8_t { Done, Again, Blocked };
  Build build_request(Queue& q, BlockIo* io);
  void flush_ring(Queue& q);
  bool complete_request(Queue& q, const blkif::blkif_response& rsp);
  void release_shadow(Queue& q, std::uint32_t id, bool success);
  void finish_io(BlockIo* io, IoStatus st);
  void unlink_active(BlockIo* io);
  void ring_broken(Queue& q, const char* why);
  void kick_all();
  void request_disconnect();
  void teardown_datapath();  // rings, pools, grants; never touches the I/Os
  void reset_active();       // every accepted I/O back to "nothing built"
  void logf(LogLevel l, const char* a, const char* b = nullptr, std::uint64_t n = ~0ull);
  void* carve(std::size_t bytes);

  Platform& pf_;
  std::uint32_t devid_;
  Limits limits_;
  std::uint8_t* storage_;
  std::size_t storage_len_;

  XenbusState state_ = XenbusState::Unknown;
  bool started_ = false;
  bool closing_ = false;       // close() asked for: no reconnect, no new I/O
  bool suspended_ = false;     // suspend() until resume(): no reconnect, I/Os kept
  bool ever_connected_ = false;
  std::uint32_t failures_in_a_row_ = 0;
  bool rings_up_ = false;
  bool broken_ = false;        // protocol error seen: datapath stopped until reconnect
  char front_path_[kPathMax] = {};
  char backend_path_[kPathMax] = {};
  domid_t backend_id_ = 0;
  DiskInfo disk_;
  Negotiated neg_;
  Stats stats_;

  Queue* queues_ = nullptr;
  std::uint32_t nr_queues_ = 0;
  BlockIo* active_head_ = nullptr;
  BlockIo* active_tail_ = nullptr;
  std::uint32_t active_count_ = 0;
  std::uint32_t depth_ = 0;    // datapath calls in progress (completion callbacks nest)
  bool again_ = false;         // a nested submit() left work for the outer kick
  std::uint32_t max_segs_ = 0;          // segments per request in force
  std::uint32_t indirect_per_req_ = 0;  // indirect pages per request in force
  std::size_t carve_off_ = 0;
};

}  // namespace pvio::blkfront
