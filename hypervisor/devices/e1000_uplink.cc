// AF_PACKET uplink of the emulated e1000 (see e1000_uplink.h).
#include "pvio/hypervisor/devices/e1000_uplink.h"

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pvio::hv {

namespace {
std::uint64_t monotonic_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return std::uint64_t(ts.tv_sec) * 1000000000u + std::uint64_t(ts.tv_nsec);
}
}  // namespace

E1000Uplink::~E1000Uplink() {
  stop();
  if (fd_ >= 0) ::close(fd_);
}

int E1000Uplink::open(const std::string& ifname, std::string* why) {
  const unsigned index = ::if_nametoindex(ifname.c_str());
  if (index == 0) {
    *why = "no interface " + ifname;
    return -ENODEV;
  }
  // Protocol 0 until bind() names the interface: with ETH_P_ALL from the start the socket would
  // queue every interface's frames until then, and the guest would receive them.
  fd_ = ::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0);
  if (fd_ < 0) {
    const int e = errno;
    *why = std::string("AF_PACKET socket: ") + std::strerror(e);
    return -e;
  }
  // Our own transmissions must not come back as received frames.
  const int one = 1;
  (void)::setsockopt(fd_, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one));
  sockaddr_ll sll{};
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = static_cast<int>(index);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) != 0) {
    const int e = errno;
    *why = "bind to " + ifname + ": " + std::strerror(e);
    return -e;
  }
  // Frames for the guest's MAC are not for the host: the interface must pass everything.
  packet_mreq mr{};
  mr.mr_ifindex = static_cast<int>(index);
  mr.mr_type = PACKET_MR_PROMISC;
  (void)::setsockopt(fd_, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr));
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, ifname.c_str(), IFNAMSIZ - 1);
  if (::ioctl(fd_, SIOCGIFFLAGS, &ifr) == 0 && !(ifr.ifr_flags & IFF_UP)) {
    ifr.ifr_flags = static_cast<short>(ifr.ifr_flags | IFF_UP);
    (void)::ioctl(fd_, SIOCSIFFLAGS, &ifr);
  }
  return 0;
}

void E1000Uplink::send(std::span<const std::uint8_t> frame) {
  if (fd_ < 0 || detached_.load(std::memory_order_relaxed) || ::send(fd_, frame.data(), frame.size(), MSG_DONTWAIT) < 0)
    tx_dropped_.fetch_add(1, std::memory_order_relaxed);
}

void E1000Uplink::start(E1000* nic, std::mutex* lock) {
  nic_ = nic;
  lock_ = lock;
  stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
  thread_ = std::thread([this] { run(); });
}

void E1000Uplink::stop() {
  if (!thread_.joinable()) return;
  const std::uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof(one));
  thread_.join();
  ::close(stop_fd_);
  stop_fd_ = -1;
}

void E1000Uplink::detach() {
  detached_.store(true);
  if (stop_fd_ < 0) return;  // no receive thread
  const std::uint64_t one = 1;
  (void)!::write(stop_fd_, &one, sizeof(one));
}

void E1000Uplink::run() {
  std::uint8_t frame[E1000::kMaxFrame];
  std::uint64_t deadline = 0;
  for (;;) {
    int timeout = -1;
    if (deadline != 0) {
      const std::uint64_t now = monotonic_ns();
      // Round up to whole milliseconds: poll() has no finer timeout.
      timeout = deadline <= now ? 0 : static_cast<int>((deadline - now + 999999) / 1000000);
    }
    pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(fds, 2, timeout) < 0 && errno != EINTR) return;
    if (fds[1].revents) return;
    // Drain what is queued, a bounded batch per lock hold so the vCPU is not starved.
    for (int i = 0; i < 64; ++i) {
      const ssize_t n = ::recv(fd_, frame, sizeof(frame), MSG_DONTWAIT);
      if (n <= 0) break;
      std::lock_guard lock(*lock_);
      nic_->receive({frame, static_cast<std::size_t>(n)});
    }
    std::lock_guard lock(*lock_);
    deadline = nic_->service(monotonic_ns());
  }
}

}  // namespace pvio::hv
