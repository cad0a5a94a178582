// KVM VM set-up, long-mode boot state and the vCPU run loop with crash reporting.
#include "pvio/hypervisor/vm.h"

#include <cpuid.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "pvio/hv_abi/boot_info.h"
#include "pvio/xen/xen.h"
#include "pvio/xen/memory.h"
#include "pvio/xen/grant_table.h"
#include "pvio/xen/event_channel.h"
#include "pvio/xen/hvm/params.h"
#include "pvio/xen/hvm/hvm_op.h"
#include "pvio/xen/sched.h"
#include "pvio/xen/version.h"
#include "pvio/xen/arch-x86/cpuid.h"
#include "pvio/xen/hvm/start_info.h"
#include "pvio/hv_abi/ports.h"

namespace pvio::hv {

namespace {

constexpr int kKickSignal = SIGUSR1;
constexpr std::uint64_t kTssAddr = 0xfffbd000;
constexpr std::uint64_t kIdentityMapAddr = 0xfffbc000;

// x86 control-register and EFER bits used for the long-mode entry state.
constexpr std::uint64_t kCr0Pe = 1u << 0, kCr0Mp = 1u << 1, kCr0Et = 1u << 4, kCr0Ne = 1u << 5,
                        kCr0Wp = 1u << 16, kCr0Pg = 1u << 31;
constexpr std::uint64_t kCr4Pae = 1u << 5;
constexpr std::uint64_t kEferLme = 1u << 8, kEferLma = 1u << 10;
constexpr std::uint64_t kPtePresent = 1, kPteWrite = 2, kPteUser = 4, kPtePs = 0x80;
constexpr std::uint64_t kPage = 4096;
// Above-RAM frames a guest may put Xen pages at (Xen lets a PVH guest pick any free gfn):
// up to the 32-bit PCI hole, which holds the Xen pages, the doorbell page, IOAPIC and LAPIC.
constexpr std::uint64_t kHighXenPageLimitGfn = 0xC0000000 >> 12;
// KVM memslots: 0 RAM, 1 the Xen pages at kXenPagesGpa, 2 + page: Xen page `page` above RAM.
constexpr std::uint32_t kHighSlotBase = 2;
// Local APIC registers used to let the 8259 deliver the upcall (SDM vol. 3, 10.5.1).
constexpr std::size_t kApicLvt0 = 0x350;
constexpr std::uint32_t kApicDeliveryExtInt = 0x700;
constexpr std::uint64_t kMsrIa32Tsc = 0x10;

// <linux/kvm.h> declares the arrays of kvm_cpuid2 and kvm_msrs with __DECLARE_FLEX_ARRAY, whose
// empty struct member has size 1 in C++ (0 in C): compiled as C++ the entries move to offset
// 12/16 and KVM_GET_SUPPORTED_CPUID / KVM_SET_CPUID2 / KVM_GET_MSRS encode the wrong size, so
// the kernel answers EINVAL. The kernel's layout is an 8-byte header with the entries right
// after it; these are the ioctls as C computes them.
struct KvmArrayHeader {
  std::uint32_t count;  // nent / nmsrs
  std::uint32_t padding;
};
static_assert(sizeof(KvmArrayHeader) == 8);
const unsigned long kKvmGetSupportedCpuid = _IOWR(KVMIO, 0x05, KvmArrayHeader);
const unsigned long kKvmSetCpuid2 = _IOW(KVMIO, 0x90, KvmArrayHeader);
const unsigned long kKvmGetMsrs = _IOWR(KVMIO, 0x88, KvmArrayHeader);
constexpr std::uint32_t kMsrEfer = 0xc0000080;
constexpr std::uint64_t kEferSce = 1u << 0, kEferNxe = 1u << 11;

[[noreturn]] void fail(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

void kick_handler(int) {}

std::string exit_reason_name(std::uint32_t r) {
  switch (r) {
    case KVM_EXIT_SHUTDOWN: return "triple fault (KVM_EXIT_SHUTDOWN)";
    case KVM_EXIT_INTERNAL_ERROR: return "KVM internal error (KVM_EXIT_INTERNAL_ERROR)";
    case KVM_EXIT_FAIL_ENTRY: return "VM entry failed (KVM_EXIT_FAIL_ENTRY)";
    default: return "unhandled exit reason " + std::to_string(r);
  }
}

}  // namespace

bool Vm::kvm_available(std::string* why) {
  const int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    if (why) *why = std::string("cannot open /dev/kvm: ") + std::strerror(errno);
    return false;
  }
  const int version = ::ioctl(fd, KVM_GET_API_VERSION, 0);
  ::close(fd);
  if (version != KVM_API_VERSION) {
    if (why) *why = "unexpected KVM API version " + std::to_string(version);
    return false;
  }
  return true;
}

Vm::Vm(const VmConfig& config) : config_(config) {
  if (config.mem_bytes < kMinGuestMemory || config.mem_bytes > kMaxGuestMemory)
    throw std::invalid_argument("guest memory must be between 4 MiB and 3 GiB");
  if (config.vcpus == 0 || config.vcpus > kMaxVcpus)
    throw std::invalid_argument("vcpus must be between 1 and 8");
  if (config.cmdline.size() >= kBootCmdlineMax)
    throw std::invalid_argument("command line longer than 2047 bytes");
  mem_bytes_ = (config.mem_bytes + 0x1fffff) & ~std::uint64_t{0x1fffff};

  kvm_fd_ = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (kvm_fd_ < 0) fail("open /dev/kvm");
  if (::ioctl(kvm_fd_, KVM_GET_API_VERSION, 0) != KVM_API_VERSION)
    throw std::runtime_error("unsupported KVM API version");
  vm_fd_ = ::ioctl(kvm_fd_, KVM_CREATE_VM, 0);
  if (vm_fd_ < 0) fail("KVM_CREATE_VM");
  // Needed by VMX for real-mode emulation; harmless for a guest entered in long mode.
  if (::ioctl(vm_fd_, KVM_SET_TSS_ADDR, kTssAddr) < 0) fail("KVM_SET_TSS_ADDR");
  std::uint64_t map_addr = kIdentityMapAddr;
  if (::ioctl(vm_fd_, KVM_SET_IDENTITY_MAP_ADDR, &map_addr) < 0) fail("KVM_SET_IDENTITY_MAP_ADDR");
  if (::ioctl(vm_fd_, KVM_CREATE_IRQCHIP, 0) < 0) fail("KVM_CREATE_IRQCHIP");

  memfd_ = ::memfd_create("pvio-guest-ram", MFD_CLOEXEC);
  if (memfd_ < 0) fail("memfd_create");
  // RAM, then the Xen pages (shared_info, xenstore and console rings, grant frames).
  const std::uint64_t memfd_bytes = mem_bytes_ + kXenPagesBytes;
  if (::ftruncate(memfd_, static_cast<off_t>(memfd_bytes)) < 0) fail("ftruncate guest RAM");
  void* p = ::mmap(nullptr, memfd_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_, 0);
  if (p == MAP_FAILED) fail("mmap guest RAM");
  ram_ = static_cast<std::uint8_t*>(p);
  kvm_userspace_memory_region region{};
  region.slot = 0;
  region.guest_phys_addr = 0;
  region.memory_size = mem_bytes_;
  region.userspace_addr = reinterpret_cast<std::uint64_t>(ram_);
  if (::ioctl(vm_fd_, KVM_SET_USER_MEMORY_REGION, &region) < 0) fail("KVM_SET_USER_MEMORY_REGION");
  memory_.add_region(0, mem_bytes_, ram_);
  region.slot = 1;
  region.guest_phys_addr = kXenPagesGpa;
  region.memory_size = kXenPagesBytes;
  region.userspace_addr = reinterpret_cast<std::uint64_t>(ram_ + mem_bytes_);
  if (::ioctl(vm_fd_, KVM_SET_USER_MEMORY_REGION, &region) < 0) fail("KVM_SET_USER_MEMORY_REGION (Xen pages)");
  memory_.add_region(kXenPagesGpa, kXenPagesBytes, ram_ + mem_bytes_);

  const int run_size = ::ioctl(kvm_fd_, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size <= 0) fail("KVM_GET_VCPU_MMAP_SIZE");
  run_size_ = static_cast<std::size_t>(run_size);
  for (unsigned i = 0; i < config.vcpus; ++i) {
    auto vcpu = std::make_unique<Vcpu>();
    vcpu->index = i;
    vcpu->fd = ::ioctl(vm_fd_, KVM_CREATE_VCPU, i);
    if (vcpu->fd < 0) fail("KVM_CREATE_VCPU");
    void* r = ::mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
    if (r == MAP_FAILED) fail("mmap kvm_run");
    vcpu->run = static_cast<kvm_run*>(r);
    setup_cpuid(*vcpu);
    vcpus_.push_back(std::move(vcpu));
  }
  const int khz = ::ioctl(vcpus_[0]->fd, KVM_GET_TSC_KHZ, 0);
  tsc_khz_ = khz > 0 ? static_cast<std::uint64_t>(khz) : 0;
  setup_xen_interface();

  struct sigaction sa{};
  sa.sa_handler = kick_handler;  // no SA_RESTART: KVM_RUN must return EINTR
  sigemptyset(&sa.sa_mask);
  ::sigaction(kKickSignal, &sa, nullptr);
}

Vm::~Vm() {
  xen_.reset();  // stops the control thread; Dom0 clients go before the memory does
  for (auto& v : vcpus_) {
    if (v->thread.joinable()) v->thread.join();
    if (v->run) ::munmap(v->run, run_size_);
    if (v->fd >= 0) ::close(v->fd);
  }
  if (ram_) ::munmap(ram_, mem_bytes_ + kXenPagesBytes);
  for (int fd : {upcall_fd_, memfd_, vm_fd_, kvm_fd_})
    if (fd >= 0) ::close(fd);
}

namespace {

// The host's own CPUID table, for KVMs that do not offer KVM_GET_SUPPORTED_CPUID (PVM): leaves
// with sub-leaves are enumerated the way the SDM describes for each.
std::vector<kvm_cpuid_entry2> host_cpuid() {
  std::vector<kvm_cpuid_entry2> out;
  auto add = [&](std::uint32_t fn, std::uint32_t idx, bool indexed) {
    kvm_cpuid_entry2 e{};
    e.function = fn;
    e.index = idx;
    e.flags = indexed ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
    __cpuid_count(fn, idx, e.eax, e.ebx, e.ecx, e.edx);
    out.push_back(e);
    return e;
  };
  std::uint32_t a, b, c, d;
  __cpuid(0, a, b, c, d);
  const std::uint32_t max_basic = a < 0x20 ? a : 0x20;
  for (std::uint32_t fn = 0; fn <= max_basic; ++fn) {
    switch (fn) {
      case 4:
        for (std::uint32_t i = 0; i < 16; ++i)
          if ((add(fn, i, true).eax & 0x1f) == 0) break;
        break;
      case 7: {
        const std::uint32_t n = add(fn, 0, true).eax;
        for (std::uint32_t i = 1; i <= n && i < 8; ++i) add(fn, i, true);
        break;
      }
      case 0xb:
      case 0x1f:
        for (std::uint32_t i = 0; i < 8; ++i)
          if (((add(fn, i, true).ecx >> 8) & 0xff) == 0) break;
        break;
      case 0xd:
        for (std::uint32_t i = 0; i < 64; ++i) add(fn, i, true);
        break;
      default:
        add(fn, 0, false);
    }
  }
  __cpuid(0x80000000, a, b, c, d);
  const std::uint32_t max_ext = a < 0x80000021 ? a : 0x80000021;
  for (std::uint32_t fn = 0x80000000; fn <= max_ext; ++fn) add(fn, 0, false);
  return out;
}

}  // namespace

void Vm::setup_cpuid(Vcpu& vcpu) {
  // Long mode needs CPUID.80000001h:EDX.LM visible to the guest or KVM refuses EFER.LME.
  std::vector<kvm_cpuid_entry2> entries;
  std::vector<std::uint8_t> storage;
  for (std::uint32_t n = 64;; n *= 2) {
    storage.assign(sizeof(KvmArrayHeader) + n * sizeof(kvm_cpuid_entry2), 0);
    auto* hdr = reinterpret_cast<KvmArrayHeader*>(storage.data());
    hdr->count = n;
    if (::ioctl(kvm_fd_, kKvmGetSupportedCpuid, storage.data()) == 0) {
      entries.resize(hdr->count);
      std::memcpy(entries.data(), storage.data() + sizeof(KvmArrayHeader),
                  hdr->count * sizeof(kvm_cpuid_entry2));
      break;
    }
    // A KVM without KVM_GET_SUPPORTED_CPUID: start from the host's table instead.
    if (errno == EINVAL) {
      entries = host_cpuid();
      break;
    }
    if (errno != E2BIG || n > 4096) fail("KVM_GET_SUPPORTED_CPUID");
  }
  std::erase_if(entries, [](const kvm_cpuid_entry2& e) {
    return e.function >= xen::XEN_CPUID_FIRST_LEAF && e.function < xen::XEN_CPUID_FIRST_LEAF + 0x100;
  });
  for (kvm_cpuid_entry2& e : entries) {
    if (e.function == 1) {
      e.ebx = (e.ebx & 0x00ffffffu) | (vcpu.index << 24);  // initial APIC ID
      e.ecx |= 1u << 31;                                   // running on a hypervisor
    }
    if (e.function == 0xb || e.function == 0x1f) e.edx = vcpu.index;  // x2APIC ID
  }
  // Xen's leaves (xen/arch-x86/cpuid.h): signature, version, hypercall page count and MSR.
  for (std::uint32_t leaf = xen::XEN_CPUID_FIRST_LEAF; leaf <= xen::XEN_CPUID_FIRST_LEAF + xen::XEN_CPUID_LEAF_HYPERCALL;
       ++leaf) {
    const hv::CpuidLeaf l = hv::cpuid_leaf(leaf);
    kvm_cpuid_entry2 e{};
    e.function = leaf;
    e.eax = l.eax;
    e.ebx = l.ebx;
    e.ecx = l.ecx;
    e.edx = l.edx;
    entries.push_back(e);
  }

  storage.assign(sizeof(KvmArrayHeader) + entries.size() * sizeof(kvm_cpuid_entry2), 0);
  reinterpret_cast<KvmArrayHeader*>(storage.data())->count =
      static_cast<std::uint32_t>(entries.size());
  std::memcpy(storage.data() + sizeof(KvmArrayHeader), entries.data(),
              entries.size() * sizeof(kvm_cpuid_entry2));
  // Where this is refused the guest keeps KVM's own CPUID and finds Xen's leaves through the
  // CPUID port instead (ports.h, kCpuidPort).
  features_.set_cpuid = ::ioctl(vcpu.fd, kKvmSetCpuid2, storage.data()) == 0;
}

void Vm::setup_xen_interface() {
  auto has = [this](long cap) { return ::ioctl(vm_fd_, KVM_CHECK_EXTENSION, cap) > 0; };
  features_.ioeventfd = has(KVM_CAP_IOEVENTFD);
  features_.irqfd = has(KVM_CAP_IRQFD);
  features_.irq_routing = has(KVM_CAP_IRQ_ROUTING);
  // The MMIO doorbell: try one MMIO ioeventfd on the doorbell page (and take it away again) so
  // the guest is only told about the page when KVM will serve it.
  if (features_.ioeventfd) {
    const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) fail("eventfd");
    kvm_ioeventfd io{};
    io.addr = hv::kDoorbellMmioGpa;
    io.len = 4;
    io.fd = fd;
    io.flags = KVM_IOEVENTFD_FLAG_DATAMATCH;
    io.datamatch = 0;
    if (::ioctl(vm_fd_, KVM_IOEVENTFD, &io) == 0) {
      io.flags |= KVM_IOEVENTFD_FLAG_DEASSIGN;
      features_.mmio_ioeventfd = ::ioctl(vm_fd_, KVM_IOEVENTFD, &io) == 0;
      if (!features_.mmio_ioeventfd) features_.mmio_ioeventfd_errno = errno;
    } else {
      features_.mmio_ioeventfd_errno = errno;
    }
    ::close(fd);
  }

