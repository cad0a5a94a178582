// The backing file of the block benchmarks: a temp file ($TMPDIR) written through once, so
// reads hit allocated blocks, and removed when the program ends.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace pvio::bench {

class BenchFile {
 public:
  // `size` bytes in 1 MiB chunks; fill(chunk, offset) sets the bytes of the chunk at `offset`.
  BenchFile(const std::string& tag, std::uint64_t size,
            const std::function<void(std::vector<std::uint8_t>&, std::uint64_t)>& fill) {
    std::string tmpl = (std::filesystem::temp_directory_path() / (tag + "-XXXXXX")).string();
    const int fd = ::mkstemp(tmpl.data());
    if (fd < 0) throw std::runtime_error("mkstemp failed");
    path_ = tmpl;
    std::vector<std::uint8_t> chunk(1 << 20);
    for (std::uint64_t off = 0; off < size; off += chunk.size()) {
      fill(chunk, off);
      if (::pwrite(fd, chunk.data(), chunk.size(), static_cast<off_t>(off)) !=
          static_cast<ssize_t>(chunk.size()))
        throw std::runtime_error("filling the benchmark file failed");
    }
    ::fsync(fd);
    ::close(fd);
  }
  ~BenchFile() { ::unlink(path_.c_str()); }
  BenchFile(const BenchFile&) = delete;
  BenchFile& operator=(const BenchFile&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace pvio::bench
