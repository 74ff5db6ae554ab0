#include "swapdev/slot_allocator.h"

#include "swapdev/thread_annotations.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cerrno>
#include <thread>

namespace tmpfsd::swapdev {

namespace {

constexpr uint32_t kNone = UINT32_MAX;

enum class State : uint8_t { Free, Current, Partial, Full, DiscardWait, Discarding };

struct Cluster {
  uint32_t free = 0;      // clear bits in this cluster
  uint32_t size = 0;      // slots in this cluster (the last one may be short)
  uint32_t prev = kNone;  // links of the list named by `state`
  uint32_t next = kNone;
  State state = State::Free;
};

// Intrusive doubly linked list of cluster indices.
struct List {
  uint32_t head = kNone;
  uint32_t tail = kNone;
  size_t size = 0;

  void push_back(std::vector<Cluster>& cs, uint32_t c) {
    cs[c].prev = tail;
    cs[c].next = kNone;
    if (tail != kNone)
      cs[tail].next = c;
    else
      head = c;
    tail = c;
    ++size;
  }
  void remove(std::vector<Cluster>& cs, uint32_t c) {
    if (cs[c].prev != kNone)
      cs[cs[c].prev].next = cs[c].next;
    else
      head = cs[c].next;
    if (cs[c].next != kNone)
      cs[cs[c].next].prev = cs[c].prev;
    else
      tail = cs[c].prev;
    cs[c].prev = cs[c].next = kNone;
    --size;
  }
  uint32_t pop_front(std::vector<Cluster>& cs) {
    uint32_t c = head;
    if (c != kNone) remove(cs, c);
    return c;
  }
};

std::atomic<unsigned> next_thread_id{0};

}  // namespace

struct SlotAllocator::Shard {
  // Constant after construction.
  uint64_t first_slot = 0;  // slot number of this shard's first slot
  uint64_t nslots = 0;
  uint32_t cluster_slots = 0;
  bool discard = false;

  Mutex mu;                                      // guards everything below
  std::vector<uint64_t> bits GUARDED_BY(mu);     // 1 = allocated
  std::vector<Cluster> clusters GUARDED_BY(mu);  // local cluster index -> record
  List free_list GUARDED_BY(mu), partial_list GUARDED_BY(mu), discard_list GUARDED_BY(mu);
  uint32_t current GUARDED_BY(mu) = kNone;  // the cluster being filled front to back
  uint32_t cursor GUARDED_BY(mu) = 0;       // local slot offset inside `current`

  // Written under mu, read without it for statistics.
  std::atomic<uint64_t> free_slots{0};     // clear bits, whatever the cluster state
  std::atomic<uint64_t> discard_slots{0};  // clear bits in DiscardWait/Discarding

  bool test(uint64_t local) const REQUIRES(mu) { return bits[local / 64] >> (local % 64) & 1; }
  void set(uint64_t local) REQUIRES(mu) { bits[local / 64] |= uint64_t{1} << (local % 64); }
  void clear(uint64_t local) REQUIRES(mu) { bits[local / 64] &= ~(uint64_t{1} << (local % 64)); }

  // First clear bit in [from, end), or end.
  uint64_t find_clear(uint64_t from, uint64_t end) const REQUIRES(mu) {
    while (from < end) {
      uint64_t w = ~bits[from / 64] >> (from % 64);
      if (w != 0) return std::min(end, from + std::countr_zero(w));
      from = (from / 64 + 1) * 64;
    }
    return end;
  }
  // Length of the run of clear bits at `from`, capped at end-from and want.
  uint64_t clear_run(uint64_t from, uint64_t end, uint64_t want) const REQUIRES(mu) {
    uint64_t n = 0;
    while (from + n < end && n < want && !test(from + n)) ++n;
    return n;
  }

  uint64_t cluster_begin(uint32_t c) const { return uint64_t{c} * cluster_slots; }

  // Takes [local, local+n) in cluster c. Does not change c's state.
  void take(uint32_t c, uint64_t local, uint64_t n) REQUIRES(mu) {
    for (uint64_t i = 0; i < n; ++i) set(local + i);
    clusters[c].free -= static_cast<uint32_t>(n);
    free_slots.fetch_sub(n, std::memory_order_relaxed);
  }