  // The hypercall-page MSR: deny KVM the write so it exits to us (KVM_EXIT_X86_WRMSR).
  if (has(KVM_CAP_X86_USER_SPACE_MSR)) {
    kvm_enable_cap cap{};
    cap.cap = KVM_CAP_X86_USER_SPACE_MSR;
    cap.args[0] = KVM_MSR_EXIT_REASON_FILTER;
    features_.user_space_msr = ::ioctl(vm_fd_, KVM_ENABLE_CAP, &cap) == 0;
  }
  if (features_.user_space_msr && has(KVM_CAP_X86_MSR_FILTER)) {
    static std::uint8_t deny_one[1] = {0};
    kvm_msr_filter filter{};
    filter.flags = KVM_MSR_FILTER_DEFAULT_ALLOW;
    filter.ranges[0].flags = KVM_MSR_FILTER_WRITE;
    filter.ranges[0].nmsrs = 1;
    filter.ranges[0].base = hv::kHypercallMsr;
    filter.ranges[0].bitmap = deny_one;
    // EFER writes come to us too: KVM refuses EFER.LME unless the guest's CPUID shows long
    // mode, and PVM accepts no CPUID table, so a PVH kernel entering long mode itself (Mini-OS
    // sets LME before paging) would take a #GP. write_efer applies it with KVM_SET_SREGS.
    filter.ranges[1].flags = KVM_MSR_FILTER_WRITE;
    filter.ranges[1].nmsrs = 1;
    filter.ranges[1].base = kMsrEfer;
    filter.ranges[1].bitmap = deny_one;
    features_.msr_filter = ::ioctl(vm_fd_, KVM_X86_SET_MSR_FILTER, &filter) == 0;
  }
  kvm_translation tr{};
  tr.linear_address = kBootInfoGpa;
  features_.translate = ::ioctl(vcpus_[0]->fd, KVM_TRANSLATE, &tr) == 0 && tr.valid;

