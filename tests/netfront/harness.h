// Test binding of the netfront platform seam over real parts, and a netif backend played by
// the test on the raw rings. Guest memory, the grant table, event channels and the xenstore
// world are the blkfront tests' (real GrantTable, PortTables, in-process xs::Store); the
// backend maps the frontend's rings and pages with a real GrantMapper and reads and writes
// netif_tx/rx requests and responses slot by slot, so tests can also write hostile ones.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "../blkfront/harness.h"  // GuestDomain, XsWorld: shared with the blkfront tests
#include "pvio/netfront/netfront.h"
#include "pvio/ring/io_rings.h"

namespace pvio::netfront::test {

using blkfront::test::GuestDomain;
using blkfront::test::XsWorld;
inline constexpr domid_t kGuestDomid = blkfront::test::kGuestDomid;
inline constexpr domid_t kBackendDomid = blkfront::test::kBackendDomid;
inline constexpr std::uint32_t kDevid = 0;
inline constexpr const char* kMac = "00:16:3e:12:34:56";

class TestPlatform final : public Platform {
 public:
  TestPlatform(GuestDomain& dom, XsWorld& xs) : dom_(dom), xs_(xs) {}

  bool alloc_page(GuestPage& out) override {
    blkfront::GuestPages p;
    if (!dom_.alloc(0, p)) return false;
    out.gfn = p.gfn;
    out.addr = p.addr;
    return true;
  }
  void free_page(const GuestPage& p) override { dom_.free(0, blkfront::GuestPages{p.gfn, p.addr}); }
  grant_ref_t grant_access(domid_t domid, std::uint64_t gfn, bool ro) override {
    if (grant_budget == 0) return kInvalidGrantRef;
    if (grant_budget > 0) --grant_budget;
    return dom_.grants().grant_access(domid, gfn, ro);
  }
  bool end_access(grant_ref_t ref) override { return dom_.grants().end_access(ref); }
  int evtchn_alloc_unbound(domid_t remote, evtchn_port_t& port) override {
    const auto r = dom_.guest_ports->alloc_unbound(remote);
    port = r.port;
    return r.rc;
  }
  void evtchn_close(evtchn_port_t port) override { dom_.guest_ports->close(port); }
  void notify(evtchn_port_t port) override { dom_.guest_ports->send(port); }
  int xs_read(const char* path, char* buf, std::size_t cap, std::size_t& len) override {
    std::string v;
    const int rc = xs_.read(kGuestDomid, path, v);
    if (rc != 0) return rc;
    if (v.size() + 1 > cap) return -XEN_ENOSPC;
    std::memcpy(buf, v.data(), v.size());
    buf[v.size()] = '\0';
    len = v.size();
    return 0;
  }
  int xs_write(const char* path, const char* value) override {
    return xs_.write(kGuestDomid, path, value);
  }
  int xs_remove(const char* path) override { return xs_.rm(kGuestDomid, path); }
  int xs_watch(const char* path) override { return xs_.watch(kGuestDomid, path); }
  void xs_unwatch(const char* path) override { xs_.unwatch(kGuestDomid, path); }
  int xs_wait(std::uint32_t) override {
    if (!xs_.fired && on_wait) on_wait();
    if (!xs_.fired) return -XEN_ETIMEDOUT;
    xs_.fired = false;
    return 0;
  }
  void log(LogLevel, const char* msg) override { logs.emplace_back(msg); }

  std::function<void()> on_wait;
  long grant_budget = -1;  // < 0: unlimited
  std::vector<std::string> logs;

