// xs_wire request parsing and stream framing; see protocol.h.
#include "pvio/xenstore/protocol.h"

#include <charconv>
#include <cstring>

namespace pvio::xs {
namespace {

// Splits the payload into NUL-terminated strings. Returns false if the payload does not end
// in NUL (every argument, including the last, must be terminated).
bool split_strings(std::span<const char> p, std::vector<std::string_view>& out) {
  out.clear();
  if (p.empty() || p.back() != '\0') return false;
  std::size_t start = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p[i] == '\0') {
      out.emplace_back(p.data() + start, i - start);
      start = i + 1;
    }
  }
  return true;
}

template <typename T>
bool parse_uint(std::string_view s, T max, T& out) {
  if (s.empty() || s.size() > 20) return false;
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
  if (ec != std::errc() || ptr != s.data() + s.size() || v > max) return false;
  out = static_cast<T>(v);
  return true;
}

ParsedRequest fail(XsError e) { return ParsedRequest{e, ReqUnsupported{MsgType::XS_INVALID}}; }

// Requests whose payload is exactly `n` NUL-terminated strings.
bool exact_args(std::span<const char> p, std::vector<std::string_view>& v, std::size_t n) {
  return split_strings(p, v) && v.size() == n;
}

bool parse_domid_arg(std::span<const char> p, domid_t& domid) {
  std::vector<std::string_view> v;
  return exact_args(p, v, 1) && parse_uint<domid_t>(v[0], 0xFFFF, domid);
}

}  // namespace

std::optional<NodePerm> parse_perm(std::string_view s) {
  if (s.size() < 2) return std::nullopt;
  NodePerm p;
  switch (s[0]) {
    case 'n': p.perm = XsPerm::None; break;
    case 'r': p.perm = XsPerm::Read; break;
    case 'w': p.perm = XsPerm::Write; break;
    case 'b': p.perm = XsPerm::Both; break;
    default: return std::nullopt;
  }
  if (!parse_uint<domid_t>(s.substr(1), 0xFFFF, p.domid)) return std::nullopt;
  return p;
}

std::string format_perm(const NodePerm& p) {
  static constexpr char kLetters[] = {'n', 'r', 'w', 'b'};
  return kLetters[static_cast<int>(p.perm) & 3] + std::to_string(p.domid);
}