  // Upcall: an eventfd that KVM turns into an interrupt (irqfd). An MSI route to the vector
  // would be first choice, but PVM rejects KVM_SET_GSI_ROUTING; an IOAPIC pin, programmed with
  // the guest's vector when it sets HVM_PARAM_CALLBACK_IRQ, reaches the same LAPIC vector.
  upcall_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (upcall_fd_ < 0) fail("eventfd");
  kvm_irqchip chip{};
  chip.chip_id = KVM_IRQCHIP_IOAPIC;
  features_.ioapic_route = ::ioctl(vm_fd_, KVM_GET_IRQCHIP, &chip) == 0;
  if (features_.irqfd && features_.ioapic_route) {
    kvm_irqfd irqfd{};
    irqfd.fd = static_cast<std::uint32_t>(upcall_fd_);
    irqfd.gsi = kUpcallGsi;
    if (::ioctl(vm_fd_, KVM_IRQFD, &irqfd) < 0) features_.irqfd = false;
  }

  const control::RegionDesc regions[2] = {{0, mem_bytes_, 0},
                                          {kXenPagesGpa, kXenPagesBytes, mem_bytes_}};
  XenHvmConfig xc;
  xc.domid = config_.domid;
  xc.vcpus = config_.vcpus;
  xc.ram_bytes = mem_bytes_;
  xen_ = std::make_unique<XenHvm>(xc, memory_, ram_ + mem_bytes_, memfd_, regions, upcall_fd_,
                                  static_cast<XenHost&>(*this));
}

