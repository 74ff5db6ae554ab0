// PageCache::State: what one mount's page cache shares between its files --
// the FramePool, the active/inactive lists, the limits and the counters.
// Internal to core/ (tests look inside).
//
// Invariants: pages_allocated == sum over files of their pages() and
// <= max_pages when max_pages != 0; pages_resident == frames owned by
// Pmaps == pool->frames_used() (until swap exists); metadata counts every
// byte of Pmaps, file indexes and pool descriptors.
// Locks: counters are atomics (read without a lock for stats; size= is
// reserved with a CAS loop, so two files cannot together exceed it).
// Threads: any.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>

#include "core/frame_pool.h"
#include "core/lru.h"
#include "core/page_cache.h"

namespace tmpfsd {

struct PageCache::State {
  State(const PageCacheConfig& c, unsigned page_shift, std::unique_ptr<FramePool> p,
        std::span<const std::byte> zero_region);
  ~State();

  // Reserves n pages against size= (all or nothing).
  bool reserve_pages(uint64_t n);
  void unreserve_pages(uint64_t n) { pages_allocated.fetch_sub(n, std::memory_order_relaxed); }

  // Constant after construction.
  const size_t page_size;
  const unsigned page_shift;
  const unsigned block_shift;  // dirty-bitmap block: max(512, page_size / 64)
  const uint64_t max_pages;    // 0 = unlimited
  const std::unique_ptr<FramePool> pool;
  const std::span<const std::byte> zeros;  // read-only zeros, >= one page

  PmapLists lists;

  std::atomic<uint64_t> pages_allocated{0};
  std::atomic<uint64_t> pages_resident{0};
  std::atomic<uint64_t> pages_swapped{0};
  std::atomic<uint64_t> metadata{0};  // Pmaps + indexes (pool descriptors added in stats)
  std::atomic<uint64_t> files{0};
};

}  // namespace tmpfsd
