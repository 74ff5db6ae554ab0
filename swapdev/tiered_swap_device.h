// TieredSwapDevice: the swap file and a remote pool (RemoteStore) behind
// one SwapDevice, so that the page cache sees one interface. It decides
// only where a new page goes; the two devices move the bytes.
//
//   slots [0, F)        the swap file's (F = file->total_slots())
//   slots [F, F + R)    the pool's, slot F + k being the pool's slot k
//                       (R = --remote-size / page size)
//
// Policy (allocate): a new page goes to the pool while it is healthy (as
// many servers up as copies are wanted, and none answered "out of memory"
// lately) and holds fewer than R pages; else to the swap file, counted in
// fallbacks. A write to the pool that fails (a server gone, slow or full)
// fails as any swap write does: the page stays resident and dirty, and the
// next attempt, the pool now unhealthy, allocates in the file. So the pool
// adds speed, not room: total_slots() is the file's alone, and every page
// the mount holds can always go to the file.
//
// is_remote() tells the page cache which place a slot is (PagePlace::remote
// holds a pool slot's number as its key). Reads, writes and frees go to
// the device that owns the slot; an IoBatch on this device plugs both.
//
// Threads: any thread may call anything; no lock of its own (the two
// devices have theirs). Both devices live as long as this one; the pool is
// destroyed first (its I/O threads drain its queue).
#pragma once

#include <atomic>
#include <memory>

#include "swapdev/remote_store.h"
#include "swapdev/swap_device.h"

namespace tmpfsd::swapdev {

class TieredSwapDevice final : public SwapDevice {
 public:
  // Both non-null, with the same page size.
  TieredSwapDevice(std::unique_ptr<SwapDevice> file, std::unique_ptr<RemoteStore> remote);
  ~TieredSwapDevice() override;

  size_t page_size() const override { return file_->page_size(); }
  uint64_t total_slots() const override { return file_->total_slots(); }
  unsigned min_block_shift() const override { return file_->min_block_shift(); }
  SlotRun allocate(uint32_t want, SwapSlot hint = {}) override;
  void free(SwapSlot first, uint32_t count = 1) override;
  using SwapDevice::read;
  using SwapDevice::write;
  using SwapDevice::write_blocks;
  void write(SwapSlot first, ConstPages pages, PageOwner owner, IoDone done) override;
  void read(SwapSlot first, MutablePages pages, PageOwner owner, IoDone done) override;
  void write_blocks(SwapSlot slot, std::span<const std::byte> page, PageOwner owner,
                    uint64_t block_mask, unsigned block_shift, IoDone done) override;
  bool sealed() const override { return file_->sealed(); }
  void flush() override;
  SwapCounters counters() const override;
  // Into the swap file (the tier that is always there).
  void inject_errors(uint32_t n, int err) override { file_->inject_errors(n, err); }
  bool is_remote(SwapSlot s) const override { return s.valid() && s.value >= base_; }
  bool plugs(const SwapDevice* dev) const override {
    return dev == file_.get() || dev == remote_.get();
  }

  SwapDevice& file() { return *file_; }
  RemoteStore& remote() { return *remote_; }

 private:
  SwapSlot to_remote(SwapSlot s) const { return SwapSlot(s.value - base_); }

  const std::unique_ptr<SwapDevice> file_;
  const uint64_t base_;                        // the pool's first slot: the file's slot count
  const std::unique_ptr<RemoteStore> remote_;  // declared last: destroyed first
  std::atomic<uint64_t> fallbacks_{0};         // new pages sent to the file instead
};

}  // namespace tmpfsd::swapdev
