// pvio-blkback's control plane against the real pieces, in one process: pvio-xenstored's
// server on a temp socket, a user-mode domain serving the domain control protocol, and the
// BlkbackService. The test plays the toolstack (creates the vbd nodes) and the frontend
// (grants a ring, allocates an event channel, writes its keys, switches states), then does I/O
// through the connected device, closes it, and checks that a restarted service sends a device
// it finds Connected through Closing so the frontend reconnects.
#include <gtest/gtest.h>
#include <poll.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

#include "engine_test.h"
#include "pvio/blkback/xenbus.h"
#include "pvio/domain/domain.h"
#include "pvio/event_channel/notifier.h"
#include "pvio/grant_table/grant_table.h"
#include "pvio/ring/io_rings.h"
#include "pvio/test/temp_dir.h"
#include "pvio/test/wait_until.h"
#include "pvio/xenstore/client.h"
#include "pvio/xenstore/daemon.h"
#include "pvio/xenstore/server.h"
#include "pvio/xenstore/xenbus_client.h"

namespace pvio::blkback::test {
namespace {

using xs::XenbusState;
constexpr domid_t kDomid = 5;

template <typename Pred>
bool wait_for(Pred p) {
  return pvio::test::wait_until(p, 15000, 5);
}

std::string make_temp_dir() {
  std::string dir = pvio::test::make_temp_dir("pvio-blkxb");
  if (dir.empty()) throw std::runtime_error("mkdtemp");
  return dir;
}

class XenbusTest : public ::testing::Test {
 protected:
  XenbusTest() : dir_(make_temp_dir()), file_(4 << 20) {
    stop_fd_ = evtchn::eventfd_create(false);
    daemon_ = std::make_unique<xs::Daemon>(server_, dir_ + "/xs.sock");
    xs_thread_ = std::thread([this] { daemon_->run(stop_fd_); });
    domain::DomainConfig dc;
    dc.domid = kDomid;
    dc.socket_path = dir_ + "/dom.sock";
    if (domain::Domain::create(dc, &dom_) != 0) throw std::runtime_error("domain");
    dom_thread_ = std::thread([this] { dom_->run(); });
    xs_ = xs::Client::connect(dir_ + "/xs.sock");
    if (!xs_) throw std::runtime_error("xenstore client");
    // The frontend's grant table lives in the domain's grant frames.
    for (std::uint64_t g : dom_->grant_frame_gfns())
      frames_.push_back(reinterpret_cast<gnttab::grant_entry_v1*>(dom_->page(g)));
    free_.resize(frames_.size() * gnttab::kEntriesPerFrame);
    gnttab_ = std::make_unique<gnttab::GrantTable>(frames_.data(),
                                                   static_cast<std::uint32_t>(frames_.size()),
                                                   free_.data(),
                                                   static_cast<std::uint32_t>(free_.size()));
    event_fd_ = evtchn::eventfd_create(true);
  }
  ~XenbusTest() override {
    stop_service();
    dom_->stop();
    dom_thread_.join();
    stop_xenstored();
    dom_.reset();
    daemon_.reset();
    ::close(stop_fd_);
    ::close(event_fd_);
    pvio::test::remove_temp_dir(dir_);
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

  void start_service() {
    ServiceOptions o;
    o.xenstore_socket = dir_ + "/xs.sock";
    o.xenstore_give_up_ms = give_up_ms_;
    o.domain_socket = [this](domid_t) { return dir_ + "/dom.sock"; };
    service_ = std::make_unique<BlkbackService>(o);
    service_rc_ = -1;
    service_thread_ = std::thread([this] { service_rc_ = service_->run(); });
  }
  void stop_service() {
    if (!service_) return;
    service_->stop();
    service_thread_.join();
    service_.reset();
  }

  std::string be() const { return "/local/domain/0/backend/vbd/" + std::to_string(kDomid) + "/51712"; }
  std::string fe() const { return "/local/domain/" + std::to_string(kDomid) + "/device/vbd/51712"; }
  XenbusState be_state() { return xs::xenbus_read_state(*xs_, be()); }
  std::string read(const std::string& p) { return xs_->read(p).value; }
  void fe_state(XenbusState s) {
    ASSERT_EQ(xs_->write(fe() + "/state", std::to_string(static_cast<int>(s))), xs::XsError::None);
  }

  // The toolstack's part: backend and frontend directories.
  void create_vbd() {
    ASSERT_EQ(xs_->write(be() + "/frontend", fe()), xs::XsError::None);
    xs_->write(be() + "/frontend-id", std::to_string(kDomid));
    xs_->write(be() + "/params", file_.path());
    xs_->write(be() + "/mode", "w");
    xs_->write(fe() + "/backend", be());
    xs_->write(fe() + "/backend-id", "0");
    fe_state(XenbusState::Initialising);
  }

  // The frontend closes and starts over on a fresh ring; the backend follows it through
  // Closed and InitWait back to Connected.
  void restart_frontend() {
    fe_state(XenbusState::Closing);
    fe_state(XenbusState::Closed);
    ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::Closed; }))
        << xs::xenbus_state_name(be_state());
    fe_state(XenbusState::Initialising);
    ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::InitWait; }))
        << xs::xenbus_state_name(be_state());
    frontend_connect();
    ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::Connected; }))
        << xs::xenbus_state_name(be_state()) << " error: " << read(be() + "/error");
  }

  // The frontend's part of the handshake: a fresh ring, an event channel, its keys.
  void frontend_connect(const char* protocol = "x86_64-abi") {
    std::uint64_t gfn = 0;
    ASSERT_EQ(dom_->alloc_pages(1, &gfn), 0);
    ring_page_ = dom_->page(gfn);
    ring_.init(ring_page_, 4096);
    const grant_ref_t ref = gnttab_->grant_access(0, gfn, false);
    const int efd = event_fd_;
    const auto port = dom_->alloc_unbound(0, [efd](evtchn_port_t) { evtchn::eventfd_signal(efd); });
    ASSERT_EQ(port.rc, 0);
    port_ = port.port;
    xs_->write(fe() + "/ring-ref", std::to_string(ref));
    xs_->write(fe() + "/event-channel", std::to_string(port_));
    xs_->write(fe() + "/protocol", protocol);
    xs_->write(fe() + "/feature-persistent", "1");
    fe_state(XenbusState::Initialised);
  }

  blkif::blkif_response roundtrip(const blkif::blkif_request& r) {
    ring_.produce_request(r);
    if (ring_.push_requests()) dom_->send(port_);
    for (int i = 0; i < 1000; ++i) {
      const ring::RingCheck c = ring_.final_check_for_responses();
      if (c.count != 0) {
        blkif::blkif_response rsp;
        ring_.consume_response(rsp);
        return rsp;
      }
      pollfd p{event_fd_, POLLIN, 0};
      ::poll(&p, 1, 20);
      std::uint64_t v;
      [[maybe_unused]] const ssize_t n = ::read(event_fd_, &v, sizeof v);
    }
    return blkif::blkif_response{~0ull, 0xFF, 0x7FFF};
  }

  std::string dir_;
  TempFile file_;
  xs::Server server_;
  std::unique_ptr<xs::Daemon> daemon_;
  int stop_fd_ = -1;
  std::thread xs_thread_;
  std::unique_ptr<domain::Domain> dom_;
  std::thread dom_thread_;
  std::unique_ptr<xs::Client> xs_;
  std::vector<gnttab::grant_entry_v1*> frames_;
  std::vector<grant_ref_t> free_;
  std::unique_ptr<gnttab::GrantTable> gnttab_;
  std::unique_ptr<BlkbackService> service_;
  std::thread service_thread_;
  std::atomic<int> service_rc_{-1};
  int give_up_ms_ = 30000;
  std::uint8_t* ring_page_ = nullptr;
  blkif::FrontRing ring_;
  evtchn_port_t port_ = 0;
  int event_fd_ = -1;
};

