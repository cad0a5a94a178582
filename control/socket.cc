// SOCK_SEQPACKET send/receive with SCM_RIGHTS.
#include "pvio/control/socket.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pvio::control {

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) reset(o.release());
  return *this;
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

int send_message(int sock, const void* msg, std::size_t len, std::span<const int> fds) {
  iovec iov{const_cast<void*>(msg), len};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * 8)];
  if (fds.size() > 8) return -EINVAL;
  if (!fds.empty()) {
    std::memset(ctrl, 0, sizeof(ctrl));
    mh.msg_control = ctrl;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    const ssize_t n = ::sendmsg(sock, &mh, MSG_NOSIGNAL);
    if (n == static_cast<ssize_t>(len)) return 0;
    if (n < 0 && errno == EINTR) continue;
    return n < 0 ? -errno : -EMSGSIZE;
  }
}

Received recv_message(int sock) {
  Received r;
  r.bytes.resize(kMaxMessageSize + 1);
  iovec iov{r.bytes.data(), r.bytes.size()};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  alignas(cmsghdr) char ctrl[CMSG_SPACE(sizeof(int) * (kMaxFds + 1))];
  mh.msg_control = ctrl;
  mh.msg_controllen = sizeof(ctrl);
  ssize_t n;
  do {
    n = ::recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    r.rc = -errno;
    r.bytes.clear();
    return r;
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      r.fds.emplace_back(fd);
    }
  }
  r.truncated = (mh.msg_flags & MSG_TRUNC) != 0;
  r.fds_truncated = (mh.msg_flags & MSG_CTRUNC) != 0;
  r.rc = static_cast<int>(n);
  r.bytes.resize(static_cast<std::size_t>(n));
  // A zero-length datagram is indistinguishable from EOF by rc; report it as 1-byte short.
  if (n == 0 && !r.fds.empty()) r.rc = 1;
  return r;
}

Parsed parse_received(const Received& r) {
  Parsed p = parse_message(r.bytes, r.fds.size());
  if (r.fds_truncated) p.error = ParseError::BadFdCount;
  if (r.truncated) p.error = ParseError::Oversized;
  return p;
}

}  // namespace pvio::control
