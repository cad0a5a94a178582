// Test binding of the blkfront platform seam over real parts, and a backend played by the test.
//  - Guest memory: a memfd mapped once, described by a GuestMemory; pages handed out by a small
//    allocator; the first frames hold the guest's grant table (a real gnttab::GrantTable).
//  - Event channels: real evtchn::PortTables for the guest and Dom0, linked by
//    bind_interdomain; Dom0 receives on eventfds (EventfdDoorbell).
//  - Xenstore: a real in-process xs::Store with Xen's permissions; watches are matched on the
//    changes the store reports.
//  - The backend: the test itself, with BackRing + gnttab::GrantMapper over the same memory,
//    recording every request exactly as it appeared on the wire.
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "pvio/blkfront/blkfront.h"
#include "pvio/event_channel/notifier.h"
#include "pvio/event_channel/port_table.h"
#include "pvio/grant_table/grant_mapper.h"
#include "pvio/grant_table/grant_table.h"
#include "pvio/grant_table/guest_memory.h"
#include "pvio/ring/io_rings.h"
#include "pvio/test/guest_image.h"
#include "pvio/xenstore/store.h"

namespace pvio::blkfront::test {

inline constexpr domid_t kGuestDomid = 1;
inline constexpr domid_t kBackendDomid = 0;
inline constexpr std::uint32_t kDevid = 768;  // xvda
inline constexpr std::uint32_t kGrantFrames = 8;

inline int xs_errno(xs::XsError e) {
  switch (e) {
    case xs::XsError::None: return 0;
    case xs::XsError::NoEnt: return -XEN_ENOENT;
    case xs::XsError::Inval: return -XEN_EINVAL;
    case xs::XsError::NoSpc: return -XEN_ENOSPC;
    case xs::XsError::Acces: return -13;
    case xs::XsError::Again: return -XEN_EAGAIN;
    default: return -XEN_EIO;
  }
}

// Xenstore for both domains, with watch firing.
class XsWorld {
 public:
  int write(domid_t who, const std::string& path, const std::string& value) {
    const std::string p = xs::canonical_path(who, path, false);
    if (p.empty()) return -XEN_EINVAL;
    std::vector<xs::Change> ch;
    const int rc = xs_errno(store.write(xs::Caller{who}, nullptr, p, value, ch));
    fire(ch);
    return rc;
  }
  int read(domid_t who, const std::string& path, std::string& out) {
    const std::string p = xs::canonical_path(who, path, false);
    if (p.empty()) return -XEN_EINVAL;
    return xs_errno(store.read(xs::Caller{who}, nullptr, p, out));
  }
  int rm(domid_t who, const std::string& path) {
    const std::string p = xs::canonical_path(who, path, false);
    if (p.empty()) return -XEN_EINVAL;
    std::vector<xs::Change> ch;
    const int rc = xs_errno(store.rm(xs::Caller{who}, nullptr, p, ch));
    fire(ch);
    return rc;
  }
  void set_perms(const std::string& path, std::vector<xs::NodePerm> perms) {
    std::vector<xs::Change> ch;
    ASSERT_EQ(store.set_perms(xs::Caller{0}, nullptr, path, perms, ch), xs::XsError::None);
    fire(ch);
  }
  std::string get(domid_t who, const std::string& path) {
    std::string v;
    return read(who, path, v) == 0 ? v : std::string("<absent>");
  }
  bool exists(domid_t who, const std::string& path) {
    std::string v;
    return read(who, path, v) == 0;
  }

  int watch(domid_t who, const std::string& path) {
    const std::string p = xs::canonical_path(who, path, false);
    if (p.empty()) return -XEN_EINVAL;
    watches.push_back(p);
    fired = true;  // XS_WATCH fires once on registration
    return 0;
  }
  void unwatch(domid_t who, const std::string& path) {
    const std::string p = xs::canonical_path(who, path, false);
    for (auto it = watches.begin(); it != watches.end(); ++it)
      if (*it == p) {
        watches.erase(it);
        return;
      }
  }

  xs::Store store;
  std::vector<std::string> watches;  // the guest's watches
  bool fired = false;

