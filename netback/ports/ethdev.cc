// An ethdev uplink: device set-up and the port's forwarding thread.
#include <rte_bus_vdev.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "pvio/event_channel/notifier.h"
#include "pvio/netback/dpdk.h"
#include "pvio/netback/uplink.h"

namespace pvio::netback {
namespace {

constexpr std::uint16_t kDescs = 512;
constexpr unsigned kBurst = 32;
constexpr int kMaxSegments = 64;           // TSO segments of one packet
constexpr std::size_t kMaxBatch = 64;      // the switch's batch (and more than kBurst)

}  // namespace

EthdevPort::EthdevPort(const UplinkSpec& spec, Switch& sw, std::uint64_t spin_ns)
    : Port(spec.kind + ":" + spec.arg, 1), switch_(sw), spin_ns_(spin_ns) {
  auto [vdev, args] = uplink_devargs(spec);
  vdev_ = vdev;
  if (rte_vdev_init(vdev_.c_str(), args.c_str()) != 0)
    throw std::runtime_error("cannot create " + vdev_ + "," + args);
  if (rte_eth_dev_get_port_by_name(vdev_.c_str(), &port_id_) != 0) {
    rte_vdev_uninit(vdev_.c_str());
    throw std::runtime_error("no ethdev for " + vdev_);
  }
  // Rx queue interrupts where the device has them (memif), so an idle port sleeps until a
  // frame arrives instead of looking every 200 us; devices without them are configured plain.
  rte_eth_conf conf{};
  conf.intr_conf.rxq = 1;
  bool configured = rte_eth_dev_configure(port_id_, 1, 1, &conf) == 0;
  if (!configured) {
    conf.intr_conf.rxq = 0;
    configured = rte_eth_dev_configure(port_id_, 1, 1, &conf) == 0;
  }
  if (!configured ||
      rte_eth_rx_queue_setup(port_id_, 0, kDescs, SOCKET_ID_ANY, nullptr, packet_pool()) != 0 ||
      rte_eth_tx_queue_setup(port_id_, 0, kDescs, SOCKET_ID_ANY, nullptr) != 0 ||
      rte_eth_dev_start(port_id_) != 0) {
    rte_eth_dev_close(port_id_);
    rte_vdev_uninit(vdev_.c_str());
    throw std::runtime_error("cannot start " + vdev_);
  }
  if (conf.intr_conf.rxq) rx_intr_fd_ = rte_eth_dev_rx_intr_ctl_q_get_fd(port_id_, 0);
  if (rx_intr_fd_ >= 0) {
    char target[64] = {};
    const std::string link = "/proc/self/fd/" + std::to_string(rx_intr_fd_);
    // Only an eventfd (memif's) is used: tap's is the device fd itself, and arming it made
    // the tap PMD lose transmits now and then.
    if (::readlink(link.c_str(), target, sizeof target - 1) <= 0 ||
        std::string_view(target).find("eventfd") == std::string_view::npos)
      rx_intr_fd_ = -1;
  }
  // Frames for every guest MAC arrive here, not only the device's own.
  rte_eth_promiscuous_enable(port_id_);
  tx_scratch_.reset(new rte_mbuf*[kMaxBatch * kMaxSegments]);
  tx_len_.reset(new std::uint32_t[kMaxBatch * kMaxSegments]);
  switch_.attach(*this);
  thread_ = std::thread([this] { worker(); });
}

EthdevPort::~EthdevPort() {
  stop_.store(true);
  wake(0);
  evtchn::eventfd_signal(wake_fd(0));
  if (thread_.joinable()) thread_.join();
  switch_.detach(*this);
  rte_eth_dev_stop(port_id_);
  rte_eth_dev_close(port_id_);
  rte_vdev_uninit(vdev_.c_str());
}

UplinkStats EthdevPort::stats() const {
  UplinkStats s;
  s.rx_packets = rx_packets_.get();
  s.rx_bytes = rx_bytes_.get();
  s.tx_packets = tx_packets_.get();
  s.tx_bytes = tx_bytes_.get();
  for (std::size_t d = 0; d < kDropCount; ++d) s.drops[d] = drop_count(static_cast<Drop>(d));
  return s;
}

bool EthdevPort::send_direct(rte_mbuf** pkts, unsigned n) {
  for (unsigned done = 0; done < n;) {
    const unsigned k = std::min<unsigned>(n - done, kMaxBatch);
    while (tx_lock_.test_and_set(std::memory_order_acquire)) __builtin_ia32_pause();
    transmit(pkts + done, k);
    tx_lock_.clear(std::memory_order_release);
    done += k;
  }
  return true;
}

void EthdevPort::transmit(rte_mbuf** pkts, unsigned n) {
  // Under tx_lock_, so one scratch array serves every forwarding thread.
  rte_mbuf** out = tx_scratch_.get();
  std::uint32_t* len = tx_len_.get();
  std::size_t nout = 0;
  for (unsigned i = 0; i < n; ++i) {
    // The device is not asked to offload: GSO packets are segmented and partial checksums
    // completed here.
    if (pkts[i]->ol_flags & RTE_MBUF_F_TX_TCP_SEG) {
      const int k = segment_tcp(pkts[i], out + nout, kMaxSegments);
      rte_pktmbuf_free(pkts[i]);
      if (k <= 0) {
        drops(Drop::GsoUnsupported).add();
        continue;
      }
      nout += static_cast<std::size_t>(k);
      continue;
    }
    if (!complete_l4_checksum(pkts[i])) {
      drops(Drop::ChecksumSetup).add();
      rte_pktmbuf_free(pkts[i]);
      continue;
    }
    out[nout++] = pkts[i];
  }
  for (std::size_t i = 0; i < nout; ++i) len[i] = out[i]->pkt_len;  // owned by the device once sent
  std::size_t sent = 0;
  while (sent < nout) {
    const auto chunk = static_cast<std::uint16_t>(std::min<std::size_t>(nout - sent, 512));
    const std::uint16_t k = rte_eth_tx_burst(port_id_, 0, out + sent, chunk);
    sent += k;
    if (k < chunk) break;
  }
  std::uint64_t bytes = 0;
  for (std::size_t i = 0; i < sent; ++i) bytes += len[i];
  tx_packets_.add(sent);
  tx_bytes_.add(bytes);
  for (std::size_t i = sent; i < nout; ++i) {
    drops(Drop::TxFailed).add();
    rte_pktmbuf_free(out[i]);
  }
}

void EthdevPort::worker() {
  const bool registered = rte_thread_register() == 0;  // a mempool cache of its own
  const unsigned reader = switch_.register_reader();
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd(0);
  ::epoll_ctl(ep, EPOLL_CTL_ADD, wake_fd(0), &ev);
  if (rx_intr_fd_ >= 0) {
    ev.data.fd = rx_intr_fd_;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, rx_intr_fd_, &ev) != 0) rx_intr_fd_ = -1;
  }
  rte_mbuf* pkts[kBurst];
  std::uint64_t last_work = 0, idle_polls = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    bool work = false;
    const std::uint16_t n = rte_eth_rx_burst(port_id_, 0, pkts, kBurst);
    if (n != 0) {
      work = true;
      std::uint64_t bytes = 0;
      for (std::uint16_t i = 0; i < n; ++i) {
        bytes += pkts[i]->pkt_len;
        pkts[i]->ol_flags = 0;  // nothing the device said is passed on as an offload
      }
      rx_packets_.add(n);
      rx_bytes_.add(bytes);
      switch_.forward(reader, *this, pkts, n);
    }
    // Batches the switch could not send directly (none today; kept so nothing queued is lost).
    const unsigned m =
        rte_ring_sc_dequeue_burst(inbound(0), reinterpret_cast<void**>(pkts), kBurst, nullptr);
    if (m != 0) {
      work = true;
      send_direct(pkts, m);
    }
    if (work) {
      idle_polls = 0;
      continue;
    }
    if (idle_polls++ == 0) last_work = now_ns();
    if ((idle_polls & 63) != 0 || now_ns() - last_work < spin_ns_) {
      __builtin_ia32_pause();
      continue;
    }
    idle_polls = 0;
    // Idle: the inbound ring wakes us at once, and so does the device's rx interrupt where it
    // has one (armed, then the queue looked at once more so a frame that arrived in between is
    // not left waiting); without one the device's rx is looked at every 200 us.
    const bool armed = rx_intr_fd_ >= 0 && rte_eth_dev_rx_intr_enable(port_id_, 0) == 0;
    if (armed) {
      const std::uint16_t late = rte_eth_rx_burst(port_id_, 0, pkts, kBurst);
      if (late != 0) {
        rte_eth_dev_rx_intr_disable(port_id_, 0);
        std::uint64_t bytes = 0;
        for (std::uint16_t i = 0; i < late; ++i) {
          bytes += pkts[i]->pkt_len;
          pkts[i]->ol_flags = 0;
        }
        rx_packets_.add(late);
        rx_bytes_.add(bytes);
        switch_.forward(reader, *this, pkts, late);
        continue;
      }
    }
    sleeping(0).store(true, std::memory_order_seq_cst);
    if (rte_ring_count(inbound(0)) == 0) {
      timespec ts{0, armed ? 10'000'000 : 200'000};
      epoll_event out[2];
      const int r = ::epoll_pwait2(ep, out, 2, &ts, nullptr);
      for (int i = 0; i < r; ++i) {
        std::uint64_t v;
        [[maybe_unused]] const ssize_t rr = ::read(out[i].data.fd, &v, sizeof v);
      }
    }
    sleeping(0).store(false, std::memory_order_relaxed);
    if (armed) rte_eth_dev_rx_intr_disable(port_id_, 0);
  }
  ::close(ep);
  switch_.unregister_reader(reader);
  if (registered) rte_thread_unregister();
}

}  // namespace pvio::netback
