// Helpers the pvio-hv end-to-end tests share: reading what the VMM wrote, pulling numbers out
// of its one-line JSON reports, and a private temp dir per test.
#pragma once

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace pvio::hv::test {

inline std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// The number after "key": in the first line of `text` that contains `prefix`, or -1.
inline long long field(const std::string& text, const std::string& prefix,
                       const std::string& key) {
  const auto line = text.find(prefix);
  if (line == std::string::npos) return -1;
  const auto end = text.find('\n', line);
  const std::string l = text.substr(line, end - line);
  const auto k = l.find("\"" + key + "\":");
  if (k == std::string::npos) return -1;
  return std::atoll(l.c_str() + k + key.size() + 3);
}

// A fresh directory under $TMPDIR (or /tmp) named after `tag`; empty on failure.
inline std::string make_temp_dir(const std::string& tag) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp ? tmp : "/tmp") + "/" + tag + "-XXXXXX";
  return ::mkdtemp(tmpl.data()) ? tmpl : std::string();
}

}  // namespace pvio::hv::test
