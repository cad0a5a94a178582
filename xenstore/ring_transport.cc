// Guest ring transport for the xenstore daemon; see ring_transport.h.
#include "pvio/xenstore/ring_transport.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

namespace pvio::xs {
namespace {

XENSTORE_RING_IDX load_acquire(const XENSTORE_RING_IDX* p) {
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}
void store_release(XENSTORE_RING_IDX* p, XENSTORE_RING_IDX v) {
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

}  // namespace

RingTransport::RingTransport(xenstore_domain_interface* page, std::function<void()> notify)
    : page_(page), notify_(std::move(notify)) {
  // A restarted daemon continues from the indices on the page: the guest's requests after
  // req_cons and its unread output before rsp_prod are all still there.
  req_cons_ = load_acquire(&page_->req_cons);
  published_cons_ = req_cons_;
  rsp_prod_ = load_acquire(&page_->rsp_prod);
  page_->server_features = XENSTORE_SERVER_FEATURE_ERROR;
  page_->connection = XENSTORE_CONNECTED;
  page_->error = XENSTORE_ERROR_NONE;
}

RingTransport::~RingTransport() { unbind(); }

void RingTransport::bind(Server& server, domid_t domid) {
  unbind();
  server_ = &server;
  conn_ = server.attach(domid, this);
}

void RingTransport::unbind() {
  if (server_ != nullptr) server_->detach(conn_);
  server_ = nullptr;
}

void RingTransport::drop(uint32_t error) {
  if (dropped_) return;
  dropped_ = true;
  page_->error = error;
  if (server_ != nullptr) server_->detach(conn_, true);
  server_ = nullptr;
  out_.clear();
  out_head_ = 0;
  unpublished_.clear();
  msg_ends_.clear();
  notify_();  // let the guest see the error field
}

void RingTransport::on_kick() {
  if (dropped_ || in_kick_) return;
  // Batch notifications: one event for everything consumed and produced in this pass.
  in_kick_ = true;
  flush();
  pump_requests();
  flush();
  in_kick_ = false;
  if (notify_pending_ && !dropped_) notify_();
  notify_pending_ = false;
}

void RingTransport::pump_requests() {
  char buf[XENSTORE_RING_SIZE];
  while (!dropped_ && server_ != nullptr && pending_output() < kBackpressure) {
    XENSTORE_RING_IDX prod = load_acquire(&page_->req_prod);
    if (prod - published_cons_ > XENSTORE_RING_SIZE) return drop(XENSTORE_ERROR_RINGIDX);
    XENSTORE_RING_IDX avail = prod - req_cons_;
    if (avail == 0) break;
    uint32_t off = MASK_XENSTORE_IDX(req_cons_);
    uint32_t n = std::min(avail, XENSTORE_RING_SIZE - off);
    // Copy once; only the private copy is parsed (the guest may rewrite req[] meanwhile).
    // Bytes after a complete message are left on the ring and copied again next round.
    std::memcpy(buf, page_->req + off, n);
    std::span<const char> in(buf, n);
    MessageReader::Status st = reader_.feed(in);
    req_cons_ += n - static_cast<uint32_t>(in.size());
    if (st == MessageReader::Status::Corrupt) return drop(XENSTORE_ERROR_PROTO);
    if (st == MessageReader::Status::NeedMore) continue;
    server_->handle(conn_, reader_.header(), reader_.payload());
    reader_.reset();
    if (dropped_ || server_ == nullptr) return;
    // The reply is queued by now: the request counts as consumed once it is on the ring.
    unpublished_.push_back({req_cons_, out_total_});
    if (out_written_ >= out_total_) publish(req_cons_);
  }
  if (dropped_ || server_ == nullptr || !reader_.partial() || req_cons_ == published_cons_)
    return;
  // Part of a message is read and the rest is not on the ring yet. The guest may be waiting
  // for room to write the rest, so req_cons moves past these bytes; they are journaled first
  // so that a restarted daemon can finish the message. Earlier replies still queued are
  // normally none: a guest reads its reply before it writes the next request.
  std::string bytes = reader_.buffered();
  server_->ring_partial(conn_, req_cons_, bytes);
  partial_ = PartialRequest{req_cons_, std::move(bytes)};
  unpublished_.clear();
  publish(req_cons_);
}

void RingTransport::publish(XENSTORE_RING_IDX cons) {
  if (cons == published_cons_) return;
  if (partial_ && partial_->end_index != cons && !reader_.partial()) {
    // The journaled unfinished request is complete and handled.
    partial_.reset();
    if (server_ != nullptr) server_->ring_boundary(conn_);
  }
  published_cons_ = cons;
  store_release(&page_->req_cons, cons);
  if (in_kick_)
    notify_pending_ = true;  // the guest may be waiting for room to write
  else
    notify_();
}

void RingTransport::restore_output(uint32_t rsp_index, std::string_view bytes) {
  if (rsp_index != rsp_prod_ || pending_output() != 0) {
    spdlog::warn("xenstore ring: the journaled rest of a reply goes at {} but rsp_prod is {}; "
                 "discarding it", rsp_index, rsp_prod_);
    return;
  }
  out_.assign(bytes);
  out_head_ = 0;
  out_total_ += bytes.size();
  msg_ends_.push_back(out_total_);
  output_partial_ = PendingOutput{rsp_index, std::string(bytes)};
}

void RingTransport::restore_partial(uint32_t end_index, std::string_view bytes) {
  if (end_index != req_cons_ || reader_.partial()) {
    spdlog::warn("xenstore ring: the journaled partial request ends at {} but req_cons is {}; "
                 "discarding it", end_index, req_cons_);
    return;
  }
  std::span<const char> in(bytes.data(), bytes.size());
  MessageReader::Status st = reader_.feed(in);
  if (st != MessageReader::Status::NeedMore || !in.empty()) {
    // Whole or malformed: not what was journaled as unfinished.
    spdlog::warn("xenstore ring: the journaled partial request is not a message prefix; "
                 "discarding it");
    reader_.reset();
    return;
  }
  partial_ = PartialRequest{end_index, std::string(bytes)};
}

void RingTransport::send(std::string_view message) {
  if (dropped_) return;
  out_.append(message);
  out_total_ += message.size();
  msg_ends_.push_back(out_total_);
  flush();
}

bool RingTransport::flush() {
  bool wrote = false;
  if (!dropped_ && pending_output() > 0) {
    XENSTORE_RING_IDX cons = load_acquire(&page_->rsp_cons);
    XENSTORE_RING_IDX used = rsp_prod_ - cons;
    if (used > XENSTORE_RING_SIZE) {
      drop(XENSTORE_ERROR_RINGIDX);
      return wrote;
    }
    const std::size_t n = std::min<std::size_t>(XENSTORE_RING_SIZE - used, pending_output());
    if (n > 0) {
      // Ending inside a message? Journal its rest before the guest can see its beginning.
      const uint64_t end = out_written_ + n;
      auto e = std::find_if(msg_ends_.begin(), msg_ends_.end(),
                            [&](uint64_t m) { return m >= end; });
      if (e != msg_ends_.end() && *e != end) {
        PendingOutput rest{rsp_prod_ + static_cast<XENSTORE_RING_IDX>(n),
                           out_.substr(out_head_ + n, static_cast<std::size_t>(*e - end))};
        if (server_ != nullptr) server_->ring_output(conn_, rest);
        output_partial_ = std::move(rest);
      }
      for (std::size_t done = 0; done < n;) {
        const uint32_t off = MASK_XENSTORE_IDX(rsp_prod_ + static_cast<XENSTORE_RING_IDX>(done));
        const std::size_t k = std::min<std::size_t>(n - done, XENSTORE_RING_SIZE - off);
        std::memcpy(page_->rsp + off, out_.data() + out_head_ + done, k);
        done += k;
      }
      out_head_ += n;
      out_written_ += n;
      rsp_prod_ += static_cast<XENSTORE_RING_IDX>(n);
      store_release(&page_->rsp_prod, rsp_prod_);
      wrote = true;
    }
  }
  while (!msg_ends_.empty() && msg_ends_.front() <= out_written_) msg_ends_.pop_front();
  // What is on the ring or journaled counts as delivered for publishing req_cons.
  uint64_t delivered = out_written_;
  if (output_partial_) {
    if (output_partial_->rsp_index == rsp_prod_ && !msg_ends_.empty() &&
        out_written_ < msg_ends_.front()) {
      delivered = msg_ends_.front();  // the message in progress is journaled to its end
    } else {
      // The journaled rest is on the ring now.
      output_partial_.reset();
      if (server_ != nullptr) server_->ring_output(conn_, std::nullopt);
    }
  }
  if (out_head_ == out_.size()) {
    out_.clear();
    out_head_ = 0;
  } else if (out_head_ > 64 * 1024) {
    out_.erase(0, out_head_);
    out_head_ = 0;
  }
  XENSTORE_RING_IDX to_publish = published_cons_;
  while (!unpublished_.empty() && unpublished_.front().out_pos <= delivered) {
    to_publish = unpublished_.front().cons;
    unpublished_.pop_front();
  }
  if (to_publish != published_cons_) publish(to_publish);
  if (wrote) {
    if (in_kick_)
      notify_pending_ = true;
    else
      notify_();
  }
  return wrote;
}

}  // namespace pvio::xs
