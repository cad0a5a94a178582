// pvio-netback's control plane against the real pieces, in one process: pvio-xenstored's server
// on a temp socket, a user-mode domain serving the domain control protocol, and the
// NetbackService. The test plays the toolstack (creates two vifs of one domain) and the
// frontends (grants tx/rx rings, allocates event channels, writes their keys, switches states),
// sends a packet from one vif to the other through the service's switch, and checks the fatal
// path, bad keys and the reconnect after a restart.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "netback_guest.h"
#include "pvio/domain/domain.h"
#include "pvio/netback/xenbus.h"
#include "pvio/xenstore/client.h"
#include "pvio/xenstore/daemon.h"
#include "pvio/xenstore/server.h"
#include "pvio/xenstore/xenbus_client.h"

namespace pvio::netback::test {
namespace {

using xs::XenbusState;
constexpr domid_t kDomid = 7;

std::string make_temp_dir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "pvio-netxb-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp");
  return tmpl;
}

template <typename Pred>
bool wait_for(Pred p, int ms = 10000) {
  for (int i = 0; i < ms / 5; ++i) {
    if (p()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return p();
}

// One queue of a frontend vif in the user-mode domain: tx and rx rings, one event channel or
// a split pair (both wake the same eventfd here).
struct FrontQueue {
  netif::TxFrontRing tx;
  netif::RxFrontRing rx;
  evtchn_port_t tx_port = 0, rx_port = 0;
  int event_fd = -1;
  std::uint64_t data_gfn = 0;
  grant_ref_t data_ref = 0;
  std::vector<std::uint64_t> rx_gfns;
};

struct Front {
  std::vector<std::unique_ptr<FrontQueue>> queues;
};

class XenbusTest : public ::testing::Test {
 protected:
  XenbusTest() : dir_(make_temp_dir()) {
    stop_fd_ = evtchn::eventfd_create(false);
    daemon_ = std::make_unique<xs::Daemon>(server_, dir_ + "/xs.sock");
    xs_thread_ = std::thread([this] { daemon_->run(stop_fd_); });
    domain::DomainConfig dc;
    dc.domid = kDomid;
    dc.socket_path = dir_ + "/domain-" + std::to_string(kDomid) + ".sock";  // PVIO_RUN_DIR rule
    if (domain::Domain::create(dc, &dom_) != 0) throw std::runtime_error("domain");
    dom_thread_ = std::thread([this] { dom_->run(); });
    xs_ = xs::Client::connect(dir_ + "/xs.sock");
    if (!xs_) throw std::runtime_error("xenstore client");
  }
  ~XenbusTest() override {
    stop_service();
    dom_->stop();
    dom_thread_.join();
    stop_xenstored();
    dom_.reset();
    ::close(stop_fd_);
    for (auto& f : fronts_)
      for (auto& q : f.queues) ::close(q->event_fd);
    if (ctrl_fd_ >= 0) ::close(ctrl_fd_);
    std::filesystem::remove_all(dir_);
  }

  // Stops the xenstore daemon and closes every connection to it, as a killed xenstored would.
  void stop_xenstored() {
    if (!xs_thread_.joinable()) return;
    evtchn::eventfd_signal(stop_fd_);
    xs_thread_.join();
    daemon_.reset();
  }
  // A new daemon on the same socket over the same store: what a restarted pvio-xenstored
  // looks like to its clients once it has read its journal back.
  void restart_xenstored() {
    stop_xenstored();
    std::uint64_t v = 0;  // consume the stop signal, or the new loop would end at once
    [[maybe_unused]] ssize_t n = ::read(stop_fd_, &v, sizeof v);
    daemon_ = std::make_unique<xs::Daemon>(server_, dir_ + "/xs.sock");
    xs_thread_ = std::thread([this] { daemon_->run(stop_fd_); });
  }

  void start_service(unsigned max_queues = 4) {
    ServiceOptions o;
    o.xenstore_socket = dir_ + "/xs.sock";
    o.xenstore_give_up_ms = give_up_ms_;
    o.domain_socket = [this](domid_t d) { return dir_ + "/domain-" + std::to_string(d) + ".sock"; };
    o.max_queues = max_queues;
    o.stats_file = dir_ + "/netback.stats";
    service_ = std::make_unique<NetbackService>(o);
    service_rc_ = -1;
    service_thread_ = std::thread([this] { service_rc_ = service_->run(); });
  }
  void stop_service() {
    if (!service_) return;
    service_->stop();
    service_thread_.join();
    service_.reset();
  }

  std::string be(unsigned dev) const {
    return "/local/domain/0/backend/vif/" + std::to_string(kDomid) + "/" + std::to_string(dev);
  }
  std::string fe(unsigned dev) const {
    return "/local/domain/" + std::to_string(kDomid) + "/device/vif/" + std::to_string(dev);
  }
  XenbusState be_state(unsigned dev) { return xs::xenbus_read_state(*xs_, be(dev)); }
  std::string read(const std::string& p) { return xs_->read(p).value; }
  void fe_state(unsigned dev, XenbusState s) {
    ASSERT_EQ(xs_->write(fe(dev) + "/state", std::to_string(static_cast<int>(s))), xs::XsError::None);
  }
  static MacAddr mac(unsigned dev) { return {0x00, 0x16, 0x3e, 0x07, 0x00, static_cast<std::uint8_t>(dev)}; }

  void create_vif(unsigned dev) {
    xs_->write(be(dev) + "/frontend", fe(dev));
    xs_->write(be(dev) + "/frontend-id", std::to_string(kDomid));
    xs_->write(be(dev) + "/mac", mac_string(mac(dev)));
    xs_->write(be(dev) + "/uplink", "none");
    xs_->write(fe(dev) + "/backend", be(dev));
    xs_->write(fe(dev) + "/backend-id", "0");
    xs_->write(fe(dev) + "/mac", mac_string(mac(dev)));
    fe_state(dev, XenbusState::Initialising);
  }

  // The frontend's part: fresh rings and event channels per queue, its keys, 64 rx buffers per
  // queue, Connected. One queue uses the flat keys, more use queue-N/ (netif.h).
  void frontend_connect(unsigned dev, bool switch_to_connected = true, unsigned nr_queues = 1,
                        bool split = false) {
    Front& f = fronts_[dev];
    for (auto& q : f.queues) ::close(q->event_fd);
    f.queues.clear();
    if (nr_queues > 1) xs_->write(fe(dev) + "/multi-queue-num-queues", std::to_string(nr_queues));
    for (unsigned qi = 0; qi < nr_queues; ++qi) {
      auto q = std::make_unique<FrontQueue>();
      const std::string dir = nr_queues == 1 ? fe(dev) : fe(dev) + "/queue-" + std::to_string(qi);
      std::uint64_t g0 = 0;
      ASSERT_EQ(dom_->alloc_pages(3, &g0), 0);  // three consecutive frames
      q->tx.init(dom_->page(g0), 4096);
      q->rx.init(dom_->page(g0 + 1), 4096);
      q->data_gfn = g0 + 2;
      q->data_ref = gnt().grant_access(0, g0 + 2, true);
      q->event_fd = evtchn::eventfd_create(true);
      const int efd = q->event_fd;
      auto handler = [efd](evtchn_port_t) { evtchn::eventfd_signal(efd); };
      const auto tx_port = dom_->alloc_unbound(0, handler);
      ASSERT_EQ(tx_port.rc, 0);
      q->tx_port = q->rx_port = tx_port.port;
      if (split) {
        const auto rx_port = dom_->alloc_unbound(0, handler);
        ASSERT_EQ(rx_port.rc, 0);
        q->rx_port = rx_port.port;
        xs_->write(dir + "/event-channel-tx", std::to_string(q->tx_port));
        xs_->write(dir + "/event-channel-rx", std::to_string(q->rx_port));
      } else {
        xs_->write(dir + "/event-channel", std::to_string(q->tx_port));
      }
      xs_->write(dir + "/tx-ring-ref", std::to_string(gnt().grant_access(0, g0, false)));
      xs_->write(dir + "/rx-ring-ref", std::to_string(gnt().grant_access(0, g0 + 1, false)));
      for (unsigned i = 0; i < 64; ++i) {
        std::uint64_t rg = 0;
        ASSERT_EQ(dom_->alloc_pages(1, &rg), 0);
        q->rx_gfns.push_back(rg);
        netif::netif_rx_request r{};
        r.id = static_cast<std::uint16_t>(i);
        r.gref = gnt().grant_access(0, rg, false);
        q->rx.produce_request(r);
      }
      q->rx.push_requests();
      f.queues.push_back(std::move(q));
    }
    xs_->write(fe(dev) + "/request-rx-copy", "1");
    xs_->write(fe(dev) + "/feature-rx-notify", "1");
    xs_->write(fe(dev) + "/feature-sg", "1");
    if (switch_to_connected) fe_state(dev, XenbusState::Connected);
  }

  void send(unsigned dev, const std::vector<std::uint8_t>& frame, unsigned qi = 0) {
    FrontQueue& q = *fronts_[dev].queues[qi];
    std::memcpy(dom_->page(q.data_gfn), frame.data(), frame.size());
    netif::netif_tx_request r{};
    r.gref = q.data_ref;
    r.id = 1;
    r.size = static_cast<std::uint16_t>(frame.size());
    q.tx.produce_request(r);
    if (q.tx.push_requests()) dom_->send(q.tx_port);
  }

  // The next packet on any of the vif's queues (and which queue it came on).
  std::vector<std::uint8_t> receive(unsigned dev, unsigned* on_queue = nullptr) {
    Front& f = fronts_[dev];
    for (int i = 0; i < 500; ++i) {
      for (unsigned qi = 0; qi < f.queues.size(); ++qi) {
        FrontQueue& q = *f.queues[qi];
        const ring::RingCheck c = q.rx.final_check_for_responses();
        if (c.count == 0) continue;
        netif::netif_rx_response r;
        q.rx.consume_response(r);
        if (on_queue != nullptr) *on_queue = qi;
        if (r.status <= 0) return {};
        const std::uint8_t* p = dom_->page(q.rx_gfns[r.id]) + r.offset;
        return {p, p + r.status};
      }
      for (auto& q : f.queues) {
        pollfd pfd{q->event_fd, POLLIN, 0};
        ::poll(&pfd, 1, 20 / static_cast<int>(f.queues.size()));
        std::uint64_t v;
        [[maybe_unused]] const ssize_t n = ::read(q->event_fd, &v, sizeof v);
      }
    }
    return {};
  }

  gnttab::GrantTable& gnt() { return dom_->grant_table(); }

  // The frontend's control ring for `dev`: a granted ring page, its own event channel, keys.
  void ctrl_ring_setup(unsigned dev) {
    std::uint64_t g = 0;
    ASSERT_EQ(dom_->alloc_pages(2, &g), 0);
    ctrl_.init(dom_->page(g), 4096);
    ctrl_page_gfn_ = g + 1;
    ctrl_page_ref_ = gnt().grant_access(0, g + 1, true);
    ctrl_fd_ = evtchn::eventfd_create(true);
    const int efd = ctrl_fd_;
    const auto port = dom_->alloc_unbound(0, [efd](evtchn_port_t) { evtchn::eventfd_signal(efd); });
    ASSERT_EQ(port.rc, 0);
    ctrl_port_ = port.port;
    xs_->write(fe(dev) + "/ctrl-ring-ref", std::to_string(gnt().grant_access(0, g, false)));
    xs_->write(fe(dev) + "/event-channel-ctrl", std::to_string(ctrl_port_));
  }
  // One control request; the page behind ctrl_page_ref_ holds `payload` first.
  netif::xen_netif_ctrl_response ctrl(std::uint16_t type, std::uint32_t d0 = 0, std::uint32_t d1 = 0,
                                      std::uint32_t d2 = 0, const void* payload = nullptr,
                                      std::size_t payload_len = 0) {
    if (payload != nullptr) std::memcpy(dom_->page(ctrl_page_gfn_), payload, payload_len);
    netif::xen_netif_ctrl_request r{};
    r.id = ++ctrl_id_;
    r.type = type;
    r.data[0] = d0;
    r.data[1] = d1;
    r.data[2] = d2;
    ctrl_.produce_request(r);
    if (ctrl_.push_requests()) dom_->send(ctrl_port_);
    for (int i = 0; i < 500; ++i) {
      const ring::RingCheck c = ctrl_.final_check_for_responses();
      if (c.count != 0) {
        netif::xen_netif_ctrl_response rsp;
        ctrl_.consume_response(rsp);
        return rsp;
      }
      pollfd pfd{ctrl_fd_, POLLIN, 0};
      ::poll(&pfd, 1, 20);
      std::uint64_t v;
      [[maybe_unused]] const ssize_t n = ::read(ctrl_fd_, &v, sizeof v);
    }
    return netif::xen_netif_ctrl_response{0, 0, 0xFFFFFFFFu, 0};
  }

  std::string dir_;
  xs::Server server_;
  std::unique_ptr<xs::Daemon> daemon_;
  int stop_fd_ = -1;
  std::thread xs_thread_;
  std::unique_ptr<domain::Domain> dom_;
  std::thread dom_thread_;
  std::unique_ptr<xs::Client> xs_;
  std::unique_ptr<NetbackService> service_;
  std::thread service_thread_;
  std::atomic<int> service_rc_{-1};
  int give_up_ms_ = 30000;
  Front fronts_[2];
  netif::CtrlFrontRing ctrl_;
  std::uint64_t ctrl_page_gfn_ = 0;
  grant_ref_t ctrl_page_ref_ = 0;
  int ctrl_fd_ = -1;
  evtchn_port_t ctrl_port_ = 0;
  std::uint16_t ctrl_id_ = 0;
};

TEST_F(XenbusTest, HandshakeTrafficFatalErrorAndReconnectAfterRestart) {
  dpdk_init();
  start_service();
  create_vif(0);
  create_vif(1);
  for (unsigned d : {0u, 1u})
    ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::InitWait; }))
        << xs::xenbus_state_name(be_state(d));
  // netback_probe's features, written in one transaction.
  EXPECT_EQ(read(be(0) + "/feature-sg"), "1");
  EXPECT_EQ(read(be(0) + "/feature-rx-copy"), "1");
  EXPECT_EQ(read(be(0) + "/feature-rx-flip"), "0");
  EXPECT_EQ(read(be(0) + "/feature-split-event-channels"), "1");
  EXPECT_EQ(read(be(0) + "/feature-multicast-control"), "1");
  EXPECT_EQ(read(be(0) + "/feature-gso-tcpv4"), "1");
  EXPECT_EQ(read(be(0) + "/feature-gso-tcpv6"), "1");
  EXPECT_EQ(read(be(0) + "/feature-ctrl-ring"), "1");
  EXPECT_EQ(read(be(0) + "/multi-queue-max-queues"), "4");
  EXPECT_EQ(read(be(0) + "/hotplug-status"), "connected");

  frontend_connect(0);
  frontend_connect(1);
  for (unsigned d : {0u, 1u})
    ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::Connected; }))
        << xs::xenbus_state_name(be_state(d)) << " error: " << read(be(d) + "/error");
  EXPECT_EQ(service_->connected_vifs(), 2u);

  const auto frame = make_frame({0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac(0), 200, 3);
  send(0, frame);
  EXPECT_EQ(receive(1), frame);
  // The stats file shows it (rewritten every second).
  ASSERT_TRUE(wait_for([&] {
    std::ifstream in(dir_ + "/netback.stats");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str().find("vif7.1 queue=0 tx_packets=0 tx_bytes=0 rx_packets=1 rx_bytes=200") !=
           std::string::npos;
  }));

  // A protocol violation on vif 0: `error` node and Closing for it, vif 1 unaffected.
  auto* hdr = fronts_[0].queues[0]->tx.sring();
  std::atomic_ref<ring::RingIdx>(hdr->req_prod).store(hdr->rsp_prod + 1000, std::memory_order_release);
  dom_->send(fronts_[0].queues[0]->tx_port);
  ASSERT_TRUE(wait_for([&] { return be_state(0) == XenbusState::Closing; }))
      << xs::xenbus_state_name(be_state(0));
  EXPECT_NE(read(be(0) + "/error").find("producer index"), std::string::npos) << read(be(0) + "/error");
  EXPECT_EQ(be_state(1), XenbusState::Connected);
  EXPECT_TRUE(wait_for([&] { return service_->connected_vifs() == 1; }));

  // Restart: the new service sends the Connected vif through Closing; the frontend reconnects.
  stop_service();
  start_service();
  ASSERT_TRUE(wait_for([&] { return be_state(1) == XenbusState::Closing; }))
      << xs::xenbus_state_name(be_state(1));
  for (unsigned d : {0u, 1u}) {
    fe_state(d, XenbusState::Closing);
    fe_state(d, XenbusState::Closed);
    ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::Closed; }))
        << xs::xenbus_state_name(be_state(d));
    fe_state(d, XenbusState::Initialising);
    ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::InitWait; }))
        << xs::xenbus_state_name(be_state(d));
    frontend_connect(d);
  }
  for (unsigned d : {0u, 1u})
    ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::Connected; }))
        << xs::xenbus_state_name(be_state(d)) << " error: " << read(be(d) + "/error");
  const auto back = make_frame(mac(0), mac(1), 300, 4);
  send(1, back);  // vif 0's MAC is not learned yet after the restart: flooded to vif 0
  EXPECT_EQ(receive(0), back);
}

