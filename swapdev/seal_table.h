// SealTable: for every slot of a sealed device, the version (GCM nonce)
// and tag of its last completed write, kept in memory (24 bytes per slot):
// the file holds only ciphertext, and an old or moved image of a slot
// cannot match the tag and version held here. Internal to swapdev; the
// sealed counterpart of ChecksumTable, with the same states.
//
// Invariant: version(s) == 0 iff slot s holds no completed write;
// kPoisoned when a partial rewrite failed (reads get -EIO until the slot
// is wholly rewritten or freed); otherwise the version seal() drew, and
// tag(s) the tag it made.
// Threads: any; the device contract (no two requests in flight on one
// slot) orders the accesses to one entry, and the version is an atomic
// stored after the tag (release) and loaded before it (acquire).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "swapdev/seal.h"

namespace tmpfsd::swapdev {

class SealTable {
 public:
  static constexpr uint64_t kPoisoned = UINT64_MAX;  // never drawn: the counter stops short

  explicit SealTable(uint64_t slots)
      : versions_(std::make_unique<std::atomic<uint64_t>[]>(slots)),
        tags_(std::make_unique<SealTag[]>(slots)) {
    for (uint64_t i = 0; i < slots; ++i) versions_[i].store(0, std::memory_order_relaxed);
  }

  void set(uint64_t slot, uint64_t version, const SealTag& tag) {
    tags_[slot] = tag;
    versions_[slot].store(version, std::memory_order_release);
  }
  void clear(uint64_t slot) { versions_[slot].store(0, std::memory_order_release); }
  void poison(uint64_t slot) { versions_[slot].store(kPoisoned, std::memory_order_release); }
  uint64_t version(uint64_t slot) const { return versions_[slot].load(std::memory_order_acquire); }
  const SealTag& tag(uint64_t slot) const { return tags_[slot]; }

 private:
  std::unique_ptr<std::atomic<uint64_t>[]> versions_;
  std::unique_ptr<SealTag[]> tags_;
};

}  // namespace tmpfsd::swapdev