bool Vm::map_xen_page(std::uint64_t gfn, std::uint64_t page) {
  if (page >= kXenPageCount) return false;
  if (gfn >= mem_bytes_ / kPage) {
    // Above RAM: a one-page memslot onto the Xen page, replacing whatever page was shown there.
    if (gfn >= kHighXenPageLimitGfn) return false;
    restore_ram_page(gfn);
    kvm_userspace_memory_region region{};
    region.slot = kHighSlotBase + static_cast<std::uint32_t>(page);
    region.guest_phys_addr = gfn * kPage;
    region.memory_size = kPage;
    region.userspace_addr = reinterpret_cast<std::uint64_t>(ram_ + mem_bytes_ + page * kPage);
    if (::ioctl(vm_fd_, KVM_SET_USER_MEMORY_REGION, &region) < 0) return false;
    high_slots_[gfn] = page;
    return true;
  }
  // The guest frame now shows the Xen page's memfd offset; KVM's MMU notifier drops the old
  // translation. Dom0 services keep reaching the page at its own gfn.
  void* p = ::mmap(ram_ + gfn * 4096, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                   memfd_, static_cast<off_t>(mem_bytes_ + page * 4096));
  return p != MAP_FAILED;
}

bool Vm::restore_ram_page(std::uint64_t gfn) {
  if (gfn >= mem_bytes_ / kPage) {
    // Above RAM there is nothing to give back: the frame's memslot goes.
    auto it = high_slots_.find(gfn);
    if (it == high_slots_.end()) return false;
    kvm_userspace_memory_region region{};
    region.slot = kHighSlotBase + static_cast<std::uint32_t>(it->second);
    region.guest_phys_addr = gfn * kPage;
    region.memory_size = 0;
    high_slots_.erase(it);
    return ::ioctl(vm_fd_, KVM_SET_USER_MEMORY_REGION, &region) == 0;
  }
  void* p = ::mmap(ram_ + gfn * 4096, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                   memfd_, static_cast<off_t>(gfn * 4096));
  return p != MAP_FAILED;
}

int Vm::set_doorbell(evtchn_port_t port, int eventfd, bool assign) {
  if (!features_.ioeventfd) return -ENOTSUP;
  kvm_ioeventfd io{};
  io.datamatch = port;
  io.addr = hv::kDoorbellPort;
  io.len = 4;
  io.fd = eventfd;
  io.flags = KVM_IOEVENTFD_FLAG_PIO | KVM_IOEVENTFD_FLAG_DATAMATCH |
             (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN);
  const int rc = ::ioctl(vm_fd_, KVM_IOEVENTFD, &io) == 0 ? 0 : -errno;
  if (features_.mmio_ioeventfd) {
    // The same doorbell as a store to the MMIO page (xen_abi.h). A refusal leaves the store
    // exiting to us, where it is delivered as EVTCHNOP_send: slower, still correct.
    io.addr = hv::kDoorbellMmioGpa;
    io.flags &= ~static_cast<std::uint32_t>(KVM_IOEVENTFD_FLAG_PIO);
    (void)::ioctl(vm_fd_, KVM_IOEVENTFD, &io);
  }
  return rc;
}

std::uint64_t Vm::doorbell_mmio_gpa() const {
  return features_.mmio_ioeventfd ? hv::kDoorbellMmioGpa : 0;
}

// Where each delivery goes (docs/hypervisor.md, "Upcall deliveries"): the callback vector and
// the per-vCPU upcall vector through IOAPIC pin 23 (edge, fixed, to vCPU 0's APIC; the guest
// EOIs), a PVH guest's callback vector through the 8259 instead (no EOI, route_upcall_pic),
// GSI and PCI INTx callbacks as a level-triggered line on their GSI with an irqfd resample, so
// KVM lowers the line at the guest's EOI and XenHvm raises it again while an upcall is pending.
int Vm::route_upcall(const UpcallRoute& route) {
  if (!features_.irqfd || !features_.ioapic_route) return -ENOSYS;
  std::lock_guard lock(io_mutex_);
  switch (route.kind) {
    case UpcallRoute::Kind::kLevelGsi:
      if (route.gsi == 0 || route.gsi >= KVM_IOAPIC_NUM_PINS) return -EINVAL;
      return move_upcall_irqfd(route.gsi, route.resample_fd);
    case UpcallRoute::Kind::kCallbackVector:
      if (boot_kind_ == BootKind::kPvh) return route_upcall_pic(route.vector);
      return route_upcall_ioapic(route.vector);
    case UpcallRoute::Kind::kLapicVector:
      return route_upcall_ioapic(route.vector);
    case UpcallRoute::Kind::kNone:
      if (boot_kind_ == BootKind::kPvh) return route_upcall_pic(0);
      return route_upcall_ioapic(0);
  }
  return -EINVAL;
}

// IOAPIC pin 23 with `vector` (0: masked), edge: each eventfd signal is one interrupt.
int Vm::route_upcall_ioapic(std::uint8_t vector) {
  if (const int rc = move_upcall_irqfd(kUpcallGsi, -1); rc != 0) return rc;
  kvm_irqchip chip{};
  chip.chip_id = KVM_IRQCHIP_IOAPIC;
  if (::ioctl(vm_fd_, KVM_GET_IRQCHIP, &chip) < 0) return -errno;
  auto& e = chip.chip.ioapic.redirtbl[kUpcallGsi];
  e.bits = 0;
  e.fields.vector = vector;
  e.fields.delivery_mode = 0;  // fixed
  e.fields.dest_mode = 0;      // physical
  e.fields.trig_mode = 0;      // edge: each eventfd signal is one interrupt
  e.fields.mask = vector == 0 ? 1 : 0;
  e.fields.dest_id = 0;        // vCPU 0's APIC
  return ::ioctl(vm_fd_, KVM_SET_IRQCHIP, &chip) == 0 ? 0 : -errno;
}

