// Network wire protocol (Xen public io/netif.h): tx/rx requests and responses, extra-info
// slots (GSO, multicast, hash), flags and status codes, with Xen's exact layout.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "pvio/xen/io/ring.h"
#include "pvio/xen/xen.h"

namespace pvio::netif {

// netif_tx_request.flags (NETTXF_*).
inline constexpr uint16_t kTxfCsumBlank = 1u << 0;
inline constexpr uint16_t kTxfDataValidated = 1u << 1;
inline constexpr uint16_t kTxfMoreData = 1u << 2;
inline constexpr uint16_t kTxfExtraInfo = 1u << 3;

// netif_rx_response.flags (NETRXF_*).
inline constexpr uint16_t kRxfDataValidated = 1u << 0;
inline constexpr uint16_t kRxfCsumBlank = 1u << 1;
inline constexpr uint16_t kRxfMoreData = 1u << 2;
inline constexpr uint16_t kRxfExtraInfo = 1u << 3;
inline constexpr uint16_t kRxfGsoPrefix = 1u << 4;

inline constexpr uint32_t kMaxTxSize = 0xFFFF;  // XEN_NETIF_MAX_TX_SIZE

// XEN_NETIF_NR_SLOTS_MIN: the fewest slots a backend must accept for one packet (frontends may
// use up to this many without asking); XEN_NETBK_LEGACY_SLOTS_MAX: the same limit as older
// backends name it (MAX_SKB_FRAGS + 1 at the time the protocol was fixed).
inline constexpr unsigned kNrSlotsMin = 18;
inline constexpr unsigned kNetbkLegacySlotsMax = kNrSlotsMin;

// netif_extra_info.type (XEN_NETIF_EXTRA_TYPE_*).
inline constexpr uint8_t kExtraTypeNone = 0;
inline constexpr uint8_t kExtraTypeGso = 1;
inline constexpr uint8_t kExtraTypeMcastAdd = 2;
inline constexpr uint8_t kExtraTypeMcastDel = 3;
inline constexpr uint8_t kExtraTypeHash = 4;
inline constexpr uint8_t kExtraTypeMax = 5;
inline constexpr uint8_t kExtraFlagMore = 1u << 0;  // XEN_NETIF_EXTRA_FLAG_MORE

// gso.type (XEN_NETIF_GSO_TYPE_*).
inline constexpr uint8_t kGsoTypeNone = 0;
inline constexpr uint8_t kGsoTypeTcpv4 = 1;
inline constexpr uint8_t kGsoTypeTcpv6 = 2;

// Status codes (NETIF_RSP_*).
inline constexpr int16_t kRspDropped = -2;
inline constexpr int16_t kRspError = -1;
inline constexpr int16_t kRspOkay = 0;
inline constexpr int16_t kRspNull = 1;  // padding response for an extra-info slot

struct netif_tx_request {
  grant_ref_t gref;
  uint16_t offset;
  uint16_t flags;
  uint16_t id;
  uint16_t size;  // first fragment: whole packet size; others: this fragment
};

// Occupies a tx (or rx response) slot after a request flagged kTxfExtraInfo.
struct netif_extra_info {
  uint8_t type;
  uint8_t flags;
  union {
    struct {
      uint16_t size;  // GSO MSS
      uint8_t type;   // kGsoType*
      uint8_t pad;
      uint16_t features;
    } gso;
    struct {
      uint8_t addr[6];
    } mcast;
    struct {
      uint8_t type;
      uint8_t algorithm;
      uint8_t value[4];
    } hash;
    uint16_t pad[3];
  } u;
};

struct netif_tx_response {
  uint16_t id;
  int16_t status;
};

struct netif_rx_request {
  uint16_t id;
  uint16_t pad;
  grant_ref_t gref;
};

struct netif_rx_response {
  uint16_t id;
  uint16_t offset;
  uint16_t flags;
  int16_t status;  // > 0: bytes received; < 0: kRsp* error
};

static_assert(sizeof(netif_tx_request) == 12);
static_assert(offsetof(netif_tx_request, offset) == 4);
static_assert(offsetof(netif_tx_request, size) == 10);
static_assert(sizeof(netif_extra_info) == 8);
static_assert(offsetof(netif_extra_info, u) == 2);
static_assert(sizeof(netif_tx_response) == 4);
static_assert(sizeof(netif_rx_request) == 8);
static_assert(offsetof(netif_rx_request, gref) == 4);
static_assert(sizeof(netif_rx_response) == 8);

// Control ring (feature-ctrl-ring; netif.h "Control ring"): hash configuration requests.
inline constexpr uint16_t kCtrlTypeInvalid = 0;              // XEN_NETIF_CTRL_TYPE_*
inline constexpr uint16_t kCtrlTypeGetHashFlags = 1;
inline constexpr uint16_t kCtrlTypeSetHashFlags = 2;
inline constexpr uint16_t kCtrlTypeSetHashKey = 3;
inline constexpr uint16_t kCtrlTypeGetHashMappingSize = 4;
inline constexpr uint16_t kCtrlTypeSetHashMappingSize = 5;
inline constexpr uint16_t kCtrlTypeSetHashMapping = 6;
inline constexpr uint16_t kCtrlTypeSetHashAlgorithm = 7;
inline constexpr uint16_t kCtrlTypeGetGrefMappingSize = 8;
inline constexpr uint16_t kCtrlTypeAddGrefMapping = 9;
inline constexpr uint16_t kCtrlTypeDelGrefMapping = 10;

inline constexpr uint32_t kCtrlStatusSuccess = 0;  // XEN_NETIF_CTRL_STATUS_*
inline constexpr uint32_t kCtrlStatusNotSupported = 1;
inline constexpr uint32_t kCtrlStatusInvalidParameter = 2;
inline constexpr uint32_t kCtrlStatusBufferOverflow = 3;

inline constexpr uint32_t kCtrlHashTypeIpv4 = 1u << 0;  // XEN_NETIF_CTRL_HASH_TYPE_*
inline constexpr uint32_t kCtrlHashTypeIpv4Tcp = 1u << 1;
inline constexpr uint32_t kCtrlHashTypeIpv6 = 1u << 2;
inline constexpr uint32_t kCtrlHashTypeIpv6Tcp = 1u << 3;

inline constexpr uint32_t kCtrlHashAlgorithmNone = 0;  // XEN_NETIF_CTRL_HASH_ALGORITHM_*
inline constexpr uint32_t kCtrlHashAlgorithmToeplitz = 1;

struct xen_netif_ctrl_request {
  uint16_t id;
  uint16_t type;
  uint32_t data[3];
};

struct xen_netif_ctrl_response {
  uint16_t id;
  uint16_t type;
  uint32_t status;
  uint32_t data;
};

static_assert(sizeof(xen_netif_ctrl_request) == 16);
static_assert(sizeof(xen_netif_ctrl_response) == 12);

static_assert(ring::ring_size<netif_tx_request, netif_tx_response>(ring::kPageSize) == 256);
static_assert(ring::ring_size<netif_rx_request, netif_rx_response>(ring::kPageSize) == 256);

}  // namespace pvio::netif
