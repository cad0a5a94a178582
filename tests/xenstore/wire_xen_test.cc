// Our xs_wire definitions against Debian's xen/io/xs_wire.h and xen/io/xenbus.h.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>

extern "C" {
#include <xen/io/xenbus.h>
#include <xen/io/xs_wire.h>
}

// Xen's constants are macros that would rewrite our same-named constants: take their values,
// then undefine them before our headers.
namespace xen {
constexpr uint32_t payload_max = XENSTORE_PAYLOAD_MAX;
constexpr uint32_t abs_path_max = XENSTORE_ABS_PATH_MAX;
constexpr uint32_t rel_path_max = XENSTORE_REL_PATH_MAX;
constexpr uint32_t error_ringidx = XENSTORE_ERROR_RINGIDX;
constexpr uint32_t error_proto = XENSTORE_ERROR_PROTO;
constexpr uint32_t feature_error = XENSTORE_SERVER_FEATURE_ERROR;
constexpr uint32_t mask(uint32_t i) { return MASK_XENSTORE_IDX(i); }
}  // namespace xen
#undef XENSTORE_PAYLOAD_MAX
#undef XENSTORE_ABS_PATH_MAX
#undef XENSTORE_REL_PATH_MAX
#undef XENSTORE_RING_SIZE
#undef MASK_XENSTORE_IDX
#undef XENSTORE_SERVER_FEATURE_RECONNECTION
#undef XENSTORE_SERVER_FEATURE_ERROR
#undef XENSTORE_CONNECTED
#undef XENSTORE_RECONNECT
#undef XENSTORE_ERROR_NONE
#undef XENSTORE_ERROR_COMM
#undef XENSTORE_ERROR_RINGIDX
#undef XENSTORE_ERROR_PROTO

#include "pvio/xen/io/xs_wire.h"
#include "pvio/xenstore/xenbus.h"

namespace xs = pvio::xs;

TEST(XsWireInterop, MessageTypeNumbersMatchXen) {
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_CONTROL), XS_CONTROL);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_DIRECTORY), XS_DIRECTORY);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_READ), XS_READ);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_GET_PERMS), XS_GET_PERMS);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_WATCH), XS_WATCH);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_UNWATCH), XS_UNWATCH);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_TRANSACTION_START), XS_TRANSACTION_START);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_TRANSACTION_END), XS_TRANSACTION_END);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_INTRODUCE), XS_INTRODUCE);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_RELEASE), XS_RELEASE);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_GET_DOMAIN_PATH), XS_GET_DOMAIN_PATH);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_WRITE), XS_WRITE);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_MKDIR), XS_MKDIR);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_RM), XS_RM);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_SET_PERMS), XS_SET_PERMS);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_WATCH_EVENT), XS_WATCH_EVENT);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_ERROR), XS_ERROR);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_IS_DOMAIN_INTRODUCED), XS_IS_DOMAIN_INTRODUCED);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_RESUME), XS_RESUME);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_SET_TARGET), XS_SET_TARGET);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_RESET_WATCHES), XS_RESET_WATCHES);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_DIRECTORY_PART), XS_DIRECTORY_PART);
  EXPECT_EQ(static_cast<uint32_t>(xs::MsgType::XS_TYPE_COUNT), XS_TYPE_COUNT);
}

TEST(XsWireInterop, ErrorNamesFollowXsdErrors) {
  constexpr std::size_t n = sizeof(xsd_errors) / sizeof(xsd_errors[0]);
  ASSERT_EQ(n, static_cast<std::size_t>(xs::XsError::Perm));
  for (std::size_t i = 0; i < n; ++i) {
    auto e = static_cast<xs::XsError>(i + 1);
    EXPECT_STREQ(xs::xs_error_name(e), xsd_errors[i].errstring);
    EXPECT_EQ(xs::xs_error_from_name(xsd_errors[i].errstring,
                                     std::strlen(xsd_errors[i].errstring) + 1), e);
  }
}

TEST(XsWireInterop, LayoutAndConstants) {
  EXPECT_EQ(sizeof(xs::xsd_sockmsg), sizeof(struct xsd_sockmsg));
  EXPECT_EQ(sizeof(xs::xenstore_domain_interface), sizeof(struct xenstore_domain_interface));
  EXPECT_EQ(offsetof(xs::xenstore_domain_interface, rsp),
            offsetof(struct xenstore_domain_interface, rsp));
  EXPECT_EQ(offsetof(xs::xenstore_domain_interface, req_cons),
            offsetof(struct xenstore_domain_interface, req_cons));
  EXPECT_EQ(offsetof(xs::xenstore_domain_interface, rsp_prod),
            offsetof(struct xenstore_domain_interface, rsp_prod));
  EXPECT_EQ(offsetof(xs::xenstore_domain_interface, server_features),
            offsetof(struct xenstore_domain_interface, server_features));
  EXPECT_EQ(offsetof(xs::xenstore_domain_interface, error),
            offsetof(struct xenstore_domain_interface, error));
  EXPECT_EQ(xs::XENSTORE_PAYLOAD_MAX, xen::payload_max);
  EXPECT_EQ(xs::XENSTORE_ABS_PATH_MAX, xen::abs_path_max);
  EXPECT_EQ(xs::XENSTORE_REL_PATH_MAX, xen::rel_path_max);
  EXPECT_EQ(xs::XENSTORE_ERROR_RINGIDX, xen::error_ringidx);
  EXPECT_EQ(xs::XENSTORE_ERROR_PROTO, xen::error_proto);
  EXPECT_EQ(xs::XENSTORE_SERVER_FEATURE_ERROR, xen::feature_error);
  for (uint32_t i : {0u, 1u, 1023u, 1024u, 1025u, 0xFFFFFFFFu})
    EXPECT_EQ(xs::MASK_XENSTORE_IDX(i), xen::mask(i));
}

TEST(XsWireInterop, XenbusStateNumbersMatchXen) {
  EXPECT_EQ(static_cast<int>(xs::XenbusState::Unknown), XenbusStateUnknown);
  EXPECT_EQ(static_cast<int>(xs::XenbusState::Initialising), XenbusStateInitialising);
  EXPECT_EQ(static_cast<int>(xs::XenbusState::InitWait), XenbusStateInitWait);
  EXPECT_EQ(static_cast<int>(xs::XenbusState::Initialised), XenbusStateInitialised);
  EXPECT_EQ(static_cast<int>(xs::XenbusState::Connected), XenbusStateConnected);
  EXPECT_EQ(static_cast<int>(xs::XenbusState::Closing), XenbusStateClosing);
  EXPECT_EQ(static_cast<int>(xs::XenbusState::Closed), XenbusStateClosed);
  EXPECT_EQ(static_cast<int>(xs::XenbusState::Reconfiguring), XenbusStateReconfiguring);
  EXPECT_EQ(static_cast<int>(xs::XenbusState::Reconfigured), XenbusStateReconfigured);
}
