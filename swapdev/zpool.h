// ZPool: compressed pages packed into pages of a PageSource (the mount's
// frame pool, so that frames and pool together never exceed --memory;
// docs/design.md, "The compressed tier").
//
// The problem: a compressed page is any size from a few bytes to most of a
// page, and the pool must waste little of the frames it holds, give frames
// back as pages leave it, and find any object in O(1) from the word a file's
// index keeps for it, even after objects move to free frames.
//
// The idea (zsmalloc's): objects are rounded up to a size class (steps of
// kAlign bytes up to max_object). A class keeps its objects in spans: runs
// of 1 to kMaxSpanFrames frames (pages of the source), not contiguous in
// memory, seen as one byte array cut into equal slots; the frame count is
// the fewest that waste within kWasteSlack of the least waste for that size
// (2 frames of 2,720-byte slots hold 3 of them, one frame only 1; 16 frames
// of 2,112-byte slots, what lz4 makes of a page of 2:1 data, hold 31, 4
// frames only 7). An object may straddle two frames of its span: it is
// copied in two pieces.
//
//   ZHandle ──> entries_[h]: {span, slot, size, tag, FIFO links}
//                  span ──> spans_[s]: {class, frames[], slot -> entry}
//
// A handle names an entry, never a place: compact() moves objects between
// spans of a class and updates only their entries, so the holder of a
// handle (a page word) never hears of it. An entry costs sizeof(Entry)
// bytes, counted in metadata_bytes() with the spans and their slot tables.
//
// Placement: a store goes to the fullest span of its class that has a free
// slot, so the emptiest spans drain and free their frames; a span whose last
// object leaves gives its frames back at once. compact() moves the objects
// of a class's emptiest spans into the free slots of its fullest.
//
// Order: entries are kept oldest first (the order they were stored); a full
// pool writes its oldest on to the swap file (oldest()).
//
// Invariants (mu_): frames_held_ <= max_frames_ and is the sum of the spans'
// frame counts; a span is in its class's `partial` set iff 0 < used <
// capacity; an entry and its span slot point at each other.
//
// Locks: mu_ guards everything, and is held over the copy of one object in
// or out (at most max_object bytes) and while the source hands out or takes
// back pages (under it the frame pool's lock; core/LOCKING.md).
// Threads: any thread may call any method concurrently.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <set>
#include <span>
#include <utility>
#include <vector>

#include "swapdev/page_source.h"
#include "swapdev/thread_annotations.h"

namespace tmpfsd::swapdev {

// An object in a ZPool. Default-constructed is invalid. Fits the page
// word's 60 bits (binding.h).
struct ZHandle {
  uint32_t value = 0;  // entry index + 1
  constexpr bool valid() const { return value != 0; }
  friend constexpr bool operator==(ZHandle, ZHandle) = default;
};

class ZPool {
 public:
  static constexpr size_t kAlign = 16;
  // zsmalloc's chain size goes up to 16 too (CONFIG_ZSMALLOC_CHAIN_SIZE).
  static constexpr unsigned kMaxSpanFrames = 16;
  // A larger span is taken only when it wastes this share of its bytes
  // less than a smaller one (1/128).
  static constexpr size_t kWasteSlack = 128;

  // Takes pages from `frames`, at most `max_frames` at once; objects of 1 to
  // `max_object` bytes (at most a page).
  ZPool(PageSource& frames, uint64_t max_frames, size_t max_object);
  ~ZPool();  // gives every frame back; live objects are dropped
  ZPool(const ZPool&) = delete;
  ZPool& operator=(const ZPool&) = delete;

  // Copies `data` in. `tag` is the caller's (who owns the object), handed
  // back by tag(). -EINVAL: empty or larger than max_object; -ENOSPC: a new
  // span would pass max_frames, or the source has no page left. The handle
  // is written to *out on success (0).
  int store(std::span<const std::byte> data, uint64_t tag, ZHandle* out);
  // Copies the object to the front of `out` (at least size(h) bytes) and
  // returns its size.
  size_t load(ZHandle h, std::span<std::byte> out) const;
  uint32_t size(ZHandle h) const;
  uint64_t tag(ZHandle h) const;
  void free(ZHandle h);
  // The object stored longest ago; invalid when the pool is empty.
  ZHandle oldest() const;
  // Moves objects out of each class's emptiest spans into the free slots of
  // its fullest, freeing the spans it empties. Returns frames given back.
  uint64_t compact();

