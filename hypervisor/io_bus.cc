// Port-I/O and MMIO dispatch with per-device exit counting.
#include "pvio/hypervisor/io_bus.h"

#include <algorithm>
#include <cstring>

namespace pvio::hv {

std::uint32_t Device::pio_read(int, std::uint16_t, unsigned) { return ~0u; }
void Device::pio_write(int, std::uint16_t, unsigned, std::uint32_t) {}
std::uint64_t Device::mmio_read(int, std::uint64_t, unsigned) { return ~std::uint64_t{0}; }
void Device::mmio_write(int, std::uint64_t, unsigned, std::uint64_t) {}

bool IoBus::map(std::vector<Range>& ranges, std::uint64_t base, std::uint64_t length,
                Device* device, int region) {
  if (length == 0 || base + length < base || device == nullptr) return false;
  for (const Range& r : ranges)
    if (base < r.base + r.length && r.base < base + length) return false;
  ranges.push_back({base, length, device, region});
  note_device(device);
  return true;
}

bool IoBus::map_pio(std::uint16_t base, std::uint32_t length, Device* device, int region) {
  if (std::uint32_t{base} + length > 0x10000) return false;
  return map(pio_, base, length, device, region);
}

bool IoBus::map_mmio(std::uint64_t base, std::uint64_t length, Device* device, int region) {
  return map(mmio_, base, length, device, region);
}

void IoBus::unmap_pio(Device* device, int region) {
  std::erase_if(pio_, [&](const Range& r) { return r.device == device && r.region == region; });
}

void IoBus::unmap_mmio(Device* device, int region) {
  std::erase_if(mmio_, [&](const Range& r) { return r.device == device && r.region == region; });
}

void IoBus::note_device(Device* device) {
  if (std::find(devices_.begin(), devices_.end(), device) == devices_.end())
    devices_.push_back(device);
}

const IoBus::Range* IoBus::find(const std::vector<Range>& ranges, std::uint64_t addr) {
  for (const Range& r : ranges)
    if (addr >= r.base && addr - r.base < r.length) return &r;
  return nullptr;
}

void IoBus::handle_pio(std::uint16_t port, bool is_write, unsigned size, std::uint32_t count,
                       std::uint8_t* data) {
  const Range* r = find(pio_, port);
  if (r == nullptr) {
    ++unassigned_.pio_exits;
    if (!is_write) std::memset(data, 0xff, std::size_t{size} * count);
    return;
  }
  ++r->device->counters().pio_exits;
  if (size != 1 && size != 2 && size != 4) return;
  // Copy the range out: a handler may remap its own BAR (and so reallocate pio_).
  Device* device = r->device;
  const int region = r->region;
  const auto offset = static_cast<std::uint16_t>(port - r->base);
  for (std::uint32_t i = 0; i < count; ++i) {
    std::uint8_t* p = data + std::size_t{i} * size;
    if (is_write) {
      std::uint32_t v = 0;
      std::memcpy(&v, p, size);
      device->pio_write(region, offset, size, v);
    } else {
      const std::uint32_t v = device->pio_read(region, offset, size);
      std::memcpy(p, &v, size);
    }
  }
}

void IoBus::handle_mmio(std::uint64_t addr, bool is_write, unsigned len, std::uint8_t* data) {
  const Range* r = find(mmio_, addr);
  if (r == nullptr || len == 0 || len > 8) {
    ++unassigned_.mmio_exits;
    if (!is_write) std::memset(data, 0xff, std::min(len, 8u));
    return;
  }
  ++r->device->counters().mmio_exits;
  Device* device = r->device;
  if (is_write) {
    std::uint64_t v = 0;
    std::memcpy(&v, data, len);
    device->mmio_write(r->region, addr - r->base, len, v);
  } else {
    const std::uint64_t v = device->mmio_read(r->region, addr - r->base, len);
    std::memcpy(data, &v, len);
  }
}

std::uint64_t IoBus::total_exits() const {
  std::uint64_t n = unassigned_.pio_exits + unassigned_.mmio_exits;
  for (const Device* d : devices_) n += d->counters().pio_exits + d->counters().mmio_exits;
  return n;
}

}  // namespace pvio::hv
