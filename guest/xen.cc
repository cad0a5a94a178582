// Xen HVM start-up, hypercalls, the upcall handler and event-channel helpers of the test guest.
#include "xen.h"

#include <new>

#include "alloc.h"
#include "arch.h"
#include "console.h"
#include "cpu.h"
#include "pci.h"
#include "pvio/event_channel/two_level.h"

// Upcall entry: save the caller-saved registers (the CPU pushed 40 bytes and aligned RSP, so
// nine pushes leave it 16-byte aligned for the call), scan, EOI, return.
asm(R"(
  .text
  .global xen_upcall_entry
xen_upcall_entry:
  pushq %rax
  pushq %rcx
  pushq %rdx
  pushq %rsi
  pushq %rdi
  pushq %r8
  pushq %r9
  pushq %r10
  pushq %r11
  call xen_upcall_handler
  popq %r11
  popq %r10
  popq %r9
  popq %r8
  popq %rdi
  popq %rsi
  popq %rdx
  popq %rcx
  popq %rax
  iretq
  .global xen_spurious_entry
xen_spurious_entry:
  iretq
)");

extern "C" char xen_upcall_entry[];
extern "C" char xen_spurious_entry[];

namespace pvio::guest {

namespace {

constexpr uint64_t kLapicBase = 0xFEE00000;
constexpr uint64_t kLapicTpr = 0x80, kLapicEoi = 0xB0, kLapicSvr = 0xF0;
constexpr uint8_t kSpuriousVector = 0xff;

XenInfo g_info;
UpcallDelivery g_delivery = UpcallDelivery::kCallbackVector;
evtchn::shared_info* g_shared_info = nullptr;
gnttab::grant_entry_v1* g_frames[kGuestGrantFrames];
alignas(gnttab::FixedGrantTable<kGuestGrantFrames>) unsigned char
    g_grant_storage[sizeof(gnttab::FixedGrantTable<kGuestGrantFrames>)];
gnttab::FixedGrantTable<kGuestGrantFrames>* g_grant_table = nullptr;
volatile uint64_t g_events[evtchn::kNrEventChannels];
volatile uint64_t g_upcalls = 0;
uint64_t g_dom0_ports[evtchn::kNrEventChannels / 64];  // ports whose other end is Dom0
uint64_t g_doorbell_mmio = 0;  // guest-physical address of the MMIO doorbell in use, or 0
DoorbellCounts g_doorbell_counts;

void mark_dom0(uint32_t port, bool on) {
  if (port >= evtchn::kNrEventChannels) return;
  if (on) g_dom0_ports[port / 64] |= uint64_t{1} << (port % 64);
  else g_dom0_ports[port / 64] &= ~(uint64_t{1} << (port % 64));
}
bool is_dom0(uint32_t port) {
  return port < evtchn::kNrEventChannels && (g_dom0_ports[port / 64] >> (port % 64)) & 1;
}

void cpuid(uint32_t leaf, uint32_t* a, uint32_t* b, uint32_t* c, uint32_t* d) {
  asm volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(0));
}
// pvio-hv's CPUID port (xen_abi.h): the same answer as CPUID, one port exit.
void cpuid_port(uint32_t leaf, uint32_t* a, uint32_t* b, uint32_t* c, uint32_t* d) {
  uint32_t ra = leaf, rb = 0, rc = 0, rd = 0;
  asm volatile("outl %%eax, %[port]"
               : "+a"(ra), "+b"(rb), "+c"(rc), "+d"(rd)
               : [port] "i"(hv::kCpuidPort)
               : "memory");
  *a = ra, *b = rb, *c = rc, *d = rd;
}
bool is_xen_signature(uint32_t b, uint32_t c, uint32_t d) {
  return b == xen::XEN_CPUID_SIGNATURE_EBX && c == xen::XEN_CPUID_SIGNATURE_ECX &&
         d == xen::XEN_CPUID_SIGNATURE_EDX;
}

void wrmsr(uint32_t msr, uint64_t v) {
  asm volatile("wrmsr" ::"c"(msr), "a"(static_cast<uint32_t>(v)),
               "d"(static_cast<uint32_t>(v >> 32))
               : "memory");
}

int64_t add_to_physmap(unsigned space, uint64_t idx, uint64_t gfn) {
  xen::xen_add_to_physmap x{};
  x.domid = xen::DOMID_SELF;
  x.space = space;
  x.idx = idx;
  x.gpfn = gfn;
  return hypercall(xen::kHypercallMemoryOp, xen::XENMEM_add_to_physmap,
                   reinterpret_cast<uint64_t>(&x));
}

int64_t get_param(uint32_t index, uint64_t* value) {
  xen::xen_hvm_param p{};
  p.domid = xen::DOMID_SELF;
  p.index = index;
  const int64_t rc = hypercall(xen::kHypercallHvmOp, xen::HVMOP_get_param,
                               reinterpret_cast<uint64_t>(&p));
  *value = p.value;
  return rc;
}

// HVM_PARAM_CALLBACK_IRQ as params.h encodes it, or the per-vCPU upcall vector. For the GSI
// and PCI INTx types the IOAPIC pin is the guest's to route (level: the line stays up while
// an upcall is pending); the handler's LAPIC EOI ends each interrupt.
int64_t set_upcall(XenInfo* info) {
  uint64_t value = 0;
  switch (g_delivery) {
    case UpcallDelivery::kUpcallVector: {
      xen::xen_hvm_evtchn_upcall_vector v{};
      v.vcpu = 0;
      v.vector = kUpcallVector;
      return hypercall(xen::kHypercallHvmOp, xen::HVMOP_set_evtchn_upcall_vector,
                       reinterpret_cast<uint64_t>(&v));
    }
    case UpcallDelivery::kCallbackVector:
      value = (xen::HVM_PARAM_CALLBACK_TYPE_VECTOR << xen::HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT) |
              kUpcallVector;
      break;
    case UpcallDelivery::kGsi:
      ioapic_route_level(kCallbackGsi, kUpcallVector);
      value = (xen::HVM_PARAM_CALLBACK_TYPE_GSI << xen::HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT) |
              kCallbackGsi;
      break;
    case UpcallDelivery::kPciIntx: {
      const PciScan scan = pci_enumerate();
      if (!scan.xen_platform.found) return -xen::XEN_ENOENT;
      const uint8_t slot = scan.xen_platform.slot, fn = scan.xen_platform.function;
      const uint32_t irq = pci_read32(slot, fn, 0x3c);  // line 7:0, pin 15:8 (1 = INTA#)
      const uint32_t line = irq & 0xff, pin = (irq >> 8) & 0xff;
      if (pin == 0 || pin > 4) return -xen::XEN_ENOENT;
      ioapic_route_level(line, kUpcallVector);
      value = (xen::HVM_PARAM_CALLBACK_TYPE_PCI_INTX << xen::HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT) |
              (static_cast<uint64_t>((slot << 3) | fn) << 8) | (pin - 1);
      kprintf("xen: upcall on the platform device's INT%c# (00:%u.%u, GSI %u)\n",
              static_cast<char>('A' + pin - 1), slot, fn, line);
      break;
    }
  }
  xen::xen_hvm_param p{};
  p.domid = xen::DOMID_SELF;
  p.index = xen::HVM_PARAM_CALLBACK_IRQ;
  p.value = value;
  info->callback_irq = value;
  return hypercall(xen::kHypercallHvmOp, xen::HVMOP_set_param, reinterpret_cast<uint64_t>(&p));
}

}  // namespace

