// SOCK_SEQPACKET transport of domain-control messages with SCM_RIGHTS fd passing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pvio/control/protocol.h"

namespace pvio::control {

// Owns one file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  ~UniqueFd() { reset(); }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd = -1);
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

struct Received {
  int rc = 0;  // > 0 bytes received, 0 peer closed, < 0 -errno
  std::vector<std::uint8_t> bytes;
  std::vector<UniqueFd> fds;  // every fd that arrived; closed with this value unless taken
  bool truncated = false;      // the datagram did not fit: oversized
  bool fds_truncated = false;  // more fds than any message carries: bad fd count
};

// Sends one datagram with `fds` attached. Returns 0 or -errno.
int send_message(int sock, const void* msg, std::size_t len, std::span<const int> fds = {});

template <typename T>
int send_message(int sock, const T& msg, std::span<const int> fds = {}) {
  return send_message(sock, &msg, sizeof(T), fds);
}

// Receives one datagram (blocking unless the socket is non-blocking). Accepts up to
// kMaxMessageSize + 1 bytes and kMaxFds + 1 fds so that an oversized message or surplus fds
// are seen (and then rejected by parse_message) rather than silently cut.
Received recv_message(int sock);

// Receive and parse; a transport truncation is reported as Oversized / BadFdCount.
Parsed parse_received(const Received& r);

}  // namespace pvio::control
