// blkback I/O engines against real temp files: data round trips with scatter/gather, queue
// depth back-pressure, flush, discard, end of file, read-only backings, O_DIRECT alignment,
// the completion eventfd, invalid requests, and io_uring registered buffers.
#include "engine_test.h"

#include <poll.h>
#include <sys/statfs.h>

#include <algorithm>
#include <climits>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <stdexcept>
#include <system_error>

namespace pvio::blkback::test {
namespace {

constexpr std::uint64_t kFileSize = 4 << 20;
constexpr std::uint64_t kCell = 64 << 10;  // writes in one batch never share a cell

class EngineTest : public ::testing::TestWithParam<const char*> {
 protected:
  std::string engine() const { return GetParam(); }
  bool is_null() const { return engine() == "null"; }

  std::unique_ptr<IoEngine> open(const TempFile& f, DirectIo direct = DirectIo::Auto,
                                 bool read_only = false, EngineConfig cfg = {}) {
    return make_engine(engine(), BackingOptions{f.path(), read_only, direct}, cfg);
  }
};

// A request with its own buffer, split into iovecs of random sizes; gap_units of unit-sized
// space between chunks keeps them apart in memory (0 makes them adjacent, and mergeable).
struct SgRequest {
  std::uint64_t offset;
  std::uint64_t length;
  std::unique_ptr<AlignedBuf> buf;
  std::vector<iovec> iov;
  std::vector<std::size_t> chunk_off;  // offset of each chunk in buf

  SgRequest(std::uint64_t off, std::uint64_t len, std::uint64_t unit, unsigned segments,
            unsigned gap_units, std::mt19937_64& rng)
      : offset(off), length(len) {
    const std::uint64_t units = len / unit;
    segments = static_cast<unsigned>(std::min<std::uint64_t>(segments, units));
    // Random cut points at unit boundaries.
    std::vector<std::uint64_t> cuts{0, units};
    std::uniform_int_distribution<std::uint64_t> pick(1, units > 1 ? units - 1 : 1);
    while (cuts.size() < segments + 1u && units > 1) {
      const std::uint64_t c = pick(rng);
      if (std::find(cuts.begin(), cuts.end(), c) == cuts.end()) cuts.push_back(c);
    }
    std::sort(cuts.begin(), cuts.end());
    buf = std::make_unique<AlignedBuf>(len + (cuts.size() - 1) * gap_units * unit, 0xEE);
    std::size_t pos = 0;
    for (std::size_t i = 0; i + 1 < cuts.size(); ++i) {
      const std::size_t n = (cuts[i + 1] - cuts[i]) * unit;
      chunk_off.push_back(pos);
      iov.push_back(iovec{buf->data() + pos, n});
      pos += n + gap_units * unit;
    }
  }

  std::uint8_t& at(std::uint64_t i) {  // i-th byte of the request's data
    for (std::size_t c = 0; c < iov.size(); ++c) {
      if (i < iov[c].iov_len) return static_cast<std::uint8_t*>(iov[c].iov_base)[i];
      i -= iov[c].iov_len;
    }
    throw std::out_of_range("SgRequest::at");
  }

