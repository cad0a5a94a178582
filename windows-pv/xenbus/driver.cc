// xenbus.sys's driver object: AddDevice puts the FDO over the platform PCI device's PDO;
// IRP_MJ_PNP and IRP_MJ_POWER go to the FDO or to a child PDO by the role in the device extension.
#include <new>

#include "bus.h"

namespace pvio::windows::xenbus {

namespace {
NTSTATUS dispatch_passthrough(PDEVICE_OBJECT dev, PIRP irp) {
  auto* role = static_cast<DeviceRole*>(dev->DeviceExtension);
  if (*role == DeviceRole::Fdo) {
    IoSkipCurrentIrpStackLocation(irp);
    return IofCallDriver(static_cast<Fdo*>(dev->DeviceExtension)->lower, irp);
  }
  const NTSTATUS st = irp->IoStatus.Status;
  IoCompleteRequest(irp, IO_NO_INCREMENT);
  return st;
}
VOID unload(PDRIVER_OBJECT) {}
}  // namespace

NTSTATUS xenbus_add_device(PDRIVER_OBJECT driver, PDEVICE_OBJECT pdo) {
  PDEVICE_OBJECT dev = nullptr;
  NTSTATUS st = IoCreateDevice(driver, sizeof(Fdo), nullptr, FILE_DEVICE_BUS_EXTENDER,
                               FILE_DEVICE_SECURE_OPEN, FALSE, &dev);
  if (!NT_SUCCESS(st)) return st;
  // The FDO is big (per-port callback tables): it lives in the device extension.
  auto* fdo = new (dev->DeviceExtension) Fdo();
  fdo->self = dev;
  fdo->pdo = pdo;
  KeInitializeSpinLock(&fdo->port_lock);
  fdo->child_lock.init();  // REMOVE may come without a START
  fdo->lower = IoAttachDeviceToDeviceStack(dev, pdo);
  if (fdo->lower == nullptr) {
    fdo->~Fdo();
    IoDeleteDevice(dev);
    return STATUS_NO_SUCH_DEVICE;
  }
  dev->Flags |= DO_POWER_PAGABLE;
  dev->Flags &= ~DO_DEVICE_INITIALIZING;
  return STATUS_SUCCESS;
}

NTSTATUS xenbus_dispatch_pnp(PDEVICE_OBJECT dev, PIRP irp) {
  auto* role = static_cast<DeviceRole*>(dev->DeviceExtension);
  if (*role == DeviceRole::Fdo) return fdo_pnp(static_cast<Fdo*>(dev->DeviceExtension), irp);
  return pdo_pnp(static_cast<Pdo*>(dev->DeviceExtension), irp);
}

NTSTATUS xenbus_dispatch_power(PDEVICE_OBJECT dev, PIRP irp) {
  auto* role = static_cast<DeviceRole*>(dev->DeviceExtension);
  if (*role == DeviceRole::Fdo) return fdo_power(static_cast<Fdo*>(dev->DeviceExtension), irp);
  return pdo_power(static_cast<Pdo*>(dev->DeviceExtension), irp);
}

NTSTATUS xenbus_driver_entry(PDRIVER_OBJECT driver) {
  for (auto& f : driver->MajorFunction) f = &dispatch_passthrough;
  driver->MajorFunction[IRP_MJ_PNP] = &xenbus_dispatch_pnp;
  driver->MajorFunction[IRP_MJ_POWER] = &xenbus_dispatch_power;
  driver->DriverExtension->AddDevice = &xenbus_add_device;
  driver->DriverUnload = &unload;
  return STATUS_SUCCESS;
}

}  // namespace pvio::windows::xenbus
