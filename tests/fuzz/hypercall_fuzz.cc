// libFuzzer target over pvio-hv's hypercall dispatch (XenHvm, no KVM): the input is a short
// list of hypercalls (number and five argument registers) followed by guest RAM contents, the
// argument structs the calls point at. Whatever the guest passes, a call returns a value
// (>= 0 or -errno) without touching host memory outside the guest's RAM and Xen pages.
//
// HVM_PARAM_CALLBACK_IRQ of every type and HVMOP_set_evtchn_upcall_vector are reached through
// hvm_op like any other call; the host records nothing, so each route is accepted.
//
// SCHEDOP_block and SCHEDOP_poll are skipped: they wait (boundedly) for an event no one sends
// here, which only slows the run down.
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "pvio/hypervisor/xen_hvm.h"

namespace {

using namespace pvio;
using namespace pvio::hv;

constexpr std::uint64_t kRam = 1 << 20;
constexpr std::uint64_t kArgArea = 0x10000;  // where the input's RAM bytes land
constexpr unsigned kMaxCalls = 8;
constexpr std::size_t kCallBytes = 2 + 5 * 8;

struct NullHost final : XenHost {
  bool map_xen_page(std::uint64_t, std::uint64_t) override { return true; }
  bool restore_ram_page(std::uint64_t) override { return true; }
  int set_doorbell(evtchn_port_t, int, bool) override { return 0; }
  std::uint64_t doorbell_mmio_gpa() const override { return 0; }
  int route_upcall(const UpcallRoute&) override { return 0; }
  void shutdown(ShutdownReason, std::uint32_t) override {}
};

// Guest RAM and the Xen pages, page aligned, allocated once; cleared for every input.
struct Arena {
  Arena() : bytes(kRam + kXenPagesBytes + 4096) {
    base = reinterpret_cast<std::uint8_t*>(
        (reinterpret_cast<std::uintptr_t>(bytes.data()) + 4095) & ~std::uintptr_t{4095});
    memory.add_region(0, kRam, base);
    memory.add_region(kXenPagesGpa, kXenPagesBytes, base + kRam);
    upcall_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }
  std::vector<std::uint8_t> bytes;
  std::uint8_t* base;
  GuestMemory memory;
  int upcall_fd;
};

// The hypercall numbers pvio-hv serves, and a few it does not.
constexpr unsigned kNumbers[] = {
    xen::kHypercallMemoryOp, xen::kHypercallGrantTableOp, xen::kHypercallEventChannelOp,
    xen::kHypercallHvmOp,    xen::kHypercallSchedOp,      xen::kHypercallConsoleIo,
    xen::kHypercallXenVersion, xen::kHypercallSetTimerOp,  xen::kHypercallVcpuOp,
    xen::kHypercallPhysdevOp, 0, 63, 1u << 20};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static Arena* arena = new Arena;  // reachable for LeakSanitizer
  if (size < 1) return 0;
  const unsigned calls = 1 + data[0] % kMaxCalls;
  std::size_t at = 1;
  if (size < at + calls * kCallBytes) return 0;
  std::memset(arena->bytes.data(), 0, arena->bytes.size());
  const std::size_t ram_bytes = std::min<std::size_t>(size - at - calls * kCallBytes, kRam - kArgArea);
  std::memcpy(arena->base + kArgArea, data + at + calls * kCallBytes, ram_bytes);

  NullHost host;
  XenHvmConfig c;
  c.domid = 3;
  c.ram_bytes = kRam;
  XenHvm xen(c, arena->memory, arena->base + kRam, -1, std::span<const control::RegionDesc>{},
             arena->upcall_fd, host);
  for (unsigned i = 0; i < calls; ++i, at += kCallBytes) {
    HypercallArgs h;
    h.nr = kNumbers[data[at] % std::size(kNumbers)];
    const std::uint8_t near = data[at + 1];  // bit k: argument k is an address in the arg area
    for (unsigned k = 0; k < 5; ++k) {
      std::uint64_t v;
      std::memcpy(&v, data + at + 2 + 8 * k, 8);
      h.arg[k] = (near >> k) & 1 ? kArgArea + v % (kRam - kArgArea) : v;
    }
    // Bit 5: a small sub-op, so every sub-command (HVMOP_set_evtchn_upcall_vector is 23) comes
    // up often rather than once in 2^64.
    if ((near >> 5) & 1) h.arg[0] %= 32;
    if (h.nr == xen::kHypercallSchedOp &&
        (h.arg[0] == xen::SCHEDOP_block || h.arg[0] == xen::SCHEDOP_poll))
      continue;
    // Translation as the vCPU does it under an identity map; odd addresses above 4 GiB fail
    // like a missing page-table entry.
    h.translate = [](std::uint64_t gva, std::uint64_t* gpa) {
      if (gva >= (std::uint64_t{1} << 32) && (gva & 1)) return false;
      *gpa = gva;
      return true;
    };
    const std::int64_t r = xen.hypercall(h);
    if (r > 0 && r > (std::int64_t{1} << 40)) std::abort();  // no call returns a host pointer
  }
  return 0;
}
