// The subset of the Windows kernel's WDM interface (wdm.h) the pvio drivers use: IRQLs, spin
// locks, events, DPCs, pool and contiguous memory, IRPs for IRP_MJ_PNP and IRP_MJ_POWER, and the
// routines that
// ntoskrnl.exe exports for them. Layouts follow Microsoft's documented x64 definitions; the
// sizes and offsets the documentation fixes are asserted, so the host build of the drivers
// (tests/windows-pv) sees the very same structures as the mingw-w64 build.
//
// On Windows the routines are imported from ntoskrnl.exe; on the host they are implemented by
// the Windows-kernel test environment (tests/windows-pv/env), which enforces their IRQL rules.
#pragma once

#include "pvio/wdk/ntdef.h"

typedef struct _DEVICE_OBJECT DEVICE_OBJECT, *PDEVICE_OBJECT;
typedef struct _DRIVER_OBJECT DRIVER_OBJECT, *PDRIVER_OBJECT;
typedef struct _KINTERRUPT* PKINTERRUPT;
typedef PVOID HANDLE, *PHANDLE;
typedef ULONG ACCESS_MASK;
typedef struct _FILE_OBJECT* PFILE_OBJECT;
typedef struct _MDL* PMDL;
typedef struct _ETHREAD* PETHREAD;
typedef CHAR KPROCESSOR_MODE;
inline constexpr KPROCESSOR_MODE KernelMode = 0;

// ---- dispatcher objects ----
typedef struct _DISPATCHER_HEADER {
  LONG Lock;
  LONG SignalState;
  LIST_ENTRY WaitListHead;
} DISPATCHER_HEADER;
static_assert(sizeof(DISPATCHER_HEADER) == 24);

typedef struct _KEVENT {
  DISPATCHER_HEADER Header;
} KEVENT, *PKEVENT, *PRKEVENT;
static_assert(sizeof(KEVENT) == 24);

typedef enum _EVENT_TYPE { NotificationEvent = 0, SynchronizationEvent = 1 } EVENT_TYPE;
typedef enum _KWAIT_REASON { Executive = 0 } KWAIT_REASON;

// ---- DPCs ----
struct _KDPC;
typedef VOID KDEFERRED_ROUTINE(struct _KDPC* Dpc, PVOID DeferredContext, PVOID SystemArgument1,
                               PVOID SystemArgument2);
typedef KDEFERRED_ROUTINE* PKDEFERRED_ROUTINE;
typedef struct _KDPC {
  UCHAR Type;
  UCHAR Importance;
  volatile USHORT Number;
  PVOID DpcListEntry;  // SINGLE_LIST_ENTRY
  KAFFINITY ProcessorHistory;
  PKDEFERRED_ROUTINE DeferredRoutine;
  PVOID DeferredContext;
  PVOID SystemArgument1;
  PVOID SystemArgument2;
  volatile PVOID DpcData;
} KDPC, *PKDPC, *PRKDPC;
static_assert(sizeof(KDPC) == 64);

// ---- pool and memory ----
typedef enum _POOL_TYPE { NonPagedPool = 0, NonPagedPoolNx = 512 } POOL_TYPE;
typedef enum _MEMORY_CACHING_TYPE { MmNonCached = 0, MmCached = 1, MmWriteCombined = 2 } MEMORY_CACHING_TYPE;

// ---- I/O request packets (IRP_MJ_PNP only) ----
typedef struct _IO_STATUS_BLOCK {
  union {
    NTSTATUS Status;
    PVOID Pointer;
  };
  ULONG_PTR Information;
} IO_STATUS_BLOCK, *PIO_STATUS_BLOCK;
static_assert(sizeof(IO_STATUS_BLOCK) == 16);

typedef VOID INTERFACE_REFERENCE(PVOID Context);
typedef INTERFACE_REFERENCE* PINTERFACE_REFERENCE;
typedef INTERFACE_REFERENCE* PINTERFACE_DEREFERENCE;
typedef struct _INTERFACE {
  USHORT Size;
  USHORT Version;
  PVOID Context;
  PINTERFACE_REFERENCE InterfaceReference;
  PINTERFACE_DEREFERENCE InterfaceDereference;
} INTERFACE, *PINTERFACE;
static_assert(sizeof(INTERFACE) == 32);

