// netback's forwarding rate, with its peer in the same run:
//  - pv: a frontend driven directly by the benchmark keeps a vif's tx ring full of 64 B or
//    1500 B packets (one granted page each); the backend parses them, grant-copies them into
//    mbufs and forwards them through the switch to a net_null uplink, whose thread hands them
//    to rte_eth_tx_burst. Packets/s are counted at the frontend as tx responses.
//  - dpdk_iofwd: DPDK's io-forward loop (testpmd's io mode) on a net_null vdev of the same
//    packet size with copy=1 (rx writes the packet, tx reads it): rte_eth_rx_burst then
//    rte_eth_tx_burst on one core.
// A closing table prints each size's packets/s and the ratio pv / io-forward.
#include <benchmark/benchmark.h>
#include <rte_bus_vdev.h>
#include <rte_ethdev.h>

#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>

#include "../tests/netback/netback_guest.h"
#include "pvio/netback/uplink.h"
#include "pvio/netback/vif.h"

#include "bench_main.h"

namespace {

using namespace pvio;
using namespace pvio::netback;
using pvio::netback::test::GuestVif;
using pvio::netback::test::TestGuest;

constexpr MacAddr kSrc{0x00, 0x16, 0x3e, 0x00, 0x00, 0x01};
constexpr MacAddr kDst{0x00, 0x16, 0x3e, 0x00, 0x00, 0x02};  // never learned: to the uplink

// CPU seconds used so far by every thread of this process but the calling one (the backend's
// vif and uplink threads here), from /proc/self/task/*/stat.
double other_threads_cpu_seconds() {
  const long self = ::syscall(SYS_gettid);
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  double total = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    if (std::stol(e.path().filename().string()) == self) continue;
    std::ifstream in(e.path() / "stat");
    std::string line;
    std::getline(in, line);
    const auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    unsigned long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14) utime = std::stoul(field);
      if (i == 15) stime = std::stoul(field);
    }
    total += static_cast<double>(utime + stime) / tick;
  }
  return total;
}

void BM_pv(benchmark::State& st) {
  const auto size = static_cast<std::uint16_t>(st.range(0));
  dpdk_init();
  Switch sw;
  EthdevPort sink(UplinkSpec{"null", ""}, sw);
  TestGuest guest(3);
  GuestVif front(guest, kSrc);
  VifConfig cfg = front.config("vif3.0");
  Vif vif(cfg, sw);
  vif.start();

  const auto frame = test::make_frame(kDst, kSrc, size, 1);
  for (unsigned i = 0; i < 256; ++i) std::memcpy(front.tx_page(i), frame.data(), size);
  auto post = [&] {
    const unsigned i = front.next_tx_index();
    netif::netif_tx_request r{};
    r.gref = front.tx_gref(i);
    r.id = static_cast<std::uint16_t>(i);
    r.size = size;
    front.post_raw(r);
  };
  netif::TxFrontRing& tx = front.tx();
  while (tx.free_requests() > 0) post();
  front.push_tx();

  std::uint64_t done = 0;
  constexpr unsigned kBatch = 32;
  const double cpu0 = other_threads_cpu_seconds();
  const auto wall0 = std::chrono::steady_clock::now();
  while (st.KeepRunningBatch(kBatch)) {
    unsigned got = 0, idle = 0;
    while (got < kBatch) {
      const ring::RingCheck c = tx.unconsumed_responses();
      if (!c.ok()) {
        st.SkipWithError("bad response index");
        return;
      }
      for (std::uint32_t k = 0; k < c.count; ++k) {
        netif::netif_tx_response r;
        tx.consume_response(r);
        if (r.status != netif::kRspOkay) {
          st.SkipWithError("error response");
          return;
        }
        post();
      }
      if (c.count != 0) front.push_tx();
      got += c.count;
      // Idle: spin a little, then ask for an event (rsp_event) and sleep, as netfront does;
      // on a machine with fewer cores than spinning threads a pure spin starves the backend.
      if (c.count == 0 && ++idle > 256) {
        idle = 0;
        if (tx.final_check_for_responses().count == 0) front.wait_event(100);
      }
    }
    done += got;
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(done));
  const double cpu = other_threads_cpu_seconds() - cpu0;
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  // Backend cores busy on average (polling included, as a DPDK core is), and the rate per core.
  st.counters["backend_cores"] = cpu / wall;
  st.counters["pps_per_backend_core"] = cpu > 0 ? static_cast<double>(done) / cpu : 0.0;
  vif.stop();
  st.counters["uplink_tx"] = static_cast<double>(sink.stats().tx_packets);
}

