// Base types of the Windows kernel (ntdef.h / wdm.h), written from Microsoft's documented
// definitions with fixed-width types, so the same declarations hold for the drivers built with
// mingw-w64 (LLP64) and for their Linux host build in tests/windows-pv (LP64, where `long` is 64
// bits: no `long` appears here). Only what the pvio drivers use.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(_WIN64)
#define PVIO_WDK_TARGET_WINDOWS 1
#define PVIO_KERNEL_IMPORT __declspec(dllimport)
#else
#define PVIO_WDK_TARGET_WINDOWS 0
#define PVIO_KERNEL_IMPORT
#endif

typedef void VOID;
typedef void* PVOID;
typedef std::uint8_t UCHAR, *PUCHAR;
typedef std::uint8_t BOOLEAN, *PBOOLEAN;
typedef char CHAR, *PCHAR, CCHAR;
typedef const char* PCSTR;
typedef std::uint16_t USHORT, *PUSHORT;
typedef std::int16_t SHORT;
typedef std::uint16_t WCHAR, *PWCH, *PWSTR;
typedef std::uint32_t ULONG, *PULONG;
typedef std::int32_t LONG, *PLONG;
typedef std::uint64_t ULONG64, ULONGLONG, *PULONG64;
typedef std::int64_t LONG64, LONGLONG;
typedef std::uintptr_t ULONG_PTR, SIZE_T, KAFFINITY;
typedef std::intptr_t LONG_PTR;
typedef LONG NTSTATUS;
typedef UCHAR KIRQL, *PKIRQL;
typedef ULONG_PTR KSPIN_LOCK, *PKSPIN_LOCK;

inline constexpr BOOLEAN TRUE = 1;
inline constexpr BOOLEAN FALSE = 0;

typedef union _LARGE_INTEGER {
  struct {
    ULONG LowPart;
    LONG HighPart;
  } u;
  LONGLONG QuadPart;
} LARGE_INTEGER, *PLARGE_INTEGER, PHYSICAL_ADDRESS, *PPHYSICAL_ADDRESS;
static_assert(sizeof(LARGE_INTEGER) == 8);

typedef struct _LIST_ENTRY {
  struct _LIST_ENTRY* Flink;
  struct _LIST_ENTRY* Blink;
} LIST_ENTRY, *PLIST_ENTRY;

typedef struct _UNICODE_STRING {
  USHORT Length;
  USHORT MaximumLength;
  PWSTR Buffer;
} UNICODE_STRING, *PUNICODE_STRING;
static_assert(sizeof(UNICODE_STRING) == 16);

typedef struct _GUID {
  ULONG Data1;
  USHORT Data2;
  USHORT Data3;
  UCHAR Data4[8];
} GUID;
static_assert(sizeof(GUID) == 16);
inline bool operator==(const GUID& a, const GUID& b) {
  if (a.Data1 != b.Data1 || a.Data2 != b.Data2 || a.Data3 != b.Data3) return false;
  for (int i = 0; i < 8; ++i)
    if (a.Data4[i] != b.Data4[i]) return false;
  return true;
}

// NTSTATUS values (ntstatus.h).
inline constexpr NTSTATUS STATUS_SUCCESS = 0;
inline constexpr NTSTATUS STATUS_PENDING = 0x00000103;
inline constexpr NTSTATUS STATUS_TIMEOUT = 0x00000102;
inline constexpr NTSTATUS STATUS_MORE_PROCESSING_REQUIRED = static_cast<NTSTATUS>(0xC0000016u);
inline constexpr NTSTATUS STATUS_UNSUCCESSFUL = static_cast<NTSTATUS>(0xC0000001u);
inline constexpr NTSTATUS STATUS_NOT_IMPLEMENTED = static_cast<NTSTATUS>(0xC0000002u);
inline constexpr NTSTATUS STATUS_INVALID_PARAMETER = static_cast<NTSTATUS>(0xC000000Du);
inline constexpr NTSTATUS STATUS_NO_SUCH_DEVICE = static_cast<NTSTATUS>(0xC000000Eu);
inline constexpr NTSTATUS STATUS_INSUFFICIENT_RESOURCES = static_cast<NTSTATUS>(0xC000009Au);
inline constexpr NTSTATUS STATUS_NOT_SUPPORTED = static_cast<NTSTATUS>(0xC00000BBu);
inline constexpr NTSTATUS STATUS_DEVICE_NOT_READY = static_cast<NTSTATUS>(0xC00000A3u);
inline constexpr bool NT_SUCCESS(NTSTATUS s) { return s >= 0; }

// IRQLs (wdm.h, x64).
inline constexpr KIRQL PASSIVE_LEVEL = 0;
inline constexpr KIRQL APC_LEVEL = 1;
inline constexpr KIRQL DISPATCH_LEVEL = 2;
