// pvio-netpeer: the host side of `pvio bench`'s network rows, a DPDK program on a memif port.
//   pvio-netpeer --memif SOCKET --mode sink|source|ping [--pkt BYTES] [--time-ms MS] [--count N]
//     client of pvio-netback's memif uplink, facing the guest's workload: `sink` answers the
//     guest's hello with a go frame and counts what the guest transmits; `source` sends frames
//     to the guest (from its hello) as fast as the port takes them; `ping` sends one frame at a
//     time and waits for the guest's echo.
//   pvio-netpeer --native --memif SOCKET --mode sink|source|ping ...
//     the same measurement between a memif server and a memif client in this process, with no
//     guest: the limit of the uplink vdev (a DPDK loop on each end).
// Prints one line: PVIO-NETPEER {"mode":...,"packets":N,"elapsed_ns":...,"pps":...,...}.
#include <rte_bus_vdev.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "pvio/guest/net_frame.h"
#include "pvio/netback/dpdk.h"

namespace {

using pvio::netback::now_ns;
using pvio::netback::packet_pool;
namespace g = pvio::guest;

constexpr std::uint8_t kPeerMac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};  // the guest's default dst
constexpr std::uint8_t kNativeMac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x02};
constexpr unsigned kBurst = 32;

struct Options {
  std::string memif, mode;
  bool native = false;
  std::uint32_t pkt = 64;
  std::uint64_t time_ms = 2000, count = 2000, wait_ms = 60000;
};

int fail(const std::string& why) {
  std::printf("PVIO-NETPEER {\"ok\":false,\"why\":\"%s\"}\n", why.c_str());
  std::fflush(stdout);
  return 1;
}

