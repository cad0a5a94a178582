// Xen platform PCI device with the emulated-device unplug protocol, and the PC chipset
// functions around it.
#include "pvio/hypervisor/devices/xen_platform.h"

#include <algorithm>

#include "pvio/hypervisor/devices/ide.h"
#include "pvio/xen/hvm/pvdrivers.h"

namespace pvio::hv {

namespace {
constexpr int kRegionFixed = 0;
// Offsets in the fixed range and the access sizes that mean something there.
constexpr std::uint16_t kPortMagic = 0;    // 16-bit read: magic; 16-bit write: unplug mask;
                                           // 32-bit write: build number
constexpr std::uint16_t kPortVersion = 2;  // 8-bit read: version; 16-bit write: product
                                           // number; 8-bit write: one log byte
constexpr std::uint16_t kKnownUnplugBits = xen_unplug::kAllIdeDisks | xen_unplug::kAllNics |
                                           xen_unplug::kAuxIdeDisks | xen_unplug::kNvmeDisks;

std::string hex(std::uint32_t v) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  do {
    s.insert(s.begin(), digits[v & 0xf]);
    v >>= 4;
  } while (v != 0);
  return "0x" + s;
}
}  // namespace

XenPlatform::XenPlatform(Targets targets, LogFn log, ClockFn clock,
                         std::vector<PvDriverBlacklistEntry> blacklist)
    // Class 0xFF80 (unassigned class, subclass 0x80) as Xen's device model reports it.
    : PciFunction(PciId{kXenPlatformVendorId, kXenPlatformDeviceId, 0xff, 0x80, 0x00, 0x01}),
      Device("xen-platform"),
      targets_(std::move(targets)),
      log_(std::move(log)),
      clock_(std::move(clock)),
      blacklist_(std::move(blacklist)) {
  set_subsystem(kXenPlatformVendorId, kXenPlatformDeviceId);
  set_interrupt(kXenPlatformGsi, 1);  // INTA#
}

bool XenPlatform::attach_fixed_ports(IoBus* bus) {
  return bus->map_pio(xen_unplug::kIoPort, xen_unplug::kIoPorts, this, kRegionFixed);
}

std::uint32_t XenPlatform::pio_read(int region, std::uint16_t offset, unsigned size) {
  if (region != kRegionFixed) return ~0u;
  if (offset == kPortMagic && size == 2)
    return stats_.blacklisted ? xen_unplug::kMagicBlacklisted : xen_unplug::kMagic;
  if (offset == kPortVersion && size == 1) return xen_unplug::kVersion;
  if (offset == kPortMagic && size == 1) return 0;  // platform flags: no ROM to lock here
  return ~0u >> (32 - 8 * size);                    // nothing else answers
}

void XenPlatform::pio_write(int region, std::uint16_t offset, unsigned size, std::uint32_t value) {
  if (region != kRegionFixed) return;
  if (offset == kPortMagic && size == 2) return unplug(static_cast<std::uint16_t>(value));
  if (offset == kPortMagic && size == 4) return set_build(value);
  if (offset == kPortVersion && size == 2) return set_product(static_cast<std::uint16_t>(value));
  if (offset == kPortVersion && size == 1) return log_byte(static_cast<std::uint8_t>(value));
  if (offset == kPortMagic && size == 1) return;  // platform flags: accepted, no effect
  ++counters_.invalid_requests;  // any other port or width means nothing in the protocol
}

void XenPlatform::protocol_error(const std::string& what) {
  ++stats_.protocol_errors;
  ++counters_.invalid_requests;
  if (!stats_.blacklisted) log(what + "; the drivers are refused (magic now reads 0xd249)");
  else log(what);
  // Drivers that do not follow the protocol are treated as blacklisted ones: they are told not
  // to load, and their unplug request is not honoured, so the guest keeps its emulated disk.
  stats_.blacklisted = true;
}

// pvdrivers.h names the product; an unregistered number cannot be checked against the
// blacklist, and pvio-hv does not let such drivers take the emulated devices away.
void XenPlatform::set_product(std::uint16_t product) {
  const char* name = xen::pvdrivers_product_name(product);
  if (product_set_ && product != stats_.product)
    return protocol_error("PV driver product changed from " + std::to_string(stats_.product) +
                          " to " + std::to_string(product));
  stats_.product = product;
  product_set_ = true;
  if (name == nullptr)
    return protocol_error("unregistered PV driver product " + std::to_string(product));
  log("PV driver product " + std::to_string(product) + " (" + name + ")");
}