typedef enum _DEVICE_RELATION_TYPE { BusRelations = 0, TargetDeviceRelation = 4 } DEVICE_RELATION_TYPE;
typedef enum _BUS_QUERY_ID_TYPE {
  BusQueryDeviceID = 0,
  BusQueryHardwareIDs = 1,
  BusQueryCompatibleIDs = 2,
  BusQueryInstanceID = 3,
} BUS_QUERY_ID_TYPE;

// ---- power (wdm.h / ntpoapi.h): states are numbered as the documentation lists them ----
typedef enum _SYSTEM_POWER_STATE {
  PowerSystemUnspecified = 0,
  PowerSystemWorking = 1,    // S0
  PowerSystemSleeping1 = 2,  // S1
  PowerSystemSleeping2 = 3,  // S2
  PowerSystemSleeping3 = 4,  // S3
  PowerSystemHibernate = 5,  // S4
  PowerSystemShutdown = 6,   // S5
  PowerSystemMaximum = 7,
} SYSTEM_POWER_STATE;
typedef enum _DEVICE_POWER_STATE {
  PowerDeviceUnspecified = 0,
  PowerDeviceD0 = 1,
  PowerDeviceD1 = 2,
  PowerDeviceD2 = 3,
  PowerDeviceD3 = 4,
  PowerDeviceMaximum = 5,
} DEVICE_POWER_STATE;
typedef enum _POWER_STATE_TYPE { SystemPowerState = 0, DevicePowerState = 1 } POWER_STATE_TYPE;
typedef union _POWER_STATE {
  SYSTEM_POWER_STATE SystemState;
  DEVICE_POWER_STATE DeviceState;
} POWER_STATE, *PPOWER_STATE;
static_assert(sizeof(POWER_STATE) == 4);
typedef enum _POWER_ACTION {
  PowerActionNone = 0,
  PowerActionReserved = 1,
  PowerActionSleep = 2,
  PowerActionHibernate = 3,
  PowerActionShutdown = 4,
  PowerActionShutdownReset = 5,
  PowerActionShutdownOff = 6,
  PowerActionWarmEject = 7,
  PowerActionDisplayOff = 8,
} POWER_ACTION;

struct _IRP;
typedef NTSTATUS IO_COMPLETION_ROUTINE(PDEVICE_OBJECT DeviceObject, struct _IRP* Irp,
                                       PVOID Context);
typedef IO_COMPLETION_ROUTINE* PIO_COMPLETION_ROUTINE;

typedef struct _IO_STACK_LOCATION {
  UCHAR MajorFunction;
  UCHAR MinorFunction;
  UCHAR Flags;
  UCHAR Control;
  union {
    struct {
      const GUID* InterfaceType;
      USHORT Size;
      USHORT Version;
      PINTERFACE Interface;
      PVOID InterfaceSpecificData;
    } QueryInterface;
    struct {
      DEVICE_RELATION_TYPE Type;
    } QueryDeviceRelations;
    struct {
      struct _DEVICE_CAPABILITIES* Capabilities;
    } DeviceCapabilities;
    struct {
      struct _CM_RESOURCE_LIST* AllocatedResources;
      struct _CM_RESOURCE_LIST* AllocatedResourcesTranslated;
    } StartDevice;
    struct {
      BUS_QUERY_ID_TYPE IdType;
    } QueryId;
    // IRP_MJ_POWER. SystemContext is a union with SYSTEM_POWER_STATE_CONTEXT (one ULONG); the
    // other members are POINTER_ALIGNMENT (8 on x64) in the documented declaration.
    struct {
      ULONG SystemContext;
      alignas(8) POWER_STATE_TYPE Type;
      alignas(8) POWER_STATE State;
      alignas(8) POWER_ACTION ShutdownType;
    } Power;
    struct {
      SYSTEM_POWER_STATE PowerState;
    } WaitWake;
    struct {
      PVOID PowerSequence;  // PPOWER_SEQUENCE
    } PowerSequence;
    struct {
      PVOID Argument1;
      PVOID Argument2;
      PVOID Argument3;
      PVOID Argument4;
    } Others;
  } Parameters;
  PDEVICE_OBJECT DeviceObject;
  PFILE_OBJECT FileObject;
  PIO_COMPLETION_ROUTINE CompletionRoutine;
  PVOID Context;
} IO_STACK_LOCATION, *PIO_STACK_LOCATION;
static_assert(offsetof(IO_STACK_LOCATION, Parameters) == 8);
static_assert(offsetof(IO_STACK_LOCATION, DeviceObject) == 0x28);
static_assert(sizeof(IO_STACK_LOCATION) == 0x48);
// Parameters.Power: 32-bit members, each but the first on an 8-byte boundary.
static_assert(offsetof(IO_STACK_LOCATION, Parameters.Power.Type) == 0x10);
static_assert(offsetof(IO_STACK_LOCATION, Parameters.Power.State) == 0x18);
static_assert(offsetof(IO_STACK_LOCATION, Parameters.Power.ShutdownType) == 0x20);

