// xenvbd: one StorPort adapter per PV disk (a child device of xenbus, device/vbd/<id>), with
// one target and one LUN, driven by the portable blkfront core. The adapter lives in StorPort's
// device extension; each SRB's extension holds the BlockIos it needs, so the I/O path never
// allocates.
//
// Serialisation of the (single-threaded) core:
//   datapath  HwStartIo (StartIoLock held by StorPort, DISPATCH_LEVEL) and the event DPC
//             (takes StartIoLock) call submit()/handle_all_events();
//   control   the handshake and reconnects run at PASSIVE_LEVEL (xenstore, memory, event
//             channels need it): HwFindAdapter, the passive initialisation routine, and
//             xenbus's watch thread. A control step marks the core busy under StartIoLock,
//             runs without the lock, then replays what the datapath deferred meanwhile.
//             A watch never waits for a control step in progress (which may itself be waiting
//             for watch events): it asks the owner to run another step instead.
//   power     HwAdapterControl: ScsiStopAdapter / ScsiRestartAdapter at DIRQL only flip the
//             stopped state; the disconnect (ScsiSetBootConfig) and the reconnect
//             (ScsiSetRunningConfig) are control steps at PASSIVE_LEVEL.
#pragma once

#include <cstdint>

#include "pvio/blkfront/blkfront.h"
#include "pvio/wdk/storport.h"
#include "pvio/windows/xen_interface.h"
#include "scsi.h"

namespace pvio::windows::xenvbd {

class Adapter;

// StorPort's per-SRB extension.
struct SrbExt {
  PSCSI_REQUEST_BLOCK srb = nullptr;
  Adapter* adapter = nullptr;
  SrbExt* next_deferred = nullptr;
  std::uint32_t nr_ios = 0;
  std::uint32_t ios_left = 0;
  blkfront::IoStatus worst = blkfront::IoStatus::Ok;
  bool write = false;
  blkfront::BlockIo io[kMaxUnmapDescriptors];
};

class Adapter {
 public:
  Adapter() = default;
  Adapter(const Adapter&) = delete;
  Adapter& operator=(const Adapter&) = delete;

  // StorPort entry points (driver.cc forwards to them).
  ULONG find_adapter(PPORT_CONFIGURATION_INFORMATION config);  // PASSIVE_LEVEL
  BOOLEAN initialize();                                         // DIRQL
  BOOLEAN passive_initialize();                                 // PASSIVE_LEVEL
  BOOLEAN start_io(PSCSI_REQUEST_BLOCK srb);                    // DISPATCH_LEVEL, StartIoLock
  void dpc();                                                   // DISPATCH_LEVEL
  SCSI_ADAPTER_CONTROL_STATUS adapter_control(SCSI_ADAPTER_CONTROL_TYPE type, PVOID params);
  void free_resources();                                        // PASSIVE_LEVEL

  // Callbacks from xenbus (xen_interface.h).
  static VOID on_event(PVOID ctx, ULONG port);       // DISPATCH_LEVEL
  static VOID on_watch(PVOID ctx, PCSTR path);       // PASSIVE_LEVEL, watch thread
  static void io_done(blkfront::BlockIo* io);

 private:
  class XenPlatform;
  friend class XenPlatform;

  NTSTATUS query_xen_interface();
  void execute_scsi(SrbExt* ext);
  void submit(SrbExt* ext);
  void complete(SrbExt* ext, UCHAR srb_status);
  void complete_check(SrbExt* ext, const Sense& sense);
  void finish(SrbExt* ext);
  void control_step();
  void run_control_steps();
  void begin_control();
  void end_control();
  void power_down();  // PASSIVE_LEVEL, adapter stopped
  void power_up();    // PASSIVE_LEVEL, before ScsiRestartAdapter
  void update_geometry();
  void lock(STOR_LOCK_HANDLE& h) { StorPortAcquireSpinLock(this, StartIoLock, nullptr, &h); }
  void unlock(STOR_LOCK_HANDLE& h) { StorPortReleaseSpinLock(this, &h); }
  void logf(ULONG level, const char* msg);

  PVIO_XEN_INTERFACE xen_{};
  bool have_interface_ = false;
  XenPlatform* platform_ = nullptr;
  blkfront::Blkfront* core_ = nullptr;
  void* core_storage_ = nullptr;
  alignas(16) unsigned char platform_mem_[512];
  alignas(16) unsigned char core_mem_[sizeof(blkfront::Blkfront)];

  Geometry geo_;
  STOR_DPC dpc_{};
  KEVENT watch_event_{};    // a watch fired (the core's xs_wait)
  KEVENT control_mutex_{};  // one control step at a time
  volatile bool dpc_ready_ = false;
  volatile bool steady_ = false;    // after passive initialisation: watches drive the core
  bool control_busy_ = false;       // under StartIoLock: a control step owns the core
  bool events_pending_ = false;     // under StartIoLock: an event came while busy
  volatile bool early_event_ = false;  // an event before the DPC existed
  volatile bool stopped_ = false;      // between ScsiStopAdapter and ScsiRestartAdapter
  volatile bool step_wanted_ = false;  // a watch came while a control step was running
  bool suspended_ = false;             // under control_mutex_: disconnected for power-down
  SrbExt* deferred_head_ = nullptr;  // under StartIoLock
  SrbExt* deferred_tail_ = nullptr;
};

}  // namespace pvio::windows::xenvbd
