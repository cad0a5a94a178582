// Xen platform PCI device (5853:0001, class 0xFF80): its presence tells an HVM guest that PV
// drivers can be loaded, and its fixed I/O ports 0x10-0x1f carry Xen's emulated-device unplug
// protocol (docs/misc/hvm-emulated-unplug.pandoc): PV drivers identify themselves, may be
// refused (blacklisted), log lines to the host, and unplug the emulated disks and NICs they
// replace. Plus the PC chipset functions around it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pvio/hypervisor/pci.h"

namespace pvio::hv {

class PiixIde;

inline constexpr std::uint16_t kXenPlatformVendorId = 0x5853;
inline constexpr std::uint16_t kXenPlatformDeviceId = 0x0001;
// Where pvio-hv puts it: 00:02.0, INTA#, which drives this GSI (an IOAPIC-only pin, as PCI
// INTx lines sit on pins 16-23; the e1000 has 16, the upcall vector route 23). The callback
// type PCI_INTX names this line (xen_hvm.cc).
inline constexpr unsigned kXenPlatformSlot = 2;
inline constexpr unsigned kXenPlatformGsi = 17;

// The unplug protocol's fixed ports and values.
namespace xen_unplug {
inline constexpr std::uint16_t kIoPort = 0x10;  // 16 ports, 0x10-0x1f
inline constexpr std::uint16_t kIoPorts = 16;
inline constexpr std::uint16_t kMagic = 0x49d2;             // 16-bit read of 0x10
inline constexpr std::uint16_t kMagicBlacklisted = 0xd249;  // ... once the drivers are refused
inline constexpr std::uint8_t kVersion = 1;                 // 8-bit read of 0x12 (QEMU's)
// The 16-bit unplug mask written to 0x10.
inline constexpr std::uint16_t kAllIdeDisks = 1, kAllNics = 2, kAuxIdeDisks = 4, kNvmeDisks = 8;
inline constexpr std::size_t kMaxLogLine = 256;  // longer lines are split
// Log lines a guest may send in a burst, and the rate the burst refills at afterwards.
inline constexpr unsigned kLogBurst = 32;
inline constexpr std::uint64_t kLogRefillNs = 100'000'000;  // one line per 100 ms
}  // namespace xen_unplug

// A driver build the host refuses: Xen's /mh/driver-blacklist/<product name>/<build>
// (no build: every build of the product).
struct PvDriverBlacklistEntry {
  std::string product;
  std::optional<std::uint32_t> build;
};

struct XenPlatformStats {
  std::uint64_t unplug_requests = 0;  // 16-bit writes of an unplug mask
  std::uint64_t unplug_refused = 0;   // ... ignored because the drivers are blacklisted
  std::uint64_t ide_unplugs = 0;      // IDE disks taken away (0 or 1: one disk)
  std::uint64_t ide_flush_failures = 0;
  std::uint64_t nic_unplugs = 0;      // NIC functions taken off the bus
  std::uint64_t protocol_errors = 0;  // build before product, unregistered product, ...
  std::uint64_t log_lines = 0, log_dropped = 0;  // dropped: over the rate limit
  std::uint16_t product = 0;          // last product number written (0: none)
  std::uint32_t build = 0;
  bool blacklisted = false;
};

class XenPlatform : public PciFunction, public Device {
 public:
  // Where the host sees the protocol's events and the drivers' log lines (one line each, no
  // newline); the caller adds the domain prefix.
  using LogFn = std::function<void(std::string_view line)>;
  using ClockFn = std::function<std::uint64_t()>;  // monotonic ns, for the log rate limit

  // What an unplug can take away: the IDE disk, the NIC functions on `pci` (class 02:00), and
  // what the caller does once NICs went (detach their wire).
  struct Targets {
    PiixIde* ide = nullptr;
    PciBus* pci = nullptr;
    std::function<void()> nics_unplugged;
  };

  XenPlatform(Targets targets, LogFn log, ClockFn clock,
              std::vector<PvDriverBlacklistEntry> blacklist = {});

  // Maps the fixed ports 0x10-0x1f on `bus`.
  bool attach_fixed_ports(IoBus* bus);

  std::uint32_t pio_read(int region, std::uint16_t offset, unsigned size) override;
  void pio_write(int region, std::uint16_t offset, unsigned size, std::uint32_t value) override;

  const XenPlatformStats& stats() const { return stats_; }

 private:
  void set_product(std::uint16_t product);
  void set_build(std::uint32_t build);
  void unplug(std::uint16_t mask);
  void unplug_nics();
  void log_byte(std::uint8_t byte);
  void flush_log_line();
  void protocol_error(const std::string& what);
  void log(const std::string& line) {
    if (log_) log_(line);
  }

  Targets targets_;
  LogFn log_;
  ClockFn clock_;
  std::vector<PvDriverBlacklistEntry> blacklist_;
  XenPlatformStats stats_;
  bool product_set_ = false;
  std::string line_;
  unsigned log_tokens_ = xen_unplug::kLogBurst;
  std::uint64_t log_refilled_ns_ = 0;
  bool log_limited_ = false;  // the "lines dropped" notice was printed for this burst
};

// i440FX host bridge (8086:1237) and PIIX3 ISA bridge (8086:7000) at 00.0 / 01.0, so the IDE
// function sits where a PC guest expects it (01.1).
std::unique_ptr<PciFunction> make_host_bridge();
std::unique_ptr<PciFunction> make_isa_bridge();

}  // namespace pvio::hv
