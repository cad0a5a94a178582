// The XenBus side of pvio-blkback: xenstore keys, feature negotiation, connect/disconnect.
// Level-triggered: every watch event re-reads both ends' states and moves each vbd one step,
// so lost or coalesced events cannot leave a device stuck.
#include "pvio/blkback/xenbus.h"

#include <spdlog/spdlog.h>

#include <charconv>
#include <stdexcept>
#include <vector>

#include "pvio/blkback/blkback.h"
#include "pvio/control/client.h"
#include "pvio/control/run_dir.h"
#include "pvio/xenstore/client.h"
#include "pvio/xenstore/xenbus_client.h"

namespace pvio::blkback {

namespace {

using xs::XenbusState;
constexpr const char* kVbdRoot = "/local/domain/0/backend/vbd";

template <typename T>
bool parse_uint(const std::string& s, T* out) {
  std::string_view v(s);
  while (!v.empty() && (v.back() == '\0' || v.back() == '\n')) v.remove_suffix(1);
  if (v.empty()) return false;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
  return ec == std::errc() && p == v.data() + v.size();
}

// Events towards the frontend go through the control connection: set_pending on the guest's
// shared_info for the bound port, then its upcall eventfd.
class ControlNotifier final : public evtchn::Notifier {
 public:
  explicit ControlNotifier(control::ControlClient& c) : c_(c) {}
  void notify(evtchn_port_t local_port) override { c_.notify(local_port); }

 private:
  control::ControlClient& c_;
};

}  // namespace

class Vbd {
 public:
  Vbd(xs::Client& xs, const ServiceOptions& opts, std::atomic<bool>& fatal_pending, domid_t domid,
      std::uint32_t devid)
      : xs_(xs), opts_(opts), fatal_pending_(fatal_pending), domid_(domid), devid_(devid),
        be_(std::string(kVbdRoot) + "/" + std::to_string(domid) + "/" + std::to_string(devid)) {}
  ~Vbd() { disconnect(); }

  // One step of the handshake. Returns false once the backend directory is gone.
  bool step();
  bool connected() const { return dev_ != nullptr; }

 private:
  std::string read(const std::string& path) {
    auto r = xs_.read(path);
    return r.ok() ? r.value : std::string();
  }
  bool exists(const std::string& path) { return xs_.read(path).ok(); }
  void write(const std::string& key, const std::string& value) {
    if (xs_.write(be_ + "/" + key, value) != xs::XsError::None)
      spdlog::warn("vbd {}: cannot write {}", be_, key);
  }
  void switch_state(XenbusState to) {
    if (xs::xenbus_switch_state(xs_, be_, to) != xs::XsError::None)
      spdlog::warn("vbd {}: cannot switch to {}", be_, xs::xenbus_state_name(to));
  }
  void publish_probe_features();
  bool connect();
  void disconnect();
  void fail(const std::string& why) {
    spdlog::error("vbd {}: {}", be_, why);
    write("error", why);
    disconnect();
    switch_state(XenbusState::Closing);
  }

