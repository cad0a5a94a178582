// Xen hypercalls, Xen pages and the domain control protocol of a pvio-hv domain.
#include "pvio/hypervisor/xen_hvm.h"

#include <poll.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "pvio/event_channel/two_level.h"
#include "pvio/grant_table/grant_table.h"
#include "pvio/hypervisor/devices/xen_platform.h"
#include "pvio/xen/grant_table.h"

namespace pvio::hv {

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::size_t kConsoleChunk = 256;
constexpr std::uint64_t kConsoleMaxWrite = 1u << 20;
// SCHEDOP_block returns after this long without an event (a spurious wake-up, which Xen's
// guests handle by re-checking their condition).
constexpr unsigned kBlockMaxPolls = 200;

constexpr std::uint32_t kMaxPollPorts = 128;
// SCHEDOP_poll on one port sleeps until a sender wakes it, the guest's timeout, or this long
// (an early return is allowed: the guest re-checks; it also bounds a domain's teardown).
constexpr std::int64_t kPollMaxWaitNs = 100'000'000;
// GSIs a callback may name: the in-kernel IOAPIC's pins (GSI 0 means "no callback").
constexpr std::uint64_t kIoapicPins = 24;
// Above-RAM frames a guest may put a Xen page at: up to the 32-bit PCI hole (vm.cc).
constexpr std::uint64_t kHighXenPageLimitGfn = 0xC0000000 >> 12;

void sleep_us(long us) {
  timespec ts{0, us * 1000};
  ::nanosleep(&ts, nullptr);
}

std::int64_t ns_of(const timespec& t) {
  return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

// The pvclock scale (xen.h, vcpu_time_info): ns = ((tsc_delta << shift) * mul) >> 32, with
// shift chosen so that mul lies in [2^31, 2^32).
void tsc_scale(std::uint64_t tsc_hz, std::uint32_t* mul, std::int8_t* shift) {
  int s = 0;
  std::uint64_t hz = tsc_hz;
  while (hz > 2000000000ull) { hz >>= 1; --s; }
  while (hz <= 1000000000ull) { hz <<= 1; ++s; }
  *mul = static_cast<std::uint32_t>((1000000000ull << 32) / hz);
  *shift = static_cast<std::int8_t>(s);
}

const char* hypercall_name(unsigned nr) {
  switch (nr) {
    case xen::kHypercallSetTimerOp: return "set_timer_op";
    case xen::kHypercallMemoryOp: return "memory_op";
    case xen::kHypercallXenVersion: return "xen_version";
    case xen::kHypercallConsoleIo: return "console_io";
    case xen::kHypercallGrantTableOp: return "grant_table_op";
    case xen::kHypercallVcpuOp: return "vcpu_op";
    case xen::kHypercallSchedOp: return "sched_op";
    case xen::kHypercallEventChannelOp: return "event_channel_op";
    case xen::kHypercallPhysdevOp: return "physdev_op";
    case xen::kHypercallHvmOp: return "hvm_op";
    default: return nullptr;
  }
}

// Sub-op names of the calls that have them, in Xen's words.
std::string sub_op_name(unsigned nr, std::uint64_t cmd) {
  static const char* const memory[] = {"increase_reservation", "decrease_reservation",
                                       "maximum_ram_page", "current_reservation",
                                       "maximum_reservation", "", "", "add_to_physmap", "",
                                       "memory_map"};
  static const char* const evtchn[] = {"bind_interdomain", "bind_virq", "bind_pirq", "close",
                                       "send", "status", "alloc_unbound", "bind_ipi",
                                       "bind_vcpu", "unmask"};
  static const char* const sched[] = {"yield", "block", "shutdown", "poll"};
  static const char* const version[] = {"version", "extraversion", "compile_info",
                                        "capabilities", "changeset", "platform_parameters",
                                        "get_features", "pagesize"};
  static const char* const gnttab[] = {"map_grant_ref", "unmap_grant_ref", "setup_table",
                                       "dump_table", "transfer", "copy", "query_size"};
  static const char* const console[] = {"write", "read"};
  auto pick = [cmd](const char* const* names, std::size_t n) -> std::string {
    if (cmd < n && names[cmd][0] != 0) return names[cmd];
    return std::to_string(cmd);
  };
  switch (nr) {
    case xen::kHypercallMemoryOp: return pick(memory, std::size(memory));
    case xen::kHypercallEventChannelOp: return pick(evtchn, std::size(evtchn));
    case xen::kHypercallSchedOp: return pick(sched, std::size(sched));
    case xen::kHypercallXenVersion: return pick(version, std::size(version));
    case xen::kHypercallGrantTableOp: return pick(gnttab, std::size(gnttab));
    case xen::kHypercallConsoleIo: return pick(console, std::size(console));
    case xen::kHypercallHvmOp:
      return cmd == xen::HVMOP_set_param ? "set_param"
             : cmd == xen::HVMOP_get_param ? "get_param"
             : cmd == xen::HVMOP_set_evtchn_upcall_vector ? "set_evtchn_upcall_vector"
                                                          : std::to_string(cmd);
    default: return "";
  }
}

const char* param_name(std::uint32_t index) {
  switch (index) {
    case xen::HVM_PARAM_CALLBACK_IRQ: return "CALLBACK_IRQ";
    case xen::HVM_PARAM_STORE_PFN: return "STORE_PFN";
    case xen::HVM_PARAM_STORE_EVTCHN: return "STORE_EVTCHN";
    case xen::HVM_PARAM_CONSOLE_PFN: return "CONSOLE_PFN";
    case xen::HVM_PARAM_CONSOLE_EVTCHN: return "CONSOLE_EVTCHN";
    default: return nullptr;
  }
}

}  // namespace

XenHvm::XenHvm(const XenHvmConfig& config, const GuestMemory& memory, std::uint8_t* xen_pages,
               int memfd, std::span<const control::RegionDesc> regions, int upcall_fd,
               XenHost& host)
    : domid_(config.domid),
      ram_pages_(config.ram_bytes / kPage),
      memory_(memory),
      xen_pages_(xen_pages),
      memfd_(memfd),
      regions_(regions.begin(), regions.end()),
      upcall_fd_(upcall_fd),
      host_(host),
      shared_info_(reinterpret_cast<evtchn::shared_info*>(xen_pages)),
      upcall_(reinterpret_cast<evtchn::shared_info*>(xen_pages), upcall_fd, /*wake_pollers=*/true) {
  vcpus_ = config.vcpus == 0 ? 1 : config.vcpus;
  upcall_vector_.assign(vcpus_, 0);
  resample_fd_.reset(evtchn::eventfd_create(true));
  for (std::uint64_t p = 0; p < kXenPageCount; ++p) xen_page_gfn_[p] = xen_gfn(p);
  ports_ = std::make_unique<evtchn::PortTable>(domid_, shared_info_, &upcall_);
  // The guest's doorbell write with a bound port signals the kick eventfd inside KVM. If KVM
  // refuses, the write exits to us and doorbell() delivers through the same eventfd.
  dom0_ports_ = std::make_unique<control::Dom0Ports>(
      mu_, *ports_, [this] { return describe(); },
      [this](evtchn_port_t guest_port, int kick_fd, bool assign) {
        host_.set_doorbell(guest_port, kick_fd, assign);
      });
  // A Dom0 service killed while it mapped the guest's grants never unmaps them: release the
  // busy bits it left once its control connection drops (as Xen does for a dead mapper), or
  // the guest's frontends could never end those grants. Called with mu_ held.
  // Every Dom0 service is domain 0: the dead service's maptrack page says which bits were its
  // own; bits another attached service also holds stay.
  dom0_ports_->on_dropped([this](const gnttab::Maptrack& dead,
                                 std::span<const gnttab::Maptrack> live) {
    const std::uint32_t n = gnttab::release_dead_mapper(
        dead, live, 0, [this](grant_ref_t ref) -> gnttab::grant_entry_v1* {
          if (ref / gnttab::kEntriesPerFrame >= nr_grant_frames_) return nullptr;
          return reinterpret_cast<gnttab::grant_entry_v1*>(
                     xen_pages_ + (kXenGrantFramePage0 + ref / gnttab::kEntriesPerFrame) * kPage) +
                 ref % gnttab::kEntriesPerFrame;
        });
    stats_.released_grants += n;
  });
  // As Xen's toolstack does at domain build: the store and console ports, unbound for Dom0.
  xenstore_port_ = ports_->alloc_unbound(0).port;
  console_port_ = ports_->alloc_unbound(0).port;
  // ... and the reserved grant entries for the console and xenstore pages (xc_dom_gnttab_seed).
  auto* frame0 = reinterpret_cast<gnttab::grant_entry_v1*>(xen_pages_ + kXenGrantFramePage0 * kPage);
  frame0[gnttab::GNTTAB_RESERVED_CONSOLE] = {gnttab::GTF_permit_access, 0,
                                             static_cast<std::uint32_t>(xen_gfn(kXenConsolePage))};
  frame0[gnttab::GNTTAB_RESERVED_XENSTORE] = {gnttab::GTF_permit_access, 0,
                                              static_cast<std::uint32_t>(xen_gfn(kXenStorePage))};
  nr_grant_frames_ = 1;
  timer_fd_.reset(::timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK));
  timer_stop_fd_.reset(evtchn::eventfd_create(true));
  if (timer_fd_ && timer_stop_fd_) timer_thread_ = std::thread([this] { timer_loop(); });
}