  struct Stats {
    uint64_t objects = 0;
    uint64_t object_bytes = 0;  // the sum of the objects' sizes
    uint64_t frames = 0;        // frames held now
    uint64_t spans = 0;
    uint64_t metadata_bytes = 0;
    uint64_t moved = 0;  // objects compact() has moved, ever
  };
  Stats stats() const;
  uint64_t max_frames() const { return max_frames_; }
  size_t max_object() const { return max_object_; }
  // A class's slot size and frames per span (tests, docs).
  std::pair<size_t, unsigned> class_shape(size_t object_size) const;

 private:
  static constexpr uint32_t kNone = UINT32_MAX;

  struct Class {
    uint32_t slot_size = 0;
    uint16_t frames = 0;    // per span
    uint16_t capacity = 0;  // slots per span
    // Spans with 0 < used < capacity, by (used, span): fullest last.
    std::set<std::pair<uint32_t, uint32_t>> partial;
  };
  struct Span {
    uint16_t cls = 0;
    uint16_t used = 0;        // 0 and no frames: on free_spans_
    uint16_t first_free = 0;  // no free slot below it
    std::byte* frames[kMaxSpanFrames] = {};
    std::vector<uint32_t> slots;  // slot -> entry index, kNone when free
  };
  struct Entry {
    uint32_t span = kNone;  // kNone: on free_entries_
    uint16_t slot = 0;
    uint16_t size = 0;
    uint32_t older = kNone, newer = kNone;  // the FIFO
    uint64_t tag = 0;
  };

  size_t class_of(size_t size) const { return (size + kAlign - 1) / kAlign - 1; }
  // Calls f(mem, done, n) for each piece of the first `len` bytes of a
  // slot: n bytes at `mem` are bytes [done, done + n) of the object.
  template <class F>
  void for_pieces_locked(const Span& s, const Class& c, uint16_t slot, size_t len, F&& f) const
      REQUIRES(mu_);
  void write_locked(const Span& s, const Class& c, uint16_t slot, std::span<const std::byte> in)
      REQUIRES(mu_);
  void read_locked(const Span& s, const Class& c, uint16_t slot, std::span<std::byte> out) const
      REQUIRES(mu_);
  // A new empty span of class `cls` (its id), or kNone.
  uint32_t new_span_locked(uint16_t cls) REQUIRES(mu_);
  void free_span_locked(uint32_t span) REQUIRES(mu_);
  // Takes a free slot of `span` (which has one) for entry `e`.
  uint16_t take_slot_locked(uint32_t span, uint32_t e) REQUIRES(mu_);
  // Gives back the slot entry `e` holds; frees the span if it empties.
  void release_slot_locked(const Entry& e) REQUIRES(mu_);
  void set_used_locked(uint32_t span, uint16_t used) REQUIRES(mu_);
  void unlink_locked(uint32_t e) REQUIRES(mu_);
  Entry& entry_locked(ZHandle h) REQUIRES(mu_);
  const Entry& entry_locked(ZHandle h) const REQUIRES(mu_);

  // Constant after construction.
  PageSource& pool_;
  const uint64_t max_frames_;
  const size_t max_object_;
  const size_t frame_size_;

  mutable Mutex mu_;
  std::vector<Class> classes_ GUARDED_BY(mu_);  // classes_[k]: slots of (k + 1) * kAlign bytes
  std::vector<Span> spans_ GUARDED_BY(mu_);
  std::vector<uint32_t> free_spans_ GUARDED_BY(mu_);
  std::vector<Entry> entries_ GUARDED_BY(mu_);
  std::vector<uint32_t> free_entries_ GUARDED_BY(mu_);
  uint32_t oldest_ GUARDED_BY(mu_) = kNone;
  uint32_t newest_ GUARDED_BY(mu_) = kNone;
  uint64_t frames_held_ GUARDED_BY(mu_) = 0;
  uint64_t objects_ GUARDED_BY(mu_) = 0;
  uint64_t object_bytes_ GUARDED_BY(mu_) = 0;
  uint64_t moved_ GUARDED_BY(mu_) = 0;
};

}  // namespace tmpfsd::swapdev
