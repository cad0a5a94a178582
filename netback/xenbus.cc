// The XenBus side of pvio-netback: xenstore keys, feature negotiation, connect/disconnect.
// Level-triggered like pvio-blkback's: every watch event re-reads both ends' states and moves
// each vif one step, so lost or coalesced events cannot leave a device stuck.
#include "pvio/netback/xenbus.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <charconv>
#include <mutex>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <stdexcept>

#include "pvio/control/client.h"
#include "pvio/control/run_dir.h"
#include "pvio/netback/switch.h"
#include "pvio/netback/uplink.h"
#include "pvio/netback/vif.h"
#include "pvio/xenstore/client.h"
#include "pvio/xenstore/xenbus_client.h"

namespace pvio::netback {

namespace {

using xs::XenbusState;
constexpr const char* kVifRoot = "/local/domain/0/backend/vif";

template <typename T>
bool parse_uint(const std::string& s, T* out) {
  std::string_view v(s);
  while (!v.empty() && (v.back() == '\0' || v.back() == '\n')) v.remove_suffix(1);
  if (v.empty()) return false;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
  return ec == std::errc() && p == v.data() + v.size();
}

// The `rate` key: "<bytes>,<usec>" (xen_net_read_rate); bytes 0 means unlimited.
bool parse_rate(const std::string& s, std::uint64_t* bytes, std::uint64_t* usec) {
  const auto comma = s.find(',');
  if (comma == std::string::npos) return false;
  return parse_uint(s.substr(0, comma), bytes) && parse_uint(s.substr(comma + 1), usec) &&
         *usec > 0;
}

class ControlNotifier final : public evtchn::Notifier {
 public:
  explicit ControlNotifier(control::ControlClient& c) : c_(c) {}
  void notify(evtchn_port_t local_port) override { c_.notify(local_port); }

 private:
  control::ControlClient& c_;
};

}  // namespace

class VifDevice {
 public:
  VifDevice(xs::Client& xs, const ServiceOptions& opts, Switch& sw,
            std::atomic<bool>& fatal_pending, domid_t domid, std::uint32_t devid)
      : xs_(xs), opts_(opts), switch_(sw), fatal_pending_(fatal_pending), domid_(domid),
        devid_(devid), name_("vif" + std::to_string(domid) + "." + std::to_string(devid)),
        be_(std::string(kVifRoot) + "/" + std::to_string(domid) + "/" + std::to_string(devid)) {}
  ~VifDevice() {
    disconnect();
    uplink_.reset();
  }

  bool step();
  bool connected() const { return vif_ != nullptr; }
  void append_stats(std::ostream& os) const;

 private:
  std::string read(const std::string& path) {
    auto r = xs_.read(path);
    return r.ok() ? r.value : std::string();
  }
  bool exists(const std::string& path) { return xs_.read(path).ok(); }
  unsigned read_flag(const std::string& key) {
    unsigned v = 0;
    return parse_uint(read(fe_ + "/" + key), &v) ? v : 0;
  }
  void write(const std::string& key, const std::string& value, std::uint32_t tx = 0) {
    if (xs_.write(be_ + "/" + key, value, tx) != xs::XsError::None)
      spdlog::warn("{}: cannot write {}", be_, key);
  }
  void switch_state(XenbusState to) {
    if (xs::xenbus_switch_state(xs_, be_, to) != xs::XsError::None)
      spdlog::warn("{}: cannot switch to {}", be_, xs::xenbus_state_name(to));
  }
  bool probe();
  void publish_features();
  bool connect();
  bool read_queue(unsigned q, unsigned nr_queues, VifQueueConfig* qc);
  bool read_ctrl_ring(VifConfig* cfg);
  void disconnect();
  void fail(const std::string& why) {
    spdlog::error("{}: {}", be_, why);
    write("error", why);
    disconnect();
    switch_state(XenbusState::Closing);
  }