XenHvm::~XenHvm() {
  stop_serving();
  if (timer_thread_.joinable()) {
    evtchn::eventfd_signal(timer_stop_fd_.get());
    timer_thread_.join();
  }
  std::lock_guard lk(mu_);
  dom0_ports_.reset();
  ports_.reset();
}

XenStats XenHvm::stats() const {
  std::lock_guard lk(mu_);
  return stats_;
}

// ---- guest memory access ----

std::uint8_t* XenHvm::guest_range(const HypercallArgs& call, std::uint64_t gva, std::size_t len,
                                  std::size_t* chunk) {
  const std::uint64_t room = kPage - (gva & (kPage - 1));
  *chunk = len < room ? len : static_cast<std::size_t>(room);
  std::uint64_t gpa = gva;
  if (call.translate && !call.translate(gva, &gpa)) return nullptr;
  return memory_.range(gpa, *chunk);
}

bool XenHvm::copy_from_guest(const HypercallArgs& call, std::uint64_t gva, void* dst,
                             std::size_t len) {
  auto* out = static_cast<std::uint8_t*>(dst);
  while (len > 0) {
    std::size_t n = 0;
    const std::uint8_t* p = guest_range(call, gva, len, &n);
    if (p == nullptr) return false;
    std::memcpy(out, p, n);
    out += n;
    gva += n;
    len -= n;
  }
  return true;
}

bool XenHvm::copy_to_guest(const HypercallArgs& call, std::uint64_t gva, const void* src,
                           std::size_t len) {
  const auto* in = static_cast<const std::uint8_t*>(src);
  while (len > 0) {
    std::size_t n = 0;
    std::uint8_t* p = guest_range(call, gva, len, &n);
    if (p == nullptr) return false;
    std::memcpy(p, in, n);
    in += n;
    gva += n;
    len -= n;
  }
  return true;
}

namespace {
// A guest may name itself as DOMID_SELF or by its domid; Dom0 exists but is not its to touch.
std::int64_t check_self(std::uint16_t dom, domid_t self) {
  if (dom == xen::DOMID_SELF || dom == self) return 0;
  return dom == 0 ? -xen::XEN_EPERM : -xen::XEN_ESRCH;
}
}  // namespace

// ---- dispatch ----

