// hypervisor.h on an x86-64 Windows HVM guest of Xen or pvio-hv: hypercalls through the page
// Xen writes at the MSR CPUID names (hw.h), the per-domain pages placed over pages of our own
// RAM with XENMEM_add_to_physmap, the xenstore ring mapped from HVM_PARAM_STORE_PFN, and the
// emulated-device unplug from the registry and ports 0x10/0x12. Runs only on a real guest
// (docs/windows-pv.md); the host tests use tests/windows-pv/env/hypervisor_domain.cc.
#include "hypervisor.h"

#include "hw.h"
#include "pvio/xen/event_channel.h"
#include "pvio/xen/hvm/hvm_op.h"
#include "pvio/xen/hvm/params.h"
#include "pvio/xen/hvm/pvdrivers.h"
#include "pvio/xen/memory.h"
#include "unplug.h"

namespace pvio::windows::xenbus {

namespace {

constexpr unsigned kHypercallMemoryOp = 12;
constexpr unsigned kHypercallEventChannelOp = 32;
constexpr unsigned kHypercallHvmOp = 34;
constexpr std::uint32_t kGrantFrames = 4;
// pvio's driver set has no registered product number (pvdrivers.h): the experimental one.
constexpr std::uint16_t kProduct = xen::kPvdriversProductExperimental;
constexpr std::uint32_t kBuild = 1;

void* g_hypercall_page = nullptr;
void* g_shared_info = nullptr;
void* g_grant_frames = nullptr;
void* g_store = nullptr;

PVOID alloc_pages(SIZE_T bytes) {
  PHYSICAL_ADDRESS low, high, boundary;
  low.QuadPart = 0;
  high.QuadPart = ~0ull >> 1;
  boundary.QuadPart = 0;
  return MmAllocateContiguousMemorySpecifyCache(bytes, low, high, boundary, MmCached);
}

std::uint64_t gfn_of(PVOID va) { return static_cast<std::uint64_t>(MmGetPhysicalAddress(va).QuadPart) >> 12; }

long hypercall(unsigned op, std::uint64_t a1, void* a2) {
  return hypercall2(g_hypercall_page, op, a1, reinterpret_cast<std::uint64_t>(a2));
}

long add_to_physmap(unsigned space, std::uint64_t idx, std::uint64_t gpfn) {
  xen::xen_add_to_physmap a{};
  a.domid = kDomidSelf;
  a.space = space;
  a.idx = idx;
  a.gpfn = gpfn;
  return hypercall(kHypercallMemoryOp, xen::XENMEM_add_to_physmap, &a);
}

long get_param(std::uint32_t index, std::uint64_t* value) {
  xen::xen_hvm_param p{};
  p.domid = kDomidSelf;
  p.index = index;
  const long rc = hypercall(kHypercallHvmOp, xen::HVMOP_get_param, &p);
  *value = p.value;
  return rc;
}

// A DWORD under HKLM\SYSTEM\CurrentControlSet\Services\<key>; `fallback` when absent.
ULONG read_dword(const WCHAR* key_path, const WCHAR* name, ULONG fallback, bool* key_exists = nullptr) {
  auto ustr = [](const WCHAR* s) {
    UNICODE_STRING u{};
    USHORT n = 0;
    while (s[n] != 0) ++n;
    u.Length = static_cast<USHORT>(n * 2);
    u.MaximumLength = u.Length;
    u.Buffer = const_cast<PWSTR>(s);
    return u;
  };
  UNICODE_STRING path = ustr(key_path);
  OBJECT_ATTRIBUTES oa{};
  oa.Length = sizeof oa;
  oa.ObjectName = &path;
  oa.Attributes = OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE;
  HANDLE key = nullptr;
  const bool exists = NT_SUCCESS(ZwOpenKey(&key, KEY_READ, &oa));
  if (key_exists != nullptr) *key_exists = exists;
  if (!exists) return fallback;
  UNICODE_STRING value = ustr(name);
  alignas(8) UCHAR buf[sizeof(KEY_VALUE_PARTIAL_INFORMATION) + 8];
  ULONG got = 0;
  ULONG v = fallback;
  if (NT_SUCCESS(ZwQueryValueKey(key, &value, KeyValuePartialInformation, buf, sizeof buf, &got))) {
    const auto* info = reinterpret_cast<const KEY_VALUE_PARTIAL_INFORMATION*>(buf);
    if (info->Type == REG_DWORD && info->DataLength == 4) __builtin_memcpy(&v, info->Data, 4);
  }
  ZwClose(key);
  return v;
}

#define SERVICES u"\\Registry\\Machine\\SYSTEM\\CurrentControlSet\\Services\\"
const WCHAR* w(const char16_t* s) { return reinterpret_cast<const WCHAR*>(s); }

}  // namespace

NTSTATUS hv_connect(XenPages* out) {
  XenCpuid cpu;
  if (!find_xen(cpu)) return STATUS_NO_SUCH_DEVICE;
  g_hypercall_page = alloc_pages(4096);
  g_shared_info = alloc_pages(4096);
  g_grant_frames = alloc_pages(kGrantFrames * 4096);
  if (g_hypercall_page == nullptr || g_shared_info == nullptr || g_grant_frames == nullptr) {
    hv_disconnect();
    return STATUS_INSUFFICIENT_RESOURCES;
  }
  install_hypercall_page(cpu, static_cast<std::uint64_t>(MmGetPhysicalAddress(g_hypercall_page).QuadPart));
  // Xen puts its page at the frame of ours (the RAM page under it is given up).
  if (add_to_physmap(xen::XENMAPSPACE_shared_info, 0, gfn_of(g_shared_info)) != 0) {
    hv_disconnect();
    return STATUS_UNSUCCESSFUL;
  }
  for (std::uint32_t i = 0; i < kGrantFrames; ++i) {
    if (add_to_physmap(xen::XENMAPSPACE_grant_table, i,
                       gfn_of(static_cast<char*>(g_grant_frames) + i * 4096)) != 0) {
      hv_disconnect();
      return STATUS_UNSUCCESSFUL;
    }
  }
  std::uint64_t store_pfn = 0, store_port = 0;
  if (get_param(xen::HVM_PARAM_STORE_PFN, &store_pfn) != 0 ||
      get_param(xen::HVM_PARAM_STORE_EVTCHN, &store_port) != 0) {
    hv_disconnect();
    return STATUS_UNSUCCESSFUL;
  }
  PHYSICAL_ADDRESS pa;
  pa.QuadPart = static_cast<LONGLONG>(store_pfn << 12);
  g_store = MmMapIoSpace(pa, 4096, MmCached);
  if (g_store == nullptr) {
    hv_disconnect();
    return STATUS_INSUFFICIENT_RESOURCES;
  }
  out->shared_info = static_cast<xen::shared_info*>(g_shared_info);
  out->grant_entries = static_cast<gnttab::grant_entry_v1*>(g_grant_frames);
  out->nr_grant_entries = kGrantFrames * gnttab::kEntriesPerFrame;
  out->store = static_cast<xs::xenstore_domain_interface*>(g_store);
  out->store_port = static_cast<evtchn_port_t>(store_port);
  return STATUS_SUCCESS;
}

// The shared_info and grant frames stay Xen's (they cannot be handed back as RAM), so their
// pages are not freed: a restarted bus maps them again over fresh pages.
void hv_disconnect() {
  if (g_store != nullptr) MmUnmapIoSpace(g_store, 4096);
  g_store = nullptr;
}

long hv_set_callback_via(std::uint64_t value) {
  xen::xen_hvm_param p{};
  p.domid = kDomidSelf;
  p.index = xen::HVM_PARAM_CALLBACK_IRQ;
  p.value = value;
  return hypercall(kHypercallHvmOp, xen::HVMOP_set_param, &p);
}

long hv_evtchn_alloc_unbound(domid_t remote, evtchn_port_t* port) {
  evtchn::evtchn_alloc_unbound a{};
  a.dom = kDomidSelf;
  a.remote_dom = remote;
  const long rc = hypercall(kHypercallEventChannelOp, evtchn::kEvtchnOpAllocUnbound, &a);
  if (rc == 0) *port = a.port;
  return rc;
}

long hv_evtchn_close(evtchn_port_t port) {
  evtchn::evtchn_port_op op{port};
  return hypercall(kHypercallEventChannelOp, evtchn::kEvtchnOpClose, &op);
}
long hv_evtchn_send(evtchn_port_t port) {
  evtchn::evtchn_port_op op{port};
  return hypercall(kHypercallEventChannelOp, evtchn::kEvtchnOpSend, &op);
}
long hv_evtchn_unmask(evtchn_port_t port) {
  evtchn::evtchn_port_op op{port};
  return hypercall(kHypercallEventChannelOp, evtchn::kEvtchnOpUnmask, &op);
}

UnplugOutcome hv_unplug_emulated_devices() {
  UnplugState s;
  const WCHAR* params = w(SERVICES u"xenbus\\Parameters");
  s.request_disks = read_dword(params, w(u"RequestDisks"), 0) == 1;
  s.request_nics = read_dword(params, w(u"RequestNics"), 0) == 1;
  s.keep_emulated = read_dword(params, w(u"KeepEmulated"), 0) == 1;
  s.xenvbd_boot_start = read_dword(w(SERVICES u"xenvbd"), w(u"Start"), 4) == 0;
  read_dword(w(SERVICES u"xennet"), w(u"Start"), 4, &s.xennet_installed);
  const UnplugProbe p = probe_unplug(kProduct, kBuild);
  s.protocol_present = p.protocol_present;
  s.product_accepted = p.product_accepted;
  const UnplugDecision d = decide_unplug(s);
  if (d.mask != 0) write_unplug_mask(d.mask);
  return UnplugOutcome{p.protocol_present, d.mask, unplug_reason_name(d.reason)};
}

}  // namespace pvio::windows::xenbus
