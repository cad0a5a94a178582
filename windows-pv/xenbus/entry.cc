// xenbus.sys's entry point (Windows build only: the host tests call xenbus_driver_entry, as
// another driver's DriverEntry lives in the same test process).
#include "bus.h"

extern "C" NTSTATUS DriverEntry(PDRIVER_OBJECT driver, PUNICODE_STRING) {
  return pvio::windows::xenbus::xenbus_driver_entry(driver);
}