// Moves the upcall irqfd to `gsi`; with a resample eventfd it becomes a level-triggered
// source (KVM_IRQFD_FLAG_RESAMPLE). Called under io_mutex_.
int Vm::move_upcall_irqfd(unsigned gsi, int resample_fd) {
  if (gsi == upcall_gsi_ && resample_fd == upcall_resample_fd_) return 0;
  kvm_irqfd irqfd{};
  irqfd.fd = static_cast<std::uint32_t>(upcall_fd_);
  irqfd.gsi = upcall_gsi_;
  irqfd.flags = KVM_IRQFD_FLAG_DEASSIGN;  // a level source's line is lowered with it
  if (::ioctl(vm_fd_, KVM_IRQFD, &irqfd) < 0) return -errno;
  irqfd = {};
  irqfd.fd = static_cast<std::uint32_t>(upcall_fd_);
  auto assign = [&](unsigned at, int resample) {
    irqfd.gsi = at;
    irqfd.flags = resample >= 0 ? KVM_IRQFD_FLAG_RESAMPLE : 0;
    irqfd.resamplefd = resample >= 0 ? static_cast<std::uint32_t>(resample) : 0;
    return ::ioctl(vm_fd_, KVM_IRQFD, &irqfd) == 0;
  };
  if (!assign(gsi, resample_fd)) {
    const int err = -errno;
    // Put it back as it was, so the guest keeps the delivery it had.
    (void)assign(upcall_gsi_, upcall_resample_fd_);
    return err;
  }
  upcall_gsi_ = gsi;
  upcall_resample_fd_ = resample_fd;
  return 0;
}

// Xen's callback vector is not a LAPIC interrupt: the guest never EOIs it (Mini-OS does not).
// A LAPIC vector would stay in service after the first upcall and block every later one, so a
// PVH guest's upcall goes through the in-kernel 8259 in auto-EOI mode instead: the irqfd moves
// to the PIC input whose vector is the guest's (base = vector & ~7, input = vector & 7; input 2
// is the cascade, so that vector uses the slave's input 2) and LVT0 of vCPU 0 passes ExtINT.
// Each eventfd signal is an edge, each edge one interrupt, no EOI needed. Called under
// io_mutex_ from vCPU 0's thread or before the vCPUs run.
int Vm::route_upcall_pic(std::uint8_t vector) {
  const unsigned input = vector & 7;
  const unsigned gsi = vector == 0 ? kUpcallGsi : (input == 2 ? 8 + 2 : input);
  kvm_irqchip master{}, slave{};
  master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  if (::ioctl(vm_fd_, KVM_GET_IRQCHIP, &master) < 0 || ::ioctl(vm_fd_, KVM_GET_IRQCHIP, &slave) < 0)
    return -errno;
  for (kvm_irqchip* chip : {&master, &slave}) {
    kvm_pic_state& pic = chip->chip.pic;
    pic.imr = 0xff;
    pic.irr = pic.isr = pic.last_irr = 0;
    pic.auto_eoi = 1;
    pic.init4 = 1;
    pic.init_state = 0;
    pic.irq_base = static_cast<std::uint8_t>(vector & 0xf8);
  }
  if (vector != 0) {
    if (input == 2) {
      master.chip.pic.imr = static_cast<std::uint8_t>(~(1u << 2));  // the cascade
      slave.chip.pic.imr = static_cast<std::uint8_t>(~(1u << 2));
    } else {
      master.chip.pic.imr = static_cast<std::uint8_t>(~(1u << input));
    }
  }
  if (::ioctl(vm_fd_, KVM_SET_IRQCHIP, &master) < 0 || ::ioctl(vm_fd_, KVM_SET_IRQCHIP, &slave) < 0)
    return -errno;
  return move_upcall_irqfd(gsi, -1);
}

bool Vm::translate(const Vcpu& vcpu, PagingState* paging, bool* have_paging, std::uint64_t gva,
                   std::uint64_t* gpa) const {
  if (!*have_paging) {
    kvm_sregs sregs{};
    if (::ioctl(vcpu.fd, KVM_GET_SREGS, &sregs) < 0) return false;
    *paging = {sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer};
    *have_paging = true;
  }
  return translate_gva(memory_, *paging, gva, gpa) == WalkStatus::kOk;
}

// WRMSR EFER: SCE, LME and NXE may change; LMA is the CPU's (it follows CR0.PG with LME) and
// any other bit is reserved (#GP). Toggling LME while paging is on is a #GP too (SDM 9.8.5).
bool Vm::write_efer(Vcpu& vcpu, std::uint64_t value) {
  kvm_sregs sregs{};
  if (::ioctl(vcpu.fd, KVM_GET_SREGS, &sregs) < 0) return false;
  if ((value & ~(kEferSce | kEferLme | kEferLma | kEferNxe)) != 0) return false;
  if ((sregs.cr0 & kCr0Pg) && ((value ^ sregs.efer) & kEferLme)) return false;
  sregs.efer = (value & (kEferSce | kEferLme | kEferNxe)) | (sregs.efer & kEferLma);
  return ::ioctl(vcpu.fd, KVM_SET_SREGS, &sregs) == 0;
}

void Vm::handle_cpuid_port(Vcpu& vcpu) {
  kvm_regs regs{};
  if (::ioctl(vcpu.fd, KVM_GET_REGS, &regs) < 0) {
    crash(vcpu, std::string("KVM_GET_REGS for the CPUID port failed: ") + std::strerror(errno));
    return;
  }
  const hv::CpuidLeaf l = hv::cpuid_leaf(static_cast<std::uint32_t>(regs.rax));
  regs.rax = l.eax;
  regs.rbx = l.ebx;
  regs.rcx = l.ecx;
  regs.rdx = l.edx;
  if (::ioctl(vcpu.fd, KVM_SET_REGS, &regs) < 0)
    crash(vcpu, std::string("KVM_SET_REGS for the CPUID port failed: ") + std::strerror(errno));
}

void Vm::handle_hypercall(Vcpu& vcpu) {
  kvm_regs regs{};
  if (::ioctl(vcpu.fd, KVM_GET_REGS, &regs) < 0) {
    crash(vcpu, std::string("KVM_GET_REGS for a hypercall failed: ") + std::strerror(errno));
    return;
  }
  HypercallArgs call;
  call.nr = static_cast<std::uint32_t>(regs.rax);
  call.arg[0] = regs.rdi;
  call.arg[1] = regs.rsi;
  call.arg[2] = regs.rdx;
  call.arg[3] = regs.r10;
  call.arg[4] = regs.r8;
  // The guest's paging registers are read once per hypercall, on the first translation.
  const Vcpu* v = &vcpu;
  PagingState paging;
  bool have_paging = false;
  call.translate = [this, v, &paging, &have_paging](std::uint64_t gva, std::uint64_t* gpa) {
    return translate(*v, &paging, &have_paging, gva, gpa);
  };
  regs.rax = static_cast<std::uint64_t>(xen_->hypercall(call));
  if (::ioctl(vcpu.fd, KVM_SET_REGS, &regs) < 0)
    crash(vcpu, std::string("KVM_SET_REGS after a hypercall failed: ") + std::strerror(errno));
}

