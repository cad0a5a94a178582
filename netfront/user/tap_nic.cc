// The user-mode netfront binding: the Platform seam over a pvio::domain::Domain, a TAP
// interface with virtio_net_hdr framing as the guest's network stack, and the NIC thread.
#include "pvio/netfront_user/tap_nic.h"

#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <system_error>

#include "pvio/domain/domain.h"
#include "pvio/event_channel/notifier.h"

namespace pvio::netfront::user {

namespace {

// struct virtio_net_hdr as the TAP reads and writes it with IFF_VNET_HDR (the virtio spec's
// legacy header, native endian; <linux/virtio_net.h> does not compile as C++).
struct virtio_net_hdr {
  std::uint8_t flags;
  std::uint8_t gso_type;
  std::uint16_t hdr_len;
  std::uint16_t gso_size;
  std::uint16_t csum_start;
  std::uint16_t csum_offset;
};
static_assert(sizeof(virtio_net_hdr) == 10);
constexpr std::uint8_t VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
constexpr std::uint8_t VIRTIO_NET_HDR_F_DATA_VALID = 2;
constexpr std::uint8_t VIRTIO_NET_HDR_GSO_NONE = 0;
constexpr std::uint8_t VIRTIO_NET_HDR_GSO_TCPV4 = 1;
constexpr std::uint8_t VIRTIO_NET_HDR_GSO_TCPV6 = 4;
constexpr std::uint8_t VIRTIO_NET_HDR_GSO_ECN = 0x80;

constexpr char kWatchToken[] = "netfront";
constexpr std::size_t kVnetHdr = sizeof(virtio_net_hdr);
constexpr std::size_t kMaxFrame = 65535 + 14 + 4;  // a TSO frame as the TAP hands it over

// Where the L4 header of an Ethernet frame starts and what it is: what the receiver of a
// partial checksum needs (netif carries no csum_start/offset; Linux netfront finds them with
// skb_checksum_setup in the same way). IPv4 with options, IPv6 without extension headers.
struct L4 {
  std::uint16_t start = 0;
  std::uint8_t proto = 0;
  std::uint16_t tcp_hdr_len = 0;
  bool ok = false;
};
L4 find_l4(const std::uint8_t* p, std::size_t len) {
  L4 r;
  if (len < 14) return r;
  const std::uint16_t type = static_cast<std::uint16_t>(p[12] << 8 | p[13]);
  std::size_t l3 = 14;
  if (type == 0x0800) {
    if (len < l3 + 20) return r;
    const std::size_t ihl = (p[l3] & 0x0F) * 4u;
    if ((p[l3] >> 4) != 4 || ihl < 20 || len < l3 + ihl) return r;
    r.proto = p[l3 + 9];
    r.start = static_cast<std::uint16_t>(l3 + ihl);
  } else if (type == 0x86DD) {
    if (len < l3 + 40 || (p[l3] >> 4) != 6) return r;
    r.proto = p[l3 + 6];
    r.start = static_cast<std::uint16_t>(l3 + 40);
  } else {
    return r;
  }
  if (r.proto == 6) {
    if (len < r.start + 20u) return r;
    r.tcp_hdr_len = static_cast<std::uint16_t>((p[r.start + 12] >> 4) * 4u);
    if (r.tcp_hdr_len < 20 || len < r.start + r.tcp_hdr_len) return r;
  } else if (r.proto != 17) {
    return r;
  } else if (len < r.start + 8u) {
    return r;
  }
  r.ok = true;
  return r;
}

// A flow's queue: addresses and ports, so one TCP stream stays on one ring (in order).
std::uint32_t flow_hash(const std::uint8_t* p, std::size_t len) {
  if (len < 14) return 0;
  const std::uint16_t type = static_cast<std::uint16_t>(p[12] << 8 | p[13]);
  std::size_t from = 0, to = 0;
  if (type == 0x0800 && len >= 14 + 20 + 4) {
    from = 14 + 12;
    to = 14 + (p[14] & 0x0F) * 4u + 4;
  } else if (type == 0x86DD && len >= 14 + 40 + 4) {
    from = 14 + 8;
    to = 14 + 40 + 4;
  }
  if (to > len) to = len;
  std::uint32_t h = 2166136261u;
  for (std::size_t i = from; i < to; ++i) h = (h ^ p[i]) * 16777619u;
  return h;
}

int tun_ioctl(int fd, unsigned long req, unsigned long arg) {
  return ::ioctl(fd, req, arg) == 0 ? 0 : -errno;
}

// The largest GSO frame the host stack may hand the TAP: a netif packet is at most
// XEN_NETIF_MAX_TX_SIZE (65535) bytes, and Linux's default (65536) is one too many. Linux
// netfront leaves room for the headers the same way (gso_max_size = 65535 - MAX_TCP_HEADER).
constexpr std::uint32_t kGsoMaxSize = 65535 - 320;

// RTM_NEWLINK with IFLA_GSO_MAX_SIZE on the TAP (what `ip link set DEV gso_max_size N` does).
int set_gso_max_size(const std::string& ifname, std::uint32_t size) {
  const unsigned idx = if_nametoindex(ifname.c_str());
  if (idx == 0) return -errno;
  const int fd = ::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) return -errno;
  struct {
    nlmsghdr nh;
    ifinfomsg ifi;
    char attrs[64];
  } req{};
  req.nh.nlmsg_type = RTM_NEWLINK;
  req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  req.ifi.ifi_family = AF_UNSPEC;
  req.ifi.ifi_index = static_cast<int>(idx);
  auto* rta = reinterpret_cast<rtattr*>(req.attrs);
  rta->rta_type = IFLA_GSO_MAX_SIZE;
  rta->rta_len = RTA_LENGTH(sizeof(std::uint32_t));
  std::memcpy(RTA_DATA(rta), &size, sizeof(size));
  req.nh.nlmsg_len = NLMSG_LENGTH(sizeof(ifinfomsg)) + RTA_ALIGN(rta->rta_len);
  int rc = 0;
  if (::send(fd, &req, req.nh.nlmsg_len, 0) < 0) {
    rc = -errno;
  } else {
    char buf[512];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    const auto* h = reinterpret_cast<const nlmsghdr*>(buf);
    if (n < 0) rc = -errno;
    else if (n >= static_cast<ssize_t>(NLMSG_LENGTH(sizeof(nlmsgerr))) && h->nlmsg_type == NLMSG_ERROR)
      rc = reinterpret_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
  }
  ::close(fd);
  return rc;
}

}  // namespace