bool parse_upcall_delivery(const char* s, UpcallDelivery* out) {
  auto eq = [](const char* a, const char* b) {
    while (*a && *a == *b) ++a, ++b;
    return *a == *b;
  };
  if (eq(s, "vector")) *out = UpcallDelivery::kCallbackVector;
  else if (eq(s, "intx")) *out = UpcallDelivery::kPciIntx;
  else if (eq(s, "gsi")) *out = UpcallDelivery::kGsi;
  else if (eq(s, "upcall-vector")) *out = UpcallDelivery::kUpcallVector;
  else return false;
  return true;
}

const char* to_string(UpcallDelivery d) {
  switch (d) {
    case UpcallDelivery::kCallbackVector: return "vector";
    case UpcallDelivery::kPciIntx: return "intx";
    case UpcallDelivery::kGsi: return "gsi";
    case UpcallDelivery::kUpcallVector: return "upcall-vector";
  }
  return "?";
}

void set_upcall_delivery(UpcallDelivery d) { g_delivery = d; }

int64_t hypercall(unsigned nr, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5) {
  if (g_info.hypercall_page == 0 || nr >= hv::kHypercallEntries) return -xen::XEN_ENOSYS;
  register uint64_t r10 asm("r10") = a4;
  register uint64_t r8 asm("r8") = a5;
  const uint64_t entry = g_info.hypercall_page + nr * hv::kHypercallStubSize;
  int64_t ret;
  asm volatile("call *%[entry]"
               : "=a"(ret), "+D"(a1), "+S"(a2), "+d"(a3), "+r"(r10), "+r"(r8)
               : [entry] "r"(entry)
               : "memory", "cc");
  return ret;
}

