// What both swap devices stand on: a SlotAllocator that hands out the
// slots, a ChecksumTable that every read is verified against, the I/O
// counters, and the error injection of the tests. MemorySwapDevice and
// UringSwapDevice add only where the bytes go and how I/O completes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "swapdev/checksum_table.h"
#include "swapdev/device_stats.h"
#include "swapdev/slot_allocator.h"
#include "swapdev/swap_device.h"

namespace tmpfsd::swapdev {

class SlotDevice : public SwapDevice {
 public:
  size_t page_size() const final { return page_size_; }
  uint64_t total_slots() const final { return alloc_.total_slots(); }
  unsigned min_block_shift() const final { return min_block_shift_; }
  SwapCounters counters() const final { return stats_.counters(alloc_); }
  void inject_errors(uint32_t n, int err) final { inject_.arm(n, err); }

 protected:
  // One slot of page_size bytes per page; alloc.total_slots of them.
  SlotDevice(size_t page_size, unsigned min_block_shift, const SlotAllocator::Options& alloc)
      : page_size_(page_size),
        min_block_shift_(min_block_shift),
        alloc_(alloc),
        sums_(alloc.total_slots) {}

  const size_t page_size_;
  const unsigned min_block_shift_;
  SlotAllocator alloc_;
  ChecksumTable sums_;  // of each slot's last write; set, cleared, poisoned by the device
  DeviceStats stats_;
  ErrorInjector inject_;
};

}  // namespace tmpfsd::swapdev
