// FileIndex: one file's sparse index from page number to an 8-byte word.
//
// Two levels: an ordered map from chunk number (page >> 6) to a Chunk of 64
// words plus a bitmap of the words that are non-zero.
//
//   std::map<chunk, Chunk>          Chunk: present (64 bits)
//     chunk 0 ------------------->         word[0..63]
//     chunk 3814697265 ----------->  (a write at 1 PB touches one chunk)
//
// A file costs memory for the chunks that hold pages only: a write at a
// 250 GB offset or a truncate to a petabyte adds at most one chunk (~560
// bytes). Lookups are O(log chunks); seeks skip absent chunks with one map
// step and absent pages with the bitmap, never page by page through a hole.
//
// A word is a PagePlace (binding.h has the encoding, pmap.h the states):
// a hole (0), a Pmap, or a compact entry of a page without a Pmap (swapped,
// zero, remote). The index stores raw words; callers see PagePlaces: every
// callback that takes a PagePlace (instead of a raw uint64_t, as the
// index's own tests use) gets one, and returns one where it returns a word.
// A swapped page costs its word plus its share of the chunk:
// (sizeof(map node) ~ 560 B) / 64 ~ 8.8 bytes in a dense file.
//
// Every byte the index allocates is added to *metadata (an atomic counter
// of the mount) through CountingAllocator.
//
// Locks: none of its own; the owning file's mutex (exclusive to modify,
// shared to read). Threads: any, under that mutex.
#pragma once

#include <atomic>
#include <bit>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <type_traits>

#include "core/page_cache/binding.h"
#include "swapdev/thread_annotations.h"

namespace tmpfsd {

class Pmap;

// A std::allocator that adds what it allocates to a counter.
template <class T>
struct CountingAllocator {
  using value_type = T;
  std::atomic<uint64_t>* counter;

  explicit CountingAllocator(std::atomic<uint64_t>* c) : counter(c) {}
  template <class U>
  CountingAllocator(const CountingAllocator<U>& o) : counter(o.counter) {}  // NOLINT

  T* allocate(size_t n) {
    counter->fetch_add(n * sizeof(T), std::memory_order_relaxed);
    return std::allocator<T>().allocate(n);
  }
  void deallocate(T* p, size_t n) {
    counter->fetch_sub(n * sizeof(T), std::memory_order_relaxed);
    std::allocator<T>().deallocate(p, n);
  }
  template <class U>
  bool operator==(const CountingAllocator<U>& o) const {
    return counter == o.counter;
  }
};

class FileIndex {
 public:
  static constexpr unsigned kChunkShift = 6;
  static constexpr uint64_t kChunkPages = uint64_t{1} << kChunkShift;
  static constexpr uint64_t kMask = kChunkPages - 1;

  struct Chunk {
    uint64_t present = 0;  // bit i: word[i] != 0
    uint64_t word[kChunkPages] = {};
    PagePlace place(uint64_t i) const { return PagePlace::from_word(word[i]); }
  };

  explicit FileIndex(std::atomic<uint64_t>* metadata) : chunks_(std::less<>(), Alloc(metadata)) {}

  // Raw-word views of PagePlace, for the index's own tests.
  static bool is_pmap(uint64_t w) { return PagePlace::from_word(w).is_pmap(); }
  static uint64_t compact_swap(uint64_t slot) {
    return PagePlace::swapped(swapdev::SwapSlot(slot)).word();
  }
  static bool is_compact_swap(uint64_t w) { return PagePlace::from_word(w).is_swapped(); }
  static uint64_t swap_slot_of(uint64_t w) { return PagePlace::from_word(w).slot().value; }

  uint64_t size() const { return present_; }  // pages present
  bool empty() const { return present_ == 0; }

  uint64_t get(uint64_t page) const {
    auto it = chunks_.find(page >> kChunkShift);
    return it == chunks_.end() ? 0 : it->second.word[page & kMask];
  }
  PagePlace place(uint64_t page) const { return PagePlace::from_word(get(page)); }

  // The chunk holding pages [n << kChunkShift, (n + 1) << kChunkShift), or
  // nullptr. Valid until the index is next modified.
  const Chunk* find_chunk(uint64_t n) const {
    auto it = chunks_.find(n);
    return it == chunks_.end() ? nullptr : &it->second;
  }

  // The last present page (one map step and a bit scan), or nullopt.
  std::optional<uint64_t> last_present() const {
    if (chunks_.empty()) return std::nullopt;
    const auto& [n, c] = *chunks_.rbegin();
    return (n << kChunkShift) | (63 - std::countl_zero(c.present));
  }

  // Sets a word (w != 0); the page may or may not be present.
  void set(uint64_t page, uint64_t w) {
    Chunk& c = chunks_[page >> kChunkShift];
    const uint64_t bit = uint64_t{1} << (page & kMask);
    if (!(c.present & bit)) ++present_;
    c.present |= bit;
    c.word[page & kMask] = w;
  }
  void set(uint64_t page, PagePlace p) { set(page, p.word()); }
  // set() of many pages, in increasing order: one map step per chunk.
  template <class It, class Word>
  void set_sorted(It begin, It end, Word&& word_of) {
    Chunk* c = nullptr;
    uint64_t cn = UINT64_MAX;
    for (It it = begin; it != end; ++it) {
      const uint64_t page = it->page;
      if ((page >> kChunkShift) != cn) {
        cn = page >> kChunkShift;
        c = &chunks_[cn];
      }
      const uint64_t bit = uint64_t{1} << (page & kMask);
      if (!(c->present & bit)) ++present_;
      c->present |= bit;
      c->word[page & kMask] = word_of(*it);
    }
  }

