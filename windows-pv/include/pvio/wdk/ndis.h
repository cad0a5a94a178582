// The subset of NDIS 6 (ndis.h, ntddndis.h) that xennet uses: miniport registration, adapter
// attributes (registration, general, task offload), NET_BUFFER_LIST / NET_BUFFER / MDL, the
// per-NBL checksum and large-send information, the task-offload structures and OIDs, link
// state and offload status indications, OID requests and the MiniportXxx handler prototypes. Written from
// Microsoft's documented declarations with fixed-width types, so the mingw-w64 build (LLP64)
// and the host build of tests/windows-pv (LP64) see the same layouts.
//
// Asserted x64 offsets and sizes follow from the documented declarations with natural x64
// alignment (the SLIST_HEADER in the NBL/NB unions is 16 bytes, 16-aligned); the NBL and NB
// offsets also match the field offsets a kernel debugger shows for ndis!_NET_BUFFER_LIST and
// _NET_BUFFER on x64. Structures whose total size grows with the NDIS version (NBL, general
// attributes) have only the offsets the driver depends on asserted.
//
// On Windows the routines are imported from ndis.sys (mingw-w64's libndis.a); on the host the
// Windows-kernel test environment implements them and checks their IRQL and ownership rules.
#pragma once

#include "pvio/wdk/wdm.h"

typedef PVOID NDIS_HANDLE, *PNDIS_HANDLE;
typedef LONG NDIS_STATUS, *PNDIS_STATUS;
typedef ULONG NDIS_OID, *PNDIS_OID;
typedef ULONG NDIS_PORT_NUMBER;

// ---- status codes (ndis.h: NDIS_STATUS_* are the NTSTATUS values of ntstatus.h) ----
inline constexpr NDIS_STATUS NDIS_STATUS_SUCCESS = 0;
inline constexpr NDIS_STATUS NDIS_STATUS_PENDING = 0x00000103;
inline constexpr NDIS_STATUS NDIS_STATUS_FAILURE = static_cast<NDIS_STATUS>(0xC0000001u);
inline constexpr NDIS_STATUS NDIS_STATUS_RESOURCES = static_cast<NDIS_STATUS>(0xC000009Au);
inline constexpr NDIS_STATUS NDIS_STATUS_INVALID_PARAMETER = static_cast<NDIS_STATUS>(0xC000000Du);
inline constexpr NDIS_STATUS NDIS_STATUS_NOT_SUPPORTED = static_cast<NDIS_STATUS>(0xC00000BBu);
inline constexpr NDIS_STATUS NDIS_STATUS_ADAPTER_NOT_FOUND = static_cast<NDIS_STATUS>(0xC0010006u);
inline constexpr NDIS_STATUS NDIS_STATUS_INVALID_LENGTH = static_cast<NDIS_STATUS>(0xC0010014u);
inline constexpr NDIS_STATUS NDIS_STATUS_INVALID_DATA = static_cast<NDIS_STATUS>(0xC0010015u);
inline constexpr NDIS_STATUS NDIS_STATUS_BUFFER_TOO_SHORT = static_cast<NDIS_STATUS>(0xC0010016u);
inline constexpr NDIS_STATUS NDIS_STATUS_INVALID_OID = static_cast<NDIS_STATUS>(0xC0010017u);
inline constexpr NDIS_STATUS NDIS_STATUS_PAUSED = static_cast<NDIS_STATUS>(0xC023002Au);
inline constexpr NDIS_STATUS NDIS_STATUS_LOW_POWER_STATE = static_cast<NDIS_STATUS>(0xC023002Fu);
// Status indications.
inline constexpr NDIS_STATUS NDIS_STATUS_LINK_STATE = 0x40010017;
inline constexpr NDIS_STATUS NDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG = 0x40020006;

// ---- object headers ----
typedef struct _NDIS_OBJECT_HEADER {
  UCHAR Type;
  UCHAR Revision;
  USHORT Size;
} NDIS_OBJECT_HEADER, *PNDIS_OBJECT_HEADER;
static_assert(sizeof(NDIS_OBJECT_HEADER) == 4);

inline constexpr UCHAR NDIS_OBJECT_TYPE_DEFAULT = 0x80;
inline constexpr UCHAR NDIS_OBJECT_TYPE_MINIPORT_INIT_PARAMETERS = 0x81;
inline constexpr UCHAR NDIS_OBJECT_TYPE_MINIPORT_DRIVER_CHARACTERISTICS = 0x8A;
inline constexpr UCHAR NDIS_OBJECT_TYPE_OID_REQUEST = 0x96;
inline constexpr UCHAR NDIS_OBJECT_TYPE_STATUS_INDICATION = 0x98;
inline constexpr UCHAR NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES = 0x9E;
inline constexpr UCHAR NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES = 0x9F;
inline constexpr UCHAR NDIS_OBJECT_TYPE_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES = 0xA0;
inline constexpr UCHAR NDIS_OBJECT_TYPE_OFFLOAD = 0xA7;
inline constexpr UCHAR NDIS_OBJECT_TYPE_OFFLOAD_ENCAPSULATION = 0xA8;

// ---- MDL (wdm.h) ----
typedef struct _MDL {
  struct _MDL* Next;
  SHORT Size;
  SHORT MdlFlags;
  PVOID Process;  // PEPROCESS
  PVOID MappedSystemVa;
  PVOID StartVa;
  ULONG ByteCount;
  ULONG ByteOffset;
} MDL;
static_assert(offsetof(MDL, MdlFlags) == 10);
static_assert(offsetof(MDL, MappedSystemVa) == 24);
static_assert(offsetof(MDL, ByteCount) == 40);
static_assert(sizeof(MDL) == 48);

inline constexpr SHORT MDL_MAPPED_TO_SYSTEM_VA = 0x0001;
inline constexpr SHORT MDL_SOURCE_IS_NONPAGED_POOL = 0x0004;
inline constexpr ULONG NormalPagePriority = 16;
inline constexpr ULONG MdlMappingNoExecute = 0x40000000;

// ---- NET_BUFFER / NET_BUFFER_LIST (ndis/nbl.h) ----
typedef struct _NET_BUFFER NET_BUFFER, *PNET_BUFFER;
typedef struct _NET_BUFFER_LIST NET_BUFFER_LIST, *PNET_BUFFER_LIST;

// SLIST_HEADER on x64: 16 bytes, 16-byte aligned; it is what gives the NB/NBL unions their
// alignment.
typedef struct alignas(16) _SLIST_HEADER {
  ULONG64 Alignment;
  ULONG64 Region;
} SLIST_HEADER;

struct _NET_BUFFER {
  union {
    struct {
      PNET_BUFFER Next;
      PMDL CurrentMdl;
      ULONG CurrentMdlOffset;
      union {
        ULONG DataLength;
        SIZE_T stDataLength;
      };
      PMDL MdlChain;
      ULONG DataOffset;
    };
    SLIST_HEADER Link;
  };
  USHORT ChecksumBias;
  USHORT Reserved;
  NDIS_HANDLE NdisPoolHandle;
  PVOID NdisReserved[2];
  PVOID ProtocolReserved[6];
  PVOID MiniportReserved[4];
  PHYSICAL_ADDRESS DataPhysicalAddress;
  PVOID ScatterGatherList;  // union with SharedMemoryInfo
};
static_assert(offsetof(NET_BUFFER, CurrentMdl) == 0x08);
static_assert(offsetof(NET_BUFFER, DataLength) == 0x18);
static_assert(offsetof(NET_BUFFER, MdlChain) == 0x20);
static_assert(offsetof(NET_BUFFER, DataOffset) == 0x28);
static_assert(offsetof(NET_BUFFER, MiniportReserved) == 0x80);
static_assert(sizeof(NET_BUFFER) == 0xB0);

