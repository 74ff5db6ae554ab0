// FramePool: the frames of one mount -- the only memory that counts against
// --memory (docs/design.md, "Memory and space").
//
// All frames are carved from ONE region reserved with mmap(MAP_PRIVATE |
// MAP_ANONYMOUS | MAP_NORESERVE) of frames_total * frame_size bytes, so that
// a frame's number is its offset / frame_size; its size is fixed for the
// life of the pool (hence --memory cannot change while mounted). The region
// costs nothing until a frame is touched; a freed frame's memory goes back
// to the OS with madvise(MADV_DONTNEED), so the daemon's RSS follows
// frames_used. It is not registered with io_uring as fixed buffers
// (PageCache::create in page_cache.cc says why), though region() would allow
// it: swapdev reads and writes frames with plain readv/writev.
//
// Free frames sit on one of two stacks:
//   warm  freed recently, memory still mapped, contents stale. At most
//         kWarmFrames of them; reused first (no page fault, no zeroing by
//         the kernel). When the stack is full, the whole batch is sorted and
//         madvised in coalesced ranges and moves to `cold`: one syscall per
//         run instead of one per frame (tests/core/frame_pool_test.cc
//         measures both).
//   cold  never touched or madvised: reads as zeros.
// take() says whether the frame it returns is known to be zero.
//
// Prefaulting (start_prefault): the first write to a cold frame takes a page
// fault, in which the kernel allocates and zeroes a page. On the FUSE write
// path that fault costs more than the copy itself (fio, 1 GiB of 1 MiB
// O_DIRECT writes through --memory 2G: 1,127 MB/s into cold frames,
// 2,950-3,475 MB/s into warm ones; the gain needs daemon/main.cc's malloc
// settings as well, see there). So a PageCache with a swap
// device, whose frames never go cold again once used, starts a thread that
// keeps the next `window` frames the cold stack will hand out faulted in
// ahead of the writers, with madvise(MADV_POPULATE_WRITE). That never
// changes a byte (a populated cold frame still reads as zeros), so it needs
// no lock while it runs and cannot race with the frame's new owner; the
// price is up to `window` frames of RSS beyond the frames used.
//
// Reservation, not allocation, is the unit of the budget: a write first
// reserves every frame it may need (all or nothing), then takes them one by
// one; an untaken reservation is returned when it goes out of scope. So the
// budget is never exceeded and a write never fails half way for lack of
// frames.
//
// Invariants (mu_): warm_.size() + cold_.size() == frames_total - used_;
// reserved_ <= warm_.size() + cold_.size(); a frame is in at most one stack;
// a free frame has owner() == nullptr.
//
// Locks: mu_ is the innermost lock of core/ (LOCKING.md); nothing is called
// out while holding it except madvise on frames that nobody owns.
// Threads: any; and the prefault thread, which holds mu_ only to pick its
// next run, never while it populates.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <stop_token>
#include <thread>
#include <vector>

#include "core/result.h"
#include "swapdev/page_source.h"
#include "swapdev/swap_device.h"
#include "swapdev/thread_annotations.h"
#include "swapdev/zpool.h"

namespace tmpfsd {

class Pmap;

// One page of frame memory. Lives in FramePool's descriptor array; its
// address is its identity and never changes. `owner` points back to the Pmap
// whose data it holds, so the contents can move to another frame by copying
// and updating the Pmap's frame and this pointer.
class alignas(8) Frame {
 public:
  std::span<std::byte> bytes() const { return mem_; }
  Pmap* owner() const { return owner_; }
  void set_owner(Pmap* p) { owner_ = p; }  // by the owner's file, exclusive

  // The swap cache: the slot that holds a copy of this frame's bytes, or an
  // invalid SwapSlot: all of them while the owner is clean, all but the
  // dirty blocks while it is partly dirty (pmap.h). Written under the
  // owner's file mutex held exclusive, except while the owner is under
  // writeback or swap-in, when that I/O's completion owns it (pmap.h).
  swapdev::SwapSlot swap_slot() const { return slot_; }
  bool has_slot() const { return slot_.valid(); }
  void set_swap_slot(swapdev::SwapSlot s) { slot_ = s; }
  void clear_swap_slot() { slot_ = swapdev::SwapSlot(); }

