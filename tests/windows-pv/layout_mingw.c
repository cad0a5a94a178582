// The x64 sizes and offsets that windows-pv/include/pvio/wdk/ asserts, asserted again against
// mingw-w64's own DDK headers: two independent transcriptions of Microsoft's layouts must
// agree wherever mingw-w64 has the structure (it lacks the StorPort-era additions, whose
// offsets only our headers check). Compiled as C (mingw-w64's DDK headers do not compile as
// C++, and its storport.h collides with its srb.h) with x86_64-w64-mingw32-gcc -fsyntax-only.
#include <ntddk.h>
#include <srb.h>
#include <stddef.h>
// ntddndis.h's NDIS 6.20 view (NDIS_OFFLOAD revision 2, the NDIS_OFFLOAD_PARAMETERS of
// revision 2): the task-offload structures xennet reports and parses.
#define UM_NDIS620 1
#include <ntddndis.h>

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
_Static_assert(offsetof(IO_STACK_LOCATION, Parameters.Power.Type) == 0x10, "offsetof(IO_STACK_LOCATION, Parameters.Power.Type) == 0x10");
_Static_assert(offsetof(IO_STACK_LOCATION, Parameters.Power.State) == 0x18, "offsetof(IO_STACK_LOCATION, Parameters.Power.State) == 0x18");
_Static_assert(offsetof(IO_STACK_LOCATION, Parameters.Power.ShutdownType) == 0x20, "offsetof(IO_STACK_LOCATION, Parameters.Power.ShutdownType) == 0x20");
_Static_assert(sizeof(POWER_STATE) == 4, "sizeof(POWER_STATE) == 4");
_Static_assert(IRP_MJ_POWER == 0x16 && IRP_MN_WAIT_WAKE == 0 && IRP_MN_POWER_SEQUENCE == 1 && IRP_MN_SET_POWER == 2 && IRP_MN_QUERY_POWER == 3, "power function codes");
_Static_assert(PowerSystemWorking == 1 && PowerSystemSleeping3 == 4 && PowerSystemMaximum == 7, "SYSTEM_POWER_STATE");
_Static_assert(PowerDeviceD0 == 1 && PowerDeviceD3 == 4 && DevicePowerState == 1, "DEVICE_POWER_STATE, POWER_STATE_TYPE");
_Static_assert(PowerActionSleep == 2 && PowerActionWarmEject == 7, "POWER_ACTION");
_Static_assert(sizeof(KDPC) == 64, "sizeof(KDPC) == 64");
_Static_assert(sizeof(KEVENT) == 24, "sizeof(KEVENT) == 24");
_Static_assert(sizeof(INTERFACE) == 32, "sizeof(INTERFACE) == 32");
_Static_assert(sizeof(IO_STATUS_BLOCK) == 16, "sizeof(IO_STATUS_BLOCK) == 16");
_Static_assert(sizeof(UNICODE_STRING) == 16, "sizeof(UNICODE_STRING) == 16");