// NDIS_NET_BUFFER_LIST_INFO: the indices of NetBufferListInfo[].
enum NDIS_NET_BUFFER_LIST_INFO : ULONG {
  TcpIpChecksumNetBufferListInfo = 0,
  IPsecOffloadV1NetBufferListInfo = 1,
  TcpLargeSendNetBufferListInfo = 2,
  TcpReceiveNoPush = 3,
  ClassificationHandleNetBufferListInfo = 4,
  Ieee8021QNetBufferListInfo = 5,
  NetBufferListCancelId = 6,
  MediaSpecificInformation = 7,
  NetBufferListFrameType = 8,
  NetBufferListHashValue = 9,
  NetBufferListHashInfo = 10,
  WfpNetBufferListInfo = 11,
  // What this header declares; NDIS's own array is at least this long in every version.
  PvioNetBufferListInfoCount = 12,
};

struct _NET_BUFFER_LIST {
  union {
    struct {
      PNET_BUFFER_LIST Next;
      PNET_BUFFER FirstNetBuffer;
    };
    SLIST_HEADER Link;
  };
  PVOID Context;  // PNET_BUFFER_LIST_CONTEXT
  PNET_BUFFER_LIST ParentNetBufferList;
  NDIS_HANDLE NdisPoolHandle;
  PVOID NdisReserved[2];
  PVOID ProtocolReserved[4];
  PVOID MiniportReserved[2];
  PVOID Scratch;
  NDIS_HANDLE SourceHandle;
  ULONG NblFlags;
  LONG ChildRefCount;
  ULONG Flags;
  NDIS_STATUS Status;
  PVOID NetBufferListInfo[PvioNetBufferListInfoCount];
};
static_assert(offsetof(NET_BUFFER_LIST, Context) == 0x10);
static_assert(offsetof(NET_BUFFER_LIST, MiniportReserved) == 0x58);
static_assert(offsetof(NET_BUFFER_LIST, SourceHandle) == 0x70);
static_assert(offsetof(NET_BUFFER_LIST, Status) == 0x84);
static_assert(offsetof(NET_BUFFER_LIST, NetBufferListInfo) == 0x88);

// NDIS_TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO: one pointer-sized NetBufferListInfo slot.
typedef struct _NDIS_TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO {
  union {
    struct {
      ULONG IsIPv4 : 1;
      ULONG IsIPv6 : 1;
      ULONG TcpChecksum : 1;
      ULONG UdpChecksum : 1;
      ULONG IpHeaderChecksum : 1;
      ULONG Reserved : 11;
      ULONG TcpHeaderOffset : 10;
    } Transmit;
    struct {
      ULONG TcpChecksumFailed : 1;
      ULONG UdpChecksumFailed : 1;
      ULONG IpChecksumFailed : 1;
      ULONG TcpChecksumSucceeded : 1;
      ULONG UdpChecksumSucceeded : 1;
      ULONG IpChecksumSucceeded : 1;
      ULONG Loopback : 1;
      ULONG TcpChecksumValueInvalid : 1;
      ULONG IpChecksumValueInvalid : 1;
    } Receive;
    PVOID Value;
  };
} NDIS_TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO;
static_assert(sizeof(NDIS_TCP_IP_CHECKSUM_NET_BUFFER_LIST_INFO) == sizeof(PVOID));

// NDIS_TCP_LARGE_SEND_OFFLOAD_NET_BUFFER_LIST_INFO.
inline constexpr ULONG NDIS_TCP_LARGE_SEND_OFFLOAD_V1_TYPE = 0;
inline constexpr ULONG NDIS_TCP_LARGE_SEND_OFFLOAD_V2_TYPE = 1;
inline constexpr ULONG NDIS_TCP_LARGE_SEND_OFFLOAD_IPv4 = 0;
inline constexpr ULONG NDIS_TCP_LARGE_SEND_OFFLOAD_IPv6 = 1;
typedef struct _NDIS_TCP_LARGE_SEND_OFFLOAD_NET_BUFFER_LIST_INFO {
  union {
    struct {
      ULONG Unused : 30;
      ULONG Type : 1;
      ULONG Reserved2 : 1;
    } Transmit;
    struct {
      ULONG MSS : 20;
      ULONG TcpHeaderOffset : 10;
      ULONG Type : 1;
      ULONG Reserved2 : 1;
    } LsoV1Transmit;
    struct {
      ULONG TcpPayload : 30;
      ULONG Type : 1;
      ULONG Reserved2 : 1;
    } LsoV1TransmitComplete;
    struct {
      ULONG MSS : 20;
      ULONG TcpHeaderOffset : 10;
      ULONG Type : 1;
      ULONG Reserved2 : 1;
      ULONG IPVersion : 2;
      ULONG Reserved3 : 30;
    } LsoV2Transmit;
    struct {
      ULONG Reserved : 30;  // the miniport sets it to zero
      ULONG Type : 1;       // the same bit as Transmit.Type: left as the protocol set it
      ULONG Reserved2 : 1;
    } LsoV2TransmitComplete;
    PVOID Value;
  };
} NDIS_TCP_LARGE_SEND_OFFLOAD_NET_BUFFER_LIST_INFO;
static_assert(sizeof(NDIS_TCP_LARGE_SEND_OFFLOAD_NET_BUFFER_LIST_INFO) == sizeof(PVOID));

inline PNET_BUFFER_LIST NET_BUFFER_LIST_NEXT_NBL(PNET_BUFFER_LIST nbl) { return nbl->Next; }
inline PNET_BUFFER NET_BUFFER_LIST_FIRST_NB(PNET_BUFFER_LIST nbl) { return nbl->FirstNetBuffer; }
inline PNET_BUFFER NET_BUFFER_NEXT_NB(PNET_BUFFER nb) { return nb->Next; }
inline ULONG NET_BUFFER_DATA_LENGTH(PNET_BUFFER nb) { return nb->DataLength; }

// ---- pools ----
typedef struct _NET_BUFFER_LIST_POOL_PARAMETERS {
  NDIS_OBJECT_HEADER Header;
  UCHAR ProtocolId;
  BOOLEAN fAllocateNetBuffer;
  USHORT ContextSize;
  ULONG PoolTag;
  ULONG DataSize;
} NET_BUFFER_LIST_POOL_PARAMETERS, *PNET_BUFFER_LIST_POOL_PARAMETERS;
static_assert(sizeof(NET_BUFFER_LIST_POOL_PARAMETERS) == 16);
inline constexpr UCHAR NET_BUFFER_LIST_POOL_PARAMETERS_REVISION_1 = 1;
inline constexpr USHORT NDIS_SIZEOF_NET_BUFFER_LIST_POOL_PARAMETERS_REVISION_1 = 16;
inline constexpr UCHAR NDIS_PROTOCOL_ID_DEFAULT = 0;

