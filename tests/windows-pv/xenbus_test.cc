// xenbus's platform logic that Linux can check: the two-phase unplug decision (every
// combination of the registry and the protocol), and the enumeration of device/vbd and
// device/vif into child devices over a user-mode domain's xenstore ring, with the nodes made
// by the real toolstack (`pvio block-attach`, `pvio network-attach`) in the real
// pvio-xenstored.
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <thread>

#include "../blkfront-user/harness.h"
#include "enumerate.h"
#include "pvio/domain/domain.h"
#include "pvio/event_channel/notifier.h"
#include "pvio/xenstore/client.h"
#include "pvio/xenstore/guest_client.h"
#include "unplug.h"

namespace pvio::windows::xenbus {
namespace {

// ---- unplug ----

UnplugState installed_and_requested() {
  UnplugState s;
  s.protocol_present = true;
  s.product_accepted = true;
  s.request_disks = true;
  s.request_nics = true;
  s.xenvbd_boot_start = true;
  s.xennet_installed = true;
  return s;
}

TEST(XenbusUnplug, PhaseTwoUnplugsDisksAndNics) {
  const UnplugDecision d = decide_unplug(installed_and_requested());
  EXPECT_EQ(d.mask, kUnplugAllIdeDisks | kUnplugAllNics);
  EXPECT_TRUE(d.use_pv_disks);
  EXPECT_TRUE(d.use_pv_nics);
  EXPECT_EQ(d.reason, UnplugReason::Unplugged);
}

TEST(XenbusUnplug, FreshInstallUnplugsNothing) {
  UnplugState s = installed_and_requested();
  s.request_disks = s.request_nics = false;  // phase 1: the INFs' requests land at next boot
  const UnplugDecision d = decide_unplug(s);
  EXPECT_EQ(d.mask, 0);
  EXPECT_FALSE(d.use_pv_disks);
  EXPECT_EQ(d.reason, UnplugReason::NothingRequested);
}

TEST(XenbusUnplug, NeverTheBootDiskWithoutABootStartDiskDriver) {
  UnplugState s = installed_and_requested();
  s.xenvbd_boot_start = false;  // uninstalled, or demand-start: it would not see the boot disk
  const UnplugDecision d = decide_unplug(s);
  EXPECT_EQ(d.mask & kUnplugAllIdeDisks, 0);
  EXPECT_EQ(d.mask, kUnplugAllNics);
  EXPECT_FALSE(d.use_pv_disks);
  s.request_nics = false;
  EXPECT_EQ(decide_unplug(s).reason, UnplugReason::DiskDriverMissing);
}

TEST(XenbusUnplug, KeepEmulatedWinsOverEveryRequest) {
  UnplugState s = installed_and_requested();
  s.keep_emulated = true;
  const UnplugDecision d = decide_unplug(s);
  EXPECT_EQ(d.mask, 0);
  EXPECT_FALSE(d.use_pv_disks);
  EXPECT_FALSE(d.use_pv_nics);
  EXPECT_EQ(d.reason, UnplugReason::KeptByUser);
}

TEST(XenbusUnplug, NoProtocolOrRefusedProductLeavesEverything) {
  UnplugState s = installed_and_requested();
  s.protocol_present = false;
  EXPECT_EQ(decide_unplug(s).mask, 0);
  EXPECT_EQ(decide_unplug(s).reason, UnplugReason::NoProtocol);
  s.protocol_present = true;
  s.product_accepted = false;
  EXPECT_EQ(decide_unplug(s).mask, 0);
  EXPECT_FALSE(decide_unplug(s).use_pv_nics);
  EXPECT_EQ(decide_unplug(s).reason, UnplugReason::ProductRefused);
}

TEST(XenbusUnplug, EveryCombinationKeepsTheBootDiskSafe) {
  for (unsigned bits = 0; bits < 128; ++bits) {
    UnplugState s;
    s.request_disks = bits & 1;
    s.request_nics = bits & 2;
    s.keep_emulated = bits & 4;
    s.xenvbd_boot_start = bits & 8;
    s.xennet_installed = bits & 16;
    s.protocol_present = bits & 32;
    s.product_accepted = bits & 64;
    const UnplugDecision d = decide_unplug(s);
    const bool allowed = s.protocol_present && s.product_accepted && !s.keep_emulated;
    EXPECT_EQ((d.mask & kUnplugAllIdeDisks) != 0, allowed && s.request_disks && s.xenvbd_boot_start) << bits;
    EXPECT_EQ((d.mask & kUnplugAllNics) != 0, allowed && s.request_nics && s.xennet_installed) << bits;
    EXPECT_EQ(d.use_pv_disks, (d.mask & kUnplugAllIdeDisks) != 0) << bits;
    EXPECT_EQ(d.mask & ~(kUnplugAllIdeDisks | kUnplugAllNics), 0) << bits;
  }
}

// ---- enumeration: parsing ----

TEST(XenbusEnumerate, DirectoryRepliesBecomeChildren) {
  const char reply[] = "51712\0" "51728\0" "bogus\0" "007\0" "99999999999\0" "268439552";
  ChildList l;
  add_directory(reply, sizeof reply, PvioXenVbd, l);
  ASSERT_EQ(l.count, 3u);
  EXPECT_EQ(l.items[0].devid, 51712u);
  EXPECT_EQ(l.items[1].devid, 51728u);
  EXPECT_EQ(l.items[2].devid, 268439552u);  // an extended xvd number
  EXPECT_EQ(l.ignored, 3u);
  char id[32];
  EXPECT_EQ(hardware_id(PvioXenVbd, id, sizeof id), 10u);
  EXPECT_STREQ(id, "XENBUS\\VBD");
  EXPECT_GT(instance_id(l.items[0], id, sizeof id), 0u);
  EXPECT_STREQ(id, "51712");
  EXPECT_EQ(instance_id(l.items[0], id, 3), 0u);
}

TEST(XenbusEnumerate, DiffFindsAddedAndRemovedChildren) {
  ChildList a, b, added, removed;
  a.items[a.count++] = Child{PvioXenVbd, 1};
  a.items[a.count++] = Child{PvioXenVif, 0};
  b.items[b.count++] = Child{PvioXenVif, 0};
  b.items[b.count++] = Child{PvioXenVbd, 2};
  diff(a, b, added, removed);
  ASSERT_EQ(added.count, 1u);
  EXPECT_EQ(added.items[0], (Child{PvioXenVbd, 2}));
  ASSERT_EQ(removed.count, 1u);
  EXPECT_EQ(removed.items[0], (Child{PvioXenVbd, 1}));
}

// ---- enumeration over the guest's xenstore ring, against the real services ----

constexpr domid_t kDomid = 11;

// GuestClient's seam over the user-mode domain's xenstore event channel.
struct RingSeam {
  domain::Domain* dom;
  int fd;
  static void notify(void* c) {
    auto* s = static_cast<RingSeam*>(c);
    s->dom->send(s->dom->xenstore_port());
  }
  static void wait(void* c) {
    pollfd p{static_cast<RingSeam*>(c)->fd, POLLIN, 0};
    if (::poll(&p, 1, 100) > 0) {
      std::uint64_t v;
      [[maybe_unused]] ssize_t r = ::read(p.fd, &v, sizeof v);
    }
  }
};

class XenbusEnumerateLive : public blkfront::user::test::Dom0Test {
 protected:
  XenbusEnumerateLive() : Dom0Test(16u << 20) {}
};

TEST_F(XenbusEnumerateLive, FindsTheToolstacksDisksAndNics) {
  if (IsSkipped() || HasFatalFailure()) return;
  domain::DomainConfig dc;
  dc.domid = kDomid;
  dc.memory_bytes = 16u << 20;
  std::unique_ptr<domain::Domain> dom;
  ASSERT_EQ(domain::Domain::create(dc, &dom), 0);
  std::thread loop([&] { dom->run(); });
  struct StopLoop {  // also on a failed ASSERT: a joinable thread must not be destroyed
    domain::Domain* d;
    std::thread* t;
    ~StopLoop() {
      d->stop();
      t->join();
    }
  } stop_loop{dom.get(), &loop};
  auto xs = xs::Client::connect(dom0_->dir + "/xenstored.sock");
  ASSERT_TRUE(xs);
  const std::string home = "/local/domain/" + std::to_string(kDomid);
  ASSERT_EQ(xs->write(home + "/name", "xenbus-test"), xs::XsError::None);
  ASSERT_EQ(xs->write(home + "/domid", std::to_string(kDomid)), xs::XsError::None);
  ASSERT_EQ(xs->set_perms(home, {{0, xs::XsPerm::None}, {kDomid, xs::XsPerm::Read}}),
            xs::XsError::None);
  ASSERT_EQ(xs->introduce(kDomid, dom->xenstore_gfn(), dom->xenstore_port()), xs::XsError::None);

  RingSeam seam{dom.get(), evtchn::eventfd_create(true)};
  const int fd = seam.fd;
  dom->set_handler(dom->xenstore_port(), [fd](evtchn_port_t) { evtchn::eventfd_signal(fd); });
  xs::GuestClient<4> client(reinterpret_cast<xs::xenstore_domain_interface*>(dom->xenstore_interface()),
                            xs::GuestPlatform{&seam, &RingSeam::notify, &RingSeam::wait});

  ChildList none;
  ASSERT_TRUE(enumerate(client, none, xs::XsError::None, xs::XsError::NoEnt));
  EXPECT_EQ(none.count, 0u);

  std::string out;
  ASSERT_EQ(pvio::test::run_shell(dom0_->pvio + " block-attach " + std::to_string(kDomid) + " " +
                                  dom0_->disk, &out), 0) << out;
  ASSERT_EQ(pvio::test::run_shell(dom0_->pvio + " network-attach " + std::to_string(kDomid), &out),
            0) << out;
  ChildList now;
  ASSERT_TRUE(enumerate(client, now, xs::XsError::None, xs::XsError::NoEnt));
  EXPECT_TRUE(now.contains(Child{PvioXenVbd, 51712})) << now.count;
  EXPECT_TRUE(now.contains(Child{PvioXenVif, 0})) << now.count;
  EXPECT_EQ(now.count, 2u);
  ChildList added, removed;
  diff(none, now, added, removed);
  EXPECT_EQ(added.count, 2u);
  EXPECT_EQ(removed.count, 0u);

  dom->set_handler(dom->xenstore_port(), nullptr);
  ::close(fd);
  xs->release(kDomid);
}

}  // namespace
}  // namespace pvio::windows::xenbus