typedef struct _IRP {
  SHORT Type;
  USHORT Size;
  USHORT AllocationProcessorNumber;
  USHORT Reserved;
  PMDL MdlAddress;
  ULONG Flags;
  union {
    struct _IRP* MasterIrp;
    LONG IrpCount;
    PVOID SystemBuffer;
  } AssociatedIrp;
  LIST_ENTRY ThreadListEntry;
  IO_STATUS_BLOCK IoStatus;
  KPROCESSOR_MODE RequestorMode;
  BOOLEAN PendingReturned;
  CHAR StackCount;
  CHAR CurrentLocation;
  BOOLEAN Cancel;
  KIRQL CancelIrql;
  CHAR ApcEnvironment;
  UCHAR AllocationFlags;
  PIO_STATUS_BLOCK UserIosb;
  PKEVENT UserEvent;
  union {
    struct {
      PVOID UserApcRoutine;
      PVOID UserApcContext;
    } AsynchronousParameters;
    LARGE_INTEGER AllocationSize;
  } Overlay;
  PVOID CancelRoutine;
  PVOID UserBuffer;
  union {
    struct {
      PVOID DriverContext[4];
      PETHREAD Thread;
      PCHAR AuxiliaryBuffer;
      LIST_ENTRY ListEntry;
      PIO_STACK_LOCATION CurrentStackLocation;
      PFILE_OBJECT OriginalFileObject;
    } Overlay;
    UCHAR Apc[0x58];  // KAPC
    PVOID CompletionKey;
  } Tail;
} IRP, *PIRP;
static_assert(offsetof(IRP, IoStatus) == 0x30);
static_assert(offsetof(IRP, Tail) == 0x78);
static_assert(offsetof(IRP, Tail.Overlay.CurrentStackLocation) == 0xB8);
static_assert(sizeof(IRP) == 0xD0);

inline constexpr UCHAR IRP_MJ_POWER = 0x16;
inline constexpr UCHAR IRP_MJ_PNP = 0x1B;
inline constexpr UCHAR IRP_MJ_MAXIMUM_FUNCTION = 0x1B;
inline constexpr UCHAR IRP_MN_START_DEVICE = 0x00;
inline constexpr UCHAR IRP_MN_QUERY_REMOVE_DEVICE = 0x01;
inline constexpr UCHAR IRP_MN_REMOVE_DEVICE = 0x02;
inline constexpr UCHAR IRP_MN_CANCEL_REMOVE_DEVICE = 0x03;
inline constexpr UCHAR IRP_MN_STOP_DEVICE = 0x04;
inline constexpr UCHAR IRP_MN_QUERY_DEVICE_RELATIONS = 0x07;
inline constexpr UCHAR IRP_MN_QUERY_INTERFACE = 0x08;
inline constexpr UCHAR IRP_MN_QUERY_CAPABILITIES = 0x09;
inline constexpr UCHAR IRP_MN_QUERY_ID = 0x13;
inline constexpr UCHAR IRP_MN_SURPRISE_REMOVAL = 0x17;
// IRP_MJ_POWER minor functions.
inline constexpr UCHAR IRP_MN_WAIT_WAKE = 0x00;
inline constexpr UCHAR IRP_MN_POWER_SEQUENCE = 0x01;
inline constexpr UCHAR IRP_MN_SET_POWER = 0x02;
inline constexpr UCHAR IRP_MN_QUERY_POWER = 0x03;

inline constexpr UCHAR SL_PENDING_RETURNED = 0x01;
inline constexpr UCHAR SL_INVOKE_ON_CANCEL = 0x20;
inline constexpr UCHAR SL_INVOKE_ON_SUCCESS = 0x40;
inline constexpr UCHAR SL_INVOKE_ON_ERROR = 0x80;

