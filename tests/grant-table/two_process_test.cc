// Two processes over one memfd: a fork()ed child plays the granting guest (GrantTable over its
// own MAP_SHARED view of the memfd) and answers commands over a pipe; the parent plays the Dom0
// service and goes through GrantMapper only.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <random>
#include <vector>

#include "guest_image.h"
#include "pvio/grant_table/grant_mapper.h"
#include "pvio/grant_table/grant_table.h"

namespace {

using namespace pvio::gnttab;
using pvio::gnttab::test::fnv1a;
using pvio::gnttab::test::GuestImage;

constexpr pvio::domid_t kGuestDomid = 3;
constexpr pvio::domid_t kBackendDomid = 0;
constexpr std::uint32_t kNrEntries = GuestImage::kTableFrames * kEntriesPerFrame;

enum class Op : std::uint32_t { kGrant, kEnd, kBusy, kFill, kHash, kExit };

struct Cmd {
  Op op;
  std::uint32_t a;  // domid / ref / seed
  std::uint64_t gfn;
  std::uint32_t readonly;
};

struct Reply {
  std::int64_t value;
  std::uint64_t hash;
};

void fill_page(std::uint8_t* p, std::uint32_t seed) {
  std::mt19937 rng(seed);
  for (std::uint32_t i = 0; i < kGrantPageSize; ++i) p[i] = static_cast<std::uint8_t>(rng());
}

bool read_full(int fd, void* buf, std::size_t n) {
  auto* p = static_cast<std::uint8_t*>(buf);
  while (n) {
    const ssize_t r = read(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

bool write_full(int fd, const void* buf, std::size_t n) {
  auto* p = static_cast<const std::uint8_t*>(buf);
  while (n) {
    const ssize_t r = write(fd, p, n);
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

// The guest: its own mapping of the memfd, its own grant table over the table frames.
[[noreturn]] void guest_main(int memfd, int cmd_fd, int reply_fd) {
  void* view = mmap(nullptr, GuestImage::kPages * kGrantPageSize, PROT_READ | PROT_WRITE,
                    MAP_SHARED, memfd, 0);
  if (view == MAP_FAILED) _exit(2);
  auto* base = static_cast<std::uint8_t*>(view);
  auto frame = [&](std::uint64_t gfn) { return base + (gfn - GuestImage::kBaseGfn) * 4096; };
  grant_entry_v1* frames[GuestImage::kTableFrames];
  for (std::uint32_t i = 0; i < GuestImage::kTableFrames; ++i)
    frames[i] = reinterpret_cast<grant_entry_v1*>(frame(GuestImage::kTableGfns[i]));
  static grant_ref_t storage[kNrEntries];
  GrantTable table(frames, GuestImage::kTableFrames, storage, kNrEntries);

  Cmd c;
  while (read_full(cmd_fd, &c, sizeof c)) {
    Reply r{};
    switch (c.op) {
      case Op::kGrant:
        r.value = table.grant_access(static_cast<pvio::domid_t>(c.a), c.gfn, c.readonly != 0);
        break;
      case Op::kEnd:
        r.value = table.end_access(c.a);
        break;
      case Op::kBusy:
        r.value = table.is_busy(c.a);
        break;
      case Op::kFill:
        fill_page(frame(c.gfn), c.a);
        r.hash = fnv1a(frame(c.gfn), kGrantPageSize);
        break;
      case Op::kHash:
        r.hash = fnv1a(frame(c.gfn), kGrantPageSize);
        break;
      case Op::kExit:
        write_full(reply_fd, &r, sizeof r);
        _exit(0);
    }
    if (!write_full(reply_fd, &r, sizeof r)) _exit(3);
  }
  _exit(4);
}

class TwoProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int cmd[2], reply[2];
    ASSERT_EQ(pipe2(cmd, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(reply, O_CLOEXEC), 0);
    child_ = fork();
    ASSERT_GE(child_, 0);
    if (child_ == 0) {
      close(cmd[1]);
      close(reply[0]);
      guest_main(image_.fd(), cmd[0], reply[1]);
    }
    close(cmd[0]);
    close(reply[1]);
    cmd_fd_ = cmd[1];
    reply_fd_ = reply[0];
  }

  void TearDown() override {
    if (child_ > 0) {
      call({Op::kExit, 0, 0, 0});
      int status = 0;
      ASSERT_EQ(waitpid(child_, &status, 0), child_);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "guest status " << status;
    }
    close(cmd_fd_);
    close(reply_fd_);
  }

  Reply call(Cmd c) {
    Reply r{-1, 0};
    EXPECT_TRUE(write_full(cmd_fd_, &c, sizeof c));
    EXPECT_TRUE(read_full(reply_fd_, &r, sizeof r)) << "guest process died";
    return r;
  }
  grant_ref_t guest_grant(std::uint64_t gfn, bool readonly, pvio::domid_t to = kBackendDomid) {
    return static_cast<grant_ref_t>(call({Op::kGrant, to, gfn, readonly}).value);
  }
  bool guest_end(grant_ref_t ref) { return call({Op::kEnd, ref, 0, 0}).value != 0; }
  bool guest_busy(grant_ref_t ref) { return call({Op::kBusy, ref, 0, 0}).value != 0; }
  std::uint64_t guest_fill(std::uint64_t gfn, std::uint32_t seed) {
    return call({Op::kFill, seed, gfn, 0}).hash;
  }
  std::uint64_t guest_hash(std::uint64_t gfn) { return call({Op::kHash, 0, gfn, 0}).hash; }
  static std::uint64_t gfn(unsigned i) { return GuestImage::kFirstDataGfn + i; }

  GuestImage image_;
  GrantMapper mapper_{kGuestDomid, kBackendDomid, image_.memory(), GuestImage::kTableGfns};
  pid_t child_ = -1;
  int cmd_fd_ = -1;
  int reply_fd_ = -1;
};

TEST_F(TwoProcessTest, MapAndReadDataTheGuestWrote) {
  const std::uint64_t hash = guest_fill(gfn(0), 11);
  const grant_ref_t ref = guest_grant(gfn(0), /*readonly=*/true);
  ASSERT_NE(ref, pvio::kInvalidGrantRef);
  MapResult m = mapper_.map(ref, true);
  ASSERT_EQ(m.status, GNTST_okay);
  EXPECT_EQ(fnv1a(m.addr, kGrantPageSize), hash);
  std::vector<std::uint8_t> expect(kGrantPageSize);
  fill_page(expect.data(), 11);
  EXPECT_EQ(std::memcmp(m.addr, expect.data(), kGrantPageSize), 0);
  EXPECT_TRUE(guest_busy(ref));
  EXPECT_EQ(mapper_.unmap(m.handle), GNTST_okay);
  EXPECT_FALSE(guest_busy(ref));
  EXPECT_TRUE(guest_end(ref));
}

TEST_F(TwoProcessTest, WritesThroughAWritableMapReachTheGuest) {
  const grant_ref_t ref = guest_grant(gfn(1), false);
  MapResult m = mapper_.map(ref, false);
  ASSERT_EQ(m.status, GNTST_okay);
  fill_page(m.addr, 99);
  const std::uint64_t mine = fnv1a(m.addr, kGrantPageSize);
  EXPECT_EQ(mapper_.unmap(m.handle), GNTST_okay);
  EXPECT_EQ(guest_hash(gfn(1)), mine);
}

TEST_F(TwoProcessTest, ReadOnlyGrantIsEnforced) {
  const std::uint64_t hash = guest_fill(gfn(2), 5);
  const grant_ref_t ref = guest_grant(gfn(2), /*readonly=*/true);
  EXPECT_EQ(mapper_.map(ref, /*readonly=*/false).status, GNTST_permission_denied);
  alignas(4096) static std::uint8_t local[4096];
  std::memset(local, 0x77, sizeof local);
  gnttab_copy op{};
  op.source = gnttab_copy_ptr::local(local);
  op.dest = gnttab_copy_ptr::gref(ref, kGuestDomid, 0);
  op.len = 4096;
  op.flags = GNTCOPY_dest_gref;
  EXPECT_EQ(mapper_.copy(op), GNTST_permission_denied);
  EXPECT_EQ(guest_hash(gfn(2)), hash) << "a refused write must not reach the guest";
  EXPECT_FALSE(guest_busy(ref));
  EXPECT_TRUE(guest_end(ref));
}

TEST_F(TwoProcessTest, GuestCannotEndAccessWhileMapped) {
  const grant_ref_t ref = guest_grant(gfn(3), false);
  MapResult m = mapper_.map(ref, false);
  ASSERT_EQ(m.status, GNTST_okay);
  EXPECT_TRUE(guest_busy(ref));
  EXPECT_FALSE(guest_end(ref)) << "end_access must fail while the backend holds the grant";
  EXPECT_EQ(mapper_.unmap(m.handle), GNTST_okay);
  EXPECT_TRUE(guest_end(ref));
  // Revoked: the backend can no longer map it.
  EXPECT_EQ(mapper_.map(ref, true).status, GNTST_permission_denied);
}

TEST_F(TwoProcessTest, BadGrefAndDomidCodes) {
  const grant_ref_t other = guest_grant(gfn(4), false, /*to=*/7);
  ASSERT_NE(other, pvio::kInvalidGrantRef);
  EXPECT_EQ(mapper_.map(other, true).status, GNTST_permission_denied);
  EXPECT_EQ(mapper_.map(kNrEntries, true).status, GNTST_bad_gntref);
  const grant_ref_t mine = guest_grant(gfn(4), false);
  std::array<MapOp, 2> ops{};
  ops[0].ref = mine;
  ops[0].dom = kGuestDomid + 1;  // not the domain this mapper serves
  ops[1].ref = mine;
  ops[1].dom = kGuestDomid;
  mapper_.map(ops);
  EXPECT_EQ(ops[0].status, GNTST_bad_domain);
  EXPECT_EQ(ops[1].status, GNTST_okay);
  EXPECT_EQ(mapper_.unmap(ops[1].handle), GNTST_okay);
  EXPECT_EQ(mapper_.unmap(ops[1].handle), GNTST_bad_handle);
  EXPECT_FALSE(guest_busy(other));
  EXPECT_FALSE(guest_busy(mine));
}

TEST_F(TwoProcessTest, RandomGrantCopiesMatchModel) {
  constexpr unsigned kPages = 4;
  std::vector<std::vector<std::uint8_t>> model(2 * kPages,
                                               std::vector<std::uint8_t>(kGrantPageSize));
  std::vector<grant_ref_t> refs;
  for (unsigned p = 0; p < kPages; ++p) {
    guest_fill(gfn(p), 1000 + p);
    fill_page(model[p].data(), 1000 + p);
    refs.push_back(guest_grant(gfn(p), false));
  }
  struct alignas(4096) Local {
    std::uint8_t bytes[kPages][4096];
  };
  auto local = std::make_unique<Local>();
  for (unsigned p = 0; p < kPages; ++p) {
    fill_page(local->bytes[p], 2000 + p);
    fill_page(model[kPages + p].data(), 2000 + p);
  }

  std::mt19937 rng(4242);
  std::vector<gnttab_copy> batch;
  std::vector<std::array<unsigned, 5>> plan;  // src idx, dst idx, soff, doff, len
  for (int round = 0; round < 50; ++round) {
    batch.clear();
    plan.clear();
    for (int i = 0; i < 16; ++i) {
      const unsigned combo = rng() % 4;
      const auto len = static_cast<std::uint16_t>(rng() % 4097);
      const auto soff = static_cast<std::uint16_t>(rng() % (4097 - len));
      const auto doff = static_cast<std::uint16_t>(rng() % (4097 - len));
      const unsigned sp = rng() % kPages, dp = rng() % kPages;
      gnttab_copy op{};
      op.len = len;
      op.flags = static_cast<std::uint16_t>(((combo & 1) ? GNTCOPY_source_gref : 0) |
                                            ((combo & 2) ? GNTCOPY_dest_gref : 0));
      op.source = (combo & 1) ? gnttab_copy_ptr::gref(refs[sp], kGuestDomid, soff)
                              : gnttab_copy_ptr::local(local->bytes[sp] + soff);
      op.dest = (combo & 2) ? gnttab_copy_ptr::gref(refs[dp], kGuestDomid, doff)
                            : gnttab_copy_ptr::local(local->bytes[dp] + doff);
      batch.push_back(op);
      plan.push_back({((combo & 1) ? 0 : kPages) + sp, ((combo & 2) ? 0 : kPages) + dp, soff,
                      doff, len});
    }
    mapper_.copy(batch);  // ops run in order, as GNTTABOP_copy does
    for (std::size_t i = 0; i < batch.size(); ++i) {
      ASSERT_EQ(batch[i].status, GNTST_okay) << "round " << round << " op " << i;
      const auto& [s, d, soff, doff, len] = plan[i];
      std::memmove(model[d].data() + doff, model[s].data() + soff, len);
    }
  }
  for (unsigned p = 0; p < kPages; ++p) {
    EXPECT_EQ(guest_hash(gfn(p)), fnv1a(model[p].data(), kGrantPageSize)) << "guest page " << p;
    EXPECT_EQ(std::memcmp(local->bytes[p], model[kPages + p].data(), kGrantPageSize), 0)
        << "local page " << p;
    EXPECT_FALSE(guest_busy(refs[p]));
    EXPECT_TRUE(guest_end(refs[p]));
  }
}

}  // namespace
