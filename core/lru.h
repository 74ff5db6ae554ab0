// PmapLists: the active and inactive chains of the seed's kswapd, one pair
// per mount. The Reclaimer (issue 5) ages them: it takes pmaps from the
// inactive tail, moves referenced ones to the active list, and evicts the
// rest; it refills the inactive list from the active tail. Until then pages
// are only put on (new pages at the inactive head) and taken off (pages
// freed), so that issue 5 adds only the thread.
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

#include "core/pmap.h"

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
    std::lock_guard lock(mu_);
    for (Pmap* p : pmaps) push_head_locked(inactive_, p, Pmap::kOnInactive);
  }
  // Takes pages off whichever list they are on (pages being freed).
  void remove(std::span<Pmap* const> pmaps) {
    if (pmaps.empty()) return;
    std::lock_guard lock(mu_);
    for (Pmap* p : pmaps) remove_locked(p);
  }
  uint64_t inactive_count() const {
    std::lock_guard lock(mu_);
    return inactive_.count;
  }
  uint64_t active_count() const {
    std::lock_guard lock(mu_);
    return active_.count;
  }

 private:
  struct List {
    Pmap* head = nullptr;
    Pmap* tail = nullptr;
    uint64_t count = 0;
  };

  void push_head_locked(List& l, Pmap* p, uint32_t bit) {
    assert(p->list() == Pmap::List::kNone);
    p->lru_prev_ = nullptr;
    p->lru_next_ = l.head;
    if (l.head) l.head->lru_prev_ = p; else l.tail = p;
    l.head = p;
    ++l.count;
    p->set(bit);
  }
  void remove_locked(Pmap* p) {
    List* l;
    uint32_t bit;
    switch (p->list()) {
      case Pmap::List::kInactive: l = &inactive_; bit = Pmap::kOnInactive; break;
      case Pmap::List::kActive: l = &active_; bit = Pmap::kOnActive; break;
      default: return;
    }
    if (p->lru_prev_) p->lru_prev_->lru_next_ = p->lru_next_; else l->head = p->lru_next_;
    if (p->lru_next_) p->lru_next_->lru_prev_ = p->lru_prev_; else l->tail = p->lru_prev_;
    p->lru_prev_ = p->lru_next_ = nullptr;
    --l->count;
    p->clear(bit);
  }

  mutable std::mutex mu_;
  List inactive_;  // guarded by mu_
  List active_;    // guarded by mu_
};

}  // namespace tmpfsd
