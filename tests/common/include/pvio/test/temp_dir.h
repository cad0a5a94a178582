// A private directory per test under the system temp dir ($TMPDIR, else /tmp), and its removal.
#pragma once

#include <stdlib.h>

#include <filesystem>
#include <string>
#include <system_error>

namespace pvio::test {

// A fresh directory named <tag>-XXXXXX; empty on failure.
inline std::string make_temp_dir(const std::string& tag) {
  std::string tmpl = (std::filesystem::temp_directory_path() / (tag + "-XXXXXX")).string();
  return ::mkdtemp(tmpl.data()) != nullptr ? tmpl : std::string();
}

// Removes `dir` and everything in it; nothing for an empty path.
inline void remove_temp_dir(const std::string& dir) {
  if (dir.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

}  // namespace pvio::test
