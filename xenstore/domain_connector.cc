// Guest rings reached through the domain control protocol; see domain_connector.h.
#include "pvio/xenstore/domain_connector.h"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "pvio/control/client.h"
#include "pvio/control/run_dir.h"
#include "pvio/xenstore/ring_transport.h"

namespace pvio::xs {
namespace {

// Bound on each wait for a domain's control socket during INTRODUCE.
constexpr int kAttachTimeoutMs = 2000;

// Holds the control client ahead of the RingTransport base, so the ring page stays mapped
// until the transport is gone (bases are destroyed in reverse order).
struct ClientHolder {
  std::unique_ptr<control::ControlClient> client;
};

}  // namespace

class ControlDomainConnector::DomainRing final : private ClientHolder, public RingTransport {
 public:
  DomainRing(std::unique_ptr<control::ControlClient> c, evtchn_port_t local_port,
             xenstore_domain_interface* page, ControlDomainConnector& owner, uint64_t generation)
      : ClientHolder{std::move(c)},
        RingTransport(page, [cl = client.get(), local_port] { cl->notify(local_port); }),
        owner_(owner),
        domid_(client->domid()),
        generation_(generation),
        kick_fd_(client->kick_fd(local_port)),
        sock_fd_(client->socket_fd()) {}

  ~DomainRing() override {
    owner_.daemon_.remove_fd(kick_fd_);
    owner_.daemon_.remove_fd(sock_fd_);
    if (auto it = owner_.live_.find(domid_); it != owner_.live_.end() && it->second == generation_)
      owner_.live_.erase(it);
  }

  bool start() {
    if (!owner_.daemon_.add_fd(kick_fd_, [this](uint32_t) { on_kick_fd(); })) return false;
    if (!owner_.daemon_.add_fd(sock_fd_, [this](uint32_t ev) { on_control_event(ev); })) {
      owner_.daemon_.remove_fd(kick_fd_);
      return false;
    }
    return true;
  }

 private:
  void on_kick_fd() {
    uint64_t v;
    // The kick eventfd is non-blocking; reading it re-arms it. The bind-time kick takes in
    // what the guest queued before it was introduced.
    [[maybe_unused]] ssize_t n = ::read(kick_fd_, &v, sizeof(v));
    on_kick();
    if (dropped() && !releasing_) {
      releasing_ = true;
      ++owner_.stats_.corrupt_rings;
      spdlog::warn("domain {}: corrupt xenstore ring, releasing it", domid_);
      owner_.release_later(domid_, generation_);
    }
  }

  // The domain never speaks unasked on the control connection, so any event there is the
  // domain hanging up (it died or closed) or breaking the protocol: either way, release it.
  void on_control_event(uint32_t events) {
    if (releasing_) return;
    releasing_ = true;
    ++owner_.stats_.hangups;
    spdlog::info("domain {}: control connection {}, releasing it", domid_,
                 (events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) ? "hung up" : "sent unasked data");
    owner_.daemon_.remove_fd(sock_fd_);  // level-triggered: stop it firing until release
    owner_.release_later(domid_, generation_);
  }

  ControlDomainConnector& owner_;
  domid_t domid_;
  uint64_t generation_;
  int kick_fd_;
  int sock_fd_;
  bool releasing_ = false;
};

ControlDomainConnector::ControlDomainConnector(Server& server, Daemon& daemon,
                                               SocketPathFn socket_path)
    : server_(server), daemon_(daemon), socket_path_(std::move(socket_path)) {
  if (!socket_path_) socket_path_ = [](domid_t d) { return control::domain_socket_path(d); };
  server_.set_domain_connector(this);
}

ControlDomainConnector::~ControlDomainConnector() {
  // Release what is still introduced while the daemon (and its fds) still exist.
  while (!live_.empty()) {
    const domid_t d = live_.begin()->first;
    if (!server_.release_domain(d)) live_.erase(live_.begin());
  }
  server_.set_domain_connector(nullptr);
}

std::unique_ptr<RingTransport> ControlDomainConnector::connect(domid_t domid, uint64_t gfn,
                                                               evtchn_port_t port) {
  const std::string path = socket_path_(domid);
  std::unique_ptr<control::ControlClient> client;
  // The daemon serves every domain from one thread: a domain that accepts the connection and
  // never answers must cost it a bounded wait, not all the others their xenstore.
  if (int rc = control::ControlClient::attach(path, domid, &client, kAttachTimeoutMs);
      rc != 0) {
    spdlog::warn("INTRODUCE domain {}: cannot attach to {}: {}", domid, path, std::strerror(-rc));
    ++stats_.refused;
    return nullptr;
  }
  // The toolstack's mfn must be the page the domain itself says is its xenstore ring: a wrong
  // one would have us treat arbitrary guest memory as the ring.
  if (gfn != client->xenstore_gfn()) {
    spdlog::warn("INTRODUCE domain {}: gfn {} is not its xenstore gfn {}", domid, gfn,
                 client->xenstore_gfn());
    ++stats_.refused;
    return nullptr;
  }
  auto* page = reinterpret_cast<xenstore_domain_interface*>(client->memory().frame(gfn));
  if (page == nullptr) {
    ++stats_.refused;
    return nullptr;
  }
  evtchn_port_t local = 0;
  if (int rc = client->bind_interdomain(port, &local); rc != 0) {
    spdlog::warn("INTRODUCE domain {}: cannot bind its port {}: {}", domid, port,
                 std::strerror(-rc));
    ++stats_.refused;
    return nullptr;
  }
  const uint64_t generation = next_generation_++;
  auto ring = std::make_unique<DomainRing>(std::move(client), local, page, *this, generation);
  live_[domid] = generation;
  if (!ring->start()) {
    ++stats_.refused;
    return nullptr;
  }
  ++stats_.attached;
  spdlog::info("domain {}: xenstore ring at gfn {} port {} (local port {})", domid, gfn, port,
               local);
  return ring;
}

void ControlDomainConnector::release_later(domid_t domid, uint64_t generation) {
  daemon_.defer([this, domid, generation] {
    auto it = live_.find(domid);
    if (it == live_.end() || it->second != generation) return;  // already gone or replaced
    server_.release_domain(domid);
  });
}

}  // namespace pvio::xs
