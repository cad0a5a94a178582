// A two-port netif backend played by the test: a "cable" between two user-mode domains' vifs.
// It does what a backend does — InitWait with its features, maps the frontends' rings,
// binds their event channels over the domain control protocol — and then passes every packet
// of one vif's tx ring to the other vif's rx ring with its offload metadata (partial checksum,
// GSO type and size) unchanged. No switch, no uplink: it exercises the frontend binding (TAP,
// virtio_net_hdr, rx GSO) with real programs, independently of pvio-netback.
#pragma once

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "pvio/control/client.h"
#include "pvio/grant_table/grant_mapper.h"
#include "pvio/ring/io_rings.h"
#include "pvio/xenstore/client.h"

namespace pvio::netfront::user::test {

class Cable {
 public:
  struct Packet {
    std::vector<std::uint8_t> data;
    std::uint16_t tx_flags = 0;
    std::uint8_t gso_type = 0;
    std::uint16_t gso_size = 0;
  };

  // Both vifs are devid 0. Returns "" or why the cable could not be plugged in.
  std::string plug(const std::string& run_dir, xs::Client& xs, domid_t a, domid_t b) {
    ends_[0].domid = a;
    ends_[1].domid = b;
    for (End& e : ends_) {
      const std::string d = std::to_string(e.domid);
      e.be = "/local/domain/0/backend/vif/" + d + "/0";
      e.fe = "/local/domain/" + d + "/device/vif/0";
      for (const char* k : {"feature-rx-copy", "feature-sg", "feature-gso-tcpv4",
                            "feature-gso-tcpv6", "feature-ipv6-csum-offload", "feature-rx-notify"})
        xs.write(e.be + "/" + k, "1");
      xs.write(e.be + "/state", "2");  // InitWait
    }
    for (End& e : ends_) {
      bool connected = false;
      for (int i = 0; i < 500 && !connected; ++i) {
        auto st = xs.read(e.fe + "/state");
        connected = st.ok() && st.value == "4";
        if (!connected) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (!connected) {
        auto st = xs.read(e.fe + "/state");
        auto bs = xs.read(e.be + "/state");
        return "frontend of domain " + std::to_string(e.domid) + " never connected (state " +
               st.value + ", backend " + bs.value + ")";
      }
      auto num = [&](const char* k) {
        auto r = xs.read(e.fe + "/" + k);
        return r.ok() ? std::stoul(r.value) : ~0ul;
      };
      const unsigned long tx_ref = num("tx-ring-ref"), rx_ref = num("rx-ring-ref"),
                          port = num("event-channel");
      if (tx_ref == ~0ul || rx_ref == ~0ul || port == ~0ul) return "frontend keys missing";
      if (control::ControlClient::attach(run_dir + "/domain-" + std::to_string(e.domid) + ".sock",
                                         e.domid, &e.cc) != 0)
        return "cannot attach to domain " + std::to_string(e.domid);
      e.mapper = std::make_unique<gnttab::GrantMapper>(e.domid, 0, e.cc->memory(),
                                                       e.cc->grant_frame_gfns());
      const auto t = e.mapper->map(static_cast<grant_ref_t>(tx_ref), false);
      const auto r = e.mapper->map(static_cast<grant_ref_t>(rx_ref), false);
      if (t.status != gnttab::GNTST_okay || r.status != gnttab::GNTST_okay) return "ring map failed";
      e.handles = {t.handle, r.handle};
      e.tx.attach(t.addr, 4096);
      e.rx.attach(r.addr, 4096);
      if (e.cc->bind_interdomain(static_cast<evtchn_port_t>(port), &e.port) != 0)
        return "bind_interdomain failed";
      xs.write(e.be + "/state", "4");  // Connected
    }
    stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    worker_ = std::thread([this] { run(); });
    return "";
  }

  // The backend goes away as an orderly one does: rings unmapped, then Closed.
  void unplug(xs::Client& xs) {
    stop_worker();
    release();
    for (End& e : ends_)
      if (!e.be.empty()) xs.write(e.be + "/state", "6");
  }

  ~Cable() {
    stop_worker();
    release();
    if (stop_fd_ >= 0) ::close(stop_fd_);
  }

  std::uint64_t forwarded() const { return forwarded_.load(); }
  std::uint64_t gso_forwarded() const { return gso_forwarded_.load(); }

 private:
  void stop_worker() {
    if (worker_.joinable()) {
      stop_.store(true);
      std::uint64_t one = 1;
      [[maybe_unused]] ssize_t w = ::write(stop_fd_, &one, sizeof one);
      worker_.join();
    }
  }
  void release() {
    for (End& e : ends_) {
      if (e.mapper)
        for (auto h : e.handles) e.mapper->unmap(h);
      e.handles.clear();
      e.mapper.reset();
      e.cc.reset();
    }
  }

  struct End {
    domid_t domid = 0;
    std::string be, fe;
    std::unique_ptr<control::ControlClient> cc;
    std::unique_ptr<gnttab::GrantMapper> mapper;
    std::vector<gnttab::grant_handle_t> handles;
    netif::TxBackRing tx;
    netif::RxBackRing rx;
    evtchn_port_t port = 0;
    std::deque<Packet> backlog;  // packets for this end's rx ring waiting for buffers
    std::vector<netif::netif_tx_request> chain;
    bool want_extra = false;
    netif::netif_extra_info extra{};
  };

  void run() {
    while (!stop_.load()) {
      bool work = false;
      for (int i = 0; i < 2; ++i) work |= pump(ends_[i], ends_[1 - i]);
      if (work) continue;
      pollfd fds[3] = {{ends_[0].cc->kick_fd(ends_[0].port), POLLIN, 0},
                       {ends_[1].cc->kick_fd(ends_[1].port), POLLIN, 0},
                       {stop_fd_, POLLIN, 0}};
      ::poll(fds, 3, 5);
      for (int i = 0; i < 2; ++i)
        if (fds[i].revents & POLLIN) {
          std::uint64_t v;
          [[maybe_unused]] ssize_t r = ::read(fds[i].fd, &v, sizeof v);
        }
    }
  }

  // Takes src's tx requests into dst's backlog, answers them, then fills dst's rx buffers.
  bool pump(End& src, End& dst) {
    bool work = false, answered = false;
    for (;;) {
      const auto c = src.tx.unconsumed_requests();
      if (!c.ok() || c.count == 0) {
        if (src.tx.final_check_for_requests().count == 0) break;
        continue;
      }
      work = true;
      for (std::uint32_t i = 0; i < c.count; ++i) {
        if (src.want_extra) {
          src.tx.copy_request_as(src.tx.req_cons(), src.extra);
          src.tx.skip_request();
          src.want_extra = false;
          continue;
        }
        netif::netif_tx_request req;
        src.tx.consume_request(req);
        if (src.chain.empty()) {
          src.want_extra = (req.flags & netif::kTxfExtraInfo) != 0;
          src.extra = {};
        }
        src.chain.push_back(req);
        if (req.flags & netif::kTxfMoreData) continue;
        Packet p;
        p.tx_flags = src.chain[0].flags;
        if (src.extra.type == netif::kExtraTypeGso) {
          p.gso_type = src.extra.u.gso.type;
          p.gso_size = src.extra.u.gso.size;
        }
        std::uint32_t rest = 0;
        for (std::size_t k = 1; k < src.chain.size(); ++k) rest += src.chain[k].size;
        bool ok = src.chain[0].size >= rest;
        for (std::size_t k = 0; k < src.chain.size() && ok; ++k) {
          const auto& r = src.chain[k];
          const std::uint32_t len = k == 0 ? r.size - rest : r.size;
          const auto m = src.mapper->map(r.gref, true);
          ok = m.status == gnttab::GNTST_okay && r.offset + len <= 4096;
          if (ok) p.data.insert(p.data.end(), m.addr + r.offset, m.addr + r.offset + len);
          if (m.status == gnttab::GNTST_okay) src.mapper->unmap(m.handle);
        }
        for (std::size_t k = 0; k < src.chain.size(); ++k) {
          netif::netif_tx_response rsp{};
          rsp.id = src.chain[k].id;
          rsp.status = ok ? netif::kRspOkay : netif::kRspError;
          src.tx.produce_response(rsp);
          if (k == 0 && (src.chain[0].flags & netif::kTxfExtraInfo)) {
            rsp.status = netif::kRspNull;
            src.tx.produce_response(rsp);
          }
        }
        answered = true;
        src.chain.clear();
        if (ok && dst.backlog.size() < 1024) dst.backlog.push_back(std::move(p));
      }
    }
    if (answered && src.tx.push_responses()) src.cc->notify(src.port);
    work |= fill(dst);
    return work;
  }

  bool fill(End& dst) {
    bool delivered = false;
    while (!dst.backlog.empty()) {
      Packet& p = dst.backlog.front();
      const std::uint32_t slots = static_cast<std::uint32_t>((p.data.size() + 4095) / 4096);
      const std::uint32_t need = slots + (p.gso_type ? 1 : 0);
      auto c = dst.rx.unconsumed_requests();
      if (c.ok() && c.count < need) c = dst.rx.final_check_for_requests();
      if (!c.ok() || c.count < need) break;
      std::uint16_t flags = 0;
      if (p.tx_flags & netif::kTxfCsumBlank) flags = netif::kRxfCsumBlank | netif::kRxfDataValidated;
      else if (p.tx_flags & netif::kTxfDataValidated) flags = netif::kRxfDataValidated;
      std::size_t off = 0;
      for (std::uint32_t s = 0; s < slots; ++s) {
        netif::netif_rx_request req;
        dst.rx.consume_request(req);
        const std::size_t n = std::min<std::size_t>(4096, p.data.size() - off);
        const auto m = dst.mapper->map(req.gref, false);
        netif::netif_rx_response rsp{};
        rsp.id = req.id;
        rsp.status = static_cast<std::int16_t>(n);
        if (m.status == gnttab::GNTST_okay) {
          std::memcpy(m.addr, p.data.data() + off, n);
          dst.mapper->unmap(m.handle);
        } else {
          rsp.status = netif::kRspError;
        }
        rsp.flags = static_cast<std::uint16_t>(s + 1 < slots ? netif::kRxfMoreData : 0);
        if (s == 0) rsp.flags |= flags | (p.gso_type ? netif::kRxfExtraInfo : 0);
        dst.rx.produce_response(rsp);
        if (s == 0 && p.gso_type) {
          netif::netif_rx_request ereq;
          dst.rx.consume_request(ereq);
          netif::netif_extra_info ex{};
          ex.type = netif::kExtraTypeGso;
          ex.u.gso.type = p.gso_type;
          ex.u.gso.size = p.gso_size;
          std::memcpy(dst.rx.next_response(), &ex, sizeof ex);
          gso_forwarded_.fetch_add(1);
        }
        off += n;
      }
      forwarded_.fetch_add(1);
      dst.backlog.pop_front();
      delivered = true;
    }
    if (delivered && dst.rx.push_responses()) dst.cc->notify(dst.port);
    return delivered;
  }

  End ends_[2];
  std::thread worker_;
  std::atomic<bool> stop_{false};
  int stop_fd_ = -1;
  std::atomic<std::uint64_t> forwarded_{0}, gso_forwarded_{0};
};

}  // namespace pvio::netfront::user::test
