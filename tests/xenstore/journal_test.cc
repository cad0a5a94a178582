// pvio-xenstored's persistence: the journal and snapshot files (torn, corrupt and hostile
// contents are recovered up to the last whole valid record, with a log line), and a Server
// "killed" (its memory dropped without a clean shutdown) and restored from them: same tree,
// domains reattached from their ring indices, watches fired once, requests in flight on the
// ring answered.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "harness.h"
#include "pvio/test/temp_dir.h"
#include "pvio/xenstore/journal.h"
#include "pvio/xenstore/ring_transport.h"
#include "pvio/xenstore/server.h"

namespace pvio::xs::test {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void put_file(const std::string& path, std::string_view data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

// Captures what the daemon logs while a test runs.
class LogCapture {
 public:
  LogCapture() {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    old_ = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(old_); }
  std::string text() const { return out_.str(); }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> old_;
};

Node make_node(std::string value, domid_t owner = 0) {
  Node n;
  n.value = std::move(value);
  n.perms = {{owner, XsPerm::None}};
  return n;
}

class JournalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = pvio::test::make_temp_dir("pvio-xs-journal");
    ASSERT_FALSE(dir_.empty());
  }
  void TearDown() override { pvio::test::remove_temp_dir(dir_); }

  std::string journal_file() const { return Journal::journal_path(dir_); }

  // Appends one node record per key, /k0 .. /k<n-1>, each in its own write; returns the
  // journal's size after each append (index 0: the bare header).
  std::vector<uint64_t> write_keys(int n) {
    PersistedState st;
    auto j = Journal::open(dir_, Journal::Sync::None, st);
    EXPECT_TRUE(j);
    std::vector<uint64_t> sizes{j->journal_bytes()};
    for (int i = 0; i < n; ++i) {
      RecordWriter w;
      w.node("/k" + std::to_string(i), make_node("value" + std::to_string(i)));
      EXPECT_TRUE(j->append(w));
      sizes.push_back(j->journal_bytes());
    }
    return sizes;
  }

  std::string dir_;
};

TEST_F(JournalTest, RecordsComeBackInAFreshOpen) {
  write_keys(5);
  PersistedState st;
  auto j = Journal::open(dir_, Journal::Sync::None, st);
  ASSERT_TRUE(j);
  ASSERT_EQ(st.nodes.size(), 5u);
  EXPECT_EQ(st.nodes.at("/k3").value, "value3");
}

// A daemon killed in the middle of a write leaves a torn last record: every cut point in it
// recovers the records before it, says so in the log, and trims the file so that later
// appends follow the last whole record.
TEST_F(JournalTest, TornTailAtEveryByteRecoversTheWholeRecords) {
  const std::vector<uint64_t> sizes = write_keys(4);
  const std::string full = slurp(journal_file());
  ASSERT_EQ(full.size(), sizes.back());
  for (uint64_t cut = sizes[3] + 1; cut < sizes[4]; ++cut) {
    put_file(journal_file(), std::string_view(full).substr(0, cut));
    LogCapture log;
    PersistedState st;
    auto j = Journal::open(dir_, Journal::Sync::None, st);
    ASSERT_TRUE(j) << "cut at " << cut;
    EXPECT_EQ(st.nodes.size(), 3u) << "cut at " << cut;
    EXPECT_EQ(st.nodes.count("/k3"), 0u);
    EXPECT_NE(log.text().find("recovered 3 records"), std::string::npos) << log.text();
    EXPECT_EQ(std::filesystem::file_size(journal_file()), sizes[3]);
    // The journal goes on from the last whole record.
    RecordWriter w;
    w.node("/after", make_node("x"));
    ASSERT_TRUE(j->append(w));
    j.reset();
    PersistedState again;
    ASSERT_TRUE(Journal::open(dir_, Journal::Sync::None, again));
    EXPECT_EQ(again.nodes.size(), 4u);
    EXPECT_EQ(again.nodes.at("/after").value, "x");
  }
}

