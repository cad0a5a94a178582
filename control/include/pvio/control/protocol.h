// The domain control protocol: the wire messages by which a Dom0 service attaches to one
// domain over a SOCK_SEQPACKET unix socket and receives its memory, grant-table frames,
// shared_info, xenstore ring and event-channel eventfds by fd passing (SCM_RIGHTS). Layout and
// rules are documented in docs/domain-control-protocol.md.
//
// parse_message() is the one place bytes from the socket become a typed message: it checks
// size, magic, version, type, reserved fields, counts, the region table and the exact number
// of passed fds, so nothing after it looks at raw bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <variant>

#include "pvio/xen/xen.h"

namespace pvio::control {

inline constexpr std::uint32_t kMagic = 0x4f495650;  // "PVIO" in little-endian byte order
inline constexpr std::uint16_t kVersion = 2;  // 2: ATTACH hands out the client's maptrack page
inline constexpr std::uint32_t kMaxRegions = 8;       // == GuestMemory::kMaxRegions
inline constexpr std::uint32_t kMaxGrantFrames = 32;  // Xen's default max_grant_frames
inline constexpr std::uint64_t kPageSize = 4096;
inline constexpr std::uint32_t kNrEventChannels = 4096;
inline constexpr domid_t kDomidFirstReserved = 0x7FF0;  // DOMID_FIRST_RESERVED

enum class MsgType : std::uint16_t {
  AttachRequest = 1,
  AttachReply = 2,
  BindInterdomainRequest = 3,
  BindInterdomainReply = 4,
  UnbindRequest = 5,
  UnbindReply = 6,
  DetachRequest = 7,
  DetachReply = 8,
  Error = 9,
};

struct MsgHeader {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t type;        // MsgType
  std::uint32_t size;        // whole message including this header; fixed per type
  std::uint32_t request_id;  // chosen by the client, echoed in the reply
};

struct AttachRequest {
  MsgHeader hdr;
  std::uint16_t domid;  // the domain the service wants; refused unless it is this socket's
  std::uint16_t reserved[3];
};

struct RegionDesc {
  std::uint64_t gpa;     // guest-physical start
  std::uint64_t size;    // bytes
  std::uint64_t offset;  // offset of the region in the memory fd
};

// fds on success: [0] memory memfd, [1] upcall eventfd, [2] this client's maptrack page (a
// 4 KiB memfd, grant_table/maptrack.h). None on error.
struct AttachReply {
  MsgHeader hdr;
  std::int32_t status;  // 0 or -errno
  std::uint16_t domid;
  std::uint16_t reserved0;
  std::uint32_t nr_regions;
  std::uint32_t nr_grant_frames;
  std::uint64_t shared_info_gfn;
  std::uint64_t xenstore_gfn;
  std::uint32_t xenstore_port;
  std::uint32_t reserved1;
  RegionDesc regions[kMaxRegions];
  std::uint64_t grant_frame_gfns[kMaxGrantFrames];
};

struct BindInterdomainRequest {
  MsgHeader hdr;
  std::uint32_t remote_port;  // the guest's unbound port, offered to domain 0
  std::uint32_t reserved;
};

// fds on success: [0] the kick eventfd of local_port. None on error.
struct BindInterdomainReply {
  MsgHeader hdr;
  std::int32_t status;
  std::uint32_t local_port;   // the service's (Dom0's) port
  std::uint32_t remote_port;  // the guest port, echoed
  std::uint32_t reserved;
};

struct UnbindRequest {
  MsgHeader hdr;
  std::uint32_t local_port;
  std::uint32_t reserved;
};

struct UnbindReply {
  MsgHeader hdr;
  std::int32_t status;
  std::uint32_t local_port;
};

struct DetachRequest {
  MsgHeader hdr;
};

struct DetachReply {
  MsgHeader hdr;
  std::int32_t status;
  std::uint32_t reserved;
};

// The answer to a message that could not be parsed; the sender then drops the connection.
struct ErrorReply {
  MsgHeader hdr;
  std::int32_t status;
  std::uint16_t bad_type;  // the type field of the offending message, if it had one
  std::uint16_t reserved;
};

static_assert(sizeof(MsgHeader) == 16);
static_assert(sizeof(AttachRequest) == 24);
static_assert(sizeof(RegionDesc) == 24);
static_assert(sizeof(AttachReply) == 504);
static_assert(sizeof(BindInterdomainRequest) == 24);
static_assert(sizeof(BindInterdomainReply) == 32);
static_assert(sizeof(UnbindRequest) == 24);
static_assert(sizeof(UnbindReply) == 24);
static_assert(sizeof(DetachRequest) == 16);
static_assert(sizeof(DetachReply) == 24);
static_assert(sizeof(ErrorReply) == 24);

inline constexpr std::size_t kMaxMessageSize = sizeof(AttachReply);
inline constexpr std::size_t kMaxFds = 3;

enum class ParseError : std::uint8_t {
  None,
  Short,           // fewer bytes than a header, or than the type's fixed size
  Oversized,       // more bytes than the type's fixed size (or any message)
  BadMagic,
  BadVersion,
  BadSize,         // header size field disagrees with the bytes received
  UnknownType,
  BadFdCount,      // not exactly the fds this type (and status) carries
  BadRegionTable,  // count, alignment, overflow, overlap, or a gfn outside every region
  BadField,        // a reserved field not zero, or a value out of its range
};

using Message = std::variant<AttachRequest, AttachReply, BindInterdomainRequest,
                             BindInterdomainReply, UnbindRequest, UnbindReply, DetachRequest,
                             DetachReply, ErrorReply>;

struct Parsed {
  ParseError error = ParseError::None;
  std::uint16_t type = 0;      // the raw type field when the header was readable
  std::uint32_t request_id = 0;
  Message msg;
};

// Pure: validates `bytes` (one whole datagram) carrying `nr_fds` passed descriptors.
Parsed parse_message(std::span<const std::uint8_t> bytes, std::size_t nr_fds);

// The status an ErrorReply carries for each parse error (negative errno).
int parse_error_status(ParseError e);
const char* parse_error_name(ParseError e);

// A header for message `T` of type `type`.
MsgHeader make_header(MsgType type, std::uint32_t size, std::uint32_t request_id);

}  // namespace pvio::control
