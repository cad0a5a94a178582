// The Xen HVM interface of one pvio-hv domain, served in user space: the hypercall page, the
// hypercalls PV drivers need (memory_op, grant_table_op, event_channel_op, hvm_op, sched_op,
// console_io, xen_version), the domain's event-channel port table, and the domain control
// protocol so Dom0 services (xenstored, blkback) attach to this VM as they attach to a
// user-mode domain.
//
// Xen pages: shared_info, the xenstore ring, the console ring and up to kMaxGrantFrames grant
// frames live in a reserved area of the domain's memfd, visible to the guest at kXenPagesGpa
// (like Xen's "special pages") and to Dom0 services as a second memory region. When the guest
// asks for one of them at a frame of its RAM (XENMEM_add_to_physmap), that frame is remapped
// onto the Xen page, so the guest, the VMM and Dom0 services all touch the same page while
// Dom0 keeps using the fixed gfn it got at attach time.
//
// Every hypercall argument struct is copied out of guest memory once, then validated; bad
// addresses give -EFAULT, bad values Xen's error codes, unknown calls -ENOSYS.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <time.h>

#include "pvio/control/dom0_ports.h"
#include "pvio/control/server.h"
#include "pvio/event_channel/notifier.h"
#include "pvio/event_channel/port_table.h"
#include "pvio/grant_table/guest_memory.h"
#include "pvio/hypervisor/domain.h"
#include "pvio/xen/xen.h"
#include "pvio/xen/memory.h"
#include "pvio/xen/grant_table.h"
#include "pvio/xen/event_channel.h"
#include "pvio/xen/hvm/params.h"
#include "pvio/xen/hvm/hvm_op.h"
#include "pvio/xen/hvm/start_info.h"
#include "pvio/xen/sched.h"
#include "pvio/xen/version.h"
#include "pvio/xen/arch-x86/cpuid.h"
#include "pvio/hv_abi/ports.h"

namespace pvio::hv {

// Guest-physical base of the Xen pages (below the IOAPIC, inside the 4 GiB identity map).
inline constexpr std::uint64_t kXenPagesGpa = 0xFD000000;
inline constexpr std::uint32_t kMaxGrantFrames = 32;
inline constexpr std::uint64_t kXenSharedInfoPage = 0;
inline constexpr std::uint64_t kXenStorePage = 1;
inline constexpr std::uint64_t kXenConsolePage = 2;
inline constexpr std::uint64_t kXenGrantFramePage0 = 3;
inline constexpr std::uint64_t kXenPageCount = kXenGrantFramePage0 + kMaxGrantFrames;
inline constexpr std::uint64_t kXenPagesBytes = kXenPageCount * 4096;
// The IOAPIC pin the upcall irqfd drives (unused by the PC devices pvio-hv models).
inline constexpr unsigned kUpcallGsi = 23;

// How event-channel upcalls reach vCPU 0 (HVM_PARAM_CALLBACK_IRQ, HVMOP_set_evtchn_upcall_vector).
// The upcall eventfd (what Dom0 services and pvio-hv signal after setting a pending bit) is a
// KVM irqfd; the route says where it points.
struct UpcallRoute {
  enum class Kind {
    kNone,            // nothing delivered
    kCallbackVector,  // Xen's callback vector: `vector`, no EOI expected from the guest
    kLapicVector,     // per-vCPU upcall vector: a LAPIC interrupt the guest EOIs
    kLevelGsi,        // GSI or PCI INTx callback: `gsi` asserted, level-triggered
  };
  Kind kind = Kind::kNone;
  std::uint8_t vector = 0;
  unsigned gsi = 0;
  // kLevelGsi: KVM signals this eventfd when the guest EOIs the line (irqfd resample); the
  // line is then low until the upcall eventfd is signalled again.
  int resample_fd = -1;
};

// What the Xen interface needs from the VM it serves. Implemented by Vm over KVM.
class XenHost {
 public:
  // Make guest frame `gfn` (in RAM) show Xen page `page`, or its own RAM again.
  virtual bool map_xen_page(std::uint64_t gfn, std::uint64_t page) = 0;
  virtual bool restore_ram_page(std::uint64_t gfn) = 0;
  // Register / remove the doorbell ioeventfd for `port`. 0 or -errno.
  // Both doorbells (PIO and, where KVM accepts it, MMIO) are registered. 0 or -errno (PIO's).
  virtual int set_doorbell(evtchn_port_t port, int eventfd, bool assign) = 0;
  // Guest-physical address of the MMIO doorbell (xen_abi.h), 0 when there is none.
  virtual std::uint64_t doorbell_mmio_gpa() const = 0;
  // Points the upcall eventfd's interrupts at `route` (vCPU 0). 0 or -errno.
  virtual int route_upcall(const UpcallRoute& route) = 0;
  virtual void shutdown(ShutdownReason reason, std::uint32_t code) = 0;

