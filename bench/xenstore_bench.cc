// xenstore READ/WRITE round trips: over the unix socket to a pvio-xenstored started here, over
// a guest ring served in-process, and over a real guest's ring across two processes (this
// process is a user-mode domain, pvio-xenstored serves its ring after INTRODUCE), each next to
// a raw unix-socket request/response of the same sizes (the peer). The socket WRITE also runs
// against a daemon without persistence (--no-persist) and one that fdatasyncs every journal
// append (--fsync always), so the journal's cost shows as a ratio. Prints ratios after the run.
#include <benchmark/benchmark.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pvio/domain/domain.h"
#include "pvio/event_channel/notifier.h"
#include "pvio/test/temp_dir.h"
#include "pvio/test/wait_until.h"
#include "pvio/xenstore/client.h"
#include "pvio/xenstore/guest_client.h"
#include "pvio/xenstore/ring_transport.h"
#include "pvio/xenstore/server.h"

namespace {

using namespace pvio::xs;

constexpr const char* kPath = "/bench/key";
const std::string kValue(64, 'v');

// Wire sizes of one READ and one WRITE exchange, for the raw peer.
const std::size_t kReadReq = sizeof(xsd_sockmsg) + std::string(kPath).size() + 1;
const std::size_t kReadRsp = sizeof(xsd_sockmsg) + kValue.size();
const std::size_t kWriteReq = sizeof(xsd_sockmsg) + std::string(kPath).size() + 1 + kValue.size();
const std::size_t kWriteRsp = sizeof(xsd_sockmsg) + 3;

std::map<std::string, double> g_ns;  // ns per op of each benchmark's last run

struct DaemonProcess {
  // `extra`: one more daemon option ("--no-persist", "--fsync"), nullptr for the default.
  explicit DaemonProcess(const char* extra = nullptr, const char* extra_value = nullptr) {
    dir = pvio::test::make_temp_dir("pvio-xsbench");
    if (dir.empty()) std::abort();
    sock = dir + "/socket";
    // The default daemon finds guest domains' control sockets here
    // (control::domain_socket_path); the others serve no guests.
    if (extra == nullptr) setenv("PVIO_RUN_DIR", dir.c_str(), 1);
    pid = fork();
    if (pid == 0) {
      std::vector<const char*> argv = {PVIO_XENSTORED, "--socket", sock.c_str(), "--foreground",
                                       "--log-level", "warn"};
      if (extra != nullptr) argv.push_back(extra);
      if (extra_value != nullptr) argv.push_back(extra_value);
      argv.push_back(nullptr);
      execv(PVIO_XENSTORED, const_cast<char* const*>(argv.data()));
      _exit(127);
    }
    pvio::test::wait_until([&] { return (client = Client::connect(sock)) != nullptr; }, 5000);
    if (!client) std::abort();
  }
  ~DaemonProcess() {
    client.reset();
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
    pvio::test::remove_temp_dir(dir);
  }
  std::string dir, sock;
  pid_t pid;
  std::unique_ptr<Client> client;
};

// Today's daemon: the store persisted (journal write before each reply, no fsync).
DaemonProcess& daemon_process() {
  static DaemonProcess d;
  return d;
}
// The same daemon keeping the store in memory only.
DaemonProcess& memory_daemon() {
  static DaemonProcess d("--no-persist");
  return d;
}
// The journal fdatasynced after every append.
DaemonProcess& fsync_daemon() {
  static DaemonProcess d("--fsync", "always");
  return d;
}

template <typename F>
void timed(benchmark::State& state, const char* name, F&& op) {
  auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) op();
  auto t1 = std::chrono::steady_clock::now();
  g_ns[name] = std::chrono::duration<double, std::nano>(t1 - t0).count() /
               static_cast<double>(state.iterations());
  state.SetItemsProcessed(state.iterations());
}

void BM_Socket_Read(benchmark::State& state) {
  Client& c = *daemon_process().client;
  c.write(kPath, kValue);
  timed(state, "socket_read", [&] {
    auto r = c.read(kPath);
    if (!r.ok()) state.SkipWithError("read failed");
    benchmark::DoNotOptimize(r.value.data());
  });
}

