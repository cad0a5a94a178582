// Software page walk for hypercall arguments: 4 KiB, 2 MiB and 1 GiB pages through tables in
// guest RAM, and every way a hostile guest's tables can be wrong.
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "pvio/hypervisor/page_walk.h"

namespace pvio::hv {
namespace {

constexpr std::uint64_t kRam = 4 << 20;
constexpr std::uint64_t kP = 1, kW = 2, kPs = 0x80;

struct Tables {
  std::vector<std::uint8_t> bytes = std::vector<std::uint8_t>(kRam + 4096, 0);
  GuestMemory memory;
  std::uint8_t* base;
  PagingState paging{0x80000011, 0x1000, 0x20, 0x500};  // PG|PE, CR4.PAE, EFER.LME|LMA
  Tables() {
    base = reinterpret_cast<std::uint8_t*>(
        (reinterpret_cast<std::uintptr_t>(bytes.data()) + 4095) & ~std::uintptr_t{4095});
    memory.add_region(0, kRam, base);
    // PML4 at 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000.
    set(0x1000, 0, 0x2000 | kP | kW);
    set(0x2000, 0, 0x3000 | kP | kW);
    set(0x3000, 0, 0x4000 | kP | kW);
    set(0x4000, 5, 0x123000 | kP | kW);          // va 0x5000 -> 0x123000
    set(0x3000, 1, 0x200000 | kP | kW | kPs);    // va 2 MiB -> 2 MiB (2 MiB page)
    set(0x2000, 1, 0x40000000 | kP | kW | kPs);  // va 1 GiB -> 1 GiB (1 GiB page)
  }
  void set(std::uint64_t table, unsigned idx, std::uint64_t e) {
    std::memcpy(base + table + idx * 8, &e, 8);
  }
  WalkStatus walk(std::uint64_t gva, std::uint64_t* gpa) {
    return translate_gva(memory, paging, gva, gpa);
  }
};

TEST(PageWalk, TranslatesEachPageSize) {
  Tables t;
  std::uint64_t gpa = 0;
  ASSERT_EQ(t.walk(0x5abc, &gpa), WalkStatus::kOk);
  EXPECT_EQ(gpa, 0x123abcu);
  ASSERT_EQ(t.walk(0x212345, &gpa), WalkStatus::kOk);
  EXPECT_EQ(gpa, 0x212345u);
  ASSERT_EQ(t.walk(0x40001234, &gpa), WalkStatus::kOk);
  EXPECT_EQ(gpa, 0x40001234u);
}

TEST(PageWalk, PagingOffIsIdentityBelow4G) {
  Tables t;
  t.paging = {0x11, 0, 0, 0};
  std::uint64_t gpa = 0;
  ASSERT_EQ(t.walk(0x1234, &gpa), WalkStatus::kOk);
  EXPECT_EQ(gpa, 0x1234u);
  EXPECT_EQ(t.walk(0x100000000ull, &gpa), WalkStatus::kOutside4G);
}

TEST(PageWalk, RefusesWhatAHostileGuestCanWrite) {
  Tables t;
  std::uint64_t gpa = 0;
  EXPECT_EQ(t.walk(0x6000, &gpa), WalkStatus::kNotPresent);            // empty PTE
  EXPECT_EQ(t.walk(0x8000000000ull, &gpa), WalkStatus::kNotPresent);   // empty PML4E
  EXPECT_EQ(t.walk(0x0000800000000000ull, &gpa), WalkStatus::kNonCanonical);
  t.set(0x3000, 2, 0x7fff0000000 | kP);  // page table far outside RAM
  EXPECT_EQ(t.walk(0x400000, &gpa), WalkStatus::kTableOutsideRam);
  t.set(0x2000, 2, kRam | kP);  // the next table starts right at the end of RAM
  EXPECT_EQ(t.walk(0x80000000, &gpa), WalkStatus::kTableOutsideRam);
  t.set(0x1000, 1, 0x2000 | kP | kPs);  // PS in a PML4E is reserved
  EXPECT_EQ(t.walk(0x8000000000ull, &gpa), WalkStatus::kReservedBit);
  t.set(0x4000, 7, 0x0010000000007000ull | kP);  // address bit 52 set
  EXPECT_EQ(t.walk(0x7000, &gpa), WalkStatus::kReservedBit);
  t.paging.cr4 = 0x20 | 0x1000;  // 5-level paging
  EXPECT_EQ(t.walk(0x5000, &gpa), WalkStatus::kUnsupportedMode);
  t.paging = {0x80000011, 0x1000, 0x20, 0};  // 32-bit PAE paging
  EXPECT_EQ(t.walk(0x5000, &gpa), WalkStatus::kUnsupportedMode);
  t.paging = {0x80000011, kRam, 0x20, 0x500};  // CR3 outside RAM
  EXPECT_EQ(t.walk(0x5000, &gpa), WalkStatus::kTableOutsideRam);
}

}  // namespace
}  // namespace pvio::hv
