// Event-channel round trip between two processes: Dom0 raises a guest port (set_pending in the
// guest's shared_info + upcall eventfd), the guest scans shared_info and kicks back through
// the port's doorbell eventfd. The peer is a raw eventfd ping-pong between the same two
// processes, in the same run; the closing line prints both latencies and their ratio.
#include <benchmark/benchmark.h>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <string>

#include "pvio/event_channel/port_table.h"
#include "pvio/event_channel/two_level.h"

#include "bench_main.h"

namespace {

using namespace pvio::evtchn;

struct SharedPages {
  int memfd = -1;
  void* mem = nullptr;
  SharedPages() {
    memfd = ::memfd_create("evtchn-bench", MFD_CLOEXEC);
    if (memfd < 0 || ::ftruncate(memfd, 2 * 4096) != 0) return;
    mem = ::mmap(nullptr, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    if (mem == MAP_FAILED) mem = nullptr;
  }
  ~SharedPages() {
    if (mem) ::munmap(mem, 2 * 4096);
    if (memfd >= 0) ::close(memfd);
  }
  shared_info* si() const { return static_cast<shared_info*>(mem); }
  std::atomic<int>* stop_flag() const {
    return reinterpret_cast<std::atomic<int>*>(static_cast<char*>(mem) + 4096);
  }
};

void report(benchmark::State& state, std::chrono::steady_clock::duration d) {
  const double ns = std::chrono::duration<double, std::nano>(d).count();
  state.counters["rtt_ns"] = state.iterations() ? ns / static_cast<double>(state.iterations()) : 0;
}

int wait_child(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return status;
}

void BM_EventChannelPingPong(benchmark::State& state) {
  SharedPages pages;
  const int upcall_fd = eventfd_create(false), kick_fd = eventfd_create(false);
  if (!pages.mem || upcall_fd < 0 || kick_fd < 0) {
    state.SkipWithError("memfd/eventfd set-up failed");
    return;
  }
  UpcallNotifier to_guest(pages.si(), upcall_fd);
  EventfdDoorbell to_dom0;
  auto guest = std::make_unique<PortTable>(1, pages.si(), &to_guest);
  auto dom0 = std::make_unique<PortTable>(0, nullptr, &to_dom0);
  const auto g = guest->alloc_unbound(0), g_stop = guest->alloc_unbound(0);
  const auto d = PortTable::bind_interdomain(*dom0, *guest, g.port);
  const auto d_stop = PortTable::bind_interdomain(*dom0, *guest, g_stop.port);
  to_dom0.set(d.port, kick_fd);

  const pid_t pid = ::fork();
  if (pid == 0) {  // the guest
    bool stop = false;
    while (!stop) {
      eventfd_wait(upcall_fd);
      two_level::do_upcall(*pages.si(), [&](pvio::evtchn_port_t p) {
        if (p == g_stop.port) stop = true;
        else guest->send(p);
      });
    }
    ::_exit(0);
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    dom0->send(d.port);
    eventfd_wait(kick_fd);
  }
  report(state, std::chrono::steady_clock::now() - t0);
  dom0->send(d_stop.port);
  wait_child(pid);
  ::close(upcall_fd);
  ::close(kick_fd);
}

void BM_RawEventfdPingPong(benchmark::State& state) {
  SharedPages pages;
  const int a = eventfd_create(false), b = eventfd_create(false);
  if (!pages.mem || a < 0 || b < 0) {
    state.SkipWithError("memfd/eventfd set-up failed");
    return;
  }
  std::atomic<int>* stop = pages.stop_flag();
  stop->store(0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    for (;;) {
      eventfd_wait(a);
      if (stop->load(std::memory_order_acquire)) ::_exit(0);
      eventfd_signal(b);
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) {
    eventfd_signal(a);
    eventfd_wait(b);
  }
  report(state, std::chrono::steady_clock::now() - t0);
  stop->store(1, std::memory_order_release);
  eventfd_signal(a);
  wait_child(pid);
  ::close(a);
  ::close(b);
}

BENCHMARK(BM_EventChannelPingPong)->Name("pingpong/evtchn")->UseRealTime();
BENCHMARK(BM_RawEventfdPingPong)->Name("pingpong/eventfd")->UseRealTime();

// The closing line: both round-trip latencies and their ratio.
class PingPongRatio final : public pvio::bench::RatioReporter {
  void collect(const Run& r) override {
    auto it = r.counters.find("rtt_ns");
    if (it != r.counters.end()) rtt_[r.run_name.function_name] = it->second.value;
  }
  void print_ratios() override {
    const double e = rtt_["pingpong/evtchn"], f = rtt_["pingpong/eventfd"];
    std::printf("\nround trip across two processes: evtchn %.0f ns, raw eventfd %.0f ns, "
                "evtchn/eventfd %.2f\n", e, f, f > 0 ? e / f : 0.0);
  }

  std::map<std::string, double> rtt_;
};

}  // namespace

int main(int argc, char** argv) {
  return pvio::bench::run_benchmarks<PingPongRatio>(argc, argv);
}
