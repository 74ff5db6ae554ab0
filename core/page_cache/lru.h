// PmapLists: the active and inactive chains of the seed's kswapd, one pair
// per mount. The Reclaimer (reclaimer.h) ages them: it isolates pmaps from
// the inactive tail, moves referenced ones to the active list, and pages out
// the rest; it refills the inactive list from the active tail. Only
// resident pmaps are on a list; a pmap isolated by reclaim or under
// writeback is on none and pinned, and comes back through putback_unpin().
//
// Invariants (mu_): a Pmap is on at most one list, and its list() flag says
// which; counts equal list lengths.
// Locks: mu_ guards every Pmap's lru links and list flag bits. It nests
// inside the file mutex and outside the FramePool lock (LOCKING.md). No
// allocation, no I/O and no call-outs while it is held: callers collect
// batches first and hand them over.
// Threads: any.
#pragma once

#include <cassert>
#include <cstdint>
#include <mutex>
#include <span>

#include "core/page_cache/pmap.h"
#include "swapdev/thread_annotations.h"

namespace tmpfsd {

class PmapLists {
 public:
  PmapLists() = default;
  ~PmapLists() { assert(inactive_.count == 0 && active_.count == 0); }
  PmapLists(const PmapLists&) = delete;
  PmapLists& operator=(const PmapLists&) = delete;

  // New pages go to the inactive head.
  void add_new(std::span<Pmap* const> pmaps) {
    if (pmaps.empty()) return;
    MutexLock lock(mu_);
    for (Pmap* p : pmaps) push_head_locked(inactive_, p, Pmap::kOnInactive);
  }
  // Reclaim, the isolate half of LOCKING.md's protocol. Refills
  // the inactive list from the active tail (ageing: a page deactivated
  // loses its referenced bit and gets one more chance on the inactive
  // list), then walks up to `scan` pmaps from the inactive tail: referenced
  // ones move to the active head (second chance), pinned ones (I/O,
  // readers) rotate to the inactive head, the rest are pinned
  // (io_count++), taken off the list and stored in `out`. Returns how many
  // were isolated; *scanned counts the pmaps looked at. `out` is the
  // caller's, allocated before: nothing is allocated here.
  size_t isolate(std::span<Pmap*> out, size_t scan, uint64_t* scanned) {
    MutexLock lock(mu_);
    for (uint64_t n = 0; inactive_.count < active_.count && n < scan; ++n) {
      Pmap* p = active_.tail;
      remove_locked(p);
      p->test_and_clear_referenced();
      push_head_locked(inactive_, p, Pmap::kOnInactive);
    }
    size_t got = 0;
    for (size_t n = 0; n < scan && got < out.size() && inactive_.tail; ++n) {
      Pmap* p = inactive_.tail;
      ++*scanned;
      remove_locked(p);
      if (p->test_and_clear_referenced()) {
        push_head_locked(active_, p, Pmap::kOnActive);
      } else if (p->io_count() != 0) {
        push_head_locked(inactive_, p, Pmap::kOnInactive);
      } else {
        p->pin();
        out[got++] = p;
      }
    }
    return got;
  }
  // Gives back an isolated (or written-back) pmap: puts it on a list and
  // drops the pin, in one critical section, so that remove_idle() never
  // sees an unpinned pmap off the lists that someone will put back later.
  enum class Where { kInactiveHead, kInactiveTail, kActiveHead };
  void putback_unpin(Pmap* p, Where w) {
    MutexLock lock(mu_);
    putback_locked(p, w);
  }
  void putback_unpin(std::span<Pmap* const> pmaps, Where w) {
    if (pmaps.empty()) return;
    MutexLock lock(mu_);
    for (Pmap* p : pmaps) putback_locked(p, w);
  }
  // Pages being freed (truncate, punch, ~FilePages) whose file mutex is
  // held exclusive: takes them off the lists; true when all of them are
  // unpinned, and then none can be pinned again (isolate pins only listed
  // pmaps). False: some are isolated by reclaim or under I/O; wait, retry.
  bool remove_idle(std::span<Pmap* const> pmaps) {
    if (pmaps.empty()) return true;
    MutexLock lock(mu_);
    bool idle = true;
    for (Pmap* p : pmaps) {
      remove_locked(p);
      if (p->io_count() != 0) idle = false;
    }
    return idle;
  }
  uint64_t inactive_count() const {
    MutexLock lock(mu_);
    return inactive_.count;
  }
  uint64_t active_count() const {
    MutexLock lock(mu_);
    return active_.count;
  }

 private:
  struct List {
    Pmap* head = nullptr;
    Pmap* tail = nullptr;
    uint64_t count = 0;
  };

  // Links p in at one end of l and marks it as on l (bit).
  enum class End { kHead, kTail };
  void push_locked(List& l, End end, Pmap* p, uint32_t bit) REQUIRES(mu_) {
    assert(p->list() == Pmap::List::kNone);
    const bool head = end == End::kHead;
    Pmap*& near = head ? l.head : l.tail;  // the end p goes to
    p->lru_prev_ = head ? nullptr : near;
    p->lru_next_ = head ? near : nullptr;
    if (!near)
      (head ? l.tail : l.head) = p;
    else if (head)
      near->lru_prev_ = p;
    else
      near->lru_next_ = p;
    near = p;
    ++l.count;
    p->set(bit);
  }
  void push_head_locked(List& l, Pmap* p, uint32_t bit) REQUIRES(mu_) {
    push_locked(l, End::kHead, p, bit);
  }
  void putback_locked(Pmap* p, Where w) REQUIRES(mu_) {
    switch (w) {
      case Where::kInactiveHead:
        push_head_locked(inactive_, p, Pmap::kOnInactive);
        break;
      case Where::kActiveHead:
        push_head_locked(active_, p, Pmap::kOnActive);
        break;
      case Where::kInactiveTail:
        push_locked(inactive_, End::kTail, p, Pmap::kOnInactive);
        break;
    }
    p->unpin();
  }
  void remove_locked(Pmap* p) REQUIRES(mu_) {
    List* l;
    uint32_t bit;
    switch (p->list()) {
      case Pmap::List::kInactive:
        l = &inactive_;
        bit = Pmap::kOnInactive;
        break;
      case Pmap::List::kActive:
        l = &active_;
        bit = Pmap::kOnActive;
        break;
      default:
        return;
    }
    if (p->lru_prev_)
      p->lru_prev_->lru_next_ = p->lru_next_;
    else
      l->head = p->lru_next_;
    if (p->lru_next_)
      p->lru_next_->lru_prev_ = p->lru_prev_;
    else
      l->tail = p->lru_prev_;
    p->lru_prev_ = p->lru_next_ = nullptr;
    --l->count;
    p->clear(bit);
  }

  mutable Mutex mu_;
  List inactive_ GUARDED_BY(mu_);
  List active_ GUARDED_BY(mu_);
};

}  // namespace tmpfsd