std::int64_t XenHvm::hypercall(const HypercallArgs& call) {
  std::int64_t rc;
  switch (call.nr) {
    case xen::kHypercallMemoryOp: rc = memory_op(call); break;
    case xen::kHypercallGrantTableOp: rc = grant_table_op(call); break;
    case xen::kHypercallEventChannelOp: rc = event_channel_op(call); break;
    case xen::kHypercallHvmOp: rc = hvm_op(call); break;
    case xen::kHypercallSchedOp: rc = sched_op(call); break;
    case xen::kHypercallConsoleIo: rc = console_io(call); break;
    case xen::kHypercallXenVersion: rc = xen_version(call); break;
    case xen::kHypercallSetTimerOp: rc = set_timer_op(call); break;
    default: rc = -xen::XEN_ENOSYS; break;
  }
  std::lock_guard lk(mu_);
  const bool param_op = call.nr == xen::kHypercallHvmOp && (call.arg[0] == xen::HVMOP_get_param ||
                                                            call.arg[0] == xen::HVMOP_set_param);
  if (param_op) {
    // hvm_op() counted it under the parameter's name once the argument was read.
  } else if (const char* name = hypercall_name(call.nr)) {
    const std::string sub = sub_op_name(call.nr, call.arg[0]);
    count_op(sub.empty() ? std::string(name) : std::string(name) + "." + sub);
  } else {
    count_op("unknown." + std::to_string(call.nr));
  }
  ++stats_.hypercalls;
  if (rc < 0) ++stats_.hypercall_errors;
  if (rc == -xen::XEN_EFAULT) ++stats_.faults;
  if (rc == -xen::XEN_ENOSYS) ++stats_.unknown_hypercalls;
  return rc;
}

bool XenHvm::write_hypercall_msr(std::uint64_t value) {
  // Low 12 bits select the page of a multi-page hypercall area; there is one page.
  if ((value & (kPage - 1)) >= hv::kHypercallPages) return false;
  std::uint8_t* page = memory_.range(value & ~(kPage - 1), kPage);
  if (page == nullptr) return false;
  for (std::uint32_t nr = 0; nr < hv::kHypercallEntries; ++nr) {
    std::uint8_t* s = page + nr * hv::kHypercallStubSize;
    std::memset(s, 0xcc, hv::kHypercallStubSize);  // int3 padding
    s[0] = 0xb8;                                     // mov $nr, %eax
    std::memcpy(s + 1, &nr, 4);
    s[5] = 0xe7;                                     // out %eax, $port
    s[6] = static_cast<std::uint8_t>(hv::kHypercallPort);
    s[7] = 0xc3;                                     // ret
  }
  std::lock_guard lk(mu_);
  ++stats_.msr_writes;
  return true;
}

void XenHvm::doorbell(std::uint32_t value, bool mmio) {
  {
    std::lock_guard lk(mu_);
    ++(mmio ? stats_.mmio_doorbell_exits : stats_.doorbell_exits);
    ports_->send(value);  // invalid ports are ignored, as a send to them would fail
  }
  if (value == console_port_ && console_kick_) console_kick_();
}

void XenHvm::notify_console_guest() {
  std::lock_guard lk(mu_);
  upcall_.notify(console_port_);
}

void XenHvm::raise_upcall_if_pending() {
  if (std::atomic_ref<std::uint8_t>(shared_info_->vcpu_info[0].evtchn_upcall_pending).load() != 0) {
    evtchn::eventfd_signal(upcall_fd_);
    ++stats_.upcalls_raised;
  }
}

void XenHvm::count_op(const std::string& name) { ++op_counts_[name]; }

std::map<std::string, std::uint64_t> XenHvm::op_counts() const {
  std::lock_guard lk(mu_);
  return op_counts_;
}

// ---- memory_op ----

void XenHvm::set_memory_map(std::span<const xen::hvm_memmap_table_entry> map,
                            std::uint64_t vmm_pages) {
  std::lock_guard lk(mu_);
  memmap_.assign(map.begin(), map.end());
  vmm_pages_ = vmm_pages;
}

std::int64_t XenHvm::memory_map(const HypercallArgs& call) {
  xen::xen_memory_map m;
  if (!copy_from_guest(call, call.arg[1], &m, sizeof(m))) return -xen::XEN_EFAULT;
  std::vector<xen::e820entry> entries;
  {
    std::lock_guard lk(mu_);
    for (const auto& e : memmap_) entries.push_back({e.addr, e.size, e.type});
  }
  if (entries.empty()) {  // pvio's own guests: RAM and the Xen pages
    entries.push_back({0, ram_pages_ * kPage, xen::XEN_HVM_MEMMAP_TYPE_RAM});
    entries.push_back({kXenPagesGpa, kXenPagesBytes, xen::XEN_HVM_MEMMAP_TYPE_RESERVED});
  }
  // Xen: a buffer too small for the map is an error, not a truncation.
  if (m.nr_entries < entries.size()) return -xen::XEN_EINVAL;
  if (!copy_to_guest(call, m.buffer, entries.data(), entries.size() * sizeof(xen::e820entry)))
    return -xen::XEN_EFAULT;
  m.nr_entries = static_cast<std::uint32_t>(entries.size());
  return copy_to_guest(call, call.arg[1], &m.nr_entries, sizeof(m.nr_entries)) ? 0
                                                                               : -xen::XEN_EFAULT;
}

