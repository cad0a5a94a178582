// The domain control protocol end to end: a user-mode domain in a child process, Dom0
// clients in the test process.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "pvio/control/client.h"
#include "pvio/domain/domain.h"
#include "pvio/event_channel/notifier.h"
#include "pvio/test/temp_dir.h"
#include "pvio/xen/grant_table.h"

namespace {

using namespace pvio;
using control::ControlClient;

constexpr domid_t kDomid = 5;
constexpr int kWatchdogMs = 60'000;  // fail instead of hang; never a timing assertion

bool readable(int fd, int timeout_ms = kWatchdogMs) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

struct Ready {
  evtchn_port_t echo_port;
  std::uint64_t echo_gfn;
};

domain::Domain* g_child_domain = nullptr;
void child_stop(int) { if (g_child_domain) g_child_domain->stop(); }

// Domain 5 in a child process. Its frontend offers an "echo" port to Dom0: on each event it
// reads the counter at offset 0 of the echo page, writes counter + 1 at offset 8, and sends.
class ControlProtocol : public ::testing::Test {
 protected:
  std::string dir, sock;
  pid_t child = -1;
  Ready ready{};

  void SetUp() override {
    dir = test::make_temp_dir("pvio-control");
    ASSERT_FALSE(dir.empty());
    sock = dir + "/domain-5.sock";
    int pipefd[2];
    ASSERT_EQ(::pipe(pipefd), 0);
    child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(pipefd[0]);
      ::alarm(kWatchdogMs / 1000 * 3);
      ::_exit(run_domain(pipefd[1]));
    }
    ::close(pipefd[1]);
    ASSERT_TRUE(readable(pipefd[0]));
    ASSERT_EQ(::read(pipefd[0], &ready, sizeof(ready)), static_cast<ssize_t>(sizeof(ready)));
    ::close(pipefd[0]);
  }

  int run_domain(int ready_fd) {
    domain::DomainConfig cfg;
    cfg.domid = kDomid;
    cfg.memory_bytes = 4u << 20;
    cfg.socket_path = sock;
    std::unique_ptr<domain::Domain> d;
    if (domain::Domain::create(cfg, &d) != 0) return 10;
    g_child_domain = d.get();
    std::signal(SIGTERM, child_stop);
    Ready r{};
    if (d->alloc_pages(1, &r.echo_gfn) != 0) return 11;
    std::uint8_t* page = d->page(r.echo_gfn);
    std::strcpy(reinterpret_cast<char*>(page) + 16, "hello from domain 5");
    domain::Domain* dp = d.get();
    auto e = d->alloc_unbound(0, [dp, page](evtchn_port_t port) {
      std::uint64_t v;
      std::memcpy(&v, page, 8);
      v += 1;
      std::memcpy(page + 8, &v, 8);
      dp->send(port);
    });
    if (e.rc != 0) return 12;
    r.echo_port = e.port;
    if (::write(ready_fd, &r, sizeof(r)) != static_cast<ssize_t>(sizeof(r))) return 13;
    return d->run() == 0 ? 0 : 14;
  }

  void TearDown() override {
    if (child > 0) {
      ::kill(child, SIGTERM);
      int status = 0;
      ASSERT_EQ(::waitpid(child, &status, 0), child);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "domain status " << status;
    }
    ::rmdir(dir.c_str());  // the domain removed its socket on exit
  }

  std::unique_ptr<ControlClient> attach() {
    std::unique_ptr<ControlClient> c;
    EXPECT_EQ(ControlClient::attach(sock, kDomid, &c), 0);
    return c;
  }

  // One round trip on the echo port; returns what the domain wrote back.
  std::uint64_t echo(ControlClient& c, evtchn_port_t local, std::uint64_t v) {
    std::uint8_t* page = c.memory().frame(ready.echo_gfn);
    std::memcpy(page, &v, 8);
    EXPECT_EQ(c.notify(local), 0);
    EXPECT_TRUE(readable(c.kick_fd(local))) << "no kick from the domain";
    evtchn::eventfd_wait(c.kick_fd(local));
    std::uint64_t out;
    std::memcpy(&out, page + 8, 8);
    return out;
  }

  evtchn_port_t bind_echo(ControlClient& c) {
    evtchn_port_t local = 0;
    EXPECT_EQ(c.bind_interdomain(ready.echo_port, &local), 0);
    // The bind itself raises the new port once (Xen's conservative notification).
    EXPECT_TRUE(readable(c.kick_fd(local)));
    EXPECT_EQ(evtchn::eventfd_wait(c.kick_fd(local)), 1u);
    return local;
  }

  // A raw connection for hand-made messages.
  int raw_connect() {
    int s = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, sock.c_str());
    EXPECT_EQ(::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    return s;
  }
};

