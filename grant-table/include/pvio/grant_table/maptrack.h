// Which grant entries one Dom0 service holds busy in one domain: Xen keeps a maptrack table per
// mapping domain so it can undo a dead domain's mappings; every pvio service is domain 0, so
// the owner of a guest (pvio-domain, pvio-hv) gives each attached service a maptrack page of
// its own instead. The service sets a ref's bit before it sets GTF_reading/GTF_writing in the
// guest's entry and clears it after clearing them; when the service dies, the owner clears
// only the busy bits that it alone held, so the pins of another live service (pvio-netback
// while pvio-blkback is killed) stay in force.
//
// Layout (one 4 KiB page, shared memfd): bit r of words [0, kMaptrackWords) is "holds
// GTF_reading on ref r", the next kMaptrackWords words the same for GTF_writing. Refs at or
// above kMaptrackRefs are not tracked (they cannot exist: the domain control protocol hands
// out at most 32 grant frames).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "pvio/xen/grant_table.h"

namespace pvio::gnttab {

inline constexpr std::uint32_t kMaptrackRefs = 32 * 512;
inline constexpr std::size_t kMaptrackWords = kMaptrackRefs / 64;
inline constexpr std::size_t kMaptrackBytes = 2 * kMaptrackWords * sizeof(std::uint64_t);
static_assert(kMaptrackBytes == 4096);

// A service's view of its page (or of a dead service's page, for the owner).
class Maptrack {
 public:
  Maptrack() = default;
  explicit Maptrack(std::uint64_t* words) : words_(words) {}
  bool valid() const { return words_ != nullptr; }

  // `bits`: GTF_reading and/or GTF_writing.
  void set(grant_ref_t ref, std::uint16_t bits) { update(ref, bits, true); }
  void clear(grant_ref_t ref, std::uint16_t bits) { update(ref, bits, false); }
  std::uint64_t reading_word(std::size_t i) const { return load(i); }
  std::uint64_t writing_word(std::size_t i) const { return load(kMaptrackWords + i); }

 private:
  void update(grant_ref_t ref, std::uint16_t bits, bool on) {
    if (words_ == nullptr || ref >= kMaptrackRefs) return;
    const std::uint64_t mask = std::uint64_t{1} << (ref % 64);
    if (bits & GTF_reading) flip(words_[ref / 64], mask, on);
    if (bits & GTF_writing) flip(words_[kMaptrackWords + ref / 64], mask, on);
  }
  static void flip(std::uint64_t& word, std::uint64_t mask, bool on) {
    std::atomic_ref<std::uint64_t> w(word);
    if (on)
      w.fetch_or(mask, std::memory_order_seq_cst);
    else
      w.fetch_and(~mask, std::memory_order_release);
  }
  std::uint64_t load(std::size_t i) const {
    return std::atomic_ref<std::uint64_t>(words_[i]).load(std::memory_order_acquire);
  }
  std::uint64_t* words_ = nullptr;
};

// The owner's side when the service behind `dead` died: for every ref whose bit `dead` has and
// no service in `live` has, clears that busy bit in the guest's entry (`entry(ref)` gives the
// entry or null beyond the table) if the entry still names `domid`. Returns how many entries
// had a busy bit cleared.
template <typename EntryOf>
std::uint32_t release_dead_mapper(const Maptrack& dead, std::span<const Maptrack> live,
                                  domid_t domid, EntryOf entry) {
  std::uint32_t released = 0;
  for (std::size_t i = 0; i < kMaptrackWords; ++i) {
    std::uint64_t r = dead.reading_word(i), w = dead.writing_word(i);
    if ((r | w) == 0) continue;
    for (const Maptrack& l : live) {
      r &= ~l.reading_word(i);
      w &= ~l.writing_word(i);
    }
    for (std::uint64_t any = r | w; any != 0; any &= any - 1) {
      const unsigned bit = static_cast<unsigned>(__builtin_ctzll(any));
      const auto ref = static_cast<grant_ref_t>(i * 64 + bit);
      grant_entry_v1* e = entry(ref);
      if (e == nullptr) continue;
      if (std::atomic_ref<domid_t>(e->domid).load(std::memory_order_relaxed) != domid) continue;
      const std::uint16_t clear = static_cast<std::uint16_t>(((r >> bit) & 1 ? GTF_reading : 0) |
                                                             ((w >> bit) & 1 ? GTF_writing : 0));
      const std::uint16_t was = std::atomic_ref<std::uint16_t>(e->flags).fetch_and(
          static_cast<std::uint16_t>(~clear), std::memory_order_acq_rel);
      if (was & clear) ++released;
    }
  }
  return released;
}

}  // namespace pvio::gnttab
