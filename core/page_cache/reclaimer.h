// Reclaimer: keeps frames free by paging pmaps out to the swap device (the
// seed's kswapd; docs/design.md, "evict"). The evict path's code is
// evict.cc; the lists, lru.h; the swap write, writeback.cc.
//
// The problem. Frames (--memory) are far fewer than pages (size=). A write
// needs frames now; the bytes of a page no one uses should be in the swap
// file instead. Which pages are "not used" is guessed as Linux does, with
// two lists and a referenced bit (second chance):
//
//          new / faulted pages                 referenced on the inactive tail
//   write ---------------> [ inactive ] <-tail-- isolate --------------+
//                             ^    |                                    v
//       deactivate (ageing,   |    | not referenced, not pinned   [ active ]
//       referenced cleared) --+    v                                    |
//     from the active tail     page_out_locked():                       |
//     while inactive < active    clean + slot  -> drop frame, compact   |
//                                clean, no slot-> drop frame, zero word |
//                                dirty         -> Writeback (async)     |
//                                                   on completion: slot |
//                                                   bound, inactive tail|
//
// A pass (reclaim_pass) isolates a batch from the inactive tail under the
// LRU lock (pinning each), drops it, and then try-locks each victim's file
// (never blocks: the lock order is file -> LRU), re-checks the pmap
// (io_count == 1: only our pin; referenced) and pages it out, or puts it
// back. Writes of one pass go out under one swapdev::IoBatch, and a dirty
// page whose predecessor in the same file was just given slot s asks for
// s + 1, so neighbouring pages of a file end up in consecutive slots and the
// device merges them into one I/O.
//
// Who runs passes:
//   - the Reclaimer thread (this class): keeps frames_available() >= high;
//     below `clean` (a higher watermark) it only cleans (writes dirty pages,
//     keeps their frames) so that reclaim later finds clean pages to drop;
//     in front of a device that keeps pages in memory (keeps_pages(), the
//     compressed pool) `clean` is lower, a sixteenth of the frames, as a
//     page cleaned there is held twice until its frame is dropped;
//   - direct reclaim (direct_reclaim): a write or fault that cannot reserve
//     its frames, after dropping its file mutex. That is what guarantees
//     progress under any load; the thread only keeps writers off that path.
//
// Progress and ENOSPC: direct_reclaim gives up (the caller's ENOSPC) only
// after many passes in a row freed nothing, submitted nothing and had no
// writeback in flight: every page is dirty and the swap is full (or writes
// fail), or every frame is pinned by readers for good. Writeback in flight
// always completes (completions take no file mutex), so waiting for it
// cannot deadlock.
//
// Threads: the Reclaimer thread; direct_reclaim on any thread that holds no
// core/ lock (it may hold Inode::data_mu: reclaim never takes it).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <stop_token>
#include <thread>

#include "core/page_cache.h"
#include "swapdev/thread_annotations.h"

namespace tmpfsd {

// One pass's parameters and results (Linux's scan_control).
struct ScanControl {
  bool evict = true;        // false: clean only (write dirty pages, keep frames)
  bool background = false;  // counted as background cleaning
  size_t batch = 32;        // pmaps isolated per pass
  // Results.
  uint64_t freed = 0;       // frames dropped
  uint64_t submitted = 0;   // pages sent to writeback
  bool swap_full = false;   // an allocation of a slot failed
  uint64_t locked_out = 0;  // put back: their file's mutex was held
  // Slot hint: the last page given a slot in this pass.
  const void* last_file = nullptr;
  uint64_t last_index = 0;
  uint64_t last_slot = 0;
};

// What paging one isolated page out did with it, and so who owns it now
// (Linux's pageout() result): FilePagesImpl::page_out_locked.
enum class PageOut : uint8_t {
  kKept,       // back on the inactive list: busy, clean-only pass, or
               // writeback already at its cap
  kActivated,  // referenced since the last scan: to the active head
  kFreed,      // frame dropped: the page is swapped (or a zero page)
  kWriteback,  // under writeback: the I/O owns the pin now
  kSwapFull,   // dirty and no slot free: to the active head
};

// One pass over the inactive tail (evict.cc). Requires a swap device.
void reclaim_pass(PageCache::State& st, ScanControl& sc);
// Reclaims until `frames` are available or nothing more can be done; false
// in the latter case. Call with no core/ lock held.
bool direct_reclaim(PageCache::State& st, uint64_t frames);

class Reclaimer {
 public:
  explicit Reclaimer(PageCache::State& st);
  ~Reclaimer();  // stops and joins the thread
  Reclaimer(const Reclaimer&) = delete;
  Reclaimer& operator=(const Reclaimer&) = delete;

  // Wakes the thread (a writer saw frames below `high`). Cheap when awake.
  void kick();
  uint64_t high() const { return high_; }
  uint64_t clean() const { return clean_; }

 private:
  void run(std::stop_token st);

  PageCache::State& st_;
  // Pmaps per pass of the thread: 256 pages of a sequentially written file
  // leave as one 1 MiB write (the device's merge cap), where the default
  // 32 sent 128 KiB ones (146 KiB on average, up to 148 in flight).
  static constexpr size_t kBatch = 256;
  const uint64_t high_;   // keep at least this many frames available
  const uint64_t clean_;  // below this many available, write dirty pages back (>= high_)
  Mutex mu_;
  std::condition_variable_any cv_;
  bool kicked_ GUARDED_BY(mu_) = false;
  std::jthread thread_;  // last: started after everything above
};

}  // namespace tmpfsd