inline PIO_STACK_LOCATION IoGetNextIrpStackLocation(PIRP irp) {
  return irp->Tail.Overlay.CurrentStackLocation - 1;
}
inline PIO_STACK_LOCATION IoGetCurrentIrpStackLocation(PIRP irp) {
  return irp->Tail.Overlay.CurrentStackLocation;
}
// The dispatch routine will return STATUS_PENDING and complete the IRP later.
inline VOID IoMarkIrpPending(PIRP irp) { IoGetCurrentIrpStackLocation(irp)->Control |= SL_PENDING_RETURNED; }
// The next driver gets this driver's stack location as it is (wdm.h macros, as functions).
inline VOID IoSkipCurrentIrpStackLocation(PIRP irp) {
  ++irp->CurrentLocation;
  ++irp->Tail.Overlay.CurrentStackLocation;
}
inline VOID IoCopyCurrentIrpStackLocationToNext(PIRP irp) {
  PIO_STACK_LOCATION cur = IoGetCurrentIrpStackLocation(irp);
  PIO_STACK_LOCATION next = IoGetNextIrpStackLocation(irp);
  // Everything up to CompletionRoutine; the completion routine is this driver's own.
  __builtin_memcpy(next, cur, offsetof(IO_STACK_LOCATION, CompletionRoutine));
  next->Control = 0;
}
inline VOID IoSetCompletionRoutine(PIRP irp, PIO_COMPLETION_ROUTINE routine, PVOID context,
                                   BOOLEAN on_success, BOOLEAN on_error, BOOLEAN on_cancel) {
  PIO_STACK_LOCATION next = IoGetNextIrpStackLocation(irp);
  next->CompletionRoutine = routine;
  next->Context = context;
  next->Control = 0;
  if (on_success) next->Control |= SL_INVOKE_ON_SUCCESS;
  if (on_error) next->Control |= SL_INVOKE_ON_ERROR;
  if (on_cancel) next->Control |= SL_INVOKE_ON_CANCEL;
}

// ---- driver and device objects ----
typedef NTSTATUS DRIVER_DISPATCH(PDEVICE_OBJECT DeviceObject, PIRP Irp);
typedef DRIVER_DISPATCH* PDRIVER_DISPATCH;
typedef NTSTATUS DRIVER_ADD_DEVICE(PDRIVER_OBJECT DriverObject, PDEVICE_OBJECT PhysicalDeviceObject);
typedef VOID DRIVER_UNLOAD(PDRIVER_OBJECT DriverObject);

typedef struct _DRIVER_EXTENSION {
  PDRIVER_OBJECT DriverObject;
  DRIVER_ADD_DEVICE* AddDevice;
  ULONG Count;
  UNICODE_STRING ServiceKeyName;
} DRIVER_EXTENSION, *PDRIVER_EXTENSION;

struct _DRIVER_OBJECT {
  SHORT Type;
  SHORT Size;
  PDEVICE_OBJECT DeviceObject;
  ULONG Flags;
  PVOID DriverStart;
  ULONG DriverSize;
  PVOID DriverSection;
  PDRIVER_EXTENSION DriverExtension;
  UNICODE_STRING DriverName;
  PUNICODE_STRING HardwareDatabase;
  PVOID FastIoDispatch;
  PVOID DriverInit;
  PVOID DriverStartIo;
  DRIVER_UNLOAD* DriverUnload;
  PDRIVER_DISPATCH MajorFunction[IRP_MJ_MAXIMUM_FUNCTION + 1];
};
static_assert(offsetof(DRIVER_OBJECT, DriverExtension) == 0x30);
static_assert(offsetof(DRIVER_OBJECT, DriverUnload) == 0x68);
static_assert(offsetof(DRIVER_OBJECT, MajorFunction) == 0x70);
static_assert(sizeof(DRIVER_OBJECT) == 0x150);

// Only the fields drivers touch are named; the rest keeps Microsoft's x64 layout as padding.
struct _DEVICE_OBJECT {
  SHORT Type;
  USHORT Size;
  LONG ReferenceCount;
  PDRIVER_OBJECT DriverObject;
  PDEVICE_OBJECT NextDevice;
  PDEVICE_OBJECT AttachedDevice;
  PIRP CurrentIrp;
  PVOID Timer;
  ULONG Flags;
  ULONG Characteristics;
  PVOID Vpb;
  PVOID DeviceExtension;
  ULONG DeviceType;
  CHAR StackSize;
  UCHAR Opaque[0x150 - 0x4D];
};
static_assert(offsetof(DEVICE_OBJECT, Flags) == 0x30);
static_assert(offsetof(DEVICE_OBJECT, DeviceExtension) == 0x40);
static_assert(offsetof(DEVICE_OBJECT, StackSize) == 0x4C);
static_assert(sizeof(DEVICE_OBJECT) == 0x150);

