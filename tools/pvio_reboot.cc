// pvio reboot NAME|N: as pvio shutdown (pvio_shutdown.cc), with "reboot" in control/shutdown;
// the domain's monitor then applies on_reboot (restart by default, as xl).
#include "domain_builder.h"
#include "pvio_cli.h"

namespace pvio::cli {
namespace {
int run(const std::vector<std::string>& args) { return request_shutdown("reboot", args, "reboot"); }
}  // namespace

PVIO_VERB("reboot", "[-w|--wait] [--timeout S] NAME|N",
          "ask a domain to reboot (control/shutdown); -w waits until it is back or gone", run);

}  // namespace pvio::cli