// ---- miniport handler prototypes ----
typedef enum _NDIS_HALT_ACTION { NdisHaltDeviceDisabled, NdisHaltDeviceInstanceDeInitialized,
  NdisHaltDevicePoweredDown, NdisHaltDeviceSurpriseRemoved, NdisHaltDeviceFailed,
  NdisHaltDeviceInitializationFailed, NdisHaltDeviceStopped } NDIS_HALT_ACTION;
typedef enum _NDIS_SHUTDOWN_ACTION { NdisShutdownPowerOff, NdisShutdownBugCheck } NDIS_SHUTDOWN_ACTION;

typedef struct _NDIS_MINIPORT_INIT_PARAMETERS {
  NDIS_OBJECT_HEADER Header;
  ULONG Flags;
  PVOID AllocatedResources;  // PNDIS_RESOURCE_LIST; the rest is not used by xennet
} NDIS_MINIPORT_INIT_PARAMETERS, *PNDIS_MINIPORT_INIT_PARAMETERS;
typedef struct _NDIS_MINIPORT_PAUSE_PARAMETERS {
  NDIS_OBJECT_HEADER Header;
  ULONG Flags;
  ULONG PauseReason;
} NDIS_MINIPORT_PAUSE_PARAMETERS, *PNDIS_MINIPORT_PAUSE_PARAMETERS;
typedef struct _NDIS_MINIPORT_RESTART_PARAMETERS {
  NDIS_OBJECT_HEADER Header;
  PVOID RestartAttributes;
  ULONG Flags;
} NDIS_MINIPORT_RESTART_PARAMETERS, *PNDIS_MINIPORT_RESTART_PARAMETERS;
typedef struct _NET_DEVICE_PNP_EVENT* PNET_DEVICE_PNP_EVENT;

// NDIS_OID_REQUEST (query and set; method requests are not used).
typedef enum _NDIS_REQUEST_TYPE {
  NdisRequestQueryInformation = 0,
  NdisRequestSetInformation = 1,
  NdisRequestQueryStatistics = 2,
  NdisRequestMethod = 12,
} NDIS_REQUEST_TYPE;
typedef struct _NDIS_OID_REQUEST {
  NDIS_OBJECT_HEADER Header;
  NDIS_REQUEST_TYPE RequestType;
  NDIS_PORT_NUMBER PortNumber;
  ULONG Timeout;
  PVOID RequestId;
  NDIS_HANDLE RequestHandle;
  union {
    struct {
      NDIS_OID Oid;
      PVOID InformationBuffer;
      ULONG InformationBufferLength;
      ULONG BytesWritten;
      ULONG BytesNeeded;
    } QUERY_INFORMATION;
    struct {
      NDIS_OID Oid;
      PVOID InformationBuffer;
      ULONG InformationBufferLength;
      ULONG BytesRead;
      ULONG BytesNeeded;
    } SET_INFORMATION;
    struct {
      NDIS_OID Oid;
      PVOID InformationBuffer;
      ULONG InputBufferLength;
      ULONG OutputBufferLength;
      ULONG MethodId;
      ULONG BytesWritten;
      ULONG BytesRead;
      ULONG BytesNeeded;
    } METHOD_INFORMATION;
  } DATA;
  UCHAR NdisReserved[16 * sizeof(PVOID)];
  UCHAR MiniportReserved[2 * sizeof(PVOID)];
  UCHAR SourceReserved[2 * sizeof(PVOID)];
  UCHAR SupportedRevision;
  UCHAR Reserved1;
  USHORT Reserved2;
} NDIS_OID_REQUEST, *PNDIS_OID_REQUEST;
static_assert(offsetof(NDIS_OID_REQUEST, DATA) == 32);
static_assert(offsetof(NDIS_OID_REQUEST, DATA.QUERY_INFORMATION.InformationBufferLength) == 48);

typedef NDIS_STATUS SET_OPTIONS(NDIS_HANDLE NdisDriverHandle, NDIS_HANDLE DriverContext);
typedef NDIS_STATUS MINIPORT_INITIALIZE(NDIS_HANDLE MiniportAdapterHandle,
                                        NDIS_HANDLE MiniportDriverContext,
                                        PNDIS_MINIPORT_INIT_PARAMETERS MiniportInitParameters);
typedef VOID MINIPORT_HALT(NDIS_HANDLE MiniportAdapterContext, NDIS_HALT_ACTION HaltAction);
typedef VOID MINIPORT_UNLOAD(PDRIVER_OBJECT DriverObject);
typedef NDIS_STATUS MINIPORT_PAUSE(NDIS_HANDLE MiniportAdapterContext,
                                   PNDIS_MINIPORT_PAUSE_PARAMETERS PauseParameters);
typedef NDIS_STATUS MINIPORT_RESTART(NDIS_HANDLE MiniportAdapterContext,
                                     PNDIS_MINIPORT_RESTART_PARAMETERS RestartParameters);
typedef NDIS_STATUS MINIPORT_OID_REQUEST(NDIS_HANDLE MiniportAdapterContext,
                                         PNDIS_OID_REQUEST OidRequest);
typedef VOID MINIPORT_SEND_NET_BUFFER_LISTS(NDIS_HANDLE MiniportAdapterContext,
                                            PNET_BUFFER_LIST NetBufferList,
                                            NDIS_PORT_NUMBER PortNumber, ULONG SendFlags);
typedef VOID MINIPORT_RETURN_NET_BUFFER_LISTS(NDIS_HANDLE MiniportAdapterContext,
                                              PNET_BUFFER_LIST NetBufferLists, ULONG ReturnFlags);
typedef VOID MINIPORT_CANCEL_SEND(NDIS_HANDLE MiniportAdapterContext, PVOID CancelId);
typedef BOOLEAN MINIPORT_CHECK_FOR_HANG(NDIS_HANDLE MiniportAdapterContext);
typedef NDIS_STATUS MINIPORT_RESET(NDIS_HANDLE MiniportAdapterContext, PBOOLEAN AddressingReset);
typedef VOID MINIPORT_DEVICE_PNP_EVENT_NOTIFY(NDIS_HANDLE MiniportAdapterContext,
                                              PNET_DEVICE_PNP_EVENT NetDevicePnPEvent);
typedef VOID MINIPORT_SHUTDOWN(NDIS_HANDLE MiniportAdapterContext,
                               NDIS_SHUTDOWN_ACTION ShutdownAction);
typedef VOID MINIPORT_CANCEL_OID_REQUEST(NDIS_HANDLE MiniportAdapterContext, PVOID RequestId);