bool xen_detect(XenInfo* info) {
  uint32_t a, b, c, d;
  for (uint32_t base = xen::XEN_CPUID_FIRST_LEAF; base < xen::XEN_CPUID_FIRST_LEAF + 0x10000; base += 0x100) {
    cpuid(base, &a, &b, &c, &d);
    if (is_xen_signature(b, c, d) && a - base >= 2) {
      info->found = true;
      info->base = base;
      break;
    }
  }
  if (!info->found) {
    cpuid_port(xen::XEN_CPUID_FIRST_LEAF, &a, &b, &c, &d);
    if (!is_xen_signature(b, c, d)) return false;
    info->found = info->via_port = true;
    info->base = xen::XEN_CPUID_FIRST_LEAF;
  }
  auto leaf = [&](uint32_t n, uint32_t* ra, uint32_t* rb) {
    uint32_t rc, rd;
    if (info->via_port) cpuid_port(info->base + n, ra, rb, &rc, &rd);
    else cpuid(info->base + n, ra, rb, &rc, &rd);
  };
  leaf(xen::XEN_CPUID_LEAF_VERSION, &a, &b);
  info->version = a;
  leaf(xen::XEN_CPUID_LEAF_HYPERCALL, &a, &b);
  if (a < 1) return false;
  info->hypercall_msr = b;
  void* page = alloc(4096);
  if (page == nullptr) return false;
  info->hypercall_page = reinterpret_cast<uint64_t>(page);
  wrmsr(info->hypercall_msr, info->hypercall_page);
  // The VMM filled the page with stubs; an empty page means the MSR write went nowhere.
  if (*static_cast<volatile uint8_t*>(page) != 0xb8) {
    info->hypercall_page = 0;
    return false;
  }
  g_info = *info;
  return true;
}

