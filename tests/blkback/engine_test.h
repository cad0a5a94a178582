// Helpers shared by the blkback engine tests: temp backing files, aligned buffers, a byte
// pattern that says where it came from, and a loop that drives an engine to completion.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "pvio/blkback/io_engine.h"

namespace pvio::blkback::test {

// A file made with mkstemp in the temp directory ($TMPDIR), removed on destruction.
class TempFile {
 public:
  explicit TempFile(std::uint64_t size) {
    std::string tmpl = (std::filesystem::temp_directory_path() / "pvio-blk-XXXXXX").string();
    const int fd = ::mkstemp(tmpl.data());
    if (fd < 0) throw std::runtime_error("mkstemp failed");
    path_ = tmpl;
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
      ::close(fd);
      throw std::runtime_error("ftruncate failed");
    }
    ::close(fd);
  }
  ~TempFile() { ::unlink(path_.c_str()); }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& path() const { return path_; }

  // The file's bytes as read through the page cache by an independent descriptor.
  std::vector<std::uint8_t> contents() const {
    std::vector<std::uint8_t> out;
    const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return out;
    struct stat st {};
    ::fstat(fd, &st);
    out.resize(static_cast<std::size_t>(st.st_size));
    std::size_t done = 0;
    while (done < out.size()) {
      const ssize_t r = ::pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
      if (r <= 0) break;
      done += static_cast<std::size_t>(r);
    }
    out.resize(done);
    ::close(fd);
    return out;
  }

  std::int64_t blocks() const {
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) return -1;
    return st.st_blocks;
  }

  void write_all(std::uint64_t off, std::span<const std::uint8_t> data) const {
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off)),
              static_cast<ssize_t>(data.size()));
    ASSERT_EQ(::fsync(fd), 0);
    ::close(fd);
  }

 private:
  std::string path_;
};

// Page-aligned heap buffer, as guest pages are.
class AlignedBuf {
 public:
  explicit AlignedBuf(std::size_t size, std::uint8_t fill = 0) : size_(size) {
    void* p = nullptr;
    if (::posix_memalign(&p, 4096, size ? size : 1) != 0) throw std::bad_alloc();
    data_ = static_cast<std::uint8_t*>(p);
    std::memset(data_, fill, size);
  }
  ~AlignedBuf() { std::free(data_); }
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  std::uint8_t* data() { return data_; }
  std::size_t size() const { return size_; }

 private:
  std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// The byte written at file offset `off` in generation `gen`: differs between neighbours and
// between generations, never constant over a sector.
inline std::uint8_t pattern(std::uint64_t off, std::uint32_t gen) {
  std::uint64_t x = (off + 1) * 0x9E3779B97F4A7C15ull ^ (std::uint64_t{gen} << 29);
  x ^= x >> 31;
  return static_cast<std::uint8_t>(x | 1);  // never 0, so a hole reads differently
}

// Submits everything (as many per call as the engine accepts) and reaps until nothing is in
// flight. Returns tag -> result; a duplicate or lost completion is a test failure.
inline std::map<std::uint64_t, std::int64_t> run_all(IoEngine& e, std::span<const IoRequest> reqs) {
  std::map<std::uint64_t, std::int64_t> results;
  std::vector<IoCompletion> cq(e.queue_depth());
  std::size_t next = 0;
  while (next < reqs.size() || e.in_flight() > 0) {
    const std::size_t accepted = e.submit(reqs.subspan(next));
    next += accepted;
    const std::size_t n = e.reap(cq, 1);
    if (n == 0 && accepted == 0) {
      ADD_FAILURE() << "engine made no progress with " << e.in_flight() << " in flight";
      break;
    }
    for (std::size_t i = 0; i < n; ++i)
      EXPECT_TRUE(results.emplace(cq[i].tag, cq[i].result).second)
          << "tag " << cq[i].tag << " completed twice";
  }
  EXPECT_EQ(results.size(), reqs.size());
  return results;
}

inline std::int64_t run_one(IoEngine& e, const IoRequest& req) {
  const auto r = run_all(e, std::span<const IoRequest>(&req, 1));
  const auto it = r.find(req.tag);
  return it == r.end() ? INT64_MIN : it->second;
}

}  // namespace pvio::blkback::test
