// xenbus's IRP_MJ_POWER. The FDO is the function driver of the platform PCI device and the
// power policy owner of its stack: system SET_POWER becomes a device SET_POWER it requests
// (S0 -> D0, any sleep state -> D3), device SET_POWER quiesces the upcall before D0 is left
// and restores it once the lower drivers have powered the device up again; everything else
// is passed down. The child PDOs have nothing below them: they complete every power IRP.
//
// Windows 7 and later (the images' minimum): PoStartNextPowerIrp is a no-op there and is not
// called; power IRPs arrive at PASSIVE_LEVEL because every device object is DO_POWER_PAGABLE.
#include "bus.h"

namespace pvio::windows::xenbus {

namespace {

NTSTATUS pass_power_down(Fdo* fdo, PIRP irp) {
  IoSkipCurrentIrpStackLocation(irp);
  return PoCallDriver(fdo->lower, irp);
}

DEVICE_POWER_STATE device_state_for(SYSTEM_POWER_STATE s) {
  // D3 is valid for every sleep state (the device does not wake the system); the bus's
  // capabilities could allow a lighter state, never a deeper one.
  return s == PowerSystemWorking ? PowerDeviceD0 : PowerDeviceD3;
}

// ---- system SET_POWER: the policy owner's device IRP ----

// The device IRP requested for a system IRP completed: so does the system IRP.
VOID device_irp_done(PDEVICE_OBJECT, UCHAR, POWER_STATE, PVOID ctx, PIO_STATUS_BLOCK iosb) {
  auto* s_irp = static_cast<PIRP>(ctx);
  s_irp->IoStatus.Status = iosb->Status;
  IoCompleteRequest(s_irp, IO_NO_INCREMENT);
}

// The lower drivers have the system state: now the device state that goes with it.
NTSTATUS system_irp_done(PDEVICE_OBJECT, PIRP irp, PVOID ctx) {
  auto* fdo = static_cast<Fdo*>(ctx);
  if (!NT_SUCCESS(irp->IoStatus.Status)) return STATUS_SUCCESS;  // continue completion
  POWER_STATE d;
  d.DeviceState =
      device_state_for(IoGetCurrentIrpStackLocation(irp)->Parameters.Power.State.SystemState);
  if (d.DeviceState == fdo->device_power) return STATUS_SUCCESS;
  const NTSTATUS st =
      PoRequestPowerIrp(fdo->pdo, IRP_MN_SET_POWER, d, &device_irp_done, irp, nullptr);
  if (!NT_SUCCESS(st)) {
    irp->IoStatus.Status = st;
    return STATUS_SUCCESS;
  }
  return STATUS_MORE_PROCESSING_REQUIRED;  // device_irp_done completes it
}

NTSTATUS fdo_set_system_power(Fdo* fdo, PIRP irp) {
  IoMarkIrpPending(irp);
  IoCopyCurrentIrpStackLocationToNext(irp);
  IoSetCompletionRoutine(irp, &system_irp_done, fdo, TRUE, TRUE, TRUE);
  PoCallDriver(fdo->lower, irp);
  return STATUS_PENDING;
}

// ---- device SET_POWER ----

NTSTATUS signal_power_up(PDEVICE_OBJECT, PIRP, PVOID ctx) {
  KeSetEvent(static_cast<PKEVENT>(ctx), 0, FALSE);
  return STATUS_MORE_PROCESSING_REQUIRED;  // the IRP is ours again
}

NTSTATUS fdo_set_device_power(Fdo* fdo, PIRP irp) {
  const POWER_STATE state = IoGetCurrentIrpStackLocation(irp)->Parameters.Power.State;
  if (state.DeviceState == PowerDeviceD0) {
    // Up: the bus below powers the device first; restoring the upcall needs PASSIVE_LEVEL
    // (a hypercall), which the completion routine does not have, so it only hands the IRP
    // back to this dispatch routine (PASSIVE_LEVEL: the FDO is DO_POWER_PAGABLE).
    KEVENT done;
    KeInitializeEvent(&done, NotificationEvent, FALSE);
    IoCopyCurrentIrpStackLocationToNext(irp);
    IoSetCompletionRoutine(irp, &signal_power_up, &done, TRUE, TRUE, TRUE);
    if (PoCallDriver(fdo->lower, irp) == STATUS_PENDING)
      KeWaitForSingleObject(&done, Executive, KernelMode, FALSE, nullptr);
    const NTSTATUS st = irp->IoStatus.Status;
    if (NT_SUCCESS(st)) {
      // The device is in D0 now; then the route and the events that waited.
      PoSetPowerState(fdo->self, DevicePowerState, state);
      if (fdo->device_power != PowerDeviceD0) fdo_power_up(fdo);
      fdo->device_power = PowerDeviceD0;
    }
    IoCompleteRequest(irp, IO_NO_INCREMENT);
    return st;
  }
  // Down: stop using the device before the bus below takes its power.
  if (fdo->device_power == PowerDeviceD0) fdo_power_down(fdo);
  fdo->device_power = state.DeviceState;
  PoSetPowerState(fdo->self, DevicePowerState, state);
  return pass_power_down(fdo, irp);
}

NTSTATUS complete_power(PIRP irp, NTSTATUS st) {
  irp->IoStatus.Status = st;
  IoCompleteRequest(irp, IO_NO_INCREMENT);
  return st;
}

}  // namespace

NTSTATUS fdo_power(Fdo* fdo, PIRP irp) {
  PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
  if (sl->MinorFunction == IRP_MN_SET_POWER) {
    if (sl->Parameters.Power.Type == SystemPowerState) return fdo_set_system_power(fdo, irp);
    if (sl->Parameters.Power.Type == DevicePowerState) return fdo_set_device_power(fdo, irp);
  }
  // QUERY_POWER (the device can always go to D3 and back), WAIT_WAKE, POWER_SEQUENCE: the
  // bus driver below answers.
  return pass_power_down(fdo, irp);
}

// A PDO is at the bottom of its stack: it completes, never passes down.
NTSTATUS pdo_power(Pdo* pdo, PIRP irp) {
  PIO_STACK_LOCATION sl = IoGetCurrentIrpStackLocation(irp);
  switch (sl->MinorFunction) {
    case IRP_MN_SET_POWER:
      if (sl->Parameters.Power.Type == DevicePowerState) {
        // The child's state is only bookkeeping: its device is the bus's shared memory.
        pdo->device_power = sl->Parameters.Power.State.DeviceState;
        PoSetPowerState(pdo->self, DevicePowerState, sl->Parameters.Power.State);
      }
      return complete_power(irp, STATUS_SUCCESS);
    case IRP_MN_QUERY_POWER:
      return complete_power(irp, STATUS_SUCCESS);
    case IRP_MN_WAIT_WAKE:
      // No wake capability (QUERY_CAPABILITIES reports no DeviceWake / SystemWake).
      return complete_power(irp, STATUS_NOT_SUPPORTED);
    default:
      return complete_power(irp, irp->IoStatus.Status);
  }
}

}  // namespace pvio::windows::xenbus
