// Reading what a program under test wrote: a whole file, and the numbers in its one-line JSON
// reports (the guest's PVIO-RESULT, the VMM's PVIO-HV-STATS).
#pragma once

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

namespace pvio::test {

// The contents of `path`; empty if it cannot be read.
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

}  // namespace pvio::test