  // Present pages in [first, last).
  uint64_t count_present(uint64_t first, uint64_t last) const {
    uint64_t n = 0;
    for (auto it = chunks_.lower_bound(first >> kChunkShift);
         it != chunks_.end() && (it->first << kChunkShift) < last; ++it) {
      n += std::popcount(it->second.present & range_mask(it->first, first, last));
    }
    return n;
  }

  // Calls f(page, word) for every present page in [first, last) in order;
  // f returns the new word, 0 to remove the page. Empty chunks are freed.
  template <class F>
  void update_range(uint64_t first, uint64_t last, F&& f) {
    auto it = chunks_.lower_bound(first >> kChunkShift);
    while (it != chunks_.end() && (it->first << kChunkShift) < last) {
      Chunk& c = it->second;
      uint64_t bits = c.present & range_mask(it->first, first, last);
      while (bits) {
        const unsigned i = std::countr_zero(bits);
        bits &= bits - 1;
        const uint64_t page = (it->first << kChunkShift) | i;
        const uint64_t w = call_update(f, page, c.word[i]);
        c.word[i] = w;
        if (w == 0) {
          c.present &= ~(uint64_t{1} << i);
          --present_;
        }
      }
      it = c.present == 0 ? chunks_.erase(it) : std::next(it);
    }
  }

  // Calls f(page, word) for every present page in [first, last); stops
  // early when f returns false.
  template <class F>
  void visit_range(uint64_t first, uint64_t last, F&& f) const {
    for (auto it = chunks_.lower_bound(first >> kChunkShift);
         it != chunks_.end() && (it->first << kChunkShift) < last; ++it) {
      uint64_t bits = it->second.present & range_mask(it->first, first, last);
      while (bits) {
        const unsigned i = std::countr_zero(bits);
        bits &= bits - 1;
        if (!call_visit(f, (it->first << kChunkShift) | i, it->second.word[i])) return;
      }
    }
  }

  // The first present page >= from whose word satisfies pred.
  template <class P>
  std::optional<uint64_t> next_matching(uint64_t from, P&& pred) const {
    std::optional<uint64_t> found;
    visit_range(from, UINT64_MAX, [&](uint64_t page, uint64_t w) {
      if (!call_pred(pred, w)) return true;
      found = page;
      return false;
    });
    return found;
  }

  // The first page >= from that is absent or whose word fails pred.
  template <class P>
  uint64_t next_not_matching(uint64_t from, P&& pred) const {
    uint64_t expect = from;  // every page in [from, expect) matched
    for (auto it = chunks_.lower_bound(from >> kChunkShift); it != chunks_.end(); ++it) {
      const uint64_t base = it->first << kChunkShift;
      if (base > expect) return expect;  // a whole absent chunk (or its start)
      const Chunk& c = it->second;
      for (uint64_t i = expect - base; i < kChunkPages; ++i) {
        if (!(c.present & (uint64_t{1} << i)) || !call_pred(pred, c.word[i])) return base + i;
      }
      expect = base + kChunkPages;
      if (expect == 0) return UINT64_MAX;  // wrapped: the index is full to the top
    }
    return expect;
  }

 private:
  using Alloc = CountingAllocator<std::pair<const uint64_t, Chunk>>;

  // Callbacks see a PagePlace where they take one, else the raw word.
  // Not analysed for locks: a callback may REQUIRE its file's mutex, which
  // the caller of update_range/visit_range holds (the index is guarded by
  // it), but the analysis does not carry that through these templates.
  template <class F>
  static uint64_t call_update(F& f, uint64_t page, uint64_t w) NO_THREAD_SAFETY_ANALYSIS {
    if constexpr (std::is_invocable_v<F&, uint64_t, PagePlace>) {
      return PagePlace(f(page, PagePlace::from_word(w))).word();
    } else {
      return f(page, w);
    }
  }
  template <class F>
  static bool call_visit(F& f, uint64_t page, uint64_t w) NO_THREAD_SAFETY_ANALYSIS {
    if constexpr (std::is_invocable_v<F&, uint64_t, PagePlace>) {
      return f(page, PagePlace::from_word(w));
    } else {
      return f(page, w);
    }
  }
  template <class P>
  static bool call_pred(P& pred, uint64_t w) NO_THREAD_SAFETY_ANALYSIS {
    if constexpr (std::is_invocable_v<P&, PagePlace>) {
      return pred(PagePlace::from_word(w));
    } else {
      return pred(w);
    }
  }

  // Bits of chunk `chunk` that fall in pages [first, last).
  static uint64_t range_mask(uint64_t chunk, uint64_t first, uint64_t last) {
    const uint64_t base = chunk << kChunkShift;
    uint64_t m = ~uint64_t{0};
    if (first > base) m &= ~uint64_t{0} << (first - base);
    if (last - base < kChunkPages) m &= (uint64_t{1} << (last - base)) - 1;
    return m;
  }

  std::map<uint64_t, Chunk, std::less<>, Alloc> chunks_;
  uint64_t present_ = 0;  // pages present
};

}  // namespace tmpfsd