 private:
  friend class FramePool;
  std::span<std::byte> mem_;  // constant after construction
  Pmap* owner_ = nullptr;     // nullptr while free
  swapdev::SwapSlot slot_;    // see swap_slot(); invalid: none
};

class FramePool {
 public:
  // Frames that may be freed but not yet madvised (see above).
  static constexpr size_t kWarmFrames = 64;

  // EINVAL for frames_total >= 2^32, ENOMEM when mmap fails. frames_total may
  // be 0 (every reservation then fails).
  static Result<std::unique_ptr<FramePool>> create(size_t frame_size, uint64_t frames_total);
  ~FramePool();  // asserts every frame was freed
  FramePool(const FramePool&) = delete;
  FramePool& operator=(const FramePool&) = delete;

  struct Taken {
    Frame* frame;
    bool zeroed;  // memory known to read as zeros
  };

  // Frames promised to one caller. Movable, not copyable.
  class Reservation {
   public:
    Reservation() = default;
    Reservation(Reservation&& o) noexcept : pool_(o.pool_), left_(o.left_) { o.left_ = 0; }
    Reservation& operator=(Reservation&& o) noexcept;
    ~Reservation() { release(); }
    uint64_t left() const { return left_; }
    // One of the reserved frames; left() must be > 0.
    Taken take();
    // Gives back what was not taken.
    void release();

   private:
    friend class FramePool;
    Reservation(FramePool* p, uint64_t n) : pool_(p), left_(n) {}
    FramePool* pool_ = nullptr;
    uint64_t left_ = 0;
  };

  // n frames or nothing (nullopt-like: ok() false); with `keep`, only if
  // `keep` more stay available after them.
  Result<Reservation> reserve(uint64_t n, uint64_t keep = 0);
  // Returns a frame that was taken. Its owner must already be cleared.
  void free(Frame* f);
  // How many free frames stay warm before a batch is madvised (default
  // kWarmFrames). With a swap device the frames are a cache in constant
  // churn: PageCache keeps them all warm, so a frame freed by reclaim is
  // reused without a page fault and a zeroing by the kernel (RSS then
  // follows the most frames ever used, never more than --memory).
  void set_warm_limit(size_t n);
  // madvises every warm frame now (tests, and later the Reclaimer when idle).
  void trim();
  // Starts the prefault thread (see above): once the first frame has been
  // taken, the next `window` frames that take() will hand out from the cold
  // stack are faulted in ahead (all but less than one run of them, once the
  // thread has caught up), in runs of at most kPrefaultRun frames. Call at
  // most once. A kernel without MADV_POPULATE_WRITE (before 5.14) leaves it
  // off.
  void start_prefault(uint64_t window);
  static constexpr uint64_t kPrefaultRun = 256;
  // Frames the prefault thread has faulted in so far.
  uint64_t frames_prefaulted() const { return prefaulted_.load(std::memory_order_relaxed); }

  size_t frame_size() const { return frame_size_; }
  uint64_t frames_total() const { return frames_total_; }
  uint64_t frames_used() const { return used_.load(std::memory_order_relaxed); }
  // Frames neither taken nor promised: what reserve() could hand out now
  // (the Reclaimer's watermarks are on this).
  uint64_t frames_available() {
    MutexLock lock(mu_);
    return warm_.size() + cold_.size() - reserved_;
  }
  uint64_t madvise_calls() const { return madvise_calls_.load(std::memory_order_relaxed); }
  // Bytes of descriptors and free stacks: fixed metadata of the pool.
  uint64_t metadata_bytes() const;
  // The whole region and a frame's number in it.
  std::span<std::byte> region() const { return {base_, frame_size_ * frames_total_}; }
  uint32_t number(const Frame* f) const { return static_cast<uint32_t>(f - frames_.data()); }
  // The frame whose memory contains `p` (a byte of the region), or nullptr.
  Frame* frame_at(const std::byte* p) {
    if (p < base_ || p >= base_ + frame_size_ * frames_total_) return nullptr;
    return &frames_[static_cast<size_t>(p - base_) / frame_size_];
  }