 private:
  static bool covers(const std::string& watch, const std::string& path) {
    if (path.compare(0, watch.size(), watch) != 0) return false;
    return path.size() == watch.size() || path[watch.size()] == '/';
  }
  void fire(const std::vector<xs::Change>& ch) {
    for (const auto& c : ch)
      for (const auto& w : watches)
        if (covers(w, c.path) || (c.recursive && covers(c.path, w))) fired = true;
  }
};

class CountingNotifier final : public evtchn::Notifier {
 public:
  void notify(evtchn_port_t port) override { ++events[port]; }
  std::map<evtchn_port_t, int> events;
};

// The guest domain: memory (its first kGrantFrames pages the grant table), event-channel table.
class GuestDomain {
 public:
  explicit GuestDomain(std::size_t pages = 16384)
      : image({"pvio-blkfront-test-guest", 0, pages, kGrantFrames}), pages_(pages) {
    image.grant_table();
    next_gfn_ = kGrantFrames;
    guest_ports = std::make_unique<evtchn::PortTable>(kGuestDomid, nullptr, &guest_events);
    dom0_ports = std::make_unique<evtchn::PortTable>(kBackendDomid, nullptr, &doorbell);
  }
  ~GuestDomain() {
    guest_ports.reset();
    dom0_ports.reset();
  }

  gnttab::GrantTable& grants() { return image.grant_table(); }

  // Contiguous 2^order pages; freed runs are reused by size.
  bool alloc(unsigned order, GuestPages& out) {
    const std::size_t n = std::size_t{1} << order;
    auto& fl = free_[order];
    std::uint64_t gfn;
    if (!fl.empty()) {
      gfn = fl.back();
      fl.pop_back();
    } else {
      if (next_gfn_ + n > pages_) return false;
      gfn = next_gfn_;
      next_gfn_ += n;
    }
    out.gfn = gfn;
    out.addr = image.page(gfn);
    std::memset(out.addr, 0xA5, n * 4096);  // stale contents, as real memory would have
    ++live_allocs;
    return true;
  }
  void free(unsigned order, const GuestPages& p) {
    free_[order].push_back(p.gfn);
    --live_allocs;
  }

  pvio::test::GuestImage image;
  CountingNotifier guest_events;
  evtchn::EventfdDoorbell doorbell;
  std::unique_ptr<evtchn::PortTable> guest_ports;
  std::unique_ptr<evtchn::PortTable> dom0_ports;
  int live_allocs = 0;

 private:
  std::size_t pages_;
  std::uint64_t next_gfn_ = 0;
  std::map<unsigned, std::vector<std::uint64_t>> free_;
};

// The seam, bound to the guest domain and the store.
class TestPlatform final : public Platform {
 public:
  TestPlatform(GuestDomain& dom, XsWorld& xs) : dom_(dom), xs_(xs) {}

