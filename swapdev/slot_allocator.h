// SlotAllocator: hands out runs of consecutive swap slots.
//
// The idea (after Linux's swap clusters): the slot space is cut into clusters
// of `cluster_slots` slots (256 = 1 MiB of 4 KiB pages). Each allocating
// thread fills one "current" cluster front to back, so pages evicted together
// get consecutive slots and go out in one I/O; a `hint` (the slot after a
// neighbour's) continues a file's run wherever it lies. Clusters are grouped
// into shards, each with its own mutex, so threads seldom meet.
//
//   cluster states:   Free --take--> Current --cursor at end--> Partial | Full
//                     Partial --take (no Free left)--> Current
//                     Partial|Full --all slots freed--> DiscardWait (or Free)
//                     DiscardWait --take_discard_batch--> Discarding
//                     Discarding --finish_discard--> Free
//                     DiscardWait --hint / no other space--> Partial | Current
//
// A cluster waiting for or under discard is never allocated from: a punch
// landing after a new write would destroy data.
//
// Invariants (per shard, under its mutex): a slot's bit is set iff it is
// allocated; cluster.free == number of clear bits in it; every cluster is on
// the list its state names (Free, Partial, DiscardWait) or on none.
// Allocation and free are O(1) amortised: a run search scans at most one
// cluster's bitmap (cluster_slots/64 words).
//
// Threads: any thread; each shard's state is guarded by Shard::mu. Counters
// are atomics read without a lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "swapdev/swap_device.h"

namespace tmpfsd::swapdev {

// A range of slots, e.g. clusters to discard.
struct SlotRange {
  uint64_t first = 0;
  uint64_t count = 0;
};

class SlotAllocator {
 public:
  struct Options {
    uint64_t total_slots = 0;
    uint32_t cluster_slots = 256;  // runs never cross a cluster boundary
    unsigned shards = 0;           // 0: one per hardware thread
    bool discard = false;          // route freed clusters through DiscardWait
  };

  explicit SlotAllocator(const Options& opt);
  ~SlotAllocator();

  // Up to `want` consecutive slots, or {count 0, err -ENOSPC}. `want` 0 is
  // -EINVAL. Never blocks on anything but a shard mutex.
  SlotRun allocate(uint32_t want, SwapSlot hint = {});

  // Frees [first, first+count). Slots that are not allocated (double free,
  // out of range) are skipped, logged and counted; returns how many were
  // really freed.
  uint32_t free(SwapSlot first, uint32_t count);

  // Takes `slot` alone if it is free and its cluster is not being
  // discarded (a slot an earlier process's image names: --persist); false
  // otherwise, touching nothing.
  bool claim(SwapSlot slot);

  bool allocated(SwapSlot s) const;
  // True when every slot of [first, first+count) is allocated (I/O checks).
  bool all_allocated(SwapSlot first, uint64_t count) const;

  uint64_t total_slots() const { return total_; }
  uint32_t cluster_slots() const { return cluster_slots_; }
  uint64_t used_slots() const;
  uint64_t allocatable_slots() const;  // free and not waiting for discard
  uint64_t double_frees() const { return double_frees_.load(std::memory_order_relaxed); }
  uint64_t alloc_failures() const { return alloc_failures_.load(std::memory_order_relaxed); }

  // Discard protocol (only with Options::discard). Clusters in DiscardWait:
  size_t discard_waiting() const { return discard_waiting_.load(std::memory_order_relaxed); }
  // Clusters in Discarding (taken and not yet finished).
  size_t discarding() const { return discarding_.load(std::memory_order_relaxed); }
  // Moves up to `max_clusters` waiting clusters to Discarding and returns
  // them as ranges (adjacent clusters merged). The caller punches them and
  // then calls finish_discard() with the same ranges.
  std::vector<SlotRange> take_discard_batch(size_t max_clusters);
  void finish_discard(const std::vector<SlotRange>& ranges);

 private:
  struct Shard;
  Shard& shard_of(uint64_t slot);
  unsigned home_shard() const;

  uint64_t total_;
  uint32_t cluster_slots_;
  bool discard_;
  uint64_t clusters_per_shard_;                 // shard i owns clusters [i*cps, (i+1)*cps)
  std::vector<std::unique_ptr<Shard>> shards_;  // constant after construction

  std::atomic<uint64_t> double_frees_{0};
  std::atomic<uint64_t> alloc_failures_{0};
  std::atomic<size_t> discard_waiting_{0};
  std::atomic<size_t> discarding_{0};
};

}  // namespace tmpfsd::swapdev