 protected:
  ~XenHost() = default;
};

// One hypercall as it arrived: number and Xen's 64-bit argument registers, plus how to turn a
// guest-virtual argument address into a guest-physical one (the vCPU's page tables).
struct HypercallArgs {
  unsigned nr = 0;
  std::uint64_t arg[5] = {};  // rdi, rsi, rdx, r10, r8
  std::function<bool(std::uint64_t gva, std::uint64_t* gpa)> translate;
};

struct XenStats {
  std::uint64_t hypercalls = 0;
  std::uint64_t hypercall_errors = 0;  // returned < 0
  std::uint64_t unknown_hypercalls = 0;
  std::uint64_t faults = 0;           // -EFAULT: argument outside guest memory
  std::uint64_t doorbell_exits = 0;   // PIO doorbell writes that did not match an ioeventfd
  std::uint64_t mmio_doorbell_exits = 0;  // MMIO doorbell stores that did not match one
  std::uint64_t msr_writes = 0;
  std::uint64_t upcalls_raised = 0;   // from the VMM side (hypercall sends, unmask)
  std::uint64_t upcall_resamples = 0;  // level callback EOIed (irqfd resample)
  std::uint64_t upcall_reasserts = 0;  // ... with vcpu_info[0].evtchn_upcall_pending still set
  std::uint64_t released_grants = 0;  // busy bits cleared for Dom0 services that died
  std::uint64_t polls_woken = 0;      // single-port SCHEDOP_polls ended by the port's raise
};

struct XenHvmConfig {
  domid_t domid = 1;
  unsigned vcpus = 1;
  std::uint64_t ram_bytes = 0;  // guest RAM at gpa 0 (the Xen pages follow it in the memfd)
};

class XenHvm final {
 public:
  // `memory`: the guest's memory as the VMM maps it (RAM and the Xen pages); `xen_pages`: the
  // host address of the Xen pages; `memfd` and `regions`: what ATTACH hands out; `upcall_fd`:
  // the eventfd whose signal KVM turns into the upcall interrupt (irqfd).
  XenHvm(const XenHvmConfig& config, const GuestMemory& memory, std::uint8_t* xen_pages,
         int memfd, std::span<const control::RegionDesc> regions, int upcall_fd, XenHost& host);
  ~XenHvm();
  XenHvm(const XenHvm&) = delete;
  XenHvm& operator=(const XenHvm&) = delete;

  // Result for RAX (>= 0 or -errno). Thread-safe (vCPU threads).
  std::int64_t hypercall(const HypercallArgs& call);
  // A doorbell write (port or MMIO store) KVM did not turn into an ioeventfd signal:
  // EVTCHNOP_send on `value`.
  void doorbell(std::uint32_t value, bool mmio = false);
  // WRMSR to kHypercallMsr: fill the hypercall page. False means the write faults (#GP).
  bool write_hypercall_msr(std::uint64_t value);
  // The guest's memory map (PVH boot: what hvm_start_info lists, returned by XENMEM_memory_map)
  // and the pages the VMM reserved inside RAM for it (counted by XENMEM_current_reservation).
  void set_memory_map(std::span<const xen::hvm_memmap_table_entry> map, std::uint64_t vmm_pages);
  // Starts the pvclock (vcpu_info[0].time: system time 0 = guest TSC `tsc` now) and the wall
  // clock in shared_info, and the one-shot timer behind set_timer_op / VIRQ_TIMER.
  void start_clock(std::uint64_t tsc, std::uint64_t tsc_khz, timespec mono, timespec real);
  // Hypercalls by name ("memory_op.add_to_physmap", "hvm_op.get_param.STORE_PFN", ...).
  std::map<std::string, std::uint64_t> op_counts() const;
  // The PV console: the ring page, the backend's kick (the guest sent on its console port),
  // and raising the guest's console port from the backend.
  std::uint8_t* console_page() const { return xen_pages_ + kXenConsolePage * 4096; }
  void set_console_kick(std::function<void()> kick) { console_kick_ = std::move(kick); }
  void notify_console_guest();
  // Where console_io writes go (the serial console).
  void set_console(std::function<void(const char*, std::size_t)> out) { console_ = std::move(out); }