  bool alloc_pages(unsigned order, GuestPages& out) override { return dom_.alloc(order, out); }
  void free_pages(unsigned order, const GuestPages& p) override { dom_.free(order, p); }
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
  // Single-threaded tests: "waiting" lets the test's backend take its turn.
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

// One request as the backend found it on the ring (copied once, then decoded).
struct WireRequest {
  std::uint32_t queue = 0;
  std::uint8_t operation = 0;
  std::uint8_t indirect_op = 0;
  std::uint64_t id = 0;
  std::uint64_t sector = 0;
  std::uint16_t handle = 0;
  std::uint64_t nr_sectors = 0;  // discard
  std::uint8_t discard_flag = 0;
  std::vector<blkif::blkif_request_segment> segs;
  std::vector<std::uint16_t> seg_flags;  // grant entry flags of each segment's gref
  std::vector<grant_ref_t> indirect_grefs;
  std::vector<std::uint16_t> indirect_flags;
  std::uint8_t data_op() const {
    return operation == blkif::kOpIndirect ? indirect_op : operation;
  }
};

struct BackendConfig {
  std::uint64_t sectors = 8192;  // 4 MiB
  std::uint32_t max_ring_page_order = 0;
  std::uint32_t max_queues = 1;
  std::uint32_t max_indirect_segments = 0;
  bool persistent = false;
  bool flush = true;
  bool barrier = false;
  bool discard = false;
  bool read_only = false;
};

// The backend, played by the test over BackRing + GrantMapper.
class TestBackend {
 public:
  TestBackend(GuestDomain& dom, XsWorld& xs, BackendConfig cfg = {})
      : dom_(dom), xs_(xs), cfg_(cfg) {
    disk.assign(cfg.sectors * 512, 0);
    // Toolstack: frontend and backend directories with Xen's usual permissions.
    fe_ = "/local/domain/1/device/vbd/" + std::to_string(kDevid);
    be_ = "/local/domain/0/backend/vbd/1/" + std::to_string(kDevid);
    EXPECT_EQ(xs_.write(0, fe_ + "/backend", be_), 0);
    EXPECT_EQ(xs_.write(0, fe_ + "/backend-id", "0"), 0);
    EXPECT_EQ(xs_.write(0, fe_ + "/state", "1"), 0);
    EXPECT_EQ(xs_.write(0, be_ + "/frontend", fe_), 0);
    EXPECT_EQ(xs_.write(0, be_ + "/state", "1"), 0);
    for (const auto& p : {fe_, fe_ + "/backend", fe_ + "/backend-id", fe_ + "/state"})
      xs_.set_perms(p, {{kGuestDomid, xs::XsPerm::None}, {0, xs::XsPerm::Read}});
    for (const auto& p : {be_, be_ + "/frontend", be_ + "/state"})
      xs_.set_perms(p, {{0, xs::XsPerm::None}, {kGuestDomid, xs::XsPerm::Read}});
  }
  ~TestBackend() { unmap_all(); }

  const std::string& fe() const { return fe_; }
  const std::string& be() const { return be_; }
  BackendConfig& config() { return cfg_; }

  void set_state(int s) { ASSERT_EQ(xs_.write(0, be_ + "/state", std::to_string(s)), 0); }
  std::string frontend_state() { return xs_.get(0, fe_ + "/state"); }

  // Probe: publish what blkback publishes before InitWait, then InitWait.
  void init_wait() {
    w("max-ring-page-order", cfg_.max_ring_page_order);
    w("multi-queue-max-queues", cfg_.max_queues);
    if (cfg_.max_indirect_segments) w("feature-max-indirect-segments", cfg_.max_indirect_segments);
    else xs_.rm(0, be_ + "/feature-max-indirect-segments");
    set_state(2);
  }

  // Frontend is Initialised: map its rings, bind its channels, publish the disk, Connected.
  // Returns false (with a test failure) if the frontend's keys are wrong.
  bool connect() {
    unmap_all();
    mapper = std::make_unique<gnttab::GrantMapper>(kGuestDomid, kBackendDomid,
                                                   dom_.image.memory(),
                                                   dom_.image.table_gfns());
    std::string v;
    nr_queues = 1;
    if (xs_.read(0, fe_ + "/multi-queue-num-queues", v) == 0) nr_queues = std::stoul(v);
    order = 0;
    if (xs_.read(0, fe_ + "/ring-page-order", v) == 0) order = std::stoul(v);
    EXPECT_EQ(xs_.get(0, fe_ + "/protocol"), "x86_64-abi");
    fe_persistent = xs_.get(0, fe_ + "/feature-persistent") == "1";
    rings.assign(nr_queues, blkif::BackRing{});
    ports.assign(nr_queues, 0);
    efds.assign(nr_queues, -1);
    for (std::uint32_t q = 0; q < nr_queues; ++q) {
      const std::string pre = nr_queues > 1 ? fe_ + "/queue-" + std::to_string(q) + "/" : fe_ + "/";
      std::uint8_t* first = nullptr;
      for (std::uint32_t i = 0; i < (1u << order); ++i) {
        const std::string key = order ? pre + "ring-ref" + std::to_string(i) : pre + "ring-ref";
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
        if (i == 0) first = m.addr;
        else EXPECT_EQ(m.addr, first + i * 4096) << "ring pages not contiguous";
      }
      EXPECT_TRUE(rings[q].attach(first, ring::ring_bytes(order)));
      if (xs_.read(0, pre + "event-channel", v) != 0) {
        ADD_FAILURE() << "missing event-channel";
        return false;
      }
      const auto r = evtchn::PortTable::bind_interdomain(*dom_.dom0_ports, *dom_.guest_ports,
                                                         static_cast<evtchn_port_t>(std::stoul(v)));
      EXPECT_EQ(r.rc, 0);
      ports[q] = r.port;
      efds[q] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      dom_.doorbell.set(r.port, efds[q]);
    }
    w("sectors", cfg_.sectors);
    w("sector-size", 512);
    w("info", cfg_.read_only ? blkif::kVdiskReadonly : 0);
    w("feature-flush-cache", cfg_.flush ? 1 : 0);
    w("feature-barrier", cfg_.barrier ? 1 : 0);
    w("feature-discard", cfg_.discard ? 1 : 0);
    w("feature-persistent", cfg_.persistent ? 1 : 0);
    set_state(4);
    return true;
  }

