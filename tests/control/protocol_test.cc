// parse_message: every kind of malformed control message maps to its error.
#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "pvio/control/protocol.h"

namespace {

using namespace pvio::control;

template <typename T>
std::vector<std::uint8_t> bytes_of(const T& m) {
  std::vector<std::uint8_t> b(sizeof(T));
  std::memcpy(b.data(), &m, sizeof(T));
  return b;
}

AttachReply good_reply() {
  AttachReply r{};
  r.hdr = make_header(MsgType::AttachReply, sizeof(r), 7);
  r.domid = 3;
  r.nr_regions = 2;
  r.regions[0] = {0, 16 * 4096, 0};
  r.regions[1] = {0x100000, 4 * 4096, 16 * 4096};
  r.nr_grant_frames = 2;
  r.grant_frame_gfns[0] = 2;
  r.grant_frame_gfns[1] = 0x101;
  r.shared_info_gfn = 0;
  r.xenstore_gfn = 1;
  r.xenstore_port = 1;
  return r;
}

ParseError parse(const AttachReply& r, std::size_t fds = 3) {
  return parse_message(bytes_of(r), fds).error;
}

TEST(ControlParse, GoodRequestsParseToTheirType) {
  AttachRequest a{};
  a.hdr = make_header(MsgType::AttachRequest, sizeof(a), 1);
  a.domid = 5;
  Parsed p = parse_message(bytes_of(a), 0);
  ASSERT_EQ(p.error, ParseError::None);
  ASSERT_TRUE(std::holds_alternative<AttachRequest>(p.msg));
  EXPECT_EQ(std::get<AttachRequest>(p.msg).domid, 5);
  EXPECT_EQ(p.request_id, 1u);

  BindInterdomainRequest b{};
  b.hdr = make_header(MsgType::BindInterdomainRequest, sizeof(b), 2);
  b.remote_port = 9;
  p = parse_message(bytes_of(b), 0);
  ASSERT_EQ(p.error, ParseError::None);
  EXPECT_EQ(std::get<BindInterdomainRequest>(p.msg).remote_port, 9u);

  DetachRequest d{};
  d.hdr = make_header(MsgType::DetachRequest, sizeof(d), 3);
  EXPECT_EQ(parse_message(bytes_of(d), 0).error, ParseError::None);
}

TEST(ControlParse, HeaderErrors) {
  AttachRequest a{};
  a.hdr = make_header(MsgType::AttachRequest, sizeof(a), 1);
  auto b = bytes_of(a);
  EXPECT_EQ(parse_message(std::span(b).first(8), 0).error, ParseError::Short);
  EXPECT_EQ(parse_message({}, 0).error, ParseError::Short);

  auto bad = a;
  bad.hdr.magic ^= 1;
  EXPECT_EQ(parse_message(bytes_of(bad), 0).error, ParseError::BadMagic);
  bad = a;
  bad.hdr.version = kVersion + 1;
  EXPECT_EQ(parse_message(bytes_of(bad), 0).error, ParseError::BadVersion);
  bad.hdr.version = 1;  // before ATTACH carried the maptrack page
  EXPECT_EQ(parse_message(bytes_of(bad), 0).error, ParseError::BadVersion);
  bad = a;
  bad.hdr.size = 100;
  EXPECT_EQ(parse_message(bytes_of(bad), 0).error, ParseError::BadSize);
  bad = a;
  bad.hdr.type = 77;
  EXPECT_EQ(parse_message(bytes_of(bad), 0).error, ParseError::UnknownType);
  bad = a;
  bad.hdr.type = 0;
  EXPECT_EQ(parse_message(bytes_of(bad), 0).error, ParseError::UnknownType);

  // A header claiming a size that matches the bytes but not the type's fixed size.
  std::vector<std::uint8_t> longer(sizeof(a) + 8, 0);
  bad = a;
  bad.hdr.size = static_cast<std::uint32_t>(longer.size());
  std::memcpy(longer.data(), &bad, sizeof(bad));
  EXPECT_EQ(parse_message(longer, 0).error, ParseError::Oversized);
  DetachRequest d{};
  d.hdr = make_header(MsgType::AttachRequest, sizeof(d), 1);  // attach needs 24 bytes
  EXPECT_EQ(parse_message(bytes_of(d), 0).error, ParseError::Short);
  std::vector<std::uint8_t> huge(kMaxMessageSize + 1, 0);
  std::memcpy(huge.data(), &a, sizeof(a));
  EXPECT_EQ(parse_message(huge, 0).error, ParseError::Oversized);
}

TEST(ControlParse, FieldAndFdErrors) {
  AttachRequest a{};
  a.hdr = make_header(MsgType::AttachRequest, sizeof(a), 1);
  EXPECT_EQ(parse_message(bytes_of(a), 1).error, ParseError::BadFdCount);
  a.reserved[2] = 1;
  EXPECT_EQ(parse_message(bytes_of(a), 0).error, ParseError::BadField);
  a.reserved[2] = 0;
  a.domid = 0x7FF0;  // DOMID_FIRST_RESERVED and above are not domains
  EXPECT_EQ(parse_message(bytes_of(a), 0).error, ParseError::BadField);

  BindInterdomainReply r{};
  r.hdr = make_header(MsgType::BindInterdomainReply, sizeof(r), 1);
  r.local_port = 3;
  r.remote_port = 4;
  EXPECT_EQ(parse_message(bytes_of(r), 1).error, ParseError::None);
  EXPECT_EQ(parse_message(bytes_of(r), 0).error, ParseError::BadFdCount);
  EXPECT_EQ(parse_message(bytes_of(r), 2).error, ParseError::BadFdCount);
  r.local_port = 4096;
  EXPECT_EQ(parse_message(bytes_of(r), 1).error, ParseError::BadField);
  r.status = -EINVAL;
  EXPECT_EQ(parse_message(bytes_of(r), 0).error, ParseError::None);
  EXPECT_EQ(parse_message(bytes_of(r), 1).error, ParseError::BadFdCount);
  r.status = 1;
  EXPECT_EQ(parse_message(bytes_of(r), 0).error, ParseError::BadField);

  ErrorReply e{};
  e.hdr = make_header(MsgType::Error, sizeof(e), 1);
  EXPECT_EQ(parse_message(bytes_of(e), 0).error, ParseError::BadField);  // status must be < 0
  e.status = -EPROTO;
  EXPECT_EQ(parse_message(bytes_of(e), 0).error, ParseError::None);
}

TEST(ControlParse, AttachReplyRegionTable) {
  EXPECT_EQ(parse(good_reply()), ParseError::None);
  EXPECT_EQ(parse(good_reply(), 2), ParseError::BadFdCount);  // no maptrack page
  EXPECT_EQ(parse(good_reply(), 4), ParseError::BadFdCount);

  auto r = good_reply();
  r.nr_regions = 0;
  EXPECT_EQ(parse(r), ParseError::BadRegionTable);
  r = good_reply();
  r.nr_regions = kMaxRegions + 1;
  EXPECT_EQ(parse(r), ParseError::BadRegionTable);
  r = good_reply();
  r.regions[1].gpa = 0x1000;  // overlaps region 0
  EXPECT_EQ(parse(r), ParseError::BadRegionTable);
  r = good_reply();
  r.regions[1].offset = 4096;  // overlaps region 0 in the memfd
  EXPECT_EQ(parse(r), ParseError::BadRegionTable);
  r = good_reply();
  r.regions[1].size = 100;  // not page aligned
  EXPECT_EQ(parse(r), ParseError::BadRegionTable);
  r = good_reply();
  r.regions[1].gpa = ~0ull & ~0xFFFull;  // gpa + size wraps
  EXPECT_EQ(parse(r), ParseError::BadRegionTable);
  r = good_reply();
  r.regions[1].offset = ~0ull & ~0xFFFull;  // offset + size wraps
  EXPECT_EQ(parse(r), ParseError::BadRegionTable);
  r = good_reply();
  r.regions[0].size = 0;
  EXPECT_EQ(parse(r), ParseError::BadRegionTable);
  r = good_reply();
  r.regions[5] = {0x200000, 4096, 0x200000};  // beyond nr_regions but not zero
  EXPECT_EQ(parse(r), ParseError::BadRegionTable);
  r = good_reply();
  r.shared_info_gfn = 16;  // the hole between the regions
  EXPECT_EQ(parse(r), ParseError::BadRegionTable);
  r = good_reply();
  r.xenstore_gfn = ~0ull;
  EXPECT_EQ(parse(r), ParseError::BadRegionTable);
  r = good_reply();
  r.grant_frame_gfns[1] = 0x104;  // one past region 1
  EXPECT_EQ(parse(r), ParseError::BadRegionTable);
  r = good_reply();
  r.nr_grant_frames = kMaxGrantFrames + 1;
  EXPECT_EQ(parse(r), ParseError::BadRegionTable);
  r = good_reply();
  r.xenstore_port = 0;
  EXPECT_EQ(parse(r), ParseError::BadField);
  r = good_reply();
  r.xenstore_port = 4096;
  EXPECT_EQ(parse(r), ParseError::BadField);

  // A refusal carries no table and no fds.
  AttachReply no{};
  no.hdr = make_header(MsgType::AttachReply, sizeof(no), 1);
  no.status = -ESRCH;
  EXPECT_EQ(parse(no, 0), ParseError::None);
  EXPECT_EQ(parse(no, 2), ParseError::BadFdCount);
  no.nr_regions = 1;
  EXPECT_EQ(parse(no, 0), ParseError::BadRegionTable);
}

TEST(ControlParse, ErrorStatusesAreNegativeErrno) {
  EXPECT_EQ(parse_error_status(ParseError::Short), -EMSGSIZE);
  EXPECT_EQ(parse_error_status(ParseError::BadMagic), -EPROTO);
  EXPECT_EQ(parse_error_status(ParseError::BadVersion), -EPROTONOSUPPORT);
  EXPECT_EQ(parse_error_status(ParseError::UnknownType), -EOPNOTSUPP);
  EXPECT_EQ(parse_error_status(ParseError::BadFdCount), -EBADF);
  EXPECT_EQ(parse_error_status(ParseError::BadRegionTable), -EINVAL);
}

}  // namespace
