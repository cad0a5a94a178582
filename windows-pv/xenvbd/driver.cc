// xenvbd's DriverEntry: registers the StorPort miniport whose adapters are PV disks
// (adapter.cc). StorPort calls back through the HW_* routines below.
#include <cstring>
#include <new>

#include "adapter.h"

using pvio::windows::xenvbd::Adapter;
using pvio::windows::xenvbd::SrbExt;

namespace {

ULONG hw_find_adapter(PVOID ext, PVOID, PVOID, PCHAR, PPORT_CONFIGURATION_INFORMATION config,
                      PBOOLEAN) {
  // The device extension is raw memory: the adapter is constructed in it here, first.
  return (new (ext) Adapter())->find_adapter(config);
}
BOOLEAN hw_initialize(PVOID ext) { return static_cast<Adapter*>(ext)->initialize(); }
BOOLEAN hw_start_io(PVOID ext, PSCSI_REQUEST_BLOCK srb) {
  return static_cast<Adapter*>(ext)->start_io(srb);
}
// Events come through xenbus's upcall, never through an interrupt of this adapter.
BOOLEAN hw_interrupt(PVOID) { return FALSE; }
BOOLEAN hw_reset_bus(PVOID, ULONG) { return TRUE; }
SCSI_ADAPTER_CONTROL_STATUS hw_adapter_control(PVOID ext, SCSI_ADAPTER_CONTROL_TYPE type,
                                               PVOID params) {
  return static_cast<Adapter*>(ext)->adapter_control(type, params);
}
VOID hw_free_adapter_resources(PVOID ext) { static_cast<Adapter*>(ext)->free_resources(); }

}  // namespace

extern "C" NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING registry_path) {
  HW_INITIALIZATION_DATA init;
  std::memset(&init, 0, sizeof init);
  init.HwInitializationDataSize = sizeof init;
  init.AdapterInterfaceType = Internal;
  init.HwInitialize = &hw_initialize;
  init.HwStartIo = &hw_start_io;
  init.HwInterrupt = &hw_interrupt;
  init.HwFindAdapter = &hw_find_adapter;
  init.HwResetBus = &hw_reset_bus;
  init.HwAdapterControl = &hw_adapter_control;
  init.HwFreeAdapterResources = &hw_free_adapter_resources;
  init.DeviceExtensionSize = sizeof(Adapter);
  init.SrbExtensionSize = sizeof(SrbExt);
  init.MapBuffers = STOR_MAP_ALL_BUFFERS_INCLUDING_READ_WRITE;
  init.TaggedQueuing = TRUE;
  init.AutoRequestSense = TRUE;
  init.MultipleRequestPerLu = TRUE;
  return static_cast<NTSTATUS>(StorPortInitialize(driver, registry_path, &init, nullptr));
}
