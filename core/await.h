// await_callback: the blocking form of an asynchronous call that reports
// through a callback, and the only one in core/: read_and_wait
// (page_cache.h: one read's bytes), wait_for (page_cache/file_pages.h: a pending
// write) and Namespace::write are built on it. For tests, copy_file_range
// and the few paths that must have the result before they go on; never on
// a thread the callback may need.
// Threads: the callback may run on any thread, before or after `start`
// returns.
#pragma once

#include <condition_variable>
#include <mutex>
#include <optional>
#include <utility>

#include "swapdev/thread_annotations.h"

namespace tmpfsd {

// Calls start(cb) and returns the value cb is called with, once it is.
template <class T, class Start>
T await_callback(Start&& start) {
  Mutex mu;
  std::condition_variable cv;
  std::optional<T> out;  // under mu
  start([&](T v) {
    MutexLock lock(mu);         // notified under the lock: the waiter cannot
    out.emplace(std::move(v));  // return (and destroy cv) before we are done
    cv.notify_one();
  });
  UniqueLock lock(mu);
  cv.wait(lock.native(), [&] { return out.has_value(); });
  return std::move(*out);
}

}  // namespace tmpfsd
