// MemorySwapDevice: a SwapDevice whose slots live in process memory, for fast
// unit tests of reclaim and writeback (the LevelDB MemEnv idea). Same
// allocator, checksums or seals, error injection and counters as the real
// device; no disk, no io_uring. With Options::seal it seals as the real
// device does (the slots then hold ciphertext: stored() shows it); by
// default it keeps checksums, so that tests can read the slots' bytes.
//
// Completion modes let callers test races:
//   Inline  - the I/O is done and `done` runs before write()/read() return.
//   Manual  - requests queue; complete_pending() performs them and runs their
//             callbacks on the calling thread, in submission order.
//   Thread  - a worker thread performs them (after `delay`) and runs the
//             callbacks, like the io_uring completion thread.
// As on the real device, data moves at completion time (a write reads the
// caller's page then, a read fills it then), and a write's checksum is taken
// at submission, so changing a page while its write is in flight makes the
// slot read back as -EIO — the bug the checksum exists to catch.
//
// Locks: mu_ guards the slot data and the pending queue; never held while a
// callback runs. Threads: any thread may call anything; the destructor
// completes whatever is still pending (callbacks run exactly once).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "swapdev/slot_device.h"
#include "swapdev/thread_annotations.h"

namespace tmpfsd::swapdev {

class MemorySwapDevice final : public SlotDevice {
 public:
  enum class Completion { Inline, Manual, Thread };
  struct Options {
    uint64_t slots = 1024;
    size_t page_size = 4096;
    uint32_t cluster_slots = 256;
    Completion completion = Completion::Inline;
    std::chrono::microseconds delay{0};  // Thread mode: time before each completion
    unsigned min_block_shift = 9;        // what min_block_shift() reports
    bool seal = false;                   // AES-256-GCM as UringOptions::seal
    bool keeps_pages = false;            // what keeps_pages() reports (tests)
  };

  explicit MemorySwapDevice(const Options& opt);
  ~MemorySwapDevice() override;

  SlotRun allocate(uint32_t want, SwapSlot hint = {}) override;
  void free(SwapSlot first, uint32_t count = 1) override;
  using SwapDevice::read;
  using SwapDevice::write;
  using SwapDevice::write_blocks;
  void write(SwapSlot first, ConstPages pages, PageOwner owner, IoDone done) override;
  void read(SwapSlot first, MutablePages pages, PageOwner owner, IoDone done) override;
  void write_blocks(SwapSlot slot, std::span<const std::byte> page, PageOwner owner,
                    uint64_t block_mask, unsigned block_shift, IoDone done) override;
  void flush() override {}
  bool keeps_pages() const override { return keeps_pages_; }
  // Runs queued requests on the calling thread (complete_pending()) until
  // done() is true; in Thread mode the worker may run some of them instead.
  void wait_until(const std::function<bool()>& done) override;

  // Manual mode: performs every queued request and runs its callback here.
  // Returns how many ran. Harmless in the other modes (returns 0 or what the
  // worker had not reached yet).
  size_t complete_pending();
  size_t pending() const;

  // Test hook: flips one byte of the stored slot behind the checksum's back.
  void corrupt(SwapSlot slot, size_t offset = 0);
  // Test hook: puts `bytes` (a page) in the slot's storage, as an attacker
  // with the medium would: another slot's bytes, or an old image.
  void overwrite(SwapSlot slot, std::span<const std::byte> bytes);
  // Test hook: the bytes the slot holds now (empty if it never held any).
  std::vector<std::byte> stored(SwapSlot slot) const;

 private:
  struct Op {
    bool write = false;
    uint64_t first = 0;
    std::vector<std::span<std::byte>> pages;  // write: really const
    PageOwner owner;                          // whose pages
    std::vector<PageProof> proofs;            // write: taken at submission
    std::vector<std::byte> sealed;            // sealed write: what goes to the slots
    uint64_t mask = 0;                        // write_blocks: the blocks to write
    unsigned shift = 0;                       // write_blocks: log2 of the block size
    bool partial = false;                     // a write_blocks()
    int err = 0;                              // injected or argument error
    bool rejected = false;                    // err decided by the arguments: touch nothing
    IoDone done;
  };

  void submit(Op op);
  void perform(Op& op);  // moves the bytes, settles the result in op.err
  void worker(std::stop_token st);

  const Completion mode_;
  const std::chrono::microseconds delay_;
  const bool keeps_pages_;

  mutable Mutex mu_;
  std::vector<std::unique_ptr<std::byte[]>> data_ GUARDED_BY(mu_);  // null = never written
  std::deque<Op> queue_ GUARDED_BY(mu_);
  std::condition_variable_any cv_;  // queue_ not empty
  std::jthread worker_;             // Thread mode only
};

}  // namespace tmpfsd::swapdev
