// The VMM's I/O bus: guest port-I/O and MMIO exits are dispatched here to the device that
// decodes the address, and every exit is counted per device (the "VM exits per I/O" figure).
// Not thread-safe by itself: the VM serialises device access with one lock, as kvmtool does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace pvio::hv {

struct ExitCounters {
  std::uint64_t pio_exits = 0;
  std::uint64_t mmio_exits = 0;
  std::uint64_t invalid_requests = 0;  // guest requests the device rejected with an error status
};

class Device {
 public:
  explicit Device(std::string name) : name_(std::move(name)) {}
  virtual ~Device() = default;
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  const std::string& name() const { return name_; }
  ExitCounters& counters() { return counters_; }
  const ExitCounters& counters() const { return counters_; }

  // `region` is the tag the device gave when its range was mapped; `offset` is relative to the
  // range's base; `size` is 1, 2 or 4 (port I/O) or 1..8 (MMIO). Reads of nothing return ~0.
  virtual std::uint32_t pio_read(int region, std::uint16_t offset, unsigned size);
  virtual void pio_write(int region, std::uint16_t offset, unsigned size, std::uint32_t value);
  virtual std::uint64_t mmio_read(int region, std::uint64_t offset, unsigned size);
  virtual void mmio_write(int region, std::uint64_t offset, unsigned size, std::uint64_t value);

 protected:
  ExitCounters counters_;

 private:
  std::string name_;
};

class IoBus {
 public:
  // Maps [base, base + length) to `device`. Fails (returns false) on overlap with another
  // mapping or on an empty/wrapping range, so a guest reprogramming a BAR cannot steal ports.
  bool map_pio(std::uint16_t base, std::uint32_t length, Device* device, int region);
  bool map_mmio(std::uint64_t base, std::uint64_t length, Device* device, int region);
  void unmap_pio(Device* device, int region);
  void unmap_mmio(Device* device, int region);

  // One VM exit each. `data` holds size * count bytes (KVM's string I/O batches up to a page).
  void handle_pio(std::uint16_t port, bool is_write, unsigned size, std::uint32_t count,
                  std::uint8_t* data);
  void handle_mmio(std::uint64_t addr, bool is_write, unsigned len, std::uint8_t* data);

  const ExitCounters& unassigned() const { return unassigned_; }
  // Every device that was ever mapped, with its counters.
  const std::vector<Device*>& devices() const { return devices_; }
  // Sum of pio+mmio exits of all devices plus unassigned accesses.
  std::uint64_t total_exits() const;

 private:
  struct Range {
    std::uint64_t base, length;
    Device* device;
    int region;
  };
  bool map(std::vector<Range>& ranges, std::uint64_t base, std::uint64_t length, Device* device,
           int region);
  static const Range* find(const std::vector<Range>& ranges, std::uint64_t addr);
  void note_device(Device* device);

  std::vector<Range> pio_;
  std::vector<Range> mmio_;
  std::vector<Device*> devices_;
  ExitCounters unassigned_;
};

}  // namespace pvio::hv
