// The Reclaimer thread and the reclaim pass it and direct reclaim run. The
// policy is described in reclaimer.h; paging one page out is Writeback's
// (writeback.cc, FilePagesImpl::page_out_locked).
#include "core/reclaimer.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "core/file_pages.h"
#include "core/page_cache_state.h"
#include "swapdev/swap_device.h"

namespace tmpfsd {

Reclaimer::Reclaimer(PageCache::State& st)
    : st_(st),
      high_(std::max<uint64_t>(2, st.pool->frames_total() / 32)),
      clean_(std::max<uint64_t>(4, st.pool->frames_total() / 4)),
      thread_([this](std::stop_token s) { run(s); }) {}

Reclaimer::~Reclaimer() {
  thread_.request_stop();
  cv_.notify_all();
}

void Reclaimer::kick() {
  {
    std::lock_guard lock(mu_);
    if (kicked_) return;
    kicked_ = true;
  }
  cv_.notify_one();
}

void Reclaimer::run(std::stop_token stop) {
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
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, stop, avail < clean_ ? 2ms : 10ms, [&] { return kicked_; });
    kicked_ = false;
  }
}

// ---------------------------------------------------------------------------
// The reclaim pass

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
    switch (cur->page_out_locked(p, sc)) {
      case PageOut::kFreed: ++sc.freed; break;
      case PageOut::kWriteback: ++sc.submitted; break;
      case PageOut::kSwapFull: sc.swap_full = true; break;
      case PageOut::kKept:
      case PageOut::kActivated: break;
    }
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

}  // namespace tmpfsd
