// The little a freestanding C++ kernel image needs from a runtime, for the mingw-w64 builds of
// the drivers (there is no CRT in a .sys): the pure-virtual trap.
#include "pvio/wdk/wdm.h"

extern "C" {
PVIO_KERNEL_IMPORT VOID KeBugCheckEx(ULONG BugCheckCode, ULONG_PTR P1, ULONG_PTR P2, ULONG_PTR P3,
                                     ULONG_PTR P4);

// A call through a vtable slot that was never overridden: a driver bug, stop at once.
void __cxa_pure_virtual() {
  KeBugCheckEx(0x000000E2 /* MANUALLY_INITIATED_CRASH */, 0x70766, 0, 0, 0);
  for (;;) {
  }
}
}