inline constexpr ULONG DO_BUFFERED_IO = 0x00000004;
inline constexpr ULONG DO_DEVICE_INITIALIZING = 0x00000080;
inline constexpr ULONG DO_BUS_ENUMERATED_DEVICE = 0x00001000;
inline constexpr ULONG DO_POWER_PAGABLE = 0x00002000;
inline constexpr ULONG FILE_DEVICE_BUS_EXTENDER = 0x0000002A;
inline constexpr ULONG FILE_DEVICE_UNKNOWN = 0x00000022;
inline constexpr ULONG FILE_DEVICE_SECURE_OPEN = 0x00000100;
inline constexpr ULONG FILE_AUTOGENERATED_DEVICE_NAME = 0x00000080;

typedef struct _DEVICE_RELATIONS {
  ULONG Count;
  PDEVICE_OBJECT Objects[1];
} DEVICE_RELATIONS, *PDEVICE_RELATIONS;
static_assert(offsetof(DEVICE_RELATIONS, Objects) == 8);

typedef struct _DEVICE_CAPABILITIES {
  USHORT Size;
  USHORT Version;
  ULONG Flags;  // DeviceD1:1 DeviceD2:1 LockSupported:1 EjectSupported:1 Removable:1 ...
  ULONG Address;
  ULONG UINumber;
  ULONG DeviceState[7];  // DEVICE_POWER_STATE per system power state
  ULONG SystemWake;
  ULONG DeviceWake;
  ULONG D1Latency;
  ULONG D2Latency;
  ULONG D3Latency;
} DEVICE_CAPABILITIES, *PDEVICE_CAPABILITIES;
static_assert(sizeof(DEVICE_CAPABILITIES) == 64);
// Bit positions in DEVICE_CAPABILITIES' bit-field word (wdm.h order).
inline constexpr ULONG DEVCAP_REMOVABLE = 1u << 4;
inline constexpr ULONG DEVCAP_UNIQUE_ID = 1u << 6;
inline constexpr ULONG DEVCAP_SILENT_INSTALL = 1u << 7;
inline constexpr ULONG DEVCAP_SURPRISE_REMOVAL_OK = 1u << 11;

// ---- hardware resources (START_DEVICE) ----
inline constexpr UCHAR CmResourceTypeInterrupt = 2;
inline constexpr USHORT CM_RESOURCE_INTERRUPT_LATCHED = 1;
inline constexpr UCHAR CmResourceShareShared = 3;
#pragma pack(push, 4)
typedef struct _CM_PARTIAL_RESOURCE_DESCRIPTOR {
  UCHAR Type;
  UCHAR ShareDisposition;
  USHORT Flags;
  union {
    struct {
      USHORT Level;
      USHORT Group;
      ULONG Vector;
      KAFFINITY Affinity;
    } Interrupt;
    struct {
      PHYSICAL_ADDRESS Start;
      ULONG Length;
    } Generic;
  } u;
} CM_PARTIAL_RESOURCE_DESCRIPTOR, *PCM_PARTIAL_RESOURCE_DESCRIPTOR;
#pragma pack(pop)
static_assert(sizeof(CM_PARTIAL_RESOURCE_DESCRIPTOR) == 20);
typedef struct _CM_PARTIAL_RESOURCE_LIST {
  USHORT Version;
  USHORT Revision;
  ULONG Count;
  CM_PARTIAL_RESOURCE_DESCRIPTOR PartialDescriptors[1];
} CM_PARTIAL_RESOURCE_LIST;
typedef struct _CM_FULL_RESOURCE_DESCRIPTOR {
  LONG InterfaceType;
  ULONG BusNumber;
  CM_PARTIAL_RESOURCE_LIST PartialResourceList;
} CM_FULL_RESOURCE_DESCRIPTOR;
typedef struct _CM_RESOURCE_LIST {
  ULONG Count;
  CM_FULL_RESOURCE_DESCRIPTOR List[1];
} CM_RESOURCE_LIST, *PCM_RESOURCE_LIST;
static_assert(sizeof(CM_FULL_RESOURCE_DESCRIPTOR) == 36);

