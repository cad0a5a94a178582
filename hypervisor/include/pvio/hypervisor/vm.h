// One HVM domain on KVM: guest RAM in a memfd (shareable with Dom0 services), the in-kernel
// irqchip, vCPU threads started directly in 64-bit long mode, and the I/O bus that emulated
// devices hang off. A triple fault, an internal error, a failed VM entry or any exit the VMM
// does not handle puts the domain into the crashed state with the vCPU's registers recorded.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "pvio/grant_table/guest_memory.h"
#include "pvio/hypervisor/domain.h"
#include "pvio/hypervisor/elf_loader.h"
#include "pvio/hypervisor/io_bus.h"
#include "pvio/hypervisor/page_walk.h"
#include "pvio/hypervisor/xen_hvm.h"

namespace pvio::hv {

inline constexpr std::uint64_t kMinGuestMemory = 4ull << 20;
// RAM is one region below the 32-bit PCI hole at 0xC0000000.
inline constexpr std::uint64_t kMaxGuestMemory = 3ull << 30;
inline constexpr unsigned kMaxVcpus = 8;
// PVH boot (Xen's pvh.pandoc): the VMM's pages sit below 640 KiB where a PC's BIOS data area
// is, reserved in the memory map: hvm_start_info followed by the memory map, then the command
// line. Low rather than at the top of RAM so RAM ends on a 2 MiB boundary: Mini-OS's page
// allocator then hands out small blocks from low memory first, and its virtual_to_mfn (used
// for blkfront's data grants) reads its own 2 MiB mappings above 2 MiB as page tables and
// grants the wrong frame; low buffers are mapped with 4 KiB pages and come out right.
inline constexpr std::uint64_t kPvhInfoGpa = 0x9E000;
inline constexpr std::uint64_t kPvhInfoPages = 2;

// How the kernel is entered: pvio's own ELF64 guests in long mode on the VMM's identity map,
// PVH kernels (XEN_ELFNOTE_PHYS32_ENTRY) in 32-bit protected mode with paging off.
enum class BootKind { kPvioElf, kPvh };

struct VmConfig {
  std::uint64_t mem_bytes = 256ull << 20;
  unsigned vcpus = 1;
  std::string cmdline;
  domid_t domid = 1;
};

// What this host's KVM offers for the Xen interface and the notification fast paths, probed
// with KVM_CHECK_EXTENSION and by trying each ioctl once at VM creation.
struct KvmFeatures {
  bool ioeventfd = false;       // KVM_CAP_IOEVENTFD: doorbell without exit
  bool mmio_ioeventfd = false;  // an MMIO ioeventfd at the doorbell page was accepted
  int mmio_ioeventfd_errno = 0; // why not (errno of the trial KVM_IOEVENTFD), 0 if it was
  bool irqfd = false;           // KVM_CAP_IRQFD: upcall eventfd injects an interrupt
  bool irq_routing = false;     // KVM_CAP_IRQ_ROUTING reported
  bool gsi_routing_msi = false; // KVM_SET_GSI_ROUTING accepted an MSI route
  bool ioapic_route = false;    // upcall routed through an IOAPIC pin (KVM_SET_IRQCHIP)
  bool user_space_msr = false;  // KVM_CAP_X86_USER_SPACE_MSR enabled
  bool msr_filter = false;      // KVM_X86_SET_MSR_FILTER for the hypercall MSR
  bool set_cpuid = false;       // KVM_SET_CPUID2 with the Xen leaves accepted
  bool translate = false;       // KVM_TRANSLATE for hypercall argument addresses
};

class Vm final : private XenHost {
 public:
  // Creates the VM, its memory and vCPUs. Throws std::system_error / std::invalid_argument at
  // this configuration boundary; nothing after start-up throws.
  explicit Vm(const VmConfig& config);
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  // Whether /dev/kvm can be opened here; `why` says why not.
  static bool kvm_available(std::string* why);

  // The domain's memory: the memfd and the guest-physical region table over its mapping.
  int memfd() const { return memfd_; }
  const GuestMemory& memory() const { return memory_; }
  std::uint64_t mem_bytes() const { return mem_bytes_; }
  // The Xen HVM interface (hypercalls, Xen pages, domain control protocol).
  XenHvm& xen() { return *xen_; }
  const KvmFeatures& kvm_features() const { return features_; }
  // Where console_io hypercall output goes; called under the device lock.
  void set_console(std::function<void(const char*, std::size_t)> out) {
    xen_->set_console([this, out = std::move(out)](const char* p, std::size_t n) {
      std::lock_guard lock(io_mutex_);
      out(p, n);
    });
  }

