// Compile-time ABI check for a 64-bit Windows (LLP64) guest, built with mingw-w64: pvio's Xen
// ABI headers must give every struct the x86-64 layout Xen defines, although `long` is 32 bits
// here. The expected figures come from Debian's Xen headers on x86-64 (dump_x86_64.cc).
#include "ours.h"

static_assert(sizeof(long) == 4, "this check is meant for an LLP64 compiler");
static_assert(sizeof(void*) == 8);

#include "abi_x86_64_expected.h"

int main() { return 0; }