std::int64_t XenHvm::memory_op(const HypercallArgs& call) {
  if (call.arg[0] == xen::XENMEM_memory_map) return memory_map(call);
  if (call.arg[0] == xen::XENMEM_current_reservation) {
    domid_t dom;
    if (!copy_from_guest(call, call.arg[1], &dom, sizeof(dom))) return -xen::XEN_EFAULT;
    if (const std::int64_t rc = check_self(dom, domid_); rc != 0) return rc;
    // The domain's pages: RAM (with the VMM's start-info pages in it) and the Xen pages, as
    // Xen counts a PVH guest's special pages in its reservation.
    return static_cast<std::int64_t>(ram_pages_ + kXenPageCount);
  }
  if (call.arg[0] != xen::XENMEM_add_to_physmap) return -xen::XEN_ENOSYS;
  xen::xen_add_to_physmap x;
  if (!copy_from_guest(call, call.arg[1], &x, sizeof(x))) return -xen::XEN_EFAULT;
  if (const std::int64_t rc = check_self(x.domid, domid_); rc != 0) return rc;
  std::lock_guard lk(mu_);
  switch (x.space) {
    case xen::XENMAPSPACE_shared_info:
      if (x.idx != 0) return -xen::XEN_EINVAL;
      return add_xen_page(kXenSharedInfoPage, x.gpfn);
    case xen::XENMAPSPACE_grant_table: {
      // v1 tables only: there are no status frames.
      if ((x.idx & xen::XENMAPIDX_grant_table_status) != 0 || x.idx >= kMaxGrantFrames)
        return -xen::XEN_EINVAL;
      const std::int64_t rc = add_xen_page(kXenGrantFramePage0 + x.idx, x.gpfn);
      if (rc == 0)
        nr_grant_frames_ = std::max(nr_grant_frames_, static_cast<std::uint32_t>(x.idx + 1));
      return rc;
    }
    default:
      return -xen::XEN_ENOSYS;
  }
}

std::int64_t XenHvm::add_xen_page(std::uint64_t page, std::uint64_t gfn) {
  const std::uint64_t home = xen_gfn(page);
  // RAM frames are remapped; frames above RAM up to the PCI hole get a page of their own.
  if (gfn != home && gfn >= kHighXenPageLimitGfn) return -xen::XEN_EINVAL;
  // Xen moves the page: the frame where it was shown before gets its RAM back.
  const std::uint64_t old = xen_page_gfn_[page];
  if (old != home && old != gfn) {
    host_.restore_ram_page(old);
    remapped_.erase(old);
  }
  if (gfn == home) {
    xen_page_gfn_[page] = home;
    return 0;
  }
  if (!host_.map_xen_page(gfn, page)) {
    xen_page_gfn_[page] = home;
    return -xen::XEN_EINVAL;
  }
  if (auto it = remapped_.find(gfn); it != remapped_.end() && it->second != page)
    xen_page_gfn_[it->second] = xen_gfn(it->second);  // replaced: still visible at home
  remapped_[gfn] = page;
  xen_page_gfn_[page] = gfn;
  return 0;
}

// ---- grant_table_op ----

std::int64_t XenHvm::grant_table_op(const HypercallArgs& call) {
  const std::uint64_t cmd = call.arg[0], uop = call.arg[1], count = call.arg[2];
  switch (cmd) {
    case gnttab::GNTTABOP_query_size: {
      if (count != 1) return -xen::XEN_EINVAL;
      gnttab::gnttab_query_size q;
      if (!copy_from_guest(call, uop, &q, sizeof(q))) return -xen::XEN_EFAULT;
      if (check_self(q.dom, domid_) != 0) {
        q.status = gnttab::GNTST_bad_domain;
      } else {
        std::lock_guard lk(mu_);
        q.nr_frames = nr_grant_frames_;
        q.max_nr_frames = kMaxGrantFrames;
        q.status = gnttab::GNTST_okay;
      }
      return copy_to_guest(call, uop, &q, sizeof(q)) ? 0 : -xen::XEN_EFAULT;
    }
    case gnttab::GNTTABOP_setup_table: {
      if (count != 1) return -xen::XEN_EINVAL;
      gnttab::gnttab_setup_table s;
      if (!copy_from_guest(call, uop, &s, sizeof(s))) return -xen::XEN_EFAULT;
      if (check_self(s.dom, domid_) != 0) {
        s.status = gnttab::GNTST_bad_domain;
      } else if (s.nr_frames > kMaxGrantFrames) {
        s.status = gnttab::GNTST_general_error;
      } else {
        s.status = gnttab::GNTST_okay;
        for (std::uint32_t i = 0; i < s.nr_frames; ++i) {
          const std::uint64_t gfn = xen_gfn(kXenGrantFramePage0 + i);
          if (!copy_to_guest(call, s.frame_list + 8ull * i, &gfn, sizeof(gfn))) {
            s.status = gnttab::GNTST_bad_virt_addr;
            break;
          }
        }
        if (s.status == gnttab::GNTST_okay) {
          std::lock_guard lk(mu_);
          nr_grant_frames_ = std::max(nr_grant_frames_, s.nr_frames);
        }
      }
      // Only the status goes back; the IN fields stay as the guest wrote them.
      const std::uint64_t status_gva = uop + offsetof(gnttab::gnttab_setup_table, status);
      return copy_to_guest(call, status_gva, &s.status, sizeof(s.status)) ? 0 : -xen::XEN_EFAULT;
    }
    default:
      return -xen::XEN_ENOSYS;
  }
}

// ---- event_channel_op ----

