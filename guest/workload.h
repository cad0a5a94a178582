// The command-line-driven workloads of the test kernel.
#pragma once

#include <stdint.h>

#include "pvio/hv_abi/boot_info.h"

namespace pvio::guest {

// Parses `info->cmdline`, runs what it asks for, prints one PVIO-RESULT line and powers off.
[[noreturn]] void run_command_line(const pvio::hv::BootInfo* info);

}  // namespace pvio::guest
