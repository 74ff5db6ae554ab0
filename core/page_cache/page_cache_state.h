// PageCache::State: what one mount's page cache shares between its files --
// the FramePool, the active/inactive lists, the limits and the counters.
// Internal to core/ (tests look inside).
//
// Invariants: pages_allocated == sum over files of their pages() and
// <= max_pages when max_pages != 0; pages_resident == frames owned by
// Pmaps (== pool->frames_used() when no frame is in transit); pages_swapped
// == compact swap words in all indexes; metadata counts every byte of Pmaps,
// file indexes and pool descriptors.
// Locks: counters are atomics (read without a lock for stats; size= is
// reserved with a CAS loop, so two files cannot together exceed it).
// Threads: any.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <unordered_map>

#include "core/page_cache.h"
#include "core/page_cache/frame_pool.h"
#include "core/page_cache/lru.h"
#include "swapdev/thread_annotations.h"

namespace tmpfsd {

class Reclaimer;
struct ReadRequest;  // swap_in.h: one asynchronous FilePages::read
struct WritePatch;   // swap_in.cc: a pending write's bytes for one page

struct PageCache::State {
  State(const PageCacheConfig& c, unsigned page_shift, std::unique_ptr<FramePool> p,
        std::span<const std::byte> zero_region, std::unique_ptr<swapdev::SwapDevice> swap);
  ~State();

  // Reserves n pages against size= and, with swap, against frames + swap
  // slots (all or nothing).
  bool reserve_pages(uint64_t n);
  // Wakes whoever waits for I/O to finish or frames to come free.
  void notify_progress() {
    {
      MutexLock lock(progress_mu);
      ++progress_epoch;
    }
    progress_cv.notify_all();
  }
  // Sleeps until notify_progress() or `ms` milliseconds. Callers loop on
  // their own condition (a lost wake-up costs one timeout, never a hang).
  void wait_progress(int ms = 1) {
    UniqueLock lock(progress_mu);
    const uint64_t e = progress_epoch;
    progress_cv.wait_for(lock.native(), std::chrono::milliseconds(ms),
                         [&]() REQUIRES(progress_mu) { return progress_epoch != e; });
  }
  void unreserve_pages(uint64_t n) { pages_allocated.fetch_sub(n, std::memory_order_relaxed); }
  // The frame's swap-cache slot leaves it (f has one; the caller owns it:
  // the owner's file mutex held exclusive, or the I/O that owns the page).
  // take_slot hands the slot to the caller, drop_slot frees it.
  swapdev::SwapSlot take_slot(Frame* f) {
    const swapdev::SwapSlot s = f->swap_slot();
    f->clear_swap_slot();
    swap_cached.fetch_sub(1, std::memory_order_relaxed);
    return s;
  }
  void drop_slot(Frame* f) { swap->free(take_slot(f)); }

  // Constant after construction.
  const size_t page_size;
  const unsigned page_shift;
  const unsigned block_shift;  // dirty-bitmap block: max(512, page_size / 64)
  const uint64_t all_blocks;   // the dirty bits of a whole page
  // size= in pages, 0 = unlimited; changed by PageCache::set_max_pages,
  // which with reserve_pages() orders its store and their increments
  // seq_cst (see there).
  std::atomic<uint64_t> max_pages;
  const bool writeback_copy;      // PageCacheConfig::writeback_copy
  const uint64_t write_headroom;  // PageCacheConfig::write_headroom, in frames
  const std::unique_ptr<FramePool> pool;
  // The frames as the swap device sees them (SwapDevice::use_pages);
  // declared before `swap`, which gives its pages back when destroyed.
  FramePages frame_pages{*pool};
  const std::span<const std::byte> zeros;  // read-only zeros, >= one page

  PmapLists lists;

  // The counters of PageCacheStats (page_cache.h's table, source
  // `counter`), each an atomic of the same name.
#define TMPFSD_STATE_COUNTER_counter(name) std::atomic<uint64_t> name{0};
#define TMPFSD_STATE_COUNTER_figure(name)
#define TMPFSD_STATE_COUNTER(name, source, kind, what) TMPFSD_STATE_COUNTER_##source(name)
  TMPFSD_PAGE_CACHE_STATS(TMPFSD_STATE_COUNTER)
#undef TMPFSD_STATE_COUNTER
#undef TMPFSD_STATE_COUNTER_figure
#undef TMPFSD_STATE_COUNTER_counter

  std::atomic<uint64_t> metadata{0};  // Pmaps + indexes (pool descriptors added in stats)
  std::atomic<uint64_t> files{0};
  // The next file's serial (FilePagesImpl::serial): names a file to the
  // swap device's seal for the mount's life; never reused, unlike inode
  // numbers, and never 0 (the device's "no file").
  std::atomic<uint64_t> next_file_serial{1};
  std::atomic<uint64_t> writeback_in_flight{0};  // pages
  std::atomic<uint64_t> reads_in_flight{0};      // ReadRequests, PendingWrites not yet replied

  // Reads waiting for pages under swap-in (kReadPending): the page wait
  // table (Linux's folio_wait_table), and the bytes of pending writes for
  // such pages (at most one per page). A swap-in completion copies the
  // page's patch into the frame, clears kReadPending and takes the page's
  // waiters in one critical section of read_wait_mu, so a reader or writer
  // that registers under it either is in the table before the flag clears
  // or sees it cleared. A leaf lock: nothing else is taken under it.
  Mutex read_wait_mu;
  std::unordered_multimap<const Pmap*, ReadRequest*> read_waiters GUARDED_BY(read_wait_mu);
  std::unordered_map<const Pmap*, WritePatch*> write_patches GUARDED_BY(read_wait_mu);

  // Serialises set_max_pages (a store, a check, maybe the old value back).
  // A leaf lock: writers never take it; reserve_pages needs no lock.
  Mutex resize_mu;

  // progress_mu guards progress_epoch only; a leaf lock, taken by I/O
  // completions and the reclaimer, never held while anything else is taken.
  Mutex progress_mu;
  std::condition_variable progress_cv;
  uint64_t progress_epoch GUARDED_BY(progress_mu) = 0;

  // Declared late so that it is destroyed early: the device's destructor
  // runs the last completions, which touch the members above.
  const std::unique_ptr<swapdev::SwapDevice> swap;  // null: no swap
  const uint64_t swap_slots;                        // 0 without swap
  // Last: stopped first.
  std::unique_ptr<Reclaimer> reclaimer;
};

}  // namespace tmpfsd
