// The daemon's domain connector (INTRODUCE -> the domain's control socket) against domains that
// do not behave: one that accepts the connection and never answers must be refused after a
// bounded wait, so the single-threaded daemon goes on serving everyone else.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "pvio/test/temp_dir.h"
#include "pvio/xenstore/daemon.h"
#include "pvio/xenstore/domain_connector.h"
#include "pvio/xenstore/ring_transport.h"
#include "pvio/xenstore/server.h"

namespace pvio::xs {
namespace {

TEST(ControlDomainConnector, IntroduceOfADomainThatNeverAnswersIsRefused) {
  const std::string dir = test::make_temp_dir("pvio-xs-connector");
  ASSERT_FALSE(dir.empty());
  const std::string stuck = dir + "/domain-6.sock";
  const int l = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  ASSERT_GE(l, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, stuck.c_str(), stuck.size() + 1);
  ASSERT_EQ(::bind(l, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(l, 4), 0);  // connections complete in the kernel; nobody ever answers

  Server server;
  {
    Daemon daemon(server, dir + "/xenstored.sock");
    ControlDomainConnector connector(
        server, daemon, [&](domid_t d) { return dir + "/domain-" + std::to_string(d) + ".sock"; });
    EXPECT_EQ(connector.connect(6, 0xFD001, 1), nullptr);
    EXPECT_EQ(connector.stats().refused, 1u);
    // And again: a stuck domain costs each INTRODUCE a bounded wait, never the daemon.
    EXPECT_EQ(connector.connect(6, 0xFD001, 1), nullptr);
    EXPECT_EQ(connector.stats().refused, 2u);
  }
  ::close(l);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pvio::xs