 private:
  GuestDomain& dom_;
  XsWorld& xs_;
};

struct BackendFeatures {
  std::uint32_t max_queues = 1;
  bool split = false;
  bool sg = true;
  bool gso4 = true;
  bool gso6 = true;
  bool rx_copy = true;
  bool no_csum = false;
};

// One tx packet as the backend found it on the ring.
struct TxSeen {
  std::vector<std::uint8_t> data;
  std::uint16_t first_flags = 0;
  std::uint32_t slots = 0;
  bool has_gso = false;
  netif::netif_extra_info gso{};
  std::vector<std::uint16_t> ids;
  std::vector<std::uint16_t> grant_flags;  // GTF_* of each slot's gref when taken
  std::vector<grant_ref_t> grefs;
};

class NetBackend {
 public:
  NetBackend(GuestDomain& dom, XsWorld& xs, BackendFeatures f = {}) : dom_(dom), xs_(xs), f_(f) {
    fe_ = "/local/domain/1/device/vif/" + std::to_string(kDevid);
    be_ = "/local/domain/0/backend/vif/1/" + std::to_string(kDevid);
    auto fe_perm = std::vector<xs::NodePerm>{{kGuestDomid, xs::XsPerm::None}, {0, xs::XsPerm::Read}};
    auto be_perm = std::vector<xs::NodePerm>{{0, xs::XsPerm::None}, {kGuestDomid, xs::XsPerm::Read}};
    for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{
             {"backend", be_}, {"backend-id", "0"}, {"state", "1"}, {"handle", "0"}, {"mac", kMac}}) {
      EXPECT_EQ(xs_.write(0, fe_ + "/" + k, v), 0);
      xs_.set_perms(fe_ + "/" + k, fe_perm);
    }
    xs_.set_perms(fe_, fe_perm);
    for (auto [k, v] : std::vector<std::pair<std::string, std::string>>{
             {"frontend", fe_}, {"frontend-id", "1"}, {"state", "1"}, {"mac", kMac}}) {
      EXPECT_EQ(xs_.write(0, be_ + "/" + k, v), 0);
      xs_.set_perms(be_ + "/" + k, be_perm);
    }
    xs_.set_perms(be_, be_perm);
  }
  ~NetBackend() { unmap_all(); }

  const std::string& fe() const { return fe_; }
  const std::string& be() const { return be_; }
  BackendFeatures& features() { return f_; }
  std::string frontend_state() { return xs_.get(0, fe_ + "/state"); }
  void set_state(int s) { ASSERT_EQ(xs_.write(0, be_ + "/state", std::to_string(s)), 0); }

  // netback_probe: features, then InitWait.
  void init_wait() {
    w("feature-rx-copy", f_.rx_copy);
    w("feature-sg", f_.sg);
    w("feature-gso-tcpv4", f_.gso4);
    w("feature-gso-tcpv6", f_.gso6);
    w("feature-split-event-channels", f_.split);
    w("feature-no-csum-offload", f_.no_csum);
    w("feature-ipv6-csum-offload", 1);
    w("feature-rx-notify", 1);
    w("multi-queue-max-queues", f_.max_queues);
    set_state(2);
  }

  // The frontend is Connected: map both rings of every queue, bind its ports, Connected.
  bool connect() {
    unmap_all();
    mapper = std::make_unique<gnttab::GrantMapper>(kGuestDomid, kBackendDomid, dom_.image.memory(),
                                                   dom_.image.table_gfns());
    std::string v;
    nr_queues = 1;
    if (xs_.read(0, fe_ + "/multi-queue-num-queues", v) == 0) nr_queues = std::stoul(v);
    EXPECT_EQ(xs_.get(0, fe_ + "/request-rx-copy"), "1");
    tx.assign(nr_queues, netif::TxBackRing{});
    rx.assign(nr_queues, netif::RxBackRing{});
    tx_ports.assign(nr_queues, 0);
    rx_ports.assign(nr_queues, 0);
    for (std::uint32_t q = 0; q < nr_queues; ++q) {
      const std::string pre = nr_queues > 1 ? fe_ + "/queue-" + std::to_string(q) + "/" : fe_ + "/";
      for (int side = 0; side < 2; ++side) {
        const std::string key = pre + (side == 0 ? "tx-ring-ref" : "rx-ring-ref");
        if (xs_.read(0, key, v) != 0) {
          ADD_FAILURE() << "missing " << key;
          return false;
        }
        const auto m = mapper->map(static_cast<grant_ref_t>(std::stoul(v)), false);
        if (m.status != gnttab::GNTST_okay) {
          ADD_FAILURE() << "ring map failed " << m.status;
          return false;
        }
        handles.push_back(m.handle);
        if (side == 0) EXPECT_TRUE(tx[q].attach(m.addr, 4096));
        else EXPECT_TRUE(rx[q].attach(m.addr, 4096));
      }
      auto bind = [&](const std::string& key) -> evtchn_port_t {
        std::string p;
        if (xs_.read(0, key, p) != 0) {
          ADD_FAILURE() << "missing " << key;
          return 0;
        }
        const auto r = evtchn::PortTable::bind_interdomain(*dom_.dom0_ports, *dom_.guest_ports,
                                                           static_cast<evtchn_port_t>(std::stoul(p)));
        EXPECT_EQ(r.rc, 0);
        bound.push_back(r.port);
        return r.port;
      };
      if (f_.split) {
        tx_ports[q] = bind(pre + "event-channel-tx");
        rx_ports[q] = bind(pre + "event-channel-rx");
      } else {
        tx_ports[q] = rx_ports[q] = bind(pre + "event-channel");
      }
    }
    set_state(4);
    return true;
  }

