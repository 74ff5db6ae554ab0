#include "core/page_cache/frame_pool.h"

#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <cassert>
#include <cerrno>

#include <spdlog/spdlog.h>

namespace tmpfsd {

Result<std::unique_ptr<FramePool>> FramePool::create(size_t frame_size, uint64_t frames_total) {
  if (frame_size == 0 || (frame_size & (frame_size - 1)) != 0) return Errno{EINVAL};
  if (frames_total >= (uint64_t{1} << 32)) return Errno{EINVAL};
  std::byte* base = nullptr;
  if (frames_total > 0) {
    void* p = mmap(nullptr, frame_size * frames_total, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      spdlog::error("FramePool: cannot reserve {} frames of {} bytes: errno {}", frames_total,
                    frame_size, errno);
      return Errno{ENOMEM};
    }
    base = static_cast<std::byte*>(p);
  }
  return std::unique_ptr<FramePool>(new FramePool(frame_size, frames_total, base));
}

FramePool::FramePool(size_t frame_size, uint64_t frames_total, std::byte* base)
    : frame_size_(frame_size), frames_total_(frames_total), base_(base), frames_(frames_total) {
  warm_.reserve(kWarmFrames);
  cold_.reserve(frames_total);
  // Frame 0 on top: the region fills from its start.
  for (uint64_t i = frames_total; i-- > 0;) {
    frames_[i].mem_ = {base_ + i * frame_size_, frame_size_};
    cold_.push_back(static_cast<uint32_t>(i));
  }
}

FramePool::~FramePool() {
  if (prefault_thread_.joinable()) {
    prefault_thread_.request_stop();
    prefault_thread_.join();
  }
  assert(used_.load() == 0 && reserved_ == 0);
  if (used_.load() != 0) spdlog::error("FramePool: {} frames still in use at exit", used_.load());
  if (base_ != nullptr) munmap(base_, frame_size_ * frames_total_);
}

// Without mu_: the stacks' capacities are fixed at construction
// (set_warm_limit reserves before the pool is shared), and push_back never
// reallocates them.
uint64_t FramePool::metadata_bytes() const NO_THREAD_SAFETY_ANALYSIS {
  return frames_.capacity() * sizeof(Frame) +
         (cold_.capacity() + warm_.capacity()) * sizeof(uint32_t);
}

Result<FramePool::Reservation> FramePool::reserve(uint64_t n, uint64_t keep) {
  MutexLock lock(mu_);
  const uint64_t free = warm_.size() + cold_.size();
  if (free - reserved_ < n || free - reserved_ - n < keep) return Errno{ENOSPC};
  reserved_ += n;
  return Reservation(this, n);
}

void FramePool::unreserve(uint64_t n) {
  MutexLock lock(mu_);
  assert(reserved_ >= n);
  reserved_ -= n;
}

FramePool::Reservation& FramePool::Reservation::operator=(Reservation&& o) noexcept {
  if (this != &o) {
    release();
    pool_ = o.pool_;
    left_ = o.left_;
    o.left_ = 0;
  }
  return *this;
}

void FramePool::Reservation::release() {
  if (left_ > 0) pool_->unreserve(left_);
  left_ = 0;
}

FramePool::Taken FramePool::Reservation::take() {
  assert(left_ > 0);
  --left_;
  FramePool& p = *pool_;
  MutexLock lock(p.mu_);
  assert(p.reserved_ > 0);
  --p.reserved_;
  p.used_.fetch_add(1, std::memory_order_relaxed);
  uint32_t i;
  bool zeroed;
  if (!p.warm_.empty()) {
    i = p.warm_.back();
    p.warm_.pop_back();
    zeroed = false;
  } else {
    assert(!p.cold_.empty());
    i = p.cold_.back();
    p.cold_.pop_back();
    zeroed = true;
  }
  Frame* f = &p.frames_[i];
  assert(f->owner_ == nullptr);
  if (zeroed && p.prefault_due_locked()) p.prefault_cv_.notify_one();
  return {f, zeroed};
}

void FramePool::free(Frame* f) {
  assert(f != nullptr && f->owner_ == nullptr && !f->slot_.valid());
  assert(f >= frames_.data() && f < frames_.data() + frames_.size());
  MutexLock lock(mu_);
  assert(used_.load(std::memory_order_relaxed) > 0);
  used_.fetch_sub(1, std::memory_order_relaxed);
  if (warm_.size() >= warm_limit_) cool_warm_locked();
  warm_.push_back(number(f));
}

void FramePool::set_warm_limit(size_t n) {
  MutexLock lock(mu_);
  warm_limit_ = std::max<size_t>(1, n);
  warm_.reserve(warm_limit_);  // push_back under mu_ never allocates
}

void FramePool::trim() {
  MutexLock lock(mu_);
  cool_warm_locked();
}

// Gives the memory of every warm frame back to the OS, one madvise per run of
// adjacent frames. Under mu_: the frames are free, so nobody else touches
// them, and holding the lock keeps them counted as free for reserve().
void FramePool::cool_warm_locked() {
  if (warm_.empty()) return;
  std::sort(warm_.begin(), warm_.end());
  size_t run_start = 0;
  for (size_t k = 1; k <= warm_.size(); ++k) {
    if (k < warm_.size() && warm_[k] == warm_[k - 1] + 1) continue;
    std::byte* p = base_ + uint64_t{warm_[run_start]} * frame_size_;
    if (madvise(p, (k - run_start) * frame_size_, MADV_DONTNEED) != 0) {
      spdlog::warn("FramePool: madvise(DONTNEED) failed: errno {}", errno);
    }
    madvise_calls_.fetch_add(1, std::memory_order_relaxed);
    run_start = k;
  }
  // Highest numbers first onto the stack so that low frames are reused first.
  for (auto it = warm_.rbegin(); it != warm_.rend(); ++it) cold_.push_back(*it);
  warm_.clear();
}

void FramePool::start_prefault(uint64_t window) {
  window = std::min(window, frames_total_);
  if (window == 0 || prefault_thread_.joinable()) return;
  // Probe once: the kernel rejects an unknown advice (EINVAL) before it
  // looks at the length, so this populates nothing.
  if (madvise(base_, 0, MADV_POPULATE_WRITE) != 0) {
    spdlog::info("FramePool: no MADV_POPULATE_WRITE (errno {}): frames are not prefaulted", errno);
    return;
  }
  {
    MutexLock lock(mu_);
    prefault_window_ = window;
  }
  prefault_thread_ = std::jthread([this](std::stop_token st) { prefault_loop(st); });
}

// A whole run is missing from the window, or the last piece of the region.
// Not before the first frame is taken: an idle mount costs no memory.
bool FramePool::prefault_due_locked() const {
  if (prefault_window_ == 0 || cold_taken_locked() == 0) return false;
  const uint64_t target = std::min(frames_total_, cold_taken_locked() + prefault_window_);
  if (prefault_end_ >= target) return false;
  return target - prefault_end_ >= std::min(kPrefaultRun, prefault_window_) ||
         target == frames_total_;
}

void FramePool::prefault_loop(std::stop_token st) {
  pthread_setname_np(pthread_self(), "prefault");  // how stack dumps and /proc/PID/task name it
  UniqueLock lock(mu_);
  while (!st.stop_requested()) {
    if (prefault_end_ >= frames_total_) return;  // the whole region is populated
    if (!prefault_cv_.wait(lock.native(), st,
                           [&]() REQUIRES(mu_) { return prefault_due_locked(); })) {
      return;
    }
    // Fill the window, following take() while it moves.
    for (;;) {
      const uint64_t target = std::min(frames_total_, cold_taken_locked() + prefault_window_);
      if (prefault_end_ >= target || st.stop_requested()) break;
      const uint64_t first = prefault_end_;
      const uint64_t n = std::min(target - first, kPrefaultRun);
      prefault_end_ = first + n;
      lock.unlock();
      // Without the lock: population never changes the frames' bytes,
      // whoever owns them by now (see the header comment).
      if (madvise(base_ + first * frame_size_, n * frame_size_, MADV_POPULATE_WRITE) != 0) {
        spdlog::warn("FramePool: madvise(POPULATE_WRITE) failed: errno {}; prefaulting stops",
                     errno);
        return;
      }
      prefaulted_.fetch_add(n, std::memory_order_relaxed);
      lock.lock();
    }
  }
}

}  // namespace tmpfsd