typedef enum _KINTERRUPT_MODE { LevelSensitive = 0, Latched = 1 } KINTERRUPT_MODE;
typedef BOOLEAN KSERVICE_ROUTINE(PKINTERRUPT Interrupt, PVOID ServiceContext);

typedef enum _DEVICE_REGISTRY_PROPERTY {
  DevicePropertyBusNumber = 14,
  DevicePropertyAddress = 16,
} DEVICE_REGISTRY_PROPERTY;

typedef BOOLEAN KSYNCHRONIZE_ROUTINE(PVOID SynchronizeContext);
// PoRequestPowerIrp's callback, called once the requested IRP has completed.
typedef VOID REQUEST_POWER_COMPLETE(PDEVICE_OBJECT DeviceObject, UCHAR MinorFunction,
                                    POWER_STATE PowerState, PVOID Context,
                                    PIO_STATUS_BLOCK IoStatus);

typedef VOID KSTART_ROUTINE(PVOID StartContext);
inline constexpr ULONG THREAD_ALL_ACCESS = 0x001FFFFF;

extern "C" {

// ---- IRQL ----
#if PVIO_WDK_TARGET_WINDOWS
// x64: the IRQL is CR8 (KeGetCurrentIrql is an intrinsic, not an export).
inline KIRQL KeGetCurrentIrql() {
  ULONG64 v;
  __asm__ volatile("mov %%cr8, %0" : "=r"(v));
  return static_cast<KIRQL>(v);
}
#else
KIRQL KeGetCurrentIrql();
#endif

// ---- spin locks (<= DISPATCH_LEVEL) ----
PVIO_KERNEL_IMPORT KIRQL KeAcquireSpinLockRaiseToDpc(PKSPIN_LOCK SpinLock);
PVIO_KERNEL_IMPORT VOID KeReleaseSpinLock(PKSPIN_LOCK SpinLock, KIRQL NewIrql);
inline VOID KeInitializeSpinLock(PKSPIN_LOCK SpinLock) { *SpinLock = 0; }

// ---- events ----
PVIO_KERNEL_IMPORT VOID KeInitializeEvent(PRKEVENT Event, EVENT_TYPE Type, BOOLEAN State);
PVIO_KERNEL_IMPORT LONG KeSetEvent(PRKEVENT Event, LONG Increment, BOOLEAN Wait);
PVIO_KERNEL_IMPORT VOID KeClearEvent(PRKEVENT Event);
// A non-zero timeout needs IRQL <= APC_LEVEL; Timeout in 100 ns units, negative = relative.
PVIO_KERNEL_IMPORT NTSTATUS KeWaitForSingleObject(PVOID Object, KWAIT_REASON WaitReason,
                                                  KPROCESSOR_MODE WaitMode, BOOLEAN Alertable,
                                                  PLARGE_INTEGER Timeout);

// ---- pool: NonPagedPoolNx <= DISPATCH_LEVEL ----
PVIO_KERNEL_IMPORT PVOID ExAllocatePoolWithTag(POOL_TYPE PoolType, SIZE_T NumberOfBytes, ULONG Tag);
PVIO_KERNEL_IMPORT VOID ExFreePoolWithTag(PVOID P, ULONG Tag);

// ---- physically contiguous memory: PASSIVE_LEVEL only ----
PVIO_KERNEL_IMPORT PVOID MmAllocateContiguousMemorySpecifyCache(SIZE_T NumberOfBytes,
                                                                PHYSICAL_ADDRESS LowestAcceptableAddress,
                                                                PHYSICAL_ADDRESS HighestAcceptableAddress,
                                                                PHYSICAL_ADDRESS BoundaryAddressMultiple,
                                                                MEMORY_CACHING_TYPE CacheType);
PVIO_KERNEL_IMPORT VOID MmFreeContiguousMemory(PVOID BaseAddress);
PVIO_KERNEL_IMPORT PHYSICAL_ADDRESS MmGetPhysicalAddress(PVOID BaseAddress);

// ---- IRPs ----
PVIO_KERNEL_IMPORT PIRP IoBuildSynchronousFsdRequest(ULONG MajorFunction, PDEVICE_OBJECT DeviceObject,
                                                     PVOID Buffer, ULONG Length,
                                                     PLARGE_INTEGER StartingOffset, PKEVENT Event,
                                                     PIO_STATUS_BLOCK IoStatusBlock);
PVIO_KERNEL_IMPORT NTSTATUS IofCallDriver(PDEVICE_OBJECT DeviceObject, PIRP Irp);
PVIO_KERNEL_IMPORT VOID IofCompleteRequest(PIRP Irp, CCHAR PriorityBoost);
inline VOID IoCompleteRequest(PIRP Irp, CCHAR PriorityBoost) { IofCompleteRequest(Irp, PriorityBoost); }
inline constexpr CCHAR IO_NO_INCREMENT = 0;

// ---- power IRPs ----
// Passes a power IRP to the next driver (<= DISPATCH_LEVEL). Since Windows Vista IoCallDriver
// would do as well; PoStartNextPowerIrp is a no-op there and is not used (the images require
// Windows 7 or later).
PVIO_KERNEL_IMPORT NTSTATUS PoCallDriver(PDEVICE_OBJECT DeviceObject, PIRP Irp);
// Tells the power manager the device's new state; returns the previous one.
PVIO_KERNEL_IMPORT POWER_STATE PoSetPowerState(PDEVICE_OBJECT DeviceObject, POWER_STATE_TYPE Type,
                                               POWER_STATE State);
// A device power IRP (SET_POWER, QUERY_POWER or WAIT_WAKE) sent by the power manager to the top
// of DeviceObject's stack; CompletionFunction runs when it completed. <= DISPATCH_LEVEL.
PVIO_KERNEL_IMPORT NTSTATUS PoRequestPowerIrp(PDEVICE_OBJECT DeviceObject, UCHAR MinorFunction,
                                              POWER_STATE PowerState,
                                              REQUEST_POWER_COMPLETE* CompletionFunction,
                                              PVOID Context, PIRP* Irp);

// ---- devices (PASSIVE_LEVEL) ----
PVIO_KERNEL_IMPORT NTSTATUS IoCreateDevice(PDRIVER_OBJECT DriverObject, ULONG DeviceExtensionSize,
                                           PUNICODE_STRING DeviceName, ULONG DeviceType,
                                           ULONG DeviceCharacteristics, BOOLEAN Exclusive,
                                           PDEVICE_OBJECT* DeviceObject);
PVIO_KERNEL_IMPORT VOID IoDeleteDevice(PDEVICE_OBJECT DeviceObject);
PVIO_KERNEL_IMPORT PDEVICE_OBJECT IoAttachDeviceToDeviceStack(PDEVICE_OBJECT SourceDevice,
                                                              PDEVICE_OBJECT TargetDevice);
PVIO_KERNEL_IMPORT VOID IoDetachDevice(PDEVICE_OBJECT TargetDevice);
PVIO_KERNEL_IMPORT NTSTATUS IoGetDeviceProperty(PDEVICE_OBJECT DeviceObject,
                                                DEVICE_REGISTRY_PROPERTY DeviceProperty,
                                                ULONG BufferLength, PVOID PropertyBuffer,
                                                PULONG ResultLength);
// <= DISPATCH_LEVEL.
PVIO_KERNEL_IMPORT VOID IoInvalidateDeviceRelations(PDEVICE_OBJECT DeviceObject,
                                                    DEVICE_RELATION_TYPE Type);
PVIO_KERNEL_IMPORT VOID ObfReferenceObject(PVOID Object);
PVIO_KERNEL_IMPORT VOID ObfDereferenceObject(PVOID Object);

// ---- interrupts and DPCs ----
PVIO_KERNEL_IMPORT NTSTATUS IoConnectInterrupt(PKINTERRUPT* InterruptObject,
                                               KSERVICE_ROUTINE* ServiceRoutine,
                                               PVOID ServiceContext, PKSPIN_LOCK SpinLock,
                                               ULONG Vector, KIRQL Irql, KIRQL SynchronizeIrql,
                                               KINTERRUPT_MODE InterruptMode, BOOLEAN ShareVector,
                                               KAFFINITY ProcessorEnableMask, BOOLEAN FloatingSave);
PVIO_KERNEL_IMPORT VOID IoDisconnectInterrupt(PKINTERRUPT InterruptObject);
// Runs the routine at the interrupt's DIRQL holding its spin lock: no ISR of it runs meanwhile.
PVIO_KERNEL_IMPORT BOOLEAN KeSynchronizeExecution(PKINTERRUPT Interrupt,
                                                  KSYNCHRONIZE_ROUTINE* SynchronizeRoutine,
                                                  PVOID SynchronizeContext);
PVIO_KERNEL_IMPORT VOID KeInitializeDpc(PRKDPC Dpc, PKDEFERRED_ROUTINE DeferredRoutine,
                                        PVOID DeferredContext);
PVIO_KERNEL_IMPORT BOOLEAN KeInsertQueueDpc(PRKDPC Dpc, PVOID SystemArgument1, PVOID SystemArgument2);
PVIO_KERNEL_IMPORT BOOLEAN KeRemoveQueueDpc(PRKDPC Dpc);
PVIO_KERNEL_IMPORT VOID KeFlushQueuedDpcs();

// ---- system threads (PASSIVE_LEVEL) ----
PVIO_KERNEL_IMPORT NTSTATUS PsCreateSystemThread(PHANDLE ThreadHandle, ULONG DesiredAccess,
                                                 PVOID ObjectAttributes, HANDLE ProcessHandle,
                                                 PVOID ClientId, KSTART_ROUTINE* StartRoutine,
                                                 PVOID StartContext);
PVIO_KERNEL_IMPORT NTSTATUS PsTerminateSystemThread(NTSTATUS ExitStatus);
PVIO_KERNEL_IMPORT PETHREAD PsGetCurrentThread();
PVIO_KERNEL_IMPORT NTSTATUS ObReferenceObjectByHandle(HANDLE Handle, ACCESS_MASK DesiredAccess,
                                                      PVOID ObjectType, KPROCESSOR_MODE AccessMode,
                                                      PVOID* Object, PVOID HandleInformation);
PVIO_KERNEL_IMPORT NTSTATUS ZwClose(HANDLE Handle);

// ---- I/O space and the registry (used by xenbus's Windows-only hardware side) ----
PVIO_KERNEL_IMPORT PVOID MmMapIoSpace(PHYSICAL_ADDRESS PhysicalAddress, SIZE_T NumberOfBytes,
                                      MEMORY_CACHING_TYPE CacheType);
PVIO_KERNEL_IMPORT VOID MmUnmapIoSpace(PVOID BaseAddress, SIZE_T NumberOfBytes);
typedef struct _OBJECT_ATTRIBUTES {
  ULONG Length;
  HANDLE RootDirectory;
  PUNICODE_STRING ObjectName;
  ULONG Attributes;
  PVOID SecurityDescriptor;
  PVOID SecurityQualityOfService;
} OBJECT_ATTRIBUTES, *POBJECT_ATTRIBUTES;
static_assert(sizeof(OBJECT_ATTRIBUTES) == 48);
inline constexpr ULONG OBJ_CASE_INSENSITIVE = 0x40;
inline constexpr ULONG OBJ_KERNEL_HANDLE = 0x200;
inline constexpr ACCESS_MASK KEY_READ = 0x20019;
typedef struct _KEY_VALUE_PARTIAL_INFORMATION {
  ULONG TitleIndex;
  ULONG Type;
  ULONG DataLength;
  UCHAR Data[1];
} KEY_VALUE_PARTIAL_INFORMATION;
inline constexpr ULONG KeyValuePartialInformation = 2;
inline constexpr ULONG REG_DWORD = 4;
PVIO_KERNEL_IMPORT NTSTATUS ZwOpenKey(PHANDLE KeyHandle, ACCESS_MASK DesiredAccess,
                                      POBJECT_ATTRIBUTES ObjectAttributes);
PVIO_KERNEL_IMPORT NTSTATUS ZwQueryValueKey(HANDLE KeyHandle, PUNICODE_STRING ValueName,
                                            ULONG KeyValueInformationClass,
                                            PVOID KeyValueInformation, ULONG Length,
                                            PULONG ResultLength);

// ---- debug output ----
PVIO_KERNEL_IMPORT ULONG DbgPrintEx(ULONG ComponentId, ULONG Level, PCSTR Format, ...);

}  // extern "C"

inline constexpr ULONG DPFLTR_IHVDRIVER_ID = 77;
inline constexpr ULONG DPFLTR_ERROR_LEVEL = 0;
inline constexpr ULONG DPFLTR_WARNING_LEVEL = 1;
inline constexpr ULONG DPFLTR_INFO_LEVEL = 3;