void socket_write(benchmark::State& state, DaemonProcess& d, const char* name) {
  Client& c = *d.client;
  timed(state, name, [&] {
    if (c.write(kPath, kValue) != XsError::None) state.SkipWithError("write failed");
  });
}
void BM_Socket_Write(benchmark::State& s) { socket_write(s, daemon_process(), "socket_write"); }
void BM_Socket_Write_InMemory(benchmark::State& s) {
  socket_write(s, memory_daemon(), "socket_write_mem");
}
void BM_Socket_Write_Fsync(benchmark::State& s) {
  socket_write(s, fsync_daemon(), "socket_write_fsync");
}
// The persistent and the in-memory daemon in alternation, each WRITE timed on its own: the
// two see the same machine load at the same moments. Medians, so that a preemption on a busy
// host (one WRITE taking milliseconds) does not decide the ratio.
void BM_Socket_Write_Alternating(benchmark::State& state) {
  Client& persistent = *daemon_process().client;
  Client& memory = *memory_daemon().client;
  std::vector<int64_t> in_p, in_m;
  auto timed_write = [&](Client& c) {
    auto t0 = std::chrono::steady_clock::now();
    if (c.write(kPath, kValue) != XsError::None) state.SkipWithError("write failed");
    return (std::chrono::steady_clock::now() - t0).count();
  };
  bool persistent_first = true;  // swapped every round: neither always follows the other
  for (auto _ : state) {
    if (persistent_first) {
      in_p.push_back(timed_write(persistent));
      in_m.push_back(timed_write(memory));
    } else {
      in_m.push_back(timed_write(memory));
      in_p.push_back(timed_write(persistent));
    }
    persistent_first = !persistent_first;
  }
  auto median = [](std::vector<int64_t>& v) {
    if (v.empty()) return 0.0;
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    return static_cast<double>(v[v.size() / 2]);
  };
  g_ns["alt_write_persistent"] = median(in_p);
  g_ns["alt_write_mem"] = median(in_m);
  state.counters["persistent_median_ns"] = g_ns["alt_write_persistent"];
  state.counters["in_memory_median_ns"] = g_ns["alt_write_mem"];
}