std::int64_t XenHvm::event_channel_op(const HypercallArgs& call) {
  const std::uint64_t cmd = call.arg[0], arg = call.arg[1];
  switch (cmd) {
    case evtchn::kEvtchnOpAllocUnbound: {
      evtchn::evtchn_alloc_unbound a;
      if (!copy_from_guest(call, arg, &a, sizeof(a))) return -xen::XEN_EFAULT;
      if (const std::int64_t rc = check_self(a.dom, domid_); rc != 0) return rc;
      std::unique_lock lk(mu_);
      const evtchn::PortResult r = ports_->alloc_unbound(a.remote_dom);
      if (r.rc != 0) return r.rc;
      a.port = r.port;
      lk.unlock();
      return copy_to_guest(call, arg, &a, sizeof(a)) ? 0 : -xen::XEN_EFAULT;
    }
    case evtchn::kEvtchnOpBindInterdomain: {
      evtchn::evtchn_bind_interdomain b;
      if (!copy_from_guest(call, arg, &b, sizeof(b))) return -xen::XEN_EFAULT;
      // Dom0 services bind the guest's ports, never the other way round: there is no unbound
      // Dom0 port to bind to. The only other end a guest can name is itself (loopback).
      if (b.remote_dom == 0) return -xen::XEN_EINVAL;
      if (const std::int64_t rc = check_self(b.remote_dom, domid_); rc != 0) return rc;
      std::unique_lock lk(mu_);
      const evtchn::PortResult r = evtchn::PortTable::bind_interdomain(*ports_, *ports_,
                                                                       b.remote_port);
      if (r.rc != 0) return r.rc;
      b.local_port = r.port;
      lk.unlock();
      return copy_to_guest(call, arg, &b, sizeof(b)) ? 0 : -xen::XEN_EFAULT;
    }
    case evtchn::kEvtchnOpBindVirq: {
      evtchn::evtchn_bind_virq b;
      if (!copy_from_guest(call, arg, &b, sizeof(b))) return -xen::XEN_EFAULT;
      // Only vCPU 0 exists for events (2-level ABI, vcpu_info[0]); only the timer is raised.
      if (b.vcpu != 0) return -xen::XEN_ENOENT;
      if (b.virq != evtchn::VIRQ_TIMER) return -xen::XEN_EINVAL;
      std::unique_lock lk(mu_);
      const evtchn::PortResult r = ports_->bind_virq(b.virq);
      if (r.rc != 0) return r.rc;
      b.port = r.port;
      lk.unlock();
      return copy_to_guest(call, arg, &b, sizeof(b)) ? 0 : -xen::XEN_EFAULT;
    }
    case evtchn::kEvtchnOpSend:
    case evtchn::kEvtchnOpClose:
    case evtchn::kEvtchnOpUnmask: {
      evtchn::evtchn_port_op p;
      if (!copy_from_guest(call, arg, &p, sizeof(p))) return -xen::XEN_EFAULT;
      if (cmd == evtchn::kEvtchnOpSend && p.port == console_port_ && console_kick_) {
        // The console port's other end is pvio-hv's console backend (xenconsoled's role).
        console_kick_();
        return 0;
      }
      std::lock_guard lk(mu_);
      if (cmd == evtchn::kEvtchnOpSend) return ports_->send(p.port);
      if (cmd == evtchn::kEvtchnOpUnmask) return ports_->unmask(p.port);
      // Closing a port bound to a Dom0 service also removes its doorbell.
      evtchn::ChannelStatus st;
      if (ports_->status(p.port, &st) == 0 && st.status == evtchn::kEvtchnStatInterdomain &&
          st.remote_dom == 0) {
        const int kick = dom0_ports_->kick_fd(st.remote_port, p.port);
        if (kick >= 0) host_.set_doorbell(p.port, kick, false);
      }
      return ports_->close(p.port);
    }
    case evtchn::kEvtchnOpStatus: {
      evtchn::evtchn_status s;
      if (!copy_from_guest(call, arg, &s, sizeof(s))) return -xen::XEN_EFAULT;
      if (const std::int64_t rc = check_self(s.dom, domid_); rc != 0) return rc;
      evtchn::ChannelStatus st;
      {
        std::lock_guard lk(mu_);
        if (const int rc = ports_->status(s.port, &st); rc != 0) return rc;
      }
      s.status = st.status;
      s.vcpu = st.vcpu;
      std::memset(&s.u, 0, sizeof(s.u));
      if (st.status == evtchn::kEvtchnStatUnbound) s.u.unbound.dom = st.remote_dom;
      if (st.status == evtchn::kEvtchnStatInterdomain) {
        s.u.interdomain.dom = st.remote_dom;
        s.u.interdomain.port = st.remote_port;
      }
      if (st.status == evtchn::kEvtchnStatVirq) s.u.virq = st.virq;
      return copy_to_guest(call, arg, &s, sizeof(s)) ? 0 : -xen::XEN_EFAULT;
    }
    default:
      return -xen::XEN_ENOSYS;
  }
}

// ---- hvm_op ----

std::int64_t XenHvm::hvm_op(const HypercallArgs& call) {
  const std::uint64_t cmd = call.arg[0], arg = call.arg[1];
  if (cmd == xen::HVMOP_set_evtchn_upcall_vector) return set_upcall_vector(call);
  if (cmd != xen::HVMOP_set_param && cmd != xen::HVMOP_get_param) return -xen::XEN_ENOSYS;
  xen::xen_hvm_param p;
  const std::string op = cmd == xen::HVMOP_set_param ? "hvm_op.set_param" : "hvm_op.get_param";
  if (!copy_from_guest(call, arg, &p, sizeof(p))) {
    std::lock_guard lk(mu_);
    count_op(op);
    return -xen::XEN_EFAULT;
  }
  {
    const char* name = param_name(p.index);
    std::lock_guard lk(mu_);
    count_op(op + "." + (name ? name : std::to_string(p.index)));
  }
  if (const std::int64_t rc = check_self(p.domid, domid_); rc != 0) return rc;
  if (p.index == hv::kHvmParamPvioDoorbellGpa) {
    if (cmd == xen::HVMOP_set_param) return -xen::XEN_EPERM;
    p.value = host_.doorbell_mmio_gpa();
    return copy_to_guest(call, arg, &p, sizeof(p)) ? 0 : -xen::XEN_EFAULT;
  }
  if (p.index >= xen::HVM_NR_PARAMS) return -xen::XEN_EINVAL;
  std::lock_guard lk(mu_);
  if (cmd == xen::HVMOP_set_param) {
    // A guest may only choose how it is called back; the rest is the toolstack's.
    if (p.index != xen::HVM_PARAM_CALLBACK_IRQ) return -xen::XEN_EPERM;
    return set_callback_irq(p.value);
  }
  switch (p.index) {
    case xen::HVM_PARAM_CALLBACK_IRQ: p.value = callback_irq_; break;
    case xen::HVM_PARAM_STORE_PFN: p.value = xen_gfn(kXenStorePage); break;
    case xen::HVM_PARAM_STORE_EVTCHN: p.value = xenstore_port_; break;
    case xen::HVM_PARAM_CONSOLE_PFN: p.value = xen_gfn(kXenConsolePage); break;
    case xen::HVM_PARAM_CONSOLE_EVTCHN: p.value = console_port_; break;
    default: p.value = 0; break;  // parameters the toolstack never set read as 0
  }
  return copy_to_guest(call, arg, &p, sizeof(p)) ? 0 : -xen::XEN_EFAULT;
}