// Two queues with split event channels on one vif, one flat queue on the other: traffic both
// ways, spread over the queues by flow.
TEST_F(XenbusTest, MultiQueueWithSplitEventChannels) {
  start_service();
  create_vif(0);
  create_vif(1);
  for (unsigned d : {0u, 1u}) ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::InitWait; }));
  frontend_connect(0);
  frontend_connect(1, true, 2, /*split=*/true);
  for (unsigned d : {0u, 1u})
    ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::Connected; }))
        << xs::xenbus_state_name(be_state(d)) << " error: " << read(be(d) + "/error");
  // From each of vif 1's queues to vif 0.
  for (unsigned qi = 0; qi < 2; ++qi) {
    const auto f = make_frame(mac(0), mac(1), 100 + qi, static_cast<std::uint8_t>(qi));
    send(1, f, qi);
    EXPECT_EQ(receive(0), f) << "from queue " << qi;
  }
  // To vif 1: frames of different flows land on both of its queues, each intact.
  bool seen[2] = {false, false};
  for (unsigned k = 0; k < 32 && !(seen[0] && seen[1]); ++k) {
    auto f = make_frame(mac(1), mac(0), 60, static_cast<std::uint8_t>(k));
    f[12] = 0x08;  // IPv4-like header bytes: the flow hash reads addresses and ports
    f[13] = 0x00;
    f[26] = static_cast<std::uint8_t>(k);
    f[37] = static_cast<std::uint8_t>(k * 7);
    send(0, f);
    unsigned q = 9;
    EXPECT_EQ(receive(1, &q), f);
    ASSERT_LT(q, 2u);
    seen[q] = true;
  }
  EXPECT_TRUE(seen[0] && seen[1]);
}

