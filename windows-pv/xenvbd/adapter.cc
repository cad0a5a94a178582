// xenvbd's adapter: the blkfront Platform seam (xen_platform.h's, with contiguous page runs),
// the SRB datapath on the blkfront core, and the PASSIVE_LEVEL control steps
// (handshake, backend restart) that share the core with it.
#include "adapter.h"
#include "pvio/windows/xen_platform.h"

#include <cstring>
#include <new>

namespace pvio::windows::xenvbd {

namespace {
constexpr ULONG kPoolTag = 0x64627658;  // 'Xvbd'
constexpr std::uint32_t kConnectTimeoutMs = 30000;
constexpr std::uint32_t kCloseTimeoutMs = 5000;

LARGE_INTEGER relative_ms(std::uint32_t ms) {
  LARGE_INTEGER t;
  t.QuadPart = -static_cast<LONGLONG>(ms) * 10000;  // 100 ns units, negative = relative
  return t;
}

blkfront::Limits limits() {
  blkfront::Limits l;
  l.max_queues = 1;  // one StorPort queue per adapter
  l.max_ring_page_order = 2;
  l.max_indirect_segments = 256;
  l.pool_pages = 256;  // 1 MiB in flight through persistently granted pages
  l.use_persistent = true;
  return l;
}
}  // namespace

// The seam: xen_platform.h's over xenbus's interface, with blkfront's memory call (runs of
// 2^order contiguous pages).
class Adapter::XenPlatform final
    : public XenInterfacePlatform<blkfront::Platform, blkfront::LogLevel> {
 public:
  using XenInterfacePlatform::XenInterfacePlatform;
  bool alloc_pages(unsigned order, blkfront::GuestPages& out) override {
    out.addr = contiguous_pages(SIZE_T{4096} << order, &out.gfn);
    return out.addr != nullptr;
  }
  void free_pages(unsigned, const blkfront::GuestPages& pages) override {
    free_contiguous_pages(pages.addr);
  }
};

void Adapter::logf(ULONG level, const char* msg) {
  DbgPrintEx(DPFLTR_IHVDRIVER_ID, level, "xenvbd %u: %s\n", static_cast<unsigned>(geo_.devid), msg);
}

// IRP_MN_QUERY_INTERFACE down our stack: xenbus's PDO for this disk answers it.
NTSTATUS Adapter::query_xen_interface() {
  PVOID fdo = nullptr, pdo = nullptr, lower = nullptr;
  if (StorPortGetDeviceObjects(this, &fdo, &pdo, &lower) != 0 || lower == nullptr)
    return STATUS_NO_SUCH_DEVICE;
  KEVENT done;
  KeInitializeEvent(&done, NotificationEvent, FALSE);
  IO_STATUS_BLOCK iosb{};
  PIRP irp = IoBuildSynchronousFsdRequest(IRP_MJ_PNP, static_cast<PDEVICE_OBJECT>(lower), nullptr,
                                          0, nullptr, &done, &iosb);
  if (irp == nullptr) return STATUS_INSUFFICIENT_RESOURCES;
  // A PnP IRP starts out as "not supported" so a stack that ignores it fails it (wdm docs).
  irp->IoStatus.Status = STATUS_NOT_SUPPORTED;
  PIO_STACK_LOCATION sl = IoGetNextIrpStackLocation(irp);
  sl->MajorFunction = IRP_MJ_PNP;
  sl->MinorFunction = IRP_MN_QUERY_INTERFACE;
  sl->Parameters.QueryInterface.InterfaceType = &GUID_PVIO_XEN_INTERFACE;
  sl->Parameters.QueryInterface.Size = sizeof(xen_);
  sl->Parameters.QueryInterface.Version = PVIO_XEN_INTERFACE_VERSION;
  sl->Parameters.QueryInterface.Interface = &xen_.Header;
  sl->Parameters.QueryInterface.InterfaceSpecificData = nullptr;
  NTSTATUS st = IofCallDriver(static_cast<PDEVICE_OBJECT>(lower), irp);
  if (st == STATUS_PENDING) {
    KeWaitForSingleObject(&done, Executive, KernelMode, FALSE, nullptr);
    st = iosb.Status;
  }
  return st;
}

void Adapter::update_geometry() {
  const blkfront::DiskInfo& d = core_->disk();
  const blkfront::Negotiated& n = core_->negotiated();
  geo_.sectors512 = d.sectors;
  geo_.block_size = d.sector_size >= 512 ? d.sector_size : 512;
  geo_.physical_block_size = d.physical_sector_size;
  geo_.read_only = d.read_only();
  geo_.flush = n.flush_cache || n.barrier;
  geo_.discard = n.discard;
  geo_.discard_granularity = n.discard_granularity;
}

ULONG Adapter::find_adapter(PPORT_CONFIGURATION_INFORMATION config) {
  KeInitializeEvent(&watch_event_, SynchronizationEvent, FALSE);
  KeInitializeEvent(&control_mutex_, SynchronizationEvent, TRUE);
  if (!NT_SUCCESS(query_xen_interface())) return SP_RETURN_NOT_FOUND;
  have_interface_ = true;
  if (xen_.Kind != PvioXenVbd) return SP_RETURN_NOT_FOUND;
  geo_.devid = xen_.DeviceId;

  static_assert(sizeof(XenPlatform) <= sizeof(platform_mem_));
  platform_ = new (platform_mem_) XenPlatform(
      XenBinding{&xen_, &Adapter::on_event, &Adapter::on_watch, this, &watch_event_, "xenvbd"});
  const blkfront::Limits l = limits();
  const std::size_t bytes = blkfront::Blkfront::storage_bytes(l);
  core_storage_ = ExAllocatePoolWithTag(NonPagedPoolNx, bytes + 16, kPoolTag);
  if (core_storage_ == nullptr) return SP_RETURN_ERROR;
  auto* aligned = reinterpret_cast<void*>(
      (reinterpret_cast<std::uintptr_t>(core_storage_) + 15) & ~std::uintptr_t{15});
  core_ = new (core_mem_) blkfront::Blkfront(*platform_, xen_.DeviceId, l, aligned, bytes);

  // The handshake now, at PASSIVE_LEVEL: the disk's size and the ring's depth are what the
  // port configuration below is made of.
  KeWaitForSingleObject(&control_mutex_, Executive, KernelMode, FALSE, nullptr);
  const int rc = core_->connect(kConnectTimeoutMs);
  if (rc == 0) update_geometry();
  KeSetEvent(&control_mutex_, 0, FALSE);
  if (rc != 0) {
    logf(DPFLTR_ERROR_LEVEL, "backend did not connect");
    return SP_RETURN_ERROR;
  }

  const blkfront::Negotiated& n = core_->negotiated();
  const ULONG depth = n.ring_size * n.nr_queues;
  config->MaximumTransferLength = geo_.max_transfer_bytes;
  config->NumberOfPhysicalBreaks = geo_.max_transfer_bytes / 4096 + 1;
  config->AlignmentMask = 0;  // data goes through the core's granted pages: any alignment
  config->NumberOfBuses = 1;
  config->MaximumNumberOfTargets = 1;
  config->MaximumNumberOfLogicalUnits = 1;
  config->ScatterGather = TRUE;
  config->Master = TRUE;
  config->CachesData = geo_.flush ? TRUE : FALSE;
  config->MapBuffers = STOR_MAP_ALL_BUFFERS_INCLUDING_READ_WRITE;
  config->Dma64BitAddresses = 0x01;  // SCSI_DMA64_MINIPORT_SUPPORTED
  config->SynchronizationModel = StorSynchronizeHalfDuplex;
  config->MaxNumberOfIO = depth;
  config->MaxIOsPerLun = depth;
  config->InitialLunQueueDepth = depth;
  return SP_RETURN_FOUND;
}

BOOLEAN Adapter::initialize() {
  StorPortInitializeDpc(this, &dpc_, [](PSTOR_DPC, PVOID ext, PVOID, PVOID) {
    static_cast<Adapter*>(ext)->dpc();
  });
  dpc_ready_ = true;
  return StorPortEnablePassiveInitialization(
      this, [](PVOID ext) { return static_cast<Adapter*>(ext)->passive_initialize(); });
}

BOOLEAN Adapter::passive_initialize() {
  steady_ = true;
  // Catch up with whatever the backend did since HwFindAdapter, and with events that came
  // before the DPC existed.
  control_step();
  return TRUE;
}

VOID Adapter::on_event(PVOID ctx, ULONG) {
  auto* a = static_cast<Adapter*>(ctx);
  if (a->dpc_ready_) {
    StorPortIssueDpc(a, &a->dpc_, nullptr, nullptr);
  } else {
    a->early_event_ = true;
  }
}

void Adapter::dpc() {
  STOR_LOCK_HANDLE h;
  lock(h);
  if (control_busy_) {
    events_pending_ = true;
  } else {
    core_->handle_all_events();
  }
  unlock(h);
}

VOID Adapter::on_watch(PVOID ctx, PCSTR) {
  auto* a = static_cast<Adapter*>(ctx);
  KeSetEvent(&a->watch_event_, 0, FALSE);
  if (a->steady_) a->control_step();
}

// The core belongs to a control step: the datapath defers SRBs and events meanwhile.
void Adapter::begin_control() {
  STOR_LOCK_HANDLE h;
  lock(h);
  control_busy_ = true;
  unlock(h);
}

// Hands the core back to the datapath and replays what it deferred.
void Adapter::end_control() {
  STOR_LOCK_HANDLE h;
  lock(h);
  control_busy_ = false;
  SrbExt* list = deferred_head_;
  deferred_head_ = deferred_tail_ = nullptr;
  while (list != nullptr) {
    SrbExt* next = list->next_deferred;
    list->next_deferred = nullptr;
    submit(list);
    list = next;
  }
  if (events_pending_ || early_event_) {
    events_pending_ = false;
    early_event_ = false;
    core_->handle_all_events();
  }
  unlock(h);
}

// Runs control steps until no watch asked for another. The watch thread never blocks on
// control_mutex_: its owner may be a power transition or close() waiting for the very watch
// events that thread delivers. A watch that finds the mutex taken leaves step_wanted_ set; the
// owner (or, after a power transition, power_up) runs the step it asked for.
void Adapter::control_step() {
  for (;;) {
    step_wanted_ = true;
    LARGE_INTEGER now{};  // zero timeout: a try-acquire
    if (KeWaitForSingleObject(&control_mutex_, Executive, KernelMode, FALSE, &now) != STATUS_SUCCESS)
      return;
    while (step_wanted_ && core_ != nullptr && !suspended_ && steady_) {
      step_wanted_ = false;
      run_control_steps();
    }
    KeSetEvent(&control_mutex_, 0, FALSE);
    // A watch that came after the loop's last check found the mutex taken and went away.
    if (!step_wanted_ || core_ == nullptr || suspended_ || !steady_) return;
  }
}

// One step of the handshake state machine at PASSIVE_LEVEL, with the datapath held off the
// core. A failed step is retried after a backoff (10 ms doubling to 1 s) a few times; after
// that the next watch event tries again, so a broken backend never makes a tight loop.
void Adapter::run_control_steps() {
  begin_control();
  std::uint32_t seen = core_->failures_in_a_row();
  for (int attempt = 0; attempt < 8; ++attempt) {
    core_->backend_changed();
    const std::uint32_t f = core_->failures_in_a_row();
    if (f <= seen || f == 0) break;
    seen = f;
    std::uint32_t ms = 10;
    for (std::uint32_t i = 1; i < f && ms < 1000; ++i) ms *= 2;
    KEVENT never;
    KeInitializeEvent(&never, NotificationEvent, FALSE);
    LARGE_INTEGER t = relative_ms(ms < 1000 ? ms : 1000);
    KeWaitForSingleObject(&never, Executive, KernelMode, FALSE, &t);
  }
  if (core_->connected()) update_geometry();
  end_control();
}

// ---- power ----
//
// StorPort stops an adapter for a sleep state only after it has held its queues and every
// request it started has completed ("Storport ensures that there are no uncompleted requests"
// before ScsiStopAdapter, HW_ADAPTER_CONTROL / SCSI_ADAPTER_CONTROL_TYPE), and it starts none
// until ScsiRestartAdapter has returned. So the core has nothing in flight here; were the rule
// ever broken, suspend() keeps such I/Os and resume() resubmits them on the new ring (redone
// from their first sector, as after a backend restart), so none is lost either way.
// ScsiStopAdapter and ScsiRestartAdapter run at DIRQL with the interrupt lock held: no
// xenstore, no memory, no event channels there. The PASSIVE_LEVEL control types StorPort calls
// after ScsiStopAdapter (ScsiSetBootConfig) and before ScsiRestartAdapter (ScsiSetRunningConfig)
// carry the disconnect and the reconnect. Were ScsiSetBootConfig not called, the adapter stays
// connected through the sleep state (a Xen S3 keeps the guest's memory and the backend's
// mappings valid) and ScsiSetRunningConfig only catches up with the backend.

// As Linux's blkfront_freeze: Closing, the backend closes, grants and event channel released.
void Adapter::power_down() {
  steady_ = false;  // already so after ScsiStopAdapter: watches only wake xs_wait now
  KeWaitForSingleObject(&control_mutex_, Executive, KernelMode, FALSE, nullptr);
  if (core_ != nullptr && !suspended_) {
    begin_control();
    if (core_->active_ios() != 0) logf(DPFLTR_WARNING_LEVEL, "stopped with I/O in flight; kept");
    if (core_->suspend(kCloseTimeoutMs) != 0)
      logf(DPFLTR_WARNING_LEVEL, "backend did not close in time; disconnected anyway");
    suspended_ = true;
    end_control();
  }
  KeSetEvent(&control_mutex_, 0, FALSE);
}

// A new connection: new ring, grants and event channel; the backend's size and features read
// again. A backend that is not there yet is left to the watch-driven control steps.
void Adapter::power_up() {
  KeWaitForSingleObject(&control_mutex_, Executive, KernelMode, FALSE, nullptr);
  if (core_ != nullptr && suspended_) {
    suspended_ = false;
    begin_control();
    if (core_->resume(kConnectTimeoutMs) != 0)
      logf(DPFLTR_WARNING_LEVEL, "backend not connected at power-up; retrying on its changes");
    if (core_->connected()) update_geometry();
    end_control();
  }
  KeSetEvent(&control_mutex_, 0, FALSE);
  steady_ = true;
  control_step();  // whatever the backend did while watches only woke xs_wait
}

// ---- SRBs ----

void Adapter::complete(SrbExt* ext, UCHAR srb_status) {
  PSCSI_REQUEST_BLOCK srb = ext->srb;
  srb->SrbStatus = srb_status;
  if (srb_status == SRB_STATUS_SUCCESS) srb->ScsiStatus = kScsiStatusGood;
  StorPortNotification(RequestComplete, this, srb);
}

void Adapter::complete_check(SrbExt* ext, const Sense& sense) {
  PSCSI_REQUEST_BLOCK srb = ext->srb;
  srb->ScsiStatus = kScsiStatusCheckCondition;
  srb->DataTransferLength = 0;
  UCHAR st = SRB_STATUS_ERROR;
  if (srb->SenseInfoBuffer != nullptr && srb->SenseInfoBufferLength > 0) {
    srb->SenseInfoBufferLength = static_cast<UCHAR>(build_sense(
        sense, static_cast<std::uint8_t*>(srb->SenseInfoBuffer), srb->SenseInfoBufferLength));
    st |= SRB_STATUS_AUTOSENSE_VALID;
  }
  srb->SrbStatus = st;
  StorPortNotification(RequestComplete, this, srb);
}

void Adapter::io_done(blkfront::BlockIo* io) {
  auto* ext = static_cast<SrbExt*>(io->cookie);
  if (io->status != blkfront::IoStatus::Ok && ext->worst == blkfront::IoStatus::Ok)
    ext->worst = io->status;
  if (--ext->ios_left == 0) ext->adapter->finish(ext);
}

// Every BlockIo of the SRB is done: its SCSI outcome.
void Adapter::finish(SrbExt* ext) {
  using blkfront::IoStatus;
  switch (ext->worst) {
    case IoStatus::Ok:
      complete(ext, SRB_STATUS_SUCCESS);
      return;
    case IoStatus::NoDevice:
      ext->srb->DataTransferLength = 0;
      complete(ext, SRB_STATUS_NO_DEVICE);
      return;
    case IoStatus::NoResources:
      ext->srb->DataTransferLength = 0;
      complete(ext, SRB_STATUS_BUSY);  // StorPort retries a busy request
      return;
    case IoStatus::ReadOnly:
      complete_check(ext, Sense{kSenseDataProtect, 0x27, 0});
      return;
    case IoStatus::NotSupported:
      complete_check(ext, Sense{kSenseIllegalRequest, 0x20, 0});
      return;
    case IoStatus::Invalid:
      complete_check(ext, Sense{kSenseIllegalRequest, 0x21, 0});
      return;
    default:
      // Unrecovered read error / write error (SPC-4 annex D).
      complete_check(ext, Sense{kSenseMediumError, static_cast<std::uint8_t>(ext->write ? 0x0C : 0x11), 0});
      return;
  }
}

void Adapter::submit(SrbExt* ext) {
  if (control_busy_) {
    ext->next_deferred = nullptr;
    if (deferred_tail_) deferred_tail_->next_deferred = ext; else deferred_head_ = ext;
    deferred_tail_ = ext;
    return;
  }
  // ios_left was set to nr_ios before the first submit: a BlockIo that fails at once
  // cannot finish the SRB while others are still to be handed over.
  const std::uint32_t n = ext->nr_ios;
  for (std::uint32_t i = 0; i < n; ++i) core_->submit(&ext->io[i]);
}

void Adapter::execute_scsi(SrbExt* ext) {
  PSCSI_REQUEST_BLOCK srb = ext->srb;
  auto* buf = static_cast<std::uint8_t*>(srb->DataBuffer);
  const ScsiCommand c = parse_command(srb->Cdb, srb->CdbLength, geo_, buf, srb->DataTransferLength);
  auto prepare = [&](blkfront::BlockIo& io, blkfront::Op op) {
    new (&io) blkfront::BlockIo();
    io.op = op;
    io.done = &Adapter::io_done;
    io.cookie = ext;
  };
  switch (c.kind) {
    case CommandKind::Local:
      srb->DataTransferLength = c.data_len;
      complete(ext, SRB_STATUS_SUCCESS);
      return;
    case CommandKind::Check:
      complete_check(ext, c.sense);
      return;
    case CommandKind::Read:
    case CommandKind::Write: {
      blkfront::BlockIo& io = ext->io[0];
      prepare(io, c.kind == CommandKind::Read ? blkfront::Op::Read : blkfront::Op::Write);
      io.sector = c.sector;
      io.nr_sectors = c.nr_sectors;
      io.buffer = buf;
      ext->write = c.kind == CommandKind::Write;
      ext->nr_ios = ext->ios_left = 1;
      srb->DataTransferLength = c.data_len;
      break;
    }
    case CommandKind::Flush:
      prepare(ext->io[0], blkfront::Op::Flush);
      ext->nr_ios = ext->ios_left = 1;
      break;
    case CommandKind::Unmap: {
      UnmapRange ranges[kMaxUnmapDescriptors];
      Sense sense;
      const int n = parse_unmap(buf, c.data_len, geo_, ranges, kMaxUnmapDescriptors, sense);
      if (n < 0) {
        complete_check(ext, sense);
        return;
      }
      if (n == 0) {
        complete(ext, SRB_STATUS_SUCCESS);
        return;
      }
      for (int i = 0; i < n; ++i) {
        prepare(ext->io[i], blkfront::Op::Discard);
        ext->io[i].sector = ranges[i].sector;
        ext->io[i].nr_sectors = ranges[i].nr_sectors;
      }
      ext->write = true;
      ext->nr_ios = ext->ios_left = static_cast<std::uint32_t>(n);
      break;
    }
  }
  submit(ext);
}

BOOLEAN Adapter::start_io(PSCSI_REQUEST_BLOCK srb) {
  auto* ext = new (srb->SrbExtension) SrbExt();
  ext->srb = srb;
  ext->adapter = this;
  if (stopped_) {
    complete(ext, SRB_STATUS_NO_DEVICE);
    return TRUE;
  }
  switch (srb->Function) {
    case SRB_FUNCTION_EXECUTE_SCSI:
      if (srb->PathId != 0 || srb->TargetId != 0) {
        complete(ext, SRB_STATUS_INVALID_TARGET_ID);
      } else if (srb->Lun != 0) {
        complete(ext, SRB_STATUS_INVALID_LUN);
      } else {
        execute_scsi(ext);
      }
      return TRUE;
    case SRB_FUNCTION_FLUSH:
    case SRB_FUNCTION_SHUTDOWN:
      if (!geo_.flush) {
        complete(ext, SRB_STATUS_SUCCESS);
        return TRUE;
      }
      new (&ext->io[0]) blkfront::BlockIo();
      ext->io[0].op = blkfront::Op::Flush;
      ext->io[0].done = &Adapter::io_done;
      ext->io[0].cookie = ext;
      ext->nr_ios = ext->ios_left = 1;
      submit(ext);
      return TRUE;
    case SRB_FUNCTION_RESET_BUS:
    case SRB_FUNCTION_RESET_DEVICE:
    case SRB_FUNCTION_RESET_LOGICAL_UNIT:
      // PV requests cannot be aborted: they complete (or fail with the connection) by
      // themselves, so a reset has nothing to do.
    case SRB_FUNCTION_PNP:
    case SRB_FUNCTION_POWER:
      complete(ext, SRB_STATUS_SUCCESS);
      return TRUE;
    default:
      complete(ext, SRB_STATUS_INVALID_REQUEST);
      return TRUE;
  }
}

SCSI_ADAPTER_CONTROL_STATUS Adapter::adapter_control(SCSI_ADAPTER_CONTROL_TYPE type, PVOID params) {
  switch (type) {
    case ScsiQuerySupportedControlTypes: {
      auto* list = static_cast<PSCSI_SUPPORTED_CONTROL_TYPE_LIST>(params);
      // MaxControlType is the number of entries StorPort's list has room for.
      for (ULONG i = 0; i < list->MaxControlType; ++i)
        list->SupportedTypeList[i] =
            (i == ScsiQuerySupportedControlTypes || i == ScsiStopAdapter ||
             i == ScsiRestartAdapter || i == ScsiSetBootConfig || i == ScsiSetRunningConfig)
                ? TRUE
                : FALSE;
      return ScsiAdapterControlSuccess;
    }
    case ScsiStopAdapter:
      // DIRQL, interrupt lock held: nothing that needs xenstore. For removal the connection is
      // closed in HwFreeAdapterResources, for power-down in ScsiSetBootConfig (above power_down).
      stopped_ = true;
      steady_ = false;
      return ScsiAdapterControlSuccess;
    case ScsiSetBootConfig:  // PASSIVE_LEVEL, after ScsiStopAdapter
      if (stopped_) power_down();
      return ScsiAdapterControlSuccess;
    case ScsiSetRunningConfig:  // PASSIVE_LEVEL, before ScsiRestartAdapter
      if (stopped_) power_up();
      return ScsiAdapterControlSuccess;
    case ScsiRestartAdapter:
      // DIRQL: the connection was made in ScsiSetRunningConfig; requests flow again.
      stopped_ = false;
      return ScsiAdapterControlSuccess;
    default:
      return ScsiAdapterControlUnsuccessful;
  }
}

void Adapter::free_resources() {
  steady_ = false;
  if (core_ != nullptr) {
    // close() also ends a connection suspended for power-down (both ends already Closed).
    KeWaitForSingleObject(&control_mutex_, Executive, KernelMode, FALSE, nullptr);
    core_->close(kCloseTimeoutMs);
    core_->~Blkfront();
    core_ = nullptr;
    KeSetEvent(&control_mutex_, 0, FALSE);
  }
  if (core_storage_ != nullptr) ExFreePoolWithTag(core_storage_, kPoolTag);
  core_storage_ = nullptr;
  if (have_interface_ && xen_.Header.InterfaceDereference != nullptr)
    xen_.Header.InterfaceDereference(xen_.Header.Context);
  have_interface_ = false;
}

}  // namespace pvio::windows::xenvbd
