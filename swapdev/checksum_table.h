// ChecksumTable: the XXH3-64 of the last completed write of every slot, kept
// in memory (8 bytes per slot) so a read can prove its bytes are the ones
// written. Internal to swapdev.
//
// Invariant: sums_[s] == 0 iff slot s holds no completed write (never
// written, freed, or its last whole-page write failed); kPoisoned when a
// partial rewrite (write_blocks) failed, so the bytes on the medium are a
// mix nobody can vouch for: reads get -EIO until the slot is wholly
// rewritten or freed; otherwise it is encode(hash).
// Threads: any; each entry is an atomic, and the device contract (no two
// requests in flight on one slot) orders the accesses to one entry.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace tmpfsd::swapdev {

class ChecksumTable {
 public:
  explicit ChecksumTable(uint64_t slots);

  static uint64_t hash(std::span<const std::byte> page);

  void set(uint64_t slot, uint64_t hash) {
    sums_[slot].store(encode(hash), std::memory_order_release);
  }
  // The stored word as it is (encoded), and back: --persist carries it.
  uint64_t raw(uint64_t slot) const { return sums_[slot].load(std::memory_order_acquire); }
  void set_raw(uint64_t slot, uint64_t word) { sums_[slot].store(word, std::memory_order_release); }
  static constexpr uint64_t kPoisonedRaw = 1;
  void clear(uint64_t slot) { sums_[slot].store(0, std::memory_order_release); }
  void poison(uint64_t slot) { sums_[slot].store(kPoisoned, std::memory_order_release); }
  // True for poisoned slots too: they hold bytes, just none to trust.
  bool has_data(uint64_t slot) const { return sums_[slot].load(std::memory_order_acquire) != 0; }
  bool poisoned(uint64_t slot) const {
    return sums_[slot].load(std::memory_order_acquire) == kPoisoned;
  }

  // 0 when `page` is what was written to `slot`, -ENODATA when the slot
  // holds nothing, -EIO on mismatch or when the slot is poisoned.
  int verify(uint64_t slot, std::span<const std::byte> page) const;

 private:
  // 0 is reserved for "no data" and 1 for "poisoned"; a real hash of 0 or 1
  // is stored as 2, which costs two values in 2^64 of detection power.
  static constexpr uint64_t kPoisoned = 1;
  static uint64_t encode(uint64_t h) { return h <= kPoisoned ? 2 : h; }

  std::unique_ptr<std::atomic<uint64_t>[]> sums_;
};

}  // namespace tmpfsd::swapdev
