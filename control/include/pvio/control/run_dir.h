// Where pvio's Dom0 programs and domains meet on one host: the run dir holding the domains'
// control sockets (and the toolstack's sockets, pid files and logs).
#pragma once

#include <string>

#include "pvio/xen/xen.h"

namespace pvio::control {

// $PVIO_RUN_DIR, else $XDG_RUNTIME_DIR/pvio, else /run/pvio. Only names it; callers create it.
std::string run_dir();

// <run dir>/domain-<domid>.sock: where domain `domid` serves the control protocol unless told
// otherwise, and where Dom0 services look for it.
std::string domain_socket_path(domid_t domid);

}  // namespace pvio::control
