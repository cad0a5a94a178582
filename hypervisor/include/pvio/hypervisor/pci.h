// Emulated PCI: configuration mechanism #1 (ports 0xCF8 address, 0xCFC-0xCFF data) over a
// small bus-0 model. Each function has a 256-byte type-0 configuration space with write masks;
// I/O and 32-bit memory BARs are sized the standard way (write ~0, read back the size mask) and
// remapped on the I/O bus when the guest moves them.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "pvio/hypervisor/io_bus.h"

namespace pvio::hv {

inline constexpr std::uint16_t kPciConfigAddressPort = 0xcf8;
inline constexpr std::uint16_t kPciConfigDataPort = 0xcfc;

// PCI configuration-space register offsets (PCI Local Bus Specification 3.0, 6.1).
namespace pci_reg {
inline constexpr unsigned kVendorId = 0x00, kDeviceId = 0x02, kCommand = 0x04, kStatus = 0x06,
                          kRevision = 0x08, kProgIf = 0x09, kSubclass = 0x0a, kClass = 0x0b,
                          kHeaderType = 0x0e, kBar0 = 0x10, kSubsystemVendorId = 0x2c,
                          kSubsystemId = 0x2e, kInterruptLine = 0x3c, kInterruptPin = 0x3d;
inline constexpr std::uint16_t kCommandIo = 0x1, kCommandMemory = 0x2, kCommandMaster = 0x4;
}  // namespace pci_reg

struct PciId {
  std::uint16_t vendor, device;
  std::uint8_t class_code, subclass, prog_if, revision;
};

class PciFunction {
 public:
  explicit PciFunction(const PciId& id, bool multifunction = false);
  virtual ~PciFunction() = default;

  // Declares BAR `index` as an I/O BAR of `size` bytes (power of two >= 4) at `port`, decoded
  // while the command register's I/O bit is set.
  void add_io_bar(unsigned index, std::uint16_t size, std::uint16_t port);
  // Declares BAR `index` as a 32-bit non-prefetchable memory BAR of `size` bytes (power of two
  // >= 16) at `base`, decoded while the command register's memory bit is set.
  void add_mmio_bar(unsigned index, std::uint32_t size, std::uint32_t base);
  void set_interrupt(std::uint8_t line, std::uint8_t pin);
  void set_subsystem(std::uint16_t vendor, std::uint16_t device);

  std::uint32_t config_read(unsigned offset, unsigned size) const;
  void config_write(unsigned offset, unsigned size, std::uint32_t value);

  // Current I/O base of BAR `index` if it is decoded, else 0.
  std::uint16_t io_bar_base(unsigned index) const;
  // Current memory base of BAR `index` if it is decoded, else 0.
  std::uint32_t mmio_bar_base(unsigned index) const;

  void attach(IoBus* bus) { bus_ = bus; update_bars(); }
  // Takes every BAR off the I/O bus for good: later command or BAR writes decode nothing.
  void detach();
  // The function was unplugged from its bus (PciBus::unplug): it stops its own activity
  // (interrupt line, timers, wire). Called once, under the device lock.
  virtual void unplugged() {}

 protected:
  // A device maps its BAR ranges here; called when the BAR or the command register changes.
  virtual Device* bar_device() { return nullptr; }
  void set8(unsigned off, std::uint8_t v) { config_[off] = v; }
  void set16(unsigned off, std::uint16_t v);
  void set32(unsigned off, std::uint32_t v);
  std::uint16_t get16(unsigned off) const;
  std::uint32_t get32(unsigned off) const;

 private:
  void update_bars();

  std::array<std::uint8_t, 256> config_{};
  std::array<std::uint8_t, 256> write_mask_{};
  std::array<std::uint32_t, 6> bar_size_{};     // 0: not implemented
  std::array<bool, 6> bar_is_mmio_{};
  std::array<std::uint32_t, 6> bar_mapped_{};   // base currently on the bus, 0 if none
  IoBus* bus_ = nullptr;
};

// The config-mechanism-#1 host bridge port pair plus the functions on bus 0.
class PciBus : public Device {
 public:
  PciBus() : Device("pci") {}
  // Takes ownership; `slot` 0..31, `function` 0..7. Returns false if occupied.
  bool add(unsigned slot, unsigned function, std::unique_ptr<PciFunction> fn, IoBus* bus);
  // The function at slot.function, or nullptr if the slot is empty or it was unplugged.
  PciFunction* find(unsigned slot, unsigned function) const;
  // Emulated-device unplug: the function leaves the bus as if its slot were empty (config reads
  // answer all ones, writes go nowhere), its BARs stop decoding and it is told so. The object
  // stays alive, owned by the bus, so a thread that holds a pointer to it (a NIC's receive
  // thread) keeps a valid one. False if there is no such function (or no longer one).
  bool unplug(unsigned slot, unsigned function);

  std::uint32_t pio_read(int region, std::uint16_t offset, unsigned size) override;
  void pio_write(int region, std::uint16_t offset, unsigned size, std::uint32_t value) override;

 private:
  PciFunction* selected(unsigned* reg) const;

  std::uint32_t address_ = 0;
  std::array<std::unique_ptr<PciFunction>, 32 * 8> functions_{};
  std::array<bool, 32 * 8> unplugged_{};
};

}  // namespace pvio::hv
