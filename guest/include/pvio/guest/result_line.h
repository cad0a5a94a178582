// Reading, on the host, what a run of the test guest reports: its one-line JSON results
// (PVIO-RESULT {...} on the serial console) and pvio-hv's (PVIO-HV-STATS {...} on stderr).
// Hosted C++ (std::string); the guest itself never includes it.
#pragma once

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace pvio::guest {

// The contents of the file at `path` (a serial log, a captured stderr); "" if unreadable.
inline std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// The first line of `text` that contains `prefix`, from `prefix` to the line's end, or "".
inline std::string report_line(const std::string& text, const std::string& prefix) {
  const auto p = text.find(prefix);
  if (p == std::string::npos) return "";
  return text.substr(p, text.find('\n', p) - p);
}

// The number after "key": in `json` from position `from`, or -1.
inline long long json_number(const std::string& json, const std::string& key,
                             std::size_t from = 0) {
  const auto k = json.find("\"" + key + "\":", from);
  if (k == std::string::npos) return -1;
  return std::atoll(json.c_str() + k + key.size() + 3);
}

// The number after "key": in the first line of `text` that contains `prefix`, or -1.
inline long long report_field(const std::string& text, const std::string& prefix,
                              const std::string& key) {
  return json_number(report_line(text, prefix), key);
}

}  // namespace pvio::guest
