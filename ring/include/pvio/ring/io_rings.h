// The ring types of each split-driver protocol (Xen's DEFINE_RING_TYPES for blkif and netif):
// FrontRing/BackRing over the wire structs of pvio/xen/io/{blkif,netif}.h.
#pragma once

#include "pvio/ring/ring.h"
#include "pvio/xen/io/blkif.h"
#include "pvio/xen/io/netif.h"

namespace pvio::blkif {
using FrontRing = ring::FrontRing<blkif_request, blkif_response>;
using BackRing = ring::BackRing<blkif_request, blkif_response>;
// A 64-bit backend serving a frontend that wrote protocol = x86_32-abi.
using BackRingX86_32 = ring::BackRing<blkif_x86_32_request, blkif_x86_32_response>;
using FrontRingX86_32 = ring::FrontRing<blkif_x86_32_request, blkif_x86_32_response>;
}  // namespace pvio::blkif

namespace pvio::netif {
using TxFrontRing = ring::FrontRing<netif_tx_request, netif_tx_response>;
using TxBackRing = ring::BackRing<netif_tx_request, netif_tx_response>;
using RxFrontRing = ring::FrontRing<netif_rx_request, netif_rx_response>;
using RxBackRing = ring::BackRing<netif_rx_request, netif_rx_response>;
using CtrlFrontRing = ring::FrontRing<xen_netif_ctrl_request, xen_netif_ctrl_response>;
using CtrlBackRing = ring::BackRing<xen_netif_ctrl_request, xen_netif_ctrl_response>;
}  // namespace pvio::netif