// xenstored gone for longer than the reconnect budget ends the service with an error instead
// of a busy loop on a dead socket (a supervisor restarts it; it reattaches to every vbd).
TEST_F(XenbusTest, LosingXenstoredForGoodEndsTheServiceWithAnError) {
  give_up_ms_ = 300;
  start_service();
  create_vbd();
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::InitWait; }));
  xs_.reset();
  stop_xenstored();
  EXPECT_TRUE(wait_for([&] { return service_rc_.load() != -1; }))
      << "pvio-blkback is still running without xenstored";
  EXPECT_EQ(service_rc_.load(), 1);
}

// A restarted xenstored (same store) is ridden through: the service reconnects, watches
// again and goes on driving the handshake from the frontend's next state change.
TEST_F(XenbusTest, XenstoredRestartIsRiddenThrough) {
  start_service();
  create_vbd();
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::InitWait; }));
  xs_.reset();
  restart_xenstored();
  xs_ = xs::Client::connect(dir_ + "/xs.sock");
  ASSERT_TRUE(xs_);
  frontend_connect("x86_64-abi");
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::Connected; }))
      << "backend state " << xs::xenbus_state_name(be_state()) << " error: " << read(be() + "/error");
  EXPECT_EQ(service_rc_.load(), -1);  // still running
  EXPECT_EQ(service_->connected_devices(), 1u);
}

