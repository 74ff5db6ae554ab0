// The evict path: the Reclaimer thread, the reclaim pass it and direct
// reclaim run, and what a pass does with one isolated page
// (FilePagesImpl::page_out_locked). The policy is described in reclaimer.h;
// the lists and their isolate step are lru.h's; a dirty page's swap write is
// writeback.cc's (write_back_locked).
#include "core/page_cache/reclaimer.h"

#include <pthread.h>
#include <algorithm>
#include <cassert>
#include <chrono>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

#include "core/page_cache/file_pages.h"
#include "core/page_cache/page_cache_state.h"
#include "swapdev/swap_device.h"

namespace tmpfsd {

Reclaimer::Reclaimer(PageCache::State& st)
    : st_(st),
      high_(std::max<uint64_t>(2, st.pool->frames_total() / 32)),
      // In front of a device that keeps pages in memory, a page cleaned
      // ahead is held twice (its frame and the pool's copy), which lowers
      // the frames available and so cleans more: clean only when memory is
      // nearly full (a sixteenth left), where eviction is near anyway.
      clean_(st.swap && st.swap->keeps_pages()
                 ? std::max<uint64_t>(high_, st.pool->frames_total() / 16)
                 : std::max<uint64_t>(4, st.pool->frames_total() / 4)),
      thread_([this](std::stop_token s) { run(s); }) {}

Reclaimer::~Reclaimer() {
  thread_.request_stop();
  cv_.notify_all();
}

void Reclaimer::kick() {
  {
    MutexLock lock(mu_);
    if (kicked_) return;
    kicked_ = true;
  }
  cv_.notify_one();
}

void Reclaimer::run(std::stop_token stop) {
  pthread_setname_np(pthread_self(), "reclaimer");  // how stack dumps and /proc/PID/task name it
  using namespace std::chrono_literals;
  while (!stop.stop_requested()) {
    const uint64_t avail = st_.pool->frames_available();
    bool busy = false;
    if (avail < high_) {
      ScanControl sc;
      sc.batch = kBatch;
      reclaim_pass(st_, sc);
      busy = sc.freed > 0 || sc.submitted > 0;
      if (!busy) st_.wait_progress(2);
    } else if (avail < clean_) {
      ScanControl sc;
      sc.batch = kBatch;
      sc.evict = false;
      sc.background = true;
      reclaim_pass(st_, sc);
      busy = sc.submitted > 0;
    }
    if (busy) continue;
    UniqueLock lock(mu_);
    cv_.wait_for(lock.native(), stop, avail < clean_ ? 2ms : 10ms,
                 [&]() REQUIRES(mu_) { return kicked_; });
    kicked_ = false;
  }
}

// ---------------------------------------------------------------------------
// The reclaim pass

namespace {

// Pages out `run` (isolated pmaps of `file`) under the file's mutex, if it
// can be had without waiting; else puts them back. Reclaim found them
// through the LRU lock, the wrong order for blocking on a file mutex.
void page_out_run(PageCache::State& st, ScanControl& sc, FilePagesImpl& file,
                  std::span<Pmap* const> run) {
  if (!file.mutex().try_lock()) {
    for (Pmap* p : run) st.lists.putback_unpin(p, PmapLists::Where::kInactiveHead);
    sc.locked_out += run.size();
    return;
  }
  for (Pmap* p : run) {
    switch (file.page_out_locked(p, sc)) {
      case PageOut::kFreed:
        ++sc.freed;
        break;
      case PageOut::kWriteback:
        ++sc.submitted;
        break;
      case PageOut::kSwapFull:
        sc.swap_full = true;
        break;
      case PageOut::kKept:
      case PageOut::kActivated:
        break;
    }
  }
  file.mutex().unlock();
}

}  // namespace

// p is isolated and pinned by the caller; this file's mutex is held
// exclusive. Every path ends with p put back, freed, or handed to I/O; the
// result says which (reclaim_pass counts it).
PageOut FilePagesImpl::page_out_locked(Pmap* p, ScanControl& sc) {
  using Where = PmapLists::Where;
  if (p->io_count() != 1) {
    st_.lists.putback_unpin(p, Where::kInactiveHead);
    return PageOut::kKept;
  }
  if (p->test_and_clear_referenced()) {
    st_.lists.putback_unpin(p, Where::kActiveHead);
    return PageOut::kActivated;
  }
  Frame* f = p->frame();
  if (!p->dirty()) {
    if (!sc.evict) {
      st_.lists.putback_unpin(p, Where::kInactiveHead);
      return PageOut::kKept;
    }
    PagePlace place;
    if (f->has_slot()) {
      const swapdev::SwapSlot s = st_.take_slot(f);
      place = PagePlace::paged_out(s, st_.swap->is_remote(s));
      st_.pages_swapped.fetch_add(1, std::memory_order_relaxed);
    } else {
      place = PagePlace::zero(p->uptodate());  // clean, no slot: zeros
    }
    index_.set(p->index(), place);
    f->set_owner(nullptr);
    st_.pool->free(f);
    st_.pages_resident.fetch_sub(1, std::memory_order_relaxed);
    p->unpin();
    delete p;
    st_.metadata.fetch_sub(sizeof(Pmap), std::memory_order_relaxed);
    st_.pages_evicted.fetch_add(1, std::memory_order_relaxed);
    return PageOut::kFreed;
  }
  return write_back_locked(p, sc);
}

void reclaim_pass(PageCache::State& st, ScanControl& sc) {
  assert(st.swap);
  std::vector<Pmap*> batch(sc.batch);  // allocated before the LRU lock
  uint64_t scanned = 0;
  const size_t n = st.lists.isolate(batch, sc.batch * 4, &scanned);
  st.reclaim_scans.fetch_add(scanned, std::memory_order_relaxed);
  if (n == 0) return;
  swapdev::IoBatch plug(*st.swap);
  // Runs of pmaps of one file are paged out under one try-lock of its mutex.
  // A pinned pmap keeps its file alive (free_range_locked waits for pins).
  const std::span<Pmap*> isolated = std::span(batch).first(n);
  for (size_t i = 0; i < n;) {
    FilePagesImpl* file = isolated[i]->file();
    size_t j = i + 1;
    while (j < n && isolated[j]->file() == file) ++j;
    page_out_run(st, sc, *file, isolated.subspan(i, j - i));
    i = j;
  }
}

bool direct_reclaim(PageCache::State& st, uint64_t frames) {
  if (!st.swap) return false;
  // Passes that freed nothing only because the pages' file mutex was held
  // (by other readers and writers of the same file, who let go of it soon:
  // the caller holds no core/ lock) are not idle, up to this many.
  constexpr int kLockedOutPasses = 4096;
  for (int idle = 0, locked_out = 0; st.pool->frames_available() < frames;) {
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
    if (sc.locked_out > 0 && ++locked_out < kLockedOutPasses) {
      std::this_thread::yield();
      continue;
    }
    // Nothing freed, nothing to wait for: ageing may still turn referenced
    // pages into victims, or another thread may free frames. Give up after
    // a while: every page is pinned, or dirty with the swap full.
    if (++idle > 64) return st.pool->frames_available() >= frames;
    st.wait_progress();
  }
  return true;
}

}  // namespace tmpfsd
