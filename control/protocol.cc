// parse_message: every byte and fd count of a domain-control message checked once.
#include "pvio/control/protocol.h"

#include <cerrno>
#include <cstring>

namespace pvio::control {

namespace {

template <typename T>
bool zero(const T& field) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(&field);
  for (std::size_t i = 0; i < sizeof(T); ++i)
    if (p[i] != 0) return false;
  return true;
}

bool page_aligned(std::uint64_t v) { return (v & (kPageSize - 1)) == 0; }

// A gfn's page lies wholly inside one region.
bool gfn_in_regions(const AttachReply& r, std::uint64_t gfn) {
  if (gfn > (~std::uint64_t{0} >> 12)) return false;
  const std::uint64_t gpa = gfn << 12;
  for (std::uint32_t i = 0; i < r.nr_regions; ++i) {
    const RegionDesc& d = r.regions[i];
    if (gpa >= d.gpa && gpa - d.gpa <= d.size - kPageSize) return true;
  }
  return false;
}

ParseError check(const AttachRequest& m, std::size_t nr_fds) {
  if (nr_fds != 0) return ParseError::BadFdCount;
  if (!zero(m.reserved) || m.domid >= kDomidFirstReserved) return ParseError::BadField;
  return ParseError::None;
}

ParseError check(const AttachReply& m, std::size_t nr_fds) {
  if (!zero(m.reserved0) || !zero(m.reserved1)) return ParseError::BadField;
  if (m.status > 0) return ParseError::BadField;
  if (m.status < 0) {
    // A refusal carries nothing: no fds, no table.
    if (nr_fds != 0) return ParseError::BadFdCount;
    if (m.nr_regions != 0 || m.nr_grant_frames != 0) return ParseError::BadRegionTable;
    return ParseError::None;
  }
  if (nr_fds != 3) return ParseError::BadFdCount;
  if (m.domid >= kDomidFirstReserved) return ParseError::BadField;
  if (m.nr_regions == 0 || m.nr_regions > kMaxRegions) return ParseError::BadRegionTable;
  if (m.nr_grant_frames > kMaxGrantFrames) return ParseError::BadRegionTable;
  for (std::uint32_t i = 0; i < kMaxRegions; ++i) {
    const RegionDesc& d = m.regions[i];
    if (i >= m.nr_regions) {
      if (!zero(d)) return ParseError::BadRegionTable;
      continue;
    }
    if (d.size == 0 || !page_aligned(d.gpa) || !page_aligned(d.size) || !page_aligned(d.offset))
      return ParseError::BadRegionTable;
    if (d.gpa + d.size < d.gpa || d.offset + d.size < d.offset) return ParseError::BadRegionTable;
    for (std::uint32_t j = 0; j < i; ++j) {
      const RegionDesc& e = m.regions[j];
      if (d.gpa < e.gpa + e.size && e.gpa < d.gpa + d.size) return ParseError::BadRegionTable;
      if (d.offset < e.offset + e.size && e.offset < d.offset + d.size)
        return ParseError::BadRegionTable;
    }
  }
  for (std::uint32_t i = 0; i < kMaxGrantFrames; ++i) {
    if (i >= m.nr_grant_frames) {
      if (m.grant_frame_gfns[i] != 0) return ParseError::BadRegionTable;
    } else if (!gfn_in_regions(m, m.grant_frame_gfns[i])) {
      return ParseError::BadRegionTable;
    }
  }
  if (!gfn_in_regions(m, m.shared_info_gfn) || !gfn_in_regions(m, m.xenstore_gfn))
    return ParseError::BadRegionTable;
  if (m.xenstore_port == 0 || m.xenstore_port >= kNrEventChannels) return ParseError::BadField;
  return ParseError::None;
}

ParseError check(const BindInterdomainRequest& m, std::size_t nr_fds) {
  if (nr_fds != 0) return ParseError::BadFdCount;
  if (!zero(m.reserved)) return ParseError::BadField;
  return ParseError::None;  // the port itself is the port table's to judge (-EINVAL)
}

ParseError check(const BindInterdomainReply& m, std::size_t nr_fds) {
  if (!zero(m.reserved) || m.status > 0) return ParseError::BadField;
  if (nr_fds != (m.status == 0 ? 1u : 0u)) return ParseError::BadFdCount;
  if (m.status == 0 && (m.local_port == 0 || m.local_port >= kNrEventChannels ||
                        m.remote_port == 0 || m.remote_port >= kNrEventChannels))
    return ParseError::BadField;
  return ParseError::None;
}

ParseError check(const UnbindRequest& m, std::size_t nr_fds) {
  if (nr_fds != 0) return ParseError::BadFdCount;
  if (!zero(m.reserved)) return ParseError::BadField;
  return ParseError::None;
}

ParseError check(const UnbindReply& m, std::size_t nr_fds) {
  if (nr_fds != 0) return ParseError::BadFdCount;
  if (m.status > 0) return ParseError::BadField;
  return ParseError::None;
}

ParseError check(const DetachRequest&, std::size_t nr_fds) {
  return nr_fds != 0 ? ParseError::BadFdCount : ParseError::None;
}

ParseError check(const DetachReply& m, std::size_t nr_fds) {
  if (nr_fds != 0) return ParseError::BadFdCount;
  if (!zero(m.reserved) || m.status > 0) return ParseError::BadField;
  return ParseError::None;
}

ParseError check(const ErrorReply& m, std::size_t nr_fds) {
  if (nr_fds != 0) return ParseError::BadFdCount;
  if (!zero(m.reserved) || m.status >= 0) return ParseError::BadField;
  return ParseError::None;
}

template <typename T>
void parse_as(std::span<const std::uint8_t> bytes, std::size_t nr_fds, Parsed& out) {
  if (bytes.size() < sizeof(T)) {
    out.error = ParseError::Short;
    return;
  }
  if (bytes.size() > sizeof(T)) {
    out.error = ParseError::Oversized;
    return;
  }
  T m;
  std::memcpy(&m, bytes.data(), sizeof(T));  // the one copy out of the received bytes
  out.error = check(m, nr_fds);
  if (out.error == ParseError::None) out.msg = m;
}

}  // namespace

