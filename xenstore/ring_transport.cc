// Guest ring transport for the xenstore daemon; see ring_transport.h.
#include "pvio/xenstore/ring_transport.h"

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
  req_cons_ = load_acquire(&page_->req_cons);
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
    XENSTORE_RING_IDX avail = prod - req_cons_;
    if (avail > XENSTORE_RING_SIZE) return drop(XENSTORE_ERROR_RINGIDX);
    if (avail == 0) return;
    uint32_t off = MASK_XENSTORE_IDX(req_cons_);
    uint32_t n = std::min(avail, XENSTORE_RING_SIZE - off);
    // Copy once; only the private copy is parsed (the guest may rewrite req[] meanwhile).
    std::memcpy(buf, page_->req + off, n);
    req_cons_ += n;
    store_release(&page_->req_cons, req_cons_);
    notify_pending_ = true;  // the guest may be waiting for room to write the rest
    std::span<const char> in(buf, n);
    while (!in.empty()) {
      MessageReader::Status st = reader_.feed(in);
      if (st == MessageReader::Status::Corrupt) return drop(XENSTORE_ERROR_PROTO);
      if (st == MessageReader::Status::NeedMore) break;
      server_->handle(conn_, reader_.header(), reader_.payload());
      reader_.reset();
      if (dropped_ || server_ == nullptr) return;
    }
  }
}

void RingTransport::send(std::string_view message) {
  if (dropped_) return;
  out_.append(message);
  flush();
}

bool RingTransport::flush() {
  bool wrote = false;
  while (!dropped_ && pending_output() > 0) {
    XENSTORE_RING_IDX cons = load_acquire(&page_->rsp_cons);
    XENSTORE_RING_IDX used = rsp_prod_ - cons;
    if (used > XENSTORE_RING_SIZE) {
      drop(XENSTORE_ERROR_RINGIDX);
      return wrote;
    }
    uint32_t space = XENSTORE_RING_SIZE - used;
    if (space == 0) break;
    uint32_t off = MASK_XENSTORE_IDX(rsp_prod_);
    std::size_t n = std::min<std::size_t>({space, XENSTORE_RING_SIZE - off, pending_output()});
    std::memcpy(page_->rsp + off, out_.data() + out_head_, n);
    out_head_ += n;
    rsp_prod_ += static_cast<XENSTORE_RING_IDX>(n);
    store_release(&page_->rsp_prod, rsp_prod_);
    wrote = true;
  }
  if (out_head_ == out_.size()) {
    out_.clear();
    out_head_ = 0;
  } else if (out_head_ > 64 * 1024) {
    out_.erase(0, out_head_);
    out_head_ = 0;
  }
  if (wrote) {
    if (in_kick_)
      notify_pending_ = true;
    else
      notify_();
  }
  return wrote;
}

}  // namespace pvio::xs
