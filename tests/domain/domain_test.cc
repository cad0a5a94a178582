// User-mode domains: layout, frontend ports woken by a Dom0 client, and the pvio-domain program.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <filesystem>
#include <cstdlib>
#include <string>
#include <thread>

#include "pvio/control/client.h"
#include "pvio/control/run_dir.h"
#include "pvio/domain/domain.h"
#include "pvio/event_channel/two_level.h"
#include "pvio/grant_table/grant_mapper.h"
#include "pvio/test/temp_dir.h"

// The mapper of the "killed" service in GrantsPinnedByAKilledServiceAreReleased (external
// linkage, so the store that keeps it reachable for the leak checker cannot be dropped).
namespace pvio::domain_test {
gnttab::GrantMapper* g_killed_mapper = nullptr;
gnttab::GrantMapper* g_killed_mapper_of_two = nullptr;  // KilledServiceReleasesOnlyItsOwnPins
}  // namespace pvio::domain_test

namespace {

using namespace pvio;

constexpr int kWatchdogMs = 60'000;  // fail instead of hang

std::string program_path;  // argv[1]: the built pvio-domain

bool readable(int fd, int timeout_ms = kWatchdogMs) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

TEST(Domain, CreateRejectsBadConfig) {
  const std::string dir = test::make_temp_dir("pvio-domain");
  std::unique_ptr<domain::Domain> d;
  domain::DomainConfig cfg;
  cfg.socket_path = dir + "/d.sock";
  cfg.domid = 0;  // Dom0 is the host
  EXPECT_EQ(domain::Domain::create(cfg, &d), -EINVAL);
  cfg.domid = 0x7FF0;
  EXPECT_EQ(domain::Domain::create(cfg, &d), -EINVAL);
  cfg.domid = 3;
  cfg.memory_bytes = 6 * 4096;  // no room after shared_info, xenstore and 4 grant frames
  EXPECT_EQ(domain::Domain::create(cfg, &d), -EINVAL);
  cfg.memory_bytes = 4097;
  EXPECT_EQ(domain::Domain::create(cfg, &d), -EINVAL);
  cfg.memory_bytes = 1 << 20;
  cfg.nr_grant_frames = 33;
  EXPECT_EQ(domain::Domain::create(cfg, &d), -EINVAL);
  EXPECT_FALSE(d);
  ::rmdir(dir.c_str());
}

TEST(Domain, DefaultSocketPathFollowsTheEnvironment) {
  const char* old_run = std::getenv("PVIO_RUN_DIR");
  const char* old_xdg = std::getenv("XDG_RUNTIME_DIR");
  const std::string saved_run = old_run ? old_run : "", saved_xdg = old_xdg ? old_xdg : "";
  ::setenv("PVIO_RUN_DIR", "/some/run", 1);
  EXPECT_EQ(control::domain_socket_path(7), "/some/run/domain-7.sock");
  ::unsetenv("PVIO_RUN_DIR");
  ::setenv("XDG_RUNTIME_DIR", "/xdg", 1);
  EXPECT_EQ(control::domain_socket_path(12), "/xdg/pvio/domain-12.sock");
  ::unsetenv("XDG_RUNTIME_DIR");
  EXPECT_EQ(control::domain_socket_path(1), "/run/pvio/domain-1.sock");
  if (old_run) ::setenv("PVIO_RUN_DIR", saved_run.c_str(), 1);
  if (old_xdg) ::setenv("XDG_RUNTIME_DIR", saved_xdg.c_str(), 1);
}

struct RunningDomain : ::testing::Test {
  std::string dir;
  std::unique_ptr<domain::Domain> d;
  std::thread loop;
  void SetUp() override {
    dir = test::make_temp_dir("pvio-domain");
    ASSERT_FALSE(dir.empty());
    domain::DomainConfig cfg;
    cfg.domid = 9;
    cfg.memory_bytes = 1 << 20;
    cfg.nr_grant_frames = 2;
    cfg.socket_path = dir + "/run/domain-9.sock";  // the directory is created
    ASSERT_EQ(domain::Domain::create(cfg, &d), 0);
    loop = std::thread([this] { d->run(); });
  }
  void TearDown() override {
    if (d) d->stop();
    if (loop.joinable()) loop.join();
    d.reset();
    ::rmdir((dir + "/run").c_str());
    ::rmdir(dir.c_str());
  }
};

TEST_F(RunningDomain, LayoutAndPageAllocator) {
  EXPECT_EQ(d->page(domain::kSharedInfoGfn), reinterpret_cast<std::uint8_t*>(d->shared_info()));
  EXPECT_EQ(d->page(domain::kXenstoreGfn), reinterpret_cast<std::uint8_t*>(d->xenstore_interface()));
  EXPECT_EQ(d->xenstore_interface()->req_prod, 0u);
  EXPECT_EQ(std::vector<std::uint64_t>(d->grant_frame_gfns().begin(), d->grant_frame_gfns().end()),
            (std::vector<std::uint64_t>{2, 3}));
  evtchn::ChannelStatus st;
  ASSERT_EQ(d->status(d->xenstore_port(), &st), 0);
  EXPECT_EQ(st.status, evtchn::kEvtchnStatUnbound);
  EXPECT_EQ(st.remote_dom, 0);
  std::uint64_t gfn = 0;
  ASSERT_EQ(d->alloc_pages(10, &gfn), 0);
  EXPECT_EQ(gfn, 4u);
  ASSERT_EQ(d->alloc_pages(256 - 14, &gfn), 0);
  EXPECT_EQ(gfn, 14u);
  EXPECT_EQ(d->alloc_pages(1, &gfn), -ENOMEM);
  EXPECT_EQ(d->page(256), nullptr);
  struct stat sb{};
  EXPECT_EQ(::stat(d->socket_path().c_str(), &sb), 0);
  EXPECT_TRUE(S_ISSOCK(sb.st_mode));
}

TEST_F(RunningDomain, FrontendPortIsWokenByDom0AndHeldWhileMasked) {
  const int woke = evtchn::eventfd_create(false);
  std::atomic<int> calls{0};
  auto p = d->alloc_unbound(0, [&](evtchn_port_t) {
    ++calls;
    evtchn::eventfd_signal(woke);
  });
  ASSERT_EQ(p.rc, 0);
  std::unique_ptr<control::ControlClient> c;
  ASSERT_EQ(control::ControlClient::attach(d->socket_path(), 9, &c), 0);
  evtchn_port_t local = 0;
  ASSERT_EQ(c->bind_interdomain(p.port, &local), 0);
  evtchn::eventfd_wait(c->kick_fd(local));  // the bind's own notification

  ASSERT_EQ(c->notify(local), 0);
  ASSERT_TRUE(readable(woke));
  evtchn::eventfd_wait(woke);
  EXPECT_EQ(calls.load(), 1);

  ASSERT_EQ(d->send(p.port), 0);
  ASSERT_TRUE(readable(c->kick_fd(local)));
  EXPECT_EQ(evtchn::eventfd_wait(c->kick_fd(local)), 1u);

  d->mask(p.port);
  ASSERT_EQ(c->notify(local), 0);
  EXPECT_TRUE(evtchn::two_level::is_pending(*c->shared_info(), p.port));  // held
  EXPECT_EQ(c->shared_info()->vcpu_info[0].evtchn_upcall_pending, 0);    // no upcall raised
  EXPECT_EQ(calls.load(), 1);
  ASSERT_EQ(d->unmask(p.port), 0);  // re-raised
  ASSERT_TRUE(readable(woke));
  evtchn::eventfd_wait(woke);
  EXPECT_EQ(calls.load(), 2);

  EXPECT_EQ(d->attached_clients(), 1u);
  ASSERT_EQ(c->detach(), 0);
  ::close(woke);
}

// Issue 13: a backend killed while it maps a grant never unmaps it. On Xen the hypervisor
// releases a dead domain's mappings; here the domain's owner must, when the service's control
// connection drops, or the frontend can never end the grant and the table runs dry.
TEST_F(RunningDomain, GrantsPinnedByAKilledServiceAreReleased) {
  std::uint64_t gfn = 0;
  ASSERT_EQ(d->alloc_pages(2, &gfn), 0);
  const grant_ref_t ring = d->grant_table().grant_access(0, gfn, false);
  const grant_ref_t data = d->grant_table().grant_access(0, gfn + 1, true);
  ASSERT_NE(ring, kInvalidGrantRef);
  ASSERT_NE(data, kInvalidGrantRef);

  std::unique_ptr<control::ControlClient> c;
  ASSERT_EQ(control::ControlClient::attach(d->socket_path(), 9, &c), 0);
  // Never destroyed, as in a process killed with its mappings: nothing unmaps. Kept in a
  // global so the leak checker sees it reachable: leaked on purpose, not by accident.
  auto* mapper = new gnttab::GrantMapper(9, 0, c->memory(), c->grant_frame_gfns(), 16);
  domain_test::g_killed_mapper = mapper;
  ASSERT_EQ(mapper->map(ring, false).status, gnttab::GNTST_okay);
  ASSERT_EQ(mapper->map(data, true).status, gnttab::GNTST_okay);
  ASSERT_TRUE(d->grant_table().is_busy(ring));
  EXPECT_FALSE(d->grant_table().end_access(ring));  // the live mapper's pin holds
  // The domain records the attachment just after its reply: wait for it.
  while (d->attached_clients() != 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  c.reset();  // the connection closes without DETACH
  while (d->attached_clients() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(d->released_grants(), 2u);
  EXPECT_TRUE(d->grant_table().end_access(ring));
  EXPECT_TRUE(d->grant_table().end_access(data));
  // The refs are free again and handed out afresh, not busy.
  const grant_ref_t again = d->grant_table().grant_access(0, gfn, false);
  ASSERT_NE(again, kInvalidGrantRef);
  EXPECT_FALSE(d->grant_table().is_busy(again));
  (void)mapper;
}

// Two services map from the same domain (blkback and netback are both domain 0): when one is
// killed, only the busy bits it alone held are released; a grant the live one also maps stays
// busy, so the frontend cannot end it under the live service's feet.
TEST_F(RunningDomain, KilledServiceReleasesOnlyItsOwnPins) {
  std::uint64_t gfn = 0;
  ASSERT_EQ(d->alloc_pages(3, &gfn), 0);
  const grant_ref_t dead_only = d->grant_table().grant_access(0, gfn, false);
  const grant_ref_t shared = d->grant_table().grant_access(0, gfn + 1, false);
  const grant_ref_t live_only = d->grant_table().grant_access(0, gfn + 2, true);

  std::unique_ptr<control::ControlClient> killed, live;
  ASSERT_EQ(control::ControlClient::attach(d->socket_path(), 9, &killed), 0);
  ASSERT_EQ(control::ControlClient::attach(d->socket_path(), 9, &live), 0);
  auto* doomed = new gnttab::GrantMapper(9, 0, killed->memory(), killed->grant_frame_gfns(), 16);
  domain_test::g_killed_mapper_of_two = doomed;  // never unmaps, like a killed process
  gnttab::GrantMapper survivor(9, 0, live->memory(), live->grant_frame_gfns(), 16);
  ASSERT_EQ(doomed->map(dead_only, false).status, gnttab::GNTST_okay);
  ASSERT_EQ(doomed->map(shared, false).status, gnttab::GNTST_okay);
  const gnttab::MapResult s = survivor.map(shared, true);
  ASSERT_EQ(s.status, gnttab::GNTST_okay);
  const gnttab::MapResult l = survivor.map(live_only, true);
  ASSERT_EQ(l.status, gnttab::GNTST_okay);
  while (d->attached_clients() != 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  killed.reset();
  while (d->attached_clients() != 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // dead_only is idle again; on `shared` only the dead service's GTF_writing went.
  EXPECT_EQ(d->released_grants(), 2u);
  EXPECT_TRUE(d->grant_table().end_access(dead_only));
  EXPECT_EQ(d->grant_table().flags(shared) & (gnttab::GTF_reading | gnttab::GTF_writing),
            gnttab::GTF_reading);  // the live service still reads it
  EXPECT_FALSE(d->grant_table().end_access(shared));
  EXPECT_FALSE(d->grant_table().end_access(live_only));
  // Once the live service unmaps, the frontend ends both as usual.
  ASSERT_EQ(survivor.unmap(s.handle), gnttab::GNTST_okay);
  ASSERT_EQ(survivor.unmap(l.handle), gnttab::GNTST_okay);
  EXPECT_TRUE(d->grant_table().end_access(shared));
  EXPECT_TRUE(d->grant_table().end_access(live_only));
}

// A service that detaches cleanly has unmapped: its DETACH releases nothing.
TEST_F(RunningDomain, CleanDetachReleasesNoGrant) {
  std::uint64_t gfn = 0;
  ASSERT_EQ(d->alloc_pages(1, &gfn), 0);
  const grant_ref_t ref = d->grant_table().grant_access(0, gfn, false);
  std::unique_ptr<control::ControlClient> c;
  ASSERT_EQ(control::ControlClient::attach(d->socket_path(), 9, &c), 0);
  {
    gnttab::GrantMapper mapper(9, 0, c->memory(), c->grant_frame_gfns(), 16);
    const gnttab::MapResult m = mapper.map(ref, false);
    ASSERT_EQ(m.status, gnttab::GNTST_okay);
    ASSERT_EQ(mapper.unmap(m.handle), gnttab::GNTST_okay);
  }
  while (d->attached_clients() != 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_EQ(c->detach(), 0);
  while (d->attached_clients() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(d->released_grants(), 0u);
  EXPECT_TRUE(d->grant_table().end_access(ref));
}

TEST(DomainProgram, ServesTheControlSocketUntilSigterm) {
  ASSERT_FALSE(program_path.empty()) << "pass the pvio-domain path as the first argument";
  const std::string dir = test::make_temp_dir("pvio-domain");
  const std::string sock = dir + "/domain-4.sock";
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::execl(program_path.c_str(), "pvio-domain", "--domid", "4", "--memory-mib", "8",
            "--grant-frames", "8", "--socket", sock.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Wait for the socket (watchdog bound, not a timing assertion).
  std::unique_ptr<control::ControlClient> c;
  int rc = -ENOENT;
  for (int i = 0; i < kWatchdogMs / 10 && rc != 0; ++i) {
    rc = control::ControlClient::attach(sock, 4, &c);
    if (rc != 0) ::usleep(10'000);
  }
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(c->domid(), 4);
  EXPECT_EQ(c->memory().region(0).size, 8u << 20);
  EXPECT_EQ(c->grant_frame_gfns().size(), 8u);
  EXPECT_EQ(c->xenstore_gfn(), 1u);
  EXPECT_EQ(c->xenstore_port(), 1u);
  evtchn_port_t local = 0;
  EXPECT_EQ(c->bind_interdomain(c->xenstore_port(), &local), 0);
  c.reset();
  ::kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 5);  // stopped by the host, as pvio-hv's destroyed
  struct stat sb{};
  EXPECT_NE(::stat(sock.c_str(), &sb), 0) << "socket left behind";
  ::rmdir(dir.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (argc > 1) program_path = argv[1];
  return RUN_ALL_TESTS();
}
