// Guests over the xenstore ring: each guest is a forked process running the freestanding
// GuestClient on a ring page in a memfd, with eventfds as its event channel; the parent runs
// the server with RingTransports reached through INTRODUCE and a domain connector.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "harness.h"
#include "pvio/xenstore/guest_client.h"
#include "pvio/xenstore/ring_transport.h"
#include "pvio/xenstore/server.h"
#include "pvio/xenstore/xenbus.h"
#include "pvio/test/guest_image.h"

namespace pvio::xs::test {
namespace {

// One guest's xenstore "hardware": ring page (gfn 0 of a one-page memfd) and two eventfds.
struct GuestDomain {
  explicit GuestDomain(domid_t id)
      : domid(id),
        memory({"xenstore-ring", 0, 1, 0}),
        page(reinterpret_cast<xenstore_domain_interface*>(memory.base())) {
    to_dom0 = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    to_guest = eventfd(0, EFD_CLOEXEC);
  }
  ~GuestDomain() {
    close(to_dom0);
    close(to_guest);
  }
  domid_t domid;
  pvio::test::GuestImage memory;
  xenstore_domain_interface* page;
  int to_dom0 = -1;
  int to_guest = -1;
};

void kick(int fd) {
  uint64_t one = 1;
  ssize_t r = write(fd, &one, sizeof(one));
  (void)r;
}

// Maps the ring of a registered guest domain: gfn 0 is the page at offset 0 of its memfd.
class MemfdConnector final : public DomainConnector {
 public:
  void add(GuestDomain* d) { domains_[d->domid] = d; }
  std::unique_ptr<RingTransport> connect(domid_t domid, uint64_t gfn,
                                         evtchn_port_t port) override {
    auto it = domains_.find(domid);
    if (it == domains_.end() || gfn != 0 || port != 1) return nullptr;
    int fd = it->second->to_guest;
    return std::make_unique<RingTransport>(it->second->page, [fd] { kick(fd); });
  }

 private:
  std::map<domid_t, GuestDomain*> domains_;
};

// The guest side, running in the child: checks count failures into the exit status.
struct GuestCtx {
  GuestDomain* d;
  int failures = 0;
};
void guest_notify(void* c) { kick(static_cast<GuestCtx*>(c)->d->to_dom0); }
void guest_wait(void* c) {
  uint64_t v;
  ssize_t r = read(static_cast<GuestCtx*>(c)->d->to_guest, &v, sizeof(v));
  (void)r;
}

#define GCHECK(ctx, cond)                                                         \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "guest %u: %s:%d: %s\n", (ctx).d->domid, __FILE__, __LINE__, #cond); \
      ++(ctx).failures;                                                           \
    }                                                                             \
  } while (0)

using Guest = GuestClient<4>;
using GuestBody = std::function<void(Guest&, GuestCtx&)>;

class GuestRingTest : public ::testing::Test {
 protected:
  GuestRingTest() {
    server.set_domain_connector(&connector);
    for (domid_t d : {5, 6}) {
      doms.emplace(d, std::make_unique<GuestDomain>(d));
      connector.add(doms[d].get());
      std::string home = "/local/domain/" + std::to_string(d);
      EXPECT_EQ(dom0.mkdir(home), "OK");
      EXPECT_EQ(dom0.set_perms(home, {"n" + std::to_string(d)}), "OK");
      Msg m = dom0.req(MsgType::XS_INTRODUCE, z(std::to_string(d)) + z("0") + z("1"));
      EXPECT_EQ(Peer::result(m), "OK");
    }
    dom0.write("/local/domain/6/secret", "six");
  }

