// pvio network-attach N [mac=MAC] [uplink=NAME] [devid=ID]: give domain N a virtual network
// interface, writing the backend and frontend vif nodes as xl network-attach does, which
// pvio-netback (and Linux's xen-netback/netfront) pick up. Arguments in xl's key=value form.
#include <cstdio>

#include "pvio_cli.h"

namespace pvio::cli {
namespace {

using xs::XsError;

int run(const std::vector<std::string>& args) {
  std::string bad;
  auto o = parse_options(args, {}, {}, &bad);
  domid_t domid = 0;
  const char* usage = "usage: pvio network-attach N [mac=MAC] [uplink=NAME] [devid=ID]";
  if (!o || o->positional.empty() || !parse_domid(o->positional[0], &domid))
    return fail("network-attach", usage);
  VifSpec vif;
  bool have_devid = false;
  for (std::size_t i = 1; i < o->positional.size(); ++i) {
    const std::string& a = o->positional[i];
    const auto eq = a.find('=');
    if (eq == std::string::npos) return fail("network-attach", usage);
    const std::string k = a.substr(0, eq), v = a.substr(eq + 1);
    uint64_t n = 0;
    if (k == "mac") {
      if (!parse_mac(v, &vif.mac)) return fail("network-attach", "bad mac " + v);
    } else if (k == "uplink" && !v.empty()) {
      vif.uplink = v;
    } else if (k == "devid" && parse_uint(v, &n) && n <= 0xFFFF) {
      vif.devid = static_cast<uint32_t>(n);
      have_devid = true;
    } else {
      return fail("network-attach", usage);
    }
  }
  if (vif.mac.empty()) vif.mac = random_mac();

  auto xs = connect_xenstore("network-attach");
  if (!xs) return 1;
  const std::string d = std::to_string(domid);
  const std::string home = "/local/domain/" + d;
  if (!xs->read(home + "/domid").ok()) return fail("network-attach", "no domain " + d);
  auto taken = [&](uint32_t id) {
    return xs->read(home + "/device/vif/" + std::to_string(id) + "/backend").ok() ||
           xs->read("/local/domain/0/backend/vif/" + d + "/" + std::to_string(id) + "/frontend")
               .ok();
  };
  if (!have_devid) {
    while (taken(vif.devid) && vif.devid < 0xFFFF) ++vif.devid;  // the first free, as xl
  } else if (taken(vif.devid)) {
    return fail("network-attach", "domain " + d + " already has vif " + std::to_string(vif.devid));
  }
  const XsError e = write_vif(*xs, domid, vif);
  if (e != XsError::None) return fail("network-attach", std::string("xenstore: ") + xs::xs_error_name(e));
  std::printf("vif %u for domain %s: mac %s%s%s\n", vif.devid, d.c_str(), vif.mac.c_str(),
              vif.uplink.empty() ? "" : ", uplink ", vif.uplink.c_str());
  return 0;
}

}  // namespace

PVIO_VERB("network-attach", "N [mac=MAC] [uplink=NAME] [devid=ID]",
          "give domain N a virtual network interface", run);

}  // namespace pvio::cli
