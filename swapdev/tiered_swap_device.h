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
// Local copy (RemoteOptions::local_copy, "?local_copy=1"): the other way
// than replicas to lose no page when a server dies. A page written to the
// pool is also written to a swap-file slot of its own while the file has
// room (allocate() there succeeds); the write completes when both have,
// with the pool's result (a failed local write only drops the copy). A
// pool read that fails (-EIO: every copy gone or bad) is read again from
// the local copies if every page of it has one. Free frees both. The
// file has room for them: the page cache keeps no more pages out of
// memory than the file could hold, so pool pages plus file pages, hence
// copies plus file pages, fit; when a copy's slot cannot be had the page
// simply has none.
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
#include <vector>

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
  struct Join;
  SwapSlot to_remote(SwapSlot s) const { return SwapSlot(s.value - base_); }
  // Local copies (shadow_ non-null). k is a pool slot.
  void give_copies(uint64_t k, size_t n);  // a file slot to each that has none, if room
  void drop_copy(uint64_t k);              // frees k's file slot, if any
  uint64_t copy_of(uint64_t k) const {     // k's file slot + 1, or 0
    return shadow_[k].load(std::memory_order_acquire);
  }
  // Pool slots [k, k + n) that have copies, cut in runs of adjacent file
  // slots: page i of the request and n pages from file slot `file` on.
  struct CopyRun {
    size_t i, n;
    SwapSlot file;
  };
  std::vector<CopyRun> copy_runs(uint64_t k, size_t n) const;

  const std::unique_ptr<SwapDevice> file_;
  const uint64_t base_;                        // the pool's first slot: the file's slot count
  const std::unique_ptr<RemoteStore> remote_;  // declared last: destroyed first
  std::atomic<uint64_t> fallbacks_{0};         // new pages sent to the file instead
  // Per pool slot: its local copy's file slot + 1, or 0; null without
  // local_copy. A slot's entry changes only with requests on that slot,
  // which the device contract keeps one at a time.
  std::unique_ptr<std::atomic<uint64_t>[]> shadow_;
  std::atomic<uint64_t> local_copies_{0}, local_reads_{0};
};

}  // namespace tmpfsd::swapdev