  IoRequest request(IoOp op, std::uint64_t tag) const {
    return IoRequest{op, offset, iov.data(), static_cast<std::uint32_t>(iov.size()), 0, tag};
  }
};

TEST_P(EngineTest, ScatterGatherPatternRoundTrip) {
  if (is_null()) GTEST_SKIP() << "the null engine does no I/O (see NullEngine tests)";
  for (DirectIo mode : {DirectIo::Auto, DirectIo::Off}) {
    SCOPED_TRACE(mode == DirectIo::Auto ? "direct auto" : "buffered");
    TempFile f(kFileSize);
    auto e = open(f, mode, false, EngineConfig{16, 64, false});
    const std::uint64_t unit = std::max<std::uint64_t>(e->backing().logical_sector_size, 512);
    std::vector<std::uint8_t> model(kFileSize, 0);
    std::mt19937_64 rng(42);

    // Writes: 8 batches of 24, each request inside its own 64 KiB cell of the batch.
    for (std::uint32_t gen = 1; gen <= 8; ++gen) {
      std::vector<std::uint64_t> cells(kFileSize / kCell);
      std::iota(cells.begin(), cells.end(), 0);
      std::shuffle(cells.begin(), cells.end(), rng);
      std::vector<SgRequest> sg;
      std::vector<IoRequest> reqs;
      for (std::size_t i = 0; i < 24; ++i) {
        const std::uint64_t units = 1 + rng() % (kCell / unit);
        const std::uint64_t start = rng() % (kCell / unit - units + 1);
        sg.emplace_back(cells[i] * kCell + start * unit, units * unit, unit,
                        1 + static_cast<unsigned>(rng() % 8), static_cast<unsigned>(rng() % 2),
                        rng);
      }
      for (std::size_t i = 0; i < sg.size(); ++i) {
        for (std::uint64_t b = 0; b < sg[i].length; ++b) {
          sg[i].at(b) = pattern(sg[i].offset + b, gen);
          model[sg[i].offset + b] = pattern(sg[i].offset + b, gen);
        }
        reqs.push_back(sg[i].request(IoOp::Write, gen * 1000 + i));
      }
      const auto res = run_all(*e, reqs);
      for (std::size_t i = 0; i < sg.size(); ++i)
        EXPECT_EQ(res.at(gen * 1000 + i), static_cast<std::int64_t>(sg[i].length)) << "write " << i;
    }

    // Reads of random ranges (up to three cells), compared with what was written.
    std::vector<SgRequest> sg;
    std::vector<IoRequest> reqs;
    for (std::size_t i = 0; i < 64; ++i) {
      const std::uint64_t units = 1 + rng() % (3 * kCell / unit);
      const std::uint64_t start = rng() % (kFileSize / unit - units + 1);
      sg.emplace_back(start * unit, units * unit, unit, 1 + static_cast<unsigned>(rng() % 11),
                      static_cast<unsigned>(rng() % 2), rng);
      reqs.push_back(sg.back().request(IoOp::Read, i));
    }
    const auto res = run_all(*e, reqs);
    for (std::size_t i = 0; i < sg.size(); ++i) {
      ASSERT_EQ(res.at(i), static_cast<std::int64_t>(sg[i].length)) << "read " << i;
      std::uint64_t bad = 0;
      for (std::uint64_t b = 0; b < sg[i].length; ++b)
        bad += sg[i].at(b) != model[sg[i].offset + b];
      EXPECT_EQ(bad, 0u) << "read " << i << " at " << sg[i].offset << " len " << sg[i].length;
    }
    e.reset();
    EXPECT_TRUE(f.contents() == model) << "file bytes differ from the written pattern";
  }
}

TEST_P(EngineTest, BatchLargerThanQueueDepthIsAcceptedInPrefixes) {
  TempFile f(kFileSize);
  std::vector<std::uint8_t> data(kFileSize);
  for (std::uint64_t i = 0; i < kFileSize; ++i) data[i] = pattern(i, 7);
  f.write_all(0, data);
  auto e = open(f, DirectIo::Auto, false, EngineConfig{8, 16, false});
  constexpr std::size_t kReqs = 50;
  AlignedBuf buf(kReqs * 4096, 0);
  std::vector<iovec> iov(kReqs);
  std::vector<IoRequest> reqs;
  for (std::size_t i = 0; i < kReqs; ++i) {
    iov[i] = iovec{buf.data() + i * 4096, 4096};
    reqs.push_back(IoRequest{IoOp::Read, (i * 7 % 1024) * 4096, &iov[i], 1, 0, 5000 + i});
  }
  // The engine takes what fits in its queue and leaves the rest to the caller.
  EXPECT_EQ(e->submit(reqs), 8u);
  EXPECT_EQ(e->in_flight(), 8u);
  EXPECT_EQ(e->submit(std::span(reqs).subspan(8)), 0u);
  std::vector<IoCompletion> cq(8);
  std::size_t reaped = e->reap(cq, 8);
  EXPECT_EQ(reaped, 8u);
  EXPECT_EQ(e->in_flight(), 0u);
  std::map<std::uint64_t, std::int64_t> results;
  for (std::size_t i = 0; i < reaped; ++i) results.emplace(cq[i].tag, cq[i].result);
  auto rest = run_all(*e, std::span(reqs).subspan(8));
  results.insert(rest.begin(), rest.end());
  ASSERT_EQ(results.size(), kReqs);
  for (std::size_t i = 0; i < kReqs; ++i) {
    EXPECT_EQ(results.at(5000 + i), 4096);
    if (!is_null()) {
      EXPECT_EQ(std::memcmp(buf.data() + i * 4096, data.data() + (i * 7 % 1024) * 4096, 4096), 0)
          << "request " << i;
    }
  }
  EXPECT_EQ(e->stats().submitted, kReqs);
  EXPECT_EQ(e->stats().completed, kReqs);
}

TEST_P(EngineTest, ReapHandsOutAtMostOutSizeAndKeepsTheRest) {
  TempFile f(kFileSize);
  auto e = open(f, DirectIo::Auto, false, EngineConfig{8, 4, false});
  AlignedBuf buf(8 * 4096);
  std::vector<iovec> iov(8);
  std::vector<IoRequest> reqs;
  for (std::uint64_t i = 0; i < 8; ++i) {
    iov[i] = iovec{buf.data() + i * 4096, 4096};
    reqs.push_back(IoRequest{IoOp::Read, i * 4096, &iov[i], 1, 0, 100 + i});
  }
  // Two of them invalid, so early (engine-side) and kernel completions mix.
  reqs[2].iovcnt = 0;
  reqs[5].offset = 1;
  ASSERT_EQ(e->submit(reqs), 8u);
  std::map<std::uint64_t, std::int64_t> seen;
  IoCompletion cq[3];
  while (e->in_flight() > 0) {
    const std::size_t n = e->reap(cq, 3);
    ASSERT_GE(n, 1u);
    ASSERT_LE(n, 3u);
    for (std::size_t i = 0; i < n; ++i) EXPECT_TRUE(seen.emplace(cq[i].tag, cq[i].result).second);
  }
  ASSERT_EQ(seen.size(), 8u);
  for (std::uint64_t i = 0; i < 8; ++i) {
    const bool bad = i == 2 || (i == 5 && e->backing().dio_offset_align > 1);
    EXPECT_EQ(seen.at(100 + i), bad ? -EINVAL : 4096) << "request " << i;
  }
  EXPECT_EQ(e->reap(cq, 3), 0u) << "min_complete is capped by what is in flight";
}

TEST_P(EngineTest, FlushCompletesWithZero) {
  TempFile f(kFileSize);
  auto e = open(f);
  AlignedBuf buf(8192, 0x5A);
  iovec v{buf.data(), 8192};
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Write, 65536, &v, 1, 0, 1}), 8192);
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Flush, 0, nullptr, 0, 0, 2}), 0);
  if (!is_null()) {
    EXPECT_EQ(f.contents()[65536 + 100], 0x5A);
  }
}