// An unknown `protocol` is fatal for the device, as in xen-blkback's connect_ring.
TEST_F(XenbusTest, UnknownProtocolIsAnErrorNodeAndClosing) {
  start_service();
  create_vbd();
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::InitWait; }));
  frontend_connect("arm-abi");
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::Closing; }))
      << "backend state " << xs::xenbus_state_name(be_state());
  EXPECT_NE(read(be() + "/error").find("unsupported protocol arm-abi"), std::string::npos)
      << read(be() + "/error");
  EXPECT_EQ(service_->connected_devices(), 0u);
}

// protocol = x86_32-abi connects and the ring then carries the 32-bit layout.
TEST_F(XenbusTest, X86_32ProtocolConnectsAndServesThe32BitLayout) {
  start_service();
  create_vbd();
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::InitWait; }));
  frontend_connect("x86_32-abi");
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::Connected; }))
      << "backend state " << xs::xenbus_state_name(be_state()) << " error: " << read(be() + "/error");
  blkif::FrontRingX86_32 ring32;
  ring32.init(ring_page_, 4096);  // nothing was posted yet: same indices, 32-bit slots

  std::uint64_t gfn = 0;
  ASSERT_EQ(dom_->alloc_pages(1, &gfn), 0);
  std::uint8_t* data = dom_->page(gfn);
  for (int i = 0; i < 4096; ++i) data[i] = static_cast<std::uint8_t>(i * 13 + 5);
  const grant_ref_t dref = gnttab_->grant_access(0, gfn, false);
  auto roundtrip32 = [&](const blkif::blkif_x86_32_request& r) {
    ring32.produce_request(r);
    if (ring32.push_requests()) dom_->send(port_);
    blkif::blkif_x86_32_response rsp{~0ull, 0xFF, 0x7FFF};
    EXPECT_TRUE(wait_for([&] { return ring32.final_check_for_responses().count != 0; }));
    if (ring32.final_check_for_responses().count != 0) ring32.consume_response(rsp);
    return rsp;
  };
  blkif::blkif_x86_32_request w{};
  w.operation = blkif::kOpWrite;
  w.nr_segments = 1;
  w.id = 0x3200000000000001ull;
  w.sector_number = 16;
  w.seg[0] = {dref, 0, 7};
  const auto wr = roundtrip32(w);
  EXPECT_EQ(std::uint64_t{wr.id}, std::uint64_t{w.id});
  EXPECT_EQ(wr.status, blkif::kRspOkay);
  std::vector<std::uint8_t> expect(data, data + 4096);
  std::memset(data, 0, 4096);
  w.operation = blkif::kOpRead;
  w.id = 0x3200000000000002ull;
  const auto rd = roundtrip32(w);
  EXPECT_EQ(std::uint64_t{rd.id}, std::uint64_t{w.id});
  EXPECT_EQ(rd.status, blkif::kRspOkay);
  EXPECT_EQ(std::memcmp(data, expect.data(), 4096), 0);
  const std::vector<std::uint8_t> disk = file_.contents();
  ASSERT_GE(disk.size(), 16 * 512 + 4096u);
  EXPECT_EQ(std::memcmp(&disk[16 * 512], expect.data(), 4096), 0);
}

TEST_F(XenbusTest, HandshakeIoCloseAndReconnectAfterRestart) {
  start_service();
  create_vbd();
  // Probe: features the frontend needs before it builds its rings, then InitWait.
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::InitWait; }))
      << "backend state " << xs::xenbus_state_name(be_state());
  EXPECT_EQ(read(be() + "/feature-persistent"), "1");
  EXPECT_EQ(read(be() + "/feature-max-indirect-segments"), "32");
  EXPECT_EQ(read(be() + "/multi-queue-max-queues"), "4");
  EXPECT_EQ(read(be() + "/max-ring-page-order"), "4");

  frontend_connect();
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::Connected; }))
      << "backend state " << xs::xenbus_state_name(be_state()) << " error: " << read(be() + "/error");
  EXPECT_EQ(read(be() + "/sectors"), std::to_string((4 << 20) / 512));
  EXPECT_EQ(read(be() + "/sector-size"), "512");
  EXPECT_EQ(read(be() + "/info"), "0");
  EXPECT_EQ(read(be() + "/feature-flush-cache"), "1");
  EXPECT_EQ(read(be() + "/feature-barrier"), "1");
  EXPECT_EQ(service_->connected_devices(), 1u);

  // I/O through the connected device: write a page, flush, read it back.
  std::uint64_t gfn = 0;
  ASSERT_EQ(dom_->alloc_pages(1, &gfn), 0);
  std::uint8_t* data = dom_->page(gfn);
  for (int i = 0; i < 4096; ++i) data[i] = static_cast<std::uint8_t>(i * 7 + 1);
  const grant_ref_t dref = gnttab_->grant_access(0, gfn, false);
  blkif::blkif_request w{};
  w.operation = blkif::kOpWrite;
  w.nr_segments = 1;
  w.id = 1;
  w.sector_number = 16;
  w.seg[0] = {dref, 0, 7};
  EXPECT_EQ(roundtrip(w).status, blkif::kRspOkay);
  blkif::blkif_request f{};
  f.operation = blkif::kOpFlushDiskcache;
  f.id = 2;
  EXPECT_EQ(roundtrip(f).status, blkif::kRspOkay);
  const auto contents = file_.contents();
  EXPECT_EQ(0, std::memcmp(&contents[16 * 512], data, 4096));
  std::memset(data, 0, 4096);
  blkif::blkif_request r = w;
  r.operation = blkif::kOpRead;
  r.id = 3;
  EXPECT_EQ(roundtrip(r).status, blkif::kRspOkay);
  EXPECT_EQ(0, std::memcmp(&contents[16 * 512], data, 4096));

  // Restart: a new service finds the device Connected and sends it through Closing.
  stop_service();
  start_service();
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::Closing; }))
      << xs::xenbus_state_name(be_state());
  // The frontend closes, then starts over, and the backend follows it back to Connected.
  ASSERT_NO_FATAL_FAILURE(restart_frontend());
  r.id = 4;
  std::memset(data, 0, 4096);
  EXPECT_EQ(roundtrip(r).status, blkif::kRspOkay);
  EXPECT_EQ(0, std::memcmp(&contents[16 * 512], data, 4096));

  // Frontend closes: the backend stops the datapath and follows to Closed.
  fe_state(XenbusState::Closing);
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::Closing; }));
  fe_state(XenbusState::Closed);
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::Closed; }));
  EXPECT_TRUE(wait_for([&] { return service_->connected_devices() == 0; }));
  EXPECT_FALSE(gnttab_->is_busy(dref));
}