  // Backend crash/stop: drop every mapping and channel, then Closing -> Closed.
  void disappear() {
    unmap_all();
    set_state(5);
    set_state(6);
  }

  // Takes every tx request published on queue q and assembles packets as netback does: the
  // first slot's size is the packet's, its own length what the other slots leave. Answers
  // nothing.
  std::vector<TxSeen> take_tx(std::uint32_t q = 0) {
    std::vector<TxSeen> out;
    auto& r = tx[q];
    std::vector<netif::netif_tx_request> chain;
    TxSeen cur;
    bool want_extra = false;
    for (;;) {
      const auto c = r.unconsumed_requests();
      EXPECT_TRUE(c.ok());
      if (!c || c.count == 0) break;
      for (std::uint32_t i = 0; i < c.count; ++i) {
        if (want_extra) {
          netif::netif_extra_info ex;
          r.copy_request_as(r.req_cons(), ex);
          r.skip_request();
          cur.has_gso = ex.type == netif::kExtraTypeGso;
          cur.gso = ex;
          want_extra = false;
          continue;
        }
        netif::netif_tx_request req;
        r.consume_request(req);
        if (chain.empty()) {
          cur.first_flags = req.flags;
          want_extra = (req.flags & netif::kTxfExtraInfo) != 0;
        }
        chain.push_back(req);
        cur.ids.push_back(req.id);
        cur.grefs.push_back(req.gref);
        cur.grant_flags.push_back(dom_.grants().flags(req.gref));
        if (req.flags & netif::kTxfMoreData) continue;
        std::uint32_t rest = 0;
        for (std::size_t k = 1; k < chain.size(); ++k) rest += chain[k].size;
        for (std::size_t k = 0; k < chain.size(); ++k) {
          const std::uint32_t len = k == 0 ? chain[0].size - rest : chain[k].size;
          const auto m = mapper->map(chain[k].gref, true);
          EXPECT_EQ(m.status, gnttab::GNTST_okay);
          if (m.status != gnttab::GNTST_okay) continue;
          EXPECT_LE(chain[k].offset + len, 4096u);
          cur.data.insert(cur.data.end(), m.addr + chain[k].offset,
                          m.addr + chain[k].offset + len);
          mapper->unmap(m.handle);
        }
        cur.slots = static_cast<std::uint32_t>(chain.size());
        out.push_back(std::move(cur));
        cur = TxSeen{};
        chain.clear();
      }
    }
    EXPECT_TRUE(chain.empty()) << "a packet's last slot was not published with the others";
    return out;
  }
  void respond_tx(std::uint32_t q, std::uint16_t id, std::int16_t status) {
    netif::netif_tx_response rsp{};
    rsp.id = id;
    rsp.status = status;
    tx[q].produce_response(rsp);
  }
  // Answers each slot of the packets OKAY (and the extra-info slots NULL), publishes.
  void answer(std::uint32_t q, const std::vector<TxSeen>& pkts) {
    for (const auto& p : pkts) {
      for (std::size_t i = 0; i < p.ids.size(); ++i) {
        respond_tx(q, p.ids[i], netif::kRspOkay);
        if (i == 0 && p.first_flags & netif::kTxfExtraInfo) respond_tx(q, 0, netif::kRspNull);
      }
    }
    push_tx(q);
  }
  void push_tx(std::uint32_t q = 0) {
    if (tx[q].push_responses()) dom_.dom0_ports->send(tx_ports[q]);
  }
  std::vector<TxSeen> serve_tx(std::uint32_t q = 0) {
    auto p = take_tx(q);
    answer(q, p);
    return p;
  }

