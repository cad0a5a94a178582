// Server side of a guest's xenstore ring (struct xenstore_domain_interface, already mapped):
// reads requests out of req[] copying each byte once, validates the guest's indices, and
// writes replies and watch events into rsp[], notifying the guest.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "pvio/xen/xen.h"
#include "pvio/xenstore/journal.h"
#include "pvio/xenstore/protocol.h"
#include "pvio/xenstore/server.h"
#include "pvio/xen/io/xs_wire.h"

namespace pvio::xs {

class RingTransport : public Connection {
 public:
  // Requests are not read while more than this much output waits for the guest.
  static constexpr std::size_t kBackpressure = 64 * 1024;

  // `page` stays mapped for the transport's lifetime; `notify_guest` raises the guest's
  // event channel.
  RingTransport(xenstore_domain_interface* page, std::function<void()> notify_guest);
  ~RingTransport() override;
  RingTransport(const RingTransport&) = delete;
  RingTransport& operator=(const RingTransport&) = delete;

  // Connects the ring to `server` as domain `domid` (INTRODUCE does this).
  void bind(Server& server, domid_t domid);
  void unbind();

  // The guest raised its event channel: take in requests, push out pending output.
  void on_kick();

  // A corrupt ring (index beyond the ring, oversized message) drops this connection only;
  // the reason is left in the page's `error` field (XENSTORE_ERROR_*).
  bool dropped() const { return dropped_; }

  ConnId conn_id() const { return conn_; }
  // The unfinished request whose bytes were taken off the ring and journaled, if any.
  const std::optional<PartialRequest>& partial() const { return partial_; }
  // After a restart: `bytes` were journaled as taken off the ring up to `end_index`. If the
  // ring's req_cons is still there they start the next message; otherwise (the record is
  // stale) they are discarded. Call after bind(), before the first on_kick().
  void restore_partial(uint32_t end_index, std::string_view bytes);
  // The rest of a message only partly written to rsp[] (journaled), if any.
  const std::optional<PendingOutput>& pending_output_state() const { return output_partial_; }
  // After a restart: if rsp_prod is still `rsp_index`, `bytes` go out first, completing the
  // message the guest has the beginning of. Call after bind(), before any send().
  void restore_output(uint32_t rsp_index, std::string_view bytes);

  void send(std::string_view message) override;
  std::size_t pending_output() const override { return out_.size() - out_head_; }

 private:
  void pump_requests();
  bool flush();  // true if anything was written
  void drop(uint32_t error);
  // Moves the guest-visible req_cons to `cons` (a message boundary, or the end of a
  // journaled partial message).
  void publish(XENSTORE_RING_IDX cons);

  xenstore_domain_interface* page_;
  std::function<void()> notify_;
  Server* server_ = nullptr;
  ConnId conn_ = 0;
  MessageReader reader_;
  std::string out_;
  std::size_t out_head_ = 0;
  // Our own copies of the indices we produce: the guest can scribble on the page, but what
  // we trust is only what we wrote. req_cons_ is how far we have read; the page's req_cons
  // (published_cons_) only moves past a request once its reply is on the ring, so a daemon
  // that dies in between reads that request again after its restart instead of losing it.
  XENSTORE_RING_IDX req_cons_ = 0;
  XENSTORE_RING_IDX published_cons_ = 0;
  XENSTORE_RING_IDX rsp_prod_ = 0;
  // Handled requests whose replies are still queued: publish `cons` once `out_pos` bytes of
  // output have reached the ring.
  struct Unpublished {
    XENSTORE_RING_IDX cons;
    uint64_t out_pos;
  };
  std::deque<Unpublished> unpublished_;
  uint64_t out_total_ = 0;    // bytes ever queued for the guest
  uint64_t out_written_ = 0;  // bytes ever written into rsp[]
  std::optional<PartialRequest> partial_;
  // Absolute output positions where queued messages end (the first one not yet fully on
  // the ring first), and the journaled rest of a message written only in part.
  std::deque<uint64_t> msg_ends_;
  std::optional<PendingOutput> output_partial_;
  bool dropped_ = false;
  bool in_kick_ = false;
  bool notify_pending_ = false;
};

}  // namespace pvio::xs
