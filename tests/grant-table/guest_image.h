// A test guest's memory: a memfd of kPages pages, mapped MAP_SHARED at guest-physical
// kBaseGfn, holding a two-frame v1 grant table followed by data pages. A fork()ed child sees
// the same bytes, as a granting guest and a Dom0 service would.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "pvio/xen/grant_table.h"
#include "pvio/grant_table/guest_memory.h"

namespace pvio::gnttab::test {

class GuestImage {
 public:
  static constexpr std::uint64_t kBaseGfn = 0x100;
  static constexpr std::uint64_t kPages = 64;
  static constexpr std::uint32_t kTableFrames = 2;
  static constexpr std::uint64_t kFirstDataGfn = kBaseGfn + kTableFrames;
  static constexpr std::uint64_t kOutsideGfn = kBaseGfn + kPages + 10;  // not guest memory
  static constexpr std::uint64_t kTableGfns[kTableFrames] = {kBaseGfn, kBaseGfn + 1};

  GuestImage() {
    fd_ = memfd_create("pvio-test-guest", MFD_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error("memfd_create failed");
    if (ftruncate(fd_, static_cast<off_t>(kPages * kGrantPageSize)) != 0)
      throw std::runtime_error("ftruncate failed");
    void* p = mmap(nullptr, kPages * kGrantPageSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    host_ = static_cast<std::uint8_t*>(p);
    if (!mem_.add_region(kBaseGfn * kGrantPageSize, kPages * kGrantPageSize, host_))
      throw std::runtime_error("add_region failed");
  }
  ~GuestImage() {
    munmap(host_, kPages * kGrantPageSize);
    close(fd_);
  }
  GuestImage(const GuestImage&) = delete;
  GuestImage& operator=(const GuestImage&) = delete;

  const GuestMemory& memory() const { return mem_; }
  int fd() const { return fd_; }
  std::uint8_t* frame(std::uint64_t gfn) const { return mem_.frame(gfn); }
  grant_entry_v1* table_frame(std::uint32_t i) const {
    return reinterpret_cast<grant_entry_v1*>(frame(kTableGfns[i]));
  }
  grant_entry_v1& entry(grant_ref_t ref) const {
    return table_frame(ref / kEntriesPerFrame)[ref % kEntriesPerFrame];
  }

 private:
  int fd_ = -1;
  std::uint8_t* host_ = nullptr;
  GuestMemory mem_;
};

// FNV-1a over a byte range, to compare page contents across processes.
inline std::uint64_t fnv1a(const std::uint8_t* p, std::size_t n) {
  std::uint64_t h = 1469598103934665603ull;
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace pvio::gnttab::test