ElfStatus Vm::load_kernel(std::span<const std::uint8_t> elf) {
  if (is_pvh_elf(elf)) return load_pvh_kernel(elf);
  ElfImage image;
  const ElfStatus st = load_elf(elf, memory_, kKernelMinLoad, &image);
  if (st != ElfStatus::kOk) return st;
  kernel_ = image;
  loaded_ = true;

  BootInfo info{};
  info.magic = kBootInfoMagic;
  info.version = kBootInfoVersion;
  info.vcpus = config_.vcpus;
  info.mem_bytes = mem_bytes_;
  info.identity_map_bytes = kBootIdentityMapBytes;
  info.tsc_khz = tsc_khz_;
  info.kernel_end = (image.load_end + 0xfff) & ~std::uint64_t{0xfff};
  info.cmdline_len = static_cast<std::uint32_t>(config_.cmdline.size());
  std::memcpy(info.cmdline, config_.cmdline.data(), config_.cmdline.size());
  std::memcpy(memory_.range(kBootInfoGpa, sizeof(info)), &info, sizeof(info));

  // GDT: null, 64-bit code (selector 0x08), flat data (selector 0x10).
  const std::uint64_t gdt[3] = {0, 0x00af9a000000ffffull, 0x00cf92000000ffffull};
  std::memcpy(memory_.range(kBootGdtGpa, sizeof(gdt)), gdt, sizeof(gdt));

  // Identity map of the first 4 GiB with 2 MiB pages: PML4[0] -> PDPT, PDPT[i] -> PD i. The
  // U/S bit is set at every level so the guest may also run code at CPL3 on this map (CR4 has
  // no SMEP/SMAP, so CPL0 keeps full access).
  auto* pml4 = reinterpret_cast<std::uint64_t*>(memory_.range(kBootPml4Gpa, 4096));
  auto* pdpt = reinterpret_cast<std::uint64_t*>(memory_.range(kBootPdptGpa, 4096));
  auto* pd = reinterpret_cast<std::uint64_t*>(memory_.range(kBootPdGpa, 4 * 4096));
  std::memset(pml4, 0, 4096);
  std::memset(pdpt, 0, 4096);
  constexpr std::uint64_t kFlags = kPtePresent | kPteWrite | kPteUser;
  pml4[0] = kBootPdptGpa | kFlags;
  for (unsigned i = 0; i < 4; ++i) pdpt[i] = (kBootPdGpa + i * 4096) | kFlags;
  for (std::uint64_t i = 0; i < 4 * 512; ++i) pd[i] = (i << 21) | kFlags | kPtePs;
  return ElfStatus::kOk;
}

ElfStatus Vm::load_pvh_kernel(std::span<const std::uint8_t> elf) {
  if (config_.vcpus != 1) return ElfStatus::kPvhNeedsOneVcpu;
  ElfImage image;
  const ElfStatus st = load_pvh_elf(elf, memory_, kPvhInfoGpa, kPvhInfoGpa + kPvhInfoPages * kPage,
                                    &image);
  if (st != ElfStatus::kOk) return st;
  kernel_ = image;
  loaded_ = true;
  boot_kind_ = BootKind::kPvh;
  write_pvh_start_info();
  return ElfStatus::kOk;
}

// hvm_start_info version 1 with its memory map in the first VMM page and the command line in
// the second. The map: RAM around the VMM pages, the VMM pages, and the Xen pages (shared_info,
// xenstore and console rings, grant frames) as reserved, so the guest leaves them alone.
void Vm::write_pvh_start_info() {
  const std::uint64_t info_gpa = kPvhInfoGpa;
  const std::uint64_t info_end = info_gpa + kPvhInfoPages * kPage;
  const std::uint64_t cmdline_gpa = info_gpa + kPage;
  const xen::hvm_memmap_table_entry map[] = {
      {0, info_gpa, xen::XEN_HVM_MEMMAP_TYPE_RAM, 0},
      {info_gpa, kPvhInfoPages * kPage, xen::XEN_HVM_MEMMAP_TYPE_RESERVED, 0},
      {info_end, mem_bytes_ - info_end, xen::XEN_HVM_MEMMAP_TYPE_RAM, 0},
      {kXenPagesGpa, kXenPagesBytes, xen::XEN_HVM_MEMMAP_TYPE_RESERVED, 0},
  };
  xen::hvm_start_info si{};
  si.magic = xen::XEN_HVM_START_MAGIC_VALUE;
  si.version = 1;
  si.cmdline_paddr = cmdline_gpa;
  si.memmap_paddr = info_gpa + sizeof(si);
  si.memmap_entries = std::size(map);
  std::uint8_t* page = memory_.range(info_gpa, kPvhInfoPages * kPage);
  std::memset(page, 0, kPvhInfoPages * kPage);
  std::memcpy(page, &si, sizeof(si));
  std::memcpy(page + sizeof(si), map, sizeof(map));
  std::memcpy(page + kPage, config_.cmdline.data(), config_.cmdline.size());  // < 2048, NUL follows
  xen_->set_memory_map(map, kPvhInfoPages);
}

