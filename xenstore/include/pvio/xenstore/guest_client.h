// Guest-side xenstore client over the shared ring page, for frontends. Freestanding: no heap,
// no exceptions, no C++ library; the caller supplies buffers and a tiny platform seam
// (notify the daemon, wait for its notification).
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pvio/xen/io/xs_wire.h"

namespace pvio::xs {

struct GuestPlatform {
  void* ctx;
  void (*notify)(void* ctx);  // raise the xenstore event channel to the daemon
  void (*wait)(void* ctx);    // block until the daemon raised ours (spurious returns are fine)
  // Optional: true once the caller gives up on the daemon (its process is shutting down); a
  // request waiting for room or for its reply then fails with Io and the client stays failed.
  bool (*abandoned)(void* ctx) = nullptr;
};

// kEventSlots: watch events that can wait while a request is in flight; further events are
// counted in lost_events() and dropped (the guest then rescans, as after a reconnect).
template <unsigned kEventSlots = 4>
class GuestClient {
 public:
  GuestClient(xenstore_domain_interface* page, GuestPlatform platform)
      : page_(page), pf_(platform) {
    req_prod_ = __atomic_load_n(&page_->req_prod, __ATOMIC_ACQUIRE);
    rsp_cons_ = __atomic_load_n(&page_->rsp_cons, __ATOMIC_ACQUIRE);
  }

  // READ: value into buf (not NUL-terminated), its length in *len.
  XsError read(const char* path, char* buf, size_t cap, size_t* len, uint32_t tx = 0) {
    Part p[] = {{path, str_size(path)}};
    return request(MsgType::XS_READ, p, 1, tx, buf, cap, len);
  }
  XsError write(const char* path, const char* value, size_t value_len, uint32_t tx = 0) {
    Part p[] = {{path, str_size(path)}, {value, value_len}};
    return request(MsgType::XS_WRITE, p, 2, tx, nullptr, 0, nullptr);
  }
  XsError mkdir(const char* path, uint32_t tx = 0) { return one_arg(MsgType::XS_MKDIR, path, tx); }
  XsError rm(const char* path, uint32_t tx = 0) { return one_arg(MsgType::XS_RM, path, tx); }
  // DIRECTORY / GET_PERMS: NUL-separated strings into buf.
  XsError directory(const char* path, char* buf, size_t cap, size_t* len, uint32_t tx = 0) {
    Part p[] = {{path, str_size(path)}};
    return request(MsgType::XS_DIRECTORY, p, 1, tx, buf, cap, len);
  }
  XsError get_perms(const char* path, char* buf, size_t cap, size_t* len, uint32_t tx = 0) {
    Part p[] = {{path, str_size(path)}};
    return request(MsgType::XS_GET_PERMS, p, 1, tx, buf, cap, len);
  }
  // perms: "b5\0r0\0" style, each entry NUL-terminated, `len` bytes in all.
  XsError set_perms(const char* path, const char* perms, size_t len, uint32_t tx = 0) {
    Part p[] = {{path, str_size(path)}, {perms, len}};
    return request(MsgType::XS_SET_PERMS, p, 2, tx, nullptr, 0, nullptr);
  }
  XsError watch(const char* path, const char* token) {
    Part p[] = {{path, str_size(path)}, {token, str_size(token)}};
    return request(MsgType::XS_WATCH, p, 2, 0, nullptr, 0, nullptr);
  }
  XsError unwatch(const char* path, const char* token) {
    Part p[] = {{path, str_size(path)}, {token, str_size(token)}};
    return request(MsgType::XS_UNWATCH, p, 2, 0, nullptr, 0, nullptr);
  }
  XsError transaction_start(uint32_t* tx) {
    char buf[16];
    size_t len = 0;
    Part p[] = {{"", 1}};
    XsError e = request(MsgType::XS_TRANSACTION_START, p, 1, 0, buf, sizeof(buf), &len);
    if (e != XsError::None) return e;
    uint32_t v = 0;
    for (size_t i = 0; i < len && buf[i] >= '0' && buf[i] <= '9'; ++i)
      v = v * 10 + static_cast<uint32_t>(buf[i] - '0');
    *tx = v;
    return XsError::None;
  }
  XsError transaction_end(uint32_t tx, bool commit) {
    Part p[] = {{commit ? "T" : "F", 2}};
    return request(MsgType::XS_TRANSACTION_END, p, 1, tx, nullptr, 0, nullptr);
  }