TEST_F(JournalTest, FlippedByteStopsAtTheLastGoodRecord) {
  const std::vector<uint64_t> sizes = write_keys(6);
  std::string data = slurp(journal_file());
  data[sizes[2] + 12] ^= 0x40;  // inside the third record's body
  put_file(journal_file(), data);
  LogCapture log;
  PersistedState st;
  ASSERT_TRUE(Journal::open(dir_, Journal::Sync::None, st));
  EXPECT_EQ(st.nodes.size(), 2u);
  EXPECT_TRUE(st.nodes.count("/k0") && st.nodes.count("/k1"));
  EXPECT_NE(log.text().find("checksum does not match"), std::string::npos) << log.text();
}

TEST_F(JournalTest, ImpossibleLengthIsATruncationNotAnAllocation) {
  const std::vector<uint64_t> sizes = write_keys(2);
  std::string data = slurp(journal_file());
  const uint32_t huge = 0xfffffff0u;
  std::string tail(8, '\0');
  std::memcpy(tail.data(), &huge, 4);
  put_file(journal_file(), data + tail + std::string(64, 'x'));
  LogCapture log;
  PersistedState st;
  ASSERT_TRUE(Journal::open(dir_, Journal::Sync::None, st));
  EXPECT_EQ(st.nodes.size(), 2u);
  EXPECT_NE(log.text().find("impossible"), std::string::npos) << log.text();
  EXPECT_EQ(std::filesystem::file_size(journal_file()), sizes[2]);
}

// Records that are whole and checksummed but say something impossible are skipped one by
// one; what is valid around them still counts.
TEST_F(JournalTest, ValidChecksumInvalidContentIsRejectedRecordByRecord) {
  RecordWriter w;
  w.node("/good1", make_node("a"));
  w.node("/bad//path", make_node("b"));
  w.node("relative", make_node("c"));
  Node no_perms;
  w.node("/noperms", no_perms);
  Node dup_kids = make_node("d");
  dup_kids.children = {"x", "x"};
  w.node("/dupkids", dup_kids);
  w.node("/huge", make_node(std::string(XENSTORE_PAYLOAD_MAX + 1, 'v')));
  w.domain(0, 1, 1);                        // Dom0 is never introduced
  w.domain(kDomidSelf, 1, 1);               // nor DOMID_SELF
  w.watch(9, {"/local/domain/9", "t", false});  // a domain that was never introduced
  w.node_removed("/");                      // the root cannot go
  w.domain(5, 42, 3);
  w.watch(5, {"/a/../b", "t", false});      // not a canonical path
  w.watch(5, {"@introduceDomain", "intro", false});
  w.transaction_start(5, 0);                // 0 is "no transaction"
  w.transaction_start(5, 17);
  w.transaction_end(5, 9, static_cast<XsError>(200));  // no such error
  w.node("/good2", make_node("e"));
  const LoadReport rep = [&] {
    PersistedState st;
    return apply_records(w.bytes(), st);
  }();
  PersistedState st;
  apply_records(w.bytes(), st);
  EXPECT_FALSE(rep.truncated);
  EXPECT_EQ(rep.rejected, 12u);
  EXPECT_EQ(rep.records, 5u);
  EXPECT_EQ(st.nodes.size(), 2u);
  ASSERT_EQ(st.domains.size(), 1u);
  EXPECT_EQ(st.domains.at(5).gfn, 42u);
  ASSERT_EQ(st.domains.at(5).watches.size(), 1u);
  EXPECT_EQ(st.domains.at(5).watches[0].path, "@introduceDomain");
  EXPECT_EQ(st.domains.at(5).transactions, std::set<uint32_t>{17});
  EXPECT_EQ(st.last_txid, 17u);
}