class TapNic::DomainPlatform final : public Platform {
 public:
  DomainPlatform(TapNic& nic, domain::Domain& dom, XenstoreAccess& xs)
      : nic_(nic), dom_(dom), xs_(xs) {}

  // The domain's allocator only hands out fresh pages; pages freed on disconnect are kept
  // here and reused on the next connection.
  bool alloc_page(GuestPage& out) override {
    std::uint64_t gfn = 0;
    if (!free_.empty()) {
      gfn = free_.back();
      free_.pop_back();
    } else if (dom_.alloc_pages(1, &gfn) != 0) {
      return false;
    }
    out.gfn = gfn;
    out.addr = dom_.page(gfn);
    return out.addr != nullptr;
  }
  void free_page(const GuestPage& p) override { free_.push_back(p.gfn); }
  grant_ref_t grant_access(domid_t domid, std::uint64_t gfn, bool readonly) override {
    return dom_.grant_table().grant_access(domid, gfn, readonly);
  }
  bool end_access(grant_ref_t ref) override { return dom_.grant_table().end_access(ref); }
  int evtchn_alloc_unbound(domid_t remote, evtchn_port_t& port) override {
    TapNic* nic = &nic_;
    const evtchn::PortResult r = dom_.alloc_unbound(remote, [nic](evtchn_port_t) { nic->ring_event(); });
    if (r.rc != 0) return r.rc;
    port = r.port;
    return 0;
  }
  void evtchn_close(evtchn_port_t port) override { dom_.close(port); }
  void notify(evtchn_port_t port) override { dom_.send(port); }
  int xs_read(const char* path, char* buf, std::size_t cap, std::size_t& len) override {
    std::string v;
    const int rc = xs_.read(path, &v);
    if (rc != 0) return rc;
    if (v.size() + 1 > cap) return -XEN_ENOSPC;
    std::memcpy(buf, v.data(), v.size());
    buf[v.size()] = '\0';
    len = v.size();
    return 0;
  }
  int xs_write(const char* path, const char* value) override { return xs_.write(path, value); }
  int xs_remove(const char* path) override { return xs_.remove(path); }
  int xs_watch(const char* path) override { return xs_.watch(path, kWatchToken); }
  void xs_unwatch(const char* path) override { xs_.unwatch(path, kWatchToken); }
  // Only close() waits here (the NIC thread polls the xenstore fd itself).
  int xs_wait(std::uint32_t timeout_ms) override {
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      if (xs_.drain_events() > 0) return 0;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            deadline - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) return -XEN_ETIMEDOUT;
      xs_.wait(static_cast<int>(left < 50 ? left : 50));
    }
  }
  void log(LogLevel level, const char* msg) override {
    switch (level) {
      case LogLevel::Debug: spdlog::debug("{}", msg); break;
      case LogLevel::Info: spdlog::info("{}", msg); break;
      case LogLevel::Warn: spdlog::warn("{}", msg); break;
      case LogLevel::Error: spdlog::error("{}", msg); break;
    }
  }

 private:
  TapNic& nic_;
  domain::Domain& dom_;
  XenstoreAccess& xs_;
  std::vector<std::uint64_t> free_;
};