  // The next watch event: path and token as NUL-terminated strings. Blocks if `block`;
  // false if none (non-blocking), the buffers are too small, or the connection failed.
  bool read_watch(char* path, size_t path_cap, char* token, size_t token_cap, bool block = true) {
    while (queued_ == 0) {
      if (failed_) return false;
      if (!block && !message_ready()) return false;
      if (!receive_one(0)) return false;
    }
    Slot& s = slots_[head_];
    head_ = (head_ + 1) % kEventSlots;
    --queued_;
    size_t plen = 0;
    while (plen < s.len && s.data[plen] != '\0') ++plen;
    if (plen >= s.len) return false;
    const char* tok = s.data + plen + 1;
    size_t tlen = 0;
    while (plen + 1 + tlen < s.len && tok[tlen] != '\0') ++tlen;
    if (plen + 1 > path_cap || tlen + 1 > token_cap) return false;
    __builtin_memcpy(path, s.data, plen + 1);
    __builtin_memcpy(token, tok, tlen);
    token[tlen] = '\0';
    return true;
  }

  unsigned lost_events() const { return lost_; }
  // XENSTORE_ERROR_* the daemon left in the page, or a local protocol failure.
  bool failed() const { return failed_; }

  // Any request: parts are concatenated as the payload; reply payload into rsp (if given).
  struct Part {
    const char* data;
    size_t len;
  };
  XsError request(MsgType type, const Part* parts, unsigned nparts, uint32_t tx, char* rsp,
                  size_t rsp_cap, size_t* rsp_len) {
    if (failed_) return XsError::Io;
    size_t total = 0;
    for (unsigned i = 0; i < nparts; ++i) total += parts[i].len;
    if (total > XENSTORE_PAYLOAD_MAX) return XsError::TooBig;
    uint32_t id = ++req_id_;
    xsd_sockmsg h{static_cast<uint32_t>(type), id, tx, static_cast<uint32_t>(total)};
    if (!put(reinterpret_cast<const char*>(&h), sizeof(h))) return XsError::Io;
    for (unsigned i = 0; i < nparts; ++i)
      if (!put(parts[i].data, parts[i].len)) return XsError::Io;
    pf_.notify(pf_.ctx);
    while (true) {
      if (!receive_one(id)) return XsError::Io;
      if (reply_ready_) break;
    }
    reply_ready_ = false;
    if (reply_hdr_.type == static_cast<uint32_t>(MsgType::XS_ERROR))
      return xs_error_from_name(scratch_, reply_hdr_.len);
    if (rsp != nullptr) {
      if (reply_hdr_.len > rsp_cap) return XsError::TooBig;
      __builtin_memcpy(rsp, scratch_, reply_hdr_.len);
    }
    if (rsp_len != nullptr) *rsp_len = reply_hdr_.len;
    return XsError::None;
  }

 private:
  struct Slot {
    char data[XENSTORE_PAYLOAD_MAX];
    uint32_t len;
  };

  static size_t str_size(const char* s) { return __builtin_strlen(s) + 1; }

  XsError one_arg(MsgType t, const char* path, uint32_t tx) {
    Part p[] = {{path, str_size(path)}};
    return request(t, p, 1, tx, nullptr, 0, nullptr);
  }

  bool check_error() {
    if (__atomic_load_n(&page_->error, __ATOMIC_ACQUIRE) != XENSTORE_ERROR_NONE) failed_ = true;
    return failed_;
  }