TEST_F(ControlProtocol, AttachHandsOutTheDomainLayout) {
  auto c = attach();
  ASSERT_TRUE(c);
  EXPECT_EQ(c->domid(), kDomid);
  ASSERT_EQ(c->memory().region_count(), 1u);
  EXPECT_EQ(c->memory().region(0).gpa, 0u);
  EXPECT_EQ(c->memory().region(0).size, 4u << 20);
  EXPECT_EQ(c->shared_info_gfn(), domain::kSharedInfoGfn);
  EXPECT_EQ(reinterpret_cast<std::uint8_t*>(c->shared_info()), c->memory().frame(0));
  EXPECT_EQ(c->xenstore_gfn(), domain::kXenstoreGfn);
  EXPECT_EQ(c->xenstore_port(), 1u);  // first port after the reserved port 0
  EXPECT_EQ(std::vector<std::uint64_t>(c->grant_frame_gfns().begin(), c->grant_frame_gfns().end()),
            (std::vector<std::uint64_t>{2, 3, 4, 5}));
  EXPECT_GE(c->upcall_fd(), 0);
  EXPECT_EQ(ready.echo_gfn, 6u);  // first free page after the grant frames
  // The xenstore page is granted to Dom0 in the reserved xenstore ref, as the toolstack does.
  const auto* entries = reinterpret_cast<const gnttab::grant_entry_v1*>(
      c->memory().frame(c->grant_frame_gfns()[0]));
  const gnttab::grant_entry_v1 xs = entries[gnttab::GNTTAB_RESERVED_XENSTORE];
  EXPECT_EQ(xs.flags, gnttab::GTF_permit_access);
  EXPECT_EQ(xs.domid, 0);
  EXPECT_EQ(xs.frame, c->xenstore_gfn());
}

TEST_F(ControlProtocol, MemoryAndEventsBothWays) {
  auto c = attach();
  ASSERT_TRUE(c);
  const char* hello = reinterpret_cast<const char*>(c->memory().frame(ready.echo_gfn)) + 16;
  EXPECT_STREQ(hello, "hello from domain 5");
  const evtchn_port_t local = bind_echo(*c);
  EXPECT_EQ(c->remote_port(local), ready.echo_port);
  for (std::uint64_t v : {41ull, 1000ull, 7ull}) EXPECT_EQ(echo(*c, local, v), v + 1);
  EXPECT_EQ(c->detach(), 0);
}

TEST_F(ControlProtocol, BindErrorsAreXenErrnoValues) {
  auto c = attach();
  ASSERT_TRUE(c);
  evtchn_port_t local = 0;
  EXPECT_EQ(c->bind_interdomain(0, &local), -EINVAL);     // reserved
  EXPECT_EQ(c->bind_interdomain(300, &local), -EINVAL);   // free
  EXPECT_EQ(c->bind_interdomain(9999, &local), -EINVAL);  // out of range
  EXPECT_EQ(c->bind_interdomain(c->xenstore_port(), &local), 0);
  evtchn_port_t again = 0;
  EXPECT_EQ(c->bind_interdomain(c->xenstore_port(), &again), -EINVAL);  // already bound
  EXPECT_EQ(c->unbind(local + 100), -EINVAL);
  EXPECT_EQ(c->unbind(local), 0);
  EXPECT_EQ(c->bind_interdomain(c->xenstore_port(), &again), 0);  // unbound again: rebinds
  EXPECT_EQ(c->notify(again + 1), -EINVAL);  // not ours
}

TEST_F(ControlProtocol, WrongDomidIsRefused) {
  std::unique_ptr<ControlClient> c;
  EXPECT_EQ(ControlClient::attach(sock, kDomid + 1, &c), -ESRCH);
  EXPECT_FALSE(c);
  EXPECT_EQ(ControlClient::attach(dir + "/nothing.sock", kDomid, &c), -ENOENT);
}

TEST_F(ControlProtocol, DetachOrDisconnectReturnsPortsToUnbound) {
  auto a = attach();
  ASSERT_TRUE(a);
  bind_echo(*a);
  evtchn_port_t local = 0;
  auto b = attach();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->bind_interdomain(ready.echo_port, &local), -EINVAL);  // a holds it
  EXPECT_EQ(a->detach(), 0);
  a.reset();
  local = bind_echo(*b);
  EXPECT_EQ(echo(*b, local, 1), 2u);
  b.reset();  // no DETACH: the connection just closes
  auto c = attach();
  ASSERT_TRUE(c);
  local = bind_echo(*c);
  EXPECT_EQ(echo(*c, local, 5), 6u);
}

struct Malformed {
  const char* name;
  std::vector<std::uint8_t> bytes;
  int nr_fds;
  int status;
};

std::vector<std::uint8_t> raw(const void* p, std::size_t n) {
  const auto* b = static_cast<const std::uint8_t*>(p);
  return {b, b + n};
}

