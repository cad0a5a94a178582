// KVM VM set-up, long-mode boot state and the vCPU run loop with crash reporting.
#include "pvio/hypervisor/vm.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <system_error>

#include "pvio/hypervisor/boot_info.h"

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
constexpr std::uint64_t kPtePresent = 1, kPteWrite = 2, kPtePs = 0x80;

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
  if (::ftruncate(memfd_, static_cast<off_t>(mem_bytes_)) < 0) fail("ftruncate guest RAM");
  void* p = ::mmap(nullptr, mem_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_, 0);
  if (p == MAP_FAILED) fail("mmap guest RAM");
  ram_ = static_cast<std::uint8_t*>(p);
  kvm_userspace_memory_region region{};
  region.slot = 0;
  region.guest_phys_addr = 0;
  region.memory_size = mem_bytes_;
  region.userspace_addr = reinterpret_cast<std::uint64_t>(ram_);
  if (::ioctl(vm_fd_, KVM_SET_USER_MEMORY_REGION, &region) < 0) fail("KVM_SET_USER_MEMORY_REGION");
  memory_.add_region(0, mem_bytes_, ram_);

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

  struct sigaction sa{};
  sa.sa_handler = kick_handler;  // no SA_RESTART: KVM_RUN must return EINTR
  sigemptyset(&sa.sa_mask);
  ::sigaction(kKickSignal, &sa, nullptr);
}

Vm::~Vm() {
  for (auto& v : vcpus_) {
    if (v->thread.joinable()) v->thread.join();
    if (v->run) ::munmap(v->run, run_size_);
    if (v->fd >= 0) ::close(v->fd);
  }
  if (ram_) ::munmap(ram_, mem_bytes_);
  for (int fd : {memfd_, vm_fd_, kvm_fd_})
    if (fd >= 0) ::close(fd);
}

void Vm::setup_cpuid(Vcpu& vcpu) {
  // Long mode needs CPUID.80000001h:EDX.LM visible to the guest or KVM refuses EFER.LME.
  std::vector<std::uint8_t> storage;
  kvm_cpuid2* cpuid = nullptr;
  for (std::uint32_t n = 64;; n *= 2) {
    storage.assign(sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2), 0);
    cpuid = reinterpret_cast<kvm_cpuid2*>(storage.data());
    cpuid->nent = n;
    if (::ioctl(kvm_fd_, KVM_GET_SUPPORTED_CPUID, cpuid) == 0) break;
    // Some KVM implementations (e.g. PVM) do not offer CPUID configuration: keep their default.
    if (errno == EINVAL) return;
    if (errno != E2BIG || n > 4096) fail("KVM_GET_SUPPORTED_CPUID");
  }
  for (std::uint32_t i = 0; i < cpuid->nent; ++i) {
    kvm_cpuid_entry2& e = cpuid->entries[i];
    if (e.function == 1) e.ebx = (e.ebx & 0x00ffffffu) | (vcpu.index << 24);  // initial APIC ID
    if (e.function == 0xb) e.edx = vcpu.index;                               // x2APIC ID
  }
  if (::ioctl(vcpu.fd, KVM_SET_CPUID2, cpuid) < 0) fail("KVM_SET_CPUID2");
}

ElfStatus Vm::load_kernel(std::span<const std::uint8_t> elf) {
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

  // Identity map of the first 4 GiB with 2 MiB pages: PML4[0] -> PDPT, PDPT[i] -> PD i.
  auto* pml4 = reinterpret_cast<std::uint64_t*>(memory_.range(kBootPml4Gpa, 4096));
  auto* pdpt = reinterpret_cast<std::uint64_t*>(memory_.range(kBootPdptGpa, 4096));
  auto* pd = reinterpret_cast<std::uint64_t*>(memory_.range(kBootPdGpa, 4 * 4096));
  std::memset(pml4, 0, 4096);
  std::memset(pdpt, 0, 4096);
  pml4[0] = kBootPdptGpa | kPtePresent | kPteWrite;
  for (unsigned i = 0; i < 4; ++i) pdpt[i] = (kBootPdGpa + i * 4096) | kPtePresent | kPteWrite;
  for (std::uint64_t i = 0; i < 4 * 512; ++i) pd[i] = (i << 21) | kPtePresent | kPteWrite | kPtePs;
  return ElfStatus::kOk;
}

void Vm::setup_registers(Vcpu& vcpu) {
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
        std::lock_guard lock(io_mutex_);
        bus_.handle_pio(run->io.port, run->io.direction == KVM_EXIT_IO_OUT, run->io.size,
                        run->io.count, reinterpret_cast<std::uint8_t*>(run) + run->io.data_offset);
        break;
      }
      case KVM_EXIT_MMIO: {
        std::lock_guard lock(io_mutex_);
        bus_.handle_mmio(run->mmio.phys_addr, run->mmio.is_write != 0, run->mmio.len,
                         run->mmio.data);
        break;
      }
      case KVM_EXIT_INTR:
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