  xs::Client& xs_;
  const ServiceOptions& opts_;
  std::atomic<bool>& fatal_pending_;  // the service's "some vbd has a fatal error" flag
  domid_t domid_;
  std::uint32_t devid_;
  std::string be_;
  std::string fe_;
  bool probed_ = false;
  std::unique_ptr<control::ControlClient> ctl_;
  std::unique_ptr<ControlNotifier> notifier_;
  std::vector<evtchn_port_t> local_ports_;
  std::unique_ptr<Device> dev_;
  // Set by a datapath worker when a ring turned out broken (the queue's index, else -1); the
  // control plane acts on it in step(), on the service thread, which owns xenstore.
  std::atomic<int> broken_queue_{-1};
};

// What xen_blkbk_probe writes before InitWait: the features the frontend needs to choose its
// ring layout.
void Vbd::publish_probe_features() {
  write("feature-max-indirect-segments", std::to_string(opts_.max_indirect_segments));
  write("feature-persistent", opts_.persistent ? "1" : "0");
  write("multi-queue-max-queues", std::to_string(opts_.max_queues));
  write("max-ring-page-order", std::to_string(opts_.max_ring_page_order));
}

bool Vbd::step() {
  if (!exists(be_)) return false;
  if (const int q = broken_queue_.exchange(-1); q >= 0 && dev_) {
    // A ring protocol error (impossible producer index) is fatal for the device, as
    // xenbus_dev_fatal() makes it in Linux xen-blkback: error node, stop, Closing. The
    // frontend sees Closing, closes, and may start over from Initialising.
    fail("queue " + std::to_string(q) + ": ring protocol error (impossible producer index)");
    return true;
  }
  if (fe_.empty()) {
    fe_ = read(be_ + "/frontend");
    if (fe_.empty()) return true;  // the toolstack has not finished writing the device
    xs_.watch(fe_ + "/state", "fe");
  }
  const XenbusState be = xs::xenbus_read_state(xs_, be_);
  const XenbusState fe = xs::xenbus_read_state(xs_, fe_);
  using S = XenbusState;

  if (!probed_) {
    probed_ = true;
    if (be == S::Connected || be == S::Initialised || be == S::Reconfiguring ||
        be == S::Reconfigured) {
      // Left connected by a previous instance of the service: its mappings are gone, so the
      // frontend must reconnect (and resubmit what was in flight).
      spdlog::info("vbd {}: found in state {} after restart, closing for reconnect", be_,
                   xs::xenbus_state_name(be));
      switch_state(S::Closing);
      return true;
    }
    if (be == S::Unknown || be == S::Initialising) {
      if (be == S::Unknown) switch_state(S::Initialising);
      publish_probe_features();
      switch_state(S::InitWait);
      return true;
    }
  }

  switch (fe) {
    case S::Initialised:
    case S::Connected:
      if (be == S::InitWait && !dev_) {
        if (connect()) switch_state(S::Connected);
      }
      break;
    case S::Closing:
      disconnect();
      if (be != S::Closing && be != S::Closed) switch_state(S::Closing);
      break;
    case S::Closed:
      disconnect();
      if (be != S::Closed) switch_state(S::Closed);
      break;
    case S::Initialising:
    case S::InitWait:
      // The frontend starts over: a reconnect after Closed, or a fresh frontend.
      if (be == S::Closing) switch_state(S::Closed);
      if (be == S::Closing || be == S::Closed) {
        disconnect();
        switch_state(S::Initialising);
        publish_probe_features();
        switch_state(S::InitWait);
      }
      break;
    case S::Unknown:
      disconnect();  // the frontend went away
      break;
    default:
      break;
  }
  return true;
}

bool Vbd::connect() {
  // Frontend details (connect_ring in xen-blkback).
  domid_t fe_domid = 0;
  if (!parse_uint(read(be_ + "/frontend-id"), &fe_domid) || fe_domid != domid_) {
    fail("frontend-id missing or not " + std::to_string(domid_));
    return false;
  }
  const std::string protocol = read(fe_ + "/protocol");
  BlkifProtocol abi = BlkifProtocol::X86_64;
  if (!parse_blkif_protocol(protocol, &abi)) {
    fail("unsupported protocol " + protocol);
    return false;
  }
  unsigned nr_queues = 1;
  if (exists(fe_ + "/multi-queue-num-queues") &&
      (!parse_uint(read(fe_ + "/multi-queue-num-queues"), &nr_queues) || nr_queues == 0 ||
       nr_queues > opts_.max_queues)) {
    fail("bad multi-queue-num-queues");
    return false;
  }
  unsigned order = 0;
  const bool multi_page = exists(fe_ + "/ring-page-order");
  if (multi_page &&
      (!parse_uint(read(fe_ + "/ring-page-order"), &order) || order > opts_.max_ring_page_order)) {
    fail("bad ring-page-order");
    return false;
  }
  unsigned fe_persistent = 0;
  parse_uint(read(fe_ + "/feature-persistent"), &fe_persistent);

  // Backing: params = path, mode = r or w (default w).
  const std::string params = read(be_ + "/params");
  if (params.empty()) {
    fail("no params");
    return false;
  }
  const std::string mode = read(be_ + "/mode");
  const bool read_only = !mode.empty() && mode[0] == 'r';
  std::string engine = read(be_ + "/engine");
  if (engine.empty()) engine = opts_.engine;

  const std::string sock = opts_.domain_socket ? opts_.domain_socket(domid_)
                                               : control::domain_socket_path(domid_);
  if (const int rc = control::ControlClient::attach(sock, domid_, &ctl_); rc != 0) {
    fail("cannot attach to domain " + std::to_string(domid_) + " at " + sock + ": " +
         std::to_string(rc));
    return false;
  }
  notifier_ = std::make_unique<ControlNotifier>(*ctl_);

  DeviceConfig cfg;
  cfg.frontend_domid = domid_;
  cfg.backend_domid = 0;
  cfg.memory = &ctl_->memory();
  cfg.grant_table_gfns.assign(ctl_->grant_frame_gfns().begin(), ctl_->grant_frame_gfns().end());
  cfg.engine = engine;
  cfg.protocol = abi;
  cfg.backing = BackingOptions{params, read_only, DirectIo::Auto};
  cfg.persistent = opts_.persistent && fe_persistent == 1;
  cfg.max_indirect_segments = opts_.max_indirect_segments;
  cfg.threads = opts_.threads;
  cfg.poll_us = opts_.poll_us;
  if (const std::string p = read(be_ + "/poll-us"); !p.empty()) {
    char* end = nullptr;
    const unsigned long v = std::strtoul(p.c_str(), &end, 10);
    if (end != p.c_str() && *end == '\0' && v <= 100'000) cfg.poll_us = static_cast<unsigned>(v);
    else spdlog::warn("vbd {}: ignoring poll-us \"{}\" (0..100000)", be_, p);
  }
  const std::string be_path = be_;
  broken_queue_.store(-1);
  // Runs on a worker thread: only flag it; step() switches the device to Closing.
  cfg.on_ring_error = [this, be_path](unsigned q) {
    spdlog::error("vbd {}: queue {} has an impossible producer index; ring stopped", be_path, q);
    broken_queue_.store(static_cast<int>(q));
    fatal_pending_.store(true);
  };
  for (unsigned q = 0; q < nr_queues; ++q) {
    const std::string dir = nr_queues == 1 ? fe_ : fe_ + "/queue-" + std::to_string(q);
    QueueConfig qc;
    if (multi_page) {
      for (unsigned i = 0; i < (1u << order); ++i) {
        grant_ref_t ref = 0;
        if (!parse_uint(read(dir + "/ring-ref" + std::to_string(i)), &ref)) {
          fail("missing " + dir + "/ring-ref" + std::to_string(i));
          return false;
        }
        qc.ring_refs.push_back(ref);
      }
    } else {
      grant_ref_t ref = 0;
      if (!parse_uint(read(dir + "/ring-ref"), &ref)) {
        fail("missing " + dir + "/ring-ref");
        return false;
      }
      qc.ring_refs.push_back(ref);
    }
    evtchn_port_t remote = 0, local = 0;
    if (!parse_uint(read(dir + "/event-channel"), &remote)) {
      fail("missing " + dir + "/event-channel");
      return false;
    }
    if (const int rc = ctl_->bind_interdomain(remote, &local); rc != 0) {
      fail("cannot bind event channel " + std::to_string(remote) + ": " + std::to_string(rc));
      return false;
    }
    local_ports_.push_back(local);
    qc.kick_fd = ctl_->kick_fd(local);
    qc.notifier = notifier_.get();
    qc.notify_port = local;
    cfg.queues.push_back(std::move(qc));
  }

  try {
    dev_ = std::make_unique<Device>(std::move(cfg));
  } catch (const std::exception& e) {
    fail(std::string("cannot start the datapath: ") + e.what());
    return false;
  }
  // What connect() in xen-blkback writes before switching to Connected.
  const BackingInfo& b = dev_->backing();
  write("feature-flush-cache", "1");
  write("feature-barrier", "1");
  if (dev_->limits().discard) {
    write("feature-discard", "1");
    write("discard-granularity", std::to_string(b.discard_granularity ? b.discard_granularity : 4096));
    write("discard-alignment", "0");
  } else {
    write("feature-discard", "0");
  }
  write("sectors", std::to_string(dev_->nr_sectors()));
  write("sector-size", std::to_string(b.logical_sector_size));
  write("physical-sector-size", std::to_string(b.physical_sector_size));
  write("info", std::to_string(read_only ? blkif::kVdiskReadonly : 0u));
  dev_->start();
  spdlog::info("vbd {}: connected ({} queue(s), ring order {}, engine {}, persistent {}, {} sectors)",
               be_, nr_queues, order, dev_->engine_name(), fe_persistent == 1 && opts_.persistent,
               dev_->nr_sectors());
  return true;
}

void Vbd::disconnect() {
  if (dev_) {
    dev_.reset();  // stops the workers, completes what is in flight, unmaps every grant
    spdlog::info("vbd {}: disconnected", be_);
  }
  if (ctl_) {
    for (evtchn_port_t p : local_ports_) ctl_->unbind(p);
    ctl_->detach();
  }
  local_ports_.clear();
  notifier_.reset();
  ctl_.reset();
}

// ---- the service ----

BlkbackService::BlkbackService(ServiceOptions options) : opts_(std::move(options)) {
  xs_ = xs::Client::connect(opts_.xenstore_socket);
  if (!xs_) throw std::runtime_error("cannot connect to xenstore at " + opts_.xenstore_socket);
  // A restarted pvio-xenstored comes back with the same tree: ride through it (reconnect,
  // watch again, rescan on the watch's first event) and the guests keep their devices.
  xs_->enable_reconnect({.give_up_ms = opts_.xenstore_give_up_ms});
  if (xs_->watch(kVbdRoot, "vbd") != xs::XsError::None)
    throw std::runtime_error("cannot watch " + std::string(kVbdRoot));
}

BlkbackService::~BlkbackService() {
  vbds_.clear();
}

void BlkbackService::rescan() {
  // Discover vbds; each watches its frontend's state once the frontend path is known.
  auto domids = xs_->directory(kVbdRoot);
  if (domids.ok()) {
    for (const std::string& d : domids.value) {
      domid_t domid = 0;
      if (!parse_uint(d, &domid)) continue;
      auto devs = xs_->directory(std::string(kVbdRoot) + "/" + d);
      if (!devs.ok()) continue;
      for (const std::string& v : devs.value) {
        std::uint32_t devid = 0;
        if (!parse_uint(v, &devid)) continue;
        auto key = std::make_pair(domid, devid);
        if (vbds_.count(key) == 0)
          vbds_.emplace(key, std::make_unique<Vbd>(*xs_, opts_, fatal_pending_, domid, devid));
      }
    }
  }
  fatal_pending_.store(false);
  std::size_t connected = 0;
  for (auto it = vbds_.begin(); it != vbds_.end();) {
    if (!it->second->step()) {
      it = vbds_.erase(it);
      continue;
    }
    connected += it->second->connected();
    ++it;
  }
  connected_.store(connected, std::memory_order_relaxed);
}

int BlkbackService::run() {
  rescan();
  while (!stop_.load(std::memory_order_relaxed)) {
    auto ev = xs_->read_watch(200);
    if (!ev && !xs_->connected()) {
      // No xenstored for the whole reconnect budget: without it no device can change state.
      // Exit with an error rather than spin; the supervisor (systemd, `pvio up`) starts us
      // again and the restarted service reattaches to every device it finds.
      spdlog::error("pvio-blkback: no xenstored to reconnect to; exiting");
      return 1;
    }
    // A datapath's fatal error has no watch event of its own: the timeout picks it up.
    if (!ev) {
      if (fatal_pending_.load()) rescan();
      continue;
    }
    // Coalesce a burst of events into one pass.
    while (xs_->queued_watch_events() > 0) xs_->read_watch(0);
    rescan();
  }
  return 0;
}

}  // namespace pvio::blkback