// Flags of the datapath calls: the caller is at DISPATCH_LEVEL.
inline constexpr ULONG NDIS_SEND_FLAGS_DISPATCH_LEVEL = 0x00000001;
inline constexpr ULONG NDIS_SEND_COMPLETE_FLAGS_DISPATCH_LEVEL = 0x00000001;
inline constexpr ULONG NDIS_RETURN_FLAGS_DISPATCH_LEVEL = 0x00000001;
inline constexpr ULONG NDIS_RECEIVE_FLAGS_DISPATCH_LEVEL = 0x00000001;
// The miniport is low on receive NBLs: the protocol copies what it needs and the NBLs are the
// miniport's again when NdisMIndicateReceiveNetBufferLists returns (no return call follows).
inline constexpr ULONG NDIS_RECEIVE_FLAGS_RESOURCES = 0x00000002;
inline constexpr NDIS_PORT_NUMBER NDIS_DEFAULT_PORT_NUMBER = 0;

// ---- driver registration ----
typedef struct _NDIS_MINIPORT_DRIVER_CHARACTERISTICS {
  NDIS_OBJECT_HEADER Header;
  UCHAR MajorNdisVersion;
  UCHAR MinorNdisVersion;
  UCHAR MajorDriverVersion;
  UCHAR MinorDriverVersion;
  ULONG Flags;
  SET_OPTIONS* SetOptionsHandler;
  MINIPORT_INITIALIZE* InitializeHandlerEx;
  MINIPORT_HALT* HaltHandlerEx;
  MINIPORT_UNLOAD* UnloadHandler;
  MINIPORT_PAUSE* PauseHandler;
  MINIPORT_RESTART* RestartHandler;
  MINIPORT_OID_REQUEST* OidRequestHandler;
  MINIPORT_SEND_NET_BUFFER_LISTS* SendNetBufferListsHandler;
  MINIPORT_RETURN_NET_BUFFER_LISTS* ReturnNetBufferListsHandler;
  MINIPORT_CANCEL_SEND* CancelSendHandler;
  MINIPORT_CHECK_FOR_HANG* CheckForHangHandlerEx;
  MINIPORT_RESET* ResetHandlerEx;
  MINIPORT_DEVICE_PNP_EVENT_NOTIFY* DevicePnPEventNotifyHandler;
  MINIPORT_SHUTDOWN* ShutdownHandlerEx;
  MINIPORT_CANCEL_OID_REQUEST* CancelOidRequestHandler;
} NDIS_MINIPORT_DRIVER_CHARACTERISTICS, *PNDIS_MINIPORT_DRIVER_CHARACTERISTICS;
static_assert(offsetof(NDIS_MINIPORT_DRIVER_CHARACTERISTICS, SetOptionsHandler) == 16);
static_assert(offsetof(NDIS_MINIPORT_DRIVER_CHARACTERISTICS, SendNetBufferListsHandler) == 72);
// NDIS_SIZEOF_MINIPORT_DRIVER_CHARACTERISTICS_REVISION_1 (NDIS 6.0-6.20): through
// CancelOidRequestHandler.
static_assert(sizeof(NDIS_MINIPORT_DRIVER_CHARACTERISTICS) == 136);
inline constexpr UCHAR NDIS_MINIPORT_DRIVER_CHARACTERISTICS_REVISION_1 = 1;
inline constexpr USHORT NDIS_SIZEOF_MINIPORT_DRIVER_CHARACTERISTICS_REVISION_1 = 136;

// ---- adapter attributes ----
typedef enum _NDIS_INTERFACE_TYPE { NdisInterfaceInternal = 0 } NDIS_INTERFACE_TYPE;
typedef struct _NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES {
  NDIS_OBJECT_HEADER Header;
  NDIS_HANDLE MiniportAdapterContext;
  ULONG AttributeFlags;
  ULONG CheckForHangTimeInSeconds;
  NDIS_INTERFACE_TYPE InterfaceType;
} NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES;
static_assert(offsetof(NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES, MiniportAdapterContext) == 8);
static_assert(offsetof(NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES, InterfaceType) == 24);
inline constexpr UCHAR NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES_REVISION_1 = 1;
// RTL_SIZEOF_THROUGH_FIELD(..., InterfaceType)
inline constexpr USHORT NDIS_SIZEOF_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES_REVISION_1 = 28;
// AttributeFlags: without it NDIS halts an adapter that cannot wake the system before a sleep
// state, instead of pausing it and sending OID_PNP_SET_POWER.
inline constexpr ULONG NDIS_MINIPORT_ATTRIBUTES_NO_HALT_ON_SUSPEND = 0x00000020;

// ---- power management (ntddndis.h) ----
typedef enum _NDIS_DEVICE_POWER_STATE {
  NdisDeviceStateUnspecified = 0,
  NdisDeviceStateD0 = 1,
  NdisDeviceStateD1 = 2,
  NdisDeviceStateD2 = 3,
  NdisDeviceStateD3 = 4,
} NDIS_DEVICE_POWER_STATE;
static_assert(sizeof(NDIS_DEVICE_POWER_STATE) == 4);
// NDIS 6.20's power management capabilities (GeneralAttributes.PowerManagementCapabilitiesEx).
// Revision 2 (NDIS 6.30) appends SupportedWakeUpEvents and MediaSpecificWakeUpEvents.
typedef struct _NDIS_PM_CAPABILITIES {
  NDIS_OBJECT_HEADER Header;  // NDIS_OBJECT_TYPE_DEFAULT
  ULONG Flags;
  ULONG SupportedWoLPacketPatterns;
  ULONG NumTotalWoLPatterns;
  ULONG MaxWoLPatternSize;
  ULONG MaxWoLPatternOffset;
  ULONG MaxWoLPacketSaveBuffer;
  ULONG SupportedProtocolOffloads;
  ULONG NumArpOffloadIPv4Addresses;
  ULONG NumNSOffloadIPv6Addresses;
  NDIS_DEVICE_POWER_STATE MinMagicPacketWakeUp;  // Unspecified: no wake on this event
  NDIS_DEVICE_POWER_STATE MinPatternWakeUp;
  NDIS_DEVICE_POWER_STATE MinLinkChangeWakeUp;
  ULONG SupportedWakeUpEvents;
  ULONG MediaSpecificWakeUpEvents;
} NDIS_PM_CAPABILITIES, *PNDIS_PM_CAPABILITIES;
static_assert(offsetof(NDIS_PM_CAPABILITIES, SupportedProtocolOffloads) == 28);
static_assert(offsetof(NDIS_PM_CAPABILITIES, MinMagicPacketWakeUp) == 40);
static_assert(offsetof(NDIS_PM_CAPABILITIES, MinLinkChangeWakeUp) == 48);
static_assert(sizeof(NDIS_PM_CAPABILITIES) == 60);
inline constexpr UCHAR NDIS_PM_CAPABILITIES_REVISION_1 = 1;
// RTL_SIZEOF_THROUGH_FIELD(NDIS_PM_CAPABILITIES, MinLinkChangeWakeUp)
inline constexpr USHORT NDIS_SIZEOF_NDIS_PM_CAPABILITIES_REVISION_1 = 52;

