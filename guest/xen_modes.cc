// Guest modes that exercise the Xen HVM interface: xen-probe (start-up and xenstore), hypercalls
// (each hypercall with good and bad arguments), evtchn (notifications both ways with a Dom0
// service) and hostile-xen (random hypercalls with random arguments).
#include "xen_modes.h"

#include "alloc.h"
#include "arch.h"
#include "console.h"
#include "cpu.h"
#include "pvio/event_channel/two_level.h"
#include "pvio/xenstore/guest_client.h"
#include "xen.h"

extern "C" size_t strlen(const char*);
extern "C" int memcmp(const void*, const void*, size_t);

namespace pvio::guest {


namespace {

constexpr uint64_t kBadPointer = 0x100000000ull;  // above the 4 GiB identity map

[[noreturn]] void xen_poweroff(bool ok) {
  if (ok) {
    xen::sched_shutdown s{0};  // SHUTDOWN_poweroff: the VMM's shared shutdown path
    hypercall(xen::kHypercallSchedOp, xen::SCHEDOP_shutdown, reinterpret_cast<uint64_t>(&s));
  }
  shutdown(ok ? kExitOk : kExitErrors);
}

XenInfo init_or_die() {
  XenInfo info;
  if (!xen_init(&info)) {
    kprintf("PVIO-RESULT {\"mode\":\"xen\",\"xen\":0}\n");
    shutdown(kExitNoDevice);
  }
  return info;
}

// Waits with a bounded spin (interrupts on) for port's event count to pass `seen`.
bool spin_for_event(uint32_t port, uint64_t seen) {
  for (uint64_t i = 0; i < 200000000ull; ++i) {
    if (evtchn_events(port) > seen) return true;
    asm volatile("pause");
  }
  return false;
}

// ---- xenstore over the ring page ----
struct XsWait {
  uint32_t port;
  uint64_t seen;
};
void xs_notify(void* ctx) { evtchn_send(static_cast<XsWait*>(ctx)->port); }
void xs_wait(void* ctx) {
  auto* w = static_cast<XsWait*>(ctx);
  evtchn_wait(w->port, w->seen);
  w->seen = evtchn_events(w->port);
}
alignas(8) unsigned char g_xs_storage[sizeof(xs::GuestClient<4>)];

// ---- checks ----
unsigned g_checks = 0, g_failed = 0;
void check(const char* name, int64_t got, int64_t want) {
  ++g_checks;
  if (got != want) {
    ++g_failed;
    kprintf("PVIO-CHECK FAIL %s: got %ld want %ld\n", name, got, want);
  }
}

int64_t hvm_param(unsigned cmd, uint16_t dom, uint32_t index, uint64_t* value) {
  xen::xen_hvm_param p{};
  p.domid = dom;
  p.index = index;
  p.value = *value;
  const int64_t rc = hypercall(xen::kHypercallHvmOp, cmd, reinterpret_cast<uint64_t>(&p));
  *value = p.value;
  return rc;
}

int64_t physmap(uint16_t dom, unsigned space, uint64_t idx, uint64_t gfn) {
  xen::xen_add_to_physmap x{};
  x.domid = dom;
  x.space = space;
  x.idx = idx;
  x.gpfn = gfn;
  return hypercall(xen::kHypercallMemoryOp, xen::XENMEM_add_to_physmap,
                   reinterpret_cast<uint64_t>(&x));
}

int64_t evtchn_op(unsigned cmd, void* arg) {
  return hypercall(xen::kHypercallEventChannelOp, cmd, reinterpret_cast<uint64_t>(arg));
}

}  // namespace

[[noreturn]] void run_xen_probe(bool use_xenstore) {
  const XenInfo info = init_or_die();
  kprintf("PVIO-XEN-READY store_evtchn=%u\n", info.store_evtchn);
  long long xs_domid = -1;
  int xs_roundtrip = 0;
  if (use_xenstore) {
    XsWait w{info.store_evtchn, 0};
    auto* page = reinterpret_cast<xs::xenstore_domain_interface*>(info.store_pfn << 12);
    auto* xs = new (g_xs_storage) xs::GuestClient<4>(page, xs::GuestPlatform{&w, xs_notify, xs_wait});
    char buf[64];
    size_t len = 0;
    if (xs->read("domid", buf, sizeof(buf) - 1, &len) == xs::XsError::None) {
      xs_domid = 0;
      for (size_t i = 0; i < len && buf[i] >= '0' && buf[i] <= '9'; ++i) xs_domid = xs_domid * 10 + (buf[i] - '0');
    }
    const char value[] = "hello-from-hvm";
    if (xs->write("data/probe", value, sizeof(value) - 1) == xs::XsError::None &&
        xs->read("data/probe", buf, sizeof(buf), &len) == xs::XsError::None &&
        len == sizeof(value) - 1 && memcmp(buf, value, len) == 0)
      xs_roundtrip = 1;
  }
  kprintf("PVIO-RESULT {\"mode\":\"xen-probe\",\"xen\":1,\"cpuid_via\":\"%s\",\"cpuid_base\":%u,"
          "\"version\":%u,\"hypercall_msr\":%u,\"hypercall_page\":%lu,\"shared_info_gfn\":%lu,"
          "\"grant_frames\":%u,\"max_grant_frames\":%u,\"store_pfn\":%lu,\"store_evtchn\":%u,"
          "\"console_pfn\":%lu,\"console_evtchn\":%u,\"upcall_vector\":%u,\"xenstore\":%d,"
          "\"xenstore_domid\":%lld,\"xenstore_roundtrip\":%d,\"upcalls\":%lu}\n",
          info.via_port ? "port" : "cpuid", info.base, info.version, info.hypercall_msr,
          info.hypercall_page, info.shared_info_gfn, info.nr_grant_frames, info.max_grant_frames,
          info.store_pfn, info.store_evtchn, info.console_pfn, info.console_evtchn,
          unsigned{kUpcallVector}, use_xenstore ? 1 : 0, xs_domid, xs_roundtrip, upcalls());
  xen_poweroff(!use_xenstore || xs_roundtrip == 1);
}

[[noreturn]] void run_control() {
  const XenInfo info = init_or_die();
  XsWait w{info.store_evtchn, 0};
  auto* page = reinterpret_cast<xs::xenstore_domain_interface*>(info.store_pfn << 12);
  auto* xs = new (g_xs_storage) xs::GuestClient<4>(page, xs::GuestPlatform{&w, xs_notify, xs_wait});
  if (xs->watch("control/shutdown", "control") != xs::XsError::None) {
    kprintf("PVIO-GUEST control: cannot watch control/shutdown\n");
    shutdown(kExitErrors);
  }
  kprintf("PVIO-GUEST control: watching control/shutdown\n");
  char buf[32], path[64], token[16];
  for (;;) {
    size_t len = 0;
    if (xs->read("control/shutdown", buf, sizeof(buf) - 1, &len) == xs::XsError::None && len > 0) {
      buf[len] = '\0';
      const bool reboot = len == 6 && memcmp(buf, "reboot", 6) == 0;
      const bool off = (len == 8 && memcmp(buf, "poweroff", 8) == 0) ||
                       (len == 4 && memcmp(buf, "halt", 4) == 0);
      if (reboot || off) {
        xs->write("control/shutdown", "", 0);  // acknowledged, as Linux's driver does
        kprintf("PVIO-GUEST control: %s\n", buf);
        xen::sched_shutdown s{reboot ? xen::SHUTDOWN_reboot : xen::SHUTDOWN_poweroff};
        hypercall(xen::kHypercallSchedOp, xen::SCHEDOP_shutdown, reinterpret_cast<uint64_t>(&s));
        shutdown(kExitErrors);  // not reached: the VMM ends the domain
      }
    }
    xs->read_watch(path, sizeof path, token, sizeof token, true);
  }
}

[[noreturn]] void run_hypercall_checks(uint64_t mem_bytes) {
  const XenInfo info = init_or_die();
  const uint16_t self = xen::DOMID_SELF;
  const int64_t kEnosys = -xen::XEN_ENOSYS, kEfault = -xen::XEN_EFAULT, kEinval = -xen::XEN_EINVAL,
                kEperm = -xen::XEN_EPERM, kEsrch = -xen::XEN_ESRCH;

  // Dispatch and xen_version.
  check("xen_version", hypercall(xen::kHypercallXenVersion, xen::XENVER_version),
        (int64_t{hv::kXenVersionMajor} << 16) | hv::kXenVersionMinor);
  check("xen_version bad cmd", hypercall(xen::kHypercallXenVersion, 99), kEnosys);
  check("unknown hypercall 0", hypercall(0), kEnosys);
  check("unknown hypercall 127", hypercall(127, 1, 2, 3, 4, 5), kEnosys);

  // memory_op.
  check("memory_op bad cmd", hypercall(xen::kHypercallMemoryOp, 99, 0), kEnosys);
  check("add_to_physmap bad pointer",
        hypercall(xen::kHypercallMemoryOp, xen::XENMEM_add_to_physmap, kBadPointer), kEfault);
  check("add_to_physmap pointer across RAM end",
        hypercall(xen::kHypercallMemoryOp, xen::XENMEM_add_to_physmap, mem_bytes - 8), kEfault);
  check("add_to_physmap dom0", physmap(0, xen::XENMAPSPACE_shared_info, 0, info.shared_info_gfn), kEperm);
  check("add_to_physmap dom5", physmap(5, xen::XENMAPSPACE_shared_info, 0, info.shared_info_gfn), kEsrch);
  check("add_to_physmap bad space", physmap(self, 9, 0, info.shared_info_gfn), kEnosys);
  check("add_to_physmap shared_info idx 1", physmap(self, xen::XENMAPSPACE_shared_info, 1, info.shared_info_gfn), kEinval);
  check("add_to_physmap gfn beyond RAM", physmap(self, xen::XENMAPSPACE_shared_info, 0, 0x7fffffff), kEinval);
  check("add_to_physmap grant idx 32", physmap(self, xen::XENMAPSPACE_grant_table, 32, info.grant_frame_gfn[0]), kEinval);
  check("add_to_physmap grant status frame",
        physmap(self, xen::XENMAPSPACE_grant_table, xen::XENMAPIDX_grant_table_status, info.grant_frame_gfn[0]), kEinval);
  // Moving shared_info: the new frame shows the same page, the old frame its RAM again.
  {
    auto* si = shared_info();
    si->wc_sec = 0x5eed1234;
    auto* other = static_cast<evtchn::shared_info*>(alloc(4096));
    const uint64_t other_gfn = reinterpret_cast<uint64_t>(other) >> 12;
    check("move shared_info", physmap(self, xen::XENMAPSPACE_shared_info, 0, other_gfn), 0);
    check("moved shared_info shows the page", *reinterpret_cast<volatile uint32_t*>(&other->wc_sec), 0x5eed1234);
    check("old frame is RAM again", *reinterpret_cast<volatile uint32_t*>(&si->wc_sec), 0);
    check("move shared_info back", physmap(self, xen::XENMAPSPACE_shared_info, 0, info.shared_info_gfn), 0);
    check("shared_info back in place", *reinterpret_cast<volatile uint32_t*>(&si->wc_sec), 0x5eed1234);
  }
  {
    void* f = alloc(4096);
    check("add_to_physmap grant frame 5", physmap(self, xen::XENMAPSPACE_grant_table, 5, reinterpret_cast<uint64_t>(f) >> 12), 0);
  }

  // grant_table_op.
  gnttab::gnttab_query_size q{};
  q.dom = self;
  check("query_size count 2", hypercall(xen::kHypercallGrantTableOp, gnttab::GNTTABOP_query_size, reinterpret_cast<uint64_t>(&q), 2), kEinval);
  check("query_size bad pointer", hypercall(xen::kHypercallGrantTableOp, gnttab::GNTTABOP_query_size, kBadPointer, 1), kEfault);
  check("query_size", hypercall(xen::kHypercallGrantTableOp, gnttab::GNTTABOP_query_size, reinterpret_cast<uint64_t>(&q), 1), 0);
  check("query_size status", q.status, gnttab::GNTST_okay);
  check("query_size frames grew to 6", q.nr_frames, 6);
  check("query_size max", q.max_nr_frames, 32);
  q.dom = 5;
  hypercall(xen::kHypercallGrantTableOp, gnttab::GNTTABOP_query_size, reinterpret_cast<uint64_t>(&q), 1);
  check("query_size other dom", q.status, gnttab::GNTST_bad_domain);
  uint64_t frames[8] = {};
  gnttab::gnttab_setup_table st{};
  st.dom = self;
  st.nr_frames = 4;
  st.frame_list = reinterpret_cast<uint64_t>(frames);
  check("setup_table", hypercall(xen::kHypercallGrantTableOp, gnttab::GNTTABOP_setup_table, reinterpret_cast<uint64_t>(&st), 1), 0);
  check("setup_table status", st.status, gnttab::GNTST_okay);
  check("setup_table frame 0", static_cast<int64_t>(frames[0]), 0xFD003);
  check("setup_table frame 3", static_cast<int64_t>(frames[3]), 0xFD006);
  st.nr_frames = 33;
  hypercall(xen::kHypercallGrantTableOp, gnttab::GNTTABOP_setup_table, reinterpret_cast<uint64_t>(&st), 1);
  check("setup_table too many", st.status, gnttab::GNTST_general_error);
  st.nr_frames = 2;
  st.frame_list = kBadPointer;
  hypercall(xen::kHypercallGrantTableOp, gnttab::GNTTABOP_setup_table, reinterpret_cast<uint64_t>(&st), 1);
  check("setup_table bad frame list", st.status, gnttab::GNTST_bad_virt_addr);
  check("grant_table_op bad cmd", hypercall(xen::kHypercallGrantTableOp, 99, 0, 1), kEnosys);

  // event_channel_op: loopback channel, status, send, unmask re-raise, close.
  uint32_t a = 0;
  check("alloc_unbound self", evtchn_alloc_unbound(self, &a), 0);
  evtchn::evtchn_bind_interdomain b{};
  b.remote_dom = self;
  b.remote_port = a;
  check("bind_interdomain loopback", evtchn_op(evtchn::kEvtchnOpBindInterdomain, &b), 0);
  evtchn::evtchn_status s{};
  s.dom = self;
  s.port = a;
  check("status", evtchn_op(evtchn::kEvtchnOpStatus, &s), 0);
  check("status interdomain", s.status, evtchn::kEvtchnStatInterdomain);
  check("status remote port", s.u.interdomain.port, b.local_port);
  const uint64_t before = evtchn_events(a);
  check("send loopback", evtchn_send(b.local_port), 0);
  check("loopback event delivered by upcall", spin_for_event(a, before) ? 1 : 0, 1);
  evtchn::two_level::mask(*shared_info(), a);
  const uint64_t masked_before = evtchn_events(a);
  check("send to masked", evtchn_send(b.local_port), 0);
  for (int i = 0; i < 100000; ++i) asm volatile("pause");
  check("masked port not delivered", static_cast<int64_t>(evtchn_events(a) - masked_before), 0);
  evtchn::evtchn_port_op um{a};
  check("unmask", evtchn_op(evtchn::kEvtchnOpUnmask, &um), 0);
  check("unmask re-raises the held event", spin_for_event(a, masked_before) ? 1 : 0, 1);
  s.port = 4000;
  s.status = 99;
  check("status free port", evtchn_op(evtchn::kEvtchnOpStatus, &s), 0);
  check("status free port closed", s.status, evtchn::kEvtchnStatClosed);
  s.port = 9999;
  check("status invalid port", evtchn_op(evtchn::kEvtchnOpStatus, &s), kEinval);
  s.dom = 0;
  s.port = a;
  check("status dom0", evtchn_op(evtchn::kEvtchnOpStatus, &s), kEperm);
  evtchn::evtchn_port_op free_port{4000};
  check("send free port", evtchn_op(evtchn::kEvtchnOpSend, &free_port), kEinval);
  evtchn::evtchn_port_op big{100000};
  check("unmask invalid port", evtchn_op(evtchn::kEvtchnOpUnmask, &big), kEinval);
  check("close", evtchn_close(a), 0);
  check("close twice", evtchn_close(a), kEinval);
  check("close peer", evtchn_close(b.local_port), 0);
  evtchn::evtchn_alloc_unbound au{};
  au.dom = 0;
  check("alloc_unbound for dom0", evtchn_op(evtchn::kEvtchnOpAllocUnbound, &au), kEperm);
  b.remote_dom = 0;
  check("bind_interdomain dom0", evtchn_op(evtchn::kEvtchnOpBindInterdomain, &b), kEinval);
  b.remote_dom = 7;
  check("bind_interdomain dom7", evtchn_op(evtchn::kEvtchnOpBindInterdomain, &b), kEsrch);
  b.remote_dom = self;
  b.remote_port = 4000;
  check("bind_interdomain free port", evtchn_op(evtchn::kEvtchnOpBindInterdomain, &b), kEinval);
  check("event_channel_op bad pointer", hypercall(xen::kHypercallEventChannelOp, evtchn::kEvtchnOpSend, kBadPointer), kEfault);
  check("event_channel_op bad cmd", hypercall(xen::kHypercallEventChannelOp, 99, 0), kEnosys);

  // hvm_op.
  uint64_t v = 0;
  check("get STORE_PFN", hvm_param(xen::HVMOP_get_param, self, xen::HVM_PARAM_STORE_PFN, &v), 0);
  check("STORE_PFN value", static_cast<int64_t>(v), 0xFD001);
  v = 0;
  hvm_param(xen::HVMOP_get_param, self, xen::HVM_PARAM_CALLBACK_IRQ, &v);
  check("CALLBACK_IRQ value", static_cast<int64_t>(v),
        static_cast<int64_t>((xen::HVM_PARAM_CALLBACK_TYPE_VECTOR << 56) | kUpcallVector));
  check("get param 39", hvm_param(xen::HVMOP_get_param, self, 39, &v), kEinval);
  v = 5;
  check("set STORE_PFN", hvm_param(xen::HVMOP_set_param, self, xen::HVM_PARAM_STORE_PFN, &v), kEperm);
  // GSI and PCI INTx callbacks exist (mode=workload callback=gsi|intx uses them); values that
  // name no line are refused and leave the vector in place.
  v = 24;  // GSI type, beyond the IOAPIC's pins
  check("set CALLBACK_IRQ gsi 24", hvm_param(xen::HVMOP_set_param, self, xen::HVM_PARAM_CALLBACK_IRQ, &v), kEinval);
  v = (xen::HVM_PARAM_CALLBACK_TYPE_PCI_INTX << 56) | (uint64_t{4 << 3} << 8);  // 00:04.0, not the platform device
  check("set CALLBACK_IRQ intx other device", hvm_param(xen::HVMOP_set_param, self, xen::HVM_PARAM_CALLBACK_IRQ, &v), kEinval);
  v = uint64_t{3} << 56;  // no such type on x86
  check("set CALLBACK_IRQ type 3", hvm_param(xen::HVMOP_set_param, self, xen::HVM_PARAM_CALLBACK_IRQ, &v), kEinval);
  xen::xen_hvm_evtchn_upcall_vector uv{};
  uv.vcpu = 0;
  uv.vector = 0x0f;
  check("upcall vector 0x0f", hypercall(xen::kHypercallHvmOp, xen::HVMOP_set_evtchn_upcall_vector, reinterpret_cast<uint64_t>(&uv)), kEinval);
  uv.vcpu = 99;
  uv.vector = kUpcallVector;
  check("upcall vector vcpu 99", hypercall(xen::kHypercallHvmOp, xen::HVMOP_set_evtchn_upcall_vector, reinterpret_cast<uint64_t>(&uv)), -xen::XEN_ENOENT);
  check("upcall vector bad pointer", hypercall(xen::kHypercallHvmOp, xen::HVMOP_set_evtchn_upcall_vector, kBadPointer), kEfault);
  v = (xen::HVM_PARAM_CALLBACK_TYPE_VECTOR << 56) | 0x10;
  check("set CALLBACK_IRQ low vector", hvm_param(xen::HVMOP_set_param, self, xen::HVM_PARAM_CALLBACK_IRQ, &v), kEinval);
  check("get param dom0", hvm_param(xen::HVMOP_get_param, 0, xen::HVM_PARAM_STORE_PFN, &v), kEperm);
  check("hvm_op bad pointer", hypercall(xen::kHypercallHvmOp, xen::HVMOP_get_param, kBadPointer), kEfault);
  check("hvm_op bad cmd", hypercall(xen::kHypercallHvmOp, 99, 0), kEnosys);

  // sched_op.
  check("sched yield", hypercall(xen::kHypercallSchedOp, xen::SCHEDOP_yield, 0), 0);
  check("sched block", hypercall(xen::kHypercallSchedOp, xen::SCHEDOP_block, 0), 0);
  xen::sched_shutdown bad_reason{9};
  check("shutdown bad reason", hypercall(xen::kHypercallSchedOp, xen::SCHEDOP_shutdown, reinterpret_cast<uint64_t>(&bad_reason)), kEinval);
  check("shutdown bad pointer", hypercall(xen::kHypercallSchedOp, xen::SCHEDOP_shutdown, kBadPointer), kEfault);
  check("sched bad cmd", hypercall(xen::kHypercallSchedOp, 99, 0), kEnosys);

  // console_io.
  const char line[] = "PVIO-CONSOLE-IO hello through console_io\n";
  check("console write", hypercall(xen::kHypercallConsoleIo, xen::CONSOLEIO_write, strlen(line), reinterpret_cast<uint64_t>(line)), 0);
  check("console write bad pointer", hypercall(xen::kHypercallConsoleIo, xen::CONSOLEIO_write, 16, kBadPointer), kEfault);
  check("console write too long", hypercall(xen::kHypercallConsoleIo, xen::CONSOLEIO_write, 2u << 20, reinterpret_cast<uint64_t>(line)), kEinval);
  check("console read", hypercall(xen::kHypercallConsoleIo, xen::CONSOLEIO_read, 0, 0), 0);
  check("console bad cmd", hypercall(xen::kHypercallConsoleIo, 9, 0, 0), kEnosys);

  kprintf("PVIO-RESULT {\"mode\":\"hypercalls\",\"checks\":%u,\"failed\":%u,\"cpuid_via\":\"%s\","
          "\"upcalls\":%lu}\n",
          g_checks, g_failed, info.via_port ? "port" : "cpuid", upcalls());
  xen_poweroff(g_failed == 0);
}

[[noreturn]] void run_evtchn_echo(uint64_t count) {
  const XenInfo info = init_or_die();
  (void)info;
  uint32_t port = 0;
  if (evtchn_alloc_unbound(0, &port) != 0) {
    kprintf("PVIO-RESULT {\"mode\":\"evtchn\",\"error\":\"alloc_unbound\"}\n");
    shutdown(kExitErrors);
  }
  // The Dom0 side reads this line, binds the port and notifies `count` times; each event is
  // answered through the doorbell.
  kprintf("PVIO-EVTCHN port=%u\n", port);
  uint64_t received = 0, sent = 0;
  while (received < count) {
    evtchn_wait(port, received);
    const uint64_t now = evtchn_events(port);
    while (received < now && received < count) {
      ++received;
      if (evtchn_send(port) == 0) ++sent;
    }
  }
  kprintf("PVIO-RESULT {\"mode\":\"evtchn\",\"port\":%u,\"received\":%lu,\"sent\":%lu,"
          "\"upcalls\":%lu}\n",
          port, received, sent, upcalls());
  xen_poweroff(true);
}

[[noreturn]] void run_hostile_xen(uint64_t count, uint64_t seed, uint64_t mem_bytes) {
  init_or_die();
  uint64_t s = seed ? seed : 0x9e3779b97f4a7c15ull;
  auto next = [&s] {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545f4914f6cdd1dull;
  };
  auto* scratch = static_cast<uint8_t*>(alloc(2 * 4096));
  uint64_t ok = 0, errors = 0, enosys = 0, efault = 0, einval = 0, skipped = 0;
  for (uint64_t i = 0; i < count; ++i) {
    for (unsigned j = 0; j < 2 * 4096; j += 8) *reinterpret_cast<uint64_t*>(scratch + j) = next();
    // Mostly the implemented hypercalls with small sub-commands, sometimes any entry.
    static const unsigned kImplemented[] = {
        xen::kHypercallMemoryOp, xen::kHypercallXenVersion, xen::kHypercallConsoleIo,
        xen::kHypercallGrantTableOp, xen::kHypercallSchedOp, xen::kHypercallEventChannelOp,
        xen::kHypercallHvmOp, xen::kHypercallSetTimerOp};
    constexpr unsigned kNrImplemented = sizeof(kImplemented) / sizeof(kImplemented[0]);
    const bool known = next() % 4 != 0;
    const unsigned nr = known ? kImplemented[next() % kNrImplemented] : static_cast<unsigned>(next() % 128);
    uint64_t a[5];
    for (uint64_t& x : a) {
      switch (next() % 4) {
        case 0: x = reinterpret_cast<uint64_t>(scratch) + next() % 4096; break;  // valid
        case 1: x = next(); break;                                               // anything
        case 2: x = mem_bytes - next() % 64; break;                               // RAM end
        default: x = next() % 16; break;                                          // small
      }
    }
    if (known) a[0] = next() % 12;
    // Keep the guest itself alive: no shutdown, no remapping of its own RAM, no change of
    // its upcall vector. Those paths get invalid pointers instead.
    if ((nr == xen::kHypercallSchedOp && a[0] == xen::SCHEDOP_shutdown) ||
        (nr == xen::kHypercallMemoryOp && a[0] == xen::XENMEM_add_to_physmap) ||
        (nr == xen::kHypercallHvmOp && a[0] == xen::HVMOP_set_param)) {
      a[1] = kBadPointer + next() % 4096;
      ++skipped;
    }
    const int64_t rc = hypercall(nr, a[0], a[1], a[2], a[3], a[4]);
    if (rc >= 0) ++ok;
    else ++errors;
    if (rc == -xen::XEN_ENOSYS) ++enosys;
    if (rc == -xen::XEN_EFAULT) ++efault;
    if (rc == -xen::XEN_EINVAL) ++einval;
  }
  // The interface still works afterwards.
  const bool version_ok = hypercall(xen::kHypercallXenVersion, xen::XENVER_version) ==
                          ((int64_t{hv::kXenVersionMajor} << 16) | hv::kXenVersionMinor);
  uint32_t p = 0;
  bool loop_ok = evtchn_alloc_unbound(xen::DOMID_SELF, &p) == 0;
  if (loop_ok) {
    evtchn::evtchn_bind_interdomain b{};
    b.remote_dom = xen::DOMID_SELF;
    b.remote_port = p;
    const uint64_t before = evtchn_events(p);
    loop_ok = evtchn_op(evtchn::kEvtchnOpBindInterdomain, &b) == 0 &&
              evtchn_send(b.local_port) == 0 && spin_for_event(p, before);
  }
  kprintf("PVIO-RESULT {\"mode\":\"hostile-xen\",\"hypercalls\":%lu,\"ok\":%lu,\"errors\":%lu,"
          "\"enosys\":%lu,\"efault\":%lu,\"einval\":%lu,\"redirected\":%lu,\"alive_after\":%d}\n",
          count, ok, errors, enosys, efault, einval, skipped, version_ok && loop_ok ? 1 : 0);
  xen_poweroff(version_ok && loop_ok);
}

}  // namespace pvio::guest
