// The xenstore server over in-process connections: store semantics, Xen's permission model,
// quotas, transactions, watches and every error reply, asserted on the bytes it sends.
#include <gtest/gtest.h>

#include "harness.h"
#include "pvio/xenstore/store.h"

namespace pvio::xs::test {
namespace {

class ServerTest : public ::testing::Test {
 protected:
  ServerTest() {
    // Dom0 sets up two guests' homes, owned by them, as a toolstack does.
    for (int d : {5, 6}) {
      std::string home = "/local/domain/" + std::to_string(d);
      EXPECT_EQ(dom0.mkdir(home), "OK");
      EXPECT_EQ(dom0.set_perms(home, {"n" + std::to_string(d)}), "OK");
    }
  }
  Server server;
  Peer dom0{server, 0};
  Peer g5{server, 5};
  Peer g6{server, 6};
};

TEST_F(ServerTest, WriteCreatesParentsAndReadReturnsValue) {
  EXPECT_EQ(dom0.write("/a/b/c", "hello"), "OK");
  EXPECT_EQ(dom0.read("/a/b/c"), "hello");
  EXPECT_EQ(dom0.read("/a/b"), "");
  EXPECT_EQ(dom0.dir("/a"), z("b"));
  EXPECT_EQ(dom0.read("/a/x"), "ENOENT");
}

TEST_F(ServerTest, ValuesAreRawBytes) {
  std::string v("x\0y\xff", 4);
  EXPECT_EQ(dom0.write("/bin", v), "OK");
  EXPECT_EQ(dom0.read("/bin"), v);
}

TEST_F(ServerTest, DirectoryListsChildrenInCreationOrder) {
  dom0.write("/d/zeta", "1");
  dom0.write("/d/alpha", "2");
  dom0.mkdir("/d/mid");
  EXPECT_EQ(dom0.dir("/d"), z("zeta") + z("alpha") + z("mid"));
  EXPECT_EQ(dom0.dir("/nope"), "ENOENT");
}

TEST_F(ServerTest, MkdirOfExistingNodeIsOkAndKeepsValue) {
  dom0.write("/m", "v");
  EXPECT_EQ(dom0.mkdir("/m"), "OK");
  EXPECT_EQ(dom0.read("/m"), "v");
}

TEST_F(ServerTest, RmRemovesSubtreeAndToleratesMissingLeaf) {
  dom0.write("/r/a/b", "1");
  dom0.write("/r/c", "2");
  EXPECT_EQ(dom0.rm("/r/a"), "OK");
  EXPECT_EQ(dom0.read("/r/a/b"), "ENOENT");
  EXPECT_EQ(dom0.dir("/r"), z("c"));
  EXPECT_EQ(dom0.rm("/r/gone"), "OK");        // parent exists: fine, as C xenstored
  EXPECT_EQ(dom0.rm("/r/gone/deeper"), "ENOENT");
  EXPECT_EQ(dom0.rm("/"), "EINVAL");
}

TEST_F(ServerTest, GuestRelativePathsResolveUnderItsHome) {
  EXPECT_EQ(g5.write("device/vbd/768/state", "1"), "OK");
  EXPECT_EQ(dom0.read("/local/domain/5/device/vbd/768/state"), "1");
  EXPECT_EQ(g5.read("/local/domain/5/device/vbd/768/state"), "1");
  EXPECT_EQ(g6.read("device/vbd/768/state"), "ENOENT");  // its own home, where nothing is
}

TEST_F(ServerTest, GuestCannotTouchAnotherDomainsSubtree) {
  g5.write("secret", "s");
  EXPECT_EQ(g6.read("/local/domain/5/secret"), "EACCES");
  EXPECT_EQ(g6.write("/local/domain/5/secret", "x"), "EACCES");
  EXPECT_EQ(g6.write("/local/domain/5/new", "x"), "EACCES");
  EXPECT_EQ(g6.rm("/local/domain/5/secret"), "EACCES");
  EXPECT_EQ(g6.dir("/local/domain/5"), "EACCES");
  EXPECT_EQ(g6.set_perms("/local/domain/5/secret", {"b6"}), "EACCES");
  EXPECT_EQ(dom0.read("/local/domain/5/secret"), "s");
}

TEST_F(ServerTest, GuestDoesNotLearnWhetherHiddenNodesExist) {
  // Under a parent it cannot read, a missing node is EACCES, not ENOENT (errno_from_parents).
  EXPECT_EQ(g6.read("/local/domain/5/missing"), "EACCES");
  EXPECT_EQ(g6.read("/local/domain/6/missing"), "ENOENT");
}

TEST_F(ServerTest, GuestCannotWriteOutsideWritableNodes) {
  EXPECT_EQ(g5.write("/tool/x", "1"), "EACCES");
  EXPECT_EQ(g5.mkdir("/local/domain/7"), "EACCES");
  dom0.write("/public", "p");
  EXPECT_EQ(g5.read("/public"), "EACCES");  // root's default "n0" is inherited
}

TEST_F(ServerTest, NewNodesInheritParentPermsWithCreatorAsOwner) {
  EXPECT_EQ(dom0.set_perms("/local/domain/5", {"n5", "r0", "r6"}), "OK");
  EXPECT_EQ(g5.write("data/x", "1"), "OK");
  EXPECT_EQ(g5.get_perms("data/x"), z("n5") + z("r0") + z("r6"));
  EXPECT_EQ(g6.read("/local/domain/5/data/x"), "1");
  EXPECT_EQ(g6.write("/local/domain/5/data/x", "2"), "EACCES");
  // Dom0 creating under the guest's home keeps the parent's owner (Dom0 is privileged).
  EXPECT_EQ(dom0.write("/local/domain/5/backend-info", "b"), "OK");
  EXPECT_EQ(dom0.get_perms("/local/domain/5/backend-info"), z("n5") + z("r0") + z("r6"));
}

TEST_F(ServerTest, AclEntriesGrantPerDomainRights) {
  dom0.write("/shared/ro", "r");
  dom0.write("/shared/rw", "w");
  EXPECT_EQ(dom0.set_perms("/shared/ro", {"n0", "r5"}), "OK");
  EXPECT_EQ(dom0.set_perms("/shared/rw", {"n0", "b5"}), "OK");
  EXPECT_EQ(g5.read("/shared/ro"), "r");
  EXPECT_EQ(g5.write("/shared/ro", "x"), "EACCES");
  EXPECT_EQ(g5.write("/shared/rw", "x"), "OK");
  EXPECT_EQ(g6.read("/shared/ro"), "EACCES");
  EXPECT_EQ(dom0.set_perms("/shared/ro", {"r0"}), "OK");  // everyone may read
  EXPECT_EQ(g6.read("/shared/ro"), "r");
}

TEST_F(ServerTest, OnlyOwnerChangesPermsAndGuestsCannotGiveNodesAway) {
  g5.write("mine", "1");
  EXPECT_EQ(g5.set_perms("mine", {"n5", "r6"}), "OK");
  EXPECT_EQ(g5.set_perms("mine", {"n6"}), "EPERM");
  EXPECT_EQ(dom0.set_perms("/local/domain/5/mine", {"n6"}), "OK");
  EXPECT_EQ(g5.set_perms("mine", {"n5"}), "EACCES");
  EXPECT_EQ(dom0.set_perms("/x", {"q5"}), "EINVAL");
  EXPECT_EQ(dom0.set_perms("/nope", {"n0"}), "ENOENT");
}

TEST(ServerQuota, DefaultsAreXens) {
  Quotas q;
  EXPECT_EQ(q.nodes_per_domain, 1000u);
  EXPECT_EQ(q.watches_per_connection, 128u);
  EXPECT_EQ(q.transactions_per_connection, 10u);
  EXPECT_EQ(q.entry_size, 2048u);
  EXPECT_EQ(q.path_length, 2048u);
}

TEST_F(ServerTest, NodeQuotaStopsAGuestAtOneThousandNodes) {
  // The home node itself is owned by the guest and counts.
  int ok = 0;
  std::string last;
  for (int i = 0; i < 1100; ++i) {
    last = g5.write("n" + std::to_string(i), "v");
    if (last != "OK") break;
    ++ok;
  }
  EXPECT_EQ(ok, 999);
  EXPECT_EQ(last, "ENOSPC");
  EXPECT_EQ(g5.write("a/b", "v"), "ENOSPC");
  EXPECT_EQ(g6.write("still-fine", "v"), "OK");  // another guest is unaffected
  EXPECT_EQ(g5.rm("n0"), "OK");                 // freeing one node makes room again
  EXPECT_EQ(g5.write("again", "v"), "OK");
  EXPECT_EQ(dom0.write("/local/domain/5/by-dom0", "v"), "OK");  // Dom0 is not limited
}

TEST_F(ServerTest, EntrySizeQuota) {
  EXPECT_EQ(g5.write("big", std::string(2048, 'x')), "OK");
  EXPECT_EQ(g5.write("big", std::string(2049, 'x')), "ENOSPC");
  EXPECT_EQ(dom0.write("/big", std::string(3000, 'x')), "OK");
}

TEST_F(ServerTest, WatchQuotaIsE2BIG) {
  for (int i = 0; i < 128; ++i) ASSERT_EQ(g5.watch("w", "t" + std::to_string(i)), "OK");
  EXPECT_EQ(g5.watch("w", "one-too-many"), "E2BIG");
}

TEST_F(ServerTest, TransactionQuotaIsENOSPC) {
  for (int i = 0; i < 10; ++i) g5.tx_start();
  Msg m = g5.req(MsgType::XS_TRANSACTION_START, std::string_view("\0", 1));
  EXPECT_TRUE(m.is_error("ENOSPC"));
}

TEST_F(ServerTest, PathLengthLimits) {
  std::string rel(2048, 'a');
  EXPECT_EQ(g5.write(rel, "v"), "OK");
  EXPECT_EQ(g5.write(rel + "b", "v"), "EINVAL");
  EXPECT_EQ(dom0.write("/" + std::string(3071, 'a'), "v"), "OK");
  EXPECT_EQ(dom0.write("/" + std::string(3072, 'a'), "v"), "EINVAL");
}

TEST_F(ServerTest, BadPathsAreEINVAL) {
  for (std::string p : {"/a/../b", "/a//b", "/a/", "/a b", "/a/.", "", "/\xc3\xa9", "@foo"})
    EXPECT_EQ(dom0.write(p, "v"), "EINVAL") << p;
  EXPECT_EQ(g5.read("../6/x"), "EINVAL");
}

TEST_F(ServerTest, TransactionHasAPrivateViewAndCommits) {
  dom0.write("/t/a", "old");
  uint32_t tx = dom0.tx_start();
  EXPECT_NE(tx, 0u);
  EXPECT_EQ(dom0.write("/t/a", "new", tx), "OK");
  EXPECT_EQ(dom0.write("/t/b", "created", tx), "OK");
  EXPECT_EQ(dom0.read("/t/a", tx), "new");
  EXPECT_EQ(dom0.read("/t/a"), "old");
  EXPECT_EQ(dom0.read("/t/b"), "ENOENT");
  EXPECT_EQ(dom0.dir("/t", tx), z("a") + z("b"));
  EXPECT_EQ(dom0.tx_end(tx, true), "OK");
  EXPECT_EQ(dom0.read("/t/a"), "new");
  EXPECT_EQ(dom0.read("/t/b"), "created");
  EXPECT_EQ(dom0.tx_end(tx, true), "ENOENT");  // gone after END
}

TEST_F(ServerTest, TransactionAbortDiscards) {
  uint32_t tx = dom0.tx_start();
  dom0.write("/abort/x", "1", tx);
  EXPECT_EQ(dom0.tx_end(tx, false), "OK");
  EXPECT_EQ(dom0.read("/abort/x"), "ENOENT");
}

TEST_F(ServerTest, ConflictingTransactionGetsEAGAIN) {
  dom0.write("/c/x", "0");
  uint32_t t1 = dom0.tx_start();
  uint32_t t2 = g5.tx_start();
  (void)t2;
  EXPECT_EQ(dom0.read("/c/x", t1), "0");
  EXPECT_EQ(dom0.write("/c/y", "from-t1", t1), "OK");
  EXPECT_EQ(dom0.write("/c/x", "outside"), "OK");  // concurrent change of what t1 read
  EXPECT_EQ(dom0.tx_end(t1, true), "EAGAIN");
  EXPECT_EQ(dom0.read("/c/y"), "ENOENT");           // nothing of t1 applied
  EXPECT_EQ(dom0.read("/c/x"), "outside");
}

TEST_F(ServerTest, ConflictOnNodeCreatedConcurrently) {
  uint32_t t1 = g5.tx_start();
  EXPECT_EQ(g5.read("flag", t1), "ENOENT");
  g5.write("flag", "set");
  g5.write("other", "x", t1);
  EXPECT_EQ(g5.tx_end(t1, true), "EAGAIN");
}

TEST_F(ServerTest, DisjointTransactionsBothCommit) {
  dom0.write("/p/a", "0");
  dom0.write("/p/b", "0");
  uint32_t t1 = dom0.tx_start();
  uint32_t t2 = dom0.tx_start();
  EXPECT_EQ(dom0.write("/p/a", "1", t1), "OK");
  EXPECT_EQ(dom0.write("/p/b", "2", t2), "OK");
  EXPECT_EQ(dom0.tx_end(t1, true), "OK");
  EXPECT_EQ(dom0.tx_end(t2, true), "OK");
  EXPECT_EQ(dom0.read("/p/a"), "1");
  EXPECT_EQ(dom0.read("/p/b"), "2");
}

TEST_F(ServerTest, TransactionErrors) {
  EXPECT_TRUE(dom0.req(MsgType::XS_READ, z("/"), 12345).is_error("ENOENT"));
  uint32_t tx = dom0.tx_start();
  EXPECT_TRUE(dom0.req(MsgType::XS_TRANSACTION_START, std::string_view("\0", 1), tx).is_error("EBUSY"));
  EXPECT_TRUE(dom0.req(MsgType::XS_TRANSACTION_END, z("X"), tx).is_error("EINVAL"));
  EXPECT_TRUE(dom0.req(MsgType::XS_TRANSACTION_END, z("T")).is_error("ENOENT"));
  // A guest cannot use another connection's transaction id.
  EXPECT_TRUE(g5.req(MsgType::XS_READ, z("x"), tx).is_error("ENOENT"));
}

TEST_F(ServerTest, WatchFiresOnRegistrationAndForTheSubtreeOnly) {
  EXPECT_EQ(dom0.watch("/w", "tok"), "OK");
  EXPECT_EQ(dom0.take_events(), std::vector<std::string>{"/w|tok"});
  dom0.write("/w", "1");
  dom0.write("/w/child/deep", "2");
  dom0.write("/wx", "3");       // sibling with a common prefix: not in the subtree
  dom0.write("/other", "4");
  EXPECT_EQ(dom0.take_events(),
            (std::vector<std::string>{"/w|tok", "/w/child/deep|tok"}));
  EXPECT_EQ(dom0.watch("/w", "tok"), "EEXIST");
  EXPECT_EQ(dom0.watch("/w", "tok2"), "OK");
  dom0.take_events();
  dom0.write("/w/z", "5");
  EXPECT_EQ(dom0.take_events(), (std::vector<std::string>{"/w/z|tok", "/w/z|tok2"}));
  EXPECT_EQ(dom0.unwatch("/w", "tok"), "OK");
  EXPECT_EQ(dom0.unwatch("/w", "tok"), "ENOENT");
  dom0.write("/w/z", "6");
  EXPECT_EQ(dom0.take_events(), std::vector<std::string>{"/w/z|tok2"});
}

TEST_F(ServerTest, RmFiresForWatchersAboveAndBelow) {
  dom0.write("/rm/a/b", "1");
  dom0.watch("/rm", "up");
  dom0.watch("/rm/a/b", "down");
  dom0.take_events();
  dom0.rm("/rm/a");
  EXPECT_EQ(dom0.take_events(), (std::vector<std::string>{"/rm/a|up", "/rm/a/b|down"}));
}

TEST_F(ServerTest, GuestRelativeWatchReportsRelativePaths) {
  EXPECT_EQ(g5.watch("device", "fe"), "OK");
  EXPECT_EQ(g5.take_events(), std::vector<std::string>{"device|fe"});
  dom0.write("/local/domain/5/device/vif/0/state", "1");
  EXPECT_EQ(g5.take_events(), std::vector<std::string>{"device/vif/0/state|fe"});
}

TEST_F(ServerTest, WatchEventsOnlyReachReaders) {
  // g6 watches Dom0's private node: it registers, but changes it cannot read are not sent.
  dom0.write("/private", "x");
  EXPECT_EQ(g6.watch("/private", "spy"), "OK");
  g6.take_events();
  dom0.write("/private", "y");
  EXPECT_TRUE(g6.take_events().empty());
  dom0.set_perms("/private", {"n0", "r6"});
  dom0.write("/private", "z");
  auto ev = g6.take_events();
  EXPECT_FALSE(ev.empty());
  EXPECT_EQ(ev.back(), "/private|spy");
  // Watching a guest's own home sees nothing of another guest.
  g5.watch("/local/domain", "all");
  g5.take_events();
  g6.write("mine", "1");
  EXPECT_TRUE(g5.take_events().empty());
}

TEST_F(ServerTest, TransactionWatchEventsFireAtCommit) {
  dom0.watch("/txw", "t");
  dom0.take_events();
  uint32_t tx = dom0.tx_start();
  dom0.write("/txw/a", "1", tx);
  EXPECT_TRUE(dom0.take_events().empty());
  dom0.tx_end(tx, true);
  EXPECT_EQ(dom0.take_events(), std::vector<std::string>{"/txw/a|t"});
  tx = dom0.tx_start();
  dom0.write("/txw/b", "1", tx);
  dom0.tx_end(tx, false);
  EXPECT_TRUE(dom0.take_events().empty());
}

TEST_F(ServerTest, DomainCallsAreDom0Only) {
  EXPECT_TRUE(g5.req(MsgType::XS_INTRODUCE, z("7") + z("100") + z("3")).is_error("EACCES"));
  EXPECT_TRUE(g5.req(MsgType::XS_RELEASE, z("6")).is_error("EACCES"));
  EXPECT_TRUE(g5.req(MsgType::XS_IS_DOMAIN_INTRODUCED, z("6")).is_error("EACCES"));
  // No domain connector configured: nothing can map a ring.
  EXPECT_TRUE(dom0.req(MsgType::XS_INTRODUCE, z("7") + z("100") + z("3")).is_error("ENOSYS"));
  EXPECT_TRUE(dom0.req(MsgType::XS_INTRODUCE, z("0") + z("100") + z("3")).is_error("EINVAL"));
  EXPECT_TRUE(dom0.req(MsgType::XS_RELEASE, z("7")).is_error("ENOENT"));
  EXPECT_EQ(Peer::result(dom0.req(MsgType::XS_IS_DOMAIN_INTRODUCED, z("7"))), z("F"));
  EXPECT_EQ(Peer::result(dom0.req(MsgType::XS_IS_DOMAIN_INTRODUCED, z("0"))), z("T"));
  EXPECT_EQ(Peer::result(dom0.req(MsgType::XS_GET_DOMAIN_PATH, z("7"))), z("/local/domain/7"));
}

TEST_F(ServerTest, MalformedMessagesGetErrorReplies) {
  EXPECT_TRUE(dom0.req(MsgType::XS_READ, "/a").is_error("EINVAL"));            // no NUL
  EXPECT_TRUE(dom0.req(MsgType::XS_READ, "").is_error("EINVAL"));
  EXPECT_TRUE(dom0.req(MsgType::XS_READ, z("/a") + z("/b")).is_error("EINVAL"));  // 2 args
  EXPECT_TRUE(dom0.req(MsgType::XS_WATCH, z("/a")).is_error("EINVAL"));
  EXPECT_TRUE(dom0.req(MsgType::XS_WRITE, "/a").is_error("EINVAL"));
  EXPECT_TRUE(dom0.req(MsgType::XS_SET_PERMS, z("/a")).is_error("EINVAL"));
  EXPECT_TRUE(dom0.req(MsgType::XS_RELEASE, z("70000")).is_error("EINVAL"));
  EXPECT_TRUE(dom0.req(MsgType::XS_RELEASE, z("5x")).is_error("EINVAL"));
  EXPECT_TRUE(dom0.req(MsgType::XS_WATCH_EVENT, z("/a") + z("t")).is_error("EINVAL"));
  EXPECT_TRUE(dom0.req(MsgType::XS_ERROR, z("EIO")).is_error("EINVAL"));
  EXPECT_TRUE(dom0.req(static_cast<MsgType>(20), z("x")).is_error("EINVAL"));
  EXPECT_TRUE(dom0.req(static_cast<MsgType>(999), z("x")).is_error("EINVAL"));
  EXPECT_TRUE(dom0.req(MsgType::XS_CONTROL, z("print")).is_error("ENOSYS"));
  EXPECT_TRUE(dom0.req(MsgType::XS_DIRECTORY_PART, z("/") + z("0")).is_error("ENOSYS"));
  EXPECT_EQ(server.stats().invalid_requests, 12u);
  EXPECT_EQ(dom0.write("/after", "still works"), "OK");
}

TEST_F(ServerTest, RepliesEchoRequestIdAndTransaction) {
  uint32_t tx = dom0.tx_start();
  Msg m = dom0.req(MsgType::XS_WRITE, z("/e") + "v", tx);
  EXPECT_EQ(m.type, static_cast<uint32_t>(MsgType::XS_WRITE));
  EXPECT_EQ(m.tx_id, tx);
  EXPECT_EQ(m.payload, std::string("OK\0", 3));
}

TEST_F(ServerTest, ResetWatchesDropsAllWatches) {
  dom0.watch("/rw", "a");
  dom0.take_events();
  EXPECT_EQ(Peer::result(dom0.req(MsgType::XS_RESET_WATCHES, "")), "OK");
  dom0.write("/rw", "1");
  EXPECT_TRUE(dom0.take_events().empty());
}

TEST_F(ServerTest, SpecialWatchPathsAreDom0ByDefault) {
  EXPECT_EQ(dom0.watch("@releaseDomain", "r"), "OK");
  EXPECT_EQ(dom0.take_events(), std::vector<std::string>{"@releaseDomain|r"});
  EXPECT_EQ(dom0.get_perms("@releaseDomain"), z("n0"));
  EXPECT_EQ(g5.set_perms("@releaseDomain", {"r5"}), "EACCES");
}

TEST(MessageReader, ReassemblesSplitMessagesAndRejectsOversize) {
  std::string m = encode_message(MsgType::XS_READ, 7, 0, z("/a/b"));
  MessageReader r;
  for (std::size_t i = 0; i + 1 < m.size(); ++i) {
    std::span<const char> one(m.data() + i, 1);
    ASSERT_EQ(r.feed(one), MessageReader::Status::NeedMore);
  }
  std::span<const char> last(m.data() + m.size() - 1, 1);
  ASSERT_EQ(r.feed(last), MessageReader::Status::Message);
  EXPECT_EQ(r.header().req_id, 7u);
  EXPECT_EQ(std::string(r.payload().data(), r.payload().size()), z("/a/b"));

  xsd_sockmsg big{2, 1, 0, XENSTORE_PAYLOAD_MAX + 1};
  MessageReader r2;
  std::span<const char> in(reinterpret_cast<const char*>(&big), sizeof(big));
  EXPECT_EQ(r2.feed(in), MessageReader::Status::Corrupt);
}

TEST(Perms, ParseAndFormat) {
  EXPECT_EQ(parse_perm("b65535")->domid, 65535);
  EXPECT_EQ(parse_perm("w3")->perm, XsPerm::Write);
  EXPECT_FALSE(parse_perm("r"));
  EXPECT_FALSE(parse_perm("x1"));
  EXPECT_FALSE(parse_perm("r65536"));
  EXPECT_FALSE(parse_perm("r-1"));
  EXPECT_EQ(format_perm({12, XsPerm::Both}), "b12");
}

}  // namespace
}  // namespace pvio::xs::test