typedef enum _NDIS_MEDIUM { NdisMedium802_3 = 0 } NDIS_MEDIUM;
typedef enum _NDIS_PHYSICAL_MEDIUM { NdisPhysicalMediumUnspecified = 0, NdisPhysicalMedium802_3 = 14 } NDIS_PHYSICAL_MEDIUM;
typedef enum _NDIS_MEDIA_CONNECT_STATE {
  MediaConnectStateUnknown = 0,
  MediaConnectStateConnected = 1,
  MediaConnectStateDisconnected = 2,
} NDIS_MEDIA_CONNECT_STATE;
typedef enum _NDIS_MEDIA_DUPLEX_STATE {
  MediaDuplexStateUnknown = 0,
  MediaDuplexStateHalf = 1,
  MediaDuplexStateFull = 2,
} NDIS_MEDIA_DUPLEX_STATE;
// OID_GEN_MEDIA_CONNECT_STATUS answers NDIS_MEDIA_STATE.
inline constexpr ULONG NdisMediaStateConnected = 0;
inline constexpr ULONG NdisMediaStateDisconnected = 1;

typedef struct _NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES {
  NDIS_OBJECT_HEADER Header;
  ULONG Flags;
  NDIS_MEDIUM MediaType;
  NDIS_PHYSICAL_MEDIUM PhysicalMediumType;
  ULONG MtuSize;
  ULONG64 MaxXmitLinkSpeed;
  ULONG64 XmitLinkSpeed;
  ULONG64 MaxRcvLinkSpeed;
  ULONG64 RcvLinkSpeed;
  NDIS_MEDIA_CONNECT_STATE MediaConnectState;
  NDIS_MEDIA_DUPLEX_STATE MediaDuplexState;
  ULONG LookaheadSize;
  PVOID PowerManagementCapabilities;
  ULONG MacOptions;
  ULONG SupportedPacketFilters;
  ULONG MaxMulticastListSize;
  USHORT MacAddressLength;
  UCHAR PermanentMacAddress[32];
  UCHAR CurrentMacAddress[32];
  PVOID RecvScaleCapabilities;
  ULONG AccessType;      // NET_IF_ACCESS_TYPE
  ULONG DirectionType;   // NET_IF_DIRECTION_TYPE
  ULONG ConnectionType;  // NET_IF_CONNECTION_TYPE
  USHORT IfType;         // NET_IFTYPE
  BOOLEAN IfConnectorPresent;
  ULONG SupportedStatistics;
  ULONG SupportedPauseFunctions;
  ULONG DataBackFillSize;
  ULONG ContextBackFillSize;
  PNDIS_OID SupportedOidList;
  ULONG SupportedOidListLength;
  ULONG AutoNegotiationFlags;
  // Revision 2 (NDIS 6.20): PowerManagementCapabilities must then be NULL.
  PNDIS_PM_CAPABILITIES PowerManagementCapabilitiesEx;
} NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES;
static_assert(offsetof(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, MaxXmitLinkSpeed) == 24);
static_assert(offsetof(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, PowerManagementCapabilities) == 72);
static_assert(offsetof(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, PermanentMacAddress) == 94);
static_assert(offsetof(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, SupportedOidList) == 200);
inline constexpr UCHAR NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_1 = 1;
// RTL_SIZEOF_THROUGH_FIELD(..., AutoNegotiationFlags)
inline constexpr USHORT NDIS_SIZEOF_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_1 = 216;
static_assert(offsetof(NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES, PowerManagementCapabilitiesEx) == 216);
inline constexpr UCHAR NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_2 = 2;
// RTL_SIZEOF_THROUGH_FIELD(..., PowerManagementCapabilitiesEx)
inline constexpr USHORT NDIS_SIZEOF_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES_REVISION_2 = 224;

// ---- task offload (ntddndis.h) ----
// Values of the 2-bit capability fields of NDIS_TCP_IP_CHECKSUM_OFFLOAD and friends.
inline constexpr ULONG NDIS_OFFLOAD_NOT_SUPPORTED = 0;
inline constexpr ULONG NDIS_OFFLOAD_SUPPORTED = 1;
// NDIS_OFFLOAD_ENCAPSULATION's Enabled.
inline constexpr ULONG NDIS_OFFLOAD_SET_NO_CHANGE = 0;
inline constexpr ULONG NDIS_OFFLOAD_SET_ON = 1;
inline constexpr ULONG NDIS_OFFLOAD_SET_OFF = 2;
// Encapsulation masks.
inline constexpr ULONG NDIS_ENCAPSULATION_NOT_SUPPORTED = 0x00000000;
inline constexpr ULONG NDIS_ENCAPSULATION_NULL = 0x00000001;
inline constexpr ULONG NDIS_ENCAPSULATION_IEEE_802_3 = 0x00000002;
inline constexpr ULONG NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q = 0x00000004;
inline constexpr ULONG NDIS_ENCAPSULATION_IEEE_802_3_P_AND_Q_IN_OOB = 0x00000008;
inline constexpr ULONG NDIS_ENCAPSULATION_IEEE_LLC_SNAP_ROUTED = 0x00000010;

typedef struct _NDIS_TCP_IP_CHECKSUM_OFFLOAD {
  struct {
    ULONG Encapsulation;
    ULONG IpOptionsSupported : 2;
    ULONG TcpOptionsSupported : 2;
    ULONG TcpChecksum : 2;
    ULONG UdpChecksum : 2;
    ULONG IpChecksum : 2;
  } IPv4Transmit;
  struct {
    ULONG Encapsulation;
    ULONG IpOptionsSupported : 2;
    ULONG TcpOptionsSupported : 2;
    ULONG TcpChecksum : 2;
    ULONG UdpChecksum : 2;
    ULONG IpChecksum : 2;
  } IPv4Receive;
  struct {
    ULONG Encapsulation;
    ULONG IpExtensionHeadersSupported : 2;
    ULONG TcpOptionsSupported : 2;
    ULONG TcpChecksum : 2;
    ULONG UdpChecksum : 2;
  } IPv6Transmit;
  struct {
    ULONG Encapsulation;
    ULONG IpExtensionHeadersSupported : 2;
    ULONG TcpOptionsSupported : 2;
    ULONG TcpChecksum : 2;
    ULONG UdpChecksum : 2;
  } IPv6Receive;
} NDIS_TCP_IP_CHECKSUM_OFFLOAD, *PNDIS_TCP_IP_CHECKSUM_OFFLOAD;
static_assert(offsetof(NDIS_TCP_IP_CHECKSUM_OFFLOAD, IPv6Transmit) == 16);
static_assert(sizeof(NDIS_TCP_IP_CHECKSUM_OFFLOAD) == 32);

typedef struct _NDIS_TCP_LARGE_SEND_OFFLOAD_V1 {
  struct {
    ULONG Encapsulation;
    ULONG MaxOffLoadSize;
    ULONG MinSegmentCount;
    ULONG TcpOptions : 2;
    ULONG IpOptions : 2;
  } IPv4;
} NDIS_TCP_LARGE_SEND_OFFLOAD_V1, *PNDIS_TCP_LARGE_SEND_OFFLOAD_V1;
static_assert(sizeof(NDIS_TCP_LARGE_SEND_OFFLOAD_V1) == 16);