// Hostile or random tails after good records never crash the reader and never cost the
// good records.
TEST_F(JournalTest, RandomTailsKeepTheGoodPrefix) {
  RecordWriter good;
  good.node("/a", make_node("1"));
  good.node("/b", make_node("2"));
  std::mt19937 rng(1234);
  for (int i = 0; i < 500; ++i) {
    std::string data = good.bytes();
    const std::size_t n = rng() % 200;
    for (std::size_t k = 0; k < n; ++k) data.push_back(static_cast<char>(rng()));
    // Sometimes a plausible header in front of the noise.
    if (i % 3 == 0 && n >= 8) {
      const uint32_t len = static_cast<uint32_t>(n - 8);
      std::memcpy(data.data() + good.bytes().size(), &len, 4);
    }
    PersistedState st;
    const LoadReport rep = apply_records(data, st);
    EXPECT_GE(rep.good_bytes, good.bytes().size());
    EXPECT_EQ(st.nodes.at("/a").value, "1");
    EXPECT_EQ(st.nodes.at("/b").value, "2");
  }
}

TEST_F(JournalTest, SnapshotThenJournalAndAStaleJournalIsIgnored) {
  PersistedState st;
  auto j = Journal::open(dir_, Journal::Sync::None, st);
  ASSERT_TRUE(j);
  PersistedState snap;
  snap.nodes.emplace("/", make_node(""));
  snap.nodes.emplace("/s", make_node("snap"));
  snap.nodes.at("/").children = {"s"};
  PersistedDomain d3;
  d3.gfn = 7;
  d3.port = 2;
  d3.watches = {{"/local/domain/3/x", "tok", false}};
  d3.transactions = {5};
  d3.ended = {{4, XsError::Again}};
  d3.output = PendingOutput{300, "rest"};
  snap.domains[3] = d3;
  // The journal before the snapshot: kept aside to put back as a stale file.
  RecordWriter before;
  before.node("/old", make_node("old"));
  ASSERT_TRUE(j->append(before));
  const std::string stale = slurp(journal_file());
  ASSERT_TRUE(j->snapshot(snap));
  RecordWriter after;
  after.node("/j", make_node("journal"));
  ASSERT_TRUE(j->append(after));
  j.reset();

  PersistedState back;
  ASSERT_TRUE(Journal::open(dir_, Journal::Sync::None, back));
  EXPECT_EQ(back.nodes.at("/s").value, "snap");
  EXPECT_EQ(back.nodes.at("/j").value, "journal");
  EXPECT_EQ(back.nodes.count("/old"), 0u);
  ASSERT_EQ(back.domains.count(3), 1u);
  EXPECT_EQ(back.domains.at(3).watches[0].token, "tok");
  EXPECT_EQ(back.domains.at(3).transactions, std::set<uint32_t>{5});
  EXPECT_EQ(back.domains.at(3).ended, (std::map<uint32_t, XsError>{{4, XsError::Again}}));
  ASSERT_TRUE(back.domains.at(3).output.has_value());
  EXPECT_EQ(back.domains.at(3).output->rsp_index, 300u);
  EXPECT_EQ(back.domains.at(3).output->bytes, "rest");

  // A crash between the snapshot's rename and the new journal leaves the old journal: its
  // generation is older than the snapshot's, so its records (already in it) are not replayed.
  put_file(journal_file(), stale);
  PersistedState again;
  ASSERT_TRUE(Journal::open(dir_, Journal::Sync::None, again));
  EXPECT_EQ(again.nodes.count("/old"), 0u);
  EXPECT_EQ(again.nodes.at("/s").value, "snap");
}

TEST_F(JournalTest, OneDaemonPerStateDirectory) {
  PersistedState a, b;
  auto first = Journal::open(dir_, Journal::Sync::None, a);
  ASSERT_TRUE(first);
  errno = 0;
  EXPECT_FALSE(Journal::open(dir_, Journal::Sync::None, b));
  EXPECT_EQ(errno, EWOULDBLOCK);
  first.reset();
  EXPECT_TRUE(Journal::open(dir_, Journal::Sync::None, b));
}

