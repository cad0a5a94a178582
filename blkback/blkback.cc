// Ring processing for pvio-blkback: consume, parse, map, submit, reap, unmap, respond. One
// Queue per ring; each is driven by exactly one worker thread, so a queue's ring, grant mapper
// and engine are never touched concurrently.
#include "pvio/blkback/blkback.h"

#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "pvio/grant_table/grant_mapper.h"
#include "pvio/grant_table/persistent_cache.h"
#include "pvio/ring/io_rings.h"

namespace pvio::blkback {

namespace {

using gnttab::GrantMapper;
using gnttab::PersistentGrantCache;
using gnttab::grant_handle_t;

// A counter written by one thread (the queue's worker) and read by others: a relaxed
// load/store pair is enough and costs no locked instruction.
struct Counter {
  std::atomic<std::uint64_t> v{0};
  void add(std::uint64_t n = 1) { v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  std::uint64_t get() const { return v.load(std::memory_order_relaxed); }
};

[[noreturn]] void throw_errno(int err, const char* what) {
  throw std::system_error(err, std::generic_category(), what);
}

}  // namespace

// Reads an indirect segment page with one grant copy into a private page-aligned buffer: the
// copy never spans two local pages, and the guest cannot change what we validate.
class GrantCopyPageReader final : public IndirectPageReader {
 public:
  explicit GrantCopyPageReader(GrantMapper& mapper) : mapper_(mapper) {}
  std::int16_t read(grant_ref_t gref, std::span<blkif::blkif_request_segment> out) override {
    const std::size_t bytes = out.size_bytes();
    if (bytes > sizeof(page_)) return gnttab::GNTST_bad_copy_arg;
    gnttab::gnttab_copy op{};
    op.source = gnttab::gnttab_copy_ptr::gref(gref, mapper_.granting_domid(), 0);
    op.dest = gnttab::gnttab_copy_ptr::local(page_);
    op.len = static_cast<std::uint16_t>(bytes);
    op.flags = gnttab::GNTCOPY_source_gref;
    const std::int16_t st = mapper_.copy(op);
    if (st == gnttab::GNTST_okay) std::memcpy(out.data(), page_, bytes);
    return st;
  }

 private:
  GrantMapper& mapper_;
  alignas(4096) std::uint8_t page_[4096];
};

// The queue's ring in the frontend's ABI: native (x86_64-abi) or x86_32-abi, whose 108-byte
// requests and 12-byte responses pack the ring differently. An x86_32 slot is copied once and
// converted to the native layout from that private copy (blkif_get_x86_32_req in Linux), so
// everything after the copy point sees one request type.
class ProtocolRing {
 public:
  explicit ProtocolRing(BlkifProtocol p) : protocol_(p) {}

  bool attach(void* base, std::size_t bytes, ring::RingIdx start) {
    return x86_32() ? ring32_.attach(base, bytes, start) : ring64_.attach(base, bytes, start);
  }
  ring::RingCheck unconsumed_requests() {
    return x86_32() ? ring32_.unconsumed_requests() : ring64_.unconsumed_requests();
  }
  ring::RingCheck final_check_for_requests() {
    return x86_32() ? ring32_.final_check_for_requests() : ring64_.final_check_for_requests();
  }
  void consume_request(RawRequest& out) {
    if (!x86_32()) {
      ring64_.consume_request(out);
      return;
    }
    blkif::blkif_x86_32_request in;
    ring32_.consume_request(in);  // the only read of this slot
    out = from_x86_32(in);
  }
  void produce_response(const blkif::blkif_response& rsp) {
    if (!x86_32()) {
      ring64_.produce_response(rsp);
      return;
    }
    blkif::blkif_x86_32_response r;
    std::memset(&r, 0, sizeof(r));  // padding too: nothing of ours leaks into the guest page
    r.id = rsp.id;
    r.operation = rsp.operation;
    r.status = rsp.status;
    ring32_.produce_response(r);
  }
  bool push_responses() { return x86_32() ? ring32_.push_responses() : ring64_.push_responses(); }

