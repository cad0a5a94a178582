// The subset of the Windows kernel's WDM interface (wdm.h) the pvio drivers use: IRQLs, spin
// locks, events, DPCs, pool and contiguous memory, IRPs for IRP_MJ_PNP, and the routines that
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
      BUS_QUERY_ID_TYPE IdType;
    } QueryId;
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

inline constexpr UCHAR IRP_MJ_PNP = 0x1B;
inline constexpr UCHAR IRP_MN_START_DEVICE = 0x00;
inline constexpr UCHAR IRP_MN_REMOVE_DEVICE = 0x02;
inline constexpr UCHAR IRP_MN_QUERY_DEVICE_RELATIONS = 0x07;
inline constexpr UCHAR IRP_MN_QUERY_INTERFACE = 0x08;
inline constexpr UCHAR IRP_MN_QUERY_ID = 0x13;

inline PIO_STACK_LOCATION IoGetNextIrpStackLocation(PIRP irp) {
  return irp->Tail.Overlay.CurrentStackLocation - 1;
}
inline PIO_STACK_LOCATION IoGetCurrentIrpStackLocation(PIRP irp) {
  return irp->Tail.Overlay.CurrentStackLocation;
}

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

// ---- debug output ----
PVIO_KERNEL_IMPORT ULONG DbgPrintEx(ULONG ComponentId, ULONG Level, PCSTR Format, ...);

}  // extern "C"

inline constexpr ULONG DPFLTR_IHVDRIVER_ID = 77;
inline constexpr ULONG DPFLTR_ERROR_LEVEL = 0;
inline constexpr ULONG DPFLTR_WARNING_LEVEL = 1;
inline constexpr ULONG DPFLTR_INFO_LEVEL = 3;
