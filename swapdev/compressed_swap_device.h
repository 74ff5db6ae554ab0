// CompressedSwapDevice: a compressed pool in memory in front of another
// SwapDevice (the swap file, or the file and the remote pool), as zswap is
// in front of the kernel's swap device (docs/design.md, "The compressed
// tier").
//
// Slots are the backing device's: allocate() and free() go there, so a
// page keeps the name (slot) it would have had, and moving a page from the
// pool to the backing device changes no page word. A write compresses each
// page (codec.h); one that shrinks to at most max_object bytes is kept in
// the pool (zpool.h), whose memory comes from the page cache's frames
// (use_pages), at most max_pages of them; any other page, or every page
// while the pool is full or has no memory yet, is written to the backing
// slot. A read of a pooled slot decompresses into the caller's page at
// once; any other read goes to the backing device.
//
// Incompressible files are not compressed page after page: once
// kRejectsBeforeSkip pages in a row of one file (PageOwner::file) have been
// rejects, only one page in kProbeEvery of that file is tried, the others
// go to the backing slot untried (zpool_skipped), until a probe compresses.
// A small table of recent files (kStreaks, by hash) keeps the runs.
//
// A full pool writes its oldest pages on to their backing slots
// (kWritebackBatch at a time, from the write that found it full) and the
// new page then takes the room they leave, as in zswap: the pool keeps the
// pages evicted last. The
// object is decompressed into a heap page that serves reads of the slot
// until the backing write completes; a write or free of the slot meanwhile
// wins (the completion sees the entry's generation moved and only cleans
// up; a free's backing slot is freed then).
//
// With no swap file (Options::pool_only: the backing device is a
// SlotOnlyDevice, slot numbers and no medium) the pool is the only place a
// page can go: nothing is written back, and a page that does not compress
// or finds the pool full fails its write with -ENOSPC (it stays in its
// frame). So that reclaim does not compress the same unfit pages over and
// over, allocate() answers "full" for kRefuseFor once kMissesBeforeFull
// pages in a row have missed the pool, or until a slot is freed.
//
// The pool holds plaintext, as frames do: it is memory, not a medium.
// Sealing stays the backing device's business.
//
// Per slot:   not here ──write fits──> pooled ──full, oldest──> writing
//               ^  <─────free────────┘  ^  <──write (new gen)─┘  │
//               └──────────────────── completion ────────────────┘
//
// Locks: mu_ guards the slot map and the bounce pages; held over a pool
// store/load (ZPool::mu_ inside it, then the frame pool's lock), never while
// a callback runs or the backing device is called.
// Threads: any thread may call anything; callbacks of pooled pages run on
// the calling thread before write()/read() return, the others on the
// backing device's completion thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>

#include "swapdev/codec.h"
#include "swapdev/swap_device.h"
#include "swapdev/thread_annotations.h"
#include "swapdev/zpool.h"

namespace tmpfsd::swapdev {

class CompressedSwapDevice final : public SwapDevice {
 public:
  static constexpr unsigned kWritebackBatch = 16;
  static constexpr unsigned kMissesBeforeFull = 32;
  static constexpr std::chrono::milliseconds kRefuseFor{50};
  static constexpr uint32_t kRejectsBeforeSkip = 8;
  static constexpr uint32_t kProbeEvery = 16;
  static constexpr size_t kStreaks = 64;

  struct Options {
    CodecKind codec = CodecKind::kLz4;
    size_t max_object = 0;   // compressed bytes a kept page may take; 0: 3/4 of a page
    uint64_t max_pages = 0;  // memory pages the pool may hold
    bool pool_only = false;  // the backing device has no medium (SlotOnlyDevice)
  };

  CompressedSwapDevice(std::unique_ptr<SwapDevice> backing, const Options& opt);
  ~CompressedSwapDevice() override;

