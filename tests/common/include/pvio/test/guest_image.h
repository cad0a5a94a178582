// A test guest's memory: a memfd mapped MAP_SHARED at a chosen guest-physical frame, whose
// first pages are its v1 grant-table frames. A fork()ed child sees the same bytes, as a
// granting guest and a Dom0 service would; grant_table() drives the frames as the guest does.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "pvio/grant_table/grant_table.h"
#include "pvio/grant_table/guest_memory.h"

namespace pvio::test {

struct GuestLayout {
  const char* name = "pvio-test-guest";  // the memfd's name
  std::uint64_t base_gfn = 0;            // guest frame of the first page
  std::uint64_t pages = 0;
  std::uint32_t table_frames = 0;        // grant-table frames at base_gfn, base_gfn + 1, ...
};

class GuestImage {
 public:
  // Throws std::runtime_error when the memory cannot be made.
  explicit GuestImage(const GuestLayout& layout) : layout_(layout) {
    const std::uint64_t bytes = layout.pages * gnttab::kGrantPageSize;
    fd_ = ::memfd_create(layout.name, MFD_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error("memfd_create failed");
    if (::ftruncate(fd_, static_cast<off_t>(bytes)) != 0) {
      ::close(fd_);
      throw std::runtime_error("ftruncate failed");
    }
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (p == MAP_FAILED) {
      ::close(fd_);
      throw std::runtime_error("mmap failed");
    }
    host_ = static_cast<std::uint8_t*>(p);
    if (!mem_.add_region(layout.base_gfn * gnttab::kGrantPageSize, bytes, host_)) {
      ::munmap(host_, bytes);
      ::close(fd_);
      throw std::runtime_error("add_region failed");
    }
    for (std::uint32_t i = 0; i < layout.table_frames; ++i) {
      table_gfns_.push_back(layout.base_gfn + i);
      frames_.push_back(reinterpret_cast<gnttab::grant_entry_v1*>(page(layout.base_gfn + i)));
    }
  }
  ~GuestImage() {
    table_.reset();
    ::munmap(host_, layout_.pages * gnttab::kGrantPageSize);
    ::close(fd_);
  }
  GuestImage(const GuestImage&) = delete;
  GuestImage& operator=(const GuestImage&) = delete;

  const GuestMemory& memory() const { return mem_; }
  int fd() const { return fd_; }
  std::uint64_t base_gfn() const { return layout_.base_gfn; }
  std::uint64_t pages() const { return layout_.pages; }
  // Host address of the first page (guest frame base_gfn).
  std::uint8_t* base() const { return host_; }
  // Host address of guest frame `gfn`, or null outside this memory.
  std::uint8_t* page(std::uint64_t gfn) const { return mem_.frame(gfn); }
  const std::vector<std::uint64_t>& table_gfns() const { return table_gfns_; }
  gnttab::grant_entry_v1* table_frame(std::uint32_t i) const { return frames_[i]; }
  gnttab::grant_entry_v1& entry(grant_ref_t ref) const {
    return table_frame(ref / gnttab::kEntriesPerFrame)[ref % gnttab::kEntriesPerFrame];
  }
  // The guest's side of the table over all its frames; made on first use, which takes the
  // frames over (their non-reserved entries become invalid).
  gnttab::GrantTable& grant_table() {
    if (!table_) {
      free_refs_.resize(std::size_t{layout_.table_frames} * gnttab::kEntriesPerFrame);
      table_ = std::make_unique<gnttab::GrantTable>(
          frames_.data(), layout_.table_frames, free_refs_.data(),
          static_cast<std::uint32_t>(free_refs_.size()));
    }
    return *table_;
  }

 private:
  GuestLayout layout_;
  int fd_ = -1;
  std::uint8_t* host_ = nullptr;
  GuestMemory mem_;
  std::vector<std::uint64_t> table_gfns_;
  std::vector<gnttab::grant_entry_v1*> frames_;
  std::vector<grant_ref_t> free_refs_;
  std::unique_ptr<gnttab::GrantTable> table_;
};

}  // namespace pvio::test