// Nodes read back are not trusted to form a tree: children that do not exist leave their
// parent's list, nodes no parent lists are dropped with their subtrees, the order of the
// remaining children is kept.
TEST(StoreLoad, InconsistentTreeIsRepairedNotTrusted) {
  std::map<std::string, Node, std::less<>> nodes;
  nodes["/"] = make_node("");
  nodes["/"].children = {"b", "ghost", "a"};
  nodes["/a"] = make_node("A", 5);
  nodes["/b"] = make_node("B");
  nodes["/orphan"] = make_node("O");
  nodes["/orphan/kid"] = make_node("K");
  Store s;
  EXPECT_EQ(s.load(std::move(nodes), {}), 3u);  // "ghost", /orphan, /orphan/kid
  EXPECT_EQ(s.nodes().at("/").children, (std::vector<std::string>{"b", "a"}));
  EXPECT_EQ(s.node_count(), 3u);
  EXPECT_EQ(s.nodes_owned_by(5), 1u);
}

// ---- a Server killed and restored, with a guest ring in this process ----

// The guest's side of an in-memory ring page: writes requests into req[], reads rsp[].
struct Ring {
  xenstore_domain_interface page{};
  int notified = 0;

  void put(std::string_view bytes) {
    for (char c : bytes) {
      ASSERT_LT(page.req_prod - page.req_cons, XENSTORE_RING_SIZE);
      page.req[MASK_XENSTORE_IDX(page.req_prod)] = c;
      ++page.req_prod;
    }
  }
  void request(MsgType t, uint32_t req_id, std::string_view payload, uint32_t tx = 0) {
    put(encode_message(t, req_id, tx, payload));
  }
  // Every whole message in rsp[] (consumed).
  std::vector<Msg> take() {
    std::vector<Msg> out;
    while (page.rsp_cons != page.rsp_prod) {
      char c = page.rsp[MASK_XENSTORE_IDX(page.rsp_cons)];
      ++page.rsp_cons;
      std::span<const char> in(&c, 1);
      if (reader.feed(in) == MessageReader::Status::Message) {
        out.push_back({reader.header().type, reader.header().req_id, reader.header().tx_id,
                       std::string(reader.payload().data(), reader.payload().size())});
        reader.reset();
      }
    }
    return out;
  }
  MessageReader reader;
};

class RingConnector final : public DomainConnector {
 public:
  explicit RingConnector(Ring& r) : ring_(r) {}
  std::unique_ptr<RingTransport> connect(domid_t domid, uint64_t gfn, evtchn_port_t port) override {
    if (domid != 7 || gfn != 100 || port != 3) return nullptr;
    return std::make_unique<RingTransport>(&ring_.page, [this] { ++ring_.notified; });
  }

 private:
  Ring& ring_;
};

class RestartTest : public JournalTest {
 protected:
  void SetUp() override {
    JournalTest::SetUp();
    start();
  }
  void start() {
    PersistedState st;
    journal_ = Journal::open(dir_, Journal::Sync::None, st);
    ASSERT_TRUE(journal_);
    server_ = std::make_unique<Server>();
    if (reachable_) server_->set_domain_connector(&connector_);
    server_->set_journal(journal_.get());
    restored_ = server_->restore(std::move(st));
    dom0_ = std::make_unique<Peer>(*server_, 0);
  }
  // kill -9: nothing is written at the end, the memory is simply gone.
  void crash_and_restart() {
    server_->set_journal(nullptr);
    dom0_.reset();
    server_.reset();
    journal_.reset();
    start();
  }
  void kick() {
    RingTransport* t = server_->domain_transport(7);
    ASSERT_NE(t, nullptr);
    t->on_kick();
  }
  void introduce() {
    ASSERT_EQ(dom0_->result(dom0_->req(MsgType::XS_INTRODUCE, z("7") + z("100") + z("3"))), "OK");
    ASSERT_EQ(dom0_->write("/local/domain/7", ""), "OK");
    ASSERT_EQ(dom0_->result(dom0_->req(MsgType::XS_SET_PERMS, z("/local/domain/7") + z("n7"))), "OK");
  }

  Ring ring_;
  RingConnector connector_{ring_};
  std::unique_ptr<Journal> journal_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<Peer> dom0_;
  std::size_t restored_ = 0;
  bool reachable_ = true;  // whether the domain can be reached on restart
};