_Static_assert(sizeof(NDIS_TCP_IP_CHECKSUM_OFFLOAD) == 32, "sizeof(NDIS_TCP_IP_CHECKSUM_OFFLOAD) == 32");
_Static_assert(sizeof(NDIS_TCP_LARGE_SEND_OFFLOAD_V1) == 16, "sizeof(NDIS_TCP_LARGE_SEND_OFFLOAD_V1) == 16");
_Static_assert(sizeof(NDIS_IPSEC_OFFLOAD_V1) == 28, "sizeof(NDIS_IPSEC_OFFLOAD_V1) == 28");
_Static_assert(sizeof(NDIS_TCP_LARGE_SEND_OFFLOAD_V2) == 28, "sizeof(NDIS_TCP_LARGE_SEND_OFFLOAD_V2) == 28");
_Static_assert(sizeof(NDIS_IPSEC_OFFLOAD_V2) == 32, "sizeof(NDIS_IPSEC_OFFLOAD_V2) == 32");
_Static_assert(offsetof(NDIS_OFFLOAD, LsoV1) == 36, "offsetof(NDIS_OFFLOAD, LsoV1) == 36");
_Static_assert(offsetof(NDIS_OFFLOAD, LsoV2) == 80, "offsetof(NDIS_OFFLOAD, LsoV2) == 80");
_Static_assert(offsetof(NDIS_OFFLOAD, Flags) == 108, "offsetof(NDIS_OFFLOAD, Flags) == 108");
_Static_assert(sizeof(NDIS_OFFLOAD) == 144, "sizeof(NDIS_OFFLOAD) == 144 (revision 2)");
_Static_assert(NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_1 == 112, "NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_1 == 112");
_Static_assert(NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_2 == 144, "NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_2 == 144");
_Static_assert(offsetof(NDIS_OFFLOAD_PARAMETERS, Flags) == 16, "offsetof(NDIS_OFFLOAD_PARAMETERS, Flags) == 16");
_Static_assert(NDIS_SIZEOF_OFFLOAD_PARAMETERS_REVISION_1 == 20, "NDIS_SIZEOF_OFFLOAD_PARAMETERS_REVISION_1 == 20");
_Static_assert(NDIS_SIZEOF_OFFLOAD_PARAMETERS_REVISION_2 == 22, "NDIS_SIZEOF_OFFLOAD_PARAMETERS_REVISION_2 == 22");
_Static_assert(NDIS_OBJECT_TYPE_OFFLOAD == 0xA7, "NDIS_OBJECT_TYPE_OFFLOAD == 0xA7");
_Static_assert(NDIS_OBJECT_TYPE_OFFLOAD_ENCAPSULATION == 0xA8, "NDIS_OBJECT_TYPE_OFFLOAD_ENCAPSULATION == 0xA8");
_Static_assert(NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES == 0xA0, "NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES == 0xA0");
_Static_assert(OID_TCP_OFFLOAD_CURRENT_CONFIG == 0xFC01020B, "OID_TCP_OFFLOAD_CURRENT_CONFIG");
_Static_assert(OID_TCP_OFFLOAD_PARAMETERS == 0xFC01020C, "OID_TCP_OFFLOAD_PARAMETERS");
_Static_assert(OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES == 0xFC01020D, "OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES");
_Static_assert(OID_OFFLOAD_ENCAPSULATION == 0x0101010A, "OID_OFFLOAD_ENCAPSULATION");
_Static_assert(NDIS_OFFLOAD_PARAMETERS_TX_ENABLED_RX_DISABLED == 2, "NDIS_OFFLOAD_PARAMETERS_TX_ENABLED_RX_DISABLED == 2");
_Static_assert(NDIS_OFFLOAD_PARAMETERS_RX_ENABLED_TX_DISABLED == 3, "NDIS_OFFLOAD_PARAMETERS_RX_ENABLED_TX_DISABLED == 3");
_Static_assert(NDIS_ENCAPSULATION_IEEE_802_3 == 2, "NDIS_ENCAPSULATION_IEEE_802_3 == 2");

// Power management: NDIS_PM_CAPABILITIES (revision 1 ends at MinLinkChangeWakeUp, 52 bytes),
// the device power states and the PnP power OIDs.
_Static_assert(offsetof(NDIS_PM_CAPABILITIES, SupportedProtocolOffloads) == 28, "offsetof(NDIS_PM_CAPABILITIES, SupportedProtocolOffloads) == 28");
_Static_assert(offsetof(NDIS_PM_CAPABILITIES, MinMagicPacketWakeUp) == 40, "offsetof(NDIS_PM_CAPABILITIES, MinMagicPacketWakeUp) == 40");
_Static_assert(offsetof(NDIS_PM_CAPABILITIES, MinLinkChangeWakeUp) == 48, "offsetof(NDIS_PM_CAPABILITIES, MinLinkChangeWakeUp) == 48");
_Static_assert(NDIS_SIZEOF_NDIS_PM_CAPABILITIES_REVISION_1 == 52, "NDIS_SIZEOF_NDIS_PM_CAPABILITIES_REVISION_1 == 52");
_Static_assert(NDIS_PM_CAPABILITIES_REVISION_1 == 1, "NDIS_PM_CAPABILITIES_REVISION_1 == 1");
_Static_assert(NdisDeviceStateUnspecified == 0 && NdisDeviceStateD0 == 1 && NdisDeviceStateD3 == 4, "NDIS_DEVICE_POWER_STATE");
_Static_assert(OID_PNP_CAPABILITIES == 0xFD010100 && OID_PNP_SET_POWER == 0xFD010101 && OID_PNP_QUERY_POWER == 0xFD010102, "OID_PNP_*");
_Static_assert(STATUS_NDIS_LOW_POWER_STATE == (NTSTATUS)0xC023002F, "STATUS_NDIS_LOW_POWER_STATE");
