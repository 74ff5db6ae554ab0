// DeviceStats: the live counters behind SwapCounters, shared by the device
// implementations. Internal to swapdev. Every field is a relaxed atomic:
// they are statistics, read without a lock and never used to decide. Also
// the argument check of write_blocks() that both devices share.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "swapdev/swap_device.h"

namespace tmpfsd::swapdev {

struct DeviceStats {
  using C = std::atomic<uint64_t>;
  C bytes_written{0}, bytes_read{0}, write_requests{0}, read_requests{0};
  C ios_submitted{0}, ios_merged{0}, multi_page_ios{0}, fixed_ios{0};
  C queue_depth{0}, max_queue_depth{0}, retries{0}, errors{0};
  C injected_errors{0}, checksum_failures{0}, discards{0}, discarded_bytes{0};

  static void add(C& c, uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }
  static uint64_t get(const C& c) { return c.load(std::memory_order_relaxed); }

  void io_started(uint64_t n = 1) {
    uint64_t d = queue_depth.fetch_add(n, std::memory_order_relaxed) + n;
    uint64_t m = max_queue_depth.load(std::memory_order_relaxed);
    while (d > m && !max_queue_depth.compare_exchange_weak(m, d, std::memory_order_relaxed)) {
    }
  }
  void io_finished(uint64_t n = 1) { queue_depth.fetch_sub(n, std::memory_order_relaxed); }

  // Every counter of a device: the I/O fields from here, the slot gauges
  // from its allocator (anything with SlotAllocator's accessors).
  template <class Allocator>
  SwapCounters counters(const Allocator& alloc) const {
    SwapCounters c;
    snapshot(c);
    c.total_slots = alloc.total_slots();
    c.slots_used = alloc.used_slots();
    c.slots_free = alloc.allocatable_slots();
    c.double_frees = alloc.double_frees();
    c.alloc_failures = alloc.alloc_failures();
    return c;
  }

  // Fills the I/O fields of `out`; the caller fills the slot gauges.
  void snapshot(SwapCounters& out) const {
    out.bytes_written = get(bytes_written);
    out.bytes_read = get(bytes_read);
    out.write_requests = get(write_requests);
    out.read_requests = get(read_requests);
    out.ios_submitted = get(ios_submitted);
    out.ios_merged = get(ios_merged);
    out.multi_page_ios = get(multi_page_ios);
    out.fixed_ios = get(fixed_ios);
    out.queue_depth = get(queue_depth);
    out.max_queue_depth = get(max_queue_depth);
    out.retries = get(retries);
    out.errors = get(errors);
    out.injected_errors = get(injected_errors);
    out.checksum_failures = get(checksum_failures);
    out.discards = get(discards);
    out.discarded_bytes = get(discarded_bytes);
  }
};

// Error injection: "fail the next n requests with err". take() returns the
// error for this request, or 0.
class ErrorInjector {
 public:
  void arm(uint32_t n, int err) {
    err_.store(err, std::memory_order_relaxed);
    left_.store(n, std::memory_order_release);
  }
  int take() {
    uint32_t n = left_.load(std::memory_order_acquire);
    while (n > 0) {
      if (left_.compare_exchange_weak(n, n - 1, std::memory_order_acq_rel))
        return err_.load(std::memory_order_relaxed);
    }
    return 0;
  }

 private:
  std::atomic<uint32_t> left_{0};
  std::atomic<int> err_{0};
};

// The argument check of write_blocks(): blocks of at least 512 bytes, at
// most 64 of them in a page, no bit set past the last one.
inline bool valid_block_mask(size_t page_size, uint64_t mask, unsigned shift) {
  if (shift < 9 || shift >= 64 || (size_t{1} << shift) > page_size) return false;
  size_t blocks = page_size >> shift;
  if (blocks > 64) return false;
  return blocks == 64 || (mask >> blocks) == 0;
}

}  // namespace tmpfsd::swapdev
