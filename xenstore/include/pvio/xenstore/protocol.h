// Parsing xs_wire messages into typed requests (parse once, then act only on the typed value),
// stream framing shared by the socket and ring transports, and reply encoding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "pvio/xen/xen.h"
#include "pvio/xen/io/xs_wire.h"

namespace pvio::xs {

// One node permission entry: the domid and its rights. The first entry of a node's list is
// the owner plus the rights of every domain not listed after it.
struct NodePerm {
  domid_t domid = 0;
  XsPerm perm = XsPerm::None;
  bool operator==(const NodePerm&) const = default;
};
std::optional<NodePerm> parse_perm(std::string_view s);  // "r5" -> {5, Read}
std::string format_perm(const NodePerm& p);              // {5, Read} -> "r5"

// Typed requests. Paths are still as the client wrote them (relative or absolute): their
// validity depends on the caller's domid, so the server resolves them.
struct ReqRead { std::string_view path; };
struct ReqWrite { std::string_view path; std::string_view value; };
struct ReqMkdir { std::string_view path; };
struct ReqRm { std::string_view path; };
struct ReqDirectory { std::string_view path; };
struct ReqGetPerms { std::string_view path; };
struct ReqSetPerms { std::string_view path; std::vector<NodePerm> perms; };
struct ReqWatch { std::string_view path; std::string_view token; };
struct ReqUnwatch { std::string_view path; std::string_view token; };
struct ReqTransactionStart {};
struct ReqTransactionEnd { bool commit; };
struct ReqIntroduce { domid_t domid; uint64_t gfn; evtchn_port_t port; };
struct ReqRelease { domid_t domid; };
struct ReqGetDomainPath { domid_t domid; };
struct ReqIsDomainIntroduced { domid_t domid; };
struct ReqResetWatches {};
struct ReqUnsupported { MsgType type; };  // known to Xen but not offered here -> ENOSYS

using Request = std::variant<ReqRead, ReqWrite, ReqMkdir, ReqRm, ReqDirectory, ReqGetPerms,
                             ReqSetPerms, ReqWatch, ReqUnwatch, ReqTransactionStart,
                             ReqTransactionEnd, ReqIntroduce, ReqRelease, ReqGetDomainPath,
                             ReqIsDomainIntroduced, ReqResetWatches, ReqUnsupported>;

struct ParsedRequest {
  XsError error = XsError::None;  // set: answer with XS_ERROR, `request` is meaningless
  Request request;
};

// Parses one complete message. `payload` must stay alive while the request is used.
ParsedRequest parse_request(const xsd_sockmsg& hdr, std::span<const char> payload);

// Reassembles messages from a byte stream. A header announcing more than XENSTORE_PAYLOAD_MAX
// bytes makes the stream corrupt: the caller drops that connection.
class MessageReader {
 public:
  enum class Status { NeedMore, Message, Corrupt };
  // Consumes bytes from `in` (advancing it) until a message is complete or input runs out.
  Status feed(std::span<const char>& in);
  const xsd_sockmsg& header() const { return hdr_; }
  std::span<const char> payload() const { return {payload_.data(), hdr_.len}; }
  // Call after handling a Message to start on the next one.
  void reset() { have_ = 0; }
  // The bytes of an unfinished message received so far (header first).
  bool partial() const { return have_ != 0; }
  std::string buffered() const;

 private:
  xsd_sockmsg hdr_{};
  char hdr_bytes_[sizeof(xsd_sockmsg)] = {};
  std::vector<char> payload_ = std::vector<char>(XENSTORE_PAYLOAD_MAX);
  std::size_t have_ = 0;  // bytes of header + payload received so far
};

// Encodes header + payload into one contiguous message.
std::string encode_message(MsgType type, uint32_t req_id, uint32_t tx_id,
                           std::string_view payload);
std::string encode_error(uint32_t req_id, uint32_t tx_id, XsError e);

}  // namespace pvio::xs