  // Backend crash/stop: drop every mapping and channel, then Closing -> Closed.
  void disappear(bool say_closing = true) {
    unmap_all();
    if (say_closing) set_state(5);
    set_state(6);
  }

  // Eventfd count of notifications received on queue q since the last call.
  std::uint64_t kicks(std::uint32_t q = 0) {
    std::uint64_t n = 0;
    if (q < efds.size() && efds[q] >= 0 && read(efds[q], &n, sizeof(n)) != sizeof(n)) n = 0;
    return n;
  }

  // Takes every published request off queue q's ring, decoded; checks grant flags.
  std::vector<WireRequest> take(std::uint32_t q = 0) {
    std::vector<WireRequest> out;
    auto& r = rings[q];
    for (;;) {
      const auto c = r.unconsumed_requests();
      EXPECT_TRUE(c.ok());
      if (!c || c.count == 0) break;
      for (std::uint32_t i = 0; i < c.count; ++i) {
        blkif::blkif_request raw;
        const ring::RingIdx idx = r.req_cons();
        r.consume_request(raw);
        WireRequest w;
        w.queue = q;
        w.operation = raw.operation;
        w.id = raw.id;
        w.sector = raw.sector_number;
        if (raw.operation == blkif::kOpDiscard) {
          blkif::blkif_request_discard d;
          r.copy_request_as(idx, d);
          w.nr_sectors = d.nr_sectors;
          w.discard_flag = d.flag;
          w.handle = d.handle;
        } else if (raw.operation == blkif::kOpIndirect) {
          blkif::blkif_request_indirect ind;
          r.copy_request_as(idx, ind);
          w.indirect_op = ind.indirect_op;
          w.handle = ind.handle;
          w.sector = ind.sector_number;
          const std::uint32_t nind = (ind.nr_segments + 511) / 512;
          for (std::uint32_t k = 0; k < nind && k < 8; ++k) {
            w.indirect_grefs.push_back(ind.indirect_grefs[k]);
            w.indirect_flags.push_back(dom_.grants().flags(ind.indirect_grefs[k]));
            const auto m = mapper->map(ind.indirect_grefs[k], true);
            EXPECT_EQ(m.status, gnttab::GNTST_okay);
            if (m.status != gnttab::GNTST_okay) continue;
            const auto* segs = reinterpret_cast<const blkif::blkif_request_segment*>(m.addr);
            for (std::uint32_t s = k * 512; s < ind.nr_segments && s < (k + 1) * 512; ++s)
              w.segs.push_back(segs[s % 512]);
            mapper->unmap(m.handle);
          }
        } else {
          w.handle = raw.handle;
          for (std::uint32_t s = 0; s < raw.nr_segments && s < 11; ++s) w.segs.push_back(raw.seg[s]);
        }
        for (const auto& s : w.segs) w.seg_flags.push_back(dom_.grants().flags(s.gref));
        out.push_back(std::move(w));
      }
    }
    return out;
  }