// The peer: a plain request/response over a unix socketpair with an echo thread, moving the
// same bytes as the xenstore exchange.
void raw_round_trip(benchmark::State& state, const char* name, std::size_t req, std::size_t rsp) {
  int sv[2];
  socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
  std::thread server([&] {
    std::string in(req, '\0'), out(rsp, 'r');
    while (true) {
      std::size_t got = 0;
      while (got < req) {
        ssize_t n = read(sv[1], in.data() + got, req - got);
        if (n <= 0) return;
        got += static_cast<std::size_t>(n);
      }
      if (write(sv[1], out.data(), rsp) != static_cast<ssize_t>(rsp)) return;
    }
  });
  std::string out(req, 'q'), in(rsp, '\0');
  timed(state, name, [&] {
    if (write(sv[0], out.data(), req) != static_cast<ssize_t>(req)) state.SkipWithError("write");
    std::size_t got = 0;
    while (got < rsp) {
      ssize_t n = read(sv[0], in.data() + got, rsp - got);
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
  });
  shutdown(sv[0], SHUT_RDWR);
  server.join();
  close(sv[0]);
  close(sv[1]);
}

void BM_RawSocket_ReadSized(benchmark::State& s) { raw_round_trip(s, "raw_read", kReadReq, kReadRsp); }
void BM_RawSocket_WriteSized(benchmark::State& s) {
  raw_round_trip(s, "raw_write", kWriteReq, kWriteRsp);
}

// A guest ring served in-process: the guest's notify runs the daemon's pass over the ring,
// so this is the protocol's own cost (ring copies, parsing, store) without a context switch.
struct RingSetup {
  RingSetup() : transport(&page, [] {}), guest(&page, GuestPlatform{this, notify, [](void*) {}}) {
    std::string home = "/local/domain/5";
    xsd_sockmsg h{static_cast<uint32_t>(MsgType::XS_MKDIR), 1, 0,
                  static_cast<uint32_t>(home.size() + 1)};
    Dom0Sink sink;
    ConnId id = server.attach(0, &sink);
    server.handle(id, h, std::span<const char>(home.c_str(), home.size() + 1));
    std::string perms = home + std::string("\0n5\0", 4);
    h = {static_cast<uint32_t>(MsgType::XS_SET_PERMS), 2, 0, static_cast<uint32_t>(perms.size())};
    server.handle(id, h, std::span<const char>(perms.data(), perms.size()));
    server.detach(id);
    transport.bind(server, 5);
  }
  struct Dom0Sink final : Connection {
    void send(std::string_view) override {}
    std::size_t pending_output() const override { return 0; }
  };
  static void notify(void* s) { static_cast<RingSetup*>(s)->transport.on_kick(); }
  Server server;
  xenstore_domain_interface page{};
  RingTransport transport;
  GuestClient<4> guest;
};

void BM_GuestRing_Read(benchmark::State& state) {
  auto r = std::make_unique<RingSetup>();
  r->guest.write("key", kValue.data(), kValue.size());
  char buf[256];
  timed(state, "ring_read", [&] {
    size_t len = 0;
    if (r->guest.read("key", buf, sizeof(buf), &len) != XsError::None) state.SkipWithError("read");
    benchmark::DoNotOptimize(buf);
  });
}

void BM_GuestRing_Write(benchmark::State& state) {
  auto r = std::make_unique<RingSetup>();
  timed(state, "ring_write", [&] {
    if (r->guest.write("key", kValue.data(), kValue.size()) != XsError::None)
      state.SkipWithError("write");
  });
}

// A real guest across two processes: this process is user-mode domain 5 (its memfd, ring page,
// event channel), pvio-xenstored attaches to it over the domain control protocol on INTRODUCE
// and serves the ring from its epoll loop; each op is ring copy + event both ways.
struct TwoProcessGuest {
  TwoProcessGuest() {
    Client& d0 = *daemon_process().client;
    pvio::domain::DomainConfig cfg;
    cfg.domid = 5;
    if (pvio::domain::Domain::create(cfg, &dom) != 0) std::abort();
    efd = pvio::evtchn::eventfd_create(true);
    const int e = efd;
    dom->set_handler(dom->xenstore_port(), [e](pvio::evtchn_port_t) {
      pvio::evtchn::eventfd_signal(e);
    });
    loop = std::thread([this] { dom->run(); });
    d0.mkdir("/local/domain/5");
    d0.set_perms("/local/domain/5", {{5, XsPerm::None}});
    if (d0.introduce(5, dom->xenstore_gfn(), dom->xenstore_port()) != XsError::None) std::abort();
    guest = std::make_unique<GuestClient<4>>(dom->xenstore_interface(),
                                             GuestPlatform{this, notify, wait});
  }
  ~TwoProcessGuest() {
    guest.reset();
    daemon_process().client->release(5);
    daemon_process().client->rm("/local/domain/5");
    dom->stop();
    loop.join();
    dom.reset();
    close(efd);
  }
  static void notify(void* p) {
    auto* g = static_cast<TwoProcessGuest*>(p);
    g->dom->send(g->dom->xenstore_port());
  }
  static void wait(void* p) {
    auto* g = static_cast<TwoProcessGuest*>(p);
    pollfd pfd{g->efd, POLLIN, 0};
    poll(&pfd, 1, 1000);
    uint64_t v;
    [[maybe_unused]] ssize_t n = read(g->efd, &v, sizeof v);
  }
  std::unique_ptr<pvio::domain::Domain> dom;
  int efd = -1;
  std::thread loop;
  std::unique_ptr<GuestClient<4>> guest;
};

void BM_TwoProcessRing_Read(benchmark::State& state) {
  TwoProcessGuest g;
  if (g.guest->write("key", kValue.data(), kValue.size()) != XsError::None)
    return state.SkipWithError("setup write");
  char buf[256];
  timed(state, "ring2p_read", [&] {
    size_t len = 0;
    if (g.guest->read("key", buf, sizeof(buf), &len) != XsError::None) state.SkipWithError("read");
    benchmark::DoNotOptimize(buf);
  });
}

void BM_TwoProcessRing_Write(benchmark::State& state) {
  TwoProcessGuest g;
  timed(state, "ring2p_write", [&] {
    if (g.guest->write("key", kValue.data(), kValue.size()) != XsError::None)
      state.SkipWithError("write");
  });
}

BENCHMARK(BM_Socket_Read);
BENCHMARK(BM_RawSocket_ReadSized);
BENCHMARK(BM_Socket_Write_InMemory);
BENCHMARK(BM_Socket_Write);
BENCHMARK(BM_Socket_Write_Fsync);
BENCHMARK(BM_Socket_Write_Alternating);
BENCHMARK(BM_RawSocket_WriteSized);
BENCHMARK(BM_GuestRing_Read);
BENCHMARK(BM_GuestRing_Write);
BENCHMARK(BM_TwoProcessRing_Read);
BENCHMARK(BM_TwoProcessRing_Write);

}  // namespace

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  auto ratio = [](const char* what, const char* a, const char* b) {
    if (g_ns.count(a) && g_ns.count(b))
      std::printf("%-44s %8.0f ns vs %8.0f ns  ratio %.2fx\n", what, g_ns[a], g_ns[b],
                  g_ns[a] / g_ns[b]);
  };
  std::printf("\nxenstore op vs raw unix-socket round trip of the same bytes (peer):\n");
  ratio("READ  over socket (pvio-xenstored) / raw", "socket_read", "raw_read");
  ratio("WRITE over socket (pvio-xenstored) / raw", "socket_write", "raw_write");
  std::printf("\npersistence (journal) vs the same daemon with the store in memory only:\n");
  ratio("WRITE over socket, persistent / in-memory", "socket_write", "socket_write_mem");
  ratio("  the same, alternating, medians", "alt_write_persistent", "alt_write_mem");
  ratio("WRITE over socket, fdatasync each / in-memory", "socket_write_fsync",
        "socket_write_mem");
  std::printf("\n");
  ratio("READ  over guest ring (in-process) / raw", "ring_read", "raw_read");
  ratio("WRITE over guest ring (in-process) / raw", "ring_write", "raw_write");
  ratio("READ  over guest ring (2 processes) / raw", "ring2p_read", "raw_read");
  ratio("WRITE over guest ring (2 processes) / raw", "ring2p_write", "raw_write");
  ratio("READ  guest ring (2 processes) / socket", "ring2p_read", "socket_read");
  ratio("WRITE guest ring (2 processes) / socket", "ring2p_write", "socket_write");
  return 0;
}