 private:
  bool x86_32() const { return protocol_ == BlkifProtocol::X86_32; }

  BlkifProtocol protocol_;
  blkif::BackRing ring64_;
  blkif::BackRingX86_32 ring32_;
};

class Queue {
 public:
  Queue(unsigned index, const DeviceConfig& cfg, const DiskLimits& limits);
  ~Queue();

  // Everything that can be done now; returns whether anything was. With `arm` (the default)
  // an idle queue asks the frontend for an event on its next request
  // (RING_FINAL_CHECK_FOR_REQUESTS); a polling caller passes false, so req_event stays behind
  // and the frontend sends no doorbells while the backend is looking anyway.
  bool service(bool arm = true);
  void drain();    // waits for every request in service and answers it
  int kick_fd() const { return kick_fd_; }
  int engine_fd() const { return engine_->event_fd(); }
  IoEngine& engine() { return *engine_; }
  bool broken() const { return broken_.load(std::memory_order_acquire); }
  void add_stats(DeviceStats& s) const;

 private:
  enum class Phase : std::uint8_t { Free, Io, BarrierWait, BarrierWrite, BarrierFlush };

  struct Slot {
    ParsedRequest req;
    Phase phase = Phase::Free;
    std::uint32_t nr_mapped = 0;
    std::vector<iovec> iov;
    std::vector<grant_handle_t> handles;                  // non-persistent mappings
    std::vector<PersistentGrantCache::Grant> pgrants;    // persistent mode
  };

  void map_ring(const std::vector<grant_ref_t>& refs);
  bool consume();
  bool reap(bool wait);
  bool advance_barrier();
  void complete(std::uint32_t idx, std::int64_t result);
  // Maps the data grants of the slots in `idxs` in one batch; refused slots are answered.
  void map_batch(std::span<const std::uint32_t> idxs, std::vector<std::uint32_t>& mapped);
  void unmap(Slot& s);
  // A grant of slot `idx` failed to map: the request is answered with an error and the slot
  // released, its other grants unmapped unaccessed.
  void refuse_mapping(std::uint32_t idx);
  IoRequest io_for(std::uint32_t idx);
  void submit(std::span<const IoRequest> reqs);
  void respond(std::uint64_t id, std::uint8_t op, std::int16_t status);
  void release(std::uint32_t idx) {
    slots_[idx].phase = Phase::Free;
    free_.push_back(idx);
  }
  void push_responses();
  void mark_broken();

  unsigned index_;
  const DeviceConfig& cfg_;
  const DiskLimits& limits_;
  int kick_fd_;
  evtchn::Notifier* notifier_;
  evtchn_port_t notify_port_;

  std::unique_ptr<GrantMapper> mapper_;
  std::unique_ptr<PersistentGrantCache> cache_;
  std::unique_ptr<GrantCopyPageReader> reader_;
  std::unique_ptr<IoEngine> engine_;

  std::vector<grant_handle_t> ring_handles_;
  void* ring_alias_ = nullptr;  // contiguous view of a multi-page ring
  std::size_t ring_alias_len_ = 0;
  ProtocolRing ring_;

  std::vector<Slot> slots_;
  std::vector<std::uint32_t> free_;
  std::uint32_t in_io_ = 0;  // slots with engine I/O in flight (barrier excluded)
  std::int64_t barrier_slot_ = -1;
  bool responses_pending_ = false;
  std::atomic<bool> broken_{false};

  // Scratch, reused per batch.
  std::vector<RawRequest> raw_;
  std::vector<std::uint32_t> batch_;
  std::vector<std::uint32_t> mapped_;
  std::vector<gnttab::MapOp> map_ops_;
  std::vector<IoRequest> io_;
  std::vector<IoCompletion> cq_;

