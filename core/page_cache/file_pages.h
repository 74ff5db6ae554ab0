// FilePagesImpl: one file's pages (the implementation behind FilePages,
// page_cache.h), and what its parts share. Internal to core/. Its methods
// are spread over one file per data path (docs/design.md, "Data paths"):
//   fault.cc      reserve frames, fault a range in, wait for busy pages
//   read.cc       read and readahead
//   write.cc      write
//   evict.cc      the reclaim pass and page_out_locked (one isolated page)
//   writeback.cc  a dirty page's swap write (Writeback), the copy of a page
//                 under writeback
//   swap_in.cc    asynchronous swap-in, pending writes
//   truncate.cc   truncate, punch hole, freeing pages
//   allocate.cc   fallocate
//   seek.cc       SEEK_DATA/SEEK_HOLE, where
//   page_cache.cc the helpers they share, FilePages (which forwards here),
//                 PageCache
// Design and states: pmap.h; locks: LOCKING.md.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>

#include "core/await.h"
#include "core/page_cache.h"
#include "core/page_cache/file_index.h"
#include "core/page_cache/frame_pool.h"
#include "core/page_cache/page_cache_state.h"
#include "core/page_cache/pmap.h"
#include "core/page_cache/reclaimer.h"
#include "core/page_cache/small_vec.h"
#include "swapdev/thread_annotations.h"

namespace tmpfsd {

// iovecs held inline by read(): 64 covers a 256 KiB read of scattered pages.
inline constexpr size_t kInlineIovecs = 64;

// Waits for a pending write (nullptr: nothing to wait for).
inline Status wait_for(FilePages::PendingWrite* w) {
  if (!w) return Status::ok();
  return await_callback<Status>([w](auto done) { FilePages::when_written(w, done); });
}

// ---------------------------------------------------------------------------
// FilePagesImpl
//
// mu_ guards index_ and every Pmap in it (frame, dirty) and the
// bytes of their frames: write, truncate, punch_hole, allocate hold it
// exclusive; read, seek_*, pages hold it shared. Readers pin the pmaps they
// reply from for the duration of the callback. Reclaim try-locks it
// exclusive (reclaimer.h). A read that must fault pages in takes it
// exclusive and replies under it.
//
// Two hand-overs without mu_ (pmap.h):
//   - a pmap under writeback (kWriteback set, pinned): its dirty bits and
//     its frame's slot belong to the write's completion, which takes no file
//     mutex; whoever holds mu_ and wants to change the page waits for
//     kWriteback to clear (wait_busy_locked), or, with
//     --writeback-conflict copy, writes into a copy of the page
//     (copy_under_writeback_locked);
//   - a pmap under swap-in (kReadPending, pinned by the read): its frame,
//     slot and dirty bits belong to the read's completion; writers wait,
//     or leave their bytes for it in the page wait table (defer_locked);
//   - a pmap isolated by reclaim (pinned, on no list): freeing it waits
//     until PmapLists::remove_idle() sees it unpinned.

class FilePagesImpl {
 public:
  explicit FilePagesImpl(PageCache::State& st, uint64_t serial = 0)
      : st_(st), serial_(serial ? take_serial(st, serial) : next_serial(st)), index_(&st.metadata) {
    st_.files.fetch_add(1, std::memory_order_relaxed);
    st_.metadata.fetch_add(sizeof(*this), std::memory_order_relaxed);
  }
  ~FilePagesImpl() {
    {
      WriterLock lock(mu_);
      free_range_locked(0, UINT64_MAX);
    }
    st_.metadata.fetch_sub(sizeof(*this), std::memory_order_relaxed);
    st_.files.fetch_sub(1, std::memory_order_relaxed);
  }

  void read(uint64_t off, size_t len, FilePages::ReadDone done);
  Result<FilePages::PendingWrite*> write(uint64_t off, std::span<const std::byte> data);
  void truncate(uint64_t old_size, uint64_t new_size);
  void punch_hole(uint64_t off, uint64_t len);
  Status allocate(uint64_t off, uint64_t len);
  std::optional<uint64_t> seek_data(uint64_t off, uint64_t size) const;
  std::optional<uint64_t> seek_hole(uint64_t off, uint64_t size) const;
  uint64_t where(uint64_t first, uint64_t end, std::span<PageRun> out, size_t* count) const;
  uint64_t end_present() const;
  // Lock-free (an atomic published under mu_ whenever pages come or go),
  // so that the namespace may ask while it holds Namespace::mu_.
  uint64_t pages() const { return pages_.load(std::memory_order_relaxed); }

  // The file's number for the swap device (swapdev::PageOwner::file):
  // unique in the mount for its life, so that the seal binds each swapped
  // page to its file as well as its index.
  uint64_t serial() const { return serial_; }
  void bindings(std::vector<FilePages::Binding>* out) const;
  Status adopt(std::span<const FilePages::Binding> bs);
  swapdev::PageOwner owner(uint64_t page) const { return {serial_, page}; }

  // Reclaim (reclaim_pass, evict.cc): the file's mutex, try-locked, and the
  // page-out of one isolated pmap under it.
  SharedMutex& mutex() RETURN_CAPABILITY(mu_) { return mu_; }
  PageOut page_out_locked(Pmap* p, ScanControl& sc) REQUIRES(mu_);

 private:
  // What a caller about to change pages does with one under writeback.
  enum class OnWriteback { kWait, kCopy };
  // A write's offer to leave the pages it covers only in part, and that are
  // under swap-in, to their completion (fault_range_locked): `pages` are
  // those it registered bytes for, in `write`.
  struct Deferral {
    uint64_t off;
    std::span<const std::byte> data;
    SmallVec<Pmap*, 2> pages;
    FilePages::PendingWrite* write = nullptr;
  };

