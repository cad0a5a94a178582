// libFuzzer target over pvio-hv's e1000 model: any sequence of register reads and writes,
// guest-RAM descriptor bytes, received frames and timer ticks. The model may refuse anything,
// but never touches host memory outside guest RAM (guard bytes around it stay intact), never
// hands the backend a frame beyond the largest it may send, and every call returns.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "pvio/hypervisor/devices/e1000.h"

namespace {

using namespace pvio;
using namespace pvio::hv;

constexpr std::uint64_t kRam = 64 << 10, kGuard = 4096;
constexpr std::uint8_t kFill = 0x5A;

struct Fixture {
  Fixture() : bytes(kRam + 2 * kGuard + 4096) {
    base = reinterpret_cast<std::uint8_t*>(
        (reinterpret_cast<std::uintptr_t>(bytes.data()) + kGuard + 4095) & ~std::uintptr_t{4095});
    memory.add_region(0, kRam, base);
  }
  bool guards_intact() const {
    for (const std::uint8_t* p = bytes.data(); p < base; ++p)
      if (*p != kFill) return false;
    for (const std::uint8_t* p = base + kRam; p < bytes.data() + bytes.size(); ++p)
      if (*p != kFill) return false;
    return true;
  }
  std::vector<std::uint8_t> bytes;
  std::uint8_t* base;
  GuestMemory memory;
};

// Registers worth hitting more often than a uniform offset would.
constexpr std::uint32_t kHot[] = {
    e1000_reg::kCtrl,  e1000_reg::kIcr,   e1000_reg::kIcs,   e1000_reg::kIms,
    e1000_reg::kRctl,  e1000_reg::kTctl,  e1000_reg::kRdbal, e1000_reg::kRdlen,
    e1000_reg::kRdh,   e1000_reg::kRdt,   e1000_reg::kRdtr,  e1000_reg::kRadv,
    e1000_reg::kTdbal, e1000_reg::kTdlen, e1000_reg::kTdh,   e1000_reg::kTdt,
    e1000_reg::kTidv,  e1000_reg::kTadv,  e1000_reg::kItr,   e1000_reg::kMdic,
    e1000_reg::kEerd,  e1000_reg::kRxcsum};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Fixture f;
  std::memset(f.bytes.data(), kFill, f.bytes.size());
  std::memset(f.base, 0, kRam);
  std::uint64_t now = 0;
  E1000 nic(
      f.memory, E1000::Config{}, [](unsigned, bool) {},
      [](std::span<const std::uint8_t> frame) {
        if (frame.size() > E1000::kMaxFrame) std::abort();
      },
      [&now] { return now; });
  std::size_t at = 0;
  const auto take = [&](std::size_t n) -> const std::uint8_t* {
    if (size - at < n) return nullptr;
    const std::uint8_t* p = data + at;
    at += n;
    return p;
  };
  while (const std::uint8_t* op = take(1)) {
    switch (*op % 6) {
      case 0: {  // write a hot register: index, value
        const std::uint8_t* p = take(5);
        if (!p) break;
        std::uint32_t v;
        std::memcpy(&v, p + 1, 4);
        nic.mmio_write(100, kHot[p[0] % std::size(kHot)], 4, v);
        break;
      }
      case 1: {  // write any offset with any size
        const std::uint8_t* p = take(7);
        if (!p) break;
        std::uint32_t off = (std::uint32_t{p[0]} | (std::uint32_t{p[1]} << 8) | (std::uint32_t{p[2]} << 16)) % 0x20100;
        std::uint32_t v;
        std::memcpy(&v, p + 3, 4);
        nic.mmio_write(100, off, 1u << (p[0] % 4), v);
        (void)nic.mmio_read(100, off ^ 4, 4);
        break;
      }
      case 2: {  // 16 bytes of guest RAM (descriptors, buffers)
        const std::uint8_t* p = take(18);
        if (!p) break;
        const std::uint32_t off = ((std::uint32_t{p[0]} | (std::uint32_t{p[1]} << 8)) * 16u) % kRam;
        std::memcpy(f.base + off, p + 2, 16);
        break;
      }
      case 3: {  // a frame from the backend
        const std::uint8_t* p = take(2);
        if (!p) break;
        std::vector<std::uint8_t> frame((std::size_t{p[0]} | (std::size_t{p[1]} << 8)) % 20000);
        for (std::size_t i = 0; i < frame.size(); ++i) frame[i] = static_cast<std::uint8_t>(i * 7 + *op);
        if (frame.size() >= 6 && (*op & 0x40)) std::memcpy(frame.data(), nic.mac().data(), 6);
        nic.receive(frame);
        break;
      }
      case 4:  // time passes
        now += std::uint64_t{*op} * 10000;
        nic.service(now);
        break;
      case 5: {  // the I/O window
        const std::uint8_t* p = take(5);
        if (!p) break;
        std::uint32_t v;
        std::memcpy(&v, p + 1, 4);
        nic.pio_write(101, (p[0] & 1) * 4, 4, v);
        (void)nic.pio_read(101, 4, 4);
        break;
      }
    }
    if (!f.guards_intact()) std::abort();
  }
  return 0;
}
