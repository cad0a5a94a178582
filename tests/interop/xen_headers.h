// Include Debian's Xen public I/O headers with the barrier macros ring.h expects from its
// user, defined the way our ring implements them, so Xen's macros run as a real peer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#define __XEN_INTERFACE_VERSION__ 0x00040e00
#define xen_mb() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#define xen_rmb() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define xen_wmb() __atomic_thread_fence(__ATOMIC_RELEASE)

#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/io/ring.h>
#include <xen/io/blkif.h>
#include <xen/io/netif.h>
