// StorPort for the host: implements the StorPort routines xenvbd imports and drives one
// adapter of the registered miniport the way StorPort does (HwFindAdapter at PASSIVE_LEVEL,
// HwInitialize at DIRQL, the passive initialisation routine, HwStartIo at DISPATCH_LEVEL with
// the StartIo lock held, DPCs on their own thread at DISPATCH_LEVEL, HwAdapterControl and
// HwFreeAdapterResources at removal, the power-down / power-up cycle of a sleep state). It
// enforces the SRB life cycle: an SRB completes exactly once, never with SRB_STATUS_PENDING,
// and its extension is poisoned once completed (StorPort reuses it), so a driver that keeps
// using it misbehaves visibly; and the stopped state: between ScsiStopAdapter and
// ScsiRestartAdapter StorPort starts no request and the miniport completes none.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "pvio/wdk/storport.h"

namespace pvio::windows::test {

// One SCSI request as the disk class driver would build it.
struct ScsiRequest {
  SCSI_REQUEST_BLOCK srb{};
  std::vector<std::uint8_t> data;
  std::uint8_t sense[18] = {};
  std::unique_ptr<std::uint8_t[]> extension;
  UCHAR status() const { return SRB_STATUS(srb.SrbStatus); }
  UCHAR sense_key() const { return sense[2] & 0x0F; }
  UCHAR asc() const { return sense[12]; }
};

class StorPortHost {
 public:
  static StorPortHost& instance();

  // What the miniport registered in DriverEntry (nullptr before StorPortInitialize).
  const HW_INITIALIZATION_DATA* registered() const { return registered_ ? &init_ : nullptr; }

  // PnP start of the adapter whose lower device (xenbus's PDO) is `lower`. Returns the
  // HwFindAdapter result; on SP_RETURN_FOUND the adapter is initialised and ready.
  ULONG start_adapter(PDEVICE_OBJECT lower);
  const PORT_CONFIGURATION_INFORMATION& config() const { return config_; }

  // A request with a CDB and a data buffer of data_len bytes (direction from the flags).
  std::unique_ptr<ScsiRequest> make_request(std::initializer_list<std::uint8_t> cdb,
                                            std::uint32_t data_len, ULONG flags);
  // HwStartIo for the request (from this thread, as StorPort's start path does).
  void issue(ScsiRequest& r);
  // Waits for RequestComplete; false after timeout_ms.
  bool wait(ScsiRequest& r, int timeout_ms);
  bool execute(ScsiRequest& r, int timeout_ms = 20000) {
    issue(r);
    return wait(r, timeout_ms);
  }
  std::size_t outstanding();
  void* device_extension() const { return devext_; }

  // PnP remove: HwAdapterControl(ScsiStopAdapter) at DIRQL, then HwFreeAdapterResources at
  // PASSIVE_LEVEL. SRBs still outstanding are a violation.
  void stop_adapter();

  // A sleep state as StorPort handles it (HW_ADAPTER_CONTROL, SCSI_ADAPTER_CONTROL_TYPE):
  // power_down() holds the queue and waits until every started SRB has completed, sends
  // SRB_FUNCTION_FLUSH, then HwAdapterControl(ScsiStopAdapter) at DIRQL and, when the miniport
  // reported it, ScsiSetBootConfig at PASSIVE_LEVEL. power_up(): ScsiSetRunningConfig at
  // PASSIVE_LEVEL when reported, ScsiRestartAdapter at DIRQL (every StorPort miniport must
  // support it), then requests flow again. A miniport that reports neither stop nor restart,
  // fails a control type, or completes / asks for requests while stopped breaks a rule.
  void power_down();
  void power_up();
  bool stopped() const { return stopped_.load(); }
  // What ScsiQuerySupportedControlTypes answered at start (PASSIVE_LEVEL, before the first I/O).
  bool supports(SCSI_ADAPTER_CONTROL_TYPE t) const {
    return t < ScsiAdapterControlMax && supported_[t];
  }

  // ---- the StorPort routines (storport.cc's extern "C" entry points forward here) ----
  ULONG initialize(PVOID driver, PVOID registry, PHW_INITIALIZATION_DATA init);
  void notification(SCSI_NOTIFICATION_TYPE type, PVOID ext, va_list ap);
  ULONG get_device_objects(PVOID ext, PVOID* fdo, PVOID* pdo, PVOID* lower);

 private:
  StorPortHost() = default;
  void dpc_loop();
  void acquire_start_io_lock(KIRQL* old);
  void release_start_io_lock(KIRQL old);
  bool check_extension(PVOID ext, const char* what);
  void adapter_control(SCSI_ADAPTER_CONTROL_TYPE t, KIRQL irql, PVOID params, const char* name);

  HW_INITIALIZATION_DATA init_{};
  bool registered_ = false;
  PORT_CONFIGURATION_INFORMATION config_{};
  std::unique_ptr<std::uint8_t[]> devext_raw_;
  void* devext_ = nullptr;
  PDEVICE_OBJECT lower_ = nullptr;
  std::uint8_t fdo_[64] = {};
  bool in_hw_initialize_ = false;
  HW_PASSIVE_INITIALIZE_ROUTINE_T* passive_init_ = nullptr;
  bool supported_[ScsiAdapterControlMax] = {};
  std::atomic<bool> stopped_{false};  // ScsiStopAdapter issued, ScsiRestartAdapter not yet

  std::mutex start_io_mu_;
  std::thread::id start_io_owner_;

  std::mutex mu_;  // SRB bookkeeping and the DPC queue
  std::condition_variable cv_;
  std::set<PSCSI_REQUEST_BLOCK> outstanding_;
  std::set<PSCSI_REQUEST_BLOCK> completed_;
  struct QueuedDpc {
    PSTOR_DPC dpc;
    PVOID arg1;
    PVOID arg2;
  };
  std::deque<QueuedDpc> dpcs_;
  std::set<PSTOR_DPC> dpc_queued_;
  std::set<PSTOR_DPC> dpc_initialized_;
  bool dpc_stop_ = false;
  std::thread dpc_thread_;
};

}  // namespace pvio::windows::test
