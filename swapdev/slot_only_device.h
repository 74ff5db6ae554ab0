// SlotOnlyDevice: slot numbers with no medium behind them, for the
// compressed pool when there is no swap file (--compress with --swap 0;
// docs/design.md, "The compressed tier"). CompressedSwapDevice keeps the
// pages; this device only names them, as the swap file's slots do
// otherwise, so that the page word and the pool work the same way.
//
// A write fails with -ENOSPC (the pool had no room for the page, nothing
// else has: the page stays in its frame, dirty, as with a full swap file);
// a read fails with -ENODATA (no slot here ever holds a completed write).
// Callbacks run inline, before write()/read() return.
//
// Locks: mu_ guards the allocator. Threads: any thread may call anything.
#pragma once

#include <cstdint>
#include <vector>

#include "swapdev/swap_device.h"
#include "swapdev/thread_annotations.h"

namespace tmpfsd::swapdev {

class SlotOnlyDevice final : public SwapDevice {
 public:
  SlotOnlyDevice(size_t page_size, uint64_t slots);

  size_t page_size() const override { return page_size_; }
  uint64_t total_slots() const override { return slots_; }
  unsigned min_block_shift() const override { return page_shift_; }
  // One slot at a time (the pool has no use for runs); `hint` is ignored.
  SlotRun allocate(uint32_t want, SwapSlot hint = {}) override;
  void free(SwapSlot first, uint32_t count = 1) override;
  using SwapDevice::read;
  using SwapDevice::write;
  using SwapDevice::write_blocks;
  void write(SwapSlot first, ConstPages pages, PageOwner owner, IoDone done) override;
  void read(SwapSlot first, MutablePages pages, PageOwner owner, IoDone done) override;
  void write_blocks(SwapSlot slot, std::span<const std::byte> page, PageOwner owner,
                    uint64_t block_mask, unsigned block_shift, IoDone done) override;
  bool sealed() const override { return false; }
  void flush() override {}
  SwapCounters counters() const override;
  void inject_errors(uint32_t, int) override {}

 private:
  // Constant after construction.
  const size_t page_size_;
  const unsigned page_shift_;
  const uint64_t slots_;

  mutable Mutex mu_;
  std::vector<bool> used_ GUARDED_BY(mu_);      // slots [0, used_.size()) handed out once
  std::vector<uint64_t> free_ GUARDED_BY(mu_);  // of those, free again
  uint64_t in_use_ GUARDED_BY(mu_) = 0;
  uint64_t requests_ GUARDED_BY(mu_) = 0;  // write and read requests (all fail)
  uint64_t double_frees_ GUARDED_BY(mu_) = 0;
  uint64_t alloc_failures_ GUARDED_BY(mu_) = 0;
};

}  // namespace tmpfsd::swapdev
