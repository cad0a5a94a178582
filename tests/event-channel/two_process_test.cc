// Event channels between two processes (fork) sharing a shared_info page in a memfd: Dom0
// (the parent) raises guest ports through UpcallNotifier, the guest (the child) kicks Dom0
// ports through an EventfdDoorbell, exactly as a user-mode domain and a Dom0 service do.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>

#include "pvio/event_channel/notifier.h"
#include "pvio/event_channel/port_table.h"
#include "pvio/event_channel/two_level.h"

namespace {

using namespace pvio::evtchn;

// Watchdog only: a lost wake-up must fail the test instead of hanging it.
constexpr int kWatchdogMs = 120'000;

bool wait_readable(int fd, int timeout_ms = kWatchdogMs) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

struct Stats {
  std::uint64_t guest_handled;
  std::uint64_t guest_bad_port;
};

struct TwoProcess : ::testing::Test {
  int memfd = -1;
  std::uint8_t* mem = nullptr;
  shared_info* si = nullptr;
  Stats* stats = nullptr;
  int upcall_fd = -1, kick_fd = -1, sync_fd = -1;
  std::unique_ptr<UpcallNotifier> to_guest;
  EventfdDoorbell to_dom0;
  std::unique_ptr<PortTable> guest, dom0;
  pvio::evtchn_port_t gport = 0, dport = 0;