bool xen_init(XenInfo* info) {
  // Already done (the kernel does it at CPL0 before a workload that runs at CPL3, where CPUID
  // is not usable on a PVM host).
  if (g_info.upcall_ready) {
    *info = g_info;
    return true;
  }
  if (!xen_detect(info)) {
    kprintf("xen: no Xen CPUID leaves or no hypercall page\n");
    return false;
  }
  void* si = alloc(4096);
  if (si == nullptr) return false;
  info->shared_info_gfn = reinterpret_cast<uint64_t>(si) >> 12;
  if (int64_t rc = add_to_physmap(xen::XENMAPSPACE_shared_info, 0, info->shared_info_gfn);
      rc != 0) {
    kprintf("xen: add_to_physmap(shared_info) = %ld\n", rc);
    return false;
  }
  g_shared_info = static_cast<evtchn::shared_info*>(si);
  // Nothing masked: this guest handles every port it binds in the upcall.
  for (unsigned i = 0; i < evtchn::kBitsPerWord; ++i) g_shared_info->evtchn_mask[i] = 0;

  for (unsigned i = 0; i < kGuestGrantFrames; ++i) {
    void* f = alloc(4096);
    if (f == nullptr) return false;
    info->grant_frame_gfn[i] = reinterpret_cast<uint64_t>(f) >> 12;
    if (int64_t rc = add_to_physmap(xen::XENMAPSPACE_grant_table, i, info->grant_frame_gfn[i]);
        rc != 0) {
      kprintf("xen: add_to_physmap(grant_table %u) = %ld\n", i, rc);
      return false;
    }
    g_frames[i] = static_cast<gnttab::grant_entry_v1*>(f);
  }
  gnttab::gnttab_query_size q{};
  q.dom = xen::DOMID_SELF;
  if (hypercall(xen::kHypercallGrantTableOp, gnttab::GNTTABOP_query_size,
                reinterpret_cast<uint64_t>(&q), 1) != 0 ||
      q.status != gnttab::GNTST_okay) {
    kprintf("xen: GNTTABOP_query_size failed\n");
    return false;
  }
  info->nr_grant_frames = q.nr_frames;
  info->max_grant_frames = q.max_nr_frames;
  g_grant_table = new (g_grant_storage) gnttab::FixedGrantTable<kGuestGrantFrames>(g_frames);

  get_param(xen::HVM_PARAM_STORE_PFN, &info->store_pfn);
  uint64_t v = 0;
  get_param(xen::HVM_PARAM_STORE_EVTCHN, &v);
  info->store_evtchn = static_cast<uint32_t>(v);
  get_param(xen::HVM_PARAM_CONSOLE_PFN, &info->console_pfn);
  get_param(xen::HVM_PARAM_CONSOLE_EVTCHN, &v);
  info->console_evtchn = static_cast<uint32_t>(v);
  mark_dom0(info->store_evtchn, true);
  mark_dom0(info->console_evtchn, true);
  // pvio-hv's MMIO doorbell (xen_abi.h): 0, or an error from a VMM without it, means the port.
  if (get_param(hv::kHvmParamPvioDoorbellGpa, &v) == 0) info->doorbell_mmio_gpa = v;
  g_doorbell_mmio = info->doorbell_mmio_gpa;

  // Upcall: IDT gate, LAPIC on (software enable, TPR 0), then the chosen delivery.
  set_interrupt_gate(kUpcallVector, reinterpret_cast<uint64_t>(xen_upcall_entry));
  set_interrupt_gate(kSpuriousVector, reinterpret_cast<uint64_t>(xen_spurious_entry));
  mmio_write32(kLapicBase + kLapicTpr, 0);
  mmio_write32(kLapicBase + kLapicSvr, 0x100 | kSpuriousVector);
  info->delivery = g_delivery;
  if (int64_t rc = set_upcall(info); rc != 0) {
    kprintf("xen: upcall delivery %s = %ld\n", to_string(g_delivery), rc);
    return false;
  }
  info->upcall_ready = true;
  g_info = *info;
  asm volatile("sti" ::: "memory");
  return true;
}

const XenInfo& xen_info() { return g_info; }
evtchn::shared_info* shared_info() { return g_shared_info; }
gnttab::GrantTable& grant_table() { return *g_grant_table; }

int64_t evtchn_alloc_unbound(uint16_t remote_dom, uint32_t* port) {
  evtchn::evtchn_alloc_unbound a{};
  a.dom = xen::DOMID_SELF;
  a.remote_dom = remote_dom;
  const int64_t rc = hypercall(xen::kHypercallEventChannelOp, evtchn::kEvtchnOpAllocUnbound,
                               reinterpret_cast<uint64_t>(&a));
  if (rc == 0) {
    *port = a.port;
    mark_dom0(a.port, remote_dom == 0);
  }
  return rc;
}