TapNic::TapNic(domain::Domain& dom, std::unique_ptr<XenstoreAccess> xs, const TapConfig& cfg)
    : dom_(dom), xs_(std::move(xs)), cfg_(cfg) {
  ifname_ = cfg_.ifname.empty()
                ? "pvnet" + std::to_string(dom.domid()) + "." + std::to_string(cfg_.devid)
                : cfg_.ifname;
  tap_fd_ = ::open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (tap_fd_ < 0) throw std::system_error(errno, std::generic_category(), "/dev/net/tun");
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  std::strncpy(ifr.ifr_name, ifname_.c_str(), IFNAMSIZ - 1);
  if (::ioctl(tap_fd_, TUNSETIFF, &ifr) != 0) {
    const int e = errno;
    ::close(tap_fd_);
    throw std::system_error(e, std::generic_category(), "TUNSETIFF " + ifname_);
  }
  ifname_ = ifr.ifr_name;
  if (const int rc = set_gso_max_size(ifname_, kGsoMaxSize); rc != 0)
    spdlog::warn("netfront {}: cannot set gso_max_size: {}", ifname_, std::strerror(-rc));
  int hdr = static_cast<int>(kVnetHdr);
  ::ioctl(tap_fd_, TUNSETVNETHDRSZ, &hdr);
  tun_ioctl(tap_fd_, TUNSETOFFLOAD, 0);
  int off = 0;
  ::ioctl(tap_fd_, TUNSETCARRIER, &off);  // no carrier until both ends are Connected

  platform_ = std::make_unique<DomainPlatform>(*this, dom_, *xs_);
  const std::size_t bytes = Netfront::storage_bytes(cfg_.limits);
  storage_raw_ = std::make_unique<std::uint8_t[]>(bytes + 16);
  auto* aligned = reinterpret_cast<std::uint8_t*>(
      (reinterpret_cast<std::uintptr_t>(storage_raw_.get()) + 15) & ~std::uintptr_t{15});
  core_ = std::make_unique<Netfront>(*platform_, cfg_.devid, cfg_.limits, aligned, bytes);
  core_->set_rx_handler(&TapNic::rx_cb, this);
  buf_.resize(kVnetHdr + kMaxFrame);
  wake_fd_ = evtchn::eventfd_create(true);
  nic_thread_ = std::thread([this] { nic_loop(); });
}

TapNic::~TapNic() {
  stop_.store(true);
  wake();
  nic_thread_.join();
  {
    std::lock_guard lk(core_mu_);
    const XenbusState st = core_->state();
    // Orderly close: Closing, and the backend's Closed before the pages go.
    if (st != XenbusState::Unknown && st != XenbusState::Closed) core_->close(3000);
  }
  core_.reset();
  ::close(wake_fd_);
  ::close(tap_fd_);
}

void TapNic::wake() { evtchn::eventfd_signal(wake_fd_); }

void TapNic::rx_cb(void* cookie, const RxPacket& pkt) { static_cast<TapNic*>(cookie)->deliver(pkt); }