TEST_P(EngineTest, DiscardPunchesHoleInFile) {
  if (is_null()) GTEST_SKIP() << "the null engine does no I/O";
  TempFile f(kFileSize);
  std::vector<std::uint8_t> data(kFileSize);
  for (std::uint64_t i = 0; i < kFileSize; ++i) data[i] = pattern(i, 3);
  f.write_all(0, data);
  auto e = open(f);
  if (!e->backing().discard_supported) GTEST_SKIP() << "file system cannot punch holes";
  EXPECT_GE(e->backing().discard_granularity, 512u);
  const std::int64_t blocks_before = f.blocks();
  constexpr std::uint64_t kOff = 1 << 20, kLen = 1 << 20;
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Discard, kOff, nullptr, 0, kLen, 9}), 0);
  EXPECT_LT(f.blocks(), blocks_before) << "st_blocks did not drop";
  EXPECT_LE(f.blocks(), blocks_before - static_cast<std::int64_t>(kLen / 512));
  // Through the engine: zeros in the hole, the pattern on both sides.
  AlignedBuf buf(kLen + 8192, 0xEE);
  iovec v{buf.data(), kLen + 8192};
  ASSERT_EQ(run_one(*e, IoRequest{IoOp::Read, kOff - 4096, &v, 1, 0, 10}),
            static_cast<std::int64_t>(kLen + 8192));
  EXPECT_EQ(std::memcmp(buf.data(), data.data() + kOff - 4096, 4096), 0);
  EXPECT_TRUE(
      std::all_of(buf.data() + 4096, buf.data() + 4096 + kLen, [](auto b) { return b == 0; }));
  EXPECT_EQ(std::memcmp(buf.data() + 4096 + kLen, data.data() + kOff + kLen, 4096), 0);
  EXPECT_EQ(f.contents().size(), kFileSize) << "discard changed the file size";
}