void XenPlatform::set_build(std::uint32_t build) {
  if (!product_set_) return protocol_error("PV driver build " + std::to_string(build) +
                                           " written before the product number");
  stats_.build = build;
  const char* name = xen::pvdrivers_product_name(stats_.product);
  log("PV driver build " + std::to_string(build));
  if (name == nullptr) return;
  for (const PvDriverBlacklistEntry& e : blacklist_) {
    if (e.product != name || (e.build && *e.build != build)) continue;
    stats_.blacklisted = true;
    log(std::string("PV driver ") + name + " build " + std::to_string(build) +
        " is blacklisted (magic now reads 0xd249)");
    return;
  }
}

void XenPlatform::unplug(std::uint16_t mask) {
  ++stats_.unplug_requests;
  if (stats_.blacklisted) {
    ++stats_.unplug_refused;
    log("unplug " + hex(mask) + " ignored: the drivers are blacklisted");
    return;
  }
  if (mask & ~kKnownUnplugBits) {
    ++counters_.invalid_requests;
    log("unplug " + hex(mask) + ": unknown bits " + hex(mask & ~kKnownUnplugBits) + " ignored");
  }
  // Bit 0 covers every IDE disk; bit 2 every one but the primary master, which is the only
  // one this IDE model has, so alone it takes nothing. There are no NVMe disks (bit 3).
  if ((mask & xen_unplug::kAllIdeDisks) && targets_.ide != nullptr && targets_.ide->disk_present()) {
    const bool flushed = targets_.ide->unplug_disk();
    ++stats_.ide_unplugs;
    if (!flushed) ++stats_.ide_flush_failures;
    log(flushed ? "unplug: IDE primary master drained, flushed and removed"
                : "unplug: IDE primary master removed, but its flush FAILED");
  }
  if (mask & xen_unplug::kAllNics) unplug_nics();
  if (!(mask & (xen_unplug::kAllIdeDisks | xen_unplug::kAllNics)))
    log("unplug " + hex(mask) + ": no such emulated device here");
}

void XenPlatform::unplug_nics() {
  if (targets_.pci == nullptr) return;
  unsigned n = 0;
  for (unsigned slot = 0; slot < 32; ++slot) {
    for (unsigned fn = 0; fn < 8; ++fn) {
      PciFunction* f = targets_.pci->find(slot, fn);
      // Class 02, subclass 00: Ethernet controller (QEMU unplugs by the same test).
      if (f == nullptr || f->config_read(pci_reg::kSubclass, 2) != 0x0200) continue;
      if (!targets_.pci->unplug(slot, fn)) continue;
      ++n;
      log("unplug: NIC at 00:" + std::to_string(slot) + "." + std::to_string(fn) + " removed");
    }
  }
  stats_.nic_unplugs += n;
  if (n > 0 && targets_.nics_unplugged) targets_.nics_unplugged();
}

// One byte of a log line from the drivers: printable ASCII kept, anything else shown as '?',
// a line ends at '\n' or at kMaxLogLine bytes. The rate limit is a token bucket of whole lines.
void XenPlatform::log_byte(std::uint8_t byte) {
  if (byte == '\n') return flush_log_line();
  line_.push_back(byte >= 0x20 && byte < 0x7f ? static_cast<char>(byte) : '?');
  if (line_.size() >= xen_unplug::kMaxLogLine) flush_log_line();
}

void XenPlatform::flush_log_line() {
  const std::uint64_t now = clock_ ? clock_() : 0;
  if (now >= log_refilled_ns_ + xen_unplug::kLogRefillNs) {
    const std::uint64_t add = (now - log_refilled_ns_) / xen_unplug::kLogRefillNs;
    log_tokens_ = static_cast<unsigned>(
        std::min<std::uint64_t>(xen_unplug::kLogBurst, log_tokens_ + add));
    log_refilled_ns_ = now;
  }
  if (log_tokens_ == 0) {
    ++stats_.log_dropped;
    if (!log_limited_) log("guest log rate limit reached; dropping lines");
    log_limited_ = true;
  } else {
    --log_tokens_;
    log_limited_ = false;
    ++stats_.log_lines;
    log("guest: " + line_);
  }
  line_.clear();
}

std::unique_ptr<PciFunction> make_host_bridge() {
  return std::make_unique<PciFunction>(PciId{0x8086, 0x1237, 0x06, 0x00, 0x00, 0x02});
}

std::unique_ptr<PciFunction> make_isa_bridge() {
  return std::make_unique<PciFunction>(PciId{0x8086, 0x7000, 0x06, 0x01, 0x00, 0x00},
                                       /*multifunction=*/true);
}

}  // namespace pvio::hv