TEST_F(RestartTest, TreePermsAndChildOrderSurviveAKill) {
  ASSERT_EQ(dom0_->write("/tool/z", "1"), "OK");
  ASSERT_EQ(dom0_->write("/tool/a", "2"), "OK");
  ASSERT_EQ(dom0_->write("/tool/m/deep", "3"), "OK");
  ASSERT_EQ(dom0_->result(dom0_->req(MsgType::XS_SET_PERMS, z("/tool/a") + z("r5") + z("w6"))), "OK");
  ASSERT_EQ(dom0_->result(dom0_->req(MsgType::XS_RM, z("/tool/m/deep"))), "OK");
  ASSERT_EQ(dom0_->result(dom0_->req(MsgType::XS_SET_PERMS, z("@releaseDomain") + z("r0") + z("r3"))), "OK");
  // A committed transaction is journaled as its resulting nodes.
  const std::string tx = dom0_->result(dom0_->req(MsgType::XS_TRANSACTION_START, z("")));
  const uint32_t txid = static_cast<uint32_t>(std::stoul(tx));
  ASSERT_EQ(dom0_->write("/tool/t", "in-tx", txid), "OK");
  ASSERT_EQ(dom0_->result(dom0_->req(MsgType::XS_TRANSACTION_END, z("T"), txid)), "OK");
  const auto before = server_->store().nodes();

  crash_and_restart();
  const auto& after = server_->store().nodes();
  ASSERT_EQ(after.size(), before.size());
  for (const auto& [path, n] : before) {
    ASSERT_EQ(after.count(path), 1u) << path;
    EXPECT_EQ(after.at(path).value, n.value) << path;
    EXPECT_EQ(after.at(path).perms, n.perms) << path;
    EXPECT_EQ(after.at(path).children, n.children) << path;
  }
  EXPECT_EQ(dom0_->read("/tool/t"), "in-tx");
  EXPECT_EQ(dom0_->read("/tool/m/deep"), "ENOENT");
  EXPECT_EQ(*server_->store().special_perms("@releaseDomain"),
            (std::vector<NodePerm>{{0, XsPerm::Read}, {3, XsPerm::Read}}));
}

// The guest's ring survives: the domain is reattached, its watches fire once each with
// their own paths, its open transaction ends in EAGAIN, and it goes on working.
TEST_F(RestartTest, GuestWatchesFireOnceAndLostTransactionsSayEagain) {
  introduce();
  kick();
  ring_.take();
  ring_.request(MsgType::XS_WATCH, 1, z("data") + z("rel"));
  ring_.request(MsgType::XS_WATCH, 2, z("/local/domain/7/abs") + z("abs"));
  ring_.request(MsgType::XS_TRANSACTION_START, 3, z(""));
  kick();
  std::vector<Msg> got = ring_.take();
  uint32_t txid = 0;
  for (const Msg& m : got)
    if (m.req_id == 3) txid = static_cast<uint32_t>(std::stoul(m.payload));
  ASSERT_NE(txid, 0u);

  crash_and_restart();
  EXPECT_EQ(restored_, 1u);
  std::vector<Msg> events = ring_.take();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].type, static_cast<uint32_t>(MsgType::XS_WATCH_EVENT));
  EXPECT_EQ(events[0].payload, z("data") + z("rel"));  // relative, as registered
  EXPECT_EQ(events[1].payload, z("/local/domain/7/abs") + z("abs"));

  ring_.request(MsgType::XS_WRITE, 4, z("data/x") + "v", txid);
  ring_.request(MsgType::XS_TRANSACTION_END, 5, z("T"), txid);
  ring_.request(MsgType::XS_WRITE, 6, z("data/x") + "v");
  kick();
  got = ring_.take();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_TRUE(got[0].is_error("EAGAIN"));
  EXPECT_TRUE(got[1].is_error("EAGAIN"));
  // The watch still works (its event goes out as the write is applied, before the OK).
  EXPECT_EQ(got[2].type, static_cast<uint32_t>(MsgType::XS_WATCH_EVENT));
  EXPECT_EQ(got[2].payload, z("data/x") + z("rel"));
  EXPECT_EQ(got[3].req_id, 6u);
  EXPECT_EQ(got[3].payload, std::string("OK\0", 3));
}

