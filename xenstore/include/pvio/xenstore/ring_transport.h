// Server side of a guest's xenstore ring (struct xenstore_domain_interface, already mapped):
// reads requests out of req[] copying each byte once, validates the guest's indices, and
// writes replies and watch events into rsp[], notifying the guest.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "pvio/xen/xen.h"
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

  void send(std::string_view message) override;
  std::size_t pending_output() const override { return out_.size() - out_head_; }

 private:
  void pump_requests();
  bool flush();  // true if anything was written
  void drop(uint32_t error);

  xenstore_domain_interface* page_;
  std::function<void()> notify_;
  Server* server_ = nullptr;
  ConnId conn_ = 0;
  MessageReader reader_;
  std::string out_;
  std::size_t out_head_ = 0;
  // Our own copies of the indices we produce: the guest can scribble on the page, but what
  // we trust is only what we wrote.
  XENSTORE_RING_IDX req_cons_ = 0;
  XENSTORE_RING_IDX rsp_prod_ = 0;
  bool dropped_ = false;
  bool in_kick_ = false;
  bool notify_pending_ = false;
};

}  // namespace pvio::xs
