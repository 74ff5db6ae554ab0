// The discard side of UringSwapDevice: clusters whose slots are all free are
// punched out of the file in batches, off the I/O path, so the disk space
// comes back; only then does the allocator hand them out again (a punch that
// landed after a new write would destroy data).
#include <fcntl.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

#include "swapdev/uring_swap_device.h"

namespace tmpfsd::swapdev {

size_t UringSwapDevice::discard_round(size_t max_clusters) {
  std::vector<SlotRange> ranges = alloc_.take_discard_batch(max_clusters);
  if (ranges.empty()) return 0;
  size_t clusters = 0;
  for (const SlotRange& r : ranges) {
    clusters += (r.count + alloc_.cluster_slots() - 1) / alloc_.cluster_slots();
    if (!can_punch_.load(std::memory_order_relaxed)) continue;
    off_t off = static_cast<off_t>(r.first * page_size_);
    off_t len = static_cast<off_t>(r.count * page_size_);
    if (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) != 0) {
      int e = errno;
      spdlog::warn("swapdev: punching freed swap space failed ({}); discard turned off",
                   std::strerror(e));
      can_punch_.store(false, std::memory_order_relaxed);
      continue;
    }
    DeviceStats::add(stats_.discards);
    DeviceStats::add(stats_.discarded_bytes, static_cast<uint64_t>(len));
  }
  alloc_.finish_discard(ranges);
  {
    MutexLock lk(disc_mu_);  // pairs with the wait in allocate()
  }
  space_cv_.notify_all();
  return clusters;
}

void UringSwapDevice::discard_loop(std::stop_token st) {
  pthread_setname_np(pthread_self(),
                     "uring-discard");  // how stack dumps and /proc/PID/task name it
  UniqueLock lk(disc_mu_);
  while (!st.stop_requested()) {
    disc_cv_.wait_for(lk.native(), st, discard_interval_,
                      [&]() REQUIRES(disc_mu_) { return disc_kick_; });
    if (st.stop_requested()) break;
    disc_kick_ = false;
    lk.unlock();
    while (discard_round(discard_batch_) > 0) {
    }
    lk.lock();
  }
}

void UringSwapDevice::discard_now() {
  while (discard_round(SIZE_MAX) > 0) {
  }
  // A round the discard thread started may still be running.
  UniqueLock lk(disc_mu_);
  space_cv_.wait_for(lk.native(), std::chrono::seconds(10),
                     [&] { return alloc_.discarding() == 0; });
}

}  // namespace tmpfsd::swapdev
