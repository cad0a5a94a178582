// The run-dir rule, in one place for every program that names a socket in it.
#include "pvio/control/run_dir.h"

#include <cstdlib>

namespace pvio::control {

std::string run_dir() {
  if (const char* r = std::getenv("PVIO_RUN_DIR"); r != nullptr && *r != '\0') return r;
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x != nullptr && *x != '\0')
    return std::string(x) + "/pvio";
  return "/run/pvio";
}

std::string domain_socket_path(domid_t domid) {
  return run_dir() + "/domain-" + std::to_string(domid) + ".sock";
}

}  // namespace pvio::control