// HVM_PARAM_CALLBACK_IRQ (params.h): 0 turns the callback off; else bits 63:56 are the type.
//   GSI (0):      bits 55:0 the GSI; 1..23, the in-kernel IOAPIC's pins (GSI 0 would alias
//                 "off", as Xen notes).
//   PCI_INTX (1): domain bits 47:32, bus 31:16, devfn 15:8, INTx 1:0 (0 = INTA#); pvio-hv
//                 offers the Xen platform device's INTA# (00:02.0), the line PV drivers name.
//   VECTOR (2):   bits 7:0 the vector, >= 0x20.
// Anything else -> -EINVAL and the previous callback stays. GSI and INTx deliveries are a
// level-triggered line asserted while vcpu_info[0].evtchn_upcall_pending is set (see
// timer_loop for the EOI rule). A per-vCPU upcall vector, once set, is used instead (Xen's
// order: hvm_assert_evtchn_irq prefers it).
std::int64_t XenHvm::set_callback_irq(std::uint64_t value) {
  const std::uint64_t type = value >> xen::HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT;
  const std::uint64_t via = value & ((std::uint64_t{1} << xen::HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT) - 1);
  if (value != 0) {
    switch (type) {
      case xen::HVM_PARAM_CALLBACK_TYPE_GSI:
        if (via == 0 || via >= kIoapicPins) return -xen::XEN_EINVAL;
        break;
      case xen::HVM_PARAM_CALLBACK_TYPE_PCI_INTX: {
        const std::uint64_t domain = (via >> 32) & 0xffff, bus = (via >> 16) & 0xffff,
                            devfn = (via >> 8) & 0xff, intx = via & 3;
        const std::uint64_t reserved = via & ~((std::uint64_t{0xffff} << 32) |
                                               (std::uint64_t{0xffff} << 16) | 0xff03);
        if (domain != 0 || bus != 0 || devfn != (kXenPlatformSlot << 3) || intx != 0 || reserved)
          return -xen::XEN_EINVAL;
        break;
      }
      case xen::HVM_PARAM_CALLBACK_TYPE_VECTOR:
        if (via > 0xff || via < 0x20) return -xen::XEN_EINVAL;
        break;
      default:
        return -xen::XEN_EINVAL;
    }
  }
  const std::uint64_t old = callback_irq_;
  callback_irq_ = value;
  if (const int rc = apply_upcall_route(); rc != 0) {
    callback_irq_ = old;
    apply_upcall_route();
    return rc;
  }
  return 0;
}

// HVMOP_set_evtchn_upcall_vector: a LAPIC vector per vCPU, which the guest EOIs (unlike the
// callback vector). Xen refuses vectors below 0x10 and vCPUs that do not exist. Every event
// channel is bound to vCPU 0 here (no EVTCHNOP_bind_vcpu), so only vCPU 0's vector is used;
// the others are recorded.
std::int64_t XenHvm::set_upcall_vector(const HypercallArgs& call) {
  xen::xen_hvm_evtchn_upcall_vector v;
  if (!copy_from_guest(call, call.arg[1], &v, sizeof(v))) return -xen::XEN_EFAULT;
  std::lock_guard lk(mu_);
  if (v.vector < 0x10) return -xen::XEN_EINVAL;
  if (v.vcpu >= vcpus_) return -xen::XEN_ENOENT;
  const std::uint8_t old = upcall_vector_[v.vcpu];
  upcall_vector_[v.vcpu] = v.vector;
  if (v.vcpu != 0) return 0;
  if (const int rc = apply_upcall_route(); rc != 0) {
    upcall_vector_[0] = old;
    apply_upcall_route();
    return rc;
  }
  return 0;
}

// Points the upcall eventfd where the guest asked, then delivers what is already pending
// (events that arrived before there was a way to call the guest back).
int XenHvm::apply_upcall_route() {
  UpcallRoute r;
  const std::uint64_t type = callback_irq_ >> xen::HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT;
  if (upcall_vector_[0] != 0) {
    r.kind = UpcallRoute::Kind::kLapicVector;
    r.vector = upcall_vector_[0];
  } else if (callback_irq_ == 0) {
    r.kind = UpcallRoute::Kind::kNone;
  } else if (type == xen::HVM_PARAM_CALLBACK_TYPE_VECTOR) {
    r.kind = UpcallRoute::Kind::kCallbackVector;
    r.vector = static_cast<std::uint8_t>(callback_irq_);
  } else {
    r.kind = UpcallRoute::Kind::kLevelGsi;
    r.gsi = type == xen::HVM_PARAM_CALLBACK_TYPE_GSI ? static_cast<unsigned>(callback_irq_ & 0xff)
                                                     : kXenPlatformGsi;
    r.resample_fd = resample_fd_.get();
    if (r.resample_fd < 0) return -xen::XEN_ENOSYS;
  }
  if (const int rc = host_.route_upcall(r); rc != 0) return rc;
  route_ = r;
  if (r.kind != UpcallRoute::Kind::kNone) raise_upcall_if_pending();
  return 0;
}

// ---- sched_op ----