TEST_P(EngineTest, ReadPastEndIsShort) {
  if (is_null()) GTEST_SKIP() << "the null engine does no I/O (see NullEngine tests)";
  TempFile f(64 << 10);
  auto e = open(f);
  AlignedBuf buf(8192, 0xEE);
  iovec v{buf.data(), 8192};
  // What the kernel does: the part inside the file, then 0 at and beyond the end.
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Read, (64 << 10) - 4096, &v, 1, 0, 1}), 4096);
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Read, 64 << 10, &v, 1, 0, 2}), 0);
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Read, 1 << 30, &v, 1, 0, 3}), 0);
}

TEST_P(EngineTest, ReadOnlyBackingRefusesWritesAndDiscards) {
  TempFile f(kFileSize);
  std::vector<std::uint8_t> data(kFileSize, 0x11);
  f.write_all(0, data);
  auto e = open(f, DirectIo::Auto, /*read_only=*/true);
  EXPECT_TRUE(e->backing().read_only);
  EXPECT_FALSE(e->backing().discard_supported);
  AlignedBuf buf(4096, 0x77);
  iovec v{buf.data(), 4096};
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Write, 0, &v, 1, 0, 1}), -EBADF);
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Discard, 0, nullptr, 0, 4096, 2}), -EBADF);
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Read, 0, &v, 1, 0, 3}), 4096);
  if (!is_null()) {
    EXPECT_EQ(buf.data()[0], 0x11);
  }
  EXPECT_EQ(f.contents()[0], 0x11);
}

TEST_P(EngineTest, MisalignedDirectIoIsRejected) {
  TempFile f(kFileSize);
  auto direct = open(f, DirectIo::Auto);
  if (!direct->backing().direct_io) GTEST_SKIP() << "temp file system has no O_DIRECT";
  const BackingInfo& info = direct->backing();
  ASSERT_GE(info.dio_mem_align, 1u);
  ASSERT_EQ(info.dio_mem_align & (info.dio_mem_align - 1), 0u);
  ASSERT_EQ(info.dio_offset_align & (info.dio_offset_align - 1), 0u);
  AlignedBuf buf(3 * 4096, 0x33);
  iovec base_off{buf.data() + 1, 4096};
  iovec short_len{buf.data(), 4096 + 100};
  iovec good{buf.data(), 4096};
  // Every engine checks alignment itself (the null engine too) and answers -EINVAL.
  if (info.dio_mem_align > 1) {
    EXPECT_EQ(run_one(*direct, IoRequest{IoOp::Write, 0, &base_off, 1, 0, 1}), -EINVAL);
  }
  if (info.dio_offset_align > 1) {
    EXPECT_EQ(run_one(*direct, IoRequest{IoOp::Write, 0, &short_len, 1, 0, 2}), -EINVAL);
    EXPECT_EQ(run_one(*direct, IoRequest{IoOp::Read, 100, &good, 1, 0, 3}), -EINVAL);
  }
  EXPECT_EQ(direct->stats().rejected, direct->stats().completed);
  direct.reset();
  if (is_null()) return;
  // Buffered, the same misaligned request goes through the page cache and lands.
  auto buffered = open(f, DirectIo::Off);
  EXPECT_FALSE(buffered->backing().direct_io);
  EXPECT_EQ(run_one(*buffered, IoRequest{IoOp::Write, 100, &base_off, 1, 0, 4}), 4096);
  EXPECT_EQ(f.contents()[100], 0x33);
}