ParsedRequest parse_request(const xsd_sockmsg& hdr, std::span<const char> p) {
  if (hdr.len != p.size() || p.size() > XENSTORE_PAYLOAD_MAX) return fail(XsError::Inval);
  std::vector<std::string_view> v;
  switch (static_cast<MsgType>(hdr.type)) {
    case MsgType::XS_READ:
      if (!exact_args(p, v, 1)) return fail(XsError::Inval);
      return {XsError::None, ReqRead{v[0]}};
    case MsgType::XS_MKDIR:
      if (!exact_args(p, v, 1)) return fail(XsError::Inval);
      return {XsError::None, ReqMkdir{v[0]}};
    case MsgType::XS_RM:
      if (!exact_args(p, v, 1)) return fail(XsError::Inval);
      return {XsError::None, ReqRm{v[0]}};
    case MsgType::XS_DIRECTORY:
      if (!exact_args(p, v, 1)) return fail(XsError::Inval);
      return {XsError::None, ReqDirectory{v[0]}};
    case MsgType::XS_GET_PERMS:
      if (!exact_args(p, v, 1)) return fail(XsError::Inval);
      return {XsError::None, ReqGetPerms{v[0]}};
    case MsgType::XS_WRITE: {
      // "path\0value": the value is raw bytes up to the end of the payload.
      const void* nul = std::memchr(p.data(), '\0', p.size());
      if (nul == nullptr) return fail(XsError::Inval);
      std::size_t plen = static_cast<const char*>(nul) - p.data();
      return {XsError::None, ReqWrite{std::string_view(p.data(), plen),
                                      std::string_view(p.data() + plen + 1, p.size() - plen - 1)}};
    }
    case MsgType::XS_SET_PERMS: {
      if (!split_strings(p, v) || v.size() < 2) return fail(XsError::Inval);
      ReqSetPerms r{v[0], {}};
      for (std::size_t i = 1; i < v.size(); ++i) {
        auto perm = parse_perm(v[i]);
        if (!perm) return fail(XsError::Inval);
        r.perms.push_back(*perm);
      }
      return {XsError::None, std::move(r)};
    }
    case MsgType::XS_WATCH:
      if (!exact_args(p, v, 2)) return fail(XsError::Inval);
      return {XsError::None, ReqWatch{v[0], v[1]}};
    case MsgType::XS_UNWATCH:
      if (!exact_args(p, v, 2)) return fail(XsError::Inval);
      return {XsError::None, ReqUnwatch{v[0], v[1]}};
    case MsgType::XS_TRANSACTION_START:
      // libxenstore sends a single empty string.
      if (!exact_args(p, v, 1) || !v[0].empty()) return fail(XsError::Inval);
      return {XsError::None, ReqTransactionStart{}};
    case MsgType::XS_TRANSACTION_END:
      if (!exact_args(p, v, 1) || (v[0] != "T" && v[0] != "F")) return fail(XsError::Inval);
      return {XsError::None, ReqTransactionEnd{v[0] == "T"}};
    case MsgType::XS_INTRODUCE: {
      ReqIntroduce r{};
      if (!exact_args(p, v, 3) || !parse_uint<domid_t>(v[0], 0xFFFF, r.domid) ||
          !parse_uint<uint64_t>(v[1], UINT64_MAX, r.gfn) ||
          !parse_uint<evtchn_port_t>(v[2], UINT32_MAX, r.port))
        return fail(XsError::Inval);
      return {XsError::None, r};
    }
    case MsgType::XS_RELEASE: {
      ReqRelease r{};
      if (!parse_domid_arg(p, r.domid)) return fail(XsError::Inval);
      return {XsError::None, r};
    }
    case MsgType::XS_GET_DOMAIN_PATH: {
      ReqGetDomainPath r{};
      if (!parse_domid_arg(p, r.domid)) return fail(XsError::Inval);
      return {XsError::None, r};
    }
    case MsgType::XS_IS_DOMAIN_INTRODUCED: {
      ReqIsDomainIntroduced r{};
      if (!parse_domid_arg(p, r.domid)) return fail(XsError::Inval);
      return {XsError::None, r};
    }
    case MsgType::XS_RESET_WATCHES:
      return {XsError::None, ReqResetWatches{}};
    case MsgType::XS_CONTROL:
    case MsgType::XS_RESUME:
    case MsgType::XS_SET_TARGET:
    case MsgType::XS_DIRECTORY_PART:
      return {XsError::None, ReqUnsupported{static_cast<MsgType>(hdr.type)}};
    default:
      // WATCH_EVENT and ERROR are daemon->client only; anything else is unknown.
      return fail(XsError::Inval);
  }
}

MessageReader::Status MessageReader::feed(std::span<const char>& in) {
  while (!in.empty()) {
    if (have_ < sizeof(hdr_bytes_)) {
      std::size_t n = std::min(in.size(), sizeof(hdr_bytes_) - have_);
      std::memcpy(hdr_bytes_ + have_, in.data(), n);
      have_ += n;
      in = in.subspan(n);
      if (have_ < sizeof(hdr_bytes_)) return Status::NeedMore;
      std::memcpy(&hdr_, hdr_bytes_, sizeof(hdr_));
      if (hdr_.len > XENSTORE_PAYLOAD_MAX) return Status::Corrupt;
    }
    std::size_t got = have_ - sizeof(hdr_bytes_);
    std::size_t n = std::min<std::size_t>(in.size(), hdr_.len - got);
    std::memcpy(payload_.data() + got, in.data(), n);
    have_ += n;
    in = in.subspan(n);
    if (have_ == sizeof(hdr_bytes_) + hdr_.len) return Status::Message;
  }
  if (have_ == sizeof(hdr_bytes_) && hdr_.len == 0) return Status::Message;
  return Status::NeedMore;
}

std::string MessageReader::buffered() const {
  const std::size_t h = std::min(have_, sizeof(hdr_bytes_));
  std::string out(hdr_bytes_, h);
  if (have_ > h) out.append(payload_.data(), have_ - h);
  return out;
}

std::string encode_message(MsgType type, uint32_t req_id, uint32_t tx_id,
                           std::string_view payload) {
  xsd_sockmsg h{static_cast<uint32_t>(type), req_id, tx_id,
                static_cast<uint32_t>(payload.size())};
  std::string out(sizeof(h) + payload.size(), '\0');
  std::memcpy(out.data(), &h, sizeof(h));
  std::memcpy(out.data() + sizeof(h), payload.data(), payload.size());
  return out;
}

std::string encode_error(uint32_t req_id, uint32_t tx_id, XsError e) {
  std::string name = xs_error_name(e);
  name.push_back('\0');
  return encode_message(MsgType::XS_ERROR, req_id, tx_id, name);
}

}  // namespace pvio::xs