  // Runs each body in its own forked guest while the parent serves the rings.
  void run_guests(const std::vector<std::pair<domid_t, GuestBody>>& guests) {
    std::map<pid_t, domid_t> kids;
    for (const auto& [domid, body] : guests) {
      GuestDomain* d = doms.at(domid).get();
      pid_t pid = fork();
      ASSERT_GE(pid, 0);
      if (pid == 0) {
        GuestCtx ctx{d};
        Guest client(d->page, GuestPlatform{&ctx, guest_notify, guest_wait});
        body(client, ctx);
        _exit(ctx.failures > 100 ? 100 : ctx.failures);
      }
      kids[pid] = domid;
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!kids.empty()) {
      std::vector<pollfd> fds;
      std::vector<domid_t> which;
      for (auto& [id, d] : doms) {
        fds.push_back({d->to_dom0, POLLIN, 0});
        which.push_back(id);
      }
      poll(fds.data(), fds.size(), 5);
      for (std::size_t i = 0; i < fds.size(); ++i) {
        if (!(fds[i].revents & POLLIN)) continue;
        uint64_t v;
        ssize_t r = read(fds[i].fd, &v, sizeof(v));
        (void)r;
        if (RingTransport* t = server.domain_transport(which[i])) t->on_kick();
      }
      int status = 0;
      pid_t done;
      while ((done = waitpid(-1, &status, WNOHANG)) > 0) {
        EXPECT_TRUE(WIFEXITED(status)) << "guest " << kids[done] << " crashed";
        if (WIFEXITED(status)) {
          EXPECT_EQ(WEXITSTATUS(status), 0) << "guest " << kids[done] << " failed checks";
        }
        kids.erase(done);
      }
      if (on_idle) on_idle();
      if (std::chrono::steady_clock::now() > deadline) {
        for (auto& [pid, d] : kids) kill(pid, SIGKILL);
        for (auto& [pid, d] : kids) waitpid(pid, nullptr, 0);
        FAIL() << "guests did not finish";
      }
    }
  }

  static std::string read_str(Guest& g, const char* path, XsError* err = nullptr) {
    char buf[XENSTORE_PAYLOAD_MAX];
    size_t len = 0;
    XsError e = g.read(path, buf, sizeof(buf), &len);
    if (err) *err = e;
    return e == XsError::None ? std::string(buf, len) : std::string(xs_error_name(e));
  }
  static XsError write_str(Guest& g, const char* path, const std::string& v, uint32_t tx = 0) {
    return g.write(path, v.data(), v.size(), tx);
  }

  std::function<void()> on_idle;  // parent-side step run between polls
  Server server;
  MemfdConnector connector;
  std::map<domid_t, std::unique_ptr<GuestDomain>> doms;
  Peer dom0{server, 0};
};

TEST_F(GuestRingTest, GuestsReadAndWriteOnlyTheirOwnSubtree) {
  run_guests({
      {5,
       [](Guest& g, GuestCtx& c) {
         GCHECK(c, write_str(g, "data/x", "five") == XsError::None);
         GCHECK(c, read_str(g, "data/x") == "five");
         GCHECK(c, read_str(g, "/local/domain/5/data/x") == "five");
         GCHECK(c, read_str(g, "/local/domain/6/secret") == "EACCES");
         GCHECK(c, write_str(g, "/local/domain/6/secret", "pwned") == XsError::Acces);
         GCHECK(c, write_str(g, "/local/domain/6/new", "x") == XsError::Acces);
         GCHECK(c, g.rm("/local/domain/6/secret") == XsError::Acces);
         GCHECK(c, write_str(g, "/tool/x", "x") == XsError::Acces);
         GCHECK(c, read_str(g, "../6/secret") == "EINVAL");
         char buf[256];
         size_t len = 0;
         GCHECK(c, g.directory("data", buf, sizeof(buf), &len) == XsError::None);
         GCHECK(c, std::string(buf, len) == std::string("x\0", 2));
         // A large value spans the 1 KiB ring several times in both directions.
         std::string big(2000, 'b');
         GCHECK(c, write_str(g, "big", big) == XsError::None);
         GCHECK(c, read_str(g, "big") == big);
       }},
      {6,
       [](Guest& g, GuestCtx& c) {
         GCHECK(c, read_str(g, "secret") == "six");
         GCHECK(c, write_str(g, "data/y", "six") == XsError::None);
         GCHECK(c, read_str(g, "/local/domain/5/data/x") == "EACCES");
       }},
  });
  EXPECT_EQ(dom0.read("/local/domain/5/data/x"), "five");
  EXPECT_EQ(dom0.read("/local/domain/6/secret"), "six");
  EXPECT_EQ(dom0.read("/local/domain/6/data/y"), "six");
  EXPECT_EQ(dom0.get_perms("/local/domain/5/data/x"), z("n5"));
  EXPECT_EQ(dom0.read("/local/domain/6/new"), "ENOENT");
}

