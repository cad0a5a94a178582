// libFuzzer target over blkback request parsing: any slot contents, any negotiated limits and
// any indirect page bytes, in the x86_64 or the x86_32 layout, must give a typed result without reading past what it was given, and
// a parsed request must respect the limits it was parsed against.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "pvio/blkback/request.h"

namespace {

using namespace pvio;
using namespace pvio::blkback;

// Indirect pages come from the rest of the input; a gref with bit 0 set fails like an
// ungranted one.
class InputPages final : public IndirectPageReader {
 public:
  InputPages(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  std::int16_t read(grant_ref_t gref, std::span<blkif::blkif_request_segment> out) override {
    if (gref & 1) return -3;  // GNTST_bad_gntref
    const std::size_t want = out.size_bytes();
    if (want > 4096) std::abort();  // the parser asked for more than one page
    std::memset(out.data(), 0, want);
    const std::size_t off = (std::size_t{gref} * 64) % (size_ + 1);
    std::memcpy(out.data(), data_ + off, std::min(want, size_ - off));
    return 0;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < sizeof(RawRequest) + 10) return 0;
  RawRequest raw;
  std::memcpy(&raw, data, sizeof(raw));
  data += sizeof(raw);
  size -= sizeof(raw);

  DiskLimits limits;
  std::memcpy(&limits.nr_sectors, data, 8);
  const std::uint8_t f = data[8];
  limits.read_only = f & 1;
  limits.flush = f & 2;
  limits.barrier = f & 4;
  limits.discard = f & 8;
  limits.discard_secure = f & 16;
  limits.max_indirect_segments = data[9] + ((f & 32) ? 256u : 0u);  // also above the cap
  data += 10;
  size -= 10;

  // Bit 6 of the flags: the slot is an x86_32-abi request, converted as blkback converts it.
  if (f & 64) {
    blkif::blkif_x86_32_request r32;
    static_assert(sizeof(r32) <= sizeof(raw));
    std::memcpy(&r32, &raw, sizeof(r32));
    raw = from_x86_32(r32);
    if (raw.id != r32.id || raw.operation != r32.operation) std::abort();
  }

  InputPages pages(data, size);
  ParsedRequest req;
  const RequestError err = parse_request(raw, limits, &pages, req);
  if (req.id != raw.id || req.operation != raw.operation) std::abort();
  if (err != RequestError::None) {
    (void)response_status(err);
    (void)request_error_name(err);
    return 0;
  }
  // Invariants of an accepted request.
  if (req.nr_segments > kMaxIndirectSegments) std::abort();
  std::uint64_t sectors = 0;
  for (std::uint32_t i = 0; i < req.nr_segments; ++i) {
    const Segment& s = req.seg[i];
    if (s.length == 0 || s.length % 512 || s.offset % 512 || s.offset + s.length > 4096)
      std::abort();
    sectors += s.length / 512;
  }
  if (req.kind != Kind::Discard && sectors != req.nr_sectors) std::abort();
  if (req.nr_sectors != 0 && req.sector + req.nr_sectors > limits.nr_sectors) std::abort();
  if (req.sector + req.nr_sectors < req.sector) std::abort();
  if (limits.read_only && req.kind != Kind::Read && req.nr_sectors != 0) std::abort();
  if (!req.indirect && req.nr_segments > blkif::kMaxSegmentsPerRequest) std::abort();
  if (req.indirect && req.nr_segments > limits.max_indirect_segments) std::abort();
  return 0;
}
