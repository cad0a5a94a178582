// Every pvio Xen ABI header, included before Xen's: Xen spells many of the same names as
// macros, which would rewrite our declarations if they came first.
#pragma once

#include "pvio/xen/arch-x86/cpuid.h"
#include "pvio/xen/event_channel.h"
#include "pvio/xen/grant_table.h"
#include "pvio/xen/hvm/hvm_op.h"
#include "pvio/xen/hvm/params.h"
#include "pvio/xen/hvm/pvdrivers.h"
#include "pvio/xen/hvm/start_info.h"
#include "pvio/xen/io/blkif.h"
#include "pvio/xen/io/console.h"
#include "pvio/xen/io/netif.h"
#include "pvio/xen/io/ring.h"
#include "pvio/xen/io/xenbus.h"
#include "pvio/xen/io/xs_wire.h"
#include "pvio/xen/memory.h"
#include "pvio/xen/sched.h"
#include "pvio/xen/version.h"
#include "pvio/xen/xen.h"

// Names for the checks where a template argument list would split a macro argument.
namespace pvio_abi_check {
using blkif_sring_entry =
    pvio::ring::SringEntry<pvio::blkif::blkif_request, pvio::blkif::blkif_response>;
}  // namespace pvio_abi_check