TEST_P(EngineTest, CompletionSignalsEventFd) {
  TempFile f(kFileSize);
  auto e = open(f);
  pollfd p{e->event_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 0), 0) << "eventfd readable before any request";
  AlignedBuf buf(4096);
  iovec v{buf.data(), 4096};
  const IoRequest r{IoOp::Read, 4096, &v, 1, 0, 77};
  ASSERT_EQ(e->submit(std::span(&r, 1)), 1u);
  ASSERT_EQ(::poll(&p, 1, 10000), 1) << "no completion signal";
  EXPECT_TRUE(p.revents & POLLIN);
  EXPECT_GE(e->ack_event(), 1u);
  IoCompletion c;
  // Once signalled, the completion is there without waiting.
  ASSERT_EQ(e->reap(std::span(&c, 1), 0), 1u);
  EXPECT_EQ(c.tag, 77u);
  EXPECT_EQ(c.result, 4096);
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "eventfd still readable after ack";
  EXPECT_EQ(e->reap(std::span(&c, 1), 0), 0u);
}

TEST_P(EngineTest, InvalidRequestsCompleteWithErrorsAndKeepTags) {
  TempFile f(kFileSize);
  auto e = open(f, DirectIo::Auto, false, EngineConfig{16, 4, false});
  AlignedBuf buf(8 * 4096);
  std::vector<iovec> many(5);
  for (std::size_t i = 0; i < many.size(); ++i) many[i] = iovec{buf.data() + 2 * i * 4096, 4096};
  iovec v{buf.data(), 4096};
  const std::uint64_t big = std::numeric_limits<std::uint64_t>::max() - 1024;
  const std::vector<IoRequest> reqs = {
      {IoOp::Read, 0, nullptr, 1, 0, ~std::uint64_t{0}},      // no iovec array
      {IoOp::Read, 0, &v, 0, 0, 2},                           // no segments
      {IoOp::Write, 0, many.data(), 5, 0, 3},                 // more than max_segments
      {IoOp::Read, big & ~std::uint64_t{4095}, &v, 1, 0, 4},  // offset + length overflows
      {static_cast<IoOp>(9), 0, &v, 1, 0, 5},                 // unknown operation
      {IoOp::Discard, 0, nullptr, 0, 0, 6},                   // empty discard
      {IoOp::Discard, big, nullptr, 0, 1 << 20, 7},           // discard range overflows
      {IoOp::Read, 0, many.data(), 4, 0, 8},                  // valid, after all of those
  };
  const auto res = run_all(*e, reqs);
  EXPECT_EQ(res.at(~std::uint64_t{0}), -EINVAL);
  EXPECT_EQ(res.at(2), -EINVAL);
  EXPECT_EQ(res.at(3), -EINVAL);
  EXPECT_EQ(res.at(4), -EINVAL);
  EXPECT_EQ(res.at(5), -EINVAL);
  const std::int64_t discard_err = e->backing().discard_supported ? -EINVAL : -EOPNOTSUPP;
  EXPECT_EQ(res.at(6), discard_err);
  EXPECT_EQ(res.at(7), discard_err);
  EXPECT_EQ(res.at(8), 4 * 4096);
  EXPECT_EQ(e->stats().rejected, 7u);
}