  // Copies bytes into req[], waiting for room.
  bool put(const char* data, size_t n) {
    while (n > 0) {
      if (check_error()) return false;
      XENSTORE_RING_IDX cons = __atomic_load_n(&page_->req_cons, __ATOMIC_ACQUIRE);
      XENSTORE_RING_IDX used = req_prod_ - cons;
      if (used > XENSTORE_RING_SIZE) return fail();
      if (used == XENSTORE_RING_SIZE) {
        if (gave_up()) return fail();
        pf_.notify(pf_.ctx);
        pf_.wait(pf_.ctx);
        continue;
      }
      size_t off = MASK_XENSTORE_IDX(req_prod_);
      size_t k = XENSTORE_RING_SIZE - used;
      if (k > XENSTORE_RING_SIZE - off) k = XENSTORE_RING_SIZE - off;
      if (k > n) k = n;
      __builtin_memcpy(page_->req + off, data, k);
      req_prod_ += static_cast<XENSTORE_RING_IDX>(k);
      __atomic_store_n(&page_->req_prod, req_prod_, __ATOMIC_RELEASE);
      data += k;
      n -= k;
    }
    return true;
  }

  bool message_ready() {
    XENSTORE_RING_IDX prod = __atomic_load_n(&page_->rsp_prod, __ATOMIC_ACQUIRE);
    return prod != rsp_cons_;
  }

  // Copies n bytes out of rsp[], waiting for the daemon to produce them.
  bool get(char* dst, size_t n) {
    while (n > 0) {
      XENSTORE_RING_IDX prod = __atomic_load_n(&page_->rsp_prod, __ATOMIC_ACQUIRE);
      XENSTORE_RING_IDX avail = prod - rsp_cons_;
      if (avail > XENSTORE_RING_SIZE) return fail();
      if (avail == 0) {
        if (check_error()) return false;
        if (gave_up()) return fail();
        pf_.wait(pf_.ctx);
        continue;
      }
      size_t off = MASK_XENSTORE_IDX(rsp_cons_);
      size_t k = avail;
      if (k > XENSTORE_RING_SIZE - off) k = XENSTORE_RING_SIZE - off;
      if (k > n) k = n;
      __builtin_memcpy(dst, page_->rsp + off, k);
      rsp_cons_ += static_cast<XENSTORE_RING_IDX>(k);
      __atomic_store_n(&page_->rsp_cons, rsp_cons_, __ATOMIC_RELEASE);
      pf_.notify(pf_.ctx);  // the daemon may hold more output for us
      dst += k;
      n -= k;
    }
    return true;
  }

  // Reads one message: a watch event is queued; the reply to `want_id` is left in scratch_.
  bool receive_one(uint32_t want_id) {
    xsd_sockmsg h;
    if (!get(reinterpret_cast<char*>(&h), sizeof(h))) return false;
    if (h.len > XENSTORE_PAYLOAD_MAX) return fail();
    if (h.type == static_cast<uint32_t>(MsgType::XS_WATCH_EVENT)) {
      if (queued_ == kEventSlots) {
        ++lost_;
        return get(scratch_, h.len);
      }
      Slot& s = slots_[(head_ + queued_) % kEventSlots];
      if (!get(s.data, h.len)) return false;
      s.len = h.len;
      ++queued_;
      return true;
    }
    if (!get(scratch_, h.len)) return false;
    if (want_id != 0 && h.req_id == want_id) {
      reply_hdr_ = h;
      reply_ready_ = true;
    }
    return true;
  }

  bool gave_up() { return pf_.abandoned != nullptr && pf_.abandoned(pf_.ctx); }

  bool fail() {
    failed_ = true;
    return false;
  }

  xenstore_domain_interface* page_;
  GuestPlatform pf_;
  XENSTORE_RING_IDX req_prod_ = 0;
  XENSTORE_RING_IDX rsp_cons_ = 0;
  uint32_t req_id_ = 0;
  xsd_sockmsg reply_hdr_{};
  bool reply_ready_ = false;
  bool failed_ = false;
  char scratch_[XENSTORE_PAYLOAD_MAX];
  Slot slots_[kEventSlots];
  unsigned head_ = 0;
  unsigned queued_ = 0;
  unsigned lost_ = 0;
};

}  // namespace pvio::xs