// Declared for NDIS_OFFLOAD's layout only: xennet offers no IPsec offload.
typedef struct _NDIS_IPSEC_OFFLOAD_V1 {
  struct {
    ULONG Encapsulation;
    ULONG AhEspCombined;
    ULONG TransportTunnelCombined;
    ULONG IPv4Options;
    ULONG Flags;
  } Supported;
  struct {
    ULONG Md5 : 2;
    ULONG Sha_1 : 2;
    ULONG Transport : 2;
    ULONG Tunnel : 2;
    ULONG Send : 2;
    ULONG Receive : 2;
  } IPv4AH;
  struct {
    ULONG Des : 2;
    ULONG Reserved : 2;
    ULONG TripleDes : 2;
    ULONG NullEsp : 2;
    ULONG Transport : 2;
    ULONG Tunnel : 2;
    ULONG Send : 2;
    ULONG Receive : 2;
  } IPv4ESP;
} NDIS_IPSEC_OFFLOAD_V1, *PNDIS_IPSEC_OFFLOAD_V1;
static_assert(sizeof(NDIS_IPSEC_OFFLOAD_V1) == 28);

typedef struct _NDIS_TCP_LARGE_SEND_OFFLOAD_V2 {
  struct {
    ULONG Encapsulation;
    ULONG MaxOffLoadSize;
    ULONG MinSegmentCount;
  } IPv4;
  struct {
    ULONG Encapsulation;
    ULONG MaxOffLoadSize;
    ULONG MinSegmentCount;
    ULONG IpExtensionHeadersSupported : 2;
    ULONG TcpOptionsSupported : 2;
  } IPv6;
} NDIS_TCP_LARGE_SEND_OFFLOAD_V2, *PNDIS_TCP_LARGE_SEND_OFFLOAD_V2;
static_assert(offsetof(NDIS_TCP_LARGE_SEND_OFFLOAD_V2, IPv6) == 12);
static_assert(sizeof(NDIS_TCP_LARGE_SEND_OFFLOAD_V2) == 28);

// NDIS 6.1 (NDIS_OFFLOAD revision 2); layout only, as IPsecV1.
typedef struct _NDIS_IPSEC_OFFLOAD_V2 {
  ULONG Encapsulation;
  BOOLEAN IPv6Supported;
  BOOLEAN IPv4Options;
  BOOLEAN IPv6NonIPsecExtensionHeaders;
  BOOLEAN Ah;
  BOOLEAN Esp;
  BOOLEAN AhEspCombined;
  BOOLEAN Transport;
  BOOLEAN Tunnel;
  BOOLEAN TransportTunnelCombined;
  BOOLEAN LsoSupported;
  BOOLEAN ExtendedSequenceNumbers;
  ULONG UdpEsp;
  ULONG AuthenticationAlgorithms;
  ULONG EncryptionAlgorithms;
  ULONG SaOffloadCapacity;
} NDIS_IPSEC_OFFLOAD_V2, *PNDIS_IPSEC_OFFLOAD_V2;
static_assert(offsetof(NDIS_IPSEC_OFFLOAD_V2, UdpEsp) == 16);
static_assert(sizeof(NDIS_IPSEC_OFFLOAD_V2) == 32);

// What a miniport can do (HardwareOffloadCapabilities) or does now (the current
// configuration: the default attribute, OID_TCP_OFFLOAD_CURRENT_CONFIG and the
// NDIS_STATUS_TASK_OFFLOAD_CURRENT_CONFIG indication). Later NDIS versions append members
// (Rsc, encapsulated-packet offloads, ...); an NDIS 6.20 miniport uses revision 2.
typedef struct _NDIS_OFFLOAD {
  NDIS_OBJECT_HEADER Header;
  NDIS_TCP_IP_CHECKSUM_OFFLOAD Checksum;
  NDIS_TCP_LARGE_SEND_OFFLOAD_V1 LsoV1;
  NDIS_IPSEC_OFFLOAD_V1 IPsecV1;
  NDIS_TCP_LARGE_SEND_OFFLOAD_V2 LsoV2;
  ULONG Flags;
  NDIS_IPSEC_OFFLOAD_V2 IPsecV2;
} NDIS_OFFLOAD, *PNDIS_OFFLOAD;
static_assert(offsetof(NDIS_OFFLOAD, Checksum) == 4);
static_assert(offsetof(NDIS_OFFLOAD, LsoV1) == 36);
static_assert(offsetof(NDIS_OFFLOAD, IPsecV1) == 52);
static_assert(offsetof(NDIS_OFFLOAD, LsoV2) == 80);
static_assert(offsetof(NDIS_OFFLOAD, Flags) == 108);
static_assert(offsetof(NDIS_OFFLOAD, IPsecV2) == 112);
static_assert(sizeof(NDIS_OFFLOAD) == 144);
inline constexpr UCHAR NDIS_OFFLOAD_REVISION_1 = 1;
inline constexpr UCHAR NDIS_OFFLOAD_REVISION_2 = 2;
// RTL_SIZEOF_THROUGH_FIELD(NDIS_OFFLOAD, Flags) and (..., IPsecV2)
inline constexpr USHORT NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_1 = 112;
inline constexpr USHORT NDIS_SIZEOF_NDIS_OFFLOAD_REVISION_2 = 144;

// Per-offload settings of OID_TCP_OFFLOAD_PARAMETERS (a set request). Header.Type is
// NDIS_OBJECT_TYPE_DEFAULT. Revision 2 (NDIS 6.1) adds the IPsec v2 fields, revision 3
// (NDIS 6.30) RSC and encapsulated-packet offload; later revisions append more.
typedef struct _NDIS_OFFLOAD_PARAMETERS {
  NDIS_OBJECT_HEADER Header;
  UCHAR IPv4Checksum;
  UCHAR TCPIPv4Checksum;
  UCHAR UDPIPv4Checksum;
  UCHAR TCPIPv6Checksum;
  UCHAR UDPIPv6Checksum;
  UCHAR LsoV1;
  UCHAR IPsecV1;
  UCHAR LsoV2IPv4;
  UCHAR LsoV2IPv6;
  UCHAR TcpConnectionIPv4;
  UCHAR TcpConnectionIPv6;
  ULONG Flags;
  UCHAR IPsecV2;
  UCHAR IPsecV2IPv4;
  UCHAR RscIPv4;
  UCHAR RscIPv6;
  UCHAR EncapsulatedPacketTaskOffload;
  UCHAR EncapsulationTypes;
} NDIS_OFFLOAD_PARAMETERS, *PNDIS_OFFLOAD_PARAMETERS;
static_assert(offsetof(NDIS_OFFLOAD_PARAMETERS, TcpConnectionIPv6) == 14);
static_assert(offsetof(NDIS_OFFLOAD_PARAMETERS, Flags) == 16);
static_assert(offsetof(NDIS_OFFLOAD_PARAMETERS, IPsecV2) == 20);
static_assert(offsetof(NDIS_OFFLOAD_PARAMETERS, EncapsulationTypes) == 25);
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_REVISION_1 = 1;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_REVISION_2 = 2;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_REVISION_3 = 3;
// RTL_SIZEOF_THROUGH_FIELD: Flags, IPsecV2IPv4, EncapsulationTypes.
inline constexpr USHORT NDIS_SIZEOF_OFFLOAD_PARAMETERS_REVISION_1 = 20;
inline constexpr USHORT NDIS_SIZEOF_OFFLOAD_PARAMETERS_REVISION_2 = 22;
inline constexpr USHORT NDIS_SIZEOF_OFFLOAD_PARAMETERS_REVISION_3 = 26;
// The checksum members (IPv4Checksum .. UDPIPv6Checksum).
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_NO_CHANGE = 0;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_TX_RX_DISABLED = 1;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_TX_ENABLED_RX_DISABLED = 2;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_RX_ENABLED_TX_DISABLED = 3;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_TX_RX_ENABLED = 4;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_LSOV1_DISABLED = 1;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_LSOV1_ENABLED = 2;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_IPSECV1_DISABLED = 1;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_IPSECV1_AH_AND_ESP_ENABLED = 4;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_LSOV2_DISABLED = 1;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_LSOV2_ENABLED = 2;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_IPSECV2_DISABLED = 1;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_IPSECV2_AH_AND_ESP_ENABLED = 4;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_CONNECTION_OFFLOAD_DISABLED = 1;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_CONNECTION_OFFLOAD_ENABLED = 2;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_RSC_DISABLED = 1;
inline constexpr UCHAR NDIS_OFFLOAD_PARAMETERS_RSC_ENABLED = 2;