  // What fault_range_locked is to do (one object, where a null pointer
  // among eight parameters used to change the behaviour).
  struct FaultRequest {
    uint64_t first = 0;  // pages [first, last]
    uint64_t last = 0;
    OnWriteback how = OnWriteback::kWait;
    // A write's; zeroing leaves them. for_write: zero pages get frames too,
    // and a swapped page that the bytes [off, end) cover whole is not read.
    // `extra` frames more (for the write's new pages) are reserved into
    // `frames`. `defer`: the write's offer of its bytes for pages under
    // swap-in that it covers in part (null: wait for them).
    bool for_write = false;
    uint64_t off = 0;
    uint64_t end = 0;
    uint64_t extra = 0;
    FramePool::Reservation frames;  // out, for_write only
    Deferral* defer = nullptr;
  };

  size_t page_size() const { return st_.page_size; }
  uint64_t page_mask() const { return st_.page_size - 1; }
  // Bits of the dirty bitmap covering bytes [from, to) of a page (from < to).
  uint64_t block_bits(size_t from, size_t to) const {
    const unsigned a = static_cast<unsigned>(from >> st_.block_shift);
    const unsigned b = static_cast<unsigned>((to - 1) >> st_.block_shift);
    const unsigned n = b - a + 1;
    return (n >= 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1)) << a;
  }
  // Data for SEEK_DATA: a page that was written (or is swapped, which
  // implies written); fallocated-only pages are holes, as on tmpfs.
  static bool is_data(PagePlace place) {
    if (place.is_pmap()) return place.pmap()->uptodate();
    return place != PagePlace::zero();
  }

  // page_cache.cc: a new pmap bound to a frame, a page's slot and dirty bits.
  Pmap* new_pmap_locked(uint64_t page, FramePool::Reservation& frames, bool* zeroed) REQUIRES(mu_);
  Pmap* bind_locked(uint64_t page, Frame* frame) REQUIRES(mu_);
  void drop_slot_locked(Pmap* p) REQUIRES(mu_);
  void dirty_locked(Pmap* p, uint64_t blocks) REQUIRES(mu_);

  // fault.cc: frames for a range, its pages made resident, busy pages waited for.
  // Pages that take a frame when faulted: a read leaves zero pages alone
  // (they read as zeros); a write needs a frame for them too.
  static bool wants_frame(PagePlace place, bool for_write) {
    return for_write ? place.needs_fault() : place.paged_out();
  }
  // May drop and re-take mu_ (to reclaim): callers re-read the index.
  Result<FramePool::Reservation> reserve_locked(uint64_t first, uint64_t last, uint64_t extra,
                                                bool for_write) REQUIRES(mu_);
  Status fault_range_locked(FaultRequest& req) REQUIRES(mu_);
  void wait_busy_locked(uint64_t first, uint64_t last, OnWriteback how = OnWriteback::kWait,
                        std::span<Pmap* const> skip = {}) REQUIRES(mu_);

  // read.cc: the reply's iovecs, readahead.
  void collect_locked(uint64_t off, size_t len, SmallVec<iovec, kInlineIovecs>& iov,
                      SmallVec<Pmap*, kInlineIovecs>& pins, bool* ra_hit) REQUIRES_SHARED(mu_);
  void readahead_locked(uint64_t from, uint64_t count) REQUIRES(mu_);
  uint64_t readahead_window(uint64_t pages) const;

  // swap_in.cc: a slot read into a frame, its waiters and pending writes.
  void submit_swap_in_locked(Pmap* p) REQUIRES(mu_);
  Pmap* start_swap_in_locked(uint64_t page, Frame* frame, swapdev::SwapSlot slot) REQUIRES(mu_);
  bool await_locked(Pmap* p, ReadRequest* r) REQUIRES(mu_);
  bool defer_locked(std::span<Pmap* const> pages, Deferral& d) REQUIRES(mu_);

  // writeback.cc: page_out_locked's dirty page, and a writer's copy of a
  // page under writeback.
  PageOut write_back_locked(Pmap* p, ScanControl& sc) REQUIRES(mu_);
  bool copy_under_writeback_locked(Pmap* p) REQUIRES(mu_);

  // truncate.cc
  void zero_in_page_locked(uint64_t page, size_t from, size_t to) REQUIRES(mu_);
  void free_range_locked(uint64_t first, uint64_t last) REQUIRES(mu_);

  PageCache::State& st_;
  static uint64_t next_serial(PageCache::State& st) {
    return st.next_file_serial.fetch_add(1, std::memory_order_relaxed);
  }
  // `serial` itself; later files get serials past it.
  static uint64_t take_serial(PageCache::State& st, uint64_t serial) {
    uint64_t next = st.next_file_serial.load(std::memory_order_relaxed);
    while (next <= serial && !st.next_file_serial.compare_exchange_weak(
                                 next, serial + 1, std::memory_order_relaxed)) {
    }
    return serial;
  }
  const uint64_t serial_;  // see serial()
  mutable SharedMutex mu_;
  FileIndex index_ GUARDED_BY(mu_);
  // Page after the last read's end: a read starting there is sequential
  // (readahead). A hint only, hence no lock.
  std::atomic<uint64_t> next_page_{0};
  // index_.size(), for pages(): stored under mu_ exclusive by every change
  // that adds or removes pages (publish_pages_locked).
  std::atomic<uint64_t> pages_{0};
  void publish_pages_locked() REQUIRES(mu_) {
    pages_.store(index_.size(), std::memory_order_relaxed);
  }
};

}  // namespace tmpfsd