TEST_P(EngineTest, RegisteredBuffersUseFixedOpsOnUring) {
  TempFile f(kFileSize);
  auto e = open(f);
  AlignedBuf region(1 << 20, 0);
  AlignedBuf outside(8192, 0);
  const iovec reg{region.data(), region.size()};
  const int r = e->register_buffers(std::span(&reg, 1));
  if (engine() != "uring") {
    EXPECT_EQ(r, -EOPNOTSUPP);
    return;
  }
  ASSERT_EQ(r, 0) << "io_uring_register_buffers: " << std::strerror(-r);
  for (std::size_t i = 0; i < 16384; ++i) region.data()[i] = pattern(i, 9);
  // One range inside the region, and two adjacent pages inside it (merged into one range).
  iovec one{region.data(), 8192};
  iovec two[2] = {{region.data() + 8192, 4096}, {region.data() + 12288, 4096}};
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Write, 0, &one, 1, 0, 1}), 8192);
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Write, 8192, two, 2, 0, 2}), 8192);
  EXPECT_EQ(e->stats().fixed_buffer_ops, 2u);
  iovec out{outside.data(), 8192};
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Read, 4096, &out, 1, 0, 3}), 8192);
  EXPECT_EQ(e->stats().fixed_buffer_ops, 2u) << "buffer outside the region went fixed";
  EXPECT_EQ(std::memcmp(outside.data(), region.data() + 4096, 8192), 0);
  iovec back{region.data() + 65536, 16384};
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Read, 0, &back, 1, 0, 4}), 16384);
  EXPECT_EQ(e->stats().fixed_buffer_ops, 3u);
  EXPECT_EQ(std::memcmp(region.data() + 65536, region.data(), 16384), 0);
  // Not while requests are in flight; unregistering goes back to READV.
  const IoRequest pending{IoOp::Read, 0, &out, 1, 0, 5};
  ASSERT_EQ(e->submit(std::span(&pending, 1)), 1u);
  EXPECT_EQ(e->register_buffers({}), -EBUSY);
  IoCompletion c;
  ASSERT_EQ(e->reap(std::span(&c, 1), 1), 1u);
  EXPECT_EQ(e->register_buffers({}), 0);
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Read, 0, &back, 1, 0, 6}), 16384);
  EXPECT_EQ(e->stats().fixed_buffer_ops, 3u);
}