  // Executes a request against `disk` through the grants; returns a BLKIF_RSP_* status.
  std::int16_t execute(const WireRequest& w) {
    const std::uint8_t op = w.data_op();
    if (op == blkif::kOpFlushDiskcache || op == blkif::kOpWriteBarrier) return blkif::kRspOkay;
    if (op == blkif::kOpDiscard) {
      if (!cfg_.discard) return blkif::kRspEopnotsupp;
      if ((w.sector + w.nr_sectors) * 512 > disk.size()) return blkif::kRspError;
      std::memset(disk.data() + w.sector * 512, 0, w.nr_sectors * 512);
      return blkif::kRspOkay;
    }
    if (op != blkif::kOpRead && op != blkif::kOpWrite) return blkif::kRspError;
    std::uint64_t off = w.sector * 512;
    for (const auto& s : w.segs) {
      if (s.first_sect > s.last_sect || s.last_sect > 7) return blkif::kRspError;
      const std::uint32_t len = (s.last_sect - s.first_sect + 1u) * 512;
      if (off + len > disk.size()) return blkif::kRspError;
      const auto m = mapper->map(s.gref, op == blkif::kOpWrite);
      if (m.status != gnttab::GNTST_okay) return blkif::kRspError;
      std::uint8_t* p = m.addr + s.first_sect * 512;
      if (op == blkif::kOpWrite) std::memcpy(disk.data() + off, p, len);
      else std::memcpy(p, disk.data() + off, len);
      mapper->unmap(m.handle);
      off += len;
    }
    return blkif::kRspOkay;
  }

  void respond(std::uint32_t q, std::uint64_t id, std::uint8_t op, std::int16_t status) {
    blkif::blkif_response rsp{};
    rsp.id = id;
    rsp.operation = op;
    rsp.status = status;
    rings[q].produce_response(rsp);
  }
  // Publishes responses; notifies the frontend's port if it asked (rsp_event).
  bool push(std::uint32_t q = 0) {
    const bool notify = rings[q].push_responses();
    if (notify) dom_.dom0_ports->send(ports[q]);
    return notify;
  }

  // Take, execute, answer everything on queue q; returns the requests served.
  std::vector<WireRequest> serve(std::uint32_t q = 0) {
    auto reqs = take(q);
    for (const auto& w : reqs) respond(q, w.id, w.operation, execute(w));
    if (!reqs.empty()) push(q);
    return reqs;
  }

  void unmap_all() {
    if (mapper) {
      for (auto h : handles) mapper->unmap(h);
    }
    handles.clear();
    for (std::size_t q = 0; q < ports.size(); ++q) {
      dom_.doorbell.set(ports[q], -1);
      dom_.dom0_ports->close(ports[q]);
      if (efds[q] >= 0) ::close(efds[q]);
    }
    ports.clear();
    efds.clear();
    rings.clear();
    mapper.reset();
  }

  std::unique_ptr<gnttab::GrantMapper> mapper;
  std::vector<blkif::BackRing> rings;
  std::vector<evtchn_port_t> ports;
  std::vector<int> efds;
  std::vector<gnttab::grant_handle_t> handles;
  std::uint32_t nr_queues = 0;
  std::uint32_t order = 0;
  bool fe_persistent = false;
  std::vector<std::uint8_t> disk;

 private:
  void w(const std::string& key, std::uint64_t v) {
    ASSERT_EQ(xs_.write(0, be_ + "/" + key, std::to_string(v)), 0);
    xs_.set_perms(be_ + "/" + key, {{0, xs::XsPerm::None}, {kGuestDomid, xs::XsPerm::Read}});
  }

  GuestDomain& dom_;
  XsWorld& xs_;
  BackendConfig cfg_;
  std::string fe_, be_;
};

// Completion record for BlockIos.
struct Done {
  int count = 0;
  static void cb(BlockIo* io) { ++static_cast<Done*>(io->cookie)->count; }
};

inline void fill_pattern(std::uint8_t* p, std::size_t len, std::uint64_t seed) {
  for (std::size_t i = 0; i < len; ++i)
    p[i] = static_cast<std::uint8_t>((seed * 2654435761u + i * 31 + (i >> 9)) & 0xFF);
}

}  // namespace pvio::blkfront::test
