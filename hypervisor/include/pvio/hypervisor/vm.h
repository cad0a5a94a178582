// One HVM domain on KVM: guest RAM in a memfd (shareable with Dom0 services), the in-kernel
// irqchip, vCPU threads started directly in 64-bit long mode, and the I/O bus that emulated
// devices hang off. A triple fault, an internal error, a failed VM entry or any exit the VMM
// does not handle puts the domain into the crashed state with the vCPU's registers recorded.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
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

namespace pvio::hv {

inline constexpr std::uint64_t kMinGuestMemory = 4ull << 20;
// RAM is one region below the 32-bit PCI hole at 0xC0000000.
inline constexpr std::uint64_t kMaxGuestMemory = 3ull << 30;
inline constexpr unsigned kMaxVcpus = 8;

struct VmConfig {
  std::uint64_t mem_bytes = 256ull << 20;
  unsigned vcpus = 1;
  std::string cmdline;
};

class Vm {
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

  IoBus& bus() { return bus_; }
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

  // Loads the kernel and writes the boot structures (boot info, GDT, page tables).
  ElfStatus load_kernel(std::span<const std::uint8_t> elf);
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
  void setup_registers(Vcpu& vcpu);
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
  ElfImage kernel_;
  bool loaded_ = false;

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