std::int64_t XenHvm::sched_op(const HypercallArgs& call) {
  switch (call.arg[0]) {
    case xen::SCHEDOP_yield:
      ::sched_yield();
      return 0;
    case xen::SCHEDOP_block: {
      // Dom0 services raise events straight into shared_info, so blocking is a bounded poll
      // of upcall_pending.
      auto pending = std::atomic_ref<std::uint8_t>(shared_info_->vcpu_info[0].evtchn_upcall_pending);
      for (unsigned i = 0; i < kBlockMaxPolls && pending.load() == 0; ++i) sleep_us(50);
      return 0;
    }
    case xen::SCHEDOP_poll:
      return sched_poll(call);
    case xen::SCHEDOP_shutdown: {
      xen::sched_shutdown s;
      if (!copy_from_guest(call, call.arg[1], &s, sizeof(s))) return -xen::XEN_EFAULT;
      if (s.reason > static_cast<std::uint32_t>(ShutdownReason::kWatchdog)) return -xen::XEN_EINVAL;
      host_.shutdown(static_cast<ShutdownReason>(s.reason), 0);
      return 0;
    }
    default:
      return -xen::XEN_ENOSYS;
  }
}

// SCHEDOP_poll: returns when one of the ports is pending or the timeout has passed, or early
// (allowed: the guest re-checks). One port, what guests poll most, is slept on: every sender
// (Dom0 services, and pvio-hv itself) wakes pollers of a port it newly sets pending, masked or
// not, as Xen's evtchn_check_pollers does (evtchn::wait_pending). Several ports are checked
// every 50 us, with SCHEDOP_block's bound.
std::int64_t XenHvm::sched_poll(const HypercallArgs& call) {
  xen::sched_poll sp;
  if (!copy_from_guest(call, call.arg[1], &sp, sizeof(sp))) return -xen::XEN_EFAULT;
  if (sp.nr_ports > kMaxPollPorts) return -xen::XEN_EINVAL;
  evtchn_port_t ports[kMaxPollPorts];
  if (!copy_from_guest(call, sp.ports, ports, sp.nr_ports * sizeof(evtchn_port_t)))
    return -xen::XEN_EFAULT;
  for (std::uint32_t i = 0; i < sp.nr_ports; ++i)
    if (!evtchn::two_level::port_valid(ports[i])) return -xen::XEN_EINVAL;
  if (sp.nr_ports == 1) {
    const std::int64_t now = now_ns();
    std::int64_t wait = kPollMaxWaitNs;
    if (sp.timeout != 0) wait = std::min<std::int64_t>(wait, static_cast<std::int64_t>(std::min<std::uint64_t>(sp.timeout, INT64_MAX)) - now);
    // Counted as woken when the port was raised before the wait's end (not seen at its end).
    if (evtchn::wait_pending(*shared_info_, ports[0], wait) && now_ns() - now < wait) {
      std::lock_guard lk(mu_);
      ++stats_.polls_woken;
    }
    return 0;
  }
  for (unsigned n = 0; n < kBlockMaxPolls; ++n) {
    for (std::uint32_t i = 0; i < sp.nr_ports; ++i)
      if (evtchn::two_level::detail::test(shared_info_->evtchn_pending, ports[i])) return 0;
    if (sp.timeout != 0 && now_ns() >= static_cast<std::int64_t>(sp.timeout)) return 0;
    sleep_us(50);
  }
  return 0;
}

// ---- time: pvclock, wall clock, set_timer_op and VIRQ_TIMER ----

void XenHvm::start_clock(std::uint64_t tsc, std::uint64_t tsc_khz, timespec mono, timespec real) {
  std::lock_guard lk(mu_);
  clock_epoch_ = mono;
  clock_started_ = true;
  // vcpu_time_info: an odd version while the fields change (xen.h), then even.
  xen::vcpu_time_info& t = shared_info_->vcpu_info[0].time;
  std::atomic_ref<std::uint32_t> version(t.version);
  version.store(version.load() | 1);
  t.tsc_timestamp = tsc;
  t.system_time = 0;
  tsc_scale(tsc_khz * 1000, &t.tsc_to_system_mul, &t.tsc_shift);
  t.flags = 0;
  version.store(version.load() + 1);
  // The wall clock at system time 0.
  std::atomic_ref<std::uint32_t> wc(shared_info_->wc_version);
  wc.store(wc.load() | 1);
  shared_info_->wc_sec = static_cast<std::uint32_t>(real.tv_sec);
#if defined(PVIO_XEN_ABI_X86_64)
  shared_info_->wc_sec_hi = static_cast<std::uint32_t>(static_cast<std::uint64_t>(real.tv_sec) >> 32);
#endif
  shared_info_->wc_nsec = static_cast<std::uint32_t>(real.tv_nsec);
  wc.store(wc.load() + 1);
}

std::int64_t XenHvm::now_ns() const {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return ns_of(now) - ns_of(clock_epoch_);
}

// set_timer_op(timeout): a one-shot VIRQ_TIMER at absolute system time `timeout` ns; 0 cancels.
// A time already past fires at once, as on Xen.
std::int64_t XenHvm::set_timer_op(const HypercallArgs& call) {
  const std::uint64_t timeout = call.arg[0];
  itimerspec its{};
  if (timeout != 0) {
    std::lock_guard lk(mu_);
    if (!clock_started_) return -xen::XEN_EINVAL;
    // Clamp so the absolute time cannot overflow (a guest may pass ~0).
    const std::int64_t rel = timeout > (1ull << 62) ? (std::int64_t{1} << 62)
                                                     : static_cast<std::int64_t>(timeout);
    const std::int64_t at = ns_of(clock_epoch_) + rel;
    its.it_value.tv_sec = at / 1000000000;
    its.it_value.tv_nsec = at % 1000000000;
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) its.it_value.tv_nsec = 1;
  }
  if (::timerfd_settime(timer_fd_.get(), TFD_TIMER_ABSTIME, &its, nullptr) < 0)
    return -xen::XEN_EINVAL;
  return 0;
}