// pvh.pandoc: 32-bit flat protected mode, paging off; CS and DS/ES/SS flat 4 GiB segments, TR
// a 32-bit TSS at 0 with limit 0x67, EFLAGS with IF and VM clear, EBX = hvm_start_info.
void Vm::setup_pvh_registers(Vcpu& vcpu) {
  kvm_sregs sregs{};
  if (::ioctl(vcpu.fd, KVM_GET_SREGS, &sregs) < 0) fail("KVM_GET_SREGS");
  kvm_segment code{};
  code.base = 0;
  code.limit = 0xffffffff;
  code.selector = 0x08;
  code.type = 11;  // execute/read, accessed
  code.present = 1;
  code.s = 1;
  code.db = 1;
  code.g = 1;
  kvm_segment data = code;
  data.selector = 0x10;
  data.type = 3;  // read/write, accessed
  kvm_segment tr{};
  tr.base = 0;
  tr.limit = 0x67;
  tr.selector = 0x18;
  tr.type = 11;  // 32-bit busy TSS
  tr.present = 1;
  sregs.cs = code;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.tr = tr;
  sregs.cr0 = kCr0Pe | kCr0Et;
  sregs.cr3 = 0;
  sregs.cr4 = 0;
  sregs.efer = 0;
  if (::ioctl(vcpu.fd, KVM_SET_SREGS, &sregs) < 0) fail("KVM_SET_SREGS (PVH)");
  kvm_regs regs{};
  regs.rflags = 0x2;
  regs.rip = kernel_.entry;
  regs.rbx = pvh_start_info_gpa();
  if (::ioctl(vcpu.fd, KVM_SET_REGS, &regs) < 0) fail("KVM_SET_REGS (PVH)");

  // LVT0 passes the 8259's ExtINT so the upcall can be delivered without a LAPIC EOI.
  kvm_lapic_state lapic{};
  if (::ioctl(vcpu.fd, KVM_GET_LAPIC, &lapic) < 0) fail("KVM_GET_LAPIC");
  const std::uint32_t lvt0 = kApicDeliveryExtInt;
  std::memcpy(lapic.regs + kApicLvt0, &lvt0, 4);
  if (::ioctl(vcpu.fd, KVM_SET_LAPIC, &lapic) < 0) fail("KVM_SET_LAPIC");
}

// The pvclock epoch: system time 0 is now, at the guest TSC value KVM reports now.
void Vm::start_clock() {
  struct {
    KvmArrayHeader hdr;
    kvm_msr_entry entry;
  } msrs{};
  static_assert(offsetof(decltype(msrs), entry) == 8);
  msrs.hdr.count = 1;
  msrs.entry.index = kMsrIa32Tsc;
  timespec mono{}, real{};
  ::clock_gettime(CLOCK_MONOTONIC, &mono);
  ::clock_gettime(CLOCK_REALTIME, &real);
  const std::uint64_t tsc =
      ::ioctl(vcpus_[0]->fd, kKvmGetMsrs, &msrs) == 1 ? msrs.entry.data : 0;
  xen_->start_clock(tsc, tsc_khz_, mono, real);
}

void Vm::setup_registers(Vcpu& vcpu) {
  if (boot_kind_ == BootKind::kPvh) {
    setup_pvh_registers(vcpu);
    return;
  }
  kvm_sregs sregs{};
  if (::ioctl(vcpu.fd, KVM_GET_SREGS, &sregs) < 0) fail("KVM_GET_SREGS");
  kvm_segment code{};
  code.base = 0;
  code.limit = 0xffffffff;
  code.selector = 0x08;
  code.type = 11;  // execute/read, accessed
  code.present = 1;
  code.s = 1;
  code.l = 1;
  code.g = 1;
  kvm_segment data = code;
  data.selector = 0x10;
  data.type = 3;  // read/write, accessed
  data.l = 0;
  data.db = 1;
  sregs.cs = code;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  sregs.gdt.base = kBootGdtGpa;
  sregs.gdt.limit = 3 * 8 - 1;
  sregs.cr3 = kBootPml4Gpa;
  sregs.cr4 = kCr4Pae;
  sregs.cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg;
  sregs.efer = kEferLme | kEferLma;
  if (::ioctl(vcpu.fd, KVM_SET_SREGS, &sregs) < 0) fail("KVM_SET_SREGS");

  kvm_regs regs{};
  regs.rflags = 0x2;
  regs.rip = kernel_.entry;
  regs.rsp = kBootStackTop - vcpu.index * kBootStackSize;
  regs.rdi = kBootInfoGpa;
  regs.rsi = vcpu.index;
  if (::ioctl(vcpu.fd, KVM_SET_REGS, &regs) < 0) fail("KVM_SET_REGS");
  // With the in-kernel LAPIC, KVM holds every vCPU but the first in wait-for-SIPI. pvio-hv
  // enters them all in long mode at the kernel's entry (RSI = index, own boot stack) instead,
  // so the others are made runnable; the guest decides what they do.
  if (vcpu.index != 0) {
    kvm_mp_state mp{};
    mp.mp_state = KVM_MP_STATE_RUNNABLE;
    if (::ioctl(vcpu.fd, KVM_SET_MP_STATE, &mp) < 0) fail("KVM_SET_MP_STATE");
  }
}

void Vm::set_irq_line(unsigned gsi, bool level) {
  kvm_irq_level irq{};
  irq.irq = gsi;
  irq.level = level ? 1 : 0;
  ::ioctl(vm_fd_, KVM_IRQ_LINE, &irq);
}

void Vm::finish(DomainResult result) {
  {
    std::lock_guard lock(state_mutex_);
    if (result_.state != DomainState::kRunning) return;
    result_ = std::move(result);
  }
  stopping_ = true;
  state_cv_.notify_all();
}

void Vm::request_shutdown(ShutdownReason reason, std::uint32_t code) {
  DomainResult r;
  r.state = reason == ShutdownReason::kCrash ? DomainState::kCrashed : DomainState::kShutdown;
  r.reason = reason;
  r.code = code;
  if (reason == ShutdownReason::kCrash) r.message = "guest requested SHUTDOWN_crash";
  finish(std::move(r));
}

std::string Vm::describe_registers(const Vcpu& vcpu) const {
  kvm_regs r{};
  kvm_sregs s{};
  if (::ioctl(vcpu.fd, KVM_GET_REGS, &r) < 0 || ::ioctl(vcpu.fd, KVM_GET_SREGS, &s) < 0)
    return "registers unavailable";
  char buf[1024];
  std::snprintf(buf, sizeof(buf),
                "rip=%016" PRIx64 " rsp=%016" PRIx64 " rflags=%08" PRIx64 "\n"
                "rax=%016" PRIx64 " rbx=%016" PRIx64 " rcx=%016" PRIx64 " rdx=%016" PRIx64 "\n"
                "rsi=%016" PRIx64 " rdi=%016" PRIx64 " rbp=%016" PRIx64 " r8 =%016" PRIx64 "\n"
                "cr0=%016" PRIx64 " cr2=%016" PRIx64 " cr3=%016" PRIx64 " cr4=%016" PRIx64
                " efer=%" PRIx64 "\n"
                "cs=%04x ss=%04x idt.base=%" PRIx64 " idt.limit=%x gdt.base=%" PRIx64,
                static_cast<std::uint64_t>(r.rip), static_cast<std::uint64_t>(r.rsp),
                static_cast<std::uint64_t>(r.rflags), static_cast<std::uint64_t>(r.rax),
                static_cast<std::uint64_t>(r.rbx), static_cast<std::uint64_t>(r.rcx),
                static_cast<std::uint64_t>(r.rdx), static_cast<std::uint64_t>(r.rsi),
                static_cast<std::uint64_t>(r.rdi), static_cast<std::uint64_t>(r.rbp),
                static_cast<std::uint64_t>(r.r8), static_cast<std::uint64_t>(s.cr0),
                static_cast<std::uint64_t>(s.cr2), static_cast<std::uint64_t>(s.cr3),
                static_cast<std::uint64_t>(s.cr4), static_cast<std::uint64_t>(s.efer),
                s.cs.selector, s.ss.selector, static_cast<std::uint64_t>(s.idt.base),
                s.idt.limit, static_cast<std::uint64_t>(s.gdt.base));
  return buf;
}

