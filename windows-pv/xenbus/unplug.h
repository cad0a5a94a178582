// The emulated-device unplug decision of xenbus (Xen docs/misc/hvm-emulated-unplug.pandoc):
// which emulated devices to unplug at boot, from the registry state the PV drivers' INFs
// write. Two phases, as Windows PV driver sets do it: installing xenvbd/xennet only writes a
// request (phase 1, the emulated devices stay for this boot, so the running system keeps its
// boot disk); at the next boot xenbus honours the request (phase 2) if the PV driver is
// still installed to start with the system. A user can keep the emulated devices whatever
// was requested. Pure function: the test suite checks every combination.
#pragma once

#include <cstdint>

namespace pvio::windows::xenbus {

// Port I/O protocol constants (hvm-emulated-unplug.pandoc).
inline constexpr std::uint16_t kUnplugPort = 0x10;         // magic (read), mask (write 16)
inline constexpr std::uint16_t kUnplugVersionPort = 0x12;  // version (read 8), product (write 16)
inline constexpr std::uint16_t kUnplugMagic = 0x49d2;
inline constexpr std::uint16_t kUnplugAllIdeDisks = 0x0001;
inline constexpr std::uint16_t kUnplugAllNics = 0x0002;
inline constexpr std::uint16_t kUnplugAuxIdeDisks = 0x0004;

// What xenbus reads at boot, before anything binds to the emulated devices.
struct UnplugState {
  // HKLM\SYSTEM\CurrentControlSet\Services\xenbus\Parameters, written by the INFs.
  bool request_disks = false;  // "RequestDisks" = 1: xenvbd was installed (phase 1 done)
  bool request_nics = false;   // "RequestNics" = 1: xennet was installed
  bool keep_emulated = false;  // "KeepEmulated" = 1: never unplug (the user's way back)
  // Services\xenvbd Start == 0 (boot start): the PV disk driver loads before the boot volume
  // is needed. Without it, unplugging the IDE disks would take the boot disk away.
  bool xenvbd_boot_start = false;
  bool xennet_installed = false;  // Services\xennet exists
  // From the ports: the magic answered, and the product number was not refused.
  bool protocol_present = false;
  bool product_accepted = false;
};

enum class UnplugReason : std::uint8_t {
  Unplugged,          // mask != 0 written
  NothingRequested,   // no request in the registry (fresh install, or phase 1 this boot)
  KeptByUser,         // KeepEmulated
  NoProtocol,         // the device model has no unplug protocol: leave everything
  ProductRefused,     // blacklisted product: Xen asks us not to use PV drivers
  DiskDriverMissing,  // disks requested, but xenvbd is not boot-start: keep the boot disk
};

struct UnplugDecision {
  std::uint16_t mask = 0;  // written to kUnplugPort when non-zero
  bool use_pv_disks = false;
  bool use_pv_nics = false;
  UnplugReason reason = UnplugReason::NothingRequested;
};

UnplugDecision decide_unplug(const UnplugState& s);
const char* unplug_reason_name(UnplugReason r);

}  // namespace pvio::windows::xenbus