// The service as its own process (what `pvio up` starts): killed with SIGKILL mid-traffic and
// started again, it sends every vif through Closing and the frontends reconnect.
TEST_F(XenbusTest, ProcessKilledAndRestartedVifsReconnect) {
  const char* bin = std::getenv("PVIO_NETBACK");
  if (bin == nullptr || *bin == '\0') GTEST_SKIP() << "PVIO_NETBACK not set (run through meson test)";
  auto spawn = [&] {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::setenv("PVIO_RUN_DIR", dir_.c_str(), 1);
      const std::string sock = dir_ + "/xs.sock";
      ::execl(bin, bin, "--xenstore", sock.c_str(), "--vif-uplink", "none", "--log-level", "warn",
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    return pid;
  };
  pid_t pid = spawn();
  ASSERT_GT(pid, 0);
  create_vif(0);
  create_vif(1);
  for (unsigned d : {0u, 1u}) ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::InitWait; }));
  frontend_connect(0);
  frontend_connect(1);
  for (unsigned d : {0u, 1u})
    ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::Connected; }))
        << xs::xenbus_state_name(be_state(d)) << " error: " << read(be(d) + "/error");
  const auto f1 = make_frame(mac(1), mac(0), 128, 1);
  send(0, f1);
  EXPECT_EQ(receive(1), f1);

  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  pid = spawn();
  for (unsigned d : {0u, 1u}) {
    ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::Closing; }))
        << xs::xenbus_state_name(be_state(d));
    fe_state(d, XenbusState::Closing);
    fe_state(d, XenbusState::Closed);
    ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::Closed; }));
    fe_state(d, XenbusState::Initialising);
    ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::InitWait; }));
    frontend_connect(d);
  }
  for (unsigned d : {0u, 1u})
    ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::Connected; }))
        << xs::xenbus_state_name(be_state(d)) << " error: " << read(be(d) + "/error");
  const auto f2 = make_frame(mac(0), mac(1), 256, 2);
  send(1, f2);
  EXPECT_EQ(receive(0), f2);
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// The control ring: hash requests answered per netif.h, and the Toeplitz key and mapping table
// steering the packets for a two-queue vif.
TEST_F(XenbusTest, ControlRingHashSteersPacketsToQueues) {
  start_service();
  create_vif(0);
  create_vif(1);
  for (unsigned d : {0u, 1u}) ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::InitWait; }));
  frontend_connect(0);
  ctrl_ring_setup(1);
  frontend_connect(1, true, 2);
  for (unsigned d : {0u, 1u})
    ASSERT_TRUE(wait_for([&] { return be_state(d) == XenbusState::Connected; }))
        << xs::xenbus_state_name(be_state(d)) << " error: " << read(be(d) + "/error");
  using namespace netif;
  auto rsp = ctrl(kCtrlTypeGetHashMappingSize);
  EXPECT_EQ(rsp.status, kCtrlStatusSuccess);
  EXPECT_EQ(rsp.data, 128u);
  EXPECT_EQ(rsp.type, kCtrlTypeGetHashMappingSize);
  EXPECT_EQ(ctrl(kCtrlTypeSetHashFlags, kCtrlHashTypeIpv4).status, kCtrlStatusInvalidParameter)
      << "flags before an algorithm";
  EXPECT_EQ(ctrl(kCtrlTypeSetHashAlgorithm, 7).status, kCtrlStatusInvalidParameter);
  EXPECT_EQ(ctrl(kCtrlTypeSetHashAlgorithm, kCtrlHashAlgorithmToeplitz).status, kCtrlStatusSuccess);
  EXPECT_EQ(ctrl(kCtrlTypeSetHashFlags, 1u << 7).status, kCtrlStatusInvalidParameter);
  EXPECT_EQ(ctrl(kCtrlTypeSetHashFlags, kCtrlHashTypeIpv4 | kCtrlHashTypeIpv4Tcp).status,
            kCtrlStatusSuccess);
  rsp = ctrl(kCtrlTypeGetHashFlags);
  EXPECT_EQ(rsp.data, kCtrlHashTypeIpv4 | kCtrlHashTypeIpv4Tcp | kCtrlHashTypeIpv6 | kCtrlHashTypeIpv6Tcp);
  std::uint8_t key[40];
  for (unsigned i = 0; i < 40; ++i) key[i] = static_cast<std::uint8_t>(i * 37 + 11);
  EXPECT_EQ(ctrl(kCtrlTypeSetHashKey, ctrl_page_ref_, 40, 0, key, 40).status, kCtrlStatusSuccess);
  EXPECT_EQ(ctrl(kCtrlTypeSetHashKey, ctrl_page_ref_, 41).status, kCtrlStatusBufferOverflow);
  EXPECT_EQ(ctrl(kCtrlTypeSetHashKey, 0x7FFF0, 8).status, kCtrlStatusInvalidParameter) << "bad gref";
  EXPECT_EQ(ctrl(kCtrlTypeSetHashMappingSize, 129).status, kCtrlStatusInvalidParameter);
  EXPECT_EQ(ctrl(kCtrlTypeSetHashMappingSize, 4).status, kCtrlStatusSuccess);
  const std::uint32_t to_q1[4] = {1, 1, 1, 1}, to_q0[4] = {0, 0, 0, 0}, bad[4] = {0, 1, 2, 0};
  EXPECT_EQ(ctrl(kCtrlTypeSetHashMapping, ctrl_page_ref_, 4, 0, bad, sizeof bad).status,
            kCtrlStatusInvalidParameter) << "queue 2 of 2";
  EXPECT_EQ(ctrl(kCtrlTypeSetHashMapping, ctrl_page_ref_, 4, 2, to_q1, sizeof to_q1).status,
            kCtrlStatusInvalidParameter) << "past the table";
  EXPECT_EQ(ctrl(kCtrlTypeSetHashMapping, ctrl_page_ref_, 4, 0, to_q1, sizeof to_q1).status,
            kCtrlStatusSuccess);
  EXPECT_EQ(ctrl(kCtrlTypeAddGrefMapping).status, kCtrlStatusNotSupported);
  EXPECT_EQ(ctrl(99).status, kCtrlStatusNotSupported);

  auto flow = [&](unsigned k) {
    auto f = make_frame(mac(1), mac(0), 80, static_cast<std::uint8_t>(k));
    f[12] = 0x08;
    f[13] = 0x00;
    f[14] = 0x45;
    f[14 + 9] = 6;  // TCP
    f[26] = static_cast<std::uint8_t>(k);
    f[35] = static_cast<std::uint8_t>(k * 3);
    f[20] = f[21] = 0;  // not a fragment
    return f;
  };
  for (unsigned k = 0; k < 8; ++k) {
    const auto f = flow(k);
    send(0, f);
    unsigned q = 9;
    EXPECT_EQ(receive(1, &q), f);
    EXPECT_EQ(q, 1u) << "flow " << k;
  }
  EXPECT_EQ(ctrl(kCtrlTypeSetHashMapping, ctrl_page_ref_, 4, 0, to_q0, sizeof to_q0).status,
            kCtrlStatusSuccess);
  for (unsigned k = 0; k < 8; ++k) {
    const auto f = flow(k);
    send(0, f);
    unsigned q = 9;
    EXPECT_EQ(receive(1, &q), f);
    EXPECT_EQ(q, 0u) << "flow " << k;
  }
  // An impossible producer index on the control ring is a protocol violation for that vif.
  auto* hdr = ctrl_.sring();
  std::atomic_ref<ring::RingIdx>(hdr->req_prod).store(hdr->rsp_prod + 500, std::memory_order_release);
  dom_->send(ctrl_port_);
  ASSERT_TRUE(wait_for([&] { return be_state(1) == XenbusState::Closing; }))
      << xs::xenbus_state_name(be_state(1));
  EXPECT_NE(read(be(1) + "/error").find("ctrl ring"), std::string::npos) << read(be(1) + "/error");
  EXPECT_EQ(be_state(0), XenbusState::Connected);
}

