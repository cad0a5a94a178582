// PCI configuration mechanism #1 and type-0 configuration spaces for bus 0.
#include "pvio/hypervisor/pci.h"

#include <cstring>

namespace pvio::hv {

PciFunction::PciFunction(const PciId& id, bool multifunction) {
  set16(pci_reg::kVendorId, id.vendor);
  set16(pci_reg::kDeviceId, id.device);
  set8(pci_reg::kRevision, id.revision);
  set8(pci_reg::kProgIf, id.prog_if);
  set8(pci_reg::kSubclass, id.subclass);
  set8(pci_reg::kClass, id.class_code);
  set8(pci_reg::kHeaderType, multifunction ? 0x80 : 0x00);
  // Writable: command (I/O, memory, bus master), interrupt line.
  write_mask_[pci_reg::kCommand] =
      pci_reg::kCommandIo | pci_reg::kCommandMemory | pci_reg::kCommandMaster;
  write_mask_[pci_reg::kInterruptLine] = 0xff;
}

void PciFunction::set16(unsigned off, std::uint16_t v) { std::memcpy(&config_[off], &v, 2); }
void PciFunction::set32(unsigned off, std::uint32_t v) { std::memcpy(&config_[off], &v, 4); }
std::uint16_t PciFunction::get16(unsigned off) const {
  std::uint16_t v;
  std::memcpy(&v, &config_[off], 2);
  return v;
}
std::uint32_t PciFunction::get32(unsigned off) const {
  std::uint32_t v;
  std::memcpy(&v, &config_[off], 4);
  return v;
}

void PciFunction::add_io_bar(unsigned index, std::uint16_t size, std::uint16_t port) {
  if (index >= 6 || size < 4 || (size & (size - 1))) return;
  bar_size_[index] = size;
  const unsigned off = pci_reg::kBar0 + 4 * index;
  set32(off, (port & ~std::uint32_t{size - 1u}) | 0x1);
  // Address bits above the size are writable; bit 0 (I/O space indicator) is read-only.
  const std::uint32_t mask = 0xffffu & ~std::uint32_t{size - 1u};
  std::memcpy(&write_mask_[off], &mask, 4);
}

void PciFunction::add_mmio_bar(unsigned index, std::uint32_t size, std::uint32_t base) {
  if (index >= 6 || size < 16 || (size & (size - 1))) return;
  bar_size_[index] = size;
  bar_is_mmio_[index] = true;
  const unsigned off = pci_reg::kBar0 + 4 * index;
  set32(off, base & ~(size - 1u));  // type bits 0: 32-bit, anywhere, not prefetchable
  const std::uint32_t mask = ~(size - 1u);
  std::memcpy(&write_mask_[off], &mask, 4);
}

void PciFunction::set_interrupt(std::uint8_t line, std::uint8_t pin) {
  set8(pci_reg::kInterruptLine, line);
  set8(pci_reg::kInterruptPin, pin);
}

void PciFunction::set_subsystem(std::uint16_t vendor, std::uint16_t device) {
  set16(pci_reg::kSubsystemVendorId, vendor);
  set16(pci_reg::kSubsystemId, device);
}

std::uint32_t PciFunction::config_read(unsigned offset, unsigned size) const {
  if (offset >= 256 || size > 4 || offset + size > 256) return ~0u;
  std::uint32_t v = 0;
  std::memcpy(&v, &config_[offset], size);
  return v;
}

void PciFunction::config_write(unsigned offset, unsigned size, std::uint32_t value) {
  if (offset >= 256 || size > 4 || offset + size > 256) return;
  for (unsigned i = 0; i < size; ++i) {
    const auto b = static_cast<std::uint8_t>(value >> (8 * i));
    const std::uint8_t m = write_mask_[offset + i];
    config_[offset + i] = static_cast<std::uint8_t>((config_[offset + i] & ~m) | (b & m));
  }
  if (offset < pci_reg::kBar0 + 24 && offset + size > pci_reg::kCommand) update_bars();
}

std::uint16_t PciFunction::io_bar_base(unsigned index) const {
  if (index >= 6 || bar_size_[index] == 0 || bar_is_mmio_[index]) return 0;
  if (!(get16(pci_reg::kCommand) & pci_reg::kCommandIo)) return 0;
  return static_cast<std::uint16_t>(get32(pci_reg::kBar0 + 4 * index) & 0xfffc);
}

std::uint32_t PciFunction::mmio_bar_base(unsigned index) const {
  if (index >= 6 || bar_size_[index] == 0 || !bar_is_mmio_[index]) return 0;
  if (!(get16(pci_reg::kCommand) & pci_reg::kCommandMemory)) return 0;
  return get32(pci_reg::kBar0 + 4 * index) & ~std::uint32_t{0xf};
}

void PciFunction::detach() {
  Device* device = bar_device();
  if (bus_ != nullptr && device != nullptr) {
    for (unsigned i = 0; i < 6; ++i) {
      if (bar_mapped_[i] == 0) continue;
      if (bar_is_mmio_[i]) bus_->unmap_mmio(device, 100 + static_cast<int>(i));
      else bus_->unmap_pio(device, 100 + static_cast<int>(i));
      bar_mapped_[i] = 0;
    }
  }
  bus_ = nullptr;
}

void PciFunction::update_bars() {
  Device* device = bar_device();
  if (bus_ == nullptr || device == nullptr) return;
  for (unsigned i = 0; i < 6; ++i) {
    if (bar_size_[i] == 0) continue;
    const int tag = 100 + static_cast<int>(i);
    const std::uint32_t want = bar_is_mmio_[i] ? mmio_bar_base(i) : io_bar_base(i);
    if (want == bar_mapped_[i]) continue;
    // Region tags 100+i are reserved for BARs; devices map their fixed ports with small tags.
    if (bar_is_mmio_[i]) {
      bus_->unmap_mmio(device, tag);
    } else {
      bus_->unmap_pio(device, tag);
    }
    bar_mapped_[i] = 0;
    // A BAR at 0 or overlapping another device's range stays undecoded.
    const bool mapped = want != 0 && (bar_is_mmio_[i]
        ? bus_->map_mmio(want, bar_size_[i], device, tag)
        : bus_->map_pio(static_cast<std::uint16_t>(want), bar_size_[i], device, tag));
    if (mapped) bar_mapped_[i] = want;
  }
}

bool PciBus::add(unsigned slot, unsigned function, std::unique_ptr<PciFunction> fn, IoBus* bus) {
  if (slot >= 32 || function >= 8 || functions_[slot * 8 + function]) return false;
  fn->attach(bus);
  functions_[slot * 8 + function] = std::move(fn);
  return true;
}

PciFunction* PciBus::find(unsigned slot, unsigned function) const {
  if (slot >= 32 || function >= 8 || unplugged_[slot * 8 + function]) return nullptr;
  return functions_[slot * 8 + function].get();
}

bool PciBus::unplug(unsigned slot, unsigned function) {
  PciFunction* fn = find(slot, function);
  if (fn == nullptr) return false;
  unplugged_[slot * 8 + function] = true;
  fn->detach();
  fn->unplugged();
  return true;
}

// CONFIG_ADDRESS: bit 31 enable, 23:16 bus, 15:11 device, 10:8 function, 7:2 register.
PciFunction* PciBus::selected(unsigned* reg) const {
  if (!(address_ & 0x80000000u)) return nullptr;
  if (((address_ >> 16) & 0xff) != 0) return nullptr;
  *reg = address_ & 0xfc;
  return find((address_ >> 11) & 0x1f, (address_ >> 8) & 0x7);
}

std::uint32_t PciBus::pio_read(int, std::uint16_t offset, unsigned size) {
  if (offset < 4) {
    if (offset == 0 && size == 4) return address_;
    return ~0u;
  }
  unsigned reg = 0;
  PciFunction* fn = selected(&reg);
  const unsigned byte = offset - 4;
  if (fn == nullptr || byte + size > 4) return ~0u >> (32 - 8 * size);
  return fn->config_read(reg + byte, size);
}

void PciBus::pio_write(int, std::uint16_t offset, unsigned size, std::uint32_t value) {
  if (offset < 4) {
    if (offset == 0 && size == 4) address_ = value & 0x80fffffcu;
    return;
  }
  unsigned reg = 0;
  PciFunction* fn = selected(&reg);
  const unsigned byte = offset - 4;
  if (fn == nullptr || byte + size > 4) return;
  fn->config_write(reg + byte, size, value);
}

}  // namespace pvio::hv