// OID_OFFLOAD_ENCAPSULATION (set): the encapsulation the protocol uses, per IP version;
// Enabled is NDIS_OFFLOAD_SET_ON / OFF / NO_CHANGE.
typedef struct _NDIS_OFFLOAD_ENCAPSULATION {
  NDIS_OBJECT_HEADER Header;
  struct {
    ULONG Enabled;
    ULONG EncapsulationType;
    ULONG HeaderSize;
  } IPv4;
  struct {
    ULONG Enabled;
    ULONG EncapsulationType;
    ULONG HeaderSize;
  } IPv6;
} NDIS_OFFLOAD_ENCAPSULATION, *PNDIS_OFFLOAD_ENCAPSULATION;
static_assert(offsetof(NDIS_OFFLOAD_ENCAPSULATION, IPv6) == 16);
static_assert(sizeof(NDIS_OFFLOAD_ENCAPSULATION) == 28);
inline constexpr UCHAR NDIS_OFFLOAD_ENCAPSULATION_REVISION_1 = 1;
// RTL_SIZEOF_THROUGH_FIELD(NDIS_OFFLOAD_ENCAPSULATION, IPv6.HeaderSize)
inline constexpr USHORT NDIS_SIZEOF_OFFLOAD_ENCAPSULATION_REVISION_1 = 28;

// Task offload attributes, set in MiniportInitializeEx. The connection (chimney) offload
// pointers stay null: xennet offers none.
typedef struct _NDIS_TCP_CONNECTION_OFFLOAD NDIS_TCP_CONNECTION_OFFLOAD, *PNDIS_TCP_CONNECTION_OFFLOAD;
typedef struct _NDIS_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES {
  NDIS_OBJECT_HEADER Header;
  PNDIS_OFFLOAD DefaultOffloadConfiguration;
  PNDIS_OFFLOAD HardwareOffloadCapabilities;
  PNDIS_TCP_CONNECTION_OFFLOAD DefaultTcpConnectionOffloadConfiguration;
  PNDIS_TCP_CONNECTION_OFFLOAD TcpConnectionOffloadHardwareCapabilities;
} NDIS_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES;
static_assert(offsetof(NDIS_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES, DefaultOffloadConfiguration) == 8);
static_assert(sizeof(NDIS_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES) == 40);
inline constexpr UCHAR NDIS_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES_REVISION_1 = 1;
// RTL_SIZEOF_THROUGH_FIELD(..., TcpConnectionOffloadHardwareCapabilities)
inline constexpr USHORT NDIS_SIZEOF_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES_REVISION_1 = 40;

typedef union _NDIS_MINIPORT_ADAPTER_ATTRIBUTES {
  NDIS_MINIPORT_ADAPTER_REGISTRATION_ATTRIBUTES RegistrationAttributes;
  NDIS_MINIPORT_ADAPTER_GENERAL_ATTRIBUTES GeneralAttributes;
  NDIS_MINIPORT_ADAPTER_OFFLOAD_ATTRIBUTES OffloadAttributes;
} NDIS_MINIPORT_ADAPTER_ATTRIBUTES, *PNDIS_MINIPORT_ADAPTER_ATTRIBUTES;

inline constexpr ULONG NDIS_MAC_OPTION_COPY_LOOKAHEAD_DATA = 0x00000001;
inline constexpr ULONG NDIS_MAC_OPTION_TRANSFERS_NOT_PEND = 0x00000002;
inline constexpr ULONG NDIS_MAC_OPTION_NO_LOOPBACK = 0x00000008;
inline constexpr ULONG NDIS_PACKET_TYPE_DIRECTED = 0x00000001;
inline constexpr ULONG NDIS_PACKET_TYPE_MULTICAST = 0x00000002;
inline constexpr ULONG NDIS_PACKET_TYPE_ALL_MULTICAST = 0x00000004;
inline constexpr ULONG NDIS_PACKET_TYPE_BROADCAST = 0x00000008;
inline constexpr ULONG NDIS_PACKET_TYPE_PROMISCUOUS = 0x00000020;
inline constexpr ULONG NDIS_STATISTICS_XMIT_OK_SUPPORTED = 0x00000001;
inline constexpr ULONG NDIS_STATISTICS_RCV_OK_SUPPORTED = 0x00000002;
inline constexpr ULONG NDIS_STATISTICS_XMIT_ERROR_SUPPORTED = 0x00000004;
inline constexpr ULONG NDIS_STATISTICS_RCV_ERROR_SUPPORTED = 0x00000008;
inline constexpr ULONG NET_IF_ACCESS_BROADCAST = 2;
inline constexpr ULONG NET_IF_DIRECTION_SENDRECEIVE = 0;
inline constexpr ULONG NET_IF_CONNECTION_DEDICATED = 1;
inline constexpr USHORT IF_TYPE_ETHERNET_CSMACD = 6;
inline constexpr ULONG64 NDIS_LINK_SPEED_UNKNOWN = ~0ull;

