// eventfd deliveries behind evtchn::Notifier.
#include "pvio/event_channel/notifier.h"

#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>

#include "pvio/event_channel/two_level.h"

namespace pvio::evtchn {

bool eventfd_signal(int fd) {
  const std::uint64_t one = 1;
  for (;;) {
    const ssize_t n = ::write(fd, &one, sizeof(one));
    if (n == static_cast<ssize_t>(sizeof(one))) return true;
    if (n < 0 && errno == EINTR) continue;
    return n < 0 && errno == EAGAIN;
  }
}

std::uint64_t eventfd_wait(int fd) {
  std::uint64_t count = 0;
  for (;;) {
    const ssize_t n = ::read(fd, &count, sizeof(count));
    if (n == static_cast<ssize_t>(sizeof(count))) return count;
    if (n < 0 && errno == EINTR) continue;
    return 0;
  }
}

int eventfd_create(bool nonblocking) {
  const int fd = ::eventfd(0, EFD_CLOEXEC | (nonblocking ? EFD_NONBLOCK : 0));
  return fd < 0 ? -errno : fd;
}

void UpcallNotifier::notify(evtchn_port_t port) {
  bool newly = false;
  if (two_level::set_pending(*si_, port, &newly)) eventfd_signal(upcall_fd_);
  if (newly && wake_pollers_) wake_pollers(*si_, port);
}

bool wait_pending(shared_info& si, evtchn_port_t port, std::int64_t timeout_ns) {
  if (!two_level::port_valid(port)) return false;
  std::atomic_ref<std::uint32_t> waiters(*two_level::poll_waiters(si));
  std::uint32_t* word = two_level::pending_futex_word(si, port);
  const std::uint32_t bit = two_level::pending_futex_bit(port);
  // Counted before the look: a sender that sets the bit after it reads a non-zero count and
  // wakes the word; one that set it before is seen by the look (both sides seq_cst).
  waiters.fetch_add(1, std::memory_order_seq_cst);
  const std::uint32_t seen = std::atomic_ref<std::uint32_t>(*word).load(std::memory_order_seq_cst);
  bool pending = (seen & bit) != 0;
  if (!pending && timeout_ns > 0) {
    timespec ts{static_cast<time_t>(timeout_ns / 1000000000), static_cast<long>(timeout_ns % 1000000000)};
    // Shared (not PRIVATE): the sender is usually another process mapping the same page.
    ::syscall(SYS_futex, word, FUTEX_WAIT, seen, &ts, nullptr, 0);
    pending = two_level::is_pending(si, port);
  }
  waiters.fetch_sub(1, std::memory_order_seq_cst);
  return pending;
}

void wake_pollers(shared_info& si, evtchn_port_t port) {
  if (std::atomic_ref<std::uint32_t>(*two_level::poll_waiters(si)).load(std::memory_order_seq_cst) == 0)
    return;
  ::syscall(SYS_futex, two_level::pending_futex_word(si, port), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

void UpcallNotifier::upcall() { eventfd_signal(upcall_fd_); }

void EventfdDoorbell::set(evtchn_port_t port, int fd) {
  if (port >= kNrEventChannels) return;
  if (fds_.size() <= port) fds_.resize(port + 1, -1);
  fds_[port] = fd;
}

int EventfdDoorbell::fd(evtchn_port_t port) const {
  return port < fds_.size() ? fds_[port] : -1;
}

void EventfdDoorbell::notify(evtchn_port_t port) {
  const int f = fd(port);
  if (f >= 0) eventfd_signal(f);
}

}  // namespace pvio::evtchn
