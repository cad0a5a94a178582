// netfront control plane: the XenBus handshake with the backend as Linux xen-netfront runs it
// (talk_to_netback, xennet_connect, netback_changed), feature negotiation, ring pages, event
// channels and rx/tx pages per queue, and reconnection after the backend goes away. Never
// looks at ring contents: that is tx.cc and rx.cc.
#include <new>

#include "impl.h"

namespace pvio::netfront {

namespace {
constexpr std::uint64_t kDomidFirstReserved = 0x7FF0;
}  // namespace

std::size_t Netfront::storage_bytes(const Limits& l) {
  std::uint32_t nq = l.max_queues == 0 ? 1 : l.max_queues;
  if (nq > kMaxQueues) nq = kMaxQueues;
  return detail::align16(sizeof(Queue)) * nq;
}

Netfront::Netfront(Platform& platform, std::uint32_t devid, const Limits& limits, void* storage,
                   std::size_t storage_len)
    : pf_(platform),
      devid_(devid),
      limits_(limits),
      storage_(static_cast<std::uint8_t*>(storage)),
      storage_len_(storage_len) {
  if (limits_.max_queues == 0) limits_.max_queues = 1;
  if (limits_.max_queues > kMaxQueues) limits_.max_queues = kMaxQueues;
  if (reinterpret_cast<std::uintptr_t>(storage_) & 15) storage_len_ = 0;  // refuse misaligned
  detail::PathBuf p("device/vif/");
  p.add_uint(devid_);
  std::memcpy(front_path_, p.c_str(), std::strlen(p.c_str()) + 1);
}

Netfront::~Netfront() {
  if (started_ && backend_path_[0] != '\0') {
    detail::PathBuf w(backend_path_);
    w.add("/state");
    pf_.xs_unwatch(w.c_str());
  }
  teardown_datapath();
}

void Netfront::logf(LogLevel l, const char* a, const char* b, std::uint64_t n) {
  char msg[256];
  std::size_t len = 0;
  auto put = [&](const char* s) {
    while (*s != '\0' && len + 1 < sizeof(msg)) msg[len++] = *s++;
  };
  put("netfront ");
  put(front_path_);
  put(": ");
  put(a);
  if (b != nullptr) {
    put(" ");
    put(b);
  }
  if (n != ~0ull) {
    char num[24];
    detail::format_uint(num, sizeof(num), n);
    put(" ");
    put(num);
  }
  msg[len] = '\0';
  pf_.log(l, msg);
}

evtchn_port_t Netfront::tx_port(std::uint32_t q) const {
  return (queues_ != nullptr && q < nr_queues_ && queues_[q].tx_port_valid) ? queues_[q].tx_port
                                                                            : 0;
}
evtchn_port_t Netfront::rx_port(std::uint32_t q) const {
  if (queues_ == nullptr || q >= nr_queues_) return 0;
  if (queues_[q].rx_port_valid) return queues_[q].rx_port;
  return queues_[q].tx_port_valid ? queues_[q].tx_port : 0;
}

// ---- xenstore helpers ----

int Netfront::read_state(const char* dir, XenbusState& out) {
  detail::PathBuf p(dir);
  p.add("/state");
  if (!p.ok()) return -XEN_ENAMETOOLONG;
  char v[16];
  std::size_t len = 0;
  out = XenbusState::Unknown;
  const int rc = pf_.xs_read(p.c_str(), v, sizeof(v), len);
  if (rc != 0) return rc;
  // Anything that is not a state reads as Unknown, as xenbus_read_driver_state.
  if (!xs::xenbus_parse_state(v, len, &out)) out = XenbusState::Unknown;
  return 0;
}

int Netfront::switch_state(XenbusState s) {
  char v[4];
  detail::format_uint(v, sizeof(v), static_cast<std::uint64_t>(s));
  const int rc = write_front("state", v);
  if (rc == 0) state_ = s;
  return rc;
}

int Netfront::write_front(const char* key, const char* value) {
  detail::PathBuf p(front_path_);
  p.add("/").add(key);
  if (!p.ok()) return -XEN_ENAMETOOLONG;
  return pf_.xs_write(p.c_str(), value);
}

int Netfront::write_front_uint(const char* key, std::uint64_t v) {
  char s[24];
  detail::format_uint(s, sizeof(s), v);
  return write_front(key, s);
}

// A missing node gives `dflt`; a present but malformed one is an error (-EINVAL): the value
// came from another domain, and guessing would be worse than refusing.
int Netfront::read_backend_uint(const char* key, std::uint64_t& out, std::uint64_t dflt) {
  detail::PathBuf p(backend_path_);
  p.add("/").add(key);
  if (!p.ok()) return -XEN_ENAMETOOLONG;
  char v[32];
  std::size_t len = 0;
  const int rc = pf_.xs_read(p.c_str(), v, sizeof(v), len);
  if (rc == -XEN_ENOENT) {
    out = dflt;
    return 0;
  }
  if (rc != 0) return rc;
  if (!detail::parse_uint(v, len, out)) {
    logf(LogLevel::Warn, "malformed backend node", key);
    return -XEN_EINVAL;
  }
  return 0;
}

// xen_net_read_mac: the toolstack writes `mac` in the frontend's own directory (xl writes it
// on both sides); the backend's copy is the fallback.
bool Netfront::read_mac() {
  char v[32];
  std::size_t len = 0;
  detail::PathBuf f(front_path_);
  f.add("/mac");
  if (pf_.xs_read(f.c_str(), v, sizeof(v), len) == 0 && detail::parse_mac(v, len, mac_))
    return true;
  detail::PathBuf b(backend_path_);
  b.add("/mac");
  return pf_.xs_read(b.c_str(), v, sizeof(v), len) == 0 && detail::parse_mac(v, len, mac_);
}

// ---- handshake ----

int Netfront::start() {
  if (started_) return 0;
  detail::PathBuf p(front_path_);
  p.add("/backend");
  std::size_t len = 0;
  int rc = pf_.xs_read(p.c_str(), backend_path_, sizeof(backend_path_), len);
  if (rc != 0) {
    backend_path_[0] = '\0';
    return rc;
  }
  if (len == 0 || backend_path_[0] != '/' || std::strlen(backend_path_) != len) {
    backend_path_[0] = '\0';
    return -XEN_EINVAL;
  }
  detail::PathBuf q(front_path_);
  q.add("/backend-id");
  char v[16];
  rc = pf_.xs_read(q.c_str(), v, sizeof(v), len);
  std::uint64_t id = 0;
  if (rc != 0) return rc;
  if (!detail::parse_uint(v, len, id) || id >= kDomidFirstReserved) return -XEN_EINVAL;
  backend_id_ = static_cast<domid_t>(id);
  if (!read_mac()) {
    logf(LogLevel::Error, "no valid mac node");
    return -XEN_EINVAL;
  }

  rc = switch_state(XenbusState::Initialising);
  if (rc != 0) return rc;
  detail::PathBuf w(backend_path_);
  w.add("/state");
  rc = pf_.xs_watch(w.c_str());
  if (rc != 0) return rc;
  started_ = true;
  return 0;
}

int Netfront::backend_changed() {
  if (!started_) return -XEN_ENODEV;
  XenbusState bs = XenbusState::Unknown;
  int rc = read_state(backend_path_, bs);
  if (rc != 0 && rc != -XEN_ENOENT) return rc;
  backend_state_ = bs;

  // A datapath protocol error waits for the backend to acknowledge our Closing.
  if (broken_ && state_ == XenbusState::Connected) request_disconnect();

  rc = 0;
  switch (bs) {
    case XenbusState::InitWait:
      if (closing_) return 0;
      if (state_ == XenbusState::Connected && backend_connected_once_) {
        // A backend that came back without closing first (it lost its state): start over.
        backend_gone("backend back in InitWait");
        rc = talk_to_backend();
      } else if (state_ == XenbusState::Initialising || state_ == XenbusState::Closed) {
        rc = talk_to_backend();
      }
      break;
    case XenbusState::Connected:
      if (closing_ || broken_ || state_ == XenbusState::Closing) return 0;
      // The backend may have reached Connected before we saw InitWait (Linux does the same).
      if (state_ != XenbusState::Connected) {
        rc = talk_to_backend();
        if (rc != 0) break;
      }
      if (!backend_connected_once_) {
        backend_connected_once_ = true;
        if (ever_connected_) {
          ++stats_.reconnects;
          logf(LogLevel::Info, "reconnected");
        }
        ever_connected_ = true;
        // xennet_connect kicks every queue once both ends are up: requests and rx buffers
        // posted before the backend bound its channels would otherwise wait for traffic.
        for (std::uint32_t i = 0; i < nr_queues_; ++i) {
          Queue& q = queues_[i];
          if (q.tx_port_valid) pf_.notify(q.tx_port);
          if (q.rx_port_valid) pf_.notify(q.rx_port);
          stats_.notifications += q.rx_port_valid ? 2 : 1;
        }
        handle_all_events();
      }
      break;
    case XenbusState::Closing:
    case XenbusState::Closed:
      if (state_ != XenbusState::Closed) {
        backend_gone(bs == XenbusState::Closing ? "backend closing" : "backend closed");
        rc = switch_state(XenbusState::Closed);
      }
      if (!closing_ && bs == XenbusState::Closed && state_ == XenbusState::Closed) {
        // Both ends closed: offer to reconnect (netback answers Initialising after Closed with
        // InitWait, "prepare for reconnect"), unless the toolstack is taking the device away:
        // it wrote online=0 before Closing (xl's device removal), and then the device stays
        // Closed until it is attached again.
        std::uint64_t online = 1;
        if (read_backend_uint("online", online, 1) != 0 || online != 0)
          rc = switch_state(XenbusState::Initialising);
        else
          logf(LogLevel::Info, "device removed by the toolstack");
      }
      return rc;
    default:
      return 0;
  }
  if (rc != 0) {
    logf(LogLevel::Error, "handshake step failed, errno", nullptr,
         static_cast<std::uint64_t>(-rc));
    teardown_datapath();
    switch_state(XenbusState::Closing);
  }
  return rc;
}

void Netfront::remove_front_keys() {
  // Keys of an earlier connection: the new one may have another queue count or channel layout.
  static constexpr const char* kKeys[] = {"tx-ring-ref", "rx-ring-ref", "event-channel",
                                          "event-channel-tx", "event-channel-rx",
                                          "multi-queue-num-queues"};
  for (const char* k : kKeys) {
    detail::PathBuf p(front_path_);
    p.add("/").add(k);
    pf_.xs_remove(p.c_str());
  }
  for (std::uint32_t i = 0; i < kMaxQueues; ++i) {
    detail::PathBuf p(front_path_);
    p.add("/queue-").add_uint(i);
    pf_.xs_remove(p.c_str());
  }
}

int Netfront::read_features() {
  std::uint64_t rx_copy = 0, queues = 1, split = 0, sg = 0, gso4 = 0, gso6 = 0, no_csum = 0,
                csum6 = 0;
  int rc;
  if ((rc = read_backend_uint("feature-rx-copy", rx_copy, 0)) != 0 ||
      (rc = read_backend_uint("multi-queue-max-queues", queues, 1)) != 0 ||
      (rc = read_backend_uint("feature-split-event-channels", split, 0)) != 0 ||
      (rc = read_backend_uint("feature-sg", sg, 0)) != 0 ||
      (rc = read_backend_uint("feature-gso-tcpv4", gso4, 0)) != 0 ||
      (rc = read_backend_uint("feature-gso-tcpv6", gso6, 0)) != 0 ||
      (rc = read_backend_uint("feature-no-csum-offload", no_csum, 0)) != 0 ||
      (rc = read_backend_uint("feature-ipv6-csum-offload", csum6, 0)) != 0)
    return rc;
  // Receive by grant copy is the only mode we implement (request-rx-copy); page flipping is
  // gone from Xen, and Linux refuses a backend without it too.
  if (rx_copy == 0) {
    logf(LogLevel::Error, "backend does not offer feature-rx-copy");
    return -XEN_EOPNOTSUPP;
  }
  if (queues == 0) queues = 1;
  if (queues > limits_.max_queues) queues = limits_.max_queues;
  neg_ = Negotiated{};
  neg_.nr_queues = static_cast<std::uint32_t>(queues);
  neg_.split_event_channels = split != 0;
  neg_.sg = limits_.sg && sg != 0;
  // GSO packets span several slots: no GSO without scatter-gather (xennet_fix_features).
  neg_.gso_tcpv4 = neg_.sg && limits_.gso && gso4 != 0;
  neg_.gso_tcpv6 = neg_.sg && limits_.gso && gso6 != 0;
  neg_.csum = no_csum == 0;
  neg_.ipv6_csum = neg_.csum && csum6 != 0;
  return 0;
}

int Netfront::setup_queue(Queue& q) {
  if (!pf_.alloc_page(q.tx_ring_page)) return -XEN_ENOMEM;
  q.tx_ring_allocated = true;
  if (!pf_.alloc_page(q.rx_ring_page)) return -XEN_ENOMEM;
  q.rx_ring_allocated = true;
  // SHARED_RING_INIT before the backend can see the pages.
  if (!q.tx.init(q.tx_ring_page.addr, kPageSize) || !q.rx.init(q.rx_ring_page.addr, kPageSize))
    return -XEN_EINVAL;
  q.tx_ring_ref = pf_.grant_access(backend_id_, q.tx_ring_page.gfn, false);
  if (q.tx_ring_ref == kInvalidGrantRef) return -XEN_ENOSPC;
  q.rx_ring_ref = pf_.grant_access(backend_id_, q.rx_ring_page.gfn, false);
  if (q.rx_ring_ref == kInvalidGrantRef) return -XEN_ENOSPC;
  int rc = pf_.evtchn_alloc_unbound(backend_id_, q.tx_port);
  if (rc != 0) return rc;
  q.tx_port_valid = true;
  if (neg_.split_event_channels) {
    rc = pf_.evtchn_alloc_unbound(backend_id_, q.rx_port);
    if (rc != 0) return rc;
    q.rx_port_valid = true;
  }
  // One page per ring slot on each side, kept for the connection.
  for (std::uint32_t i = 0; i < kRingSize; ++i) {
    if (!pf_.alloc_page(q.txs[i].page)) return -XEN_ENOMEM;
    if (!pf_.alloc_page(q.rxs[i].page)) return -XEN_ENOMEM;
  }
  q.tx_free_count = 0;
  for (std::uint32_t i = kRingSize; i-- > 0;) q.tx_free[q.tx_free_count++] = static_cast<std::uint16_t>(i);
  return 0;
}

// write_queue_xenstore_keys + talk_to_netback: one queue's keys at the top level, several
// under queue-N/ with multi-queue-num-queues; then the features we request.
int Netfront::write_keys() {
  const bool mq = nr_queues_ > 1;
  int rc;
  if (mq && (rc = write_front_uint("multi-queue-num-queues", nr_queues_)) != 0) return rc;
  for (std::uint32_t qi = 0; qi < nr_queues_; ++qi) {
    Queue& q = queues_[qi];
    char prefix[32] = "";
    if (mq) {
      detail::PathBuf pre("queue-");
      pre.add_uint(qi).add("/");
      std::memcpy(prefix, pre.c_str(), std::strlen(pre.c_str()) + 1);
    }
    auto key = [&](const char* k) {
      detail::PathBuf p(prefix);
      p.add(k);
      return p;
    };
    if ((rc = write_front_uint(key("tx-ring-ref").c_str(), q.tx_ring_ref)) != 0 ||
        (rc = write_front_uint(key("rx-ring-ref").c_str(), q.rx_ring_ref)) != 0)
      return rc;
    if (q.rx_port_valid) {
      if ((rc = write_front_uint(key("event-channel-tx").c_str(), q.tx_port)) != 0 ||
          (rc = write_front_uint(key("event-channel-rx").c_str(), q.rx_port)) != 0)
        return rc;
    } else if ((rc = write_front_uint(key("event-channel").c_str(), q.tx_port)) != 0) {
      return rc;
    }
  }
  struct Kv {
    const char* key;
    const char* value;
  };
  const Kv kv[] = {
      {"request-rx-copy", "1"},
      {"feature-rx-notify", "1"},  // we post rx buffers and expect the backend to wait for them
      {"feature-sg", limits_.sg ? "1" : "0"},
      {"feature-gso-tcpv4", limits_.sg && limits_.gso && limits_.rx_gso ? "1" : "0"},
      {"feature-gso-tcpv6", limits_.sg && limits_.gso && limits_.rx_gso ? "1" : "0"},
      {"feature-ipv6-csum-offload", "1"},
  };
  for (const Kv& e : kv)
    if ((rc = write_front(e.key, e.value)) != 0) return rc;
  return 0;
}

// talk_to_netback + xennet_connect: queues, rings, channels, posted rx buffers, keys,
// Connected. Linux's netfront goes from Initialising straight to Connected; netback connects
// when it sees either Initialised or Connected.
int Netfront::talk_to_backend() {
  teardown_datapath();
  int rc = read_features();
  if (rc != 0) return rc;
  const std::size_t qbytes = detail::align16(sizeof(Queue));
  if (storage_ == nullptr || qbytes * neg_.nr_queues > storage_len_) return -XEN_ENOMEM;
  queues_ = reinterpret_cast<Queue*>(storage_);
  for (std::uint32_t i = 0; i < neg_.nr_queues; ++i) new (&queues_[i]) Queue();
  nr_queues_ = neg_.nr_queues;
  for (std::uint32_t i = 0; i < nr_queues_; ++i) {
    rc = setup_queue(queues_[i]);
    if (rc != 0) return rc;
  }
  rings_up_ = true;
  broken_ = false;
  backend_connected_once_ = false;
  for (std::uint32_t i = 0; i < nr_queues_; ++i) rx_refill(queues_[i]);

  remove_front_keys();
  rc = write_keys();
  if (rc != 0) return rc;
  return switch_state(XenbusState::Connected);
}

void Netfront::backend_gone(const char* why) {
  logf(LogLevel::Info, why);
  teardown_datapath();
  broken_ = false;  // the broken rings are gone; the next ones start clean
}

void Netfront::teardown_datapath() {
  if (queues_ != nullptr) {
    for (std::uint32_t qi = 0; qi < nr_queues_; ++qi) {
      Queue& q = queues_[qi];
      if (q.tx_port_valid) pf_.evtchn_close(q.tx_port);
      if (q.rx_port_valid) pf_.evtchn_close(q.rx_port);
      q.tx_port_valid = q.rx_port_valid = false;
      tx_release_all(q);
      rx_release_all(q);
      // A ring page the backend still maps must never be reused (gnttab_end_foreign_access
      // would defer the free; we cannot, so the page is given up).
      auto drop_ring = [&](grant_ref_t& ref, GuestPage& page, bool& allocated) {
        bool lost = false;
        if (ref != kInvalidGrantRef && !pf_.end_access(ref)) {
          lost = true;
          ++stats_.grants_leaked;
        }
        ref = kInvalidGrantRef;
        if (allocated && !lost) pf_.free_page(page);
        allocated = false;
      };
      drop_ring(q.tx_ring_ref, q.tx_ring_page, q.tx_ring_allocated);
      drop_ring(q.rx_ring_ref, q.rx_ring_page, q.rx_ring_allocated);
      q.~Queue();
    }
  }
  queues_ = nullptr;
  nr_queues_ = 0;
  rings_up_ = false;
  backend_connected_once_ = false;
}

void Netfront::request_disconnect() {
  if (state_ == XenbusState::Connected || state_ == XenbusState::Initialised) {
    logf(LogLevel::Warn, "disconnecting after a protocol error");
    switch_state(XenbusState::Closing);
  }
}

int Netfront::connect(std::uint32_t timeout_ms) {
  int rc = start();
  if (rc != 0) return rc;
  for (;;) {
    rc = backend_changed();
    if (rc != 0) return rc;
    if (carrier()) return 0;
    rc = pf_.xs_wait(timeout_ms);
    if (rc != 0) return rc;
  }
}

int Netfront::reopen() {
  if (!started_ || !closing_) return -XEN_EINVAL;
  if (state_ != XenbusState::Closed) return -XEN_EBUSY;  // close() did not finish
  // The toolstack may have changed the node while we were away; a malformed one keeps the old
  // address and the device closed.
  std::uint8_t old[6];
  std::memcpy(old, mac_, sizeof old);
  if (!read_mac()) {
    std::memcpy(mac_, old, sizeof old);
    logf(LogLevel::Error, "no valid mac node");
    return -XEN_EINVAL;
  }
  closing_ = false;
  return 0;
}

int Netfront::close(std::uint32_t timeout_ms) {
  closing_ = true;
  if (!started_) return 0;
  if (state_ != XenbusState::Closed) {
    const int rc = switch_state(XenbusState::Closing);
    if (rc != 0) return rc;
  }
  for (;;) {
    int rc = backend_changed();
    if (rc != 0) return rc;
    if (state_ == XenbusState::Closed) return 0;
    // A backend that is gone (or never came) cannot answer: nothing of ours is in use.
    if (backend_state_ == XenbusState::Unknown || backend_state_ == XenbusState::Initialising ||
        backend_state_ == XenbusState::InitWait) {
      teardown_datapath();
      return switch_state(XenbusState::Closed);
    }
    rc = pf_.xs_wait(timeout_ms);
    if (rc != 0) {
      teardown_datapath();
      switch_state(XenbusState::Closed);
      return rc;
    }
  }
}

}  // namespace pvio::netfront
