// eventfd deliveries behind evtchn::Notifier.
#include "pvio/event_channel/notifier.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>

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
  if (two_level::set_pending(*si_, port)) eventfd_signal(upcall_fd_);
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
