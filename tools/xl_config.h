// Domain configuration files in xl.cfg syntax (xl.cfg(5)): `key = value` lines with numbers,
// quoted strings and bracketed lists (which may span lines), `#` comments. Parsed into a typed
// description of the domain; every error names the line and the key.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pvio::cli {

// One `disk = [ '...' ]` entry (xl-disk-configuration(5)): comma-separated key=value pairs.
struct DiskConfig {
  std::string target;          // the image file or block device
  std::string vdev = "xvda";   // xvdX or a device number
  std::string access = "rw";   // rw (w) or ro (r)
  std::string format = "raw";  // only raw is served
};

// One `vif = [ '...' ]` entry (xl-network-configuration(5)).
struct VifConfig {
  std::string mac;     // 00:16:3e:xx:xx:xx; generated from the domain id when absent
  std::string bridge;  // the uplink the vif joins
};

enum class OnEvent : std::uint8_t { Destroy, Restart, Preserve };

struct DomainConfigFile {
  std::string name;
  std::uint64_t memory_mib = 128;
  unsigned vcpus = 1;
  std::string kernel;   // set: an HVM/PVH domain run by pvio-hv; empty: a user-mode domain
  std::string cmdline;  // `cmdline` (or xl's older `extra`)
  std::optional<std::uint32_t> domid;  // pvio's own key: a fixed domain id
  std::vector<DiskConfig> disks;
  std::vector<VifConfig> vifs;
  OnEvent on_poweroff = OnEvent::Destroy;
  OnEvent on_reboot = OnEvent::Restart;
  OnEvent on_crash = OnEvent::Destroy;
  std::map<std::string, int> key_lines;  // the line each key was given on, for later errors
};

struct ConfigError {
  int line = 0;     // 1-based; 0 for the file as a whole
  std::string key;  // the key the error is about, if any
  std::string message;
  std::string to_string(const std::string& file) const;
};

// Parses `text`; on failure returns false and fills `err`. `base_dir` resolves relative
// kernel and disk targets (the directory of the file, as xl does).
bool parse_xl_config(std::string_view text, const std::string& base_dir, DomainConfigFile* out,
                     ConfigError* err);

const char* on_event_name(OnEvent e);

}  // namespace pvio::cli