// A restarted xenstored (same store) is ridden through: the service reconnects, watches
// again and connects the vif on the frontend's next state change.
TEST_F(XenbusTest, XenstoredRestartIsRiddenThrough) {
  start_service();
  create_vif(0);
  ASSERT_TRUE(wait_for([&] { return be_state(0) == XenbusState::InitWait; }));
  xs_.reset();
  restart_xenstored();
  xs_ = xs::Client::connect(dir_ + "/xs.sock");
  ASSERT_TRUE(xs_);
  frontend_connect(0);
  ASSERT_TRUE(wait_for([&] { return be_state(0) == XenbusState::Connected; }))
      << xs::xenbus_state_name(be_state(0)) << " error: " << read(be(0) + "/error");
  EXPECT_EQ(service_rc_.load(), -1);  // still running
  EXPECT_EQ(service_->connected_vifs(), 1u);
}

// xenstored gone for longer than the reconnect budget ends the service with an error instead
// of a busy loop on a dead socket.
TEST_F(XenbusTest, LosingXenstoredForGoodEndsTheServiceWithAnError) {
  give_up_ms_ = 300;
  start_service();
  create_vif(0);
  ASSERT_TRUE(wait_for([&] { return be_state(0) == XenbusState::InitWait; }));
  xs_.reset();
  stop_xenstored();
  EXPECT_TRUE(wait_for([&] { return service_rc_.load() != -1; }))
      << "pvio-netback is still running without xenstored";
  EXPECT_EQ(service_rc_.load(), 1);
}

