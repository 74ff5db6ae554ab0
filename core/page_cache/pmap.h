// Pmap: the management record of one named page (docs/design.md; the seed's
// "pmap"). It is separate from the memory holding the page's data: the
// page's PagePlace (binding.h) in its file's index says where the data is
// now, and a page with a Pmap keeps it for as long as its data is in a
// frame. Nobody outside core/ sees this type.
//
// States an entry of a file's index can be in, and the calls that move it
// (RocksDB lru_cache.h style). "place" is the entry's PagePlace; a Pmap
// exists only where the table says so. Every state is entered and left by
// the calls named in its row (details in the transitions below).
//
//   state             place      Pmap: frame, flags      entered by / left by
//   ----------------  ---------  ----------------------  --------------------
//   Hole              hole       no Pmap                 truncate, punch,
//                                                        ~FilePages / write,
//                                                        allocate
//   Resident clean    Pmap       frame, dirty == 0,      allocate (no swap) /
//                                no slot                 write, page_out
//   Resident dirty    Pmap       frame, dirty != 0       write, fault of a
//                                                        zero page / page_out
//   Under writeback   Pmap       frame, kWriteback,      page_out /
//                                io_count > 0            Writeback::done
//   Under writeback,  Pmap       a copy's frame; the I/O copy_under_
//     with a copy                keeps the old one;      writeback_locked /
//                                kWriteback | kCopied    Writeback::done
//   Swap cached       Pmap       frame with a slot       Writeback::done,
//                                (Frame::swap_slot),     swap_in_done /
//                                dirty == 0              dirty_locked,
//                                                        page_out
//   Swap cached,      Pmap       frame with a slot that  dirty_locked,
//     partly dirty               holds every block but   swap_in_done (a
//                                the dirty ones          patch) / page_out,
//                                                        dirty_locked
//   Under swap-in     Pmap       frame, kReadPending,    start_swap_in_locked,
//                                the slot kept, pinned   submit_swap_in_locked
//                                by the read             / swap_in_done
//   Read error        Pmap       frame (garbage bytes),  swap_in_done on error
//                                kReadError, slot kept   / submit_swap_in_
//                                                        locked (retry), a
//                                                        whole overwrite
//                                                        (fault_range_locked),
//                                                        page_out
//   Swapped           swapped    no Pmap (8 bytes/page   page_out / start_
//                     (slot)     + chunk share: 8.75 B   swap_in_locked, a
//                                measured)               whole overwrite
//   Zero (evicted     zero, or   no Pmap: a fallocated   allocate (swap),
//     fallocated)     zero up-   page, reads as zeros    page_out / fault
//                     to-date                            (write), free
//   Remote            remote     no Pmap: a Swapped      as Swapped: the slot
//                     (key)      page whose slot is in   is in the pool
//                                the remote pool         (SwapDevice::
//                                                        is_remote)
//
//   Hole -> Resident dirty      FilePages::write
//   Hole -> Resident clean      FilePages::allocate without swap (zero page,
//                               !uptodate())
//   Hole -> Zero                FilePages::allocate with swap
//   Resident * -> Hole          FilePages::truncate, punch_hole, ~FilePages
//   Resident clean -> dirty     FilePages::write; truncate/punch_hole zeroing
//                               a partial page
//   Resident dirty -> Under writeback -> Swap cached
//                               page_out_locked (reclaim): the isolating pin
//                               becomes the I/O's, set_writeback(), whole
//                               page written to a new slot. Writeback::done
//                               (completion thread, no file mutex): clears
//                               dirty, sets the frame's slot, clears
//                               writeback, puts it on the inactive tail and
//                               unpins. On error: slot freed, stays dirty.
//   Under writeback -> Under writeback, copied
//                               a write with writeback_copy
//                               (copy_under_writeback_locked): the pmap is
//                               bound to a copy in a new frame, kCopied;
//                               the I/O keeps the old frame.
//   Under writeback, copied -> Resident dirty
//                               Writeback::done: old frame and slot freed,
//                               the whole page dirty.
//   Swap cached -> partly dirty write / truncate / punch zeroing of some
//                               blocks (dirty_locked): the slot is kept.
//   Swap cached, partly dirty -> Resident dirty
//                               the last clean block dirtied: the slot is
//                               freed (dirty_locked).
//   Swap cached, partly dirty -> Under writeback -> Swap cached
//                               page_out_locked: write_blocks() of the
//                               dirty blocks (coarsened to the medium's
//                               min_block_shift) into the same slot. On
//                               error the slot (poisoned) is freed and the
//                               page is wholly dirty.
//   Swap cached -> Swapped (or Remote, the slot being in the pool)
//                               page_out_locked: not referenced, io_count
//                               == 1 (our pin): frame freed, the Pmap
//                               replaced by the compact word. No I/O.
//   Resident clean, no slot -> Zero
//                               page_out_locked (only fallocated pages).
//   Swapped (or Remote) -> Under swap-in
//                               start_swap_in_locked (a read, a partial
//                               write, partial zeroing, readahead): frame
//                               taken, Pmap made with kReadPending, pinned
//                               by the I/O, the slot kept as the frame's.
//   Under swap-in -> Swap cached (or partly dirty)
//                               swap_in_done (completion thread, no file
//                               mutex): copies in a pending write's bytes
//                               (marking their blocks dirty), clears
//                               kReadPending, wakes the page's waiters and
//                               replies the write, unpins.
//   Under swap-in -> Read error swap_in_done on -EIO: kReadError, frame
//                               bytes garbage, slot kept. The next access
//                               reads the slot again (submit_swap_in_locked
//                               from read or fault_range_locked); a write
//                               covering the page whole drops the slot and
//                               makes it Resident dirty; reclaim turns it
//                               back into Swapped (clean, has a slot).
//   Swapped -> Resident dirty   a write covering the whole page: no read,
//                               slot freed.
//   Zero -> Resident            a write (fault_range_locked).
//   Swapped, Zero -> Hole       truncate, punch_hole, ~FilePages: slot freed.
//
// Invariants
//   - Resident clean with no slot reads as zeros: `dirty` means "differs
//     from the backing copy", and a page without a backing copy is zeros.
//     So a clean, slotless page never needs writeback.
//   - A Pmap with io_count() > 0 keeps its frame: nobody frees, moves or
//     reclaims the frame until the count is back to zero. Readers pin the
//     pages they reply from (FilePages::read).
//   - !uptodate(): the page was only fallocated, never written: it exists
//     (counts in pages() and against size=) but SEEK_DATA/SEEK_HOLE treat it
//     as a hole, as kernel tmpfs does. write() makes it uptodate, and so does
//     a second allocate() over it (shmem: SGP_FALLOC on an existing folio);
//     read, truncate and punch_hole zeroing do not.
//   - frame()->owner() == this while bound to a frame.
//
// Dirty blocks: a 64-bit bitmap, one bit per block of
// max(512, page_size / 64) bytes. 512 B is the smallest unit O_DIRECT
// swap I/O can write, so writeback of a small write never has to write more
// than needed; for pages larger than 32 KiB the block grows so the bitmap
// stays one word.
//
// Locks: frame, dirty, file/index are written only under the owning file's
// mutex held exclusive (read under it shared), except dirty while
// writeback() is set: the completion owns it then (LOCKING.md). There is no
// generation number (shmem_confirm_swap's check): nobody re-takes the file
// mutex expecting a Pmap to be unchanged. Reclaim pins a pmap before it
// drops the LRU lock, and a pinned pmap cannot be freed or rebound behind
// the pin's holder; swap-in and writeback completions own the fields they
// touch until they clear their flag; a fault that drops the mutex to
// reclaim (reserve_locked) re-reads every place after re-taking it. The LRU links
// and the list bits of flags are guarded by the PmapLists lock (lru.h).
// flags and io_count are atomics: readers holding the file mutex shared set
// referenced and pin concurrently.
#pragma once

