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
#include <cstdlib>
#include <memory>
#include <new>

#include "swapdev/seal.h"

namespace tmpfsd::swapdev {

class SealTable {
 public:
  static constexpr uint64_t kPoisoned = UINT64_MAX;  // never drawn: the counter stops short

  // calloc: a large table is fresh zero pages that cost no memory until a
  // slot is written (the daemon's RSS follows the slots used).
  explicit SealTable(uint64_t slots)
      : versions_(static_cast<uint64_t*>(std::calloc(slots ? slots : 1, sizeof(uint64_t)))),
        tags_(static_cast<SealTag*>(std::calloc(slots ? slots : 1, sizeof(SealTag)))) {
    if (!versions_ || !tags_) throw std::bad_alloc();
  }

  void set(uint64_t slot, uint64_t version, const SealTag& tag) {
    tags_.get()[slot] = tag;
    std::atomic_ref<uint64_t>(versions_.get()[slot]).store(version, std::memory_order_release);
  }
  void clear(uint64_t slot) { store(slot, 0); }
  void poison(uint64_t slot) { store(slot, kPoisoned); }
  uint64_t version(uint64_t slot) const {
    return std::atomic_ref<uint64_t>(versions_.get()[slot]).load(std::memory_order_acquire);
  }
  const SealTag& tag(uint64_t slot) const { return tags_.get()[slot]; }

 private:
  void store(uint64_t slot, uint64_t v) {
    std::atomic_ref<uint64_t>(versions_.get()[slot]).store(v, std::memory_order_release);
  }
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<uint64_t[], Free> versions_;  // accessed through atomic_ref only
  std::unique_ptr<SealTag[], Free> tags_;
};

}  // namespace tmpfsd::swapdev
