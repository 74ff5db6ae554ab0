// The Reclaimer thread. The policy and the pass itself are described in
// reclaimer.h; the pass is in page_cache.cc, next to the file's index.
#include "core/reclaimer.h"

#include <pthread.h>
#include <algorithm>
#include <chrono>

#include "core/page_cache_state.h"

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
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, stop, avail < clean_ ? 2ms : 10ms, [&] { return kicked_; });
    kicked_ = false;
  }
}

}  // namespace tmpfsd
