// Every wire struct in ring/ has the size and field offsets of Debian's Xen public headers.
#include <gtest/gtest.h>

// Ours first: Xen defines its names as macros, which would rewrite our declarations.
#include "pvio/ring/ring.h"
#include "pvio/xen/io/blkif.h"
#include "pvio/xen/io/netif.h"

#include "xen_headers.h"


namespace {

namespace pb = pvio::blkif;
namespace pn = pvio::netif;

#define EXPECT_SAME_LAYOUT(ours, theirs, field) \
  EXPECT_EQ(offsetof(ours, field), offsetof(theirs, field)) << #field

TEST(InteropLayout, SharedRingHeader) {
  EXPECT_EQ(sizeof(pvio::ring::SringHeader), offsetof(struct blkif_sring, ring));
  EXPECT_SAME_LAYOUT(pvio::ring::SringHeader, struct blkif_sring, req_prod);
  EXPECT_SAME_LAYOUT(pvio::ring::SringHeader, struct blkif_sring, req_event);
  EXPECT_SAME_LAYOUT(pvio::ring::SringHeader, struct blkif_sring, rsp_prod);
  EXPECT_SAME_LAYOUT(pvio::ring::SringHeader, struct blkif_sring, rsp_event);
  EXPECT_EQ(offsetof(pvio::ring::SringHeader, pvt_pad), offsetof(struct blkif_sring, pvt));
  EXPECT_EQ(offsetof(pvio::ring::SringHeader, pad), offsetof(struct blkif_sring, __pad));
  EXPECT_EQ(sizeof(pvio::ring::SringEntry<pb::blkif_request, pb::blkif_response>),
            sizeof(union blkif_sring_entry));
}

TEST(InteropLayout, RingSizesForEveryPageOrder) {
  for (unsigned order = 0; order <= pvio::ring::kMaxRingPageOrder; ++order) {
    const std::size_t bytes = pvio::ring::ring_bytes(order);
    EXPECT_EQ((pvio::ring::ring_size<pb::blkif_request, pb::blkif_response>(bytes)),
              __CONST_RING_SIZE(blkif, bytes)) << "order " << order;
    EXPECT_EQ((pvio::ring::ring_size<pn::netif_tx_request, pn::netif_tx_response>(bytes)),
              __CONST_RING_SIZE(netif_tx, bytes)) << "order " << order;
    EXPECT_EQ((pvio::ring::ring_size<pn::netif_rx_request, pn::netif_rx_response>(bytes)),
              __CONST_RING_SIZE(netif_rx, bytes)) << "order " << order;
  }
}

TEST(InteropLayout, Blkif) {
  EXPECT_EQ(sizeof(pb::blkif_request_segment), sizeof(struct blkif_request_segment));
  EXPECT_SAME_LAYOUT(pb::blkif_request_segment, struct blkif_request_segment, gref);
  EXPECT_SAME_LAYOUT(pb::blkif_request_segment, struct blkif_request_segment, first_sect);
  EXPECT_SAME_LAYOUT(pb::blkif_request_segment, struct blkif_request_segment, last_sect);

  EXPECT_EQ(sizeof(pb::blkif_request), sizeof(struct blkif_request));
  EXPECT_SAME_LAYOUT(pb::blkif_request, struct blkif_request, operation);
  EXPECT_SAME_LAYOUT(pb::blkif_request, struct blkif_request, nr_segments);
  EXPECT_SAME_LAYOUT(pb::blkif_request, struct blkif_request, handle);
  EXPECT_SAME_LAYOUT(pb::blkif_request, struct blkif_request, id);
  EXPECT_SAME_LAYOUT(pb::blkif_request, struct blkif_request, sector_number);
  EXPECT_SAME_LAYOUT(pb::blkif_request, struct blkif_request, seg);

  EXPECT_EQ(sizeof(pb::blkif_request_discard), sizeof(struct blkif_request_discard));
  EXPECT_SAME_LAYOUT(pb::blkif_request_discard, struct blkif_request_discard, operation);
  EXPECT_SAME_LAYOUT(pb::blkif_request_discard, struct blkif_request_discard, flag);
  EXPECT_SAME_LAYOUT(pb::blkif_request_discard, struct blkif_request_discard, handle);
  EXPECT_SAME_LAYOUT(pb::blkif_request_discard, struct blkif_request_discard, id);
  EXPECT_SAME_LAYOUT(pb::blkif_request_discard, struct blkif_request_discard, sector_number);
  EXPECT_SAME_LAYOUT(pb::blkif_request_discard, struct blkif_request_discard, nr_sectors);

  EXPECT_EQ(sizeof(pb::blkif_request_indirect), sizeof(struct blkif_request_indirect));
  EXPECT_SAME_LAYOUT(pb::blkif_request_indirect, struct blkif_request_indirect, operation);
  EXPECT_SAME_LAYOUT(pb::blkif_request_indirect, struct blkif_request_indirect, indirect_op);
  EXPECT_SAME_LAYOUT(pb::blkif_request_indirect, struct blkif_request_indirect, nr_segments);
  EXPECT_SAME_LAYOUT(pb::blkif_request_indirect, struct blkif_request_indirect, id);
  EXPECT_SAME_LAYOUT(pb::blkif_request_indirect, struct blkif_request_indirect, sector_number);
  EXPECT_SAME_LAYOUT(pb::blkif_request_indirect, struct blkif_request_indirect, handle);
  EXPECT_SAME_LAYOUT(pb::blkif_request_indirect, struct blkif_request_indirect, indirect_grefs);

  EXPECT_EQ(sizeof(pb::blkif_response), sizeof(struct blkif_response));
  EXPECT_SAME_LAYOUT(pb::blkif_response, struct blkif_response, id);
  EXPECT_SAME_LAYOUT(pb::blkif_response, struct blkif_response, operation);
  EXPECT_SAME_LAYOUT(pb::blkif_response, struct blkif_response, status);
}

TEST(InteropLayout, BlkifConstants) {
  EXPECT_EQ(pb::kOpRead, BLKIF_OP_READ);
  EXPECT_EQ(pb::kOpWrite, BLKIF_OP_WRITE);
  EXPECT_EQ(pb::kOpWriteBarrier, BLKIF_OP_WRITE_BARRIER);
  EXPECT_EQ(pb::kOpFlushDiskcache, BLKIF_OP_FLUSH_DISKCACHE);
  EXPECT_EQ(pb::kOpReserved1, BLKIF_OP_RESERVED_1);
  EXPECT_EQ(pb::kOpDiscard, BLKIF_OP_DISCARD);
  EXPECT_EQ(pb::kOpIndirect, BLKIF_OP_INDIRECT);
  EXPECT_EQ(pb::kMaxSegmentsPerRequest, unsigned{BLKIF_MAX_SEGMENTS_PER_REQUEST});
  EXPECT_EQ(pb::kMaxIndirectPagesPerRequest, unsigned{BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST});
  EXPECT_EQ(pb::kDiscardSecure, BLKIF_DISCARD_SECURE);
  EXPECT_EQ(pb::kRspEopnotsupp, BLKIF_RSP_EOPNOTSUPP);
  EXPECT_EQ(pb::kRspError, BLKIF_RSP_ERROR);
  EXPECT_EQ(pb::kRspOkay, BLKIF_RSP_OKAY);
  EXPECT_EQ(pb::kVdiskCdrom, unsigned{VDISK_CDROM});
  EXPECT_EQ(pb::kVdiskRemovable, unsigned{VDISK_REMOVABLE});
  EXPECT_EQ(pb::kVdiskReadonly, unsigned{VDISK_READONLY});
}

TEST(InteropLayout, Netif) {
  EXPECT_EQ(sizeof(pn::netif_tx_request), sizeof(struct netif_tx_request));
  EXPECT_SAME_LAYOUT(pn::netif_tx_request, struct netif_tx_request, gref);
  EXPECT_SAME_LAYOUT(pn::netif_tx_request, struct netif_tx_request, offset);
  EXPECT_SAME_LAYOUT(pn::netif_tx_request, struct netif_tx_request, flags);
  EXPECT_SAME_LAYOUT(pn::netif_tx_request, struct netif_tx_request, id);
  EXPECT_SAME_LAYOUT(pn::netif_tx_request, struct netif_tx_request, size);

  EXPECT_EQ(sizeof(pn::netif_extra_info), sizeof(struct netif_extra_info));
  EXPECT_SAME_LAYOUT(pn::netif_extra_info, struct netif_extra_info, type);
  EXPECT_SAME_LAYOUT(pn::netif_extra_info, struct netif_extra_info, flags);
  EXPECT_SAME_LAYOUT(pn::netif_extra_info, struct netif_extra_info, u);
  EXPECT_SAME_LAYOUT(pn::netif_extra_info, struct netif_extra_info, u.gso.size);
  EXPECT_SAME_LAYOUT(pn::netif_extra_info, struct netif_extra_info, u.gso.type);
  EXPECT_SAME_LAYOUT(pn::netif_extra_info, struct netif_extra_info, u.gso.features);
  EXPECT_SAME_LAYOUT(pn::netif_extra_info, struct netif_extra_info, u.mcast.addr);
  EXPECT_SAME_LAYOUT(pn::netif_extra_info, struct netif_extra_info, u.hash.type);
  EXPECT_SAME_LAYOUT(pn::netif_extra_info, struct netif_extra_info, u.hash.algorithm);
  EXPECT_SAME_LAYOUT(pn::netif_extra_info, struct netif_extra_info, u.hash.value);

  EXPECT_EQ(sizeof(pn::netif_tx_response), sizeof(struct netif_tx_response));
  EXPECT_SAME_LAYOUT(pn::netif_tx_response, struct netif_tx_response, id);
  EXPECT_SAME_LAYOUT(pn::netif_tx_response, struct netif_tx_response, status);

  EXPECT_EQ(sizeof(pn::netif_rx_request), sizeof(struct netif_rx_request));
  EXPECT_SAME_LAYOUT(pn::netif_rx_request, struct netif_rx_request, id);
  EXPECT_SAME_LAYOUT(pn::netif_rx_request, struct netif_rx_request, gref);

  EXPECT_EQ(sizeof(pn::netif_rx_response), sizeof(struct netif_rx_response));
  EXPECT_SAME_LAYOUT(pn::netif_rx_response, struct netif_rx_response, id);
  EXPECT_SAME_LAYOUT(pn::netif_rx_response, struct netif_rx_response, offset);
  EXPECT_SAME_LAYOUT(pn::netif_rx_response, struct netif_rx_response, flags);
  EXPECT_SAME_LAYOUT(pn::netif_rx_response, struct netif_rx_response, status);
}

TEST(InteropLayout, NetifConstants) {
  EXPECT_EQ(pn::kTxfCsumBlank, NETTXF_csum_blank);
  EXPECT_EQ(pn::kTxfDataValidated, NETTXF_data_validated);
  EXPECT_EQ(pn::kTxfMoreData, NETTXF_more_data);
  EXPECT_EQ(pn::kTxfExtraInfo, NETTXF_extra_info);
  EXPECT_EQ(pn::kRxfDataValidated, NETRXF_data_validated);
  EXPECT_EQ(pn::kRxfCsumBlank, NETRXF_csum_blank);
  EXPECT_EQ(pn::kRxfMoreData, NETRXF_more_data);
  EXPECT_EQ(pn::kRxfExtraInfo, NETRXF_extra_info);
  EXPECT_EQ(pn::kRxfGsoPrefix, NETRXF_gso_prefix);
  EXPECT_EQ(pn::kMaxTxSize, unsigned{XEN_NETIF_MAX_TX_SIZE});
  EXPECT_EQ(pn::kNrSlotsMin, unsigned{XEN_NETIF_NR_SLOTS_MIN});
  EXPECT_EQ(pn::kExtraTypeNone, XEN_NETIF_EXTRA_TYPE_NONE);
  EXPECT_EQ(pn::kExtraTypeGso, XEN_NETIF_EXTRA_TYPE_GSO);
  EXPECT_EQ(pn::kExtraTypeMcastAdd, XEN_NETIF_EXTRA_TYPE_MCAST_ADD);
  EXPECT_EQ(pn::kExtraTypeMcastDel, XEN_NETIF_EXTRA_TYPE_MCAST_DEL);
  EXPECT_EQ(pn::kExtraTypeHash, XEN_NETIF_EXTRA_TYPE_HASH);
  EXPECT_EQ(pn::kExtraTypeMax, XEN_NETIF_EXTRA_TYPE_MAX);
  EXPECT_EQ(pn::kExtraFlagMore, XEN_NETIF_EXTRA_FLAG_MORE);
  EXPECT_EQ(pn::kGsoTypeNone, XEN_NETIF_GSO_TYPE_NONE);
  EXPECT_EQ(pn::kGsoTypeTcpv4, XEN_NETIF_GSO_TYPE_TCPV4);
  EXPECT_EQ(pn::kGsoTypeTcpv6, XEN_NETIF_GSO_TYPE_TCPV6);
  EXPECT_EQ(pn::kRspDropped, NETIF_RSP_DROPPED);
  EXPECT_EQ(pn::kRspError, NETIF_RSP_ERROR);
  EXPECT_EQ(pn::kRspOkay, NETIF_RSP_OKAY);
  EXPECT_EQ(pn::kRspNull, NETIF_RSP_NULL);
}

TEST(InteropLayout, NetifCtrl) {
  EXPECT_EQ(sizeof(pn::xen_netif_ctrl_request), sizeof(struct xen_netif_ctrl_request));
  EXPECT_SAME_LAYOUT(pn::xen_netif_ctrl_request, struct xen_netif_ctrl_request, id);
  EXPECT_SAME_LAYOUT(pn::xen_netif_ctrl_request, struct xen_netif_ctrl_request, type);
  EXPECT_SAME_LAYOUT(pn::xen_netif_ctrl_request, struct xen_netif_ctrl_request, data);
  EXPECT_EQ(sizeof(pn::xen_netif_ctrl_response), sizeof(struct xen_netif_ctrl_response));
  EXPECT_SAME_LAYOUT(pn::xen_netif_ctrl_response, struct xen_netif_ctrl_response, id);
  EXPECT_SAME_LAYOUT(pn::xen_netif_ctrl_response, struct xen_netif_ctrl_response, type);
  EXPECT_SAME_LAYOUT(pn::xen_netif_ctrl_response, struct xen_netif_ctrl_response, status);
  EXPECT_SAME_LAYOUT(pn::xen_netif_ctrl_response, struct xen_netif_ctrl_response, data);
  EXPECT_EQ((pvio::ring::ring_size<pn::xen_netif_ctrl_request, pn::xen_netif_ctrl_response>(4096)),
            __CONST_RING_SIZE(xen_netif_ctrl, 4096));
  EXPECT_EQ(pn::kCtrlTypeInvalid, XEN_NETIF_CTRL_TYPE_INVALID);
  EXPECT_EQ(pn::kCtrlTypeGetHashFlags, XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS);
  EXPECT_EQ(pn::kCtrlTypeSetHashFlags, XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS);
  EXPECT_EQ(pn::kCtrlTypeSetHashKey, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY);
  EXPECT_EQ(pn::kCtrlTypeGetHashMappingSize, XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE);
  EXPECT_EQ(pn::kCtrlTypeSetHashMappingSize, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE);
  EXPECT_EQ(pn::kCtrlTypeSetHashMapping, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING);
  EXPECT_EQ(pn::kCtrlTypeSetHashAlgorithm, XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM);
  EXPECT_EQ(pn::kCtrlTypeGetGrefMappingSize, XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE);
  EXPECT_EQ(pn::kCtrlTypeAddGrefMapping, XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING);
  EXPECT_EQ(pn::kCtrlTypeDelGrefMapping, XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING);
  EXPECT_EQ(pn::kCtrlStatusSuccess, unsigned{XEN_NETIF_CTRL_STATUS_SUCCESS});
  EXPECT_EQ(pn::kCtrlStatusNotSupported, unsigned{XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED});
  EXPECT_EQ(pn::kCtrlStatusInvalidParameter, unsigned{XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER});
  EXPECT_EQ(pn::kCtrlStatusBufferOverflow, unsigned{XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW});
  EXPECT_EQ(pn::kCtrlHashTypeIpv4, unsigned{XEN_NETIF_CTRL_HASH_TYPE_IPV4});
  EXPECT_EQ(pn::kCtrlHashTypeIpv4Tcp, unsigned{XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP});
  EXPECT_EQ(pn::kCtrlHashTypeIpv6, unsigned{XEN_NETIF_CTRL_HASH_TYPE_IPV6});
  EXPECT_EQ(pn::kCtrlHashTypeIpv6Tcp, unsigned{XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP});
  EXPECT_EQ(pn::kCtrlHashAlgorithmNone, unsigned{XEN_NETIF_CTRL_HASH_ALGORITHM_NONE});
  EXPECT_EQ(pn::kCtrlHashAlgorithmToeplitz, unsigned{XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ});
}

}  // namespace