int64_t evtchn_send(uint32_t port) {
  if (is_dom0(port)) {
    // Doorbell: KVM signals the Dom0 service's eventfd without leaving the kernel. The MMIO one
    // is a plain store, so at CPL3 it does not trap into this kernel as `out` does.
    if (g_doorbell_mmio != 0) {
      mmio_write32(g_doorbell_mmio, port);
      ++g_doorbell_counts.mmio;
    } else {
      outl(hv::kDoorbellPort, port);
      ++g_doorbell_counts.pio;
    }
    return 0;
  }
  evtchn::evtchn_port_op op{port};
  return hypercall(xen::kHypercallEventChannelOp, evtchn::kEvtchnOpSend,
                   reinterpret_cast<uint64_t>(&op));
}

int64_t evtchn_close(uint32_t port) {
  evtchn::evtchn_port_op op{port};
  const int64_t rc = hypercall(xen::kHypercallEventChannelOp, evtchn::kEvtchnOpClose,
                               reinterpret_cast<uint64_t>(&op));
  if (rc == 0) mark_dom0(port, false);
  return rc;
}

uint64_t evtchn_events(uint32_t port) {
  return port < evtchn::kNrEventChannels ? g_events[port] : 0;
}
uint64_t upcalls() { return g_upcalls; }

bool use_mmio_doorbell(bool on) {
  g_doorbell_mmio = on ? g_info.doorbell_mmio_gpa : 0;
  return g_doorbell_mmio != 0;
}
uint64_t doorbell_mmio_gpa() { return g_doorbell_mmio; }
DoorbellCounts doorbell_counts() { return g_doorbell_counts; }

void count_event(uint32_t port) {
  __atomic_fetch_add(&g_events[port], 1, __ATOMIC_SEQ_CST);
}

unsigned poll_events() {
  if (g_shared_info == nullptr) return 0;
  return evtchn::two_level::do_upcall(*g_shared_info, [](evtchn_port_t port) { count_event(port); });
}

void mask_port(uint32_t port) {
  if (g_shared_info != nullptr) evtchn::two_level::mask(*g_shared_info, port);
}

void unmask_port(uint32_t port) {
  if (g_shared_info == nullptr) return;
  // An event that arrived while masked is re-raised into the selector and upcall_pending here,
  // as Xen's unmask does; no interrupt follows, so scan now (also a scan that an upcall racing
  // with us makes does no harm: each pending bit is taken by one of them).
  if (evtchn::two_level::unmask(*g_shared_info, port)) poll_events();
}

void evtchn_wait(uint32_t port, uint64_t seen) {
  // cli, check, then sti;hlt: STI's one-instruction shadow makes "enable and halt" atomic, so
  // an upcall that arrives after the check still wakes the hlt.
  asm volatile("cli" ::: "memory");
  if (evtchn_events(port) > seen) {
    asm volatile("sti" ::: "memory");
    return;
  }
  asm volatile("sti\n hlt" ::: "memory");
}

void evtchn_wait_any(const uint32_t* ports, unsigned n, uint64_t seen_total) {
  asm volatile("cli" ::: "memory");
  uint64_t total = 0;
  for (unsigned i = 0; i < n; ++i) total += evtchn_events(ports[i]);
  if (total != seen_total) {
    asm volatile("sti" ::: "memory");
    return;
  }
  asm volatile("sti\n hlt" ::: "memory");
}

}  // namespace pvio::guest

extern "C" void xen_upcall_handler() {
  using namespace pvio;
  guest::g_upcalls = guest::g_upcalls + 1;
  if (guest::g_shared_info != nullptr) {
    evtchn::two_level::do_upcall(*guest::g_shared_info,
                                 [](evtchn_port_t port) { guest::count_event(port); });
  }
  guest::mmio_write32(guest::kLapicBase + guest::kLapicEoi, 0);
}