  void SetUp() override {
    memfd = ::memfd_create("evtchn-test", MFD_CLOEXEC);
    ASSERT_GE(memfd, 0);
    ASSERT_EQ(::ftruncate(memfd, 2 * 4096), 0);
    void* p = ::mmap(nullptr, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    ASSERT_NE(p, MAP_FAILED);
    mem = static_cast<std::uint8_t*>(p);
    si = reinterpret_cast<shared_info*>(mem);
    stats = reinterpret_cast<Stats*>(mem + 4096);
    upcall_fd = eventfd_create(false);
    kick_fd = eventfd_create(false);
    sync_fd = eventfd_create(false);
    ASSERT_GE(upcall_fd, 0);
    ASSERT_GE(kick_fd, 0);
    ASSERT_GE(sync_fd, 0);
    // si begins a whole page of the memfd, as a guest's shared_info does.
    to_guest = std::make_unique<UpcallNotifier>(si, upcall_fd, /*wake_pollers=*/true);
    guest = std::make_unique<PortTable>(1, si, to_guest.get());
    dom0 = std::make_unique<PortTable>(0, nullptr, &to_dom0);
    auto u = guest->alloc_unbound(0);
    ASSERT_EQ(u.rc, 0);
    auto b = PortTable::bind_interdomain(*dom0, *guest, u.port);
    ASSERT_EQ(b.rc, 0);
    gport = u.port;
    dport = b.port;
    to_dom0.set(dport, kick_fd);
  }
  void TearDown() override {
    guest.reset();
    dom0.reset();
    if (mem) ::munmap(mem, 2 * 4096);
    for (int fd : {memfd, upcall_fd, kick_fd, sync_fd})
      if (fd >= 0) ::close(fd);
  }

  // Runs `guest_main` in a child process; returns its exit status (0 = success).
  template <typename F>
  pid_t spawn_guest(F guest_main) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::alarm(kWatchdogMs / 1000 + 30);
      ::_exit(guest_main());
    }
    return pid;
  }
  static int reap(pid_t pid) {
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
};

TEST_F(TwoProcess, SendBothWays) {
  const pid_t pid = spawn_guest([&]() -> int {
    if (!wait_readable(upcall_fd)) return 10;
    eventfd_wait(upcall_fd);
    int seen = 0, wrong = 0;
    two_level::do_upcall(*si, [&](pvio::evtchn_port_t p) { p == gport ? ++seen : ++wrong; });
    if (seen != 1 || wrong != 0) return 11;
    return guest->send(gport) == 0 ? 0 : 12;  // kick Dom0 back
  });
  ASSERT_GT(pid, 0);
  EXPECT_EQ(dom0->send(dport), 0);
  ASSERT_TRUE(wait_readable(kick_fd)) << "guest never kicked Dom0";
  EXPECT_EQ(eventfd_wait(kick_fd), 1u);
  EXPECT_EQ(reap(pid), 0);
}

TEST_F(TwoProcess, MaskedEventIsHeldAndDeliveredOnUnmask) {
  const pid_t pid = spawn_guest([&]() -> int {
    two_level::mask(*si, gport);
    eventfd_signal(kick_fd);                  // "masked"
    if (!wait_readable(sync_fd)) return 10;   // Dom0 has sent
    eventfd_wait(sync_fd);
    if (!two_level::is_pending(*si, gport)) return 11;
    if (wait_readable(upcall_fd, 0)) return 12;  // a masked port must not raise an upcall
    int seen = 0;
    two_level::do_upcall(*si, [&](pvio::evtchn_port_t) { ++seen; });
    if (seen != 0) return 13;
    if (guest->unmask(gport) != 0) return 14;    // re-raises through the upcall eventfd
    if (!wait_readable(upcall_fd)) return 15;
    eventfd_wait(upcall_fd);
    two_level::do_upcall(*si, [&](pvio::evtchn_port_t p) { seen += p == gport; });
    return seen == 1 ? 0 : 16;
  });
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(wait_readable(kick_fd));
  eventfd_wait(kick_fd);
  EXPECT_EQ(dom0->send(dport), 0);
  eventfd_signal(sync_fd);
  EXPECT_EQ(reap(pid), 0);
}

// SCHEDOP_poll's wait across processes: the guest side (the child, as pvio-hv's vCPU thread)
// sleeps on its masked port with a 60 s timeout; Dom0's send wakes it through the shared page
// long before that, and raises no upcall.
TEST_F(TwoProcess, PollOnAMaskedPortIsWokenBySend) {
  two_level::mask(*si, gport);
  const pid_t pid = spawn_guest([&]() -> int {
    const auto t0 = std::chrono::steady_clock::now();
    while (!two_level::is_pending(*si, gport)) {
      wait_pending(*si, gport, 60'000'000'000);  // may return early; the loop re-checks
      if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(30)) return 10;
    }
    if (wait_readable(upcall_fd, 0)) return 11;  // masked: no upcall
    return 0;
  });
  ASSERT_GT(pid, 0);
  // Send once the poller is counted (asleep, or about to look again).
  std::atomic_ref<std::uint32_t> waiters(*two_level::poll_waiters(*si));
  for (int i = 0; i < kWatchdogMs && waiters.load() == 0; ++i) ::usleep(1000);
  ASSERT_EQ(waiters.load(), 1u);
  EXPECT_EQ(dom0->send(dport), 0);
  EXPECT_EQ(reap(pid), 0);
  EXPECT_EQ(waiters.load(), 0u);
}

TEST_F(TwoProcess, PingPongOfAMillionEventsLosesNoWakeUp) {
  constexpr std::uint64_t kRounds = 1'000'000;
  const pid_t pid = spawn_guest([&]() -> int {
    std::uint64_t handled = 0, bad = 0;
    while (handled < kRounds) {
      if (eventfd_wait(upcall_fd) == 0) return 10;  // blocking: a lost wake-up hangs here
      two_level::do_upcall(*si, [&](pvio::evtchn_port_t p) {
        if (p != gport) { ++bad; return; }
        ++handled;
        guest->send(gport);
      });
    }
    stats->guest_handled = handled;
    stats->guest_bad_port = bad;
    return 0;
  });
  ASSERT_GT(pid, 0);
  ::alarm(kWatchdogMs / 1000 * 3);  // watchdog for the parent's blocking reads
  std::uint64_t kicks = 0;
  for (std::uint64_t i = 0; i < kRounds; ++i) {
    ASSERT_EQ(dom0->send(dport), 0);
    kicks += eventfd_wait(kick_fd);  // exactly one kick per round trip
  }
  ::alarm(0);
  EXPECT_EQ(kicks, kRounds);
  EXPECT_EQ(reap(pid), 0);
  EXPECT_EQ(stats->guest_handled, kRounds);
  EXPECT_EQ(stats->guest_bad_port, 0u);
}

}  // namespace