Parsed parse_message(std::span<const std::uint8_t> bytes, std::size_t nr_fds) {
  Parsed out;
  if (bytes.size() < sizeof(MsgHeader)) {
    out.error = ParseError::Short;
    return out;
  }
  MsgHeader h;
  std::memcpy(&h, bytes.data(), sizeof(h));
  out.type = h.type;
  out.request_id = h.request_id;
  if (h.magic != kMagic) {
    out.error = ParseError::BadMagic;
  } else if (h.version != kVersion) {
    out.error = ParseError::BadVersion;
  } else if (bytes.size() > kMaxMessageSize) {
    out.error = ParseError::Oversized;
  } else if (h.size != bytes.size()) {
    out.error = ParseError::BadSize;
  } else {
    switch (static_cast<MsgType>(h.type)) {
      case MsgType::AttachRequest: parse_as<AttachRequest>(bytes, nr_fds, out); break;
      case MsgType::AttachReply: parse_as<AttachReply>(bytes, nr_fds, out); break;
      case MsgType::BindInterdomainRequest: parse_as<BindInterdomainRequest>(bytes, nr_fds, out); break;
      case MsgType::BindInterdomainReply: parse_as<BindInterdomainReply>(bytes, nr_fds, out); break;
      case MsgType::UnbindRequest: parse_as<UnbindRequest>(bytes, nr_fds, out); break;
      case MsgType::UnbindReply: parse_as<UnbindReply>(bytes, nr_fds, out); break;
      case MsgType::DetachRequest: parse_as<DetachRequest>(bytes, nr_fds, out); break;
      case MsgType::DetachReply: parse_as<DetachReply>(bytes, nr_fds, out); break;
      case MsgType::Error: parse_as<ErrorReply>(bytes, nr_fds, out); break;
      default: out.error = ParseError::UnknownType; break;
    }
  }
  return out;
}

int parse_error_status(ParseError e) {
  switch (e) {
    case ParseError::None: return 0;
    case ParseError::Short:
    case ParseError::Oversized:
    case ParseError::BadSize: return -EMSGSIZE;
    case ParseError::BadMagic: return -EPROTO;
    case ParseError::BadVersion: return -EPROTONOSUPPORT;
    case ParseError::UnknownType: return -EOPNOTSUPP;
    case ParseError::BadFdCount: return -EBADF;
    case ParseError::BadRegionTable:
    case ParseError::BadField: return -EINVAL;
  }
  return -EINVAL;
}

const char* parse_error_name(ParseError e) {
  switch (e) {
    case ParseError::None: return "none";
    case ParseError::Short: return "short";
    case ParseError::Oversized: return "oversized";
    case ParseError::BadMagic: return "bad magic";
    case ParseError::BadVersion: return "bad version";
    case ParseError::BadSize: return "bad size";
    case ParseError::UnknownType: return "unknown type";
    case ParseError::BadFdCount: return "bad fd count";
    case ParseError::BadRegionTable: return "bad region table";
    case ParseError::BadField: return "bad field";
  }
  return "?";
}

MsgHeader make_header(MsgType type, std::uint32_t size, std::uint32_t request_id) {
  return MsgHeader{kMagic, kVersion, static_cast<std::uint16_t>(type), size, request_id};
}

}  // namespace pvio::control
