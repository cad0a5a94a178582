// The XenBus state machine: names, parsing, legal transitions, and the state helpers over the
// guest ring client (served in-process: the guest's notify runs the server's ring pass).
#include <gtest/gtest.h>

#include <cstring>

#include "harness.h"
#include "pvio/xenstore/guest_client.h"
#include "pvio/xenstore/ring_transport.h"
#include "pvio/xenstore/xenbus.h"

namespace pvio::xs::test {
namespace {

using S = XenbusState;

TEST(XenbusState, NamesAndParsing) {
  EXPECT_STREQ(xenbus_state_name(S::InitWait), "InitWait");
  EXPECT_STREQ(xenbus_state_name(S::Reconfigured), "Reconfigured");
  S s = S::Unknown;
  EXPECT_TRUE(xenbus_parse_state("4", 1, &s));
  EXPECT_EQ(s, S::Connected);
  EXPECT_TRUE(xenbus_parse_state("6\0", 2, &s));
  EXPECT_EQ(s, S::Closed);
  EXPECT_FALSE(xenbus_parse_state("9", 1, &s));
  EXPECT_FALSE(xenbus_parse_state("41", 2, &s));
  EXPECT_FALSE(xenbus_parse_state("", 0, &s));
  EXPECT_FALSE(xenbus_parse_state("x", 1, &s));
}

TEST(XenbusState, HandshakeTransitions) {
  // The blkif/netif handshake paths are legal ...
  EXPECT_TRUE(xenbus_transition_allowed(S::Unknown, S::Initialising));
  EXPECT_TRUE(xenbus_transition_allowed(S::Initialising, S::InitWait));
  EXPECT_TRUE(xenbus_transition_allowed(S::InitWait, S::Connected));
  EXPECT_TRUE(xenbus_transition_allowed(S::Initialising, S::Initialised));
  EXPECT_TRUE(xenbus_transition_allowed(S::Initialised, S::Connected));
  EXPECT_TRUE(xenbus_transition_allowed(S::Connected, S::Closing));
  EXPECT_TRUE(xenbus_transition_allowed(S::Closing, S::Closed));
  EXPECT_TRUE(xenbus_transition_allowed(S::Closed, S::Initialising));
  EXPECT_TRUE(xenbus_transition_allowed(S::Connected, S::Reconfiguring));
  EXPECT_TRUE(xenbus_transition_allowed(S::Reconfiguring, S::Reconfigured));
  EXPECT_TRUE(xenbus_transition_allowed(S::Reconfigured, S::Connected));
  EXPECT_TRUE(xenbus_transition_allowed(S::InitWait, S::Closed));
  EXPECT_TRUE(xenbus_transition_allowed(S::Connected, S::Connected));
  // ... skipping or reversing the handshake is not.
  EXPECT_FALSE(xenbus_transition_allowed(S::Unknown, S::Connected));
  EXPECT_FALSE(xenbus_transition_allowed(S::Connected, S::Initialising));
  EXPECT_FALSE(xenbus_transition_allowed(S::Connected, S::InitWait));
  EXPECT_FALSE(xenbus_transition_allowed(S::Closed, S::Connected));
  EXPECT_FALSE(xenbus_transition_allowed(S::Closed, S::Closing));
  EXPECT_FALSE(xenbus_transition_allowed(S::Initialised, S::InitWait));
  EXPECT_FALSE(xenbus_transition_allowed(S::InitWait, S::Reconfiguring));
  EXPECT_FALSE(xenbus_transition_allowed(S::Reconfiguring, S::Connected));
}

// A guest client served synchronously: notify() runs the server's pass over the ring.
struct InProcessGuest {
  InProcessGuest(Server& server, domid_t domid)
      : transport(&page, [] {}),
        client(&page, GuestPlatform{this, [](void* s) { static_cast<InProcessGuest*>(s)->transport.on_kick(); },
                                    [](void*) {}}) {
    transport.bind(server, domid);
  }
  xenstore_domain_interface page{};
  RingTransport transport;
  GuestClient<4> client;
};

TEST(XenbusHelpers, FrontendAndBackendStatesThroughTheStore) {
  Server server;
  Peer dom0(server, 0);
  dom0.mkdir("/local/domain/3");
  dom0.set_perms("/local/domain/3", {"n3"});
  auto guest = std::make_unique<InProcessGuest>(server, 3);
  auto& g = guest->client;

  EXPECT_EQ(xenbus_read_state(g, "device/vif/0"), S::Unknown);  // missing reads as Unknown
  EXPECT_EQ(xenbus_switch_state(g, "device/vif/0", S::Initialising), XsError::None);
  EXPECT_EQ(dom0.read("/local/domain/3/device/vif/0/state"), "1");
  EXPECT_EQ(xenbus_switch_state(g, "device/vif/0", S::Connected), XsError::None);
  EXPECT_EQ(xenbus_switch_state(g, "device/vif/0", S::InitWait), XsError::Inval);
  EXPECT_EQ(xenbus_read_state(g, "device/vif/0"), S::Connected);
  dom0.write("/local/domain/3/device/vif/0/state", "garbage");
  EXPECT_EQ(xenbus_read_state(g, "device/vif/0"), S::Unknown);
  // The guest cannot drive a state it may not write.
  dom0.write("/local/domain/0/backend/vif/3/0/state", "2");
  EXPECT_EQ(xenbus_switch_state(g, "/local/domain/0/backend/vif/3/0", S::Connected),
            XsError::Acces);
}

}  // namespace
}  // namespace pvio::xs::test