// A request handled (and journaled) whose reply never reached the ring (rsp[] full) was not
// consumed: after the restart it is read again and answered.
TEST_F(RestartTest, RequestWhoseReplyWasNotOnTheRingIsAnsweredAfterRestart) {
  introduce();
  kick();
  ring_.take();
  ring_.page.rsp_prod += XENSTORE_RING_SIZE;  // the guest has not read 1 KiB of output
  // The transport trusts only its own rsp_prod: reattach so it picks up the full ring.
  crash_and_restart();
  const XENSTORE_RING_IDX cons_before = ring_.page.req_cons;
  ring_.request(MsgType::XS_WRITE, 9, z("pending") + "yes");
  kick();
  EXPECT_EQ(ring_.page.req_cons, cons_before);  // handled, but its reply is not out yet
  EXPECT_EQ(dom0_->read("/local/domain/7/pending"), "yes");

  crash_and_restart();
  ring_.page.rsp_cons = ring_.page.rsp_prod;  // the guest catches up with its output
  kick();
  std::vector<Msg> got = ring_.take();
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back().req_id, 9u);
  EXPECT_EQ(got.back().payload, std::string("OK\0", 3));
  EXPECT_EQ(ring_.page.req_cons, ring_.page.req_prod);
}

// Half a request taken off the ring (the guest may need the room for the rest) is journaled;
// the restarted daemon finishes it with the bytes the guest writes afterwards.
TEST_F(RestartTest, HalfReadRequestIsFinishedByTheRestartedDaemon) {
  introduce();
  kick();
  ring_.take();
  const std::string msg = encode_message(MsgType::XS_WRITE, 11, 0, z("split") + std::string(300, 's'));
  ring_.put(std::string_view(msg).substr(0, 100));
  kick();
  EXPECT_EQ(ring_.page.req_cons, ring_.page.req_prod);  // taken off the ring
  EXPECT_TRUE(server_->domain_transport(7)->partial().has_value());

  crash_and_restart();
  ring_.put(std::string_view(msg).substr(100));
  kick();
  std::vector<Msg> got = ring_.take();
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back().req_id, 11u);
  EXPECT_EQ(got.back().payload, std::string("OK\0", 3));
  EXPECT_EQ(dom0_->read("/local/domain/7/split"), std::string(300, 's'));
  EXPECT_FALSE(server_->domain_transport(7)->partial().has_value());

  // Finished: a further restart has no partial request to resume.
  crash_and_restart();
  EXPECT_FALSE(server_->domain_transport(7)->partial().has_value());
  ring_.request(MsgType::XS_READ, 12, z("split"));
  kick();
  got = ring_.take();
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back().payload, std::string(300, 's'));
}

// The guest reads 1 KiB of output first: a 1000-byte value fills rsp[] but for 8 bytes.
// Then only the first 8 bytes of the next reply fit; the daemon dies. The restarted one
// completes that message from the journal (the guest never sees half a header followed by
// something else), and the request is not handled twice.
TEST_F(RestartTest, ReplyWrittenInPartIsCompletedByTheRestartedDaemon) {
  introduce();
  ASSERT_EQ(dom0_->write("/local/domain/7/big", std::string(1000, 'b')), "OK");
  kick();
  ring_.take();
  ring_.request(MsgType::XS_READ, 20, z("big"));
  ring_.request(MsgType::XS_WRITE, 21, z("after") + "1");
  kick();
  // READ's reply (1016 bytes) is on the ring; 8 bytes of WRITE's "OK" reply followed it.
  ASSERT_EQ(ring_.page.rsp_prod - ring_.page.rsp_cons, XENSTORE_RING_SIZE);
  ASSERT_TRUE(server_->domain_transport(7)->pending_output_state().has_value());
  EXPECT_EQ(ring_.page.req_cons, ring_.page.req_prod);  // both requests count as answered

  crash_and_restart();
  std::vector<Msg> got = ring_.take();  // the guest catches up only now
  kick();
  for (const Msg& m : ring_.take()) got.push_back(m);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].req_id, 20u);
  EXPECT_EQ(got[0].payload, std::string(1000, 'b'));
  EXPECT_EQ(got[1].req_id, 21u);
  EXPECT_EQ(got[1].payload, std::string("OK\0", 3));
  EXPECT_FALSE(server_->domain_transport(7)->pending_output_state().has_value());
  crash_and_restart();  // complete now: nothing left to resume
  EXPECT_FALSE(server_->domain_transport(7)->pending_output_state().has_value());
}