TEST_P(EngineTest, BackingInfoOfAFile) {
  TempFile f(3 << 20);
  auto e = open(f, DirectIo::Off);
  const BackingInfo& info = e->backing();
  EXPECT_EQ(e->name(), engine());
  EXPECT_EQ(info.size_bytes, 3u << 20);
  EXPECT_FALSE(info.block_device);
  EXPECT_FALSE(info.direct_io);
  EXPECT_EQ(info.logical_sector_size, 512u);
  EXPECT_GE(info.physical_sector_size, info.logical_sector_size);
  EXPECT_EQ(info.dio_mem_align, 1u);
  EXPECT_EQ(e->queue_depth(), EngineConfig{}.queue_depth);
  EXPECT_EQ(e->in_flight(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Engines, EngineTest, ::testing::Values("uring", "aio", "sync", "null"),
                         [](const auto& info) { return std::string(info.param); });

// `auto` takes the synchronous engine for a regular file in memory (tmpfs, where io_uring
// would punt every request to a worker) and io_uring for a file on a disk file system or a
// block device (whose /dev node statfs reports as devtmpfs, the same magic as tmpfs).
TEST(EngineFactory, AutoPicksSyncOnTmpfsAndUringElsewhere) {
  struct statfs sf{};
  if (::statfs("/dev/shm", &sf) != 0 || sf.f_type != 0x01021994) GTEST_SKIP() << "/dev/shm is not tmpfs here";
  const std::string shm = "/dev/shm/pvio-auto-engine-" + std::to_string(::getpid());
  {
    std::ofstream(shm).close();
    std::filesystem::resize_file(shm, 1 << 20);
  }
  EXPECT_EQ(auto_engine(shm), "sync");
  auto e = make_engine("auto", BackingOptions{shm, false, DirectIo::Auto});
  EXPECT_EQ(e->name(), "sync");
  e.reset();
  std::filesystem::remove(shm);
  EXPECT_EQ(auto_engine("/dev/null"), "uring");  // a character device in devtmpfs
  const std::string dir = std::filesystem::temp_directory_path().string();
  if (::statfs(dir.c_str(), &sf) == 0 && sf.f_type != 0x01021994 && sf.f_type != 0x858458f6) {
    TempFile f(1 << 20);  // in the temp directory, on a disk file system here
    EXPECT_EQ(auto_engine(f.path()), "uring");
    EXPECT_EQ(make_engine("auto", BackingOptions{f.path(), false, DirectIo::Auto})->name(), "uring");
  }
}

TEST(EngineFactory, RefusesBadConfigAndBackings) {
  TempFile f(1 << 20);
  const BackingOptions ok{f.path(), false, DirectIo::Auto};
  EXPECT_THROW(make_engine("spdk", ok), std::invalid_argument);
  EXPECT_THROW(make_engine("uring", ok, EngineConfig{0, 16, false}), std::invalid_argument);
  EXPECT_THROW(make_engine("aio", ok, EngineConfig{8, IOV_MAX + 1, false}), std::invalid_argument);
  EXPECT_THROW(make_engine("uring", BackingOptions{f.path() + ".missing", false, DirectIo::Auto}),
               std::system_error);
  EXPECT_THROW(make_engine("uring", BackingOptions{std::filesystem::temp_directory_path().string(),
                                                   true, DirectIo::Off}),
               std::system_error);
  EXPECT_EQ(make_engine("", ok)->name(), "uring") << "io_uring is the default";
}

TEST(NullEngine, LeavesBuffersAndFileAlone) {
  TempFile f(kFileSize);
  std::vector<std::uint8_t> data(kFileSize, 0x42);
  f.write_all(0, data);
  auto e = make_engine("null", BackingOptions{f.path(), false, DirectIo::Auto});
  EXPECT_EQ(e->backing().size_bytes, kFileSize);
  AlignedBuf buf(3 * 4096, 0xAB);
  iovec v[2] = {{buf.data(), 4096}, {buf.data() + 2 * 4096, 4096}};
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Read, 0, v, 2, 0, 1}), 8192);
  EXPECT_TRUE(std::all_of(buf.data(), buf.data() + buf.size(), [](auto b) { return b == 0xAB; }));
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Write, 0, v, 2, 0, 2}), 8192);
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Read, 1 << 30, v, 2, 0, 3}), 8192)
      << "no end-of-file check";
  EXPECT_TRUE(f.contents() == data);
}

TEST(UringEngine, SqpollRoundTrip) {
  TempFile f(1 << 20);
  std::unique_ptr<IoEngine> e;
  try {
    e = make_engine("uring", BackingOptions{f.path(), false, DirectIo::Auto},
                    EngineConfig{8, 16, true});
  } catch (const std::system_error& err) {
    GTEST_SKIP() << "kernel refused IORING_SETUP_SQPOLL: " << err.what();
  }
  AlignedBuf w(4096, 0x6C), r(4096, 0);
  iovec wv{w.data(), 4096}, rv{r.data(), 4096};
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Write, 8192, &wv, 1, 0, 1}), 4096);
  EXPECT_EQ(run_one(*e, IoRequest{IoOp::Read, 8192, &rv, 1, 0, 2}), 4096);
  EXPECT_EQ(std::memcmp(w.data(), r.data(), 4096), 0);
}

}  // namespace
}  // namespace pvio::blkback::test