TEST_F(XenbusTest, TooManyQueuesIsFatal) {
  start_service(2);
  create_vif(0);
  ASSERT_TRUE(wait_for([&] { return be_state(0) == XenbusState::InitWait; }));
  frontend_connect(0, true, 3);
  ASSERT_TRUE(wait_for([&] { return be_state(0) == XenbusState::Closing; }))
      << xs::xenbus_state_name(be_state(0));
  EXPECT_NE(read(be(0) + "/error").find("exceeding the maximum"), std::string::npos);
  EXPECT_EQ(service_->connected_vifs(), 0u);
}

TEST_F(XenbusTest, RxCopyIsRequiredAndRingRefsMustMap) {
  start_service();
  create_vif(0);
  create_vif(1);
  ASSERT_TRUE(wait_for([&] { return be_state(0) == XenbusState::InitWait; }));
  ASSERT_TRUE(wait_for([&] { return be_state(1) == XenbusState::InitWait; }));
  frontend_connect(0, false);
  xs_->write(fe(0) + "/request-rx-copy", "0");
  fe_state(0, XenbusState::Connected);
  frontend_connect(1, false);
  xs_->write(fe(1) + "/tx-ring-ref", "123456");  // not a grant of this domain
  fe_state(1, XenbusState::Connected);
  ASSERT_TRUE(wait_for([&] { return be_state(0) == XenbusState::Closing; }))
      << xs::xenbus_state_name(be_state(0));
  ASSERT_TRUE(wait_for([&] { return be_state(1) == XenbusState::Closing; }))
      << xs::xenbus_state_name(be_state(1));
  EXPECT_NE(read(be(0) + "/error").find("request-rx-copy"), std::string::npos);
  EXPECT_NE(read(be(1) + "/error").find("tx-ring-ref"), std::string::npos) << read(be(1) + "/error");
}

}  // namespace
}  // namespace pvio::netback::test
