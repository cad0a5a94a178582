// The xenstore wire protocol (Xen's public io/xs_wire.h): message header, message types, error names
// and the shared ring page. Freestanding: a guest kernel can include it with no C++ library.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace pvio::xs {

// enum xsd_sockmsg_type, with Xen's numbers (XS_DEBUG == XS_CONTROL; 20 was XS_RESTRICT).
enum class MsgType : uint32_t {
  XS_CONTROL = 0,
  XS_DIRECTORY = 1,
  XS_READ = 2,
  XS_GET_PERMS = 3,
  XS_WATCH = 4,
  XS_UNWATCH = 5,
  XS_TRANSACTION_START = 6,
  XS_TRANSACTION_END = 7,
  XS_INTRODUCE = 8,
  XS_RELEASE = 9,
  XS_GET_DOMAIN_PATH = 10,
  XS_WRITE = 11,
  XS_MKDIR = 12,
  XS_RM = 13,
  XS_SET_PERMS = 14,
  XS_WATCH_EVENT = 15,
  XS_ERROR = 16,
  XS_IS_DOMAIN_INTRODUCED = 17,
  XS_RESUME = 18,
  XS_SET_TARGET = 19,
  XS_RESET_WATCHES = 21,
  XS_DIRECTORY_PART = 22,
  XS_TYPE_COUNT = 23,
  XS_INVALID = 0xffff,
};

// struct xsd_sockmsg: every message is this header followed by `len` payload bytes.
struct xsd_sockmsg {
  uint32_t type;    // MsgType
  uint32_t req_id;  // echoed in the daemon's reply
  uint32_t tx_id;   // transaction id, 0 outside a transaction
  uint32_t len;     // payload bytes that follow
};
static_assert(sizeof(xsd_sockmsg) == 16);

inline constexpr uint32_t XENSTORE_PAYLOAD_MAX = 4096;  // "violating this is very bad"
inline constexpr uint32_t XENSTORE_ABS_PATH_MAX = 3072;
inline constexpr uint32_t XENSTORE_REL_PATH_MAX = 2048;

// Errors travel as their errno names ("EINVAL\0") in an XS_ERROR reply. The enumerators keep
// xs_wire.h's xsd_errors order; None means success.
enum class XsError : uint8_t {
  None = 0,
  Inval,     // EINVAL
  Acces,     // EACCES
  Exist,     // EEXIST
  IsDir,     // EISDIR
  NoEnt,     // ENOENT
  NoMem,     // ENOMEM
  NoSpc,     // ENOSPC
  Io,        // EIO
  NotEmpty,  // ENOTEMPTY
  NoSys,     // ENOSYS
  RoFs,      // EROFS
  Busy,      // EBUSY
  Again,     // EAGAIN
  IsConn,    // EISCONN
  TooBig,    // E2BIG
  Perm,      // EPERM
};

inline constexpr const char* xs_error_name(XsError e) {
  switch (e) {
    case XsError::None: return "OK";
    case XsError::Inval: return "EINVAL";
    case XsError::Acces: return "EACCES";
    case XsError::Exist: return "EEXIST";
    case XsError::IsDir: return "EISDIR";
    case XsError::NoEnt: return "ENOENT";
    case XsError::NoMem: return "ENOMEM";
    case XsError::NoSpc: return "ENOSPC";
    case XsError::Io: return "EIO";
    case XsError::NotEmpty: return "ENOTEMPTY";
    case XsError::NoSys: return "ENOSYS";
    case XsError::RoFs: return "EROFS";
    case XsError::Busy: return "EBUSY";
    case XsError::Again: return "EAGAIN";
    case XsError::IsConn: return "EISCONN";
    case XsError::TooBig: return "E2BIG";
    case XsError::Perm: return "EPERM";
  }
  return "EINVAL";
}

// Maps an XS_ERROR payload (with or without its NUL) back to the enum; unknown names -> Io,
// as libxenstore does for strings it does not know.
inline constexpr XsError xs_error_from_name(const char* s, size_t len) {
  while (len > 0 && s[len - 1] == '\0') --len;
  for (uint8_t i = 1; i <= static_cast<uint8_t>(XsError::Perm); ++i) {
    const char* n = xs_error_name(static_cast<XsError>(i));
    size_t k = 0;
    while (n[k] != '\0' && k < len && n[k] == s[k]) ++k;
    if (n[k] == '\0' && k == len) return static_cast<XsError>(i);
  }
  return XsError::Io;
}

// The inter-domain ring page (struct xenstore_domain_interface). The guest produces requests
// into req[] and consumes replies/watch events from rsp[]; indices are free-running and masked.
inline constexpr uint32_t XENSTORE_RING_SIZE = 1024;
using XENSTORE_RING_IDX = uint32_t;
inline constexpr XENSTORE_RING_IDX MASK_XENSTORE_IDX(XENSTORE_RING_IDX idx) {
  return idx & (XENSTORE_RING_SIZE - 1);
}

struct xenstore_domain_interface {
  char req[XENSTORE_RING_SIZE];  // requests to the xenstore daemon
  char rsp[XENSTORE_RING_SIZE];  // replies and asynchronous watch events
  XENSTORE_RING_IDX req_cons, req_prod;
  XENSTORE_RING_IDX rsp_cons, rsp_prod;
  uint32_t server_features;  // XENSTORE_SERVER_FEATURE_*
  uint32_t connection;       // XENSTORE_CONNECTED / XENSTORE_RECONNECT
  uint32_t error;            // XENSTORE_ERROR_*
};
static_assert(offsetof(xenstore_domain_interface, req_cons) == 2048);
static_assert(sizeof(xenstore_domain_interface) == 2076);

inline constexpr uint32_t XENSTORE_SERVER_FEATURE_RECONNECTION = 1;
inline constexpr uint32_t XENSTORE_SERVER_FEATURE_ERROR = 2;
inline constexpr uint32_t XENSTORE_CONNECTED = 0;
inline constexpr uint32_t XENSTORE_RECONNECT = 1;
inline constexpr uint32_t XENSTORE_ERROR_NONE = 0;
inline constexpr uint32_t XENSTORE_ERROR_COMM = 1;
inline constexpr uint32_t XENSTORE_ERROR_RINGIDX = 2;
inline constexpr uint32_t XENSTORE_ERROR_PROTO = 3;

// Permission letters of the string form ("n0", "r5", "w3", "b7"), as xenstore-chmod uses.
enum class XsPerm : uint8_t { None = 0, Read = 1, Write = 2, Both = 3 };

}  // namespace pvio::xs