void Vm::crash(const Vcpu& vcpu, const std::string& what) {
  DomainResult r;
  r.state = DomainState::kCrashed;
  r.reason = ShutdownReason::kCrash;
  r.message = "domain crashed: " + what + " on vcpu " + std::to_string(vcpu.index) + "\n" +
              describe_registers(vcpu);
  finish(std::move(r));
}

void Vm::vcpu_loop(Vcpu& vcpu) {
  // Only the kick signal may interrupt KVM_RUN in this thread.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, kKickSignal);
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
  kvm_run* run = vcpu.run;
  while (!stopping_) {
    if (::ioctl(vcpu.fd, KVM_RUN, 0) < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      crash(vcpu, std::string("KVM_RUN failed: ") + std::strerror(errno));
      return;
    }
    switch (run->exit_reason) {
      case KVM_EXIT_IO: {
        const bool out = run->io.direction == KVM_EXIT_IO_OUT;
        if (out && run->io.size == 4 && run->io.count == 1 &&
            (run->io.port == hv::kHypercallPort || run->io.port == hv::kDoorbellPort ||
             run->io.port == hv::kCpuidPort)) {
          std::uint32_t value;
          std::memcpy(&value, reinterpret_cast<std::uint8_t*>(run) + run->io.data_offset, 4);
          if (run->io.port == hv::kDoorbellPort) xen_->doorbell(value);
          else if (run->io.port == hv::kCpuidPort) handle_cpuid_port(vcpu);
          else handle_hypercall(vcpu);
          break;
        }
        std::lock_guard lock(io_mutex_);
        bus_.handle_pio(run->io.port, run->io.direction == KVM_EXIT_IO_OUT, run->io.size,
                        run->io.count, reinterpret_cast<std::uint8_t*>(run) + run->io.data_offset);
        break;
      }
      case KVM_EXIT_MMIO: {
        if (run->mmio.phys_addr == hv::kDoorbellMmioGpa && run->mmio.is_write &&
            run->mmio.len == 4) {
          std::uint32_t value;
          std::memcpy(&value, run->mmio.data, 4);
          xen_->doorbell(value, true);
          break;
        }
        std::lock_guard lock(io_mutex_);
        bus_.handle_mmio(run->mmio.phys_addr, run->mmio.is_write != 0, run->mmio.len,
                         run->mmio.data);
        break;
      }
      case KVM_EXIT_INTR:
        break;
      case KVM_EXIT_X86_WRMSR:
        // Only the hypercall MSR and EFER are filtered to us; anything else faults.
        if (run->msr.index == kMsrEfer)
          run->msr.error = write_efer(vcpu, run->msr.data) ? 0 : 1;
        else
          run->msr.error = run->msr.index == hv::kHypercallMsr &&
                                   xen_->write_hypercall_msr(run->msr.data)
                               ? 0
                               : 1;
        break;
      case KVM_EXIT_X86_RDMSR:
        run->msr.error = 1;
        break;
      case KVM_EXIT_SYSTEM_EVENT:
        if (run->system_event.type == KVM_SYSTEM_EVENT_RESET)
          request_shutdown(ShutdownReason::kReboot, 0);
        else if (run->system_event.type == KVM_SYSTEM_EVENT_CRASH)
          crash(vcpu, "guest crash event (KVM_SYSTEM_EVENT_CRASH)");
        else
          request_shutdown(ShutdownReason::kPoweroff, 0);
        return;
      case KVM_EXIT_INTERNAL_ERROR: {
        std::string what = exit_reason_name(run->exit_reason) + ", suberror " +
                           std::to_string(run->internal.suberror);
        if (run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION) what += " (emulation failure)";
        crash(vcpu, what);
        return;
      }
      case KVM_EXIT_FAIL_ENTRY: {
        char reason[64];
        std::snprintf(reason, sizeof(reason), ", hardware reason 0x%llx",
                      static_cast<unsigned long long>(run->fail_entry.hardware_entry_failure_reason));
        crash(vcpu, exit_reason_name(run->exit_reason) + reason);
        return;
      }
      default:  // KVM_EXIT_SHUTDOWN (triple fault) and anything this VMM does not handle
        crash(vcpu, exit_reason_name(run->exit_reason));
        return;
    }
  }
}

DomainResult Vm::run() {
  if (!loaded_) throw std::logic_error("Vm::run before load_kernel");
  for (auto& v : vcpus_) setup_registers(*v);
  start_clock();
  // vCPU threads start with the kick signal blocked; each unblocks it for KVM_RUN.
  sigset_t set, old;
  sigemptyset(&set);
  sigaddset(&set, kKickSignal);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  for (auto& v : vcpus_) {
    Vcpu* vp = v.get();
    vp->thread = std::thread([this, vp] { vcpu_loop(*vp); });
  }
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  {
    std::unique_lock lock(state_mutex_);
    state_cv_.wait(lock, [&] { return result_.state != DomainState::kRunning; });
  }
  // Stop the others: immediate_exit covers a vCPU between its check and KVM_RUN, the signal
  // one already inside KVM_RUN (e.g. halted in the in-kernel LAPIC).
  for (auto& v : vcpus_) v->run->immediate_exit = 1;
  for (auto& v : vcpus_) {
    if (!v->thread.joinable()) continue;
    pthread_kill(v->thread.native_handle(), kKickSignal);
    v->thread.join();
  }
  std::lock_guard lock(state_mutex_);
  return result_;
}

}  // namespace pvio::hv