TEST_F(ControlProtocol, MalformedMessagesDropOnlyThatClient) {
  auto good = attach();
  ASSERT_TRUE(good);
  const evtchn_port_t local = bind_echo(*good);

  control::AttachRequest a{};
  a.hdr = control::make_header(control::MsgType::AttachRequest, sizeof(a), 42);
  a.domid = kDomid;
  std::vector<Malformed> cases;
  cases.push_back({"short", raw(&a, 8), 0, -EMSGSIZE});
  std::vector<std::uint8_t> big(600, 0);
  auto big_hdr = a;
  big_hdr.hdr.size = 600;
  std::memcpy(big.data(), &big_hdr, sizeof(big_hdr));
  cases.push_back({"oversized", big, 0, -EMSGSIZE});
  auto m = a;
  m.hdr.magic = 0x12345678;
  cases.push_back({"bad magic", raw(&m, sizeof(m)), 0, -EPROTO});
  m = a;
  m.hdr.version = 9;
  cases.push_back({"bad version", raw(&m, sizeof(m)), 0, -EPROTONOSUPPORT});
  m = a;
  m.hdr.size = 20;
  cases.push_back({"size field mismatch", raw(&m, sizeof(m)), 0, -EMSGSIZE});
  m = a;
  m.hdr.type = 77;
  cases.push_back({"unknown type", raw(&m, sizeof(m)), 0, -EOPNOTSUPP});
  cases.push_back({"fd on a request", raw(&a, sizeof(a)), 1, -EBADF});
  cases.push_back({"surplus fds", raw(&a, sizeof(a)), 5, -EBADF});
  m = a;
  m.reserved[0] = 1;
  cases.push_back({"reserved field", raw(&m, sizeof(m)), 0, -EINVAL});
  control::DetachReply reply{};
  reply.hdr = control::make_header(control::MsgType::DetachReply, sizeof(reply), 42);
  cases.push_back({"reply sent as request", raw(&reply, sizeof(reply)), 0, -EOPNOTSUPP});

  for (const Malformed& mc : cases) {
    SCOPED_TRACE(mc.name);
    const int s = raw_connect();
    std::vector<int> fds;
    for (int i = 0; i < mc.nr_fds; ++i) fds.push_back(evtchn::eventfd_create(false));
    ASSERT_EQ(control::send_message(s, mc.bytes.data(), mc.bytes.size(), fds), 0);
    for (int fd : fds) ::close(fd);
    ASSERT_TRUE(readable(s));
    control::Received r = control::recv_message(s);
    const control::Parsed p = control::parse_received(r);
    ASSERT_EQ(p.error, control::ParseError::None);
    const auto* e = std::get_if<control::ErrorReply>(&p.msg);
    ASSERT_NE(e, nullptr);
    EXPECT_EQ(e->status, mc.status);
    ASSERT_TRUE(readable(s));
    EXPECT_EQ(control::recv_message(s).rc, 0) << "the server must close this connection";
    ::close(s);
    // The well-behaved client is untouched.
    EXPECT_EQ(echo(*good, local, 100), 101u);
  }
  // A zero-length datagram (read as end of stream) and a silent close drop quietly too.
  const int s = raw_connect();
  ASSERT_EQ(::send(s, "", 0, 0), 0);
  ASSERT_TRUE(readable(s));
  EXPECT_EQ(control::recv_message(s).rc, 0);
  ::close(s);
  EXPECT_EQ(echo(*good, local, 200), 201u);
  auto another = attach();
  EXPECT_TRUE(another);
}

TEST_F(ControlProtocol, RequestsBeforeAttachAreRefused) {
  const int s = raw_connect();
  control::BindInterdomainRequest b{};
  b.hdr = control::make_header(control::MsgType::BindInterdomainRequest, sizeof(b), 3);
  b.remote_port = ready.echo_port;
  ASSERT_EQ(control::send_message(s, b), 0);
  control::Received r = control::recv_message(s);
  const control::Parsed p = control::parse_received(r);
  ASSERT_EQ(p.error, control::ParseError::None);
  const auto* rep = std::get_if<control::BindInterdomainReply>(&p.msg);
  ASSERT_NE(rep, nullptr);
  EXPECT_EQ(rep->status, -ENOTCONN);
  EXPECT_EQ(p.request_id, 3u);
  ::close(s);
}

// Issue 13: a domain that accepts the control connection and never answers (stuck, or hostile)
// must not block the Dom0 service that attaches to it, pvio-xenstored's INTRODUCE above all.
TEST(ControlClientTimeout, AttachToADomainThatNeverAnswersTimesOut) {
  const std::string dir = test::make_temp_dir("pvio-control-stuck");
  ASSERT_FALSE(dir.empty());
  const std::string path = dir + "/domain-6.sock";
  const int l = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  ASSERT_GE(l, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::bind(l, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(l, 4), 0);  // the kernel completes the connection; nobody ever reads
  std::unique_ptr<control::ControlClient> c;
  EXPECT_EQ(control::ControlClient::attach(path, 6, &c, 100), -ETIMEDOUT);
  EXPECT_EQ(c, nullptr);
  ::close(l);
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());
}

}  // namespace