  Counter requests_, responses_, error_responses_, reads_, writes_, flushes_, barriers_,
      discards_, indirect_, grant_errors_, io_errors_, batches_, notifications_, ring_errors_;
  Counter invalid_[kRequestErrorCount];
};

Queue::Queue(unsigned index, const DeviceConfig& cfg, const DiskLimits& limits)
    : index_(index),
      cfg_(cfg),
      limits_(limits),
      kick_fd_(cfg.queues[index].kick_fd),
      notifier_(cfg.queues[index].notifier),
      notify_port_(cfg.queues[index].notify_port),
      ring_(cfg.protocol) {
  mapper_ = std::make_unique<GrantMapper>(cfg.frontend_domid, cfg.backend_domid, *cfg.memory,
                                          cfg.grant_table_gfns);
  if (cfg.persistent)
    cache_ = std::make_unique<PersistentGrantCache>(*mapper_, cfg.max_persistent_grants);
  reader_ = std::make_unique<GrantCopyPageReader>(*mapper_);

  const unsigned max_segs = std::max(blkif::kMaxSegmentsPerRequest, cfg.max_indirect_segments);
  EngineConfig ec;
  ec.queue_depth = cfg.max_in_flight;
  ec.max_segments = max_segs;
  engine_ = make_engine(cfg.engine, cfg.backing, ec);
  // The whole guest memory as fixed buffers lets io_uring skip page pinning per request; an
  // engine without registered buffers (or a kernel that refuses) works without.
  std::vector<iovec> regions;
  for (std::size_t i = 0; i < cfg.memory->region_count(); ++i)
    regions.push_back({cfg.memory->region(i).host, cfg.memory->region(i).size});
  (void)engine_->register_buffers(regions);

  map_ring(cfg.queues[index].ring_refs);

  slots_.resize(cfg.max_in_flight);
  for (std::uint32_t i = cfg.max_in_flight; i-- > 0;) {
    Slot& s = slots_[i];
    s.iov.resize(max_segs);
    s.handles.resize(max_segs);
    if (cache_) s.pgrants.resize(max_segs);
    free_.push_back(i);
  }
  raw_.resize(cfg.max_in_flight);
  io_.reserve(cfg.max_in_flight);
  cq_.resize(cfg.max_in_flight);
  map_ops_.reserve(std::size_t{cfg.max_in_flight} * blkif::kMaxSegmentsPerRequest);
}

// The frontend's ring pages are mapped for the life of the queue. A multi-page ring must be
// contiguous for ring indexing, as xenbus_map_ring_valloc's vmap makes it in Linux: the granted
// frames get a second, contiguous mapping (mremap with old_size 0 duplicates a shared mapping).
void Queue::map_ring(const std::vector<grant_ref_t>& refs) {
  const std::size_t n = refs.size();
  if (n == 0 || (n & (n - 1)) != 0 || n > (std::size_t{1} << ring::kMaxRingPageOrder))
    throw std::invalid_argument("ring needs 1, 2, 4, 8 or 16 pages");
  std::vector<std::uint8_t*> pages;
  for (grant_ref_t ref : refs) {
    const gnttab::MapResult r = mapper_->map(ref, /*readonly=*/false);
    if (r.status != gnttab::GNTST_okay)
      throw std::invalid_argument(std::string("ring-ref ") + std::to_string(ref) +
                                  " does not map: " + gnttab::status_string(r.status));
    ring_handles_.push_back(r.handle);
    pages.push_back(r.addr);
  }
  void* base = pages[0];
  bool contiguous = true;
  for (std::size_t i = 1; i < n; ++i) contiguous &= pages[i] == pages[0] + i * ring::kPageSize;
  if (!contiguous) {
    const std::size_t len = n * ring::kPageSize;
    void* va = ::mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (va == MAP_FAILED) throw_errno(errno, "mmap ring alias");
    ring_alias_ = va;
    ring_alias_len_ = len;
    for (std::size_t i = 0; i < n; ++i) {
      void* want = static_cast<std::uint8_t*>(va) + i * ring::kPageSize;
      if (::mremap(pages[i], 0, ring::kPageSize, MREMAP_MAYMOVE | MREMAP_FIXED, want) != want)
        throw_errno(errno, "mremap ring page");
    }
    base = va;
  }
  // Resume where the responses stand (Linux BACK_RING_ATTACH on reconnect); a fresh ring has 0.
  const ring::RingIdx start =
      std::atomic_ref<ring::RingIdx>(static_cast<ring::SringHeader*>(base)->rsp_prod)
          .load(std::memory_order_acquire);
  if (!ring_.attach(base, n * ring::kPageSize, start))
    throw std::invalid_argument("cannot attach ring");
}

Queue::~Queue() {
  cache_.reset();  // persistent mappings go back before the mapper does
  if (ring_alias_ != nullptr) ::munmap(ring_alias_, ring_alias_len_);
  for (grant_handle_t h : ring_handles_) mapper_->unmap(h);
}

void Queue::add_stats(DeviceStats& s) const {
  s.requests += requests_.get();
  s.responses += responses_.get();
  s.error_responses += error_responses_.get();
  s.reads += reads_.get();
  s.writes += writes_.get();
  s.flushes += flushes_.get();
  s.barriers += barriers_.get();
  s.discards += discards_.get();
  s.indirect += indirect_.get();
  s.grant_errors += grant_errors_.get();
  s.io_errors += io_errors_.get();
  s.batches += batches_.get();
  s.notifications += notifications_.get();
  s.ring_errors += ring_errors_.get();
  for (std::size_t i = 0; i < kRequestErrorCount; ++i) s.invalid[i] += invalid_[i].get();
}

void Queue::respond(std::uint64_t id, std::uint8_t op, std::int16_t status) {
  blkif::blkif_response rsp;
  std::memset(&rsp, 0, sizeof(rsp));  // padding too: nothing of ours leaks into the guest page
  rsp.id = id;
  rsp.operation = op;
  rsp.status = status;
  ring_.produce_response(rsp);
  responses_pending_ = true;
  responses_.add();
  if (status != blkif::kRspOkay) error_responses_.add();
}

// One push and at most one event per batch; the frontend's rsp_event decides (RING_PUSH_
// RESPONSES_AND_CHECK_NOTIFY).
void Queue::push_responses() {
  if (!responses_pending_) return;
  responses_pending_ = false;
  if (ring_.push_responses() && notifier_ != nullptr) {
    notifier_->notify(notify_port_);
    notifications_.add();
  }
}

void Queue::mark_broken() {
  if (broken_.exchange(true, std::memory_order_acq_rel)) return;
  ring_errors_.add();
  if (cfg_.on_ring_error) cfg_.on_ring_error(index_);
}

bool Queue::service(bool arm) {
  bool any = false;
  for (;;) {
    bool progress = reap(/*wait=*/false);
    progress |= advance_barrier();
    if (!broken() && barrier_slot_ < 0) progress |= consume();
    push_responses();
    any |= progress;
    if (progress) continue;
    // Idle. Completions wake us while requests are in service; otherwise ask the frontend for
    // an event on the next request and look once more (RING_FINAL_CHECK_FOR_REQUESTS).
    if (!arm || broken() || barrier_slot_ >= 0 || free_.empty()) return any;
    const ring::RingCheck c = ring_.final_check_for_requests();
    if (!c.ok()) {
      mark_broken();
      return any;
    }
    if (c.count == 0) return any;
  }
}

bool Queue::consume() {
  const ring::RingCheck c = ring_.unconsumed_requests();
  if (!c.ok()) {
    mark_broken();
    return false;
  }
  const std::uint32_t n = std::min<std::uint32_t>(c.count, static_cast<std::uint32_t>(free_.size()));
  if (n == 0) return false;

  batch_.clear();
  io_.clear();
  for (std::uint32_t i = 0; i < n; ++i) {
    RawRequest& raw = raw_[i];
    ring_.consume_request(raw);  // the only read of this slot
    requests_.add();
    const std::uint32_t idx = free_.back();
    free_.pop_back();
    Slot& s = slots_[idx];
    const RequestError err = parse_request(raw, limits_, reader_.get(), s.req);
    if (err != RequestError::None) {
      invalid_[static_cast<std::size_t>(err)].add();
      respond(s.req.id, s.req.operation, response_status(err));
      release(idx);
      continue;
    }
    if (s.req.indirect) indirect_.add();
    switch (s.req.kind) {
      case Kind::Read: reads_.add(); batch_.push_back(idx); break;
      case Kind::Write: writes_.add(); batch_.push_back(idx); break;
      case Kind::Discard:
        discards_.add();
        if (s.req.nr_sectors == 0) {
          respond(s.req.id, s.req.operation, blkif::kRspOkay);
          release(idx);
        } else {
          s.phase = Phase::Io;
          io_.push_back(io_for(idx));
        }
        break;
      case Kind::Barrier:
      case Kind::Flush:
        (s.req.kind == Kind::Flush ? flushes_ : barriers_).add();
        // Drain: nothing after it is consumed until it completed (xen-blkback's drain_io).
        s.phase = Phase::BarrierWait;
        barrier_slot_ = idx;
        break;
    }
    if (barrier_slot_ >= 0) break;
  }

  map_batch(batch_, mapped_);
  for (std::uint32_t idx : mapped_) {
    slots_[idx].phase = Phase::Io;
    io_.push_back(io_for(idx));
  }
  submit(io_);
  return true;
}

void Queue::map_batch(std::span<const std::uint32_t> idxs, std::vector<std::uint32_t>& mapped) {
  mapped.clear();
  if (cache_) {
    for (std::uint32_t idx : idxs) {
      Slot& s = slots_[idx];
      // The backend only reads guest pages for a write, so it asks for read-only access.
      const bool ro = !s.req.writes_guest_pages();
      bool ok = true;
      s.nr_mapped = 0;
      for (std::uint32_t i = 0; i < s.req.nr_segments; ++i) {
        s.pgrants[i] = cache_->get(s.req.seg[i].gref, ro);
        if (s.pgrants[i].status != gnttab::GNTST_okay) {
          ok = false;
          break;
        }
        ++s.nr_mapped;
      }
      if (!ok) {
        refuse_mapping(idx);
        continue;
      }
      for (std::uint32_t i = 0; i < s.req.nr_segments; ++i)
        s.iov[i] = iovec{s.pgrants[i].addr + s.req.seg[i].offset, s.req.seg[i].length};
      mapped.push_back(idx);
    }
    return;
  }

  // One GNTTABOP_map_grant_ref batch for the whole ring batch.
  map_ops_.clear();
  for (std::uint32_t idx : idxs) {
    const Slot& s = slots_[idx];
    const std::uint32_t flags = s.req.writes_guest_pages() ? 0 : gnttab::GNTMAP_readonly;
    for (std::uint32_t i = 0; i < s.req.nr_segments; ++i)
      map_ops_.push_back({s.req.seg[i].gref, cfg_.frontend_domid,
                          flags | gnttab::GNTMAP_host_map, 0, 0, nullptr});
  }
  mapper_->map(map_ops_);
  std::size_t op = 0;
  for (std::uint32_t idx : idxs) {
    Slot& s = slots_[idx];
    bool ok = true;
    s.nr_mapped = 0;
    for (std::uint32_t i = 0; i < s.req.nr_segments; ++i, ++op) {
      const gnttab::MapOp& m = map_ops_[op];
      if (m.status != gnttab::GNTST_okay) {
        ok = false;
        continue;
      }
      s.handles[s.nr_mapped++] = m.handle;
      s.iov[i] = iovec{m.host_addr + s.req.seg[i].offset, s.req.seg[i].length};
    }
    if (!ok) {
      refuse_mapping(idx);
      continue;
    }
    mapped.push_back(idx);
  }
}

void Queue::refuse_mapping(std::uint32_t idx) {
  Slot& s = slots_[idx];
  unmap(s);
  grant_errors_.add();
  respond(s.req.id, s.req.operation, blkif::kRspError);
  release(idx);
}

void Queue::unmap(Slot& s) {
  if (cache_) {
    for (std::uint32_t i = 0; i < s.nr_mapped; ++i) cache_->put(s.pgrants[i]);
  } else {
    for (std::uint32_t i = 0; i < s.nr_mapped; ++i) mapper_->unmap(s.handles[i]);
  }
  s.nr_mapped = 0;
}

IoRequest Queue::io_for(std::uint32_t idx) {
  const Slot& s = slots_[idx];
  IoRequest r;
  r.tag = idx;
  r.offset = s.req.offset_bytes();
  switch (s.phase) {
    case Phase::BarrierFlush: r.op = IoOp::Flush; return r;
    case Phase::BarrierWrite: r.op = IoOp::Write; break;
    default:
      if (s.req.kind == Kind::Discard) {
        r.op = IoOp::Discard;
        r.length = s.req.length_bytes();
        return r;
      }
      r.op = s.req.kind == Kind::Read ? IoOp::Read : IoOp::Write;
      break;
  }
  r.iov = s.iov.data();
  r.iovcnt = s.req.nr_segments;
  return r;
}

void Queue::submit(std::span<const IoRequest> reqs) {
  if (reqs.empty()) return;
  batches_.add();
  // The engine's depth equals our slot count and each slot has at most one I/O in flight, so
  // everything fits; anything refused would be a bug, and is answered rather than lost.
  const std::size_t accepted = engine_->submit(reqs);
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    const auto idx = static_cast<std::uint32_t>(reqs[i].tag);
    if (i < accepted) {
      if (slots_[idx].phase == Phase::Io) ++in_io_;
    } else {
      complete(idx, -EAGAIN);
    }
  }
}

bool Queue::reap(bool wait) {
  if (engine_->in_flight() == 0) return false;
  const std::size_t n = engine_->reap(cq_, wait ? 1 : 0);
  for (std::size_t i = 0; i < n; ++i) {
    const auto idx = static_cast<std::uint32_t>(cq_[i].tag);
    if (slots_[idx].phase == Phase::Io) --in_io_;
    complete(idx, cq_[i].result);
  }
  return n != 0;
}

void Queue::complete(std::uint32_t idx, std::int64_t result) {
  Slot& s = slots_[idx];
  const bool data = s.phase == Phase::BarrierWrite ||
                    (s.phase == Phase::Io && s.req.kind != Kind::Discard);
  const bool ok = data ? result == static_cast<std::int64_t>(s.req.length_bytes()) : result == 0;
  if (!ok) io_errors_.add();
  // Grants go back before the response, so the frontend may end access as soon as it sees it.
  unmap(s);
  if (s.phase == Phase::BarrierWrite && ok) {
    s.phase = Phase::BarrierFlush;
    const IoRequest r = io_for(idx);
    submit(std::span(&r, 1));
    return;
  }
  respond(s.req.id, s.req.operation, ok ? blkif::kRspOkay : blkif::kRspError);
  if (s.phase == Phase::BarrierWrite || s.phase == Phase::BarrierFlush) barrier_slot_ = -1;
  release(idx);
}

// Barrier and flush: once everything submitted before them has completed, write their data
// (if any), then flush; the response waits for the flush (fdatasync semantics).
bool Queue::advance_barrier() {
  if (barrier_slot_ < 0 || in_io_ != 0) return false;
  const auto idx = static_cast<std::uint32_t>(barrier_slot_);
  Slot& s = slots_[idx];
  if (s.phase != Phase::BarrierWait) return false;
  if (s.req.nr_segments == 0) {
    s.phase = Phase::BarrierFlush;
  } else {
    batch_.assign(1, idx);
    map_batch(batch_, mapped_);
    if (mapped_.empty()) {  // refused and answered by map_batch
      barrier_slot_ = -1;
      return true;
    }
    s.phase = Phase::BarrierWrite;
  }
  const IoRequest r = io_for(idx);
  submit(std::span(&r, 1));
  return true;
}

void Queue::drain() {
  for (;;) {
    advance_barrier();
    if (engine_->in_flight() == 0) break;
    reap(/*wait=*/true);
  }
  push_responses();
}

// ---- Device ----

Device::Device(DeviceConfig config) : config_(std::move(config)) {
  if (config_.memory == nullptr) throw std::invalid_argument("DeviceConfig.memory is null");
  if (config_.queues.empty()) throw std::invalid_argument("a device needs at least one queue");
  if (config_.max_in_flight == 0 || config_.max_in_flight > 1024)
    throw std::invalid_argument("max_in_flight must be 1..1024");
  if (config_.max_indirect_segments > kMaxIndirectSegments)
    throw std::invalid_argument("max_indirect_segments above 256");
  // 0: one worker thread per queue, at most one per host CPU (more would only take turns).
  if (config_.threads == 0) {
    const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
    config_.threads = std::min(static_cast<unsigned>(config_.queues.size()), cpus);
  }
  // Limits need the backing's size: the first queue's engine opens it, the others re-open it.
  queues_.reserve(config_.queues.size());
  for (unsigned q = 0; q < config_.queues.size(); ++q) {
    // Queues keep a reference to limits_; it is complete before any of them serves a ring.
    queues_.push_back(std::make_unique<Queue>(q, config_, limits_));
    if (q == 0) {
      const BackingInfo& b = queues_[0]->engine().backing();
      limits_.nr_sectors = b.size_bytes / blkif::kSectorSize;
      limits_.read_only = b.read_only;
      limits_.flush = config_.flush;
      limits_.barrier = config_.barrier;
      limits_.discard = config_.discard && b.discard_supported && !b.read_only;
      limits_.discard_secure = false;
      limits_.max_indirect_segments = config_.max_indirect_segments;
    }
  }
  stop_fd_ = evtchn::eventfd_create(/*nonblocking=*/true);
  if (stop_fd_ < 0) throw_errno(-stop_fd_, "eventfd");
}

Device::~Device() {
  stop();
  for (auto& q : queues_) q->drain();
  queues_.clear();
  if (stop_fd_ >= 0) ::close(stop_fd_);
}

const BackingInfo& Device::backing() const { return queues_[0]->engine().backing(); }
std::string_view Device::engine_name() const { return queues_[0]->engine().name(); }

bool Device::ring_broken(unsigned queue) const {
  return queue < queues_.size() && queues_[queue]->broken();
}

bool Device::any_ring_broken() const {
  for (const auto& q : queues_)
    if (q->broken()) return true;
  return false;
}

DeviceStats Device::stats() const {
  DeviceStats s;
  for (const auto& q : queues_) q->add_stats(s);
  s.wakeups = wakeups_.load(std::memory_order_relaxed);
  s.polled = polled_.load(std::memory_order_relaxed);
  s.poll_budget_ns = poll_budget_ns_.load(std::memory_order_relaxed);
  return s;
}

void Device::start() {
  if (running_) return;
  running_ = true;
  const unsigned nthreads = std::min<unsigned>(config_.threads, nr_queues());
  for (unsigned t = 0; t < nthreads; ++t) threads_.emplace_back([this, t] { worker(t); });
}

void Device::stop() {
  if (!running_) return;
  stopping_.store(true, std::memory_order_relaxed);
  evtchn::eventfd_signal(stop_fd_);
  for (auto& t : threads_) t.join();
  threads_.clear();
  running_ = false;
  stopping_.store(false, std::memory_order_relaxed);
  std::uint64_t v;
  [[maybe_unused]] const ssize_t r = ::read(stop_fd_, &v, sizeof v);
}

// A worker serves queues t, t + threads, ...: epoll over their kick and completion eventfds.
void Device::worker(unsigned t) {
  const unsigned nthreads = std::min<unsigned>(config_.threads, nr_queues());
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) return;
  auto add = [ep](int fd, std::uint64_t data) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = data;
    ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  };
  constexpr std::uint64_t kStop = ~std::uint64_t{0};
  add(stop_fd_, kStop);
  std::vector<unsigned> mine;
  for (unsigned q = t; q < nr_queues(); q += nthreads) {
    mine.push_back(q);
    if (queues_[q]->kick_fd() >= 0) add(queues_[q]->kick_fd(), std::uint64_t{q} << 1);
    add(queues_[q]->engine_fd(), (std::uint64_t{q} << 1) | 1);
  }
  // Requests may already be waiting (a restarted backend re-attaching to a live ring).
  for (unsigned q : mine) queues_[q]->service();

  // Polling: after work, look at the rings and completions without sleeping (and without
  // arming req_event, so the frontend sends no doorbells meanwhile) for up to a budget; every
  // find restarts it. Then arm and sleep on the event channels. The budget adapts as KVM's
  // halt polling does, between 0 and poll_us: a sleep that ended within poll_us would have been
  // caught by a longer poll (double it, from 10 us), a longer one would not (halve it), so an
  // idle or slow vbd stops burning a core and a busy, fast one keeps polling.
  const std::uint64_t max_poll_ns = std::uint64_t{config_.poll_us} * 1000;
  constexpr std::uint64_t kPollGrowStartNs = 10'000;
  std::uint64_t poll_ns = max_poll_ns;
  auto now_ns = [] {
    timespec ts;
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::uint64_t(ts.tv_sec) * 1'000'000'000u + std::uint64_t(ts.tv_nsec);
  };
  auto adapt = [&](std::uint64_t slept_ns) {
    if (max_poll_ns == 0) return;
    if (slept_ns <= max_poll_ns) poll_ns = std::min(max_poll_ns, std::max(poll_ns * 2, kPollGrowStartNs));
    else poll_ns = poll_ns / 2 < kPollGrowStartNs ? 0 : poll_ns / 2;
    poll_budget_ns_.store(poll_ns, std::memory_order_relaxed);
  };
  auto poll = [&] {
    if (poll_ns == 0) return;
    std::uint64_t until = now_ns() + poll_ns;
    for (unsigned spins = 0;; ++spins) {
      bool any = false;
      for (unsigned q : mine) any |= queues_[q]->service(/*arm=*/false);
      if (any) {
        polled_.fetch_add(1, std::memory_order_relaxed);
        until = now_ns() + poll_ns;
      } else if ((spins & 15) == 0 &&
                 (now_ns() >= until || stopping_.load(std::memory_order_relaxed))) {
        break;
      }
      __builtin_ia32_pause();
    }
    for (unsigned q : mine) queues_[q]->service();  // arm, and catch what came meanwhile
  };
  poll();

  epoll_event evs[16];
  for (;;) {
    const std::uint64_t slept_from = max_poll_ns != 0 ? now_ns() : 0;
    const int n = ::epoll_wait(ep, evs, 16, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (max_poll_ns != 0) adapt(now_ns() - slept_from);
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    bool stop = false;
    for (int i = 0; i < n; ++i) {
      const std::uint64_t d = evs[i].data.u64;
      if (d == kStop) {
        stop = true;
        continue;
      }
      Queue& q = *queues_[d >> 1];
      if (d & 1) {
        q.engine().ack_event();
      } else {
        std::uint64_t v;
        [[maybe_unused]] const ssize_t r = ::read(q.kick_fd(), &v, sizeof v);
      }
      q.service();
    }
    if (stop) break;
    poll();
  }
  ::close(ep);
}

}  // namespace pvio::blkback