  size_t page_size() const override { return backing_->page_size(); }
  uint64_t total_slots() const override { return backing_->total_slots(); }
  unsigned min_block_shift() const override { return backing_->min_block_shift(); }
  SlotRun allocate(uint32_t want, SwapSlot hint = {}) override;
  void free(SwapSlot first, uint32_t count = 1) override;
  using SwapDevice::read;
  using SwapDevice::write;
  using SwapDevice::write_blocks;
  void write(SwapSlot first, ConstPages pages, PageOwner owner, IoDone done) override;
  void read(SwapSlot first, MutablePages pages, PageOwner owner, IoDone done) override;
  void write_blocks(SwapSlot slot, std::span<const std::byte> page, PageOwner owner,
                    uint64_t block_mask, unsigned block_shift, IoDone done) override;
  bool sealed() const override { return backing_->sealed(); }
  void flush() override { backing_->flush(); }
  SwapCounters counters() const override;
  void inject_errors(uint32_t n, int err) override { backing_->inject_errors(n, err); }
  bool is_remote(SwapSlot s) const override { return backing_->is_remote(s); }
  bool plugs(const SwapDevice* dev) const override {
    return dev == backing_.get() || backing_->plugs(dev);
  }
  void use_pages(PageSource* pages) override;
  bool keeps_pages() const override { return true; }

  SwapDevice& backing() { return *backing_; }
  // Whether `slot` is in the pool now (or being written on from it).
  bool pooled(SwapSlot slot) const override;

 private:
  struct Entry {
    ZHandle h;                    // the object; invalid while writing back
    uint32_t gen = 0;             // moves with every write of the slot
    std::byte* bounce = nullptr;  // writing back: the page, serving reads
    PageOwner owner;              // whose page (the backing write seals with it)
    bool same = false;            // a same-filled page (its object is the word)
    bool inflight = false;        // the write-back of `bounce` is in flight
    bool freed = false;           // freed while writing back: free the slot after
    // A backing write of the slot that waits for the write-back in flight
    // (two requests on one slot at once are not allowed): submitted by its
    // completion.
    std::function<void()> deferred;
  };
  struct Aggregate;

  // Keeps `page` in the pool if it fits; false: it goes to the backing slot
  // (*full set when the pool had no room rather than the page too little).
  bool keep(uint64_t slot, std::span<const std::byte> page, PageOwner owner, bool* full);
  // Puts the compressed `object` in the pool as the slot's copy: 0,
  // -ENOSPC (full), -ENODEV (no memory yet).
  int store(uint64_t slot, std::span<const std::byte> object, PageOwner owner, bool same);
  // Whether to try compressing a page of `file` (the reject runs), and the
  // outcome of a try.
  bool worth_trying(uint64_t file);
  void tried(uint64_t file, bool compressed);
  // The slot's page from the pool into `page`: 0, -EIO (does not
  // decompress), or 1 when the slot is not pooled.
  int load(uint64_t slot, std::span<std::byte> page);
  // True when none of the `n` slots from `first` is pooled or being
  // written on from the pool: their I/O is the backing device's alone.
  bool none_here(SwapSlot first, size_t n) const;
  // Drops the slot's pooled copy, if any (before a backing write of it).
  void forget(uint64_t slot);
  // Starts writing the oldest pooled pages on to their backing slots.
  void write_back_oldest();
  void written_back(uint64_t slot, uint32_t gen, std::byte* bounce, int err);
  void release_locked(Entry& e) REQUIRES(mu_);
  // Pool only: a write kept a page in the pool (any_kept) and then `n`
  // pages in a row missed it.
  void missed(bool any_kept, size_t n);

  // Constant after construction.
  const std::unique_ptr<SwapDevice> backing_;
  const PageCodec codec_;
  const size_t max_object_;
  const uint64_t max_pages_;
  const bool pool_only_;

  mutable Mutex mu_;
  std::unique_ptr<ZPool> pool_ GUARDED_BY(mu_);  // null until use_pages
  std::unordered_map<uint64_t, Entry> slots_ GUARDED_BY(mu_);
  uint64_t same_filled_ GUARDED_BY(mu_) = 0;
  std::atomic<uint64_t> stored_{0}, rejects_{0}, skipped_{0}, full_{0}, writebacks_{0}, loads_{0};
  // Reject runs of recent files, at file % kStreaks: the file and its run
  // (pages in a row rejected or skipped). Racy on purpose: a lost update
  // costs one compression more or less.
  struct Streak {
    std::atomic<uint64_t> file{0};
    std::atomic<uint32_t> run{0};
  };
  std::array<Streak, kStreaks> streaks_;
  std::atomic<unsigned> writing_{0};  // write-backs in flight
  // Pool only: pages that missed the pool since one went in or a slot was
  // freed, and until when allocate() refuses (steady clock, ns; 0: no).
  std::atomic<uint64_t> misses_{0};
  std::atomic<int64_t> refuse_until_{0};
};

}  // namespace tmpfsd::swapdev
