// blkfront datapath: turns BlockIos into blkif requests (split at 11 segments, or indirect
// requests when negotiated), grants data pages directly or copies through a pool of the core's
// own pages (persistent grants when negotiated, as Linux blkfront), consumes responses against
// the tag table, completes I/Os and refills the rings. Never touches xenstore.
#include <cstring>
#include <new>

#include "impl.h"

namespace pvio::blkfront {

namespace {
constexpr std::uint32_t kPage = ring::kPageSize;
constexpr std::uint32_t kSector = blkif::kSectorSize;
}  // namespace

const char* io_status_name(IoStatus s) {
  switch (s) {
    case IoStatus::Ok: return "Ok";
    case IoStatus::IoError: return "IoError";
    case IoStatus::NotSupported: return "NotSupported";
    case IoStatus::Invalid: return "Invalid";
    case IoStatus::ReadOnly: return "ReadOnly";
    case IoStatus::NoDevice: return "NoDevice";
    case IoStatus::NoResources: return "NoResources";
    case IoStatus::Pending: return "Pending";
  }
  return "?";
}

// ---- tables and pools (sized at connect) ----

bool Blkfront::carve_tables() {
  for (std::uint32_t qi = 0; qi < nr_queues_; ++qi) {
    Queue& q = queues_[qi];
    const std::size_t nsegs = std::size_t{neg_.ring_size} * max_segs_;
    void* s = carve(sizeof(Seg) * nsegs);
    const std::size_t nind = std::size_t{neg_.ring_size} * indirect_per_req_;
    void* ind = nind ? carve(sizeof(PoolPage) * nind) : nullptr;
    void* pool = limits_.pool_pages ? carve(sizeof(PoolPage) * limits_.pool_pages) : nullptr;
    void* pf = limits_.pool_pages ? carve(sizeof(std::uint32_t) * limits_.pool_pages) : nullptr;
    if (s == nullptr || (nind && ind == nullptr) ||
        (limits_.pool_pages && (pool == nullptr || pf == nullptr)))
      return false;
    q.segs = static_cast<Seg*>(s);
    for (std::size_t i = 0; i < nsegs; ++i) new (&q.segs[i]) Seg();
    q.indirect = static_cast<PoolPage*>(ind);
    for (std::size_t i = 0; i < nind; ++i) new (&q.indirect[i]) PoolPage();
    q.pool = static_cast<PoolPage*>(pool);
    q.pool_free = static_cast<std::uint32_t*>(pf);
    q.pool_size = 0;
    q.pool_free_count = 0;
  }
  return true;
}

bool Blkfront::setup_pools() {
  for (std::uint32_t qi = 0; qi < nr_queues_; ++qi) {
    Queue& q = queues_[qi];
    for (std::uint32_t i = 0; i < limits_.pool_pages; ++i) {
      PoolPage& p = q.pool[i];
      new (&p) PoolPage();
      if (!pf_.alloc_pages(0, p.page)) return false;
      ++q.pool_size;
      if (neg_.persistent) {
        // Persistent grants: granted once, writable (the backend writes read data into them),
        // reused for every request of this connection (blkif.h "feature-persistent").
        p.gref = pf_.grant_access(backend_id_, p.page.gfn, false);
        if (p.gref == kInvalidGrantRef) return false;
      }
      q.pool_free[q.pool_free_count++] = i;
    }
    const std::uint32_t nind = neg_.ring_size * indirect_per_req_;
    for (std::uint32_t i = 0; i < nind; ++i) {
      PoolPage& p = q.indirect[i];
      if (!pf_.alloc_pages(0, p.page)) return false;
      if (neg_.persistent) {
        p.gref = pf_.grant_access(backend_id_, p.page.gfn, true);
        if (p.gref == kInvalidGrantRef) return false;
      }
    }
  }
  return true;
}

void Blkfront::free_pools() {
  for (std::uint32_t qi = 0; qi < nr_queues_; ++qi) {
    Queue& q = queues_[qi];
    if (q.shadow != nullptr) {
      for (std::uint32_t id = 0; id < neg_.ring_size; ++id)
        if (q.shadow[id].io != nullptr) release_shadow(q, id, false);
    }
    auto drop = [&](PoolPage& p) {
      if (p.page.addr == nullptr) return;
      if (p.gref != kInvalidGrantRef && !pf_.end_access(p.gref)) {
        p.lost = true;
        ++stats_.grants_leaked;
      }
      p.gref = kInvalidGrantRef;
      if (!p.lost) pf_.free_pages(0, p.page);
      p.page = GuestPages{};
    };
    for (std::uint32_t i = 0; i < q.pool_size; ++i) drop(q.pool[i]);
    if (q.indirect != nullptr)
      for (std::uint32_t i = 0; i < neg_.ring_size * indirect_per_req_; ++i) drop(q.indirect[i]);
    q.pool_size = 0;
    q.pool_free_count = 0;
  }
}

// ---- I/O lists ----

void Blkfront::unlink_active(BlockIo* io) {
  auto& p = io->priv;
  if (p.prev) p.prev->priv.next = p.next; else active_head_ = p.next;
  if (p.next) p.next->priv.prev = p.prev; else active_tail_ = p.prev;
  p.prev = p.next = nullptr;
  --active_count_;
}

void Blkfront::finish_io(BlockIo* io, IoStatus st) {
  unlink_active(io);
  io->status = st;
  if (io->done != nullptr) io->done(io);
}

void Blkfront::requeue_active() {
  for (std::uint32_t qi = 0; qi < nr_queues_; ++qi)
    queues_[qi].pending_head = queues_[qi].pending_tail = nullptr;
  for (BlockIo* io = active_head_; io != nullptr; io = io->priv.next) {
    io->priv.qidx = static_cast<std::uint16_t>(io->queue % nr_queues_);
    Queue& q = queues_[io->priv.qidx];
    io->priv.next_pending = nullptr;
    if (q.pending_tail) q.pending_tail->priv.next_pending = io; else q.pending_head = io;
    q.pending_tail = io;
  }
}

void Blkfront::submit(BlockIo* io) {
  io->status = IoStatus::Pending;
  io->priv = BlockIo::Private{};
  if (closing_) {
    io->status = IoStatus::NoDevice;
    if (io->done) io->done(io);
    return;
  }
  if (io->op == Op::Read || io->op == Op::Write) {
    const bool bad = io->nr_sectors == 0 || (io->buffer == nullptr && io->pages == nullptr) ||
                     (io->page_offset % kSector) != 0 || io->page_offset >= kPage ||
                     (io->pages != nullptr &&
                      std::uint64_t{io->nr_pages} * kPage <
                          std::uint64_t{io->page_offset} + std::uint64_t{io->nr_sectors} * kSector);
    if (bad) {
      io->status = IoStatus::Invalid;
      if (io->done) io->done(io);
      return;
    }
  } else if (io->op == Op::Discard && io->nr_sectors == 0) {
    io->status = IoStatus::Invalid;
    if (io->done) io->done(io);
    return;
  }
  io->priv.prev = active_tail_;
  if (active_tail_) active_tail_->priv.next = io; else active_head_ = io;
  active_tail_ = io;
  ++active_count_;
  if (!connected() || !rings_up_ || broken_) return;  // enqueued at (re)connection
  io->priv.qidx = static_cast<std::uint16_t>(io->queue % nr_queues_);
  Queue& q = queues_[io->priv.qidx];
  if (q.pending_tail) q.pending_tail->priv.next_pending = io; else q.pending_head = io;
  q.pending_tail = io;
  if (depth_ > 0) {
    again_ = true;  // an outer datapath call kicks when it unwinds
    return;
  }
  kick_all();
}

void Blkfront::kick_all() {
  ++depth_;
  do {
    again_ = false;
    for (std::uint32_t qi = 0; qi < nr_queues_ && connected() && !broken_; ++qi)
      kick(queues_[qi]);
  } while (again_ && connected() && !broken_);
  --depth_;
}

// ---- request building ----

namespace {

// Copies between an I/O's data (byte offset `off`) and one local page.
void io_copy(const BlockIo* io, std::uint32_t off, std::uint8_t* local, std::uint32_t len,
             bool to_io) {
  if (io->buffer != nullptr) {
    std::uint8_t* b = static_cast<std::uint8_t*>(io->buffer) + off;
    if (to_io) std::memcpy(b, local, len); else std::memcpy(local, b, len);
    return;
  }
  std::uint64_t abs = std::uint64_t{io->page_offset} + off;
  while (len > 0) {
    const std::uint64_t idx = abs / kPage;
    const std::uint32_t in = static_cast<std::uint32_t>(abs % kPage);
    const std::uint32_t n = len < kPage - in ? len : kPage - in;
    std::uint8_t* p = static_cast<std::uint8_t*>(io->pages[idx].addr) + in;
    if (to_io) std::memcpy(p, local, n); else std::memcpy(local, p, n);
    abs += n;
    local += n;
    len -= n;
  }
}

}  // namespace

Blkfront::Build Blkfront::build_request(Queue& q, BlockIo* io) {
  auto pop = [&] {
    q.pending_head = io->priv.next_pending;
    if (q.pending_head == nullptr) q.pending_tail = nullptr;
    io->priv.next_pending = nullptr;
  };
  auto fail = [&](IoStatus st) {
    pop();
    if (io->priv.outstanding == 0) {
      finish_io(io, st);
    } else {
      // Requests already on the ring finish it; remember why it failed.
      if (io->priv.error == IoStatus::Ok) io->priv.error = st;
      io->priv.all_built = true;
    }
    return Build::Done;
  };

  if (!io->priv.started) {
    // Checks that need the backend's answers (capacity, read-only, features).
    const bool rw = io->op == Op::Read || io->op == Op::Write;
    if (io->op == Op::Flush) {
      if (!neg_.flush_cache && !neg_.barrier) return fail(IoStatus::NotSupported);
    } else {
      if (io->op == Op::Discard && !neg_.discard) return fail(IoStatus::NotSupported);
      if ((io->op == Op::Write || io->op == Op::Discard) && disk_.read_only())
        return fail(IoStatus::ReadOnly);
      const std::uint64_t end = io->sector + io->nr_sectors;
      if (end < io->sector || end > disk_.sectors) return fail(IoStatus::Invalid);
      if (rw && io->buffer != nullptr && neg_.persistent == false && limits_.pool_pages == 0)
        return fail(IoStatus::NoResources);
      if (rw && (neg_.persistent || io->buffer != nullptr) && limits_.pool_pages == 0)
        return fail(IoStatus::NoResources);
    }
    io->priv.started = true;
  }

  if (q.ring.full() || q.shadow_free >= neg_.ring_size) return Build::Blocked;
  const std::uint32_t id = q.shadow_free;
  Shadow& sh = q.shadow[id];

  if (io->op == Op::Flush || io->op == Op::Discard) {
    blkif::blkif_request* slot = q.ring.next_request();
    if (io->op == Op::Flush) {
      blkif::blkif_request req{};
      req.operation = neg_.flush_cache ? blkif::kOpFlushDiskcache : blkif::kOpWriteBarrier;
      req.nr_segments = 0;
      req.handle = static_cast<blkif::blkif_vdev_t>(devid_);
      req.id = id;
      req.sector_number = io->sector;
      std::memcpy(slot, &req, sizeof(req));
      sh.operation = req.operation;
    } else {
      blkif::blkif_request_discard req{};
      req.operation = blkif::kOpDiscard;
      req.flag = io->discard_secure && neg_.discard_secure ? blkif::kDiscardSecure : 0;
      req.handle = static_cast<blkif::blkif_vdev_t>(devid_);
      req.id = id;
      req.sector_number = io->sector;
      req.nr_sectors = io->nr_sectors;
      std::memset(slot, 0, sizeof(*slot));
      std::memcpy(slot, &req, sizeof(req));
      sh.operation = blkif::kOpDiscard;
    }
    q.shadow_free = sh.next_free;
    ++q.shadow_used;
    sh.io = io;
    sh.nr_segs = 0;
    sh.nr_indirect = 0;
    sh.bounced = false;
    ++io->priv.outstanding;
    io->priv.all_built = true;
    ++stats_.requests;
    pop();
    return Build::Done;
  }

  // Read / write: as many segments as one request carries, each within one frame.
  const bool write = io->op == Op::Write;
  const bool bounce = neg_.persistent || io->buffer != nullptr;
  std::uint32_t seg_limit = max_segs_;
  if (bounce && seg_limit > q.pool_free_count) seg_limit = q.pool_free_count;
  if (seg_limit == 0) return Build::Blocked;

  Seg* segs = &q.segs[std::size_t{id} * max_segs_];
  blkif::blkif_request_segment wire[blkif::kMaxSegmentsPerRequest];
  std::uint32_t nsegs = 0;
  std::uint32_t pos = io->priv.built * kSector;  // byte offset within the I/O
  const std::uint32_t total = io->nr_sectors * kSector;
  bool grant_failed = false;
  // Indirect segments are written straight into the indirect pages.
  const bool may_indirect = indirect_per_req_ != 0;
  PoolPage* ind = may_indirect ? &q.indirect[std::size_t{id} * indirect_per_req_] : nullptr;

  while (pos < total && nsegs < seg_limit) {
    Seg& s = segs[nsegs];
    s = Seg{};
    std::uint32_t first_sect = 0;
    std::uint32_t len;
    std::uint64_t gfn;
    if (bounce) {
      len = total - pos < kPage ? total - pos : kPage;
      const std::uint32_t pi = q.pool_free[--q.pool_free_count];
      PoolPage& pp = q.pool[pi];
      s.pool = static_cast<std::int32_t>(pi);
      if (write) io_copy(io, pos, static_cast<std::uint8_t*>(pp.page.addr), len, false);
      gfn = pp.page.gfn;
      s.gref = neg_.persistent ? pp.gref : pf_.grant_access(backend_id_, gfn, write);
    } else {
      const std::uint64_t abs = std::uint64_t{io->page_offset} + pos;
      const std::uint32_t in = static_cast<std::uint32_t>(abs % kPage);
      len = total - pos < kPage - in ? total - pos : kPage - in;
      first_sect = in / kSector;
      gfn = io->pages[abs / kPage].gfn;
      // The backend only reads the data of a write: grant read-only (blkif.h).
      s.gref = pf_.grant_access(backend_id_, gfn, write);
    }
    s.io_byte = pos;
    s.len = static_cast<std::uint16_t>(len);
    ++nsegs;  // counted even on failure, so the unwind releases its pool page
    if (s.gref == kInvalidGrantRef) {
      grant_failed = true;
      break;
    }
    blkif::blkif_request_segment w{};
    w.gref = s.gref;
    w.first_sect = static_cast<std::uint8_t>(first_sect);
    w.last_sect = static_cast<std::uint8_t>(first_sect + len / kSector - 1);
    if (nsegs <= blkif::kMaxSegmentsPerRequest) wire[nsegs - 1] = w;
    if (may_indirect) {
      auto* page = static_cast<blkif::blkif_request_segment*>(
          ind[(nsegs - 1) / blkif::kSegmentsPerIndirectPage].page.addr);
      page[(nsegs - 1) % blkif::kSegmentsPerIndirectPage] = w;
    }
    pos += len;
  }

  const bool indirect = !grant_failed && nsegs > blkif::kMaxSegmentsPerRequest;
  std::uint32_t nind = 0;
  if (indirect) {
    nind = (nsegs + blkif::kSegmentsPerIndirectPage - 1) / blkif::kSegmentsPerIndirectPage;
    if (!neg_.persistent) {
      // Indirect pages only describe segments: the backend reads them, never writes.
      for (std::uint32_t i = 0; i < nind; ++i) {
        ind[i].gref = pf_.grant_access(backend_id_, ind[i].page.gfn, true);
        if (ind[i].gref == kInvalidGrantRef) grant_failed = true;
      }
    }
  }

  // Claim the tag now so release_shadow() can unwind a partial build.
  q.shadow_free = sh.next_free;
  ++q.shadow_used;
  sh.io = io;
  sh.nr_segs = static_cast<std::uint16_t>(nsegs);
  sh.nr_indirect = static_cast<std::uint8_t>(nind);
  sh.bounced = bounce;
  sh.operation = indirect ? blkif::kOpIndirect : (write ? blkif::kOpWrite : blkif::kOpRead);

  if (grant_failed) {
    release_shadow(q, id, false);
    if (q.shadow_used == 0) return fail(IoStatus::NoResources);  // nothing will free grants
    return Build::Blocked;
  }

  blkif::blkif_request* slot = q.ring.next_request();
  const std::uint64_t sector = io->sector + io->priv.built;
  if (indirect) {
    blkif::blkif_request_indirect req{};
    req.operation = blkif::kOpIndirect;
    req.indirect_op = write ? blkif::kOpWrite : blkif::kOpRead;
    req.nr_segments = static_cast<std::uint16_t>(nsegs);
    req.id = id;
    req.sector_number = sector;
    req.handle = static_cast<blkif::blkif_vdev_t>(devid_);
    for (std::uint32_t i = 0; i < blkif::kMaxIndirectPagesPerRequest; ++i)
      req.indirect_grefs[i] = i < nind ? ind[i].gref : 0;
    std::memset(slot, 0, sizeof(*slot));
    std::memcpy(slot, &req, sizeof(req));
    ++stats_.indirect_requests;
  } else {
    blkif::blkif_request req{};
    req.operation = write ? blkif::kOpWrite : blkif::kOpRead;
    req.nr_segments = static_cast<std::uint8_t>(nsegs);
    req.handle = static_cast<blkif::blkif_vdev_t>(devid_);
    req.id = id;
    req.sector_number = sector;
    for (std::uint32_t i = 0; i < nsegs; ++i) req.seg[i] = wire[i];
    std::memcpy(slot, &req, sizeof(req));
  }
  ++stats_.requests;
  ++io->priv.outstanding;
  io->priv.built = pos / kSector;
  if (pos == total) {
    io->priv.all_built = true;
    pop();
    return Build::Done;
  }
  return Build::Again;
}

void Blkfront::kick(Queue& q) {
  bool produced = false;
  while (q.pending_head != nullptr && connected() && !broken_) {
    BlockIo* io = q.pending_head;
    const std::uint64_t before = stats_.requests;
    const Build b = build_request(q, io);
    if (stats_.requests != before) produced = true;
    if (b == Build::Blocked) break;
  }
  if (produced) flush_ring(q);
}

void Blkfront::flush_ring(Queue& q) {
  // RING_PUSH_REQUESTS_AND_CHECK_NOTIFY: one send per batch, and none if the backend is
  // still processing (req_event not in the window just published).
  if (q.ring.push_requests() && q.port_valid) {
    pf_.notify(q.port);
    ++stats_.notifications;
  }
}

// ---- completions ----

void Blkfront::release_shadow(Queue& q, std::uint32_t id, bool success) {
  Shadow& sh = q.shadow[id];
  BlockIo* io = sh.io;
  // Only a successful completion looks at the I/O (to copy read data back): on teardown the
  // caller may already have given up on it.
  const bool read = success && (sh.operation == blkif::kOpRead ||
                                (sh.operation == blkif::kOpIndirect && io->op == Op::Read));
  Seg* segs = &q.segs[std::size_t{id} * max_segs_];
  for (std::uint32_t i = 0; i < sh.nr_segs; ++i) {
    Seg& s = segs[i];
    bool page_lost = false;
    if (s.gref != kInvalidGrantRef && !(sh.bounced && neg_.persistent)) {
      if (!pf_.end_access(s.gref)) {
        // The backend still maps the frame after answering: keep it out of reuse.
        ++stats_.grants_leaked;
        page_lost = true;
      }
    }
    if (s.pool >= 0) {
      PoolPage& pp = q.pool[s.pool];
      if (success && read && !page_lost)
        io_copy(io, s.io_byte, static_cast<std::uint8_t*>(pp.page.addr), s.len, true);
      if (page_lost) pp.lost = true; else q.pool_free[q.pool_free_count++] = static_cast<std::uint32_t>(s.pool);
    }
    s = Seg{};
  }
  if (!neg_.persistent && q.indirect != nullptr) {
    PoolPage* ind = &q.indirect[std::size_t{id} * indirect_per_req_];
    for (std::uint32_t i = 0; i < indirect_per_req_; ++i) {
      if (ind[i].gref == kInvalidGrantRef) continue;
      if (!pf_.end_access(ind[i].gref)) {
        ++stats_.grants_leaked;
        ind[i].lost = true;  // teardown will not free it
      }
      ind[i].gref = kInvalidGrantRef;
    }
  }
  sh.io = nullptr;
  sh.nr_segs = 0;
  sh.nr_indirect = 0;
  // FIFO-ish reuse would be nicer for catching stale ids; LIFO keeps the table hot.
  sh.next_free = q.shadow_free;
  q.shadow_free = id;
  --q.shadow_used;
}

bool Blkfront::complete_request(Queue& q, const blkif::blkif_response& rsp) {
  // The id is the backend's word: it must name a request we have outstanding, with the same
  // operation (Linux blkif_interrupt / blkif_get_action checks).
  if (rsp.id >= neg_.ring_size || q.shadow[rsp.id].io == nullptr) {
    logf(LogLevel::Error, "response with unknown id", nullptr, rsp.id);
    return false;
  }
  const std::uint32_t id = static_cast<std::uint32_t>(rsp.id);
  Shadow& sh = q.shadow[id];
  if (rsp.operation != sh.operation) {
    logf(LogLevel::Error, "response operation does not match request, id", nullptr, id);
    return false;
  }
  BlockIo* io = sh.io;
  IoStatus st = IoStatus::Ok;
  if (rsp.status == blkif::kRspEopnotsupp) {
    st = IoStatus::NotSupported;
    // As Linux: the backend told us it cannot, so stop offering the operation.
    if (sh.operation == blkif::kOpFlushDiskcache) neg_.flush_cache = false;
    if (sh.operation == blkif::kOpWriteBarrier) neg_.barrier = false;
    if (sh.operation == blkif::kOpDiscard) neg_.discard = false;
  } else if (rsp.status != blkif::kRspOkay) {
    st = IoStatus::IoError;
  }
  release_shadow(q, id, st == IoStatus::Ok);
  if (st != IoStatus::Ok && io->priv.error == IoStatus::Ok) io->priv.error = st;
  --io->priv.outstanding;
  if (io->priv.outstanding == 0 && io->priv.all_built) finish_io(io, io->priv.error);
  return true;
}

void Blkfront::ring_broken(Queue&, const char* why) {
  ++stats_.protocol_errors;
  logf(LogLevel::Error, why);
  broken_ = true;
  request_disconnect();  // control plane: Closing; the I/Os wait for the next connection
}

void Blkfront::handle_event(std::uint32_t qi) {
  if (!rings_up_ || broken_ || qi >= nr_queues_ || !connected()) return;
  Queue& q = queues_[qi];
  ++depth_;
  for (;;) {
    ring::RingCheck c = q.ring.unconsumed_responses();
    if (!c.ok()) {
      ring_broken(q, "bad response producer index");
      break;
    }
    for (std::uint32_t i = 0; i < c.count; ++i) {
      blkif::blkif_response rsp;
      q.ring.consume_response(rsp);  // one copy; only the copy is looked at
      ++stats_.responses;
      if (!complete_request(q, rsp)) {
        ring_broken(q, "bad response");
        break;
      }
    }
    if (broken_) break;
    // RING_FINAL_CHECK_FOR_RESPONSES: re-arm rsp_event, then look once more.
    c = q.ring.final_check_for_responses();
    if (!c.ok()) {
      ring_broken(q, "bad response producer index");
      break;
    }
    if (c.count == 0) break;
  }
  --depth_;
  if (depth_ == 0 && !broken_) kick_all();
}

void Blkfront::handle_all_events() {
  for (std::uint32_t qi = 0; qi < nr_queues_; ++qi) handle_event(qi);
}

}  // namespace pvio::blkfront
