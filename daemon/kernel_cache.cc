// KernelCache: see kernel_cache.h.
#include "daemon/kernel_cache.h"

#include <pthread.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

namespace tmpfsd {

KernelCache::KernelCache(fuse_session* se)
    : se_(se), thread_([this](std::stop_token stop) { run(stop); }) {}

KernelCache::~KernelCache() {
  thread_.request_stop();
  thread_.join();  // run() answers what is queued before it returns
}

size_t KernelCache::bit_of(uint64_t ino) noexcept {
  // Fibonacci hashing: consecutive numbers land in different words.
  return size_t((ino * 0x9E3779B97F4A7C15ull) >> 48);  // 16 bits
}

void KernelCache::note_cached(uint64_t ino) noexcept {
  size_t bit = bit_of(ino);
  auto& word = cached_[bit / 64];
  uint64_t mask = uint64_t(1) << (bit % 64);
  // A read first, so that the readers of a cached file do not all write
  // the same cache line. Either a direct write's check sees the bit, or
  // its bytes were in place before this caller's read or write took the
  // file's lock (both go through it after this): nothing older is cached.
  if (!(word.load() & mask)) word.fetch_or(mask);
}

bool KernelCache::may_cache(uint64_t ino) const noexcept {
  size_t bit = bit_of(ino);
  return cached_[bit / 64].load() & (uint64_t(1) << (bit % 64));
}

void KernelCache::after_dropping(uint64_t ino, uint64_t off, uint64_t len,
                                 std::function<void()> then) noexcept {
  Job job{{ino, off, len}, std::move(then)};
  try {
    std::lock_guard lock(mu_);
    jobs_.push_back(std::move(job));
  } catch (const std::bad_alloc&) {
    // On this thread, then: right, at the risk described in the header.
    drop(job.span);
    job.then();
    return;
  }
  wake_.notify_one();
}

void KernelCache::drop(const Span& span) noexcept {
  // The kernel: fuse_reverse_inval_inode, invalidate_inode_pages2_range
  // (len 0: to the end). ENOENT: the kernel holds no inode of that number,
  // hence no page. Its cached attributes go too (a direct write has made
  // the size and times stale already).
  int rc =
      fuse_lowlevel_notify_inval_inode(se_, fuse_ino_t(span.ino), off_t(span.off), off_t(span.len));
  if (rc != 0 && rc != -ENOENT && rc != -ENOTCONN && rc != -ENODEV)
    spdlog::warn("cannot drop the kernel's cached pages of inode {} after a direct write: {}",
                 span.ino, std::strerror(-rc));
}

void KernelCache::run(std::stop_token stop) {
  pthread_setname_np(pthread_self(), "cache-inval");
  std::deque<Job> batch;
  std::vector<Span> spans;  // one per inode of the batch: the span of its ranges
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, stop, [this] { return !jobs_.empty(); });
    if (jobs_.empty()) return;  // stop requested, nothing left to answer
    // Every write queued by now has its bytes in place: one notification
    // per inode covers them all (with the pages between their ranges: a
    // needless drop at worst), then they are answered in order. Under a
    // deep queue of small writes this is what keeps one thread from
    // halving the writes per second (measured: docs/measurements.md).
    batch.swap(jobs_);
    lock.unlock();
    try {
      spans.clear();
      for (const Job& job : batch) merge(spans, job.span);
    } catch (const std::bad_alloc&) {
      spans.clear();  // one notification per write, then
      for (const Job& job : batch) drop(job.span);
    }
    for (const Span& span : spans) drop(span);
    for (Job& job : batch) job.then();
    batch.clear();
    lock.lock();
  }
}

void KernelCache::merge(std::vector<Span>& spans, const Span& s) {
  auto same =
      std::find_if(spans.begin(), spans.end(), [&](const Span& x) { return x.ino == s.ino; });
  if (same == spans.end()) return spans.push_back(s);
  // len 0: to the end of the file.
  uint64_t end =
      (same->len == 0 || s.len == 0) ? 0 : std::max(same->off + same->len, s.off + s.len);
  same->off = std::min(same->off, s.off);
  same->len = end == 0 ? 0 : end - same->off;
}

}  // namespace tmpfsd