// ---- OIDs ----
inline constexpr NDIS_OID OID_GEN_SUPPORTED_LIST = 0x00010101;
inline constexpr NDIS_OID OID_GEN_MAXIMUM_LOOKAHEAD = 0x00010105;
inline constexpr NDIS_OID OID_GEN_MAXIMUM_FRAME_SIZE = 0x00010106;
inline constexpr NDIS_OID OID_GEN_LINK_SPEED = 0x00010107;
inline constexpr NDIS_OID OID_GEN_CURRENT_PACKET_FILTER = 0x0001010E;
inline constexpr NDIS_OID OID_GEN_CURRENT_LOOKAHEAD = 0x0001010F;
inline constexpr NDIS_OID OID_GEN_MAXIMUM_TOTAL_SIZE = 0x00010111;
inline constexpr NDIS_OID OID_GEN_MEDIA_CONNECT_STATUS = 0x00010114;
inline constexpr NDIS_OID OID_GEN_XMIT_OK = 0x00020101;
inline constexpr NDIS_OID OID_GEN_RCV_OK = 0x00020102;
inline constexpr NDIS_OID OID_GEN_XMIT_ERROR = 0x00020103;
inline constexpr NDIS_OID OID_GEN_RCV_ERROR = 0x00020104;
inline constexpr NDIS_OID OID_802_3_PERMANENT_ADDRESS = 0x01010101;
inline constexpr NDIS_OID OID_802_3_CURRENT_ADDRESS = 0x01010102;
inline constexpr NDIS_OID OID_802_3_MULTICAST_LIST = 0x01010103;
inline constexpr NDIS_OID OID_802_3_MAXIMUM_LIST_SIZE = 0x01010104;
inline constexpr NDIS_OID OID_OFFLOAD_ENCAPSULATION = 0x0101010A;
inline constexpr NDIS_OID OID_TCP_OFFLOAD_CURRENT_CONFIG = 0xFC01020B;
inline constexpr NDIS_OID OID_TCP_OFFLOAD_PARAMETERS = 0xFC01020C;
inline constexpr NDIS_OID OID_TCP_OFFLOAD_HARDWARE_CAPABILITIES = 0xFC01020D;
inline constexpr NDIS_OID OID_PNP_CAPABILITIES = 0xFD010100;
inline constexpr NDIS_OID OID_PNP_SET_POWER = 0xFD010101;    // set: NDIS_DEVICE_POWER_STATE
inline constexpr NDIS_OID OID_PNP_QUERY_POWER = 0xFD010102;  // set: NDIS_DEVICE_POWER_STATE

// ---- status indications (link state) ----
typedef struct _NDIS_STATUS_INDICATION {
  NDIS_OBJECT_HEADER Header;
  NDIS_HANDLE SourceHandle;
  NDIS_PORT_NUMBER PortNumber;
  NDIS_STATUS StatusCode;
  ULONG Flags;
  NDIS_HANDLE DestinationHandle;
  PVOID RequestId;
  PVOID StatusBuffer;
  ULONG StatusBufferSize;
  GUID Guid;
  PVOID NdisReserved[4];
} NDIS_STATUS_INDICATION, *PNDIS_STATUS_INDICATION;
static_assert(offsetof(NDIS_STATUS_INDICATION, StatusCode) == 20);
static_assert(offsetof(NDIS_STATUS_INDICATION, StatusBuffer) == 48);
inline constexpr UCHAR NDIS_STATUS_INDICATION_REVISION_1 = 1;

typedef struct _NDIS_LINK_STATE {
  NDIS_OBJECT_HEADER Header;
  NDIS_MEDIA_CONNECT_STATE MediaConnectState;
  NDIS_MEDIA_DUPLEX_STATE MediaDuplexState;
  ULONG64 XmitLinkSpeed;
  ULONG64 RcvLinkSpeed;
  ULONG PauseFunctions;
  ULONG AutoNegotiationFlags;
} NDIS_LINK_STATE;
static_assert(offsetof(NDIS_LINK_STATE, XmitLinkSpeed) == 16);
static_assert(sizeof(NDIS_LINK_STATE) == 40);
inline constexpr UCHAR NDIS_LINK_STATE_REVISION_1 = 1;

extern "C" {

// PASSIVE_LEVEL
PVIO_KERNEL_IMPORT NDIS_STATUS NdisMRegisterMiniportDriver(
    PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath, NDIS_HANDLE MiniportDriverContext,
    PNDIS_MINIPORT_DRIVER_CHARACTERISTICS MiniportDriverCharacteristics,
    PNDIS_HANDLE NdisMiniportDriverHandle);
PVIO_KERNEL_IMPORT VOID NdisMDeregisterMiniportDriver(NDIS_HANDLE NdisMiniportDriverHandle);
PVIO_KERNEL_IMPORT NDIS_STATUS NdisMSetMiniportAttributes(
    NDIS_HANDLE NdisMiniportHandle, PNDIS_MINIPORT_ADAPTER_ATTRIBUTES MiniportAttributes);
PVIO_KERNEL_IMPORT VOID NdisMGetDeviceProperty(NDIS_HANDLE MiniportAdapterHandle,
                                               PDEVICE_OBJECT* PhysicalDeviceObject,
                                               PDEVICE_OBJECT* FunctionalDeviceObject,
                                               PDEVICE_OBJECT* NextDeviceObject,
                                               PVOID* AllocatedResources,
                                               PVOID* AllocatedResourcesTranslated);

// <= DISPATCH_LEVEL
PVIO_KERNEL_IMPORT NDIS_HANDLE NdisAllocateNetBufferListPool(
    NDIS_HANDLE NdisHandle, PNET_BUFFER_LIST_POOL_PARAMETERS Parameters);
PVIO_KERNEL_IMPORT VOID NdisFreeNetBufferListPool(NDIS_HANDLE PoolHandle);
PVIO_KERNEL_IMPORT PNET_BUFFER_LIST NdisAllocateNetBufferAndNetBufferList(
    NDIS_HANDLE PoolHandle, USHORT ContextSize, USHORT ContextBackFill, PMDL MdlChain,
    ULONG DataOffset, SIZE_T DataLength);
PVIO_KERNEL_IMPORT VOID NdisFreeNetBufferList(PNET_BUFFER_LIST NetBufferList);
PVIO_KERNEL_IMPORT PMDL NdisAllocateMdl(NDIS_HANDLE NdisHandle, PVOID VirtualAddress, ULONG Length);
PVIO_KERNEL_IMPORT VOID NdisFreeMdl(PMDL Mdl);

PVIO_KERNEL_IMPORT VOID NdisMSendNetBufferListsComplete(NDIS_HANDLE MiniportAdapterHandle,
                                                        PNET_BUFFER_LIST NetBufferLists,
                                                        ULONG SendCompleteFlags);
PVIO_KERNEL_IMPORT VOID NdisMIndicateReceiveNetBufferLists(NDIS_HANDLE MiniportAdapterHandle,
                                                           PNET_BUFFER_LIST NetBufferLists,
                                                           NDIS_PORT_NUMBER PortNumber,
                                                           ULONG NumberOfNetBufferLists,
                                                           ULONG ReceiveFlags);
PVIO_KERNEL_IMPORT VOID NdisMIndicateStatusEx(NDIS_HANDLE MiniportAdapterHandle,
                                              PNDIS_STATUS_INDICATION StatusIndication);
PVIO_KERNEL_IMPORT VOID NdisMPauseComplete(NDIS_HANDLE MiniportAdapterHandle);

// ntoskrnl: maps an MDL's pages when it is not mapped yet (MmGetSystemAddressForMdlSafe).
PVIO_KERNEL_IMPORT PVOID MmMapLockedPagesSpecifyCache(PMDL Mdl, KPROCESSOR_MODE AccessMode,
                                                      MEMORY_CACHING_TYPE CacheType,
                                                      PVOID RequestedAddress,
                                                      ULONG BugCheckOnFailure, ULONG Priority);

}  // extern "C"

// wdm.h's MmGetSystemAddressForMdlSafe: the mapped address when there is one.
inline PVOID MmGetSystemAddressForMdlSafe(PMDL mdl, ULONG priority) {
  if (mdl->MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL))
    return mdl->MappedSystemVa;
  return MmMapLockedPagesSpecifyCache(mdl, KernelMode, MmCached, nullptr, FALSE, priority);
}