 private:
  FramePool(size_t frame_size, uint64_t frames_total, std::byte* base);
  void unreserve(uint64_t n);
  void cool_warm_locked() REQUIRES(mu_);
  void prefault_loop(std::stop_token st);
  bool prefault_due_locked() const REQUIRES(mu_);
  // Frames ever taken from the cold stack while none went back to it: the
  // next cold frame is frames_total_ - cold_.size() (the stack holds the
  // untouched end of the region, lowest on top).
  uint64_t cold_taken_locked() const REQUIRES(mu_) { return frames_total_ - cold_.size(); }

  // Constant after construction.
  const size_t frame_size_;
  const uint64_t frames_total_;
  std::byte* const base_;
  std::vector<Frame> frames_;

  Mutex mu_;
  std::vector<uint32_t> warm_ GUARDED_BY(mu_);  // capacity warm_limit_
  size_t warm_limit_ GUARDED_BY(mu_) = kWarmFrames;
  std::vector<uint32_t> cold_ GUARDED_BY(mu_);  // capacity frames_total
  uint64_t reserved_ GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> used_{0};           // written under mu_
  std::atomic<uint64_t> madvise_calls_{0};  // written under mu_
  // Prefaulting: frames [0, prefault_end_) have been populated; the thread
  // waits on prefault_cv_ (with mu_) until take() moves the window a whole
  // run past it (prefault_due_locked), then fills the window.
  uint64_t prefault_window_ GUARDED_BY(mu_) = 0;  // 0: no prefault thread
  uint64_t prefault_end_ GUARDED_BY(mu_) = 0;
  std::condition_variable_any prefault_cv_;
  std::atomic<uint64_t> prefaulted_{0};
  std::jthread prefault_thread_;  // stopped and joined first in ~FramePool
};

// The frame pool as a swapdev::PageSource: where a swap device that keeps
// pages in memory (the compressed pool) takes them, so that they count
// against --memory. Its frames have no owner (no Pmap).
class FramePages final : public swapdev::PageSource {
 public:
  // Frames kept promised to the pool beyond what it holds: when every frame
  // holds a dirty page (writers took them all before reclaim ran), the
  // first page reclaim compresses still finds a frame to start a span in;
  // that page's frame then comes free, and the next ones. Without it a pool
  // with no swap file behind it could never start (a ZPool span takes up to
  // kMaxSpanFrames frames at once).
  static constexpr size_t kSpare = swapdev::ZPool::kMaxSpanFrames;

  explicit FramePages(FramePool& pool) : pool_(pool) {}
  size_t page_size() const override { return pool_.frame_size(); }
  // Called by one ZPool, under its lock: no lock of its own.
  std::byte* take() override {
    if (auto r = pool_.reserve(1)) {
      top_up();
      return r.value().take().frame->bytes().data();
    }
    if (spare_.empty()) {
      // Not even a spare: the first call, or every frame taken since.
      top_up();
      if (spare_.empty()) return nullptr;
    }
    std::byte* page = spare_.back().take().frame->bytes().data();
    spare_.pop_back();
    return page;
  }
  void give(std::byte* page) override {
    pool_.free(pool_.frame_at(page));
    top_up();
  }
  void keep_spare() override { top_up(); }

 private:
  // Promises kSpare frames (those free) to the pool; again after each
  // take() and give().
  void top_up() {
    while (spare_.size() < kSpare) {
      auto r = pool_.reserve(1);
      if (!r) break;
      spare_.push_back(std::move(r.value()));
    }
  }

  FramePool& pool_;
  std::vector<FramePool::Reservation> spare_;  // one frame each
};

}  // namespace tmpfsd