#include <atomic>
#include <cassert>
#include <cstdint>

#include "core/page_cache/frame_pool.h"

namespace tmpfsd {

class FilePagesImpl;

class Pmap {
 public:
  enum class List : uint8_t { kNone, kInactive, kActive };

  Pmap(FilePagesImpl* file, uint64_t index) : file_(file), index_(index) {}
  ~Pmap() { assert(io_count() == 0 && list() == List::kNone); }
  Pmap(const Pmap&) = delete;
  Pmap& operator=(const Pmap&) = delete;

  FilePagesImpl* file() const { return file_; }
  uint64_t index() const { return index_; }

  // The frame holding the data (the index's PagePlace of a page with a Pmap
  // is the Pmap; its data is always in a frame while the Pmap exists).
  bool resident() const { return frame_ != nullptr; }
  Frame* frame() const {
    assert(frame_ != nullptr);
    return frame_;
  }
  void set_frame(Frame* f) { frame_ = f; }

  // Dirty blocks (see above).
  uint64_t dirty_blocks() const { return dirty_; }
  bool dirty() const { return dirty_ != 0; }
  void mark_dirty(uint64_t blocks) { dirty_ |= blocks; }
  void clear_dirty(uint64_t blocks) { dirty_ &= ~blocks; }

  // Flags.
  bool referenced() const { return test(kReferenced); }
  // Readers call this on every access: test first, so that concurrent
  // readers of a hot page do not bounce its cache line with atomic writes.
  void set_referenced() {
    if (!test(kReferenced)) set(kReferenced);
  }
  bool test_and_clear_referenced() {
    return (flags_.fetch_and(~kReferenced, std::memory_order_relaxed) & kReferenced) != 0;
  }
  bool uptodate() const { return test(kUptodate); }
  void set_uptodate() { set(kUptodate); }
  bool writeback() const { return test(kWriteback); }
  void set_writeback() { set(kWriteback); }
  // The end of a writeback, by its completion: clears kWriteback and the
  // two flags below.
  void end_writeback() { clear(kWriteback | kCopied | kCompleting); }
  // Copy during writeback (PageCacheConfig::writeback_copy): a writer that
  // copied the page to a new frame marks it copied, unless the completion
  // has begun (then it waits instead); the completion marks that it has
  // begun and learns whether the page was copied. Exactly one of the two
  // wins, so the completion never frees the old frame under a copy and
  // never cleans a page that a copy has changed.
  bool copied() const { return test(kCopied); }
  bool try_mark_copied() {
    uint32_t f = flags_.load(std::memory_order_acquire);
    do {
      if ((f & kWriteback) == 0 || (f & kCompleting) != 0) return false;
    } while (!flags_.compare_exchange_weak(f, f | kCopied, std::memory_order_acq_rel,
                                           std::memory_order_acquire));
    return true;
  }
  bool begin_writeback_completion() {
    return (flags_.fetch_or(kCompleting, std::memory_order_acq_rel) & kCopied) != 0;
  }
  // Swap-in (swap_in.cc, "Asynchronous swap-in"): kReadPending while the
  // slot is being read into the frame (the frame's bytes are the I/O's);
  // kReadError after that read failed (the frame's bytes are garbage, the
  // slot is still the page's: the next access reads it again, or reclaim
  // turns the page back into a swap word). kReadahead: brought in by
  // readahead and not yet read by anyone.
  bool read_pending() const { return test(kReadPending); }
  void set_read_pending() { set(kReadPending); }
  void clear_read_pending() { clear(kReadPending); }
  bool read_error() const { return test(kReadError); }
  void set_read_error() { set(kReadError); }
  void clear_read_error() { clear(kReadError); }
  // Bytes of the frame are the page's: neither being read nor failed.
  bool bytes_valid() const { return !test(kReadPending | kReadError); }
  void set_readahead() { set(kReadahead); }
  bool test_and_clear_readahead() {
    if (!test(kReadahead)) return false;
    return (flags_.fetch_and(~kReadahead, std::memory_order_acq_rel) & kReadahead) != 0;
  }
  List list() const {
    uint32_t f = flags_.load(std::memory_order_relaxed);
    return (f & kOnActive) ? List::kActive : (f & kOnInactive) ? List::kInactive : List::kNone;
  }

