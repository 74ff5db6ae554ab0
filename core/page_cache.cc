// The page cache: FilePages (one file's pages) and PageCache (the mount).
// Design and states: pmap.h; the index: file_index.h; locks: LOCKING.md.
#include "core/page_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <condition_variable>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/await.h"
#include "core/file_index.h"
#include "core/frame_pool.h"
#include "core/page_cache_state.h"
#include "core/pmap.h"
#include "core/reclaimer.h"
#include "core/small_vec.h"
#include "swapdev/swap_device.h"

namespace tmpfsd {

namespace {

// Largest byte offset + 1 a file may reach (MAX_LFS_FILESIZE).
constexpr uint64_t kMaxFileBytes = (uint64_t{1} << 63) - 1;
// Bytes of the shared zero region that holes are read from: large enough
// that a hole of a whole FUSE read (1 MiB) is a handful of iovecs.
constexpr size_t kZeroRegionBytes = 256 * 1024;
// iovecs held inline by read(): 64 covers a 256 KiB read of scattered pages.
constexpr size_t kInlineIovecs = 64;

// Waits for a pending write (nullptr: nothing to wait for).
Status wait_for(FilePages::PendingWrite* w) {
  if (!w) return Status::ok();
  return await_callback<Status>([w](auto done) { FilePages::when_written(w, done); });
}

// Pages in writeback at once, at most (a quarter of the frames): the rest of
// the frames stay available for faults and writers.
uint64_t writeback_cap(const PageCache::State& st) {
  return std::max<uint64_t>(8, st.pool->frames_total() / 4);
}

}  // namespace

// ---------------------------------------------------------------------------
// PageCache::State

PageCache::State::State(const PageCacheConfig& c, unsigned shift, std::unique_ptr<FramePool> p,
                        std::span<const std::byte> zero_region,
                        std::unique_ptr<swapdev::SwapDevice> dev)
    : page_size(c.page_size),
      page_shift(shift),
      block_shift(std::max(9u, shift - 6)),
      all_blocks(block_shift + 6 <= shift ? ~uint64_t{0}
                                          : (uint64_t{1} << (uint64_t{1} << (shift - block_shift))) - 1),
      max_pages(c.max_pages),
      writeback_copy(c.writeback_copy),
      pool(std::move(p)),
      zeros(zero_region),
      swap(std::move(dev)),
      swap_slots(swap ? swap->total_slots() : 0) {}

PageCache::State::~State() {
  reclaimer.reset();  // first: it runs passes over everything below
  assert(files.load() == 0 && pages_allocated.load() == 0 && pages_resident.load() == 0);
  assert(pages_swapped.load() == 0 && writeback_in_flight.load() == 0);
  munmap(const_cast<std::byte*>(zeros.data()), zeros.size());
}

bool PageCache::State::reserve_pages(uint64_t n) {
  if (n == 0) return true;
  uint64_t cur = pages_allocated.load(std::memory_order_relaxed);
  // With swap, at most one page per slot: then every dirty page can always
  // get a slot (slots in use <= pages - dirty pages), so reclaim can always
  // free a frame and a read of a swapped page never waits forever behind a
  // memory full of dirty pages. Frames are a cache; the slots are the space.
  const uint64_t cap = swap ? swap_slots : 0;
  do {
    if (max_pages != 0 && (cur > max_pages || max_pages - cur < n)) return false;
    if (cap != 0 && (cur > cap || cap - cur < n)) return false;
  } while (!pages_allocated.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed));
  return true;
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
//     kWriteback to clear (wait_busy_locked: DESIGN.md's "wait"), or,
//     with --writeback-conflict copy, writes into a copy of the page
//     (copy_under_writeback_locked);
//   - a pmap under swap-in (kReadPending, pinned by the read): its frame,
//     slot and dirty bits belong to the read's completion; writers wait,
//     or leave their bytes for it in the page wait table (defer_locked);
//   - a pmap isolated by reclaim (pinned, on no list): freeing it waits
//     until PmapLists::remove_idle() sees it unpinned.

class FilePagesImpl {
 public:
  explicit FilePagesImpl(PageCache::State& st) : st_(st), index_(&st.metadata) {
    st_.files.fetch_add(1, std::memory_order_relaxed);
    st_.metadata.fetch_add(sizeof(*this), std::memory_order_relaxed);
  }
  ~FilePagesImpl() {
    {
      std::unique_lock lock(mu_);
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
  uint64_t pages() const {
    std::shared_lock lock(mu_);
    return index_.size();
  }

  // Reclaim (reclaim_pass): the file's mutex, try-locked, and the page-out
  // of one isolated pmap under it.
  std::shared_mutex& mutex() { return mu_; }
  void page_out_locked(Pmap* p, ScanControl& sc);

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
  static bool is_data(PagePlace w) {
    if (w.is_pmap()) return w.pmap()->uptodate();
    return w != PagePlace::zero();
  }
  
  Pmap* new_pmap_locked(uint64_t page, FramePool::Reservation& frames, bool* zeroed);
  Pmap* bind_locked(uint64_t page, Frame* frame);
  template <class Wants>
  Result<FramePool::Reservation> reserve_locked(std::unique_lock<std::shared_mutex>& lock,
                                                uint64_t first, uint64_t last, uint64_t extra,
                                                Wants&& wants);
  Status fault_range_locked(std::unique_lock<std::shared_mutex>& lock, uint64_t first,
                            uint64_t last, uint64_t off, uint64_t end, uint64_t extra,
                            FramePool::Reservation* extra_out, OnWriteback how,
                            Deferral* defer = nullptr);
  bool defer_locked(std::span<Pmap* const> pages, Deferral& d);
  void submit_swap_in_locked(Pmap* p);
  Pmap* start_swap_in_locked(uint64_t page, Frame* frame, swapdev::SwapSlot slot);
  bool await_locked(Pmap* p, ReadRequest* r);
  void collect_locked(uint64_t off, size_t len, SmallVec<iovec, kInlineIovecs>& iov,
                      SmallVec<Pmap*, kInlineIovecs>& pins, bool* ra_hit);
  void readahead_locked(uint64_t from, uint64_t count);
  uint64_t readahead_window(uint64_t pages) const;
  void wait_busy_locked(uint64_t first, uint64_t last, OnWriteback how = OnWriteback::kWait,
                        std::span<Pmap* const> skip = {});
  bool copy_under_writeback_locked(Pmap* p);
  void drop_slot_locked(Pmap* p);
  void dirty_locked(Pmap* p, uint64_t blocks);
  void zero_in_page_locked(std::unique_lock<std::shared_mutex>& lock, uint64_t page, size_t from,
                           size_t to);
  void free_range_locked(uint64_t first, uint64_t last);

  PageCache::State& st_;
  mutable std::shared_mutex mu_;
  FileIndex index_;  // guarded by mu_
  // Page after the last read's end: a read starting there is sequential
  // (readahead). A hint only, hence no lock.
  std::atomic<uint64_t> next_page_{0};
};

Pmap* FilePagesImpl::new_pmap_locked(uint64_t page, FramePool::Reservation& frames,
                                     bool* zeroed) {
  FramePool::Taken t = frames.take();
  Pmap* p = bind_locked(page, t.frame);
  index_.set(page, PagePlace::resident(p));
  *zeroed = t.zeroed;
  return p;
}

// A new Pmap for `page` bound to `frame` (resident). The caller stores it
// in the index and adds it to the lists.
Pmap* FilePagesImpl::bind_locked(uint64_t page, Frame* frame) {
  auto* p = new Pmap(this, page);
  st_.metadata.fetch_add(sizeof(Pmap), std::memory_order_relaxed);
  p->set_frame(frame);
  frame->set_owner(p);
  st_.pages_resident.fetch_add(1, std::memory_order_relaxed);
  return p;
}

// Waits until no pmap in [first, last] is under writeback or swap-in or
// pinned by a reply. The completions take no file mutex, so waiting with
// mu_ held cannot deadlock. kCopy (writes, with writeback_copy): a page
// under writeback is copied to a new frame instead when one is free now
// (copy_under_writeback_locked); the caller then writes into the copy.
// `skip`: pages under swap-in that the caller's write leaves to their
// completion (Deferral).
void FilePagesImpl::wait_busy_locked(uint64_t first, uint64_t last, OnWriteback how,
                                     std::span<Pmap* const> skip) {
  const bool copy = how == OnWriteback::kCopy && st_.writeback_copy;
  for (bool waited = false;;) {
    bool busy = false;
    bool on_writeback = false;
    index_.visit_range(first, last + 1, [&](uint64_t, PagePlace w) {
      if (w.is_pmap()) {
        Pmap* p = w.pmap();
        if (std::ranges::find(skip, p) != skip.end()) return true;
        // Only the writeback's pin: nobody replies from the frame.
        if (copy && p->writeback() && p->io_count() == 1 &&
            (p->copied() || copy_under_writeback_locked(p))) {
          return true;
        }
        // io_count: also a reply in flight from this page (an
        // asynchronous read's pins): a write waits for it, so a reply
        // never carries half-old, half-new bytes. Reclaim's pins are
        // transient (it cannot take mu_ from us and puts the page back).
        busy = p->writeback() || p->read_pending() || p->io_count() != 0;
        on_writeback = p->writeback();
      }
      return !busy;
    });
    if (!busy) return;
    if (!waited && on_writeback) st_.writeback_waits.fetch_add(1, std::memory_order_relaxed);
    waited = true;
    st_.wait_progress();
  }
}

// p is under writeback, pinned only by its I/O: copies its frame to a frame
// free now and binds p to the copy, leaving the old frame to the I/O
// (writeback_done frees it, with the slot, and marks p wholly dirty). The
// copy is made before p is marked copied: until then the completion may
// still free the old frame, and if it has begun, the copy is given up and
// the caller waits. False: no frame free, or the completion has begun.
bool FilePagesImpl::copy_under_writeback_locked(Pmap* p) {
  auto r = st_.pool->reserve(1);
  if (!r) return false;
  FramePool::Taken t = r.value().take();
  Frame* old = p->frame();
  std::memcpy(t.frame->bytes().data(), old->bytes().data(), page_size());
  if (!p->try_mark_copied()) {
    st_.pool->free(t.frame);
    return false;
  }
  t.frame->set_owner(p);
  p->set_frame(t.frame);
  st_.writeback_copies.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// The page gives up its swap-cache slot. No I/O is in flight on it
// (writeback waited for, faults are synchronous under mu_).
void FilePagesImpl::drop_slot_locked(Pmap* p) {
  Frame* f = p->frame();
  if (!f->has_slot()) return;
  st_.swap->free(f->swap_slot());
  f->clear_swap_slot();
  st_.swap_cached.fetch_sub(1, std::memory_order_relaxed);
}

// The page changes in `blocks` (no I/O in flight on it). A swap-cached page
// keeps its slot while part of it is still clean: the slot then holds every
// block but the dirty ones, and writeback rewrites only those
// (page_out_locked). Once every block is dirty the slot holds nothing of
// use and is freed: the page goes to a fresh slot next to its neighbours.
void FilePagesImpl::dirty_locked(Pmap* p, uint64_t blocks) {
  // Copied during its writeback: the completion owns the dirty bits and
  // marks the whole page dirty.
  if (p->writeback()) {
    assert(p->copied());
    return;
  }
  p->mark_dirty(blocks);
  if ((p->dirty_blocks() & st_.all_blocks) == st_.all_blocks) drop_slot_locked(p);
}

// ---------------------------------------------------------------------------
// Asynchronous swap-in
//
// A read that meets swapped pages does not wait for them. Under the file's
// mutex (exclusive) it binds each one to a fresh frame as a pmap under
// swap-in (kReadPending; pinned by its I/O; on the inactive list; the slot
// kept as the frame's swap-cache slot), queues the slot reads in one batch,
// pins every page of its range for the reply, registers in the page wait
// table for the pages still in flight, and returns: the FUSE worker is free.
// The reply (`done`) runs from the completion of the last read it waits
// for, on the device's completion thread, straight from the frames.
//
// A write that covers such a page only in part (its first or last page)
// does not wait either: it copies its bytes for the page into the page wait
// table and writes the rest (defer_locked); the completion puts them in
// before anyone can see the page, and replies the write (start_write). A
// write covering a swapped page whole needs no read at all. Other writers
// of the page (one whose bytes are already waiting there comes first),
// truncate and punch wait for it with the mutex held (wait_busy_locked):
// completions take no file mutex.
// A failed read leaves the pmap with kReadError (frame bytes garbage, slot
// still the page's): the read that waited gets EIO, the next access reads
// the slot again, and reclaim, finding it clean with a slot, turns it back
// into a swap word.

// The pages an asynchronous request (a read, a pending write) still waits
// for, +1 until its starter arms it, and the first error among them.
struct PageCountdown {
  std::atomic<uint32_t> pending{1};
  std::atomic<int> err{0};

  void add() { pending.fetch_add(1, std::memory_order_relaxed); }
  // One awaited page is in (e: 0 or a negative errno); true for the last.
  bool arrive(int e) {
    if (e != 0) {
      int none = 0;
      err.compare_exchange_strong(none, e, std::memory_order_relaxed);
    }
    return pending.fetch_sub(1, std::memory_order_acq_rel) == 1;
  }
};

struct ReadRequest {
  ReadRequest(PageCache::State& s, FilePages::ReadDone d) : st(s), done(std::move(d)) {
    st.reads_in_flight.fetch_add(1, std::memory_order_relaxed);
  }

  // The last awaited page replies.
  void page_done(int e) {
    if (wait.arrive(e)) finish();
  }

  PageCache::State& st;
  FilePages::ReadDone done;
  SmallVec<iovec, kInlineIovecs> iov;
  SmallVec<Pmap*, kInlineIovecs> pins;  // every pmap of the range
  PageCountdown wait;

 private:
  void finish() {
    const int e = wait.err.load(std::memory_order_relaxed);
    try {
      if (e == 0) {
        done(Status::ok(), iov.span());
      } else {
        done(Errno{EIO}, {});
      }
    } catch (const std::exception& ex) {
      spdlog::error("read reply failed: {}", ex.what());
    }
    for (Pmap* p : pins.span()) p->unpin();
    PageCache::State& state = st;
    delete this;
    state.reads_in_flight.fetch_sub(1, std::memory_order_release);
    state.notify_progress();  // truncate, unlink and drain_reads wait for this
  }
};

// A write that left its bytes for one or two pages under swap-in to their
// completions (FilePagesImpl::write, "Deferral"). `pending` counts the
// patches not yet put in, +1 until the caller arms it (when_written).
class FilePages::PendingWrite {
 public:
  explicit PendingWrite(PageCache::State& s) : st(s) {
    st.reads_in_flight.fetch_add(1, std::memory_order_relaxed);
  }

  void page_done(int e) {
    if (wait.arrive(e)) finish();
  }

  PageCache::State& st;
  FilePages::WriteDone done;
  PageCountdown wait;

 private:
  void finish() {
    const int e = wait.err.load(std::memory_order_relaxed);
    try {
      done(e == 0 ? Status::ok() : Status(Errno{EIO}));
    } catch (const std::exception& ex) {
      spdlog::error("write reply failed: {}", ex.what());
    }
    PageCache::State& state = st;
    delete this;
    state.reads_in_flight.fetch_sub(1, std::memory_order_release);
    state.notify_progress();
  }
};

// A pending write's bytes for one page under swap-in, kept in the page wait
// table (State::write_patches) until the page's completion copies them in.
struct WritePatch {
  FilePages::PendingWrite* write;
  uint32_t from;    // bytes [from, to) of the page
  uint32_t to;
  uint64_t blocks;  // their dirty bits
  std::unique_ptr<std::byte[]> bytes;
};

namespace {

// Completion of the slot read of p (swap-in or readahead), on the device's
// completion thread; no file mutex. Clears kReadPending and takes the
// page's waiters in one critical section of the wait table, then gives the
// I/O's pin back: p may be freed after that.
//
// A pending write's patch for p goes in first, in the same critical section:
// the completion owns the frame, its slot and p's dirty bits until it clears
// kReadPending, so nobody sees the page without the write's bytes. On a
// failed read the patch is dropped and the write gets EIO.
void swap_in_done(PageCache::State& st, Pmap* p, swapdev::SwapSlot slot, int err) {
  if (err == 0) {
    st.swap_ins.fetch_add(1, std::memory_order_relaxed);
  } else {
    p->set_read_error();
    st.swap_in_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("swap-in of slot {} failed: {}", slot.value, std::strerror(-err));
  }
  SmallVec<ReadRequest*, 8> wake;
  std::unique_ptr<WritePatch> patch;
  bool drop_slot = false;
  {
    std::lock_guard lock(st.read_wait_mu);
    if (auto it = st.write_patches.find(p); it != st.write_patches.end()) {
      patch.reset(it->second);
      st.write_patches.erase(it);
      if (err == 0) {
        Frame* f = p->frame();
        std::memcpy(f->bytes().data() + patch->from, patch->bytes.get(), patch->to - patch->from);
        p->mark_dirty(patch->blocks);
        // Every block dirty: the slot holds nothing of use (dirty_locked).
        if ((p->dirty_blocks() & st.all_blocks) == st.all_blocks) {
          f->clear_swap_slot();
          drop_slot = true;
        }
      }
    }
    p->clear_read_pending();
    auto [from, to] = st.read_waiters.equal_range(p);
    for (auto it = from; it != to; ++it) wake.push_back(it->second);
    st.read_waiters.erase(from, to);
  }
  if (drop_slot) {
    st.swap->free(slot);
    st.swap_cached.fetch_sub(1, std::memory_order_relaxed);
  }
  p->unpin();
  st.notify_progress();  // writers in wait_busy_locked
  for (ReadRequest* r : wake.span()) r->page_done(err);
  if (patch) patch->write->page_done(err);
}

}  // namespace

// Queues the read of p's slot into its frame (p's frame holds its slot).
void FilePagesImpl::submit_swap_in_locked(Pmap* p) {
  p->clear_read_error();
  p->set_read_pending();
  p->pin();  // the I/O's
  Frame* f = p->frame();
  const swapdev::SwapSlot slot = f->swap_slot();
  std::span<std::byte> bytes = f->bytes();
  PageCache::State* st = &st_;
  st_.swap->read(slot, {&bytes, 1},
                 [st, p, slot](int err) { swap_in_done(*st, p, slot, err); });
}

// A swapped page (its word is the compact word of `slot`) becomes a pmap
// under swap-in bound to `frame`. The caller stores it in the index and adds
// it to the lists.
Pmap* FilePagesImpl::start_swap_in_locked(uint64_t page, Frame* frame, swapdev::SwapSlot slot) {
  Pmap* p = bind_locked(page, frame);
  frame->set_swap_slot(slot);  // swap cache: the page is clean
  st_.swap_cached.fetch_add(1, std::memory_order_relaxed);
  p->set_uptodate();  // swapped implies written
  st_.pages_swapped.fetch_sub(1, std::memory_order_relaxed);
  submit_swap_in_locked(p);
  return p;
}

// Under mu_: r waits for p if p is still under swap-in; false when its read
// has completed already.
bool FilePagesImpl::await_locked(Pmap* p, ReadRequest* r) {
  std::lock_guard lock(st_.read_wait_mu);
  if (!p->read_pending()) return false;
  st_.read_waiters.emplace(p, r);
  r->wait.add();
  return true;
}

// Reserves frames for the pages of [first, last] that `wants`, plus
// `extra`. May drop and retake `lock` to reclaim; the count is redone every
// time. ENOSPC: no frames and nothing to reclaim.
template <class Wants>
Result<FramePool::Reservation> FilePagesImpl::reserve_locked(
    std::unique_lock<std::shared_mutex>& lock, uint64_t first, uint64_t last, uint64_t extra,
    Wants&& wants) {
  for (int attempt = 0, gave_up = 0;; ++attempt) {
    uint64_t need = extra;
    index_.visit_range(first, last + 1, [&](uint64_t, PagePlace w) {
      need += wants(w);
      return true;
    });
    if (need == 0) return FramePool::Reservation{};
    if (auto r = st_.pool->reserve(need)) {
      if (st_.reclaimer && st_.pool->frames_available() < st_.reclaimer->high()) {
        st_.reclaimer->kick();
      }
      return std::move(r).value();
    }
    if (!st_.swap || need > st_.pool->frames_total() || gave_up >= 2) return Errno{ENOSPC};
    if (attempt == 0) st_.frame_waits.fetch_add(1, std::memory_order_relaxed);
    if (st_.reclaimer) st_.reclaimer->kick();
    lock.unlock();
    if (!direct_reclaim(st_, need)) ++gave_up;
    lock.lock();
  }
}

// Makes every present page of [first, last] resident with valid bytes and
// reserves `extra` more frames into *extra_out (a write's new pages). This
// is the synchronous form, for writers and zeroing: the calling thread waits
// for the slot reads, with `lock` held. A swapped page that [off, end)
// covers whole and that is about to be written is not read. May drop and
// retake `lock` to reclaim; everything is re-checked after. Errors: EIO (a
// swap read failed: that page stays in swap, readable later; pages already
// read stay resident), ENOSPC (no frames and nothing to reclaim).
Status FilePagesImpl::fault_range_locked(std::unique_lock<std::shared_mutex>& lock,
                                         uint64_t first, uint64_t last, uint64_t off,
                                         uint64_t end, uint64_t extra,
                                         FramePool::Reservation* extra_out, OnWriteback how,
                                         Deferral* defer) {
  // A read leaves zero words alone (they read as zeros); a write needs a
  // frame for them too.
  const bool for_write = extra_out != nullptr;
  auto wants = [for_write](PagePlace w) {
    return for_write ? w.needs_fault() : w.is_swapped();
  };
  auto covered = [&](uint64_t page) {
    const uint64_t pstart = page << st_.page_shift;
    return for_write && off <= pstart && end >= pstart + page_size();
  };
  auto reserved = reserve_locked(lock, first, last, extra, wants);
  if (!reserved) return reserved.status();
  FramePool::Reservation frames = std::move(reserved).value();

  struct Whole {  // swapped, overwritten whole: bound only if nothing fails
    uint64_t page;
    Frame* frame;
    swapdev::SwapSlot slot;
  };
  SmallVec<Whole, 16> wholes;
  SmallVec<Pmap*, kInlineIovecs> fresh;
  {
    swapdev::IoBatch plug(*st_.swap);
    index_.update_range(first, last + 1, [&](uint64_t page, PagePlace w) -> PagePlace {
      if (w.is_pmap()) {
        Pmap* p = w.pmap();
        if (!p->read_pending() && p->read_error() && !covered(page)) submit_swap_in_locked(p);
        return w;
      }
      if (!wants(w)) return w;
      FramePool::Taken t = frames.take();
      if (w.is_zero()) {
        if (!t.zeroed) std::memset(t.frame->bytes().data(), 0, page_size());
        Pmap* p = bind_locked(page, t.frame);
        if (w.zero_uptodate()) p->set_uptodate();
        p->set_referenced();
        fresh.push_back(p);
        return PagePlace::resident(p);
      }
      const swapdev::SwapSlot slot = w.slot();
      if (covered(page)) {
        wholes.push_back({page, t.frame, slot});
        return w;
      }
      Pmap* p = start_swap_in_locked(page, t.frame, slot);
      p->set_referenced();
      fresh.push_back(p);
      return PagePlace::resident(p);
    });
  }
  st_.lists.add_new(fresh.span());
  for (;;) {
    // A write need not wait for the swap-in of a page it covers only in
    // part (its first or last): it leaves its bytes for it to the
    // completion. Those pages are not waited for.
    SmallVec<Pmap*, 2> skip;
    if (defer) {
      for (uint64_t page : {first, last}) {
        const PagePlace w = index_.place(page);
        if (covered(page) || !w.is_pmap()) continue;
        Pmap* p = w.pmap();
        if (p->read_pending() && (skip.empty() || skip.back() != p)) skip.push_back(p);
      }
    }
    wait_busy_locked(first, last, how, skip.span());

    Status status;
    index_.visit_range(first, last + 1, [&](uint64_t page, PagePlace w) {
      if (w.is_pmap() && w.pmap()->read_error() && !covered(page)) {
        status = Errno{EIO};
      }
      return status.is_ok();
    });
    if (!status) {
      // The write will not happen: pages it would have overwritten whole
      // stay as they are, in swap.
      for (const Whole& h : wholes.span()) st_.pool->free(h.frame);
      return status;
    }
    // Nothing can fail after this: the bytes may be handed over.
    if (skip.empty() || defer_locked(skip.span(), *defer)) break;
    defer = nullptr;  // a read finished first: wait for every page instead
  }
  SmallVec<Pmap*, 16> bound;
  for (const Whole& h : wholes.span()) {
    st_.swap->free(h.slot);  // the write replaces it all
    Pmap* p = bind_locked(h.page, h.frame);
    // Until the write copies in, the frame must not pass for zeros-and-clean.
    p->mark_dirty(st_.all_blocks);
    p->set_uptodate();
    p->set_referenced();
    index_.set(h.page, PagePlace::resident(p));
    st_.pages_swapped.fetch_sub(1, std::memory_order_relaxed);
    bound.push_back(p);
  }
  st_.lists.add_new(bound.span());
  // Pages that failed an earlier read and are now overwritten whole: the
  // slot's copy is given up, the write supplies every byte.
  index_.visit_range(first, last + 1, [&](uint64_t page, PagePlace w) {
    if (!w.is_pmap() || !covered(page)) return true;
    Pmap* p = w.pmap();
    if (p->read_error()) {
      p->clear_read_error();
      drop_slot_locked(p);
      p->mark_dirty(st_.all_blocks);
    }
    return true;
  });
  if (extra_out) *extra_out = std::move(frames);  // what is left: `extra`
  return Status::ok();
}

// Hands the write's bytes for `pages` (under swap-in, covered in part: at
// most its first and last page) to their completions, all or none, in one
// critical section of the page wait table. False when one of them is no
// longer under swap-in (the caller then waits for it), or already holds
// another write's bytes (their order must be kept: wait too).
bool FilePagesImpl::defer_locked(std::span<Pmap* const> pages, Deferral& d) {
  assert(!pages.empty() && pages.size() <= 2 && d.pages.empty() && !d.write);
  const uint64_t end = d.off + d.data.size();
  std::array<std::unique_ptr<WritePatch>, 2> made;
  for (size_t i = 0; i < pages.size(); ++i) {
    const uint64_t pstart = pages[i]->index() << st_.page_shift;
    const size_t from = d.off > pstart ? static_cast<size_t>(d.off - pstart) : 0;
    const size_t to = static_cast<size_t>(std::min<uint64_t>(end - pstart, page_size()));
    made[i] = std::make_unique<WritePatch>();
    made[i]->from = static_cast<uint32_t>(from);
    made[i]->to = static_cast<uint32_t>(to);
    made[i]->blocks = block_bits(from, to);
    made[i]->bytes = std::make_unique_for_overwrite<std::byte[]>(to - from);
    std::memcpy(made[i]->bytes.get(), d.data.data() + (pstart + from - d.off), to - from);
  }
  std::lock_guard lock(st_.read_wait_mu);
  for (Pmap* p : pages) {
    if (!p->read_pending() || st_.write_patches.contains(p)) return false;
  }
  d.write = new FilePages::PendingWrite(st_);
  for (size_t i = 0; i < pages.size(); ++i) {
    made[i]->write = d.write;
    d.write->wait.add();
    st_.write_patches.emplace(pages[i], made[i].release());
    pages[i]->set_referenced();
    d.pages.push_back(pages[i]);
  }
  return true;
}

// Pins every pmap of [off, off + len) into `pins` and appends the iovecs of
// a reply to `iov`: frame memory for pages with a pmap (valid or not yet:
// the caller knows), the shared zero region for holes and zero words.
// *ra_hit: a page read ahead was used. No swap words in the range (the
// caller faulted them).
void FilePagesImpl::collect_locked(uint64_t off, size_t len, SmallVec<iovec, kInlineIovecs>& iov,
                                   SmallVec<Pmap*, kInlineIovecs>& pins, bool* ra_hit) {
  const uint64_t end = off + len;
  const std::byte* zeros = st_.zeros.data();
  uint64_t chunk_no = UINT64_MAX;  // cache of the index chunk being read
  const FileIndex::Chunk* chunk = nullptr;
  for (uint64_t pos = off; pos < end;) {
    const uint64_t page = pos >> st_.page_shift;
    const size_t in = pos & page_mask();
    const size_t n = static_cast<size_t>(std::min<uint64_t>(page_size() - in, end - pos));
    if ((page >> FileIndex::kChunkShift) != chunk_no) {
      chunk_no = page >> FileIndex::kChunkShift;
      chunk = index_.find_chunk(chunk_no);
    }
    const PagePlace w = chunk ? chunk->place(page & FileIndex::kMask) : PagePlace::hole();
    const std::byte* base;
    if (w.is_hole() || w.is_zero()) {
      if (!iov.empty() && iov.back().iov_base == zeros &&
          iov.back().iov_len + n <= st_.zeros.size()) {
        iov.back().iov_len += n;
        pos += n;
        continue;
      }
      base = zeros;
    } else {
      assert(w.is_pmap() && "collect_locked over a swapped page");
      Pmap* p = w.pmap();
      p->pin();
      p->set_referenced();
      if (p->test_and_clear_readahead()) {
        *ra_hit = true;
        st_.readahead_hits.fetch_add(1, std::memory_order_relaxed);
      }
      pins.push_back(p);
      base = p->frame()->bytes().data() + in;
    }
    if (!iov.empty() && base != zeros &&
        static_cast<const std::byte*>(iov.back().iov_base) + iov.back().iov_len == base) {
      iov.back().iov_len += n;  // adjacent frames
    } else {
      iov.push_back(iovec{const_cast<std::byte*>(base), n});
    }
    pos += n;
  }
}

// Reads ahead: queues swap-ins of the swapped pages in [from, from + count)
// into frames that are free now (never reclaims for it, and leaves the
// reclaimer's watermark alone). The pages are marked kReadahead; a read
// that uses one counts a hit and reads further ahead.
void FilePagesImpl::readahead_locked(uint64_t from, uint64_t count) {
  SmallVec<uint64_t, 64> pages;
  index_.visit_range(from, from + count, [&](uint64_t page, PagePlace w) {
    if (w.is_swapped()) pages.push_back(page);
    return true;
  });
  if (pages.empty()) return;
  const uint64_t avail = st_.pool->frames_available();
  const uint64_t keep = st_.reclaimer ? st_.reclaimer->high() : 0;
  const uint64_t n = std::min<uint64_t>(pages.size(), avail > keep ? avail - keep : 0);
  if (n == 0) return;
  auto r = st_.pool->reserve(n);
  if (!r) return;
  FramePool::Reservation frames = std::move(r).value();
  SmallVec<Pmap*, 64> fresh;
  for (uint64_t page : pages.span().first(n)) {
    const swapdev::SwapSlot slot = index_.place(page).slot();
    Pmap* p = start_swap_in_locked(page, frames.take().frame, slot);
    index_.set(page, PagePlace::resident(p));
    p->set_readahead();
    fresh.push_back(p);
  }
  st_.lists.add_new(fresh.span());
  st_.readahead_pages.fetch_add(n, std::memory_order_relaxed);
}

uint64_t FilePagesImpl::readahead_window(uint64_t pages) const {
  const uint64_t cap = std::max<uint64_t>(1, st_.pool->frames_total() / 8);
  return std::min(cap, std::clamp<uint64_t>(2 * pages, 32, 256));
}

void FilePagesImpl::read(uint64_t off, size_t len, FilePages::ReadDone done) {
  if (len == 0) {
    done(Status::ok(), {});
    return;
  }
  const uint64_t first = off >> st_.page_shift;
  const uint64_t last = (off + len - 1) >> st_.page_shift;
  // Sequential: this read starts where the previous one ended (or uses a
  // page read ahead, below).
  const bool sequential = next_page_.exchange(last + 1, std::memory_order_relaxed) == first;
  uint64_t faults = 0;
  {
    std::shared_lock lock(mu_);
    index_.visit_range(first, last + 1, [&](uint64_t, PagePlace w) {
      faults += w.is_swapped() ||
                (w.is_pmap() && !w.pmap()->bytes_valid());
      return true;
    });
    if (faults == 0) {
      // Everything resident: reply from the frames under the shared lock.
      SmallVec<iovec, kInlineIovecs> iov;
      SmallVec<Pmap*, kInlineIovecs> pins;
      bool ra_hit = false;
      collect_locked(off, len, iov, pins, &ra_hit);
      struct Unpin {
        SmallVec<Pmap*, kInlineIovecs>& pins;
        ~Unpin() {
          for (Pmap* p : pins.span()) p->unpin();
        }
      } unpin{pins};
      done(Status::ok(), iov.span());
      if (!ra_hit || !st_.swap) return;
    }
  }
  if (faults == 0) {
    // A page read ahead was used: keep the window ahead of the reader.
    std::unique_lock lock(mu_);
    swapdev::IoBatch plug(*st_.swap);
    readahead_locked(last + 1, readahead_window(last - first + 1));
    return;
  }
  // Too many swapped pages to hold in frames at once: read in pieces into
  // one buffer (a copy, only on this rare path: reads larger than a quarter
  // of --memory).
  const uint64_t max_fault = std::max<uint64_t>(1, st_.pool->frames_total() / 4);
  if (faults > max_fault) {
    std::vector<std::byte> buf(len);
    Status status;
    const uint64_t end = off + len;
    for (uint64_t pos = off; pos < end && status.is_ok();) {
      const uint64_t next = std::min(end, ((pos >> st_.page_shift) + max_fault) << st_.page_shift);
      read_and_wait([&](FilePages::ReadDone d) { read(pos, next - pos, std::move(d)); },
                    [&](Status s, std::span<const iovec> iov) {
                      if (!s) {
                        status = s;
                        return;
                      }
                      std::byte* dst = buf.data() + (pos - off);
                      for (const iovec& v : iov) {
                        std::memcpy(dst, v.iov_base, v.iov_len);
                        dst += v.iov_len;
                      }
                    });
      pos = next;
    }
    if (!status) return done(status, {});
    const iovec v{buf.data(), buf.size()};
    done(Status::ok(), {&v, 1});
    return;
  }

  std::unique_lock lock(mu_);
  auto reserved = reserve_locked(lock, first, last, 0, [](PagePlace w) { return w.is_swapped(); });
  if (!reserved) {
    lock.unlock();
    return done(reserved.status(), {});
  }
  FramePool::Reservation frames = std::move(reserved).value();
  auto* r = new ReadRequest(st_, std::move(done));
  bool ra_hit = false;
  {
    swapdev::IoBatch plug(*st_.swap);
    SmallVec<Pmap*, kInlineIovecs> fresh;
    index_.update_range(first, last + 1, [&](uint64_t page, PagePlace w) -> PagePlace {
      if (w.is_swapped()) {
        Pmap* p = start_swap_in_locked(page, frames.take().frame, w.slot());
        fresh.push_back(p);
        return PagePlace::resident(p);
      }
      if (w.is_pmap()) {
        Pmap* p = w.pmap();
        if (!p->read_pending() && p->read_error()) submit_swap_in_locked(p);  // retry
      }
      return w;
    });
    st_.lists.add_new(fresh.span());
    collect_locked(off, len, r->iov, r->pins, &ra_hit);
    uint32_t awaited = 0;
    for (Pmap* p : r->pins.span()) {
      if (await_locked(p, r)) {
        ++awaited;
      } else if (p->read_error()) {
        r->wait.err.store(-EIO, std::memory_order_relaxed);
      }
    }
    if (awaited > 0) st_.reads_async.fetch_add(1, std::memory_order_relaxed);
    if (sequential || ra_hit) readahead_locked(last + 1, readahead_window(last - first + 1));
  }
  lock.unlock();
  r->page_done(0);  // armed: replies now if nothing is in flight any more
}

Result<FilePages::PendingWrite*> FilePagesImpl::write(uint64_t off,
                                                      std::span<const std::byte> data) {
  if (data.empty()) return nullptr;
  if (off > kMaxFileBytes || data.size() > kMaxFileBytes - off) return Errno{EFBIG};
  const uint64_t end = off + data.size();
  const uint64_t first = off >> st_.page_shift;
  const uint64_t last = (end - 1) >> st_.page_shift;  // inclusive
  // A write must hold all its frames at once; one larger than a quarter of
  // --memory goes in pieces (then ENOSPC, when the swap fills, may leave
  // the pieces before it written: the only non-atomic case).
  const uint64_t max_pages = std::max<uint64_t>(1, st_.pool->frames_total() / 4);
  // The pieces wait for their swap-ins (the worker blocks: rare).
  if (st_.swap && last - first + 1 > max_pages) {
    for (uint64_t pos = off; pos < end;) {
      const uint64_t next = std::min(end, ((pos >> st_.page_shift) + max_pages) << st_.page_shift);
      auto piece = write(pos, data.subspan(pos - off, next - pos));
      if (!piece) return Errno{piece.code()};
      if (Status s = wait_for(*piece); !s) return Errno{s.code()};
      pos = next;
    }
    return nullptr;
  }

  std::unique_lock lock(mu_);
  // Reserve everything first: after this point the write cannot fail.
  // (Callers serialise writers of one file, so `missing` cannot change while
  // fault_range_locked drops the lock to reclaim: only reclaim runs then,
  // and it never adds or removes pages.)
  const uint64_t missing = (last - first + 1) - index_.count_present(first, last + 1);
  if (!st_.reserve_pages(missing)) return Errno{ENOSPC};
  FramePool::Reservation frames;
  Deferral defer{off, data, {}, nullptr};
  if (st_.swap) {
    if (Status s = fault_range_locked(lock, first, last, off, end, missing, &frames,
                                      OnWriteback::kCopy, &defer);
        !s) {
      st_.unreserve_pages(missing);
      return Errno{s.code()};
    }
    wait_busy_locked(first, last, OnWriteback::kCopy, defer.pages.span());
  } else if (missing > 0) {
    auto r = st_.pool->reserve(missing);
    if (!r) {
      st_.unreserve_pages(missing);
      return Errno{ENOSPC};
    }
    frames = std::move(r).value();
  }
  SmallVec<Pmap*, kInlineIovecs> fresh;
  const std::span<Pmap*> deferred = defer.pages.span();
  const std::byte* src = data.data();
  for (uint64_t page = first; page <= last; ++page) {
    const size_t from = page == first ? (off & page_mask()) : 0;
    const size_t to = page == last ? ((end - 1) & page_mask()) + 1 : page_size();
    const PagePlace w = index_.place(page);
    Pmap* p;
    if (w.is_hole()) {
      bool zeroed;
      p = new_pmap_locked(page, frames, &zeroed);
      fresh.push_back(p);
      if (!zeroed) {
        std::byte* f = p->frame()->bytes().data();
        std::memset(f, 0, from);
        std::memset(f + to, 0, page_size() - to);
      }
    } else {
      p = w.pmap();
      if (std::ranges::find(deferred, p) != deferred.end()) {
        src += to - from;  // its bytes wait in the page wait table
        continue;
      }
      assert(p->resident() && (!p->writeback() || p->copied()) && p->bytes_valid());
      p->set_referenced();
    }
    std::memcpy(p->frame()->bytes().data() + from, src, to - from);
    src += to - from;
    dirty_locked(p, block_bits(from, to));
    p->set_uptodate();
  }
  assert(frames.left() == 0);
  st_.lists.add_new(fresh.span());
  if (defer.write) st_.writes_async.fetch_add(1, std::memory_order_relaxed);
  return defer.write;
}

void FilePagesImpl::zero_in_page_locked(std::unique_lock<std::shared_mutex>& lock, uint64_t page,
                                        size_t from, size_t to) {
  if (from >= to) return;
  PagePlace w = index_.place(page);
  if (w.is_hole() || w.is_zero()) return;  // reads as zeros already
  if (!w.is_pmap()) {
    const uint64_t pstart = page << st_.page_shift;
    if (Status s = fault_range_locked(lock, page, page, pstart, pstart, 0, nullptr,
                                      OnWriteback::kWait);
        !s) {
      // The tail stays in swap un-zeroed; a later extension of the file
      // would show it. Only after a swap read error or total exhaustion.
      spdlog::error("cannot fault in page {} to zero its tail: {}", page, std::strerror(s.code()));
      return;
    }
    w = index_.place(page);
    if (w.is_hole() || !w.is_pmap()) return;
  }
  wait_busy_locked(page, page);
  Pmap* p = index_.place(page).pmap();
  std::memset(p->frame()->bytes().data() + from, 0, to - from);
  dirty_locked(p, block_bits(from, to));
}

// Removes every page in [first, last). Words are cleared from the index at
// once; pmaps are then taken off the lists, waiting for any that reclaim has
// isolated or that are under writeback (both finish without this file's
// mutex), and freed with their frames and slots.
void FilePagesImpl::free_range_locked(uint64_t first, uint64_t last) {
  std::vector<Pmap*> victims;
  std::vector<swapdev::SwapSlot> slots;
  uint64_t removed = 0;
  uint64_t swapped = 0;
  index_.update_range(first, last, [&](uint64_t, PagePlace w) -> PagePlace {
    ++removed;
    if (w.is_pmap()) {
      victims.push_back(w.pmap());
    } else if (w.is_swapped()) {
      slots.push_back(w.slot());
      ++swapped;
    }
    return PagePlace::hole();
  });
  if (removed == 0) return;
  while (!st_.lists.remove_idle(victims)) st_.wait_progress();
  for (Pmap* p : victims) {
    assert(p->io_count() == 0 && !p->writeback());
    if (p->resident()) {
      Frame* f = p->frame();
      if (f->has_slot()) {
        slots.push_back(f->swap_slot());
        f->clear_swap_slot();
        st_.swap_cached.fetch_sub(1, std::memory_order_relaxed);
      }
      f->set_owner(nullptr);
      st_.pool->free(f);
      st_.pages_resident.fetch_sub(1, std::memory_order_relaxed);
    }
    delete p;
  }
  for (swapdev::SwapSlot s : slots) st_.swap->free(s);
  st_.pages_swapped.fetch_sub(swapped, std::memory_order_relaxed);
  st_.metadata.fetch_sub(victims.size() * sizeof(Pmap), std::memory_order_relaxed);
  st_.unreserve_pages(removed);
}

void FilePagesImpl::truncate(uint64_t old_size, uint64_t new_size) {
  if (new_size > old_size) return;
  std::unique_lock lock(mu_);
  // Everything from the first page wholly past new_size, including pages
  // fallocated with KEEP_SIZE beyond old_size (as shmem_setattr does).
  const uint64_t first_gone = (new_size + page_mask()) >> st_.page_shift;
  free_range_locked(first_gone, UINT64_MAX);
  if (const size_t tail = new_size & page_mask(); tail != 0) {
    zero_in_page_locked(lock, new_size >> st_.page_shift, tail, page_size());
  }
}

void FilePagesImpl::punch_hole(uint64_t off, uint64_t len) {
  if (len == 0) return;
  const uint64_t end = len > UINT64_MAX - off ? UINT64_MAX : off + len;
  std::unique_lock lock(mu_);
  const uint64_t first_whole = (off >> st_.page_shift) + ((off & page_mask()) ? 1 : 0);
  const uint64_t end_whole = end >> st_.page_shift;
  if (first_whole < end_whole) free_range_locked(first_whole, end_whole);
  const uint64_t first_page = off >> st_.page_shift;
  const uint64_t last_page = (end - 1) >> st_.page_shift;
  const size_t head = off & page_mask();
  const size_t tail = end & page_mask();
  if (head != 0) {
    zero_in_page_locked(lock, first_page, head,
                        first_page == last_page ? ((end - 1) & page_mask()) + 1 : page_size());
  }
  if (tail != 0 && (first_page != last_page || head == 0)) {
    zero_in_page_locked(lock, last_page, 0, tail);
  }
}

Status FilePagesImpl::allocate(uint64_t off, uint64_t len) {
  if (len == 0) return Status::ok();
  if (off > kMaxFileBytes || len > kMaxFileBytes - off) return Errno{EFBIG};
  const uint64_t end = off + len;
  const uint64_t first = off >> st_.page_shift;
  const uint64_t last_excl = (end + page_mask()) >> st_.page_shift;

  std::unique_lock lock(mu_);
  const uint64_t missing = (last_excl - first) - index_.count_present(first, last_excl);
  FramePool::Reservation frames;
  if (missing > 0) {
    if (!st_.reserve_pages(missing)) return Errno{ENOSPC};
    if (!st_.swap) {
      auto r = st_.pool->reserve(missing);
      if (!r) {
        st_.unreserve_pages(missing);
        return Errno{ENOSPC};
      }
      frames = std::move(r).value();
    }
  }
  // Kernel tmpfs: a page fallocated by an earlier call and fallocated again
  // becomes Uptodate (shmem_get_folio_gfp, SGP_FALLOC on an existing folio
  // clears it and marks it uptodate), i.e. data for SEEK_DATA; pages new in
  // this call stay !Uptodate. (On ENOSPC the kernel has already done this
  // for the pages before the one that failed; we change nothing.)
  index_.update_range(first, last_excl, [](uint64_t, PagePlace w) -> PagePlace {
    if (w.is_pmap()) w.pmap()->set_uptodate();
    return w == PagePlace::zero() ? PagePlace::zero(true) : w;
  });
  if (missing == 0) return Status::ok();
  if (st_.swap) {
    // With swap, a fallocated page needs no frame until it is written: a
    // zero word (costs its index word only; reads as zeros).
    for (uint64_t page = first, left = missing; left > 0; ++page) {
      assert(page < last_excl);
      if (index_.place(page).present()) continue;
      index_.set(page, PagePlace::zero());
      --left;
    }
    return Status::ok();
  }
  // Only `missing` pages are absent, and missing <= frames_total, so this
  // walk is bounded by memory, not by len.
  std::vector<Pmap*> fresh;
  fresh.reserve(missing);
  for (uint64_t page = first; frames.left() > 0; ++page) {
    assert(page < last_excl);
    if (index_.place(page).present()) continue;
    bool zeroed;
    Pmap* p = new_pmap_locked(page, frames, &zeroed);
    if (!zeroed) std::memset(p->frame()->bytes().data(), 0, page_size());
    fresh.push_back(p);  // clean, !uptodate: a zero page without a slot
  }
  st_.lists.add_new(fresh);
  return Status::ok();
}

std::optional<uint64_t> FilePagesImpl::seek_data(uint64_t off, uint64_t size) const {
  if (off >= size) return std::nullopt;
  std::shared_lock lock(mu_);
  const auto page = index_.next_matching(off >> st_.page_shift, is_data);
  if (!page || *page > ((size - 1) >> st_.page_shift)) return std::nullopt;
  return std::max(off, *page << st_.page_shift);
}

std::optional<uint64_t> FilePagesImpl::seek_hole(uint64_t off, uint64_t size) const {
  if (off >= size) return std::nullopt;
  std::shared_lock lock(mu_);
  const uint64_t page = index_.next_not_matching(off >> st_.page_shift, is_data);
  if (page > ((size - 1) >> st_.page_shift)) return size;
  return std::min(size, std::max(off, page << st_.page_shift));
}

// ---------------------------------------------------------------------------
// Reclaim and writeback (policy: reclaimer.h)

namespace {

// `mask` with each group of 2^k bits folded into one bit: a block bitmap in
// blocks 2^k times larger.
uint64_t coarsen(uint64_t mask, unsigned k) {
  if (k == 0) return mask;
  const unsigned group = 1u << k;
  const uint64_t ones = group >= 64 ? ~uint64_t{0} : (uint64_t{1} << group) - 1;
  uint64_t out = 0;
  for (unsigned i = 0; i * group < 64; ++i)
    if ((mask >> (i * group)) & ones) out |= uint64_t{1} << i;
  return out;
}

// Writeback completion, on the device's completion thread. Takes no file
// mutex: it owns p's dirty bits and its frame's slot until it clears
// kWriteback, and gives the pin back with the pmap on a list (putback_unpin)
// as its last touch of p. `partial`: the dirty blocks were rewritten in the
// slot the frame already had (write_blocks).
void writeback_done(PageCache::State& st, Pmap* p, Frame* f, swapdev::SwapSlot slot, bool background,
                    bool partial, int err) {
  if (p->begin_writeback_completion()) {
    // A writer copied the page to a new frame during the write
    // (copy_under_writeback_locked): f is ours alone now, and neither it
    // nor the slot holds the page any more.
    if (partial) {
      f->clear_swap_slot();
      st.swap_cached.fetch_sub(1, std::memory_order_relaxed);
    }
    st.swap->free(slot);
    f->set_owner(nullptr);
    st.pool->free(f);
    p->mark_dirty(st.all_blocks);
    if (err != 0) st.writeback_errors.fetch_add(1, std::memory_order_relaxed);
    st.writeback_in_flight.fetch_sub(1, std::memory_order_relaxed);
    p->end_writeback();
    st.lists.putback_unpin(p, PmapLists::Where::kActiveHead);
    st.notify_progress();
    return;
  }
  if (err == 0) {
    p->clear_dirty(~uint64_t{0});
    if (!partial) {
      f->set_swap_slot(slot);
      st.swap_cached.fetch_add(1, std::memory_order_relaxed);
    } else {
      st.partial_writebacks.fetch_add(1, std::memory_order_relaxed);
    }
    st.writebacks.fetch_add(1, std::memory_order_relaxed);
    if (background) st.background_cleaned.fetch_add(1, std::memory_order_relaxed);
  } else {
    // -EIO, -ENOSPC...: the slot holds nothing of use (a failed partial
    // rewrite leaves it poisoned); the page stays resident and, with no
    // slot, wholly dirty. It goes to the active list so it is not retried
    // at once.
    if (partial) {
      f->clear_swap_slot();
      st.swap_cached.fetch_sub(1, std::memory_order_relaxed);
      p->mark_dirty(st.all_blocks);
    }
    st.swap->free(slot);
    st.writeback_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("writeback to slot {} failed: {}", slot.value, std::strerror(-err));
  }
  st.writeback_in_flight.fetch_sub(1, std::memory_order_relaxed);
  p->end_writeback();
  // Clean pages go to the inactive tail: the next pass drops them.
  st.lists.putback_unpin(p, err == 0 ? PmapLists::Where::kInactiveTail
                                     : PmapLists::Where::kActiveHead);
  st.notify_progress();
}

}  // namespace

// p is isolated and pinned by the caller; this file's mutex is held
// exclusive. Every path ends with p put back, freed, or handed to I/O.
void FilePagesImpl::page_out_locked(Pmap* p, ScanControl& sc) {
  using Where = PmapLists::Where;
  if (p->io_count() != 1) return st_.lists.putback_unpin(p, Where::kInactiveHead);
  if (p->test_and_clear_referenced()) return st_.lists.putback_unpin(p, Where::kActiveHead);
  Frame* f = p->frame();
  if (!p->dirty()) {
    if (!sc.evict) return st_.lists.putback_unpin(p, Where::kInactiveHead);
    PagePlace word;
    if (f->has_slot()) {
      word = PagePlace::swapped(f->swap_slot());
      f->clear_swap_slot();
      st_.swap_cached.fetch_sub(1, std::memory_order_relaxed);
      st_.pages_swapped.fetch_add(1, std::memory_order_relaxed);
    } else {
      word = PagePlace::zero(p->uptodate());  // clean, no slot: zeros
    }
    index_.set(p->index(), word);
    f->set_owner(nullptr);
    st_.pool->free(f);
    st_.pages_resident.fetch_sub(1, std::memory_order_relaxed);
    p->unpin();
    delete p;
    st_.metadata.fetch_sub(sizeof(Pmap), std::memory_order_relaxed);
    st_.pages_evicted.fetch_add(1, std::memory_order_relaxed);
    ++sc.freed;
    return;
  }
  if (st_.writeback_in_flight.load(std::memory_order_relaxed) >= writeback_cap(st_)) {
    return st_.lists.putback_unpin(p, Where::kInactiveHead);
  }
  PageCache::State* st = &st_;
  const bool background = sc.background;
  if (f->has_slot()) {
    // Swapped in, then partly rewritten (dirty_locked): the slot holds the
    // rest, so only the dirty blocks go out, in the medium's block size.
    const unsigned shift = std::max(st_.block_shift, st_.swap->min_block_shift());
    const uint64_t mask = coarsen(p->dirty_blocks() & st_.all_blocks, shift - st_.block_shift);
    const swapdev::SwapSlot slot = f->swap_slot();
    ++sc.submitted;
    p->set_writeback();
    st_.writeback_in_flight.fetch_add(1, std::memory_order_relaxed);
    st_.swap->write_blocks(slot, f->bytes(), mask, shift,
                           [st, p, f, slot, background](int err) {
                             writeback_done(*st, p, f, slot, background, true, err);
                           });
    return;
  }
  swapdev::SwapSlot hint;
  if (sc.last_file == this && sc.last_index + 1 == p->index()) {
    hint = swapdev::SwapSlot(sc.last_slot + 1);
  }
  const swapdev::SlotRun run = st_.swap->allocate(1, hint);
  if (run.count == 0) {
    sc.swap_full = true;
    return st_.lists.putback_unpin(p, Where::kActiveHead);
  }
  sc.last_file = this;
  sc.last_index = p->index();
  sc.last_slot = run.first.value;
  ++sc.submitted;
  // The pin is the I/O's now; writers of this page wait for kWriteback.
  p->set_writeback();
  st_.writeback_in_flight.fetch_add(1, std::memory_order_relaxed);
  const std::span<const std::byte> bytes = f->bytes();
  const swapdev::SwapSlot slot = run.first;
  st_.swap->write(run.first, {&bytes, 1}, [st, p, f, slot, background](int err) {
    writeback_done(*st, p, f, slot, background, false, err);
  });
}

void reclaim_pass(PageCache::State& st, ScanControl& sc) {
  assert(st.swap);
  std::vector<Pmap*> batch(sc.batch);  // allocated before the LRU lock
  uint64_t scanned = 0;
  const size_t n = st.lists.isolate(batch, sc.batch * 4, &scanned);
  st.reclaim_scans.fetch_add(scanned, std::memory_order_relaxed);
  if (n == 0) return;
  swapdev::IoBatch plug(*st.swap);
  FilePagesImpl* cur = nullptr;
  std::unique_lock<std::shared_mutex> lock;
  for (size_t i = 0; i < n; ++i) {
    Pmap* p = batch[i];
    // p is pinned, so its file cannot finish destruction (free_range_locked
    // waits for the pin).
    if (p->file() != cur) {
      if (lock.owns_lock()) lock.unlock();
      cur = p->file();
      lock = std::unique_lock(cur->mutex(), std::try_to_lock);
    }
    if (!lock.owns_lock()) {
      st.lists.putback_unpin(p, PmapLists::Where::kInactiveHead);
      continue;
    }
    cur->page_out_locked(p, sc);
  }
}

bool direct_reclaim(PageCache::State& st, uint64_t frames) {
  if (!st.swap) return false;
  for (int idle = 0; st.pool->frames_available() < frames;) {
    ScanControl sc;
    sc.batch = static_cast<size_t>(std::clamp<uint64_t>(frames, 32, 256));
    reclaim_pass(st, sc);
    if (sc.freed > 0) {
      idle = 0;
      continue;
    }
    if (st.writeback_in_flight.load(std::memory_order_relaxed) > 0) {
      st.wait_progress();  // completions always come: wait, not give up
      idle = 0;
      continue;
    }
    if (sc.submitted > 0) continue;
    // Nothing freed, nothing to wait for: ageing may still turn referenced
    // pages into victims, or another thread may free frames. Give up after
    // a while: every page is pinned, or dirty with the swap full.
    if (++idle > 64) return st.pool->frames_available() >= frames;
    st.wait_progress();
  }
  return true;
}

// ---------------------------------------------------------------------------
// FilePages

FilePages::FilePages(PageCache& cache) : impl_(std::make_unique<FilePagesImpl>(cache.state())) {}
FilePages::~FilePages() = default;

void FilePages::read(uint64_t off, size_t len, ReadDone done) {
  impl_->read(off, len, std::move(done));
}

void read_and_wait(const std::function<void(FilePages::ReadDone)>& start,
                   const FilePages::ReadDone& done) {
  struct {
    std::mutex mu;
    std::condition_variable cv;
    bool finished = false;
  } sync;
  start([&sync, &done](Status s, std::span<const iovec> iov) {
    done(s, iov);
    std::lock_guard lock(sync.mu);
    sync.finished = true;
    sync.cv.notify_all();
  });
  std::unique_lock lock(sync.mu);
  sync.cv.wait(lock, [&] { return sync.finished; });
}

Result<FilePages::PendingWrite*> FilePages::start_write(uint64_t off,
                                                        std::span<const std::byte> data) {
  return impl_->write(off, data);
}

void FilePages::when_written(PendingWrite* w, WriteDone done) {
  w->done = std::move(done);
  w->page_done(0);  // armed: runs `done` now if every page is in already
}

Status FilePages::write(uint64_t off, std::span<const std::byte> data) {
  auto w = impl_->write(off, data);
  if (!w) return w.status();
  return wait_for(*w);
}
void FilePages::truncate(uint64_t old_size, uint64_t new_size) {
  impl_->truncate(old_size, new_size);
}
void FilePages::punch_hole(uint64_t off, uint64_t len) { impl_->punch_hole(off, len); }
Status FilePages::allocate(uint64_t off, uint64_t len) { return impl_->allocate(off, len); }
std::optional<uint64_t> FilePages::seek_data(uint64_t off, uint64_t size) const {
  return impl_->seek_data(off, size);
}
std::optional<uint64_t> FilePages::seek_hole(uint64_t off, uint64_t size) const {
  return impl_->seek_hole(off, size);
}
uint64_t FilePages::pages() const { return impl_->pages(); }

// ---------------------------------------------------------------------------
// PageCache

Result<std::unique_ptr<PageCache>> PageCache::create(const PageCacheConfig& config) {
  return create(config, nullptr);
}

Result<std::unique_ptr<PageCache>> PageCache::create(const PageCacheConfig& config,
                                                     std::unique_ptr<swapdev::SwapDevice> swap) {
  const size_t ps = config.page_size;
  if (swap && swap->page_size() != ps) return Errno{EINVAL};
  if (ps < 4096 || (ps & (ps - 1)) != 0 || ps > (size_t{1} << 30)) return Errno{EINVAL};
  const auto shift = static_cast<unsigned>(std::countr_zero(ps));
  auto pool = FramePool::create(ps, config.memory_bytes / ps);
  if (!pool) return Errno{pool.code()};
  const size_t zero_bytes = std::max(ps, kZeroRegionBytes);
  // Never written: every page of it maps the kernel's zero page.
  void* z = mmap(nullptr, zero_bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (z == MAP_FAILED) return Errno{ENOMEM};
  auto state = std::make_unique<State>(
      config, shift, std::move(pool).value(),
      std::span<const std::byte>(static_cast<const std::byte*>(z), zero_bytes), std::move(swap));
  if (state->swap) state->pool->set_warm_limit(state->pool->frames_total());
  // With a swap device a used frame stays warm for good, so faulting the
  // untouched ones in ahead of the writers costs RSS only a little earlier
  // than the writers would (frame_pool.h, "Prefaulting"). The window: an
  // eighth of --memory, at least one run, at most 16 MiB (RSS above the
  // frames used; 3-5 ms of writing at full speed).
  if (state->swap && config.background_reclaim) {
    const uint64_t total = state->pool->frames_total();
    state->pool->start_prefault(std::min(std::max(total / 8, FramePool::kPrefaultRun),
                                         std::max<uint64_t>((uint64_t{16} << 20) / ps, 1)));
  }
  // The frame region is NOT registered with the swap device as io_uring
  // fixed buffers (UringSwapDevice::register_memory), though DESIGN.md and
  // issue 4 ask for it. Registration pins every page of the region: the
  // kernel faults all of --memory in at mount (measured: registering a
  // 1 GiB MAP_NORESERVE region took VmRSS from 3 MiB to 1,052 MiB), where
  // the pool's memory otherwise follows the frames used, as tmpfs's does.
  // And a pinned frame the pool gives back with MADV_DONTNEED keeps the
  // ring on the old physical page while the mapping gets a new one: fixed
  // I/O would then move bytes the page cache never sees. swapdev reaches
  // fio's speed without it (bench-swapdev).
  if (state->swap && config.background_reclaim) {
    state->reclaimer = std::make_unique<Reclaimer>(*state);
  }
  return std::unique_ptr<PageCache>(new PageCache(std::move(state)));
}

PageCache::PageCache(std::unique_ptr<State> state) : state_(std::move(state)) {}
PageCache::~PageCache() = default;

size_t PageCache::page_size() const { return state_->page_size; }

PageCacheStats PageCache::stats() const {
  State& s = *state_;
  PageCacheStats r;
  r.page_size = s.page_size;
  r.pages_allocated = s.pages_allocated.load(std::memory_order_relaxed);
  r.max_pages = s.max_pages;
  r.frames_total = s.pool->frames_total();
  r.frames_used = s.pool->frames_used();
  r.frames_prefaulted = s.pool->frames_prefaulted();
  r.pages_resident = s.pages_resident.load(std::memory_order_relaxed);
  r.pages_swapped = s.pages_swapped.load(std::memory_order_relaxed);
  r.metadata_bytes = s.metadata.load(std::memory_order_relaxed) + s.pool->metadata_bytes() +
                     sizeof(State);
  auto ld = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  r.frames_free = s.pool->frames_available();
  if (s.swap) {
    const swapdev::SwapCounters c = s.swap->counters();
    r.swap_slots_total = c.total_slots;
    r.swap_slots_used = c.slots_used;
    r.swap_ios = c.ios_submitted;
    r.swap_bytes_written = c.bytes_written;
    r.swap_bytes_read = c.bytes_read;
    r.swap_max_queue_depth = c.max_queue_depth;
    r.swap_errors = c.errors;
    r.swap_checksum_failures = c.checksum_failures;
  }
  r.swap_cached = ld(s.swap_cached);
  r.swap_ins = ld(s.swap_ins);
  r.swap_in_errors = ld(s.swap_in_errors);
  r.writebacks = ld(s.writebacks);
  r.partial_writebacks = ld(s.partial_writebacks);
  r.writeback_errors = ld(s.writeback_errors);
  r.background_cleaned = ld(s.background_cleaned);
  r.reclaim_scans = ld(s.reclaim_scans);
  r.pages_evicted = ld(s.pages_evicted);
  r.writeback_waits = ld(s.writeback_waits);
  r.writeback_copies = ld(s.writeback_copies);
  r.frame_waits = ld(s.frame_waits);
  r.reads_async = ld(s.reads_async);
  r.writes_async = ld(s.writes_async);
  r.readahead_pages = ld(s.readahead_pages);
  r.readahead_hits = ld(s.readahead_hits);
  return r;
}

void PageCache::drain_reads() {
  while (state_->reads_in_flight.load(std::memory_order_acquire) != 0) state_->wait_progress();
}

uint64_t PageCache::shrink(uint64_t frames) {
  if (state_->swap) (void)direct_reclaim(*state_, frames);
  return state_->pool->frames_available();
}

}  // namespace tmpfsd