  xs::Client& xs_;
  const ServiceOptions& opts_;
  Switch& switch_;
  std::atomic<bool>& fatal_pending_;
  domid_t domid_;
  std::uint32_t devid_;
  std::string name_;
  std::string be_, fe_;
  bool probed_ = false;
  std::unique_ptr<EthdevPort> uplink_;  // the vif's own uplink (a TAP named after it)
  std::unique_ptr<control::ControlClient> ctl_;
  std::unique_ptr<ControlNotifier> notifier_;
  std::vector<evtchn_port_t> local_ports_;
  std::unique_ptr<Vif> vif_;
  // Set by a datapath thread on a protocol violation; acted on by step() on the service
  // thread, which owns xenstore.
  std::atomic<bool> broken_{false};
  std::string broken_why_;
  std::mutex broken_mu_;
};

// What netback_probe writes, in one transaction: the features the frontend needs before it
// builds its rings. Only what the datapath implements is offered as 1.
void VifDevice::publish_features() {
  for (int attempt = 0; attempt < 5; ++attempt) {
    auto tx = xs_.transaction_start();
    if (!tx.ok()) break;
    const std::uint32_t t = tx.value;
    write("feature-sg", "1", t);
    // GSO packets go whole to frontends that take them, cut into segments for the others.
    write("feature-gso-tcpv4", "1", t);
    write("feature-gso-tcpv6", "1", t);
    write("feature-ipv6-csum-offload", "1", t);
    write("feature-rx-copy", "1", t);
    write("feature-rx-flip", "0", t);
    write("feature-multicast-control", "1", t);
    write("feature-dynamic-multicast-control", "1", t);
    write("feature-split-event-channels", "1", t);
    write("multi-queue-max-queues", std::to_string(opts_.max_queues), t);
    write("feature-ctrl-ring", "1", t);
    const xs::XsError e = xs_.transaction_end(t, true);
    if (e == xs::XsError::None) return;
    if (e != xs::XsError::Again) break;
  }
  spdlog::warn("{}: feature transaction failed", be_);
}

// The vif's own uplink exists from probe on, as Linux's vif netdev does, so the host sees the
// interface before the guest connects.
bool VifDevice::probe() {
  std::string kind = read(be_ + "/uplink");
  const bool asked = !kind.empty();
  if (!asked) kind = opts_.default_vif_uplink;
  if (kind == "tap" && !uplink_) {
    try {
      uplink_ = std::make_unique<EthdevPort>(UplinkSpec{"tap", name_}, switch_);
    } catch (const std::exception& e) {
      // Asked for by the vif's own key: fatal. Only the service's default: the vif still
      // reaches the other guests and the shared uplinks.
      if (asked) {
        fail(std::string("cannot create TAP uplink: ") + e.what());
        return false;
      }
      spdlog::warn("{}: no TAP uplink ({}); guest-to-guest only", be_, e.what());
    }
  } else if (kind != "tap" && kind != "none") {
    fail("unknown uplink " + kind);
    return false;
  }
  publish_features();
  write("hotplug-status", "connected");
  return true;
}

bool VifDevice::step() {
  if (!exists(be_)) return false;
  if (broken_.exchange(false) && vif_) {
    std::string why;
    {
      std::lock_guard lk(broken_mu_);
      why = broken_why_;
    }
    // A protocol violation is fatal for the vif (xenvif_fatal_tx_err / xenbus_dev_fatal).
    fail(why);
    return true;
  }
  if (fe_.empty()) {
    fe_ = read(be_ + "/frontend");
    if (fe_.empty()) return true;
    xs_.watch(fe_ + "/state", "fe");
  }
  const XenbusState be = xs::xenbus_read_state(xs_, be_);
  const XenbusState fe = xs::xenbus_read_state(xs_, fe_);
  using S = XenbusState;

  if (!probed_) {
    probed_ = true;
    if (be == S::Connected || be == S::Initialised || be == S::Reconfiguring ||
        be == S::Reconfigured) {
      spdlog::info("{}: found in state {} after restart, closing for reconnect", be_,
                   xs::xenbus_state_name(be));
      switch_state(S::Closing);
      return true;
    }
    if (be == S::Unknown || be == S::Initialising) {
      if (be == S::Unknown) switch_state(S::Initialising);
      if (probe()) switch_state(S::InitWait);
      return true;
    }
  }

  switch (fe) {
    case S::Initialised:
    case S::Connected:
      // Linux netback connects on the frontend's Connected; accept Initialised too, as some
      // frontends stop there until the backend is Connected.
      if (be == S::InitWait && !vif_) {
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
      if (be == S::Closing) switch_state(S::Closed);
      if (be == S::Closing || be == S::Closed) {
        disconnect();
        switch_state(S::Initialising);
        if (probe()) switch_state(S::InitWait);
      }
      break;
    case S::Unknown:
      disconnect();
      break;
    default:
      break;
  }
  return true;
}

// One queue's keys: flat in the frontend directory for one queue, else under queue-N
// (connect_data_rings). Split event channels are event-channel-tx/-rx.
bool VifDevice::read_queue(unsigned q, unsigned nr_queues, VifQueueConfig* qc) {
  const std::string dir = nr_queues == 1 ? fe_ : fe_ + "/queue-" + std::to_string(q);
  if (!parse_uint(read(dir + "/tx-ring-ref"), &qc->tx_ring_ref) ||
      !parse_uint(read(dir + "/rx-ring-ref"), &qc->rx_ring_ref)) {
    fail("reading " + dir + "/{tx,rx}-ring-ref");
    return false;
  }
  evtchn_port_t tx_remote = 0, rx_remote = 0;
  if (parse_uint(read(dir + "/event-channel-tx"), &tx_remote)) {
    if (!parse_uint(read(dir + "/event-channel-rx"), &rx_remote)) {
      fail("reading " + dir + "/event-channel-rx");
      return false;
    }
  } else if (parse_uint(read(dir + "/event-channel"), &tx_remote)) {
    rx_remote = tx_remote;
  } else {
    fail("reading " + dir + "/event-channel");
    return false;
  }
  evtchn_port_t tx_local = 0, rx_local = 0;
  if (const int rc = ctl_->bind_interdomain(tx_remote, &tx_local); rc != 0) {
    fail("cannot bind event channel " + std::to_string(tx_remote) + ": " + std::to_string(rc));
    return false;
  }
  local_ports_.push_back(tx_local);
  rx_local = tx_local;
  if (rx_remote != tx_remote) {
    if (const int rc = ctl_->bind_interdomain(rx_remote, &rx_local); rc != 0) {
      fail("cannot bind event channel " + std::to_string(rx_remote) + ": " + std::to_string(rc));
      return false;
    }
    local_ports_.push_back(rx_local);
  }
  qc->tx_kick_fd = ctl_->kick_fd(tx_local);
  qc->rx_kick_fd = ctl_->kick_fd(rx_local);
  qc->notifier = notifier_.get();
  qc->tx_port = tx_local;
  qc->rx_port = rx_local;
  return true;
}

// connect_ctrl_ring: the control ring is optional; with ctrl-ring-ref it needs its own
// event channel.
bool VifDevice::read_ctrl_ring(VifConfig* cfg) {
  if (!exists(fe_ + "/ctrl-ring-ref")) return true;
  evtchn_port_t remote = 0, local = 0;
  if (!parse_uint(read(fe_ + "/ctrl-ring-ref"), &cfg->ctrl_ring_ref) ||
      !parse_uint(read(fe_ + "/event-channel-ctrl"), &remote)) {
    fail("reading ctrl-ring-ref / event-channel-ctrl");
    return false;
  }
  if (const int rc = ctl_->bind_interdomain(remote, &local); rc != 0) {
    fail("cannot bind event channel " + std::to_string(remote) + ": " + std::to_string(rc));
    return false;
  }
  local_ports_.push_back(local);
  cfg->ctrl_ring = true;
  cfg->ctrl_kick_fd = ctl_->kick_fd(local);
  cfg->ctrl_port = local;
  return true;
}

bool VifDevice::connect() {
  domid_t fe_domid = 0;
  if (!parse_uint(read(be_ + "/frontend-id"), &fe_domid) || fe_domid != domid_) {
    fail("frontend-id missing or not " + std::to_string(domid_));
    return false;
  }
  MacAddr mac{};
  if (!parse_mac(read(be_ + "/mac"), &mac)) {
    fail("parsing " + be_ + "/mac");
    return false;
  }
  std::uint64_t credit_bytes = 0, credit_usec = 0;
  if (const std::string rate = read(be_ + "/rate"); !rate.empty() &&
                                                    !parse_rate(rate, &credit_bytes, &credit_usec)) {
    fail("bad rate " + rate);
    return false;
  }
  unsigned nr_queues = 1;
  if (exists(fe_ + "/multi-queue-num-queues") &&
      (!parse_uint(read(fe_ + "/multi-queue-num-queues"), &nr_queues) || nr_queues == 0 ||
       nr_queues > opts_.max_queues)) {
    // More queues than offered is fatal (connect() in xen-netback).
    fail("guest requested " + read(fe_ + "/multi-queue-num-queues") + " queues, exceeding the maximum of " +
         std::to_string(opts_.max_queues));
    return false;
  }
  // read_xenbus_vif_flags: copying receive is the only mode; flipping was removed.
  if (read_flag("request-rx-copy") != 1) {
    fail("request-rx-copy is mandatory (receive-side page flipping is not supported)");
    return false;
  }

  const std::string sock = opts_.domain_socket ? opts_.domain_socket(domid_)
                                               : control::domain_socket_path(domid_);
  if (const int rc = control::ControlClient::attach(sock, domid_, &ctl_); rc != 0) {
    fail("cannot attach to domain " + std::to_string(domid_) + " at " + sock + ": " +
         std::to_string(rc));
    return false;
  }
  notifier_ = std::make_unique<ControlNotifier>(*ctl_);

  VifConfig cfg;
  cfg.name = name_;
  cfg.frontend_domid = domid_;
  cfg.memory = &ctl_->memory();
  cfg.grant_table_gfns.assign(ctl_->grant_frame_gfns().begin(), ctl_->grant_frame_gfns().end());
  cfg.mac = mac;
  cfg.rx_notify = read_flag("feature-rx-notify") == 1;
  cfg.sg = read_flag("feature-sg") == 1;
  cfg.csum_offload = read_flag("feature-no-csum-offload") == 0;
  cfg.gso_tcpv4 = read_flag("feature-gso-tcpv4") == 1;
  cfg.gso_tcpv6 = read_flag("feature-gso-tcpv6") == 1;
  cfg.multicast_control =
      read_flag("request-multicast-control") == 1 || read_flag("feature-multicast-control") == 1;
  cfg.credit_bytes = credit_bytes;
  cfg.credit_usec = credit_usec;
  for (unsigned q = 0; q < nr_queues; ++q) {
    VifQueueConfig qc;
    if (!read_queue(q, nr_queues, &qc)) return false;
    cfg.queues.push_back(qc);
  }
  if (!read_ctrl_ring(&cfg)) return false;
  const std::string be_path = be_;
  broken_.store(false);
  cfg.on_fatal = [this, be_path](unsigned q, const std::string& why) {
    spdlog::error("{}: queue {}: {}; vif disabled", be_path, q, why);
    {
      std::lock_guard lk(broken_mu_);
      broken_why_ = "queue " + std::to_string(q) + ": " + why;
    }
    broken_.store(true);
    fatal_pending_.store(true);
  };
  try {
    vif_ = std::make_unique<Vif>(std::move(cfg), switch_);
  } catch (const std::exception& e) {
    fail(std::string("cannot start the datapath: ") + e.what());
    return false;
  }
  vif_->start();
  spdlog::info("{}: connected ({} queue(s), mac {}, sg {}, rx-notify {}, ctrl ring {}, rate {})", be_,
               nr_queues, mac_string(mac), vif_->config().sg, vif_->config().rx_notify,
               vif_->config().ctrl_ring,
               credit_bytes ? std::to_string(credit_bytes) + "B/" + std::to_string(credit_usec) + "us"
                            : "unlimited");
  return true;
}

void VifDevice::disconnect() {
  if (vif_) {
    const VifQueueStats s = vif_->total_stats();
    vif_.reset();  // stops the threads, leaves the switch, unmaps the rings
    spdlog::info("{}: disconnected (tx {} pkts {} B, rx {} pkts {} B, tx errors {})", be_,
                 s.tx_packets, s.tx_bytes, s.rx_packets, s.rx_bytes, s.tx_error_total());
  }
  if (ctl_) {
    for (evtchn_port_t p : local_ports_) ctl_->unbind(p);
    ctl_->detach();
  }
  local_ports_.clear();
  notifier_.reset();
  ctl_.reset();
}

void VifDevice::append_stats(std::ostream& os) const {
  if (!vif_) {
    os << name_ << " state=disconnected\n";
    return;
  }
  const auto qs = vif_->stats();
  for (std::size_t q = 0; q < qs.size(); ++q) {
    const VifQueueStats& s = qs[q];
    if (q == 0 && vif_->config().ctrl_ring) os << name_ << " ctrl_requests=" << vif_->ctrl_requests() << "\n";
    os << name_ << " queue=" << q << " tx_packets=" << s.tx_packets << " tx_bytes=" << s.tx_bytes
       << " rx_packets=" << s.rx_packets << " rx_bytes=" << s.rx_bytes
       << " notifications=" << s.notifications << " credit_waits=" << s.credit_waits
       << " grant_errors=" << s.grant_errors << " ring_errors=" << s.ring_errors;
    for (std::size_t e = 1; e < kTxErrorCount; ++e)
      if (s.tx_errors[e]) os << " tx_error." << tx_error_name(static_cast<TxError>(e)) << "=" << s.tx_errors[e];
    for (std::size_t d = 0; d < kDropCount; ++d)
      if (s.drops[d]) os << " drop." << drop_name(static_cast<Drop>(d)) << "=" << s.drops[d];
    os << "\n";
  }
}

// ---- the service ----

NetbackService::NetbackService(ServiceOptions options) : opts_(std::move(options)) {
  dpdk_init(opts_.dpdk);
  switch_ = std::make_unique<Switch>();
  for (const std::string& u : opts_.uplinks) {
    UplinkSpec spec;
    if (!parse_uplink(u, &spec)) throw std::runtime_error("bad uplink " + u);
    if (spec.kind == "none") continue;
    uplinks_.push_back(std::make_unique<EthdevPort>(spec, *switch_));
    spdlog::info("uplink {} attached", u);
  }
  xs_ = xs::Client::connect(opts_.xenstore_socket);
  if (!xs_) throw std::runtime_error("cannot connect to xenstore at " + opts_.xenstore_socket);
  // A restarted pvio-xenstored comes back with the same tree: ride through it (reconnect,
  // watch again, rescan on the watch's first event) and the guests keep their devices.
  xs_->enable_reconnect({.give_up_ms = opts_.xenstore_give_up_ms});
  if (xs_->watch(kVifRoot, "vif") != xs::XsError::None)
    throw std::runtime_error("cannot watch " + std::string(kVifRoot));
}

NetbackService::~NetbackService() {
  vifs_.clear();
  uplinks_.clear();
}

void NetbackService::rescan() {
  auto domids = xs_->directory(kVifRoot);
  if (domids.ok()) {
    for (const std::string& d : domids.value) {
      domid_t domid = 0;
      if (!parse_uint(d, &domid)) continue;
      auto devs = xs_->directory(std::string(kVifRoot) + "/" + d);
      if (!devs.ok()) continue;
      for (const std::string& v : devs.value) {
        std::uint32_t devid = 0;
        if (!parse_uint(v, &devid)) continue;
        auto key = std::make_pair(domid, devid);
        if (vifs_.count(key) == 0)
          vifs_.emplace(key, std::make_unique<VifDevice>(*xs_, opts_, *switch_, fatal_pending_,
                                                         domid, devid));
      }
    }
  }
  fatal_pending_.store(false);
  std::size_t connected = 0;
  for (auto it = vifs_.begin(); it != vifs_.end();) {
    if (!it->second->step()) {
      it = vifs_.erase(it);
      continue;
    }
    connected += it->second->connected();
    ++it;
  }
  connected_.store(connected, std::memory_order_relaxed);
}

std::string NetbackService::stats_text() const {
  std::ostringstream os;
  for (const auto& [key, dev] : vifs_) dev->append_stats(os);
  for (const auto& u : uplinks_) {
    const UplinkStats s = u->stats();
    os << "uplink " << u->name() << " rx_packets=" << s.rx_packets << " rx_bytes=" << s.rx_bytes
       << " tx_packets=" << s.tx_packets << " tx_bytes=" << s.tx_bytes;
    for (std::size_t d = 0; d < kDropCount; ++d)
      if (s.drops[d]) os << " drop." << drop_name(static_cast<Drop>(d)) << "=" << s.drops[d];
    os << "\n";
  }
  return os.str();
}

// Written to a temporary file and renamed, so a reader never sees half a file.
void NetbackService::write_stats() {
  if (opts_.stats_file.empty()) return;
  const std::string text = stats_text();
  const std::string tmp = opts_.stats_file + ".tmp";
  if (FILE* f = std::fopen(tmp.c_str(), "w")) {
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    std::rename(tmp.c_str(), opts_.stats_file.c_str());
  }
}

int NetbackService::run() {
  rescan();
  auto last_stats = std::chrono::steady_clock::now();
  auto last_log = last_stats;
  while (!stop_.load(std::memory_order_relaxed)) {
    auto ev = xs_->read_watch(200);
    if (!ev && !xs_->connected()) {
      // No xenstored for the whole reconnect budget: without it no device can change state.
      // Exit with an error rather than spin; the supervisor (systemd, `pvio up`) starts us
      // again and the restarted service reattaches to every device it finds.
      spdlog::error("pvio-netback: no xenstored to reconnect to; exiting");
      return 1;
    }
    if (ev) {
      while (xs_->queued_watch_events() > 0) xs_->read_watch(0);
      rescan();
    } else if (fatal_pending_.load()) {
      rescan();  // a datapath's fatal error has no watch event of its own
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_stats >= std::chrono::seconds(1)) {
      last_stats = now;
      write_stats();
    }
    if (now - last_log >= std::chrono::seconds(60) && connected_vifs() > 0) {
      last_log = now;
      spdlog::info("stats:\n{}", stats_text());
    }
  }
  write_stats();
  return 0;
}

}  // namespace pvio::netback