// A received packet to the TAP: a virtio_net_hdr saying what the backend said about
// checksums and segmentation, then the pieces straight from the rx pages.
void TapNic::deliver(const RxPacket& pkt) {
  virtio_net_hdr h{};
  const Offload& o = pkt.offload;
  if (o.csum_blank || o.gso_type != netif::kGsoTypeNone) {
    std::uint8_t head[128];
    std::size_t n = 0;
    for (std::uint32_t i = 0; i < pkt.nr_frags && n < sizeof(head); ++i) {
      const std::size_t k = std::min<std::size_t>(pkt.frags[i].len, sizeof(head) - n);
      std::memcpy(head + n, pkt.frags[i].data, k);
      n += k;
    }
    const L4 l4 = find_l4(head, n);
    if (!l4.ok || (o.gso_type != netif::kGsoTypeNone && l4.proto != 6)) {
      ++extra_.tap_tx_dropped;
      return;
    }
    h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h.csum_start = l4.start;
    h.csum_offset = l4.proto == 6 ? 16 : 6;
    if (o.gso_type != netif::kGsoTypeNone) {
      h.gso_type = o.gso_type == netif::kGsoTypeTcpv4 ? VIRTIO_NET_HDR_GSO_TCPV4
                                                      : VIRTIO_NET_HDR_GSO_TCPV6;
      h.gso_size = o.gso_size;
      h.hdr_len = static_cast<std::uint16_t>(l4.start + l4.tcp_hdr_len);
    }
  } else if (o.data_validated) {
    h.flags = VIRTIO_NET_HDR_F_DATA_VALID;
  }
  iovec iov[1 + kMaxSlotsPerPacket];
  iov[0] = {&h, kVnetHdr};
  for (std::uint32_t i = 0; i < pkt.nr_frags; ++i)
    iov[1 + i] = {const_cast<std::uint8_t*>(pkt.frags[i].data), pkt.frags[i].len};
  if (::writev(tap_fd_, iov, static_cast<int>(1 + pkt.nr_frags)) < 0) ++extra_.tap_tx_dropped;
}

// One frame from the TAP to the tx ring. False only when the ring is full (keep the frame).
bool TapNic::send_frame_locked(const std::uint8_t* buf, std::size_t len, bool more) {
  if (len <= kVnetHdr) {
    ++extra_.tap_rx_dropped;
    return true;
  }
  virtio_net_hdr h;
  std::memcpy(&h, buf, kVnetHdr);
  TxPacket p;
  p.offload.csum_blank = (h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) != 0;
  p.offload.data_validated = (h.flags & VIRTIO_NET_HDR_F_DATA_VALID) != 0;
  switch (h.gso_type & ~VIRTIO_NET_HDR_GSO_ECN) {
    case VIRTIO_NET_HDR_GSO_NONE: break;
    case VIRTIO_NET_HDR_GSO_TCPV4: p.offload.gso_type = netif::kGsoTypeTcpv4; break;
    case VIRTIO_NET_HDR_GSO_TCPV6: p.offload.gso_type = netif::kGsoTypeTcpv6; break;
    default:  // not offered to the TAP (TUNSETOFFLOAD), so not expected
      ++extra_.tap_rx_dropped;
      return true;
  }
  if (p.offload.gso_type != netif::kGsoTypeNone) p.offload.gso_size = h.gso_size;
  Frag f{buf + kVnetHdr, static_cast<std::uint32_t>(len - kVnetHdr)};
  p.frags = &f;
  p.nr_frags = 1;
  p.more = more;
  if (core_->nr_queues() > 1) p.queue = static_cast<std::uint16_t>(flow_hash(static_cast<const std::uint8_t*>(f.data), f.len));
  const TxStatus st = core_->send(p);
  if (st == TxStatus::Busy) return false;
  if (st != TxStatus::Ok) ++extra_.tap_rx_dropped;
  return true;
}

// Up to a batch of frames, published and notified once at the end (xmit_more).
void TapNic::read_tap_locked() {
  for (int i = 0; i < 64 && held_.empty(); ++i) {
    const ssize_t n = ::read(tap_fd_, buf_.data(), buf_.size());
    if (n <= 0) break;
    if (!send_frame_locked(buf_.data(), static_cast<std::size_t>(n), true))
      held_.assign(buf_.data(), buf_.data() + n);
  }
  core_->push_tx();
}

