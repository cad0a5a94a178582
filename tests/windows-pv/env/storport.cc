// StorPort for the host (see storport_host.h) and the storport.sys entry points.
#include <chrono>
#include <cstdarg>
#include <cstddef>
#include <cstring>

#include "kernel.h"
#include "storport_host.h"

namespace pvio::windows::test {

namespace {
constexpr std::uint8_t kPoison = 0xDD;
}

StorPortHost& StorPortHost::instance() {
  static StorPortHost host;
  return host;
}

ULONG StorPortHost::initialize(PVOID, PVOID, PHW_INITIALIZATION_DATA init) {
  require_irql(PASSIVE_LEVEL, "StorPortInitialize");
  if (init == nullptr || init->HwInitializationDataSize < offsetof(HW_INITIALIZATION_DATA, HwBuildIo)) {
    violation("StorPortInitialize: HwInitializationDataSize too small");
    return static_cast<ULONG>(STATUS_INVALID_PARAMETER);
  }
  if (init->HwFindAdapter == nullptr || init->HwInitialize == nullptr || init->HwStartIo == nullptr) {
    violation("StorPortInitialize: HwFindAdapter, HwInitialize and HwStartIo are required");
    return static_cast<ULONG>(STATUS_INVALID_PARAMETER);
  }
  std::memset(&init_, 0, sizeof init_);
  std::memcpy(&init_, init, std::min<std::size_t>(sizeof init_, init->HwInitializationDataSize));
  registered_ = true;
  return STATUS_SUCCESS;
}

ULONG StorPortHost::start_adapter(PDEVICE_OBJECT lower) {
  lower_ = lower;
  devext_raw_ = std::make_unique<std::uint8_t[]>(init_.DeviceExtensionSize + 64);
  devext_ = reinterpret_cast<void*>(
      (reinterpret_cast<std::uintptr_t>(devext_raw_.get()) + 63) & ~std::uintptr_t{63});
  std::memset(devext_, 0, init_.DeviceExtensionSize);
  std::memset(&config_, 0, sizeof config_);
  config_.Length = sizeof config_;
  config_.AdapterInterfaceType = init_.AdapterInterfaceType;
  config_.MaximumTransferLength = 0xFFFFFFFFu;  // SP_UNINITIALIZED_VALUE
  config_.NumberOfPhysicalBreaks = 0x11;
  config_.ScatterGather = TRUE;
  config_.Master = TRUE;
  config_.Dma32BitAddresses = TRUE;
  config_.DeviceExtensionSize = init_.DeviceExtensionSize;
  config_.SrbExtensionSize = init_.SrbExtensionSize;
  config_.MapBuffers = init_.MapBuffers;
  config_.MaximumNumberOfTargets = 8;
  config_.MaximumNumberOfLogicalUnits = 8;
  config_.NumberOfBuses = 1;
  {
    std::lock_guard lk(mu_);
    dpc_stop_ = false;
  }
  dpc_thread_ = std::thread([this] { dpc_loop(); });

  ULONG rc;
  {
    AtIrql passive(PASSIVE_LEVEL);
    BOOLEAN again = FALSE;
    char args[1] = {0};
    rc = init_.HwFindAdapter(devext_, nullptr, nullptr, args, &config_, &again);
  }
  if (rc != SP_RETURN_FOUND) return rc;
  {
    AtIrql dirql(kDirql);
    in_hw_initialize_ = true;
    const BOOLEAN ok = init_.HwInitialize(devext_);
    in_hw_initialize_ = false;
    if (!ok) return SP_RETURN_ERROR;
  }
  if (passive_init_ != nullptr) {
    AtIrql passive(PASSIVE_LEVEL);
    if (!passive_init_(devext_)) return SP_RETURN_ERROR;
  }
  // After initialisation, before the first I/O: which control types the miniport implements.
  std::memset(supported_, 0, sizeof supported_);
  if (init_.HwAdapterControl != nullptr) {
    // The list's BOOLEAN array runs on past its declared [1], as StorPort allocates it.
    alignas(8) unsigned char buf[sizeof(SCSI_SUPPORTED_CONTROL_TYPE_LIST) + ScsiAdapterControlMax] = {};
    auto* list = reinterpret_cast<PSCSI_SUPPORTED_CONTROL_TYPE_LIST>(buf);
    list->MaxControlType = ScsiAdapterControlMax;
    adapter_control(ScsiQuerySupportedControlTypes, PASSIVE_LEVEL, list,
                    "ScsiQuerySupportedControlTypes");
    const auto* types = buf + offsetof(SCSI_SUPPORTED_CONTROL_TYPE_LIST, SupportedTypeList);
    for (int t = 0; t < ScsiAdapterControlMax; ++t) supported_[t] = types[t] != FALSE;
  }
  stopped_.store(false);
  return rc;
}

void StorPortHost::adapter_control(SCSI_ADAPTER_CONTROL_TYPE t, KIRQL irql, PVOID params,
                                   const char* name) {
  AtIrql at(irql);
  // "Currently, HwStorAdapterControl must return ScsiAdapterControlSuccess for all control
  // types" (HW_ADAPTER_CONTROL).
  if (init_.HwAdapterControl(devext_, t, params) != ScsiAdapterControlSuccess)
    violation(std::string("HwAdapterControl(") + name + ") did not succeed");
  if (current_irql() != irql) violation(std::string("HwAdapterControl(") + name + ") changed the IRQL");
}

void StorPortHost::power_down() {
  if (devext_ == nullptr || stopped_.load()) {
    violation("power_down of an adapter that is not running");
    return;
  }
  // StorPort holds its queue and lets what it started complete before it stops the adapter.
  {
    std::unique_lock lk(mu_);
    if (!cv_.wait_for(lk, std::chrono::seconds(30), [&] { return outstanding_.empty(); })) {
      violation("SRBs never completed while StorPort drained the adapter for power-down");
      return;
    }
  }
  auto flush = make_request({}, 0, 0);
  flush->srb.Function = SRB_FUNCTION_FLUSH;
  if (!execute(*flush)) {
    violation("SRB_FUNCTION_FLUSH before power-down never completed");
    return;
  }
  if (!supports(ScsiStopAdapter) || !supports(ScsiRestartAdapter)) {
    violation("the miniport does not report ScsiStopAdapter and ScsiRestartAdapter");
    return;
  }
  stopped_.store(true);
  // DIRQL with the interrupt lock held: the StartIo lock is out of reach (require_irql).
  adapter_control(ScsiStopAdapter, kDirql, nullptr, "ScsiStopAdapter");
  if (supports(ScsiSetBootConfig))
    adapter_control(ScsiSetBootConfig, PASSIVE_LEVEL, nullptr, "ScsiSetBootConfig");
}

void StorPortHost::power_up() {
  if (devext_ == nullptr || !stopped_.load()) {
    violation("power_up of an adapter that is not stopped");
    return;
  }
  if (supports(ScsiSetRunningConfig))
    adapter_control(ScsiSetRunningConfig, PASSIVE_LEVEL, nullptr, "ScsiSetRunningConfig");
  adapter_control(ScsiRestartAdapter, kDirql, nullptr, "ScsiRestartAdapter");
  stopped_.store(false);
}

void StorPortHost::stop_adapter() {
  if (devext_ == nullptr) return;
  if (outstanding() != 0) violation("adapter removed with SRBs outstanding");
  // An adapter powered down is removed without being restarted (already stopped).
  if (init_.HwAdapterControl != nullptr && !stopped_.load()) {
    AtIrql dirql(kDirql);
    init_.HwAdapterControl(devext_, ScsiStopAdapter, nullptr);
  }
  stopped_.store(false);
  {
    std::lock_guard lk(mu_);
    dpc_stop_ = true;
    cv_.notify_all();
  }
  if (dpc_thread_.joinable()) dpc_thread_.join();
  if (init_.HwFreeAdapterResources != nullptr) {
    AtIrql passive(PASSIVE_LEVEL);
    init_.HwFreeAdapterResources(devext_);
  }
  devext_ = nullptr;
  devext_raw_.reset();
  passive_init_ = nullptr;
  std::lock_guard lk(mu_);
  dpcs_.clear();
  dpc_queued_.clear();
  dpc_initialized_.clear();
  outstanding_.clear();
  completed_.clear();
}

std::unique_ptr<ScsiRequest> StorPortHost::make_request(std::initializer_list<std::uint8_t> cdb,
                                                        std::uint32_t data_len, ULONG flags) {
  auto r = std::make_unique<ScsiRequest>();
  r->data.assign(data_len, 0);
  r->extension = std::make_unique<std::uint8_t[]>(init_.SrbExtensionSize + 16);
  SCSI_REQUEST_BLOCK& s = r->srb;
  s.Length = sizeof s;
  s.Function = SRB_FUNCTION_EXECUTE_SCSI;
  s.CdbLength = static_cast<UCHAR>(cdb.size());
  std::copy(cdb.begin(), cdb.end(), s.Cdb);
  s.SrbFlags = flags;
  s.DataTransferLength = data_len;
  s.DataBuffer = data_len ? r->data.data() : nullptr;
  s.SenseInfoBuffer = r->sense;
  s.SenseInfoBufferLength = sizeof r->sense;
  s.TimeOutValue = 10;
  s.SrbExtension = reinterpret_cast<void*>(
      (reinterpret_cast<std::uintptr_t>(r->extension.get()) + 15) & ~std::uintptr_t{15});
  return r;
}

void StorPortHost::acquire_start_io_lock(KIRQL* old) {
  require_irql(DISPATCH_LEVEL, "StartIo lock");
  if (start_io_owner_ == std::this_thread::get_id()) {
    violation("StartIo lock acquired recursively (a deadlock on Windows)");
    *old = current_irql();
    return;
  }
  start_io_mu_.lock();
  start_io_owner_ = std::this_thread::get_id();
  *old = current_irql();
  set_irql(DISPATCH_LEVEL);
}

void StorPortHost::release_start_io_lock(KIRQL old) {
  if (start_io_owner_ != std::this_thread::get_id()) {
    violation("StartIo lock released by a thread that does not hold it");
    return;
  }
  start_io_owner_ = std::thread::id();
  set_irql(old);
  start_io_mu_.unlock();
}

void StorPortHost::issue(ScsiRequest& r) {
  if (stopped_.load()) {
    violation("HwStartIo on a stopped adapter (StorPort starts nothing before ScsiRestartAdapter)");
    return;
  }
  {
    std::lock_guard lk(mu_);
    outstanding_.insert(&r.srb);
    completed_.erase(&r.srb);
  }
  r.srb.SrbStatus = SRB_STATUS_PENDING;
  KIRQL old;
  acquire_start_io_lock(&old);
  const BOOLEAN ok = init_.HwStartIo(devext_, &r.srb);
  release_start_io_lock(old);
  if (!ok) violation("HwStartIo returned FALSE");
}

bool StorPortHost::wait(ScsiRequest& r, int timeout_ms) {
  std::unique_lock lk(mu_);
  return cv_.wait_for(lk, std::chrono::milliseconds(timeout_ms),
                      [&] { return completed_.count(&r.srb) != 0; });
}

std::size_t StorPortHost::outstanding() {
  std::lock_guard lk(mu_);
  return outstanding_.size();
}

bool StorPortHost::check_extension(PVOID ext, const char* what) {
  if (ext != devext_ || ext == nullptr) {
    violation(std::string(what) + " with a device extension that is not the adapter's");
    return false;
  }
  return true;
}

void StorPortHost::dpc_loop() {
  for (;;) {
    QueuedDpc d;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return dpc_stop_ || !dpcs_.empty(); });
      if (dpcs_.empty()) return;
      d = dpcs_.front();
      dpcs_.pop_front();
      dpc_queued_.erase(d.dpc);
    }
    AtIrql dispatch(DISPATCH_LEVEL);
    auto* routine = reinterpret_cast<HW_DPC_ROUTINE*>(d.dpc->Dpc.DeferredRoutine);
    routine(d.dpc, devext_, d.arg1, d.arg2);
    if (current_irql() != DISPATCH_LEVEL) violation("a DPC routine returned at another IRQL");
  }
}