  // Where a non-current cluster goes after its free count changed.
  void settle(uint32_t c, SlotAllocator& a) REQUIRES(mu) {
    Cluster& cl = clusters[c];
    if (cl.state == State::Current || cl.state == State::Discarding) return;
    State want;
    if (cl.free == 0)
      want = State::Full;
    else if (cl.free < cl.size)
      want = State::Partial;
    else
      want = discard ? State::DiscardWait : State::Free;
    if (want == cl.state) return;
    unlink(c, a);
    cl.state = want;
    if (want == State::Partial) partial_list.push_back(clusters, c);
    if (want == State::Free) free_list.push_back(clusters, c);
    if (want == State::DiscardWait) {
      discard_list.push_back(clusters, c);
      discard_slots.fetch_add(cl.size, std::memory_order_relaxed);
      a.discard_waiting_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  void unlink(uint32_t c, SlotAllocator& a) REQUIRES(mu) {
    Cluster& cl = clusters[c];
    switch (cl.state) {
      case State::Free:
        free_list.remove(clusters, c);
        break;
      case State::Partial:
        partial_list.remove(clusters, c);
        break;
      case State::DiscardWait:
        discard_list.remove(clusters, c);
        discard_slots.fetch_sub(cl.size, std::memory_order_relaxed);
        a.discard_waiting_.fetch_sub(1, std::memory_order_relaxed);
        break;
      default:
        break;
    }
  }

  void retire_current(SlotAllocator& a) REQUIRES(mu) {
    uint32_t c = current;
    current = kNone;
    // Not Current any more: classify as if its count had just changed. A
    // cluster whose slots were all freed behind the cursor goes to discard.
    clusters[c].state = State::Full;
    settle(c, a);
  }

  // A new current cluster: clean ones first (contiguity), then partial ones
  // (fragmentation is reused), then ones waiting for discard (no point
  // punching what is about to be rewritten).
  bool pick_current(SlotAllocator& a) REQUIRES(mu) {
    uint32_t c = free_list.pop_front(clusters);
    if (c == kNone) c = partial_list.pop_front(clusters);
    if (c == kNone && discard_list.head != kNone) {
      c = discard_list.head;
      unlink(c, a);
    }
    if (c == kNone) return false;
    clusters[c].state = State::Current;
    current = c;
    cursor = 0;
    return true;
  }

  SlotRun alloc_hint(uint64_t local, uint32_t want, SlotAllocator& a) REQUIRES(mu) {
    uint32_t c = static_cast<uint32_t>(local / cluster_slots);
    Cluster& cl = clusters[c];
    if (cl.state == State::Discarding || test(local)) return {};
    uint64_t end = cluster_begin(c) + cl.size;
    uint64_t n = clear_run(local, end, want);
    if (cl.state == State::Free || cl.state == State::DiscardWait) {
      unlink(c, a);
      cl.state = State::Full;  // settle() below files it properly
    }
    take(c, local, n);
    if (cl.state == State::Current) {
      if (cl.free == 0) retire_current(a);
    } else {
      settle(c, a);
    }
    return {SwapSlot(first_slot + local), static_cast<uint32_t>(n), 0};
  }

  SlotRun alloc(uint32_t want, SlotAllocator& a) REQUIRES(mu) {
    for (;;) {
      if (current == kNone && !pick_current(a)) return {SwapSlot(), 0, -ENOSPC};
      uint64_t begin = cluster_begin(current);
      uint64_t end = begin + clusters[current].size;
      uint64_t at = clusters[current].free ? find_clear(begin + cursor, end) : end;
      if (at == end) {
        retire_current(a);
        continue;
      }
      uint64_t n = clear_run(at, end, want);
      take(current, at, n);
      cursor = static_cast<uint32_t>(at + n - begin);
      if (cursor == clusters[current].size || clusters[current].free == 0) retire_current(a);
      return {SwapSlot(first_slot + at), static_cast<uint32_t>(n), 0};
    }
  }

  // Frees [local, local+n) inside one cluster; returns how many were set.
  uint32_t release(uint64_t local, uint64_t n, SlotAllocator& a) REQUIRES(mu) {
    uint32_t c = static_cast<uint32_t>(local / cluster_slots);
    uint32_t freed = 0;
    for (uint64_t i = 0; i < n; ++i) {
      if (!test(local + i)) continue;
      clear(local + i);
      ++freed;
    }
    if (freed == 0) return 0;
    clusters[c].free += freed;
    free_slots.fetch_add(freed, std::memory_order_relaxed);
    settle(c, a);
    return freed;
  }
};

SlotAllocator::SlotAllocator(const Options& opt)
    : total_(opt.total_slots),
      cluster_slots_(std::max<uint32_t>(1, opt.cluster_slots)),
      discard_(opt.discard) {
  uint64_t nclusters = (total_ + cluster_slots_ - 1) / cluster_slots_;
  unsigned want = opt.shards ? opt.shards : std::max(1u, std::thread::hardware_concurrency());
  uint64_t nshards = std::clamp<uint64_t>(want, 1, std::max<uint64_t>(1, nclusters));
  clusters_per_shard_ = std::max<uint64_t>(1, (nclusters + nshards - 1) / nshards);
  nshards = std::max<uint64_t>(1, (nclusters + clusters_per_shard_ - 1) / clusters_per_shard_);
  for (uint64_t i = 0; i < nshards; ++i) {
    auto s = std::make_unique<Shard>();
    MutexLock lk(s->mu);  // not shared yet: only for the analysis
    s->first_slot = i * clusters_per_shard_ * cluster_slots_;
    s->nslots = std::min<uint64_t>(total_ - std::min(total_, s->first_slot),
                                   clusters_per_shard_ * cluster_slots_);
    s->cluster_slots = cluster_slots_;
    s->discard = discard_;
    s->bits.assign((s->nslots + 63) / 64, 0);
    uint64_t nc = (s->nslots + cluster_slots_ - 1) / cluster_slots_;
    s->clusters.resize(nc);
    for (uint32_t c = 0; c < nc; ++c) {
      uint64_t size = std::min<uint64_t>(cluster_slots_, s->nslots - uint64_t{c} * cluster_slots_);
      s->clusters[c].size = s->clusters[c].free = static_cast<uint32_t>(size);
      s->free_list.push_back(s->clusters, c);
    }
    s->free_slots.store(s->nslots, std::memory_order_relaxed);
    shards_.push_back(std::move(s));
  }
}

SlotAllocator::~SlotAllocator() = default;

SlotAllocator::Shard& SlotAllocator::shard_of(uint64_t slot) {
  return *shards_[slot / (clusters_per_shard_ * cluster_slots_)];
}

unsigned SlotAllocator::home_shard() const {
  // A stable per-thread number, so each thread keeps filling its own cluster.
  thread_local unsigned id = next_thread_id.fetch_add(1, std::memory_order_relaxed);
  return id % shards_.size();
}

SlotRun SlotAllocator::allocate(uint32_t want, SwapSlot hint) {
  if (want == 0) return {SwapSlot(), 0, -EINVAL};
  if (hint.valid() && hint.value < total_) {
    Shard& s = shard_of(hint.value);
    MutexLock lk(s.mu);
    SlotRun r = s.alloc_hint(hint.value - s.first_slot, want, *this);
    if (r.count) return r;
  }
  unsigned home = home_shard();
  for (size_t i = 0; i < shards_.size(); ++i) {
    Shard& s = *shards_[(home + i) % shards_.size()];
    if (s.free_slots.load(std::memory_order_relaxed) == 0) continue;
    MutexLock lk(s.mu);
    SlotRun r = s.alloc(want, *this);
    if (r.count) return r;
  }
  alloc_failures_.fetch_add(1, std::memory_order_relaxed);
  return {SwapSlot(), 0, -ENOSPC};
}

uint32_t SlotAllocator::free(SwapSlot first, uint32_t count) {
  uint32_t freed = 0;
  uint64_t slot = first.value;
  uint64_t end = first.valid() ? first.value + count : 0;
  if (!first.valid() || end > total_ || end < slot) {
    spdlog::error("swapdev: free of slots [{}, +{}) outside the device ({} slots)", first.value,
                  count, total_);
    double_frees_.fetch_add(count, std::memory_order_relaxed);
    return 0;
  }
  while (slot < end) {
    Shard& s = shard_of(slot);
    uint64_t local = slot - s.first_slot;
    uint64_t cluster_end = (local / cluster_slots_ + 1) * cluster_slots_;
    uint64_t n = std::min(end - slot, cluster_end - local);
    {
      MutexLock lk(s.mu);
      freed += s.release(local, n, *this);
    }
    slot += n;
  }
  if (freed != count) {
    spdlog::error("swapdev: double free: {} of slots [{}, +{}) were not allocated", count - freed,
                  first.value, count);
    double_frees_.fetch_add(count - freed, std::memory_order_relaxed);
  }
  return freed;
}

bool SlotAllocator::claim(SwapSlot slot) {
  if (!slot.valid() || slot.value >= total_) return false;
  Shard& s = shard_of(slot.value);
  MutexLock lk(s.mu);
  return s.alloc_hint(slot.value - s.first_slot, 1, *this).count == 1;
}

bool SlotAllocator::allocated(SwapSlot slot) const {
  if (!slot.valid() || slot.value >= total_) return false;
  auto& s = const_cast<SlotAllocator*>(this)->shard_of(slot.value);
  MutexLock lk(s.mu);
  return s.test(slot.value - s.first_slot);
}

bool SlotAllocator::all_allocated(SwapSlot first, uint64_t count) const {
  if (!first.valid() || count == 0 || first.value >= total_ || count > total_ - first.value)
    return false;
  auto* self = const_cast<SlotAllocator*>(this);  // shard_of only computes an index
  uint64_t slot = first.value, end = first.value + count;
  while (slot < end) {
    Shard& s = self->shard_of(slot);
    uint64_t local = slot - s.first_slot;
    uint64_t n = std::min(end - slot, s.nslots - local);
    MutexLock lk(s.mu);
    for (uint64_t i = 0; i < n; ++i)
      if (!s.test(local + i)) return false;
    slot += n;
  }
  return true;
}

uint64_t SlotAllocator::used_slots() const {
  uint64_t free = 0;
  for (auto& s : shards_) free += s->free_slots.load(std::memory_order_relaxed);
  return total_ - free;
}

uint64_t SlotAllocator::allocatable_slots() const {
  uint64_t n = 0;
  for (auto& s : shards_)
    n += s->free_slots.load(std::memory_order_relaxed) -
         s->discard_slots.load(std::memory_order_relaxed);
  return n;
}

std::vector<SlotRange> SlotAllocator::take_discard_batch(size_t max_clusters) {
  std::vector<SlotRange> out;
  size_t total_taken = 0;
  for (auto& sp : shards_) {
    Shard& s = *sp;
    MutexLock lk(s.mu);
    std::vector<uint32_t> taken;
    while (total_taken < max_clusters && s.discard_list.head != kNone) {
      uint32_t c = s.discard_list.head;
      s.unlink(c, *this);
      s.clusters[c].state = State::Discarding;
      // Still not allocatable while the punch runs.
      s.discard_slots.fetch_add(s.clusters[c].size, std::memory_order_relaxed);
      discarding_.fetch_add(1, std::memory_order_relaxed);
      taken.push_back(c);
      ++total_taken;
    }
    std::sort(taken.begin(), taken.end());
    for (uint32_t c : taken) {
      uint64_t first = s.first_slot + s.cluster_begin(c);
      if (!out.empty() && out.back().first + out.back().count == first)
        out.back().count += s.clusters[c].size;
      else
        out.push_back({first, s.clusters[c].size});
    }
    if (total_taken >= max_clusters) break;
  }
  return out;
}

void SlotAllocator::finish_discard(const std::vector<SlotRange>& ranges) {
  for (const SlotRange& r : ranges) {
    uint64_t slot = r.first;
    while (slot < r.first + r.count) {
      Shard& s = shard_of(slot);
      uint32_t c = static_cast<uint32_t>((slot - s.first_slot) / cluster_slots_);
      MutexLock lk(s.mu);
      Cluster& cl = s.clusters[c];
      assert(cl.state == State::Discarding);
      cl.state = State::Free;
      s.free_list.push_back(s.clusters, c);
      s.discard_slots.fetch_sub(cl.size, std::memory_order_relaxed);
      discarding_.fetch_sub(1, std::memory_order_relaxed);
      slot += cl.size;
    }
  }
}

}  // namespace tmpfsd::swapdev