// The TAP's carrier follows the device's (both ends Connected, not broken), and its
// offloads follow what the backend accepts: TSO needs checksum offload (TUN_F_CSUM).
void TapNic::on_carrier_change_locked() {
  const bool c = core_->carrier();
  if (c == carrier_) return;
  carrier_ = c;
  if (c) {
    const Negotiated& n = core_->negotiated();
    unsigned long off = 0;
    if (n.csum) {
      off |= TUN_F_CSUM;
      if (n.gso_tcpv4) off |= TUN_F_TSO4;
      if (n.gso_tcpv6) off |= TUN_F_TSO6;
    }
    tun_ioctl(tap_fd_, TUNSETOFFLOAD, off);
  } else {
    held_.clear();
  }
  int on = c ? 1 : 0;
  ::ioctl(tap_fd_, TUNSETCARRIER, &on);
  spdlog::info("netfront {}: carrier {}", ifname_, c ? "on" : "off");
}

void TapNic::handle_events_locked() {
  core_->handle_all_events();
  on_carrier_change_locked();
}

// Domain loop thread: an upcall on one of the rings' ports. Served here when the core is
// free; the flag is set before the try, so the holder or the woken NIC thread sees it.
void TapNic::ring_event() {
  ring_pending_.store(true, std::memory_order_release);
  if (stop_.load(std::memory_order_relaxed) || !core_mu_.try_lock()) {
    wake();
    return;
  }
  bool blocked = false;
  while (ring_pending_.exchange(false, std::memory_order_acq_rel)) handle_events_locked();
  blocked = !held_.empty();
  core_mu_.unlock();
  if (blocked) wake();  // tx slots may have come back: the NIC thread retries its frame
}

void TapNic::nic_loop() {
  while (!stop_.load()) {
    bool started, poll_tap, just_started = false;
    {
      std::lock_guard lk(core_mu_);
      started = core_->state() != XenbusState::Unknown;
      if (!started && core_->start() == 0) {
        started = just_started = true;
        // The guest's stack sends from the vif's MAC (the backend's switch only accepts
        // that). Through the TAP's own fd, so it works in whichever namespace it now is.
        ifreq ifr{};
        ifr.ifr_hwaddr.sa_family = 1;  // ARPHRD_ETHER
        std::memcpy(ifr.ifr_hwaddr.sa_data, core_->mac(), 6);
        if (::ioctl(tap_fd_, SIOCSIFHWADDR, &ifr) != 0)
          spdlog::warn("netfront {}: cannot set MAC: {}", ifname_, std::strerror(errno));
        spdlog::info("netfront {}: started for device/vif/{}", ifname_, cfg_.devid);
      }
      // Read the TAP only while frames can go somewhere.
      poll_tap = started && carrier_ && held_.empty();
    }
    const int xfd = xs_->event_fd();
    pollfd fds[3] = {{wake_fd_, POLLIN, 0}, {xfd, POLLIN, 0}, {tap_fd_, 0, 0}};
    if (poll_tap) fds[2].events = POLLIN;
    // Until the vif nodes exist, or without an event fd for xenstore, look every 50-200 ms.
    // The watch start() registered fires at once, but the client queues that event while it
    // waits for its reply, without a wake-up: look at the queue before sleeping.
    const int timeout = just_started ? 0 : !started ? 200 : (xfd < 0 ? 50 : -1);
    const int n = ::poll(fds, 3, timeout);
    if (n < 0 && errno != EINTR) break;
    if (fds[0].revents & POLLIN) {
      std::uint64_t v;
      [[maybe_unused]] const ssize_t r = ::read(wake_fd_, &v, sizeof v);
    }
    if (!started) continue;
    std::lock_guard lk(core_mu_);
    if (xfd >= 0 && (fds[1].revents & POLLIN)) xs_->wait(0);
    // Watch events may also have been queued while another request was in flight: drain
    // until quiet.
    while (xs_->drain_events() > 0) {
      core_->backend_changed();
      on_carrier_change_locked();
    }
    if (ring_pending_.exchange(false, std::memory_order_acq_rel)) handle_events_locked();
    if (!held_.empty() && send_frame_locked(held_.data(), held_.size(), false)) held_.clear();
    if (fds[2].revents & POLLIN) read_tap_locked();
  }
}

bool TapNic::carrier() {
  std::lock_guard lk(core_mu_);
  return core_->carrier();
}
XenbusState TapNic::state() {
  std::lock_guard lk(core_mu_);
  return core_->state();
}
TapStats TapNic::stats() {
  std::lock_guard lk(core_mu_);
  TapStats s = extra_;
  s.core = core_->stats();
  return s;
}

}  // namespace pvio::netfront::user
