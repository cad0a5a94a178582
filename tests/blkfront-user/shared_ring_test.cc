// One guest xenstore ring shared by several users of one process (SharedRingXenstore), as
// pvio-domain shares it between blkfront, netfront and its control/shutdown watch: this
// process is user-mode domain 8, introduced to a real pvio-xenstored; each thread has its own
// view. Requests from several threads all get their own answers; every view is woken by a
// watch event; abandon() frees a request waiting for a daemon that no longer answers.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "harness.h"
#include "pvio/blkfront_user/xenstore_access.h"
#include "pvio/domain/domain.h"
#include "pvio/xenstore/client.h"

namespace pvio::blkfront::user::test {
namespace {

constexpr domid_t kDomid = 8;

class SharedRingTest : public Dom0Test {
 protected:
  SharedRingTest() : Dom0Test(1 << 20) {}
  void SetUp() override {
    Dom0Test::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    domain::DomainConfig dc;
    dc.domid = kDomid;
    ASSERT_EQ(domain::Domain::create(dc, &dom_), 0);
    loop_ = std::thread([this] { dom_->run(); });
    xs_ = xs::Client::connect(dom0_->dir + "/xenstored.sock");
    ASSERT_TRUE(xs_);
    const std::string home = "/local/domain/" + std::to_string(kDomid);
    ASSERT_EQ(xs_->write(home + "/domid", std::to_string(kDomid)), xs::XsError::None);
    ASSERT_EQ(xs_->set_perms(home, {{kDomid, xs::XsPerm::None}}), xs::XsError::None);
    ASSERT_EQ(xs_->set_perms(home + "/domid", {{kDomid, xs::XsPerm::None}}), xs::XsError::None);
    ASSERT_EQ(xs_->introduce(kDomid, dom_->xenstore_gfn(), dom_->xenstore_port()),
              xs::XsError::None);
    ring_ = std::make_unique<SharedRingXenstore>(*dom_);
  }
  void TearDown() override {
    ring_.reset();
    if (xs_) xs_->release(kDomid);
    if (dom_) {
      dom_->stop();
      loop_.join();
      dom_.reset();
    }
    dom0_.reset();
  }

  std::unique_ptr<domain::Domain> dom_;
  std::thread loop_;
  std::unique_ptr<xs::Client> xs_;
  std::unique_ptr<SharedRingXenstore> ring_;
};

TEST_F(SharedRingTest, ThreadsEachGetTheirOwnAnswers) {
  constexpr int kThreads = 4, kOps = 200;
  std::atomic<int> wrong{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t, view = ring_->open()] {
      for (int i = 0; i < kOps; ++i) {
        const std::string key = "data/t" + std::to_string(t);
        const std::string value = std::to_string(t * 100000 + i);
        std::string got;
        if (view->write(key.c_str(), value.c_str()) != 0 || view->read(key.c_str(), &got) != 0 ||
            got != value)
          ++wrong;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(xs_->read("/local/domain/8/data/t3").value, std::to_string(3 * 100000 + kOps - 1));
}

TEST_F(SharedRingTest, EveryViewIsWokenByAWatchEvent) {
  auto a = ring_->open();
  auto b = ring_->open();
  ASSERT_EQ(a->watch("control/shutdown", "a"), 0);
  ASSERT_EQ(b->watch("device", "b"), 0);
  // Each view drains until it has seen an event (the initial ones fire at once).
  auto saw_event = [](XenstoreAccess& v) {
    for (int i = 0; i < 100; ++i) {
      if (v.drain_events() > 0) return true;
      v.wait(100);
    }
    return false;
  };
  EXPECT_TRUE(saw_event(*a));
  EXPECT_TRUE(saw_event(*b));
  // Dom0 writes what `pvio shutdown` writes; the view watching it is woken on its own thread
  // and reads it, whichever view took the event off the ring.
  std::string seen;
  std::thread waiter([&] {
    for (int i = 0; i < 100 && seen.empty(); ++i) {
      a->wait(100);
      a->drain_events();
      std::string v;
      if (a->read("control/shutdown", &v) == 0 && !v.empty()) seen = v;
    }
  });
  ASSERT_EQ(xs_->write("/local/domain/8/control/shutdown", "poweroff"), xs::XsError::None);
  b->drain_events();  // b may take the event off the ring first
  waiter.join();
  EXPECT_EQ(seen, "poweroff");
}

TEST_F(SharedRingTest, AbandonFreesARequestTheDaemonNeverAnswers) {
  auto v = ring_->open();
  std::string got;
  ASSERT_EQ(v->read("domid", &got), 0);
  EXPECT_EQ(got, "8");
  // Released: xenstored no longer serves the ring, so this read would wait for ever.
  ASSERT_EQ(xs_->release(kDomid), xs::XsError::None);
  std::atomic<int> rc{1};
  std::thread reader([&] {
    std::string out;
    rc = v->read("domid", &out);
  });
  ring_->abandon();
  reader.join();
  EXPECT_LT(rc.load(), 0);
  EXPECT_LT(v->read("domid", &got), 0) << "an abandoned ring stays failed";
}

}  // namespace
}  // namespace pvio::blkfront::user::test