  IoBus& bus() { return bus_; }
  // The lock every exit handler runs under: a device thread outside the vCPUs (the e1000's
  // receive thread) takes it before touching the device.
  std::mutex& device_lock() { return io_mutex_; }
  // Devices are owned by the VM; returns the raw pointer for mapping.
  template <typename D>
  D* add_device(std::unique_ptr<D> device) {
    D* raw = device.get();
    devices_.push_back(std::move(device));
    return raw;
  }

  ShutdownFn shutdown_fn() {
    return [this](ShutdownReason r, std::uint32_t code) { request_shutdown(r, code); };
  }
  IrqFn irq_fn() {
    return [this](unsigned gsi, bool level) { set_irq_line(gsi, level); };
  }

  // Loads the kernel and writes the boot structures: for pvio's kernels boot info, GDT and
  // page tables; for PVH kernels hvm_start_info, the memory map and the command line.
  ElfStatus load_kernel(std::span<const std::uint8_t> elf);
  BootKind boot_kind() const { return boot_kind_; }
  // Guest-physical address of hvm_start_info (PVH boot).
  static constexpr std::uint64_t pvh_start_info_gpa() { return kPvhInfoGpa; }
  const ElfImage& kernel() const { return kernel_; }
  std::uint64_t tsc_khz() const { return tsc_khz_; }

  // Runs every vCPU until the domain shuts down or crashes.
  DomainResult run();

  // Thread-safe; the first request wins.
  void request_shutdown(ShutdownReason reason, std::uint32_t code);
  void set_irq_line(unsigned gsi, bool level);

 private:
  struct Vcpu {
    unsigned index = 0;
    int fd = -1;
    kvm_run* run = nullptr;
    std::thread thread;
  };

  void setup_cpuid(Vcpu& vcpu);
  void setup_xen_interface();
  void handle_hypercall(Vcpu& vcpu);
  void handle_cpuid_port(Vcpu& vcpu);
  bool write_efer(Vcpu& vcpu, std::uint64_t value);
  bool translate(const Vcpu& vcpu, PagingState* paging, bool* have_paging, std::uint64_t gva,
                 std::uint64_t* gpa) const;
  int route_upcall_pic(std::uint8_t vector);
  int route_upcall_ioapic(std::uint8_t vector);
  int move_upcall_irqfd(unsigned gsi, int resample_fd);

  // XenHost
  bool map_xen_page(std::uint64_t gfn, std::uint64_t page) override;
  bool restore_ram_page(std::uint64_t gfn) override;
  int set_doorbell(evtchn_port_t port, int eventfd, bool assign) override;
  std::uint64_t doorbell_mmio_gpa() const override;
  int route_upcall(const UpcallRoute& route) override;
  void shutdown(ShutdownReason reason, std::uint32_t code) override {
    request_shutdown(reason, code);
  }
  ElfStatus load_pvh_kernel(std::span<const std::uint8_t> elf);
  void write_pvh_start_info();
  void setup_registers(Vcpu& vcpu);
  void setup_pvh_registers(Vcpu& vcpu);
  void start_clock();
  void vcpu_loop(Vcpu& vcpu);
  void crash(const Vcpu& vcpu, const std::string& what);
  std::string describe_registers(const Vcpu& vcpu) const;
  void finish(DomainResult result);

  int kvm_fd_ = -1, vm_fd_ = -1, memfd_ = -1;
  std::uint8_t* ram_ = nullptr;
  std::uint64_t mem_bytes_ = 0;
  std::size_t run_size_ = 0;
  std::uint64_t tsc_khz_ = 0;
  VmConfig config_;
  GuestMemory memory_;
  KvmFeatures features_;
  int upcall_fd_ = -1;
  std::unique_ptr<XenHvm> xen_;
  ElfImage kernel_;
  bool loaded_ = false;
  BootKind boot_kind_ = BootKind::kPvioElf;
  std::map<std::uint64_t, std::uint64_t> high_slots_;  // gfn above RAM -> Xen page shown there
  unsigned upcall_gsi_ = kUpcallGsi;  // the GSI the upcall irqfd drives
  int upcall_resample_fd_ = -1;       // ... as a level source: its resample eventfd, else -1

  IoBus bus_;
  std::mutex io_mutex_;  // serialises device emulation across vCPU threads
  std::vector<std::unique_ptr<Device>> devices_;
  std::vector<std::unique_ptr<Vcpu>> vcpus_;

  std::mutex state_mutex_;
  std::condition_variable state_cv_;
  DomainResult result_;
  std::atomic<bool> stopping_{false};
};

}  // namespace pvio::hv