// TRANSACTION_END and WATCH handled just before the daemon died, with their replies not on the
// ring, are read again after the restart and get the answers they got the first time (not
// ENOENT for a transaction that did commit, not EEXIST for the guest's own watch).
TEST_F(RestartTest, RepeatedTransactionEndAndWatchGetTheirFirstAnswers) {
  introduce();
  // A READ whose reply (16 + 1008 bytes) fills rsp[] exactly: what follows it waits.
  ASSERT_EQ(dom0_->write("/local/domain/7/fill", std::string(1008, 'f')), "OK");
  kick();
  ring_.take();
  ring_.request(MsgType::XS_TRANSACTION_START, 30, z(""));
  kick();
  std::vector<Msg> got = ring_.take();
  ASSERT_EQ(got.size(), 1u);
  const uint32_t txid = static_cast<uint32_t>(std::stoul(got[0].payload));
  ring_.request(MsgType::XS_WRITE, 31, z("txkey") + "committed", txid);
  kick();
  ring_.take();
  ring_.request(MsgType::XS_READ, 32, z("fill"));
  const XENSTORE_RING_IDX after_read = ring_.page.req_prod;
  ring_.request(MsgType::XS_TRANSACTION_END, 33, z("T"), txid);
  ring_.request(MsgType::XS_WATCH, 34, z("txkey") + z("tok"));
  kick();
  EXPECT_EQ(ring_.page.req_cons, after_read);  // END and WATCH handled, replies not out
  EXPECT_EQ(dom0_->read("/local/domain/7/txkey"), "committed");

  crash_and_restart();
  got = ring_.take();  // the guest reads READ's reply only now
  kick();
  for (const Msg& m : ring_.take()) got.push_back(m);
  std::vector<Msg> replies;
  for (const Msg& m : got)
    if (m.type != static_cast<uint32_t>(MsgType::XS_WATCH_EVENT)) replies.push_back(m);
  ASSERT_EQ(replies.size(), 3u);
  EXPECT_EQ(replies[0].req_id, 32u);
  EXPECT_EQ(replies[1].req_id, 33u);
  EXPECT_EQ(replies[1].payload, std::string("OK\0", 3));  // it did commit
  EXPECT_EQ(replies[2].req_id, 34u);
  EXPECT_EQ(replies[2].payload, std::string("OK\0", 3));
  EXPECT_EQ(ring_.page.req_cons, ring_.page.req_prod);
}

TEST_F(RestartTest, ReleasedDomainStaysReleasedAndAnUnreachableOneIsForgotten) {
  introduce();
  ASSERT_EQ(dom0_->result(dom0_->req(MsgType::XS_RELEASE, z("7"))), "OK");
  crash_and_restart();
  EXPECT_EQ(restored_, 0u);
  EXPECT_EQ(server_->domain_transport(7), nullptr);

  introduce();
  // The domain is gone when the daemon comes back (nothing can reach it).
  reachable_ = false;
  crash_and_restart();
  EXPECT_EQ(restored_, 0u);
  EXPECT_FALSE(server_->domain_introduced(7));
}

}  // namespace
}  // namespace pvio::xs::test