TEST_F(GuestRingTest, GuestCannotExceedNodeQuota) {
  run_guests({{5, [](Guest& g, GuestCtx& c) {
                 int ok = 0;
                 XsError last = XsError::None;
                 char path[32];
                 for (int i = 0; i < 1100; ++i) {
                   std::snprintf(path, sizeof(path), "q%d", i);
                   last = write_str(g, path, "v");
                   if (last != XsError::None) break;
                   ++ok;
                 }
                 GCHECK(c, ok == 999);  // its home node counts as the 1000th
                 GCHECK(c, last == XsError::NoSpc);
                 GCHECK(c, write_str(g, "data", std::string(2049, 'x')) == XsError::NoSpc);
                 uint32_t tx[11];
                 for (int i = 0; i < 10; ++i) GCHECK(c, g.transaction_start(&tx[i]) == XsError::None);
                 GCHECK(c, g.transaction_start(&tx[10]) == XsError::NoSpc);
               }}});
  EXPECT_EQ(server.store().nodes_owned_by(5), 1000u);
  EXPECT_EQ(dom0.write("/local/domain/6/ok", "v"), "OK");
}

TEST_F(GuestRingTest, WatchesFireExactlyForTheSubtree) {
  // Once the guest says "ready", Dom0 changes a node the guest cannot read (below guest 6's
  // home, which it watches) and then one below its own watched "device".
  bool done = false;
  on_idle = [&] {
    if (done || dom0.read("/local/domain/5/ready") != "1") return;
    done = true;
    dom0.write("/local/domain/6/private", "p");
    dom0.write("/local/domain/5/device/be", "b");
  };
  run_guests({{5, [](Guest& g, GuestCtx& c) {
                 char path[256], token[64];
                 GCHECK(c, g.watch("device", "dev") == XsError::None);
                 GCHECK(c, g.read_watch(path, sizeof(path), token, sizeof(token)));
                 GCHECK(c, std::string(path) == "device" && std::string(token) == "dev");
                 GCHECK(c, write_str(g, "devicex", "not in subtree") == XsError::None);
                 GCHECK(c, write_str(g, "other", "1") == XsError::None);
                 GCHECK(c, write_str(g, "device/vif/0", "1") == XsError::None);
                 GCHECK(c, g.read_watch(path, sizeof(path), token, sizeof(token)));
                 GCHECK(c, std::string(path) == "device/vif/0" && std::string(token) == "dev");
                 GCHECK(c, !g.read_watch(path, sizeof(path), token, sizeof(token), false));
                 // Registering on a subtree it cannot read is allowed (as Xen) ...
                 GCHECK(c, g.watch("/local/domain/6", "spy") == XsError::None);
                 GCHECK(c, g.read_watch(path, sizeof(path), token, sizeof(token)));
                 GCHECK(c, std::string(path) == "/local/domain/6");
                 GCHECK(c, write_str(g, "ready", "1") == XsError::None);
                 // ... but the change there is not delivered: the next event is Dom0's
                 // write below our own "device".
                 GCHECK(c, g.read_watch(path, sizeof(path), token, sizeof(token)));
                 GCHECK(c, std::string(path) == "device/be" && std::string(token) == "dev");
                 GCHECK(c, g.unwatch("device", "dev") == XsError::None);
                 GCHECK(c, g.unwatch("device", "dev") == XsError::NoEnt);
                 GCHECK(c, g.lost_events() == 0);
               }}});
  EXPECT_TRUE(done);
}