// The timer thread also takes the level callback's resamples: the guest EOIed the line, KVM
// lowered it, and it goes up again at once if vCPU 0 still has an upcall pending (Xen
// re-evaluates the callback line at the guest's EOI the same way).
void XenHvm::timer_loop() {
  pollfd fds[3] = {{timer_fd_.get(), POLLIN, 0}, {timer_stop_fd_.get(), POLLIN, 0},
                   {resample_fd_.get(), POLLIN, 0}};
  for (;;) {
    if (::poll(fds, resample_fd_ ? 3 : 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    if (fds[2].revents & POLLIN) {
      std::uint64_t n;
      if (::read(resample_fd_.get(), &n, sizeof(n)) == sizeof(n)) {
        std::lock_guard lk(mu_);
        ++stats_.upcall_resamples;
        if (route_.kind == UpcallRoute::Kind::kLevelGsi &&
            std::atomic_ref<std::uint8_t>(shared_info_->vcpu_info[0].evtchn_upcall_pending).load() != 0) {
          evtchn::eventfd_signal(upcall_fd_);
          ++stats_.upcall_reasserts;
        }
      }
    }
    if (fds[0].revents & POLLIN) {
      std::uint64_t expirations;
      if (::read(timer_fd_.get(), &expirations, sizeof(expirations)) != sizeof(expirations))
        continue;
      std::lock_guard lk(mu_);
      ports_->raise_virq(evtchn::VIRQ_TIMER);
    }
  }
}

// ---- xen_version ----

std::int64_t XenHvm::xen_version(const HypercallArgs& call) {
  switch (call.arg[0]) {
    case xen::XENVER_version:
      return std::int64_t{(hv::kXenVersionMajor << 16) | hv::kXenVersionMinor};
    case xen::XENVER_extraversion: {
      xen::xen_extraversion v{};
      std::memcpy(v.extraversion, ".0-pvio", 8);
      return copy_to_guest(call, call.arg[1], &v, sizeof(v)) ? 0 : -xen::XEN_EFAULT;
    }
    case xen::XENVER_pagesize:
      return static_cast<std::int64_t>(kPage);
    case xen::XENVER_get_features: {
      xen::xen_feature_info fi;
      if (!copy_from_guest(call, call.arg[1], &fi, sizeof(fi))) return -xen::XEN_EFAULT;
      // What this interface is: a translated guest (frames are GFNs) called back through a
      // vector, with a pvclock that stays valid across vCPUs' TSCs (one vCPU here).
      fi.submap = fi.submap_idx != 0
                      ? 0
                      : (1u << xen::XENFEAT_writable_page_tables) |
                            (1u << xen::XENFEAT_auto_translated_physmap) |
                            (1u << xen::XENFEAT_hvm_callback_vector) |
                            (1u << xen::XENFEAT_hvm_safe_pvclock);
      return copy_to_guest(call, call.arg[1], &fi, sizeof(fi)) ? 0 : -xen::XEN_EFAULT;
    }
    default:
      return -xen::XEN_ENOSYS;
  }
}

// ---- console_io ----

std::int64_t XenHvm::console_io(const HypercallArgs& call) {
  const std::uint64_t cmd = call.arg[0], count = call.arg[1], buf = call.arg[2];
  if (cmd == xen::CONSOLEIO_read) return 0;  // no console input
  if (cmd != xen::CONSOLEIO_write) return -xen::XEN_ENOSYS;
  if (count > kConsoleMaxWrite) return -xen::XEN_EINVAL;
  char chunk[kConsoleChunk];
  for (std::uint64_t done = 0; done < count;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(count - done, sizeof(chunk)));
    if (!copy_from_guest(call, buf + done, chunk, n)) return -xen::XEN_EFAULT;
    if (console_) console_(chunk, n);
    done += n;
  }
  return 0;
}

// ---- domain control protocol (control thread) ----

control::DomainDescription XenHvm::describe() {
  std::lock_guard lk(mu_);
  attach_frames_.clear();
  for (std::uint32_t i = 0; i < nr_grant_frames_; ++i)
    attach_frames_.push_back(xen_gfn(kXenGrantFramePage0 + i));
  control::DomainDescription d;
  d.domid = domid_;
  d.memfd = memfd_;
  d.upcall_fd = upcall_fd_;
  d.regions = regions_;
  d.grant_frame_gfns = attach_frames_;
  d.shared_info_gfn = xen_gfn(kXenSharedInfoPage);
  d.xenstore_gfn = xen_gfn(kXenStorePage);
  d.xenstore_port = xenstore_port_;
  return d;
}

int XenHvm::serve(const std::string& socket_path) {
  if (server_) return -EBUSY;
  auto server = std::make_unique<control::ControlServer>(*dom0_ports_);
  if (const int rc = server->listen(socket_path); rc != 0) return rc;
  stop_fd_.reset(evtchn::eventfd_create(true));
  if (!stop_fd_) return -EMFILE;
  server_ = std::move(server);
  server_thread_ = std::thread([this] { serve_loop(); });
  return 0;
}

void XenHvm::serve_loop() {
  control::UniqueFd ep(::epoll_create1(EPOLL_CLOEXEC));
  if (!ep) return;
  const std::pair<int, std::uint64_t> watch[] = {{server_->epoll_fd(), 1}, {stop_fd_.get(), 2}};
  for (const auto& [fd, key] : watch) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = key;
    if (::epoll_ctl(ep.get(), EPOLL_CTL_ADD, fd, &ev) != 0) return;
  }
  for (;;) {
    epoll_event evs[2];
    const int n = ::epoll_wait(ep.get(), evs, 2, -1);
    if (n < 0 && errno != EINTR) return;
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.u64 == 2) return;
      server_->dispatch();
    }
  }
}

void XenHvm::stop_serving() {
  if (!server_) return;
  evtchn::eventfd_signal(stop_fd_.get());
  if (server_thread_.joinable()) server_thread_.join();
  server_.reset();  // drops every client (client_gone) and removes the socket
}

}  // namespace pvio::hv