TEST_F(XenbusTest, BadFrontendKeysCloseTheDevice) {
  start_service();
  create_vbd();
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::InitWait; }));
  xs_->write(fe() + "/ring-ref", "12345678");  // not a grant of this domain
  xs_->write(fe() + "/event-channel", "3");
  fe_state(XenbusState::Initialised);
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::Closing; }))
      << xs::xenbus_state_name(be_state());
  EXPECT_FALSE(read(be() + "/error").empty());
  EXPECT_EQ(service_->connected_devices(), 0u);
}

// A ring protocol error is fatal for the device (xenbus_dev_fatal in xen-blkback): a producer
// index more than a ring ahead of the responses stops the datapath, and the control plane
// writes an `error` node and switches the backend to Closing so the frontend sees it. The
// frontend can then close and start over, and the device serves I/O again.
TEST_F(XenbusTest, RingProtocolErrorSwitchesTheDeviceToClosing) {
  start_service();
  create_vbd();
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::InitWait; }));
  frontend_connect();
  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::Connected; }))
      << xs::xenbus_state_name(be_state()) << " error: " << read(be() + "/error");
  EXPECT_TRUE(read(be() + "/error").empty());
  const grant_ref_t ring_ref = static_cast<grant_ref_t>(std::stoul(read(fe() + "/ring-ref")));
  EXPECT_TRUE(gnttab_->is_busy(ring_ref));  // mapped by the running datapath

  // The hostile part: publish a producer index 1000 requests ahead (the ring holds 32).
  auto* hdr = reinterpret_cast<ring::SringHeader*>(ring_page_);
  std::atomic_ref<ring::RingIdx>(hdr->req_prod)
      .store(std::atomic_ref<ring::RingIdx>(hdr->rsp_prod).load() + 1000,
             std::memory_order_release);
  dom_->send(port_);

  ASSERT_TRUE(wait_for([&] { return be_state() == XenbusState::Closing; }))
      << xs::xenbus_state_name(be_state());
  EXPECT_NE(read(be() + "/error").find("ring protocol error"), std::string::npos)
      << read(be() + "/error");
  EXPECT_TRUE(wait_for([&] { return service_->connected_devices() == 0; }));
  EXPECT_FALSE(gnttab_->is_busy(ring_ref));  // the datapath is gone, its ring unmapped

  // The frontend closes and starts over on a fresh ring; the device works again.
  ASSERT_NO_FATAL_FAILURE(restart_frontend());
  std::uint64_t gfn = 0;
  ASSERT_EQ(dom_->alloc_pages(1, &gfn), 0);
  const grant_ref_t dref = gnttab_->grant_access(0, gfn, false);
  blkif::blkif_request r{};
  r.operation = blkif::kOpRead;
  r.nr_segments = 1;
  r.id = 9;
  r.sector_number = 0;
  r.seg[0] = {dref, 0, 7};
  EXPECT_EQ(roundtrip(r).status, blkif::kRspOkay);
}

}  // namespace
}  // namespace pvio::blkback::test
