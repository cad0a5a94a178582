// shared_info / vcpu_info and the event-channel constants against Debian's Xen headers.
#include <gtest/gtest.h>

// Ours first: Xen defines its names as macros, which would rewrite our declarations.
#include "pvio/xen/event_channel.h"
#include "pvio/xen/xen.h"

#include "xen_headers.h"

#include <xen/event_channel.h>

namespace {

namespace ev = pvio::evtchn;
namespace px = pvio::xen;

#define EXPECT_SAME_LAYOUT(ours, theirs, field) \
  EXPECT_EQ(offsetof(ours, field), offsetof(theirs, field)) << #field

TEST(InteropEvtchnLayout, VcpuInfo) {
  EXPECT_EQ(sizeof(ev::vcpu_info), sizeof(struct vcpu_info));
  EXPECT_SAME_LAYOUT(ev::vcpu_info, struct vcpu_info, evtchn_upcall_pending);
  EXPECT_EQ(offsetof(ev::vcpu_info, evtchn_upcall_mask), 1u);
  EXPECT_SAME_LAYOUT(ev::vcpu_info, struct vcpu_info, evtchn_pending_sel);
  EXPECT_SAME_LAYOUT(ev::vcpu_info, struct vcpu_info, arch);
  EXPECT_SAME_LAYOUT(ev::vcpu_info, struct vcpu_info, time);
  EXPECT_EQ(sizeof(px::arch_vcpu_info), sizeof(struct arch_vcpu_info));
  EXPECT_EQ(sizeof(px::vcpu_time_info), sizeof(struct vcpu_time_info));
  EXPECT_SAME_LAYOUT(px::vcpu_time_info, struct vcpu_time_info, tsc_to_system_mul);
  EXPECT_SAME_LAYOUT(px::vcpu_time_info, struct vcpu_time_info, tsc_shift);
  EXPECT_SAME_LAYOUT(px::vcpu_time_info, struct vcpu_time_info, flags);
}

TEST(InteropEvtchnLayout, SharedInfo) {
  EXPECT_EQ(sizeof(ev::shared_info), sizeof(struct shared_info));
  EXPECT_EQ(ev::kLegacyMaxVcpus, unsigned{XEN_LEGACY_MAX_VCPUS});
  EXPECT_SAME_LAYOUT(ev::shared_info, struct shared_info, vcpu_info);
  EXPECT_SAME_LAYOUT(ev::shared_info, struct shared_info, evtchn_pending);
  EXPECT_SAME_LAYOUT(ev::shared_info, struct shared_info, evtchn_mask);
  EXPECT_SAME_LAYOUT(ev::shared_info, struct shared_info, wc_version);
  EXPECT_SAME_LAYOUT(ev::shared_info, struct shared_info, wc_sec);
  EXPECT_SAME_LAYOUT(ev::shared_info, struct shared_info, wc_nsec);
  EXPECT_SAME_LAYOUT(ev::shared_info, struct shared_info, wc_sec_hi);
  EXPECT_SAME_LAYOUT(ev::shared_info, struct shared_info, arch);
  EXPECT_EQ(sizeof(px::arch_shared_info), sizeof(struct arch_shared_info));
  EXPECT_EQ(sizeof(((ev::shared_info*)nullptr)->evtchn_pending),
            sizeof(((struct shared_info*)nullptr)->evtchn_pending));
}

TEST(InteropEvtchnLayout, Constants) {
  EXPECT_EQ(ev::kNrEventChannels, unsigned{EVTCHN_2L_NR_CHANNELS});
  EXPECT_EQ(ev::kEvtchnOpBindInterdomain, unsigned{EVTCHNOP_bind_interdomain});
  EXPECT_EQ(ev::kEvtchnOpClose, unsigned{EVTCHNOP_close});
  EXPECT_EQ(ev::kEvtchnOpSend, unsigned{EVTCHNOP_send});
  EXPECT_EQ(ev::kEvtchnOpStatus, unsigned{EVTCHNOP_status});
  EXPECT_EQ(ev::kEvtchnOpAllocUnbound, unsigned{EVTCHNOP_alloc_unbound});
  EXPECT_EQ(ev::kEvtchnOpUnmask, unsigned{EVTCHNOP_unmask});
  EXPECT_EQ(ev::kEvtchnStatClosed, 0u + EVTCHNSTAT_closed);
  EXPECT_EQ(ev::kEvtchnStatUnbound, 0u + EVTCHNSTAT_unbound);
  EXPECT_EQ(ev::kEvtchnStatInterdomain, 0u + EVTCHNSTAT_interdomain);
  EXPECT_EQ(ev::kEvtchnStatIpi, 0u + EVTCHNSTAT_ipi);
  EXPECT_EQ(sizeof(pvio::evtchn_port_t), sizeof(evtchn_port_t));
}

}  // namespace