  // Rx requests the frontend has posted and the backend has not used.
  std::uint32_t rx_posted(std::uint32_t q = 0) {
    const auto c = rx[q].unconsumed_requests();
    return c.ok() ? c.count : 0;
  }

  // Copies `data` into posted rx buffers, `slot_bytes` per slot, with the given first-slot
  // flags and an optional GSO extra; publishes and notifies. False if not enough buffers.
  bool deliver(std::uint32_t q, const std::vector<std::uint8_t>& data, std::uint16_t flags = 0,
               std::uint8_t gso_type = 0, std::uint16_t gso_size = 0,
               std::uint32_t slot_bytes = 4096) {
    const std::uint32_t slots = static_cast<std::uint32_t>((data.size() + slot_bytes - 1) / slot_bytes);
    if (rx_posted(q) < slots + (gso_type ? 1 : 0)) return false;
    std::size_t off = 0;
    for (std::uint32_t s = 0; s < slots; ++s) {
      netif::netif_rx_request req;
      rx[q].consume_request(req);
      const std::size_t n = std::min<std::size_t>(slot_bytes, data.size() - off);
      const auto m = mapper->map(req.gref, false);
      EXPECT_EQ(m.status, gnttab::GNTST_okay);
      if (m.status != gnttab::GNTST_okay) return false;
      std::memcpy(m.addr, data.data() + off, n);
      mapper->unmap(m.handle);
      netif::netif_rx_response rsp{};
      rsp.id = req.id;
      rsp.offset = 0;
      rsp.status = static_cast<std::int16_t>(n);
      rsp.flags = static_cast<std::uint16_t>(s + 1 < slots ? netif::kRxfMoreData : 0);
      if (s == 0) rsp.flags |= flags | (gso_type ? netif::kRxfExtraInfo : 0);
      rx[q].produce_response(rsp);
      off += n;
      if (s == 0 && gso_type) {
        netif::netif_rx_request ereq;
        rx[q].consume_request(ereq);
        netif::netif_extra_info ex{};
        ex.type = netif::kExtraTypeGso;
        ex.u.gso.type = gso_type;
        ex.u.gso.size = gso_size;
        std::memcpy(rx[q].next_response(), &ex, sizeof(ex));
      }
    }
    push_rx(q);
    return true;
  }
  void push_rx(std::uint32_t q = 0) {
    if (rx[q].push_responses()) dom_.dom0_ports->send(rx_ports[q]);
  }

  void unmap_all() {
    if (mapper)
      for (auto h : handles) mapper->unmap(h);
    handles.clear();
    for (auto p : bound) dom_.dom0_ports->close(p);
    bound.clear();
    tx.clear();
    rx.clear();
    mapper.reset();
  }

  std::unique_ptr<gnttab::GrantMapper> mapper;
  std::vector<netif::TxBackRing> tx;
  std::vector<netif::RxBackRing> rx;
  std::vector<evtchn_port_t> tx_ports, rx_ports, bound;
  std::vector<gnttab::grant_handle_t> handles;
  std::uint32_t nr_queues = 0;

 private:
  void w(const std::string& key, std::uint64_t v) {
    ASSERT_EQ(xs_.write(0, be_ + "/" + key, std::to_string(v)), 0);
    xs_.set_perms(be_ + "/" + key, {{0, xs::XsPerm::None}, {kGuestDomid, xs::XsPerm::Read}});
  }

  GuestDomain& dom_;
  XsWorld& xs_;
  BackendFeatures f_;
  std::string fe_, be_;
};

inline std::vector<std::uint8_t> pattern(std::size_t len, std::uint32_t seed) {
  std::vector<std::uint8_t> v(len);
  for (std::size_t i = 0; i < len; ++i)
    v[i] = static_cast<std::uint8_t>((seed * 2654435761u + i * 31 + (i >> 8)) & 0xFF);
  return v;
}

}  // namespace pvio::netfront::test
