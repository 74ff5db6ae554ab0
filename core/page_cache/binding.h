// PagePlace: where one page of a file lives (the seed's "weak binding";
// docs/design.md, "The page word"). It is the 8-byte word a file's index
// (file_index.h) holds per page, and the only code that knows how that
// word is encoded:
//
//   kind       word                      meaning
//   ---------  ------------------------  ------------------------------------
//   hole       0                         no page: reads as zeros
//   resident   Pmap*       (bit 0 = 0)   a Pmap (resident, or with I/O in
//                                        flight); its frame is Pmap::frame()
//   swapped    (slot << 2) | 0b01        a clean page in the swap file and
//                                        nothing else: no Pmap, no frame
//   zero       0b0011                    a fallocated page evicted without a
//                                        slot: reads as zeros, a hole for
//                                        SEEK_DATA
//   zero, up-  0b0111                    the same, fallocated twice (shmem
//    to-date                             SGP_FALLOC): data for SEEK_DATA
//   remote     (key << 4) | 0b1011       a clean page in the remote pool and
//                                        nothing else: no Pmap, no frame; the
//                                        key is the swap device's slot
//                                        (SwapDevice::is_remote says which)
//   (reserved) low bits 0b1111
//
// A Pmap is at least 8-byte aligned (it holds 8-byte members), so a Pmap
// pointer never has its low bits set. Named constructors assert that the
// value fits; tests/core/file_index_test.cc round-trips every kind.
//
// Threads: none of its own; a value, guarded by whoever holds the index.
#pragma once

#include <cassert>
#include <cstdint>

#include "swapdev/swap_device.h"

namespace tmpfsd {

class Pmap;

class PagePlace {
 public:
  enum class Kind : uint8_t { kHole, kResident, kSwapped, kZero, kRemote };

  static constexpr uint64_t kMaxSlot = (uint64_t{1} << 62) - 1;
  static constexpr uint64_t kMaxRemoteKey = (uint64_t{1} << 60) - 1;

  constexpr PagePlace() = default;  // a hole
  static constexpr PagePlace hole() { return PagePlace(); }
  static PagePlace resident(Pmap* p) {
    const auto w = reinterpret_cast<uintptr_t>(p);
    assert(p != nullptr && (w & 7) == 0);
    return PagePlace(w);
  }
  static constexpr PagePlace swapped(swapdev::SwapSlot s) {
    assert(s.valid() && s.value <= kMaxSlot);
    return PagePlace((s.value << 2) | kSwapTag);
  }
  static constexpr PagePlace zero(bool uptodate = false) {
    return PagePlace(uptodate ? kZeroUptodateWord : kZeroWord);
  }
  static constexpr PagePlace remote(uint64_t key) {
    assert(key <= kMaxRemoteKey);
    return PagePlace((key << 4) | kRemoteTag);
  }
  // A clean page that lives only in the swap device's slot `s`: remote when
  // the device says the slot is in its remote pool, else swapped.
  static constexpr PagePlace paged_out(swapdev::SwapSlot s, bool in_remote) {
    return in_remote ? remote(s.value) : swapped(s);
  }
  // The index's raw word back as a place (FileIndex only).
  static constexpr PagePlace from_word(uint64_t w) { return PagePlace(w); }
  constexpr uint64_t word() const { return word_; }

  constexpr Kind kind() const {
    if (word_ == 0) return Kind::kHole;
    if ((word_ & 1) == 0) return Kind::kResident;
    if ((word_ & 3) == kSwapTag) return Kind::kSwapped;
    if ((word_ & 15) == kRemoteTag) return Kind::kRemote;
    assert(word_ == kZeroWord || word_ == kZeroUptodateWord);
    return Kind::kZero;
  }
  constexpr bool is_hole() const { return word_ == 0; }
  constexpr bool present() const { return word_ != 0; }
  constexpr bool is_pmap() const { return word_ != 0 && (word_ & 1) == 0; }
  constexpr bool is_swapped() const { return (word_ & 3) == kSwapTag; }
  constexpr bool is_zero() const { return word_ == kZeroWord || word_ == kZeroUptodateWord; }
  constexpr bool is_remote() const { return (word_ & 15) == kRemoteTag; }
  // Swapped or remote: its bytes are in the swap device's device_slot().
  constexpr bool paged_out() const { return is_swapped() || is_remote(); }
  constexpr swapdev::SwapSlot device_slot() const {
    assert(paged_out());
    return swapdev::SwapSlot(is_remote() ? word_ >> 4 : word_ >> 2);
  }
  // Reads as zeros without a frame: a hole or a zero page.
  constexpr bool reads_as_zeros() const { return word_ == 0 || is_zero(); }
  // Present but with no Pmap: swapped, zero or remote (a fault makes it one).
  constexpr bool needs_fault() const { return word_ != 0 && (word_ & 1) != 0; }

  Pmap* pmap() const {
    assert(is_pmap());
    return reinterpret_cast<Pmap*>(static_cast<uintptr_t>(word_));
  }
  constexpr swapdev::SwapSlot slot() const {
    assert(is_swapped());
    return swapdev::SwapSlot(word_ >> 2);
  }
  constexpr bool zero_uptodate() const {
    assert(is_zero());
    return word_ == kZeroUptodateWord;
  }
  constexpr uint64_t remote_key() const {
    assert(is_remote());
    return word_ >> 4;
  }

  friend constexpr bool operator==(PagePlace, PagePlace) = default;

 private:
  static constexpr uint64_t kSwapTag = 0b01;
  static constexpr uint64_t kZeroWord = 0b0011;
  static constexpr uint64_t kZeroUptodateWord = 0b0111;
  static constexpr uint64_t kRemoteTag = 0b1011;
  constexpr explicit PagePlace(uint64_t w) : word_(w) {}
  uint64_t word_ = 0;
};

static_assert(sizeof(PagePlace) == 8);

}  // namespace tmpfsd
