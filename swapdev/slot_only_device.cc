#include "swapdev/slot_only_device.h"

#include <spdlog/spdlog.h>

#include <bit>
#include <cerrno>
#include <mutex>

namespace tmpfsd::swapdev {

SlotOnlyDevice::SlotOnlyDevice(size_t page_size, uint64_t slots)
    : page_size_(page_size), page_shift_(unsigned(std::countr_zero(page_size))), slots_(slots) {}

SlotRun SlotOnlyDevice::allocate(uint32_t want, SwapSlot) {
  MutexLock lk(mu_);
  if (want == 0) return SlotRun{SwapSlot(), 0, -EINVAL};
  uint64_t s;
  if (!free_.empty()) {
    s = free_.back();
    free_.pop_back();
  } else if (used_.size() < slots_) {
    s = used_.size();
    used_.push_back(false);
  } else {
    ++alloc_failures_;
    return SlotRun{SwapSlot(), 0, -ENOSPC};
  }
  used_[s] = true;
  ++in_use_;
  return SlotRun{SwapSlot(s), 1, 0};
}

void SlotOnlyDevice::free(SwapSlot first, uint32_t count) {
  MutexLock lk(mu_);
  for (uint64_t s = first.value; s < first.value + count; ++s) {
    if (s >= used_.size() || !used_[s]) {
      ++double_frees_;
      spdlog::error("swapdev: free of slot {}, which is not allocated", s);
      continue;
    }
    used_[s] = false;
    free_.push_back(s);
    --in_use_;
  }
}

void SlotOnlyDevice::write(SwapSlot, ConstPages, PageOwner, IoDone done) {
  {
    MutexLock lk(mu_);
    ++requests_;
  }
  done(-ENOSPC);
}

void SlotOnlyDevice::read(SwapSlot, MutablePages, PageOwner, IoDone done) {
  {
    MutexLock lk(mu_);
    ++requests_;
  }
  done(-ENODATA);
}

void SlotOnlyDevice::write_blocks(SwapSlot, std::span<const std::byte>, PageOwner, uint64_t,
                                  unsigned, IoDone done) {
  {
    MutexLock lk(mu_);
    ++requests_;
  }
  done(-ENOSPC);
}

SwapCounters SlotOnlyDevice::counters() const {
  MutexLock lk(mu_);
  SwapCounters c;
  c.total_slots = slots_;
  c.slots_used = in_use_;
  c.slots_free = slots_ - in_use_;
  c.errors = requests_;
  c.double_frees = double_frees_;
  c.alloc_failures = alloc_failures_;
  return c;
}

}  // namespace tmpfsd::swapdev