// A memif port, started, with the link up (the other end connected) within timeout_ms; or -1.
// A client's vdev fails to probe while the server's socket is not there yet: retried.
int open_memif(const std::string& name, const std::string& devargs, int timeout_ms) {
  for (int waited = 0; rte_vdev_init(name.c_str(), devargs.c_str()) != 0; waited += 100) {
    if (waited >= timeout_ms) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::uint16_t port = 0;
  if (rte_eth_dev_get_port_by_name(name.c_str(), &port) != 0) return -1;
  rte_eth_conf conf{};
  if (rte_eth_dev_configure(port, 1, 1, &conf) != 0 ||
      rte_eth_rx_queue_setup(port, 0, 1024, SOCKET_ID_ANY, nullptr, packet_pool()) != 0 ||
      rte_eth_tx_queue_setup(port, 0, 1024, SOCKET_ID_ANY, nullptr) != 0 || rte_eth_dev_start(port) != 0)
    return -1;
  return port;
}

bool link_up(std::uint16_t port, int timeout_ms) {
  rte_eth_link link{};
  for (int i = 0; i < timeout_ms / 10 && !link.link_status; ++i) {
    // A memif client hands the server its buffers from inside its rx burst (nothing arrives
    // before the link is up, so nothing is lost here).
    rte_mbuf* m[kBurst];
    const std::uint16_t n = rte_eth_rx_burst(port, 0, m, kBurst);
    rte_pktmbuf_free_bulk(m, n);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    rte_eth_link_get_nowait(port, &link);
  }
  return link.link_status != 0;
}

rte_mbuf* make(const std::uint8_t* dst, const std::uint8_t* src, std::uint32_t seq, std::uint32_t len) {
  rte_mbuf* m = rte_pktmbuf_alloc(packet_pool());
  if (m == nullptr) return nullptr;
  auto* p = reinterpret_cast<std::uint8_t*>(rte_pktmbuf_append(m, static_cast<std::uint16_t>(len)));
  g::net_frame_fill(p, len, dst, src, seq);
  return m;
}

// A thread of ours as an EAL thread, so the mempool keeps a per-thread cache for it.
void register_thread() {
  if (rte_lcore_id() == LCORE_ID_ANY) (void)rte_thread_register();
}

// Sends until `stop` or `deadline_ns`; returns frames the port took.
std::uint64_t blast(std::uint16_t port, const std::uint8_t* dst, const std::uint8_t* src, std::uint32_t len,
                    std::uint64_t deadline_ns, const std::atomic<bool>* stop) {
  register_thread();
  std::uint64_t seq = 0;
  rte_mbuf* m[kBurst];
  while (now_ns() < deadline_ns && !(stop && stop->load(std::memory_order_relaxed))) {
    unsigned n = 0;
    for (; n < kBurst; ++n) {
      m[n] = make(dst, src, static_cast<std::uint32_t>(seq + n), len);
      if (m[n] == nullptr) break;
    }
    const std::uint16_t sent = rte_eth_tx_burst(port, 0, m, static_cast<std::uint16_t>(n));
    rte_pktmbuf_free_bulk(m + sent, n - sent);
    seq += sent;
  }
  return seq;
}

struct Count {
  std::uint64_t packets = 0, bytes = 0, bad = 0, first_ns = 0, last_ns = 0;
};

// Counts frames of ours (not hellos) until `time_ms` after the first, or idle_ms without one.
Count count(std::uint16_t port, std::uint64_t time_ms, std::uint64_t idle_ms, std::uint64_t wait_ms) {
  register_thread();
  Count c;
  const std::uint64_t start = now_ns();
  rte_mbuf* m[kBurst];
  for (;;) {
    const std::uint64_t now = now_ns();
    if (c.packets == 0 && now - start > wait_ms * 1000000) break;
    if (c.packets != 0 && (now - c.first_ns > time_ms * 1000000 || now - c.last_ns > idle_ms * 1000000)) break;
    const std::uint16_t n = rte_eth_rx_burst(port, 0, m, kBurst);
    for (std::uint16_t i = 0; i < n; ++i) {
      const auto* p = rte_pktmbuf_mtod(m[i], const std::uint8_t*);
      const std::uint32_t len = rte_pktmbuf_data_len(m[i]);
      if (g::net_frame_is_ours(p, len) && g::net_frame_seq(p) != g::kHelloSeq) {
        if (c.packets == 0) c.first_ns = now;
        c.last_ns = now;
        ++c.packets;
        c.bytes += m[i]->pkt_len;
        // The payload of one frame in 64 (checking all would cap the rate being measured).
        if ((c.packets & 63) == 1 && !g::net_frame_payload_ok(p, len)) ++c.bad;
      }
    }
    rte_pktmbuf_free_bulk(m, n);
  }
  return c;
}

// The guest's hello: its MAC. False after wait_ms.
bool wait_hello(std::uint16_t port, std::uint64_t wait_ms, std::uint8_t mac[6]) {
  const std::uint64_t deadline = now_ns() + wait_ms * 1000000;
  rte_mbuf* m[kBurst];
  bool got = false;
  while (!got && now_ns() < deadline) {
    const std::uint16_t n = rte_eth_rx_burst(port, 0, m, kBurst);
    for (std::uint16_t i = 0; i < n && !got; ++i) {
      const auto* p = rte_pktmbuf_mtod(m[i], const std::uint8_t*);
      if (g::net_frame_is_ours(p, rte_pktmbuf_data_len(m[i])) && g::net_frame_seq(p) == g::kHelloSeq) {
        std::memcpy(mac, p + 6, 6);
        got = true;
      }
    }
    rte_pktmbuf_free_bulk(m, n);
  }
  return got;
}

// One frame out, its echo (same seq) back; round trips in ns. An echo not back in 1 s is
// counted lost.
std::vector<std::uint64_t> ping(std::uint16_t port, const std::uint8_t* dst, const std::uint8_t* src,
                                std::uint32_t len, std::uint64_t n, std::uint64_t* lost) {
  std::vector<std::uint64_t> rtt;
  rte_mbuf* m[kBurst];
  for (std::uint64_t i = 0; i < n; ++i) {
    rte_mbuf* f = make(dst, src, static_cast<std::uint32_t>(i), len);
    if (f == nullptr) break;
    const std::uint64_t t0 = now_ns();
    if (rte_eth_tx_burst(port, 0, &f, 1) != 1) {
      rte_pktmbuf_free(f);
      ++*lost;
      continue;
    }
    bool back = false;
    while (!back && now_ns() - t0 < 1000000000ull) {
      const std::uint16_t k = rte_eth_rx_burst(port, 0, m, kBurst);
      for (std::uint16_t j = 0; j < k; ++j) {
        const auto* p = rte_pktmbuf_mtod(m[j], const std::uint8_t*);
        if (g::net_frame_is_ours(p, rte_pktmbuf_data_len(m[j])) && g::net_frame_seq(p) == i) back = true;
      }
      rte_pktmbuf_free_bulk(m, k);
    }
    if (back) rtt.push_back(now_ns() - t0);
    else ++*lost;
  }
  return rtt;
}

// Echoes every frame of ours back (MACs swapped) until `stop`.
void echo_loop(std::uint16_t port, const std::atomic<bool>& stop) {
  register_thread();
  rte_mbuf* m[kBurst];
  while (!stop.load(std::memory_order_relaxed)) {
    const std::uint16_t n = rte_eth_rx_burst(port, 0, m, kBurst);
    for (std::uint16_t i = 0; i < n; ++i) {
      auto* p = rte_pktmbuf_mtod(m[i], std::uint8_t*);
      std::uint8_t t[6];
      std::memcpy(t, p, 6);
      std::memcpy(p, p + 6, 6);
      std::memcpy(p + 6, t, 6);
    }
    const std::uint16_t sent = rte_eth_tx_burst(port, 0, m, n);
    rte_pktmbuf_free_bulk(m + sent, n - sent);
  }
}

void print_rate(const Options& o, const char* side, std::uint64_t packets, std::uint64_t bytes,
                std::uint64_t elapsed_ns, std::uint64_t offered, std::uint64_t bad) {
  std::printf("PVIO-NETPEER {\"ok\":%s,\"mode\":\"%s\",\"native\":%s,\"counted_at\":\"%s\",\"pkt\":%u,"
              "\"packets\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"elapsed_ns\":%" PRIu64 ",\"pps\":%.0f,"
              "\"offered\":%" PRIu64 ",\"bad\":%" PRIu64 "}\n",
              packets > 1 && bad == 0 ? "true" : "false", o.mode.c_str(), o.native ? "true" : "false", side,
              o.pkt, packets, bytes, elapsed_ns,
              elapsed_ns ? static_cast<double>(packets - 1) * 1e9 / static_cast<double>(elapsed_ns) : 0.0,
              offered, bad);
}

void print_ping(const Options& o, std::vector<std::uint64_t> rtt, std::uint64_t lost, std::uint64_t elapsed_ns) {
  std::sort(rtt.begin(), rtt.end());
  const auto pct = [&](unsigned p) { return rtt.empty() ? 0 : rtt[(rtt.size() - 1) * p / 100]; };
  std::printf("PVIO-NETPEER {\"ok\":%s,\"mode\":\"ping\",\"native\":%s,\"pkt\":%u,\"packets\":%zu,"
              "\"lost\":%" PRIu64 ",\"elapsed_ns\":%" PRIu64 ",\"p50_ns\":%" PRIu64 ",\"p99_ns\":%" PRIu64
              ",\"min_ns\":%" PRIu64 "}\n",
              !rtt.empty() && lost == 0 ? "true" : "false", o.native ? "true" : "false", o.pkt, rtt.size(),
              lost, elapsed_ns, pct(50), pct(99), rtt.empty() ? 0 : rtt.front());
}

// Facing the guest through pvio-netback's memif uplink.
int run_guest_peer(const Options& o) {
  const int port = open_memif("net_memif_peer", "role=client,id=0,socket=" + o.memif, 10000);
  if (port < 0) return fail("cannot create the memif client port on " + o.memif);
  const auto p = static_cast<std::uint16_t>(port);
  if (!link_up(p, 10000)) return fail("memif did not connect to " + o.memif);
  std::uint8_t guest[6];
  if (!wait_hello(p, o.wait_ms, guest)) return fail("no hello from the guest");
  if (o.mode == "sink") {
    // Go: the guest starts sending when it sees a frame of ours.
    if (rte_mbuf* go = make(guest, kPeerMac, 0, g::kNetMinFrame)) {
      if (rte_eth_tx_burst(p, 0, &go, 1) != 1) rte_pktmbuf_free(go);
    }
    const Count c = count(p, o.time_ms + 1000, 1000, 30000);
    print_rate(o, "peer", c.packets, c.bytes, c.last_ns - c.first_ns, 0, c.bad);
  } else if (o.mode == "source") {
    const std::uint64_t sent = blast(p, guest, kPeerMac, o.pkt, now_ns() + o.time_ms * 1000000, nullptr);
    print_rate(o, "guest", 0, 0, 0, sent, 0);  // the guest counts what arrived
  } else {
    std::uint64_t lost = 0;
    const std::uint64_t t0 = now_ns();
    auto rtt = ping(p, guest, kPeerMac, o.pkt, o.count, &lost);
    print_ping(o, std::move(rtt), lost, now_ns() - t0);
  }
  std::fflush(stdout);
  rte_eth_dev_stop(p);
  return 0;
}

// Both ends in this process: the server stands where pvio-netback's uplink is, the client
// where the peer is; the server end does what the guest does.
int run_native(const Options& o) {
  const int server = open_memif("net_memif_nsrv", "role=server,id=0,socket=" + o.memif, 0);
  const int client = open_memif("net_memif_ncli", "role=client,id=0,socket=" + o.memif, 0);
  if (server < 0 || client < 0) return fail("cannot create the memif pair on " + o.memif);
  const auto s = static_cast<std::uint16_t>(server), c = static_cast<std::uint16_t>(client);
  std::atomic<bool> ready{false}, stop{false};
  std::thread srv_link([&] {
    register_thread();
    ready = link_up(s, 10000);
  });
  const bool cup = link_up(c, 10000);
  srv_link.join();
  if (!cup || !ready) return fail("the memif pair did not connect");
  if (o.mode == "sink") {  // the guest's tx: server sends, client counts
    std::thread tx([&] { blast(s, kPeerMac, kNativeMac, o.pkt, now_ns() + (o.time_ms + 2000) * 1000000, &stop); });
    const Count k = count(c, o.time_ms, 1000, 5000);
    stop = true;
    tx.join();
    print_rate(o, "peer", k.packets, k.bytes, k.last_ns - k.first_ns, 0, k.bad);
  } else if (o.mode == "source") {  // the guest's rx: client sends, server counts
    Count k;
    std::thread rx([&] { k = count(s, o.time_ms, 1000, 5000); });
    blast(c, kNativeMac, kPeerMac, o.pkt, now_ns() + o.time_ms * 1000000 + 500000000, &stop);
    rx.join();
    print_rate(o, "server", k.packets, k.bytes, k.last_ns - k.first_ns, 0, k.bad);
  } else {
    std::thread echo([&] { echo_loop(s, stop); });
    std::uint64_t lost = 0;
    const std::uint64_t t0 = now_ns();
    auto rtt = ping(c, kNativeMac, kPeerMac, o.pkt, o.count, &lost);
    const std::uint64_t elapsed = now_ns() - t0;
    stop = true;
    echo.join();
    print_ping(o, std::move(rtt), lost, elapsed);
  }
  std::fflush(stdout);
  rte_eth_dev_stop(c);
  rte_eth_dev_stop(s);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool v = i + 1 < argc;
    if (a == "--memif" && v) o.memif = argv[++i];
    else if (a == "--mode" && v) o.mode = argv[++i];
    else if (a == "--native") o.native = true;
    else if (a == "--pkt" && v) o.pkt = static_cast<std::uint32_t>(std::stoul(argv[++i]));
    else if (a == "--time-ms" && v) o.time_ms = std::stoull(argv[++i]);
    else if (a == "--count" && v) o.count = std::stoull(argv[++i]);
    else if (a == "--wait-ms" && v) o.wait_ms = std::stoull(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--native] --memif SOCKET --mode sink|source|ping [--pkt 64] "
                           "[--time-ms 2000] [--count 2000] [--wait-ms 60000]\n", argv[0]);
      return 2;
    }
  }
  if (o.memif.empty() || (o.mode != "sink" && o.mode != "source" && o.mode != "ping") ||
      o.pkt < g::kNetMinFrame || o.pkt > g::kNetMaxFrame)
    return fail("bad arguments");
  try {
    pvio::netback::dpdk_init();
  } catch (const std::exception& e) {
    return fail(e.what());
  }
  return o.native ? run_native(o) : run_guest_peer(o);
}