void BM_dpdk_iofwd(benchmark::State& st) {
  const auto size = static_cast<unsigned>(st.range(0));
  dpdk_init();
  static unsigned serial = 0;
  const std::string name = "net_null_fwd" + std::to_string(serial++);
  const std::string args = "size=" + std::to_string(size) + ",copy=1";
  if (rte_vdev_init(name.c_str(), args.c_str()) != 0) {
    st.SkipWithError("cannot create net_null");
    return;
  }
  std::uint16_t port = 0;
  rte_eth_dev_get_port_by_name(name.c_str(), &port);
  rte_eth_conf conf{};
  rte_eth_dev_configure(port, 1, 1, &conf);
  rte_eth_rx_queue_setup(port, 0, 512, SOCKET_ID_ANY, nullptr, packet_pool());
  rte_eth_tx_queue_setup(port, 0, 512, SOCKET_ID_ANY, nullptr);
  rte_eth_dev_start(port);
  rte_mbuf* pkts[32];
  std::uint64_t done = 0;
  while (st.KeepRunningBatch(32)) {
    unsigned got = 0;
    while (got < 32) {
      const std::uint16_t n = rte_eth_rx_burst(port, 0, pkts, 32);
      const std::uint16_t sent = rte_eth_tx_burst(port, 0, pkts, n);
      for (std::uint16_t i = sent; i < n; ++i) rte_pktmbuf_free(pkts[i]);
      got += sent;
    }
    done += got;
  }
  st.SetItemsProcessed(static_cast<std::int64_t>(done));
  rte_eth_dev_stop(port);
  rte_eth_dev_close(port);
  rte_vdev_uninit(name.c_str());
}

BENCHMARK(BM_pv)->Arg(64)->Arg(1500)->UseRealTime()->MinTime(1.0);
BENCHMARK(BM_dpdk_iofwd)->Arg(64)->Arg(1500)->UseRealTime()->MinTime(1.0);

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      if (r.error_occurred) continue;
      if (r.run_type == Run::RT_Aggregate && r.aggregate_name != "median") continue;
      auto it = r.counters.find("items_per_second");
      if (it == r.counters.end()) continue;
      const std::string name = r.run_name.function_name;
      const std::string size = r.run_name.args;
      rates_[size][name] = it->second.value;
      if (auto pc = r.counters.find("pps_per_backend_core"); pc != r.counters.end())
        per_core_[size] = pc->second.value;
    }
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    std::printf("\n%-8s %14s %20s %16s %8s\n", "size", "pv pkts/s", "pv pkts/s/core", "io-fwd pkts/s",
                "ratio");
    for (auto& [size, m] : rates_) {
      const double pv = m.count("BM_pv") ? m["BM_pv"] : 0.0;
      const double io = m.count("BM_dpdk_iofwd") ? m["BM_dpdk_iofwd"] : 0.0;
      std::printf("%-8s %14.0f %20.0f %16.0f %8.2f\n", size.c_str(), pv, per_core_[size], io,
                  io > 0 ? pv / io : 0.0);
    }
  }

 private:
  std::map<std::string, std::map<std::string, double>> rates_;
  std::map<std::string, double> per_core_;
};

}  // namespace

int main(int argc, char** argv) {
  return pvio::bench::run_benchmarks<RatioReporter>(argc, argv);
}