TEST_F(GuestRingTest, TransactionConflictAbortsAndAbortDiscards) {
  run_guests({{5, [](Guest& g, GuestCtx& c) {
                 GCHECK(c, write_str(g, "ctr", "1") == XsError::None);
                 uint32_t tx = 0;
                 GCHECK(c, g.transaction_start(&tx) == XsError::None && tx != 0);
                 char buf[16];
                 size_t len = 0;
                 GCHECK(c, g.read("ctr", buf, sizeof(buf), &len, tx) == XsError::None);
                 GCHECK(c, write_str(g, "ctr", "2", tx) == XsError::None);
                 GCHECK(c, write_str(g, "ctr", "outside") == XsError::None);  // conflict
                 GCHECK(c, g.transaction_end(tx, true) == XsError::Again);
                 GCHECK(c, read_str(g, "ctr") == "outside");
                 GCHECK(c, g.transaction_start(&tx) == XsError::None);
                 GCHECK(c, write_str(g, "tmp", "x", tx) == XsError::None);
                 GCHECK(c, g.transaction_end(tx, false) == XsError::None);
                 GCHECK(c, read_str(g, "tmp") == "ENOENT");
                 GCHECK(c, g.transaction_start(&tx) == XsError::None);
                 GCHECK(c, write_str(g, "ctr", "3", tx) == XsError::None);
                 GCHECK(c, g.transaction_end(tx, true) == XsError::None);
                 GCHECK(c, read_str(g, "ctr") == "3");
                 // The XenBus helpers run the same handshake through the ring.
                 GCHECK(c, xenbus_switch_state(g, "device/vbd/768", XenbusState::Initialising) == XsError::None);
                 GCHECK(c, xenbus_switch_state(g, "device/vbd/768", XenbusState::Reconfigured) == XsError::Inval);
                 GCHECK(c, xenbus_switch_state(g, "device/vbd/768", XenbusState::Initialised) == XsError::None);
                 GCHECK(c, xenbus_read_state(g, "device/vbd/768") == XenbusState::Initialised);
               }}});
  EXPECT_EQ(dom0.read("/local/domain/5/ctr"), "3");
  EXPECT_EQ(dom0.read("/local/domain/5/device/vbd/768/state"), "3");
}

TEST_F(GuestRingTest, CorruptRingIndexDropsOnlyThatGuest) {
  run_guests({{5, [](Guest& g, GuestCtx& c) {
                 GCHECK(c, write_str(g, "before", "1") == XsError::None);
                 // Claim 5000 bytes of requests on a 1024-byte ring.
                 auto* page = c.d->page;
                 __atomic_store_n(&page->req_prod, page->req_cons + 5000, __ATOMIC_RELEASE);
                 guest_notify(&c);
                 while (__atomic_load_n(&page->error, __ATOMIC_ACQUIRE) == XENSTORE_ERROR_NONE)
                   guest_wait(&c);
                 GCHECK(c, page->error == XENSTORE_ERROR_RINGIDX);
                 GCHECK(c, write_str(g, "after", "1") == XsError::Io);
               }}});
  ASSERT_NE(server.domain_transport(5), nullptr);
  EXPECT_TRUE(server.domain_transport(5)->dropped());
  EXPECT_EQ(server.stats().dropped_connections, 1u);
  // The other guest keeps working, before and after.
  run_guests({{6, [](Guest& g, GuestCtx& c) {
                 for (int i = 0; i < 50; ++i) {
                   std::string v = std::to_string(i);
                   GCHECK(c, write_str(g, "alive", v) == XsError::None);
                   GCHECK(c, read_str(g, "alive") == v);
                 }
               }}});
  EXPECT_FALSE(server.domain_transport(6)->dropped());
  EXPECT_EQ(dom0.read("/local/domain/6/alive"), "49");
  EXPECT_EQ(dom0.read("/local/domain/5/before"), "1");
  EXPECT_EQ(dom0.read("/local/domain/5/after"), "ENOENT");
  // Dom0 releases the dropped domain; its watchers hear of it.
  dom0.watch("@releaseDomain", "rel");
  dom0.take_events();
  EXPECT_EQ(Peer::result(dom0.req(MsgType::XS_RELEASE, z("5"))), "OK");
  EXPECT_EQ(dom0.take_events(), std::vector<std::string>{"@releaseDomain|rel"});
  EXPECT_EQ(server.domain_transport(5), nullptr);
}