  // Serves the domain control protocol on `socket_path` from a thread of its own. 0 or -errno.
  int serve(const std::string& socket_path);
  void stop_serving();

  XenStats stats() const;
  domid_t domid() const { return domid_; }
  std::uint64_t xen_gfn(std::uint64_t page) const { return (kXenPagesGpa >> 12) + page; }
  evtchn::shared_info* shared_info() const { return shared_info_; }
  evtchn_port_t xenstore_port() const { return xenstore_port_; }
  evtchn_port_t console_port() const { return console_port_; }

 private:
  // Copies `len` bytes at guest-virtual `gva` out of (or into) guest memory, page by page.
  bool copy_from_guest(const HypercallArgs& call, std::uint64_t gva, void* dst, std::size_t len);
  bool copy_to_guest(const HypercallArgs& call, std::uint64_t gva, const void* src,
                     std::size_t len);
  std::uint8_t* guest_range(const HypercallArgs& call, std::uint64_t gva, std::size_t len,
                            std::size_t* chunk);

  std::int64_t memory_op(const HypercallArgs& call);
  std::int64_t grant_table_op(const HypercallArgs& call);
  std::int64_t event_channel_op(const HypercallArgs& call);
  std::int64_t hvm_op(const HypercallArgs& call);
  std::int64_t set_callback_irq(std::uint64_t value);  // under mu_
  std::int64_t set_upcall_vector(const HypercallArgs& call);
  int apply_upcall_route();  // under mu_
  std::int64_t sched_op(const HypercallArgs& call);
  std::int64_t console_io(const HypercallArgs& call);
  std::int64_t xen_version(const HypercallArgs& call);
  std::int64_t set_timer_op(const HypercallArgs& call);
  std::int64_t sched_poll(const HypercallArgs& call);
  std::int64_t memory_map(const HypercallArgs& call);
  void count_op(const std::string& name);  // under mu_
  std::int64_t now_ns() const;             // system time (pvclock)
  void timer_loop();
  std::int64_t add_xen_page(std::uint64_t page, std::uint64_t gfn);
  void raise_upcall_if_pending();

  // What ATTACH hands out (control thread).
  control::DomainDescription describe();
  void serve_loop();

  domid_t domid_;
  std::uint64_t ram_pages_;
  const GuestMemory& memory_;
  std::uint8_t* xen_pages_;
  int memfd_;
  std::vector<control::RegionDesc> regions_;
  int upcall_fd_;
  XenHost& host_;
  evtchn::shared_info* shared_info_;
  std::function<void(const char*, std::size_t)> console_;
  std::function<void()> console_kick_;  // set before the vCPUs run

  mutable std::mutex mu_;  // everything below
  evtchn::UpcallNotifier upcall_;
  std::unique_ptr<evtchn::PortTable> ports_;
  evtchn_port_t xenstore_port_ = 0, console_port_ = 0;
  std::uint32_t nr_grant_frames_ = 0;
  std::uint64_t xen_page_gfn_[kXenPageCount];    // guest frame each Xen page is mapped at
  std::map<std::uint64_t, std::uint64_t> remapped_;  // RAM gfn -> Xen page shown there
  std::uint64_t callback_irq_ = 0;
  unsigned vcpus_ = 1;
  std::vector<std::uint8_t> upcall_vector_;  // HVMOP_set_evtchn_upcall_vector, per vCPU
  UpcallRoute route_;                        // where the upcall eventfd points now
  control::UniqueFd resample_fd_;            // irqfd resample of a level route
  std::vector<xen::hvm_memmap_table_entry> memmap_;
  std::uint64_t vmm_pages_ = 0;
  std::map<std::string, std::uint64_t> op_counts_;
  timespec clock_epoch_{};  // CLOCK_MONOTONIC at system time 0
  bool clock_started_ = false;
  control::UniqueFd timer_fd_;      // CLOCK_MONOTONIC timerfd behind set_timer_op
  control::UniqueFd timer_stop_fd_;
  std::thread timer_thread_;
  // The control server's backend; guest doorbells of bound ports go to the kick eventfds in KVM.
  std::unique_ptr<control::Dom0Ports> dom0_ports_;
  std::vector<std::uint64_t> attach_frames_;  // control thread only: describe()'s storage
  XenStats stats_;

  std::unique_ptr<control::ControlServer> server_;
  control::UniqueFd stop_fd_;
  std::thread server_thread_;
};

}  // namespace pvio::hv