  // Pins: I/O in flight or a reader replying from the frame.
  void pin() { io_count_.fetch_add(1, std::memory_order_acquire); }
  void unpin() {
    [[maybe_unused]] uint32_t was = io_count_.fetch_sub(1, std::memory_order_acq_rel);
    assert(was > 0);
  }
  uint32_t io_count() const { return io_count_.load(std::memory_order_acquire); }

 private:
  friend class PmapLists;
  static constexpr uint32_t kReferenced = 1u << 0;   // used since the last scan
  static constexpr uint32_t kUptodate = 1u << 1;     // written at least once
  static constexpr uint32_t kWriteback = 1u << 2;    // a swap write is in flight
  static constexpr uint32_t kOnInactive = 1u << 3;   // PmapLists lock
  static constexpr uint32_t kOnActive = 1u << 4;     // PmapLists lock
  static constexpr uint32_t kReadPending = 1u << 5;  // a swap read is in flight
  static constexpr uint32_t kReadError = 1u << 6;    // the last swap read failed
  static constexpr uint32_t kReadahead = 1u << 7;    // read ahead, not yet used
  static constexpr uint32_t kCopied = 1u << 8;       // copied to a new frame during writeback
  static constexpr uint32_t kCompleting = 1u << 9;   // the writeback's completion has begun

  // acquire/release: the writeback completion hands dirty_ and the frame's
  // slot back to the file mutex holders by clearing kWriteback (and by the
  // final unpin).
  bool test(uint32_t b) const { return (flags_.load(std::memory_order_acquire) & b) != 0; }
  void set(uint32_t b) { flags_.fetch_or(b, std::memory_order_acq_rel); }
  void clear(uint32_t b) { flags_.fetch_and(~b, std::memory_order_acq_rel); }

  Frame* frame_ = nullptr;             // file mutex
  uint64_t dirty_ = 0;                 // file mutex; one bit per block
  FilePagesImpl* const file_;          // constant
  const uint64_t index_;               // constant: page number in the file
  Pmap* lru_prev_ = nullptr;           // PmapLists lock
  Pmap* lru_next_ = nullptr;           // PmapLists lock
  std::atomic<uint32_t> io_count_{0};  // pins
  std::atomic<uint32_t> flags_{0};     // see k* above
};

static_assert(sizeof(Pmap) <= 64, "a Pmap should fit one cache line");

}  // namespace tmpfsd
