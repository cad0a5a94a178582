// The unplug decision (see unplug.h).
#include "unplug.h"

namespace pvio::windows::xenbus {

UnplugDecision decide_unplug(const UnplugState& s) {
  UnplugDecision d;
  if (!s.protocol_present) {
    d.reason = UnplugReason::NoProtocol;
    return d;
  }
  if (!s.product_accepted) {
    d.reason = UnplugReason::ProductRefused;
    return d;
  }
  if (s.keep_emulated) {
    d.reason = UnplugReason::KeptByUser;
    return d;
  }
  // Disks only when the PV disk driver will be there to take over the boot disk; NICs
  // whenever xennet is installed (a missing NIC never stops the boot).
  const bool disks = s.request_disks && s.xenvbd_boot_start;
  const bool nics = s.request_nics && s.xennet_installed;
  if (disks) d.mask |= kUnplugAllIdeDisks;
  if (nics) d.mask |= kUnplugAllNics;
  d.use_pv_disks = disks;
  d.use_pv_nics = nics;
  if (d.mask != 0) d.reason = UnplugReason::Unplugged;
  else if (s.request_disks && !s.xenvbd_boot_start) d.reason = UnplugReason::DiskDriverMissing;
  else d.reason = UnplugReason::NothingRequested;
  return d;
}

const char* unplug_reason_name(UnplugReason r) {
  switch (r) {
    case UnplugReason::Unplugged: return "unplugged";
    case UnplugReason::NothingRequested: return "nothing requested";
    case UnplugReason::KeptByUser: return "kept by the user (KeepEmulated)";
    case UnplugReason::NoProtocol: return "no unplug protocol";
    case UnplugReason::ProductRefused: return "product refused by the device model";
    case UnplugReason::DiskDriverMissing: return "disk unplug requested but xenvbd is not boot-start";
  }
  return "?";
}

}  // namespace pvio::windows::xenbus
