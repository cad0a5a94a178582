// Xen's shared_info / vcpu_info pages (x86-64 layout of public xen.h and arch-x86/xen.h): the
// page where the 2-level event-channel ABI keeps its pending, mask and selector bits.
// Freestanding: layout only.
#pragma once

#include <cstddef>
#include <cstdint>

#include "pvio/ring/xen_types.h"

namespace pvio::evtchn {

using xen_ulong_t = std::uint64_t;  // unsigned long on x86-64

inline constexpr unsigned kLegacyMaxVcpus = 32;                     // XEN_LEGACY_MAX_VCPUS
inline constexpr unsigned kBitsPerWord = sizeof(xen_ulong_t) * 8;   // BITS_PER_EVTCHN_WORD
// EVTCHN_2L_NR_CHANNELS: one selector bit per pending word, one pending bit per port.
inline constexpr unsigned kNrEventChannels = kBitsPerWord * kBitsPerWord;  // 4096

// EVTCHNOP_* numbers (event_channel.h), used by the hypervisor dispatch and in docs.
inline constexpr unsigned kEvtchnOpBindInterdomain = 0;
inline constexpr unsigned kEvtchnOpClose = 3;
inline constexpr unsigned kEvtchnOpSend = 4;
inline constexpr unsigned kEvtchnOpStatus = 5;
inline constexpr unsigned kEvtchnOpAllocUnbound = 6;
inline constexpr unsigned kEvtchnOpUnmask = 9;

// EVTCHNSTAT_* values reported by EVTCHNOP_status (kEvtchnStatX is EVTCHNSTAT_x).
inline constexpr std::uint32_t kEvtchnStatClosed = 0;
inline constexpr std::uint32_t kEvtchnStatUnbound = 1;
inline constexpr std::uint32_t kEvtchnStatInterdomain = 2;
inline constexpr std::uint32_t kEvtchnStatPirq = 3;
inline constexpr std::uint32_t kEvtchnStatVirq = 4;
inline constexpr std::uint32_t kEvtchnStatIpi = 5;

struct arch_vcpu_info {
  std::uint64_t cr2;
  std::uint64_t pad;
};

struct vcpu_time_info {
  std::uint32_t version;
  std::uint32_t pad0;
  std::uint64_t tsc_timestamp;
  std::uint64_t system_time;
  std::uint32_t tsc_to_system_mul;
  std::int8_t tsc_shift;
  std::uint8_t flags;
  std::uint8_t pad1[2];
};

struct vcpu_info {
  std::uint8_t evtchn_upcall_pending;
  std::uint8_t evtchn_upcall_mask;
  xen_ulong_t evtchn_pending_sel;
  arch_vcpu_info arch;
  vcpu_time_info time;
};

struct arch_shared_info {
  std::uint64_t max_pfn;
  std::uint64_t pfn_to_mfn_frame_list_list;
  std::uint64_t nmi_reason;
  std::uint64_t p2m_cr3;
  std::uint64_t p2m_vaddr;
  std::uint64_t p2m_generation;
};

struct shared_info {
  struct vcpu_info vcpu_info[kLegacyMaxVcpus];
  xen_ulong_t evtchn_pending[kBitsPerWord];
  xen_ulong_t evtchn_mask[kBitsPerWord];
  std::uint32_t wc_version;
  std::uint32_t wc_sec;
  std::uint32_t wc_nsec;
  std::uint32_t wc_sec_hi;
  arch_shared_info arch;
};

static_assert(sizeof(vcpu_time_info) == 32);
static_assert(sizeof(vcpu_info) == 64);  // "64 bytes (x86)", xen.h
static_assert(offsetof(vcpu_info, evtchn_pending_sel) == 8);
static_assert(offsetof(vcpu_info, arch) == 16);
static_assert(offsetof(vcpu_info, time) == 32);
static_assert(offsetof(shared_info, evtchn_pending) == 2048);
static_assert(offsetof(shared_info, evtchn_mask) == 2560);
static_assert(offsetof(shared_info, wc_version) == 3072);
static_assert(offsetof(shared_info, arch) == 3088);
static_assert(sizeof(shared_info) <= 4096, "shared_info must fit its page");

}  // namespace pvio::evtchn