void StorPortHost::notification(SCSI_NOTIFICATION_TYPE type, PVOID ext, va_list ap) {
  switch (type) {
    case RequestComplete: {
      auto* srb = va_arg(ap, PSCSI_REQUEST_BLOCK);
      require_irql(DISPATCH_LEVEL, "StorPortNotification(RequestComplete)");
      if (!check_extension(ext, "RequestComplete")) return;
      if (stopped_.load()) violation("RequestComplete while the adapter is stopped");
      std::lock_guard lk(mu_);
      if (outstanding_.erase(srb) == 0) {
        violation(completed_.count(srb) ? "SRB completed twice"
                                        : "RequestComplete for an SRB never issued");
        return;
      }
      if (SRB_STATUS(srb->SrbStatus) == SRB_STATUS_PENDING)
        violation("SRB completed with SRB_STATUS_PENDING");
      if (srb->SrbExtension != nullptr)
        std::memset(srb->SrbExtension, kPoison, init_.SrbExtensionSize);
      completed_.insert(srb);
      cv_.notify_all();
      return;
    }
    case NextRequest:
    case NextLuRequest:
      if (stopped_.load()) violation("NextRequest / NextLuRequest while the adapter is stopped");
      return;
    case EnablePassiveInitialization: {
      auto* routine = va_arg(ap, HW_PASSIVE_INITIALIZE_ROUTINE_T*);
      auto* ok = va_arg(ap, PBOOLEAN);
      if (!in_hw_initialize_) {
        violation("StorPortEnablePassiveInitialization outside HwInitialize");
        *ok = FALSE;
        return;
      }
      passive_init_ = routine;
      *ok = TRUE;
      return;
    }
    case InitializeDpc: {
      auto* dpc = va_arg(ap, PSTOR_DPC);
      auto* routine = va_arg(ap, HW_DPC_ROUTINE*);
      if (!check_extension(ext, "StorPortInitializeDpc")) return;
      std::memset(dpc, 0, sizeof *dpc);
      dpc->Dpc.DeferredRoutine = reinterpret_cast<PKDEFERRED_ROUTINE>(routine);
      std::lock_guard lk(mu_);
      dpc_initialized_.insert(dpc);
      return;
    }
    case IssueDpc: {
      auto* dpc = va_arg(ap, PSTOR_DPC);
      PVOID a1 = va_arg(ap, PVOID);
      PVOID a2 = va_arg(ap, PVOID);
      auto* queued = va_arg(ap, PBOOLEAN);
      require_irql(kDirql, "StorPortIssueDpc");
      std::lock_guard lk(mu_);
      if (dpc_initialized_.count(dpc) == 0) {
        violation("StorPortIssueDpc on a DPC never initialised");
        *queued = FALSE;
        return;
      }
      // KeInsertQueueDpc: a DPC already in the queue is not queued again.
      if (!dpc_queued_.insert(dpc).second) {
        *queued = FALSE;
        return;
      }
      dpcs_.push_back(QueuedDpc{dpc, a1, a2});
      cv_.notify_all();
      *queued = TRUE;
      return;
    }
    case AcquireSpinLock: {
      const auto which = static_cast<STOR_SPINLOCK>(va_arg(ap, int));
      va_arg(ap, PVOID);
      auto* handle = va_arg(ap, PSTOR_LOCK_HANDLE);
      if (!check_extension(ext, "StorPortAcquireSpinLock")) return;
      if (which != StartIoLock) {
        violation("StorPortAcquireSpinLock: only the StartIo lock is modelled");
        return;
      }
      KIRQL old;
      acquire_start_io_lock(&old);
      handle->Lock = which;
      handle->Context.OldIrql = old;
      return;
    }
    case ReleaseSpinLock: {
      auto* handle = va_arg(ap, PSTOR_LOCK_HANDLE);
      if (!check_extension(ext, "StorPortReleaseSpinLock")) return;
      release_start_io_lock(handle->Context.OldIrql);
      return;
    }
    default:
      violation("StorPortNotification type " + std::to_string(type) + " not modelled");
      return;
  }
}

ULONG StorPortHost::get_device_objects(PVOID ext, PVOID* fdo, PVOID* pdo, PVOID* lower) {
  if (!check_extension(ext, "StorPortGetDeviceObjects")) return 1;
  *fdo = fdo_;
  *pdo = lower_;
  *lower = lower_;
  return 0;  // STOR_STATUS_SUCCESS
}

}  // namespace pvio::windows::test

using pvio::windows::test::StorPortHost;

extern "C" {

ULONG StorPortInitialize(PVOID a1, PVOID a2, PHW_INITIALIZATION_DATA init, PVOID) {
  return StorPortHost::instance().initialize(a1, a2, init);
}

VOID StorPortNotification(SCSI_NOTIFICATION_TYPE type, PVOID ext, ...) {
  va_list ap;
  va_start(ap, ext);
  StorPortHost::instance().notification(type, ext, ap);
  va_end(ap);
}

ULONG StorPortGetDeviceObjects(PVOID ext, PVOID* fdo, PVOID* pdo, PVOID* lower) {
  return StorPortHost::instance().get_device_objects(ext, fdo, pdo, lower);
}

}  // extern "C"