TEST_F(GuestRingTest, OversizedMessageAndBadResponseIndexDropTheGuest) {
  run_guests({{5, [](Guest&, GuestCtx& c) {
                 auto* page = c.d->page;
                 xsd_sockmsg h{static_cast<uint32_t>(MsgType::XS_READ), 1, 0, 5000};
                 std::memcpy(page->req, &h, sizeof(h));
                 __atomic_store_n(&page->req_prod, page->req_prod + sizeof(h), __ATOMIC_RELEASE);
                 guest_notify(&c);
                 while (__atomic_load_n(&page->error, __ATOMIC_ACQUIRE) == XENSTORE_ERROR_NONE)
                   guest_wait(&c);
                 GCHECK(c, page->error == XENSTORE_ERROR_PROTO);
               }},
              {6, [](Guest& g, GuestCtx& c) {
                 // Pretend to have consumed responses that were never produced.
                 GCHECK(c, write_str(g, "x", "1") == XsError::None);
                 auto* page = c.d->page;
                 __atomic_store_n(&page->rsp_cons, page->rsp_prod - 4000, __ATOMIC_RELEASE);
                 char buf[16];
                 size_t len;
                 // The reply cannot be written: the server sees 4000 bytes outstanding.
                 g.read("x", buf, sizeof(buf), &len);
                 GCHECK(c, page->error == XENSTORE_ERROR_RINGIDX);
               }}});
  EXPECT_TRUE(server.domain_transport(5)->dropped());
  EXPECT_TRUE(server.domain_transport(6)->dropped());
  EXPECT_EQ(dom0.write("/still/serving", "yes"), "OK");
}

TEST_F(GuestRingTest, IntroduceAndReleaseFireSpecialWatches) {
  dom0.watch("@introduceDomain", "intro");
  dom0.take_events();
  EXPECT_EQ(Peer::result(dom0.req(MsgType::XS_IS_DOMAIN_INTRODUCED, z("5"))), z("T"));
  // Same ring again is a no-op; a different one is refused; an unknown domain cannot be mapped.
  EXPECT_EQ(Peer::result(dom0.req(MsgType::XS_INTRODUCE, z("5") + z("0") + z("1"))), "OK");
  EXPECT_EQ(Peer::result(dom0.req(MsgType::XS_INTRODUCE, z("5") + z("9") + z("1"))), "EEXIST");
  EXPECT_EQ(Peer::result(dom0.req(MsgType::XS_INTRODUCE, z("9") + z("0") + z("1"))), "EINVAL");
  EXPECT_TRUE(dom0.take_events().empty());
  EXPECT_EQ(Peer::result(dom0.req(MsgType::XS_RELEASE, z("6"))), "OK");
  EXPECT_EQ(Peer::result(dom0.req(MsgType::XS_IS_DOMAIN_INTRODUCED, z("6"))), z("F"));
  EXPECT_EQ(Peer::result(dom0.req(MsgType::XS_INTRODUCE, z("6") + z("0") + z("1"))), "OK");
  EXPECT_EQ(dom0.take_events(), std::vector<std::string>{"@introduceDomain|intro"});
  run_guests({{6, [](Guest& g, GuestCtx& c) { GCHECK(c, read_str(g, "secret") == "six"); }}});
}

}  // namespace
}  // namespace pvio::xs::test
