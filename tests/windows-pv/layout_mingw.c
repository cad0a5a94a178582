// The x64 sizes and offsets that windows-pv/include/pvio/wdk/ asserts, asserted again against
// mingw-w64's own DDK headers: two independent transcriptions of Microsoft's layouts must
// agree wherever mingw-w64 has the structure (it lacks the StorPort-era additions, whose
// offsets only our headers check). Compiled as C (mingw-w64's DDK headers do not compile as
// C++, and its storport.h collides with its srb.h) with x86_64-w64-mingw32-gcc -fsyntax-only.
#include <ntddk.h>
#include <srb.h>
#include <stddef.h>

_Static_assert(sizeof(SCSI_REQUEST_BLOCK) == 88, "sizeof(SCSI_REQUEST_BLOCK) == 88");
_Static_assert(offsetof(SCSI_REQUEST_BLOCK, DataBuffer) == 24, "offsetof(SCSI_REQUEST_BLOCK, DataBuffer) == 24");
_Static_assert(offsetof(SCSI_REQUEST_BLOCK, SrbExtension) == 56, "offsetof(SCSI_REQUEST_BLOCK, SrbExtension) == 56");
_Static_assert(offsetof(SCSI_REQUEST_BLOCK, Cdb) == 72, "offsetof(SCSI_REQUEST_BLOCK, Cdb) == 72");

_Static_assert(offsetof(PORT_CONFIGURATION_INFORMATION, AccessRanges) == 56, "offsetof(PORT_CONFIGURATION_INFORMATION, AccessRanges) == 56");
_Static_assert(offsetof(PORT_CONFIGURATION_INFORMATION, NumberOfBuses) == 72, "offsetof(PORT_CONFIGURATION_INFORMATION, NumberOfBuses) == 72");
_Static_assert(offsetof(PORT_CONFIGURATION_INFORMATION, MaximumNumberOfTargets) == 97, "offsetof(PORT_CONFIGURATION_INFORMATION, MaximumNumberOfTargets) == 97");
_Static_assert(offsetof(PORT_CONFIGURATION_INFORMATION, DeviceExtensionSize) == 132, "offsetof(PORT_CONFIGURATION_INFORMATION, DeviceExtensionSize) == 132");
_Static_assert(offsetof(PORT_CONFIGURATION_INFORMATION, WmiDataProvider) == 147, "offsetof(PORT_CONFIGURATION_INFORMATION, WmiDataProvider) == 147");

_Static_assert(offsetof(HW_INITIALIZATION_DATA, HwFindAdapter) == 32, "offsetof(HW_INITIALIZATION_DATA, HwFindAdapter) == 32");
_Static_assert(offsetof(HW_INITIALIZATION_DATA, DeviceExtensionSize) == 64, "offsetof(HW_INITIALIZATION_DATA, DeviceExtensionSize) == 64");
_Static_assert(offsetof(HW_INITIALIZATION_DATA, MapBuffers) == 88, "offsetof(HW_INITIALIZATION_DATA, MapBuffers) == 88");
_Static_assert(offsetof(HW_INITIALIZATION_DATA, HwAdapterControl) == 120, "offsetof(HW_INITIALIZATION_DATA, HwAdapterControl) == 120");

_Static_assert(sizeof(IRP) == 0xD0, "sizeof(IRP) == 0xD0");
_Static_assert(offsetof(IRP, IoStatus) == 0x30, "offsetof(IRP, IoStatus) == 0x30");
_Static_assert(offsetof(IRP, Tail.Overlay.CurrentStackLocation) == 0xB8, "offsetof(IRP, Tail.Overlay.CurrentStackLocation) == 0xB8");
_Static_assert(sizeof(IO_STACK_LOCATION) == 0x48, "sizeof(IO_STACK_LOCATION) == 0x48");
_Static_assert(offsetof(IO_STACK_LOCATION, DeviceObject) == 0x28, "offsetof(IO_STACK_LOCATION, DeviceObject) == 0x28");
_Static_assert(sizeof(KDPC) == 64, "sizeof(KDPC) == 64");
_Static_assert(sizeof(KEVENT) == 24, "sizeof(KEVENT) == 24");
_Static_assert(sizeof(INTERFACE) == 32, "sizeof(INTERFACE) == 32");
_Static_assert(sizeof(IO_STATUS_BLOCK) == 16, "sizeof(IO_STATUS_BLOCK) == 16");
_Static_assert(sizeof(UNICODE_STRING) == 16, "sizeof(UNICODE_STRING) == 16");
