// The control plane end to end with real processes: pvio up starts pvio-xenstored (and
// pvio-blkback), pvio create starts pvio-domain and introduces it, and the guest speaks
// xenstore over its own ring page and event channel.
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstring>
#include <fstream>

#include "harness.h"
#include "pvio/xen/io/xs_wire.h"

namespace pvio::integration {
namespace {

using xs::XsError;

TEST_F(Toolstack, GuestReadsAndWritesItsHomeOverTheRing) {
  up();
  create(5, "alpha");
  auto g = guest(5);
  ASSERT_NE(g, nullptr);
  // Relative paths resolve against the guest's own home, as for a Xen guest.
  auto name = g->read("name");
  ASSERT_TRUE(name.ok()) << xs::xs_error_name(name.error);
  EXPECT_EQ(name.value, "alpha");
  EXPECT_EQ(g->read("/local/domain/5/domid").value, "5");
  EXPECT_EQ(g->get_domain_path(5).value, "/local/domain/5");
  ASSERT_EQ(g->write("data/greeting", "hello from the ring"), XsError::None);
  // xl's layout: name is Dom0's (the guest may only read it), data/ is the guest's.
  EXPECT_EQ(g->write("name", "renamed"), XsError::Acces);

  auto d0 = dom0();
  ASSERT_NE(d0, nullptr);
  EXPECT_EQ(d0->read("/local/domain/5/data/greeting").value, "hello from the ring");
  EXPECT_EQ(d0->read("/local/domain/5/name").value, "alpha");
  auto intro = d0->is_domain_introduced(5);
  ASSERT_TRUE(intro.ok());
  EXPECT_TRUE(intro.value);

  const CmdResult list = pvio("list");
  EXPECT_EQ(list.status, 0);
  EXPECT_NE(list.out.find("alpha"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("running"), std::string::npos) << list.out;
}

TEST_F(Toolstack, GuestsCannotReachEachOtherAndQuotaHolds) {
  up();
  create(5, "five");
  create(6, "six");
  auto g5 = guest(5);
  auto g6 = guest(6);
  ASSERT_NE(g5, nullptr);
  ASSERT_NE(g6, nullptr);
  ASSERT_EQ(g6->write("data/secret", "six's"), XsError::None);
  EXPECT_EQ(g5->read("/local/domain/6/data/secret").error, XsError::Acces);
  EXPECT_EQ(g5->read("/local/domain/6/name").error, XsError::Acces);
  EXPECT_EQ(g5->write("/local/domain/6/data/secret", "five's"), XsError::Acces);
  EXPECT_EQ(g5->rm("/local/domain/6/data"), XsError::Acces);
  EXPECT_EQ(g5->directory("/local/domain/6").error, XsError::Acces);
  EXPECT_EQ(g5->write("/local/domain/0/backend/x", "1"), XsError::Acces);
  EXPECT_EQ(g6->read("data/secret").value, "six's");
  // A guest cannot introduce or release domains.
  EXPECT_EQ(g5->release(6), XsError::Acces);

  // Node quota (1000 per domain, the daemon's default): the guest runs out, six does not.
  XsError last = XsError::None;
  int written = 0;
  for (; written < 1100 && last == XsError::None; ++written)
    last = g5->write("data/n" + std::to_string(written), "x");
  EXPECT_EQ(last, XsError::NoSpc) << "after " << written << " writes";
  EXPECT_LT(written, 1100);
  EXPECT_EQ(g6->write("data/still-fine", "yes"), XsError::None);
}

TEST_F(Toolstack, WatchesFireAcrossProcesses) {
  up();
  create(5, "watched");
  auto d0 = dom0();
  auto g = guest(5);
  ASSERT_NE(d0, nullptr);
  ASSERT_NE(g, nullptr);
  // Dom0 watches the guest's data; the guest writes over its ring.
  ASSERT_EQ(d0->watch("/local/domain/5/data", "d0"), XsError::None);
  ASSERT_TRUE(wait_event(*d0, "/local/domain/5/data"));  // the initial event
  ASSERT_EQ(g->write("data/k", "v"), XsError::None);
  EXPECT_TRUE(wait_event(*d0, "/local/domain/5/data/k"));

  // The guest watches relative to its home; Dom0 writes.
  ASSERT_EQ(g->watch("device", "g"), XsError::None);
  ASSERT_TRUE(wait_event(*g, "device"));
  ASSERT_EQ(d0->write("/local/domain/5/device/vif", ""), XsError::None);
  EXPECT_TRUE(wait_event(*g, "device/vif"));

  // A guest's watch on another domain's subtree sees nothing of it.
  create(6, "other");
  ASSERT_EQ(g->watch("/local/domain/6/data", "peek"), XsError::None);
  auto g6 = guest(6);
  ASSERT_NE(g6, nullptr);
  ASSERT_EQ(g6->write("data/private", "1"), XsError::None);
  ASSERT_EQ(g->write("data/marker", "1"), XsError::None);  // flush: a round trip after it
  while (auto ev = g->read_watch(200)) EXPECT_NE(ev->path, "/local/domain/6/data/private");
}

TEST_F(Toolstack, IntroduceAndReleaseFireAndDestroyCleansUp) {
  up();
  auto d0 = dom0();
  ASSERT_NE(d0, nullptr);
  ASSERT_EQ(d0->watch("@introduceDomain", "in"), XsError::None);
  ASSERT_EQ(d0->watch("@releaseDomain", "out"), XsError::None);
  ASSERT_TRUE(wait_event(*d0, "@introduceDomain"));
  ASSERT_TRUE(wait_event(*d0, "@releaseDomain"));

  create(7, "transient");
  EXPECT_TRUE(wait_event(*d0, "@introduceDomain"));
  const pid_t pid = domain_pid(7);
  ASSERT_GT(pid, 0);

  const CmdResult r = pvio("destroy 7");
  EXPECT_EQ(r.status, 0) << r.out;
  domains_.erase(7);
  EXPECT_TRUE(wait_event(*d0, "@releaseDomain"));
  EXPECT_FALSE(d0->is_domain_introduced(7).value);
  EXPECT_EQ(d0->read("/local/domain/7/name").error, XsError::NoEnt);
  reap();
  EXPECT_NE(::kill(pid, 0), 0) << "pvio-domain still running after destroy";
  EXPECT_NE(pvio("destroy 7").status, 0);  // nothing left to destroy
}

TEST_F(Toolstack, KillingTheDomainProcessReleasesIt) {
  up();
  create(8, "doomed");
  auto d0 = dom0();
  ASSERT_NE(d0, nullptr);
  ASSERT_EQ(d0->watch("@releaseDomain", "out"), XsError::None);
  ASSERT_TRUE(wait_event(*d0, "@releaseDomain"));
  ASSERT_TRUE(d0->is_domain_introduced(8).value);
  ASSERT_EQ(::kill(domain_pid(8), SIGKILL), 0);
  EXPECT_TRUE(wait_event(*d0, "@releaseDomain"));
  EXPECT_FALSE(d0->is_domain_introduced(8).value);
  const CmdResult list = pvio("list");
  EXPECT_NE(list.out.find("dead"), std::string::npos) << list.out;
  // The toolstack can start it again under the same domid once it is destroyed.
  EXPECT_EQ(pvio("destroy 8").status, 0);
  domains_.erase(8);
  create(8, "reborn");
  auto g = guest(8);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->read("name").value, "reborn");
}

TEST_F(Toolstack, IntroduceWithTheWrongRingPageIsRefused) {
  up();
  create(9, "nine");
  auto d0 = dom0();
  ASSERT_NE(d0, nullptr);
  ASSERT_EQ(d0->release(9), XsError::None);
  // gfn 2 is a grant frame, not the xenstore ring the domain reports (gfn 1).
  EXPECT_EQ(d0->introduce(9, 2, 1), XsError::Inval);
  EXPECT_FALSE(d0->is_domain_introduced(9).value);
  // No domain behind domid 42's socket at all.
  EXPECT_EQ(d0->introduce(42, 1, 1), XsError::Inval);
  // The right page works again after the failed attempts (the port went back to unbound).
  EXPECT_EQ(d0->introduce(9, 1, 1), XsError::None);
  auto g = guest(9);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->read("name").value, "nine");
}

TEST_F(Toolstack, CorruptRingDropsOnlyThatDomain) {
  up();
  create(5, "evil");
  create(6, "good");
  auto d0 = dom0();
  ASSERT_NE(d0, nullptr);
  ASSERT_EQ(d0->watch("@releaseDomain", "out"), XsError::None);
  ASSERT_TRUE(wait_event(*d0, "@releaseDomain"));

  // Domain 5 puts a header announcing a 64 KiB payload on its ring (limit 4096).
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = relay_socket(5);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  xs::xsd_sockmsg hdr{};
  hdr.type = static_cast<uint32_t>(xs::MsgType::XS_WRITE);
  hdr.len = 65536;
  ASSERT_EQ(::write(fd, &hdr, sizeof hdr), static_cast<ssize_t>(sizeof hdr));

  EXPECT_TRUE(wait_event(*d0, "@releaseDomain"));
  EXPECT_FALSE(d0->is_domain_introduced(5).value);
  ::close(fd);
  // The daemon and the other guest carry on.
  auto g6 = guest(6);
  ASSERT_NE(g6, nullptr);
  EXPECT_EQ(g6->write("data/ok", "1"), XsError::None);
  EXPECT_EQ(d0->read("/local/domain/6/data/ok").value, "1");
}

// A missing image and an empty one are refused with what is wrong, and nothing is written.
TEST_F(Toolstack, BlockAttachRefusesMissingAndEmptyImages) {
  up(/*blkback=*/false);
  create(5, "disk");
  const CmdResult missing = pvio("block-attach 5 " + dir_ + "/no-such.img");
  EXPECT_NE(missing.status, 0);
  EXPECT_NE(missing.out.find("no-such.img: No such file or directory"), std::string::npos)
      << missing.out;
  const std::string empty = dir_ + "/empty.img";
  { std::ofstream f(empty); }
  const CmdResult zero = pvio("block-attach 5 " + empty);
  EXPECT_NE(zero.status, 0);
  EXPECT_NE(zero.out.find("is 0 bytes long: a disk needs at least one 512-byte sector"),
            std::string::npos) << zero.out;
  auto d0 = dom0();
  ASSERT_NE(d0, nullptr);
  EXPECT_EQ(d0->read("/local/domain/0/backend/vbd/5/51712/params").error, XsError::NoEnt);
}

TEST_F(Toolstack, BlockAttachWritesTheLayoutBlkbackExpects) {
  if (Toolstack::shell("command -v xenstore-ls").status != 0)
    GTEST_SKIP() << "xenstore-ls not installed (Debian package xen-utils-common/xenstore-utils)";
  up(/*blkback=*/true);
  create(5, "disk");
  const std::string img = dir_ + "/disk.img";
  {
    std::ofstream f(img);
    f.seekp((8 << 20) - 1);
    f.put('\0');
  }
  auto d0 = dom0();
  ASSERT_NE(d0, nullptr);
  const std::string be = "/local/domain/0/backend/vbd/5/51712";
  ASSERT_EQ(d0->watch(be + "/state", "be"), XsError::None);
  const CmdResult r = pvio("block-attach 5 " + img + " --vdev xvda --mode w --engine null");
  ASSERT_EQ(r.status, 0) << r.out;

  // Debian's xenstore-ls against our daemon: the nodes and the permissions xl would set.
  const std::string ls = "XENSTORED_PATH=" + xenstored_socket() + " xenstore-ls -p ";
  const CmdResult fe = shell(ls + "/local/domain/5/device/vbd/51712");
  ASSERT_EQ(fe.status, 0) << fe.out;
  for (const char* key : {"backend = \"/local/domain/0/backend/vbd/5/51712\"",
                          "backend-id = \"0\"", "virtual-device = \"51712\"",
                          "device-type = \"disk\""})
    EXPECT_NE(fe.out.find(key), std::string::npos) << key << "\n" << fe.out;
  EXPECT_NE(fe.out.find("(n5,r0)"), std::string::npos) << fe.out;  // guest owns, backend reads
  const CmdResult bk = shell(ls + be);
  ASSERT_EQ(bk.status, 0) << bk.out;
  for (const std::string& key : std::vector<std::string>{"frontend = \"/local/domain/5/device/vbd/51712\"",
                                std::string("frontend-id = \"5\""), std::string("online = \"1\""),
                                std::string("mode = \"w\""), std::string("dev = \"xvda\""),
                                "params = \"" + img + "\""})
    EXPECT_NE(bk.out.find(key), std::string::npos) << key << "\n" << bk.out;
  EXPECT_NE(bk.out.find("(n0,r5)"), std::string::npos) << bk.out;  // Dom0 owns, guest reads
  EXPECT_EQ(bk.out.find("(n5"), std::string::npos) << bk.out;

  // The guest reads its device and its backend, over its ring, but cannot write the backend.
  auto g = guest(5);
  ASSERT_NE(g, nullptr);
  EXPECT_EQ(g->read("device/vbd/51712/backend").value, be);
  EXPECT_TRUE(g->read(be + "/params").ok());
  EXPECT_EQ(g->write(be + "/mode", "r"), XsError::Acces);
  EXPECT_EQ(g->write("device/vbd/51712/state", "1"), XsError::None);

  // pvio-blkback picks the device up: it publishes its features and goes to InitWait.
  bool initwait = false;
  for (int i = 0; i < 100 && !initwait; ++i) {
    initwait = d0->read(be + "/state").value == "2";
    if (!initwait) d0->read_watch(100);
  }
  EXPECT_TRUE(initwait);
  EXPECT_TRUE(d0->read(be + "/feature-persistent").ok());

  const CmdResult det = pvio("block-detach 5 xvda");
  EXPECT_EQ(det.status, 0) << det.out;
  EXPECT_EQ(d0->read(be + "/frontend").error, XsError::NoEnt);
  EXPECT_EQ(d0->read("/local/domain/5/device/vbd/51712/backend").error, XsError::NoEnt);
}

TEST_F(Toolstack, UpIsIdempotentAndDownStops) {
  up();
  const CmdResult again = pvio("up --no-blkback");
  EXPECT_EQ(again.status, 0) << again.out;
  EXPECT_NE(again.out.find("already running"), std::string::npos) << again.out;
  EXPECT_NE(dom0(), nullptr);
  EXPECT_EQ(pvio("down").status, 0);
  reap();
  EXPECT_EQ(dom0(), nullptr);
}

}  // namespace
}  // namespace pvio::integration
