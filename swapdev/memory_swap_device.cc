#include "swapdev/memory_swap_device.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

namespace tmpfsd::swapdev {

MemorySwapDevice::MemorySwapDevice(const Options& opt)
    : SlotDevice(opt.page_size, opt.min_block_shift,
                 {.total_slots = opt.slots,
                  .cluster_slots = opt.cluster_slots,
                  .shards = 0,
                  .discard = false},
                 opt.seal ? Sealer::create(nullptr) : nullptr),
      mode_(opt.completion),
      delay_(opt.delay),
      keeps_pages_(opt.keeps_pages),
      data_(opt.slots) {
  if (mode_ == Completion::Thread)
    worker_ = std::jthread([this](std::stop_token st) { worker(st); });
}

MemorySwapDevice::~MemorySwapDevice() {
  if (worker_.joinable()) {
    worker_.request_stop();
    worker_.join();
  }
  complete_pending();  // every callback runs exactly once, even at teardown
}

SlotRun MemorySwapDevice::allocate(uint32_t want, SwapSlot hint) {
  return alloc_.allocate(want, hint);
}

void MemorySwapDevice::free(SwapSlot first, uint32_t count) {
  // data_ has total_slots() entries for good (sized at construction).
  if (first.valid() && first.value < total_slots()) {
    // Drop the data of the slots really being freed before they can be
    // handed out again; slots that are not allocated are left alone (the
    // allocator reports them as a double free).
    MutexLock lk(mu_);
    uint64_t end = std::min<uint64_t>(data_.size(), first.value + count);
    for (uint64_t s = first.value; s < end; ++s) {
      if (!alloc_.allocated(SwapSlot(s))) continue;
      clear_proof(s);
      data_[s].reset();
    }
  }
  alloc_.free(first, count);
}

void MemorySwapDevice::write(SwapSlot first, ConstPages pages, PageOwner owner, IoDone done) {
  DeviceStats::add(stats_.write_requests);
  Op op;
  op.write = true;
  op.first = first.value;
  op.owner = owner;
  op.done = std::move(done);
  for (auto p : pages) op.pages.emplace_back(const_cast<std::byte*>(p.data()), p.size());
  submit(std::move(op));
}

void MemorySwapDevice::read(SwapSlot first, MutablePages pages, PageOwner owner, IoDone done) {
  DeviceStats::add(stats_.read_requests);
  Op op;
  op.first = first.value;
  op.owner = owner;
  op.done = std::move(done);
  op.pages.assign(pages.begin(), pages.end());
  submit(std::move(op));
}

void MemorySwapDevice::write_blocks(SwapSlot slot, std::span<const std::byte> page, PageOwner owner,
                                    uint64_t block_mask, unsigned block_shift, IoDone done) {
  DeviceStats::add(stats_.write_requests);
  Op op;
  op.write = true;
  op.partial = true;
  op.first = slot.value;
  op.owner = owner;
  op.mask = block_mask;
  op.shift = block_shift;
  op.done = std::move(done);
  op.pages.emplace_back(const_cast<std::byte*>(page.data()), page.size());
  submit(std::move(op));
}

void MemorySwapDevice::submit(Op op) {
  bool bad = op.pages.empty() || !alloc_.all_allocated(SwapSlot(op.first), op.pages.size());
  for (auto p : op.pages) bad |= p.size() != page_size_;
  if (op.partial) bad |= !valid_block_mask(page_size_, op.mask, op.shift);
  if (bad) {
    op.err = -EINVAL;
    op.rejected = true;
  } else if (op.partial && !has_data(op.first)) {
    op.err = -ENODATA;
    op.rejected = true;
  } else if (op.partial && op.mask == 0) {
    // Nothing to write: completes with 0 and leaves the slot alone.
  } else if (int e = inject_.take()) {
    op.err = e;
    DeviceStats::add(stats_.injected_errors);
  } else if (op.write) {
    if (op.partial && sealed()) {
      // A fresh seal changes every byte: the whole page is one block.
      op.shift = static_cast<unsigned>(std::countr_zero(page_size_));
      op.mask = 1;
    }
    if (sealed()) op.sealed.resize(op.pages.size() * page_size_);
    op.proofs.resize(op.pages.size());
    for (size_t i = 0; i < op.pages.size(); ++i) {
      std::span<std::byte> out;
      if (sealed()) out = {op.sealed.data() + i * page_size_, page_size_};
      if (!prove(op.first + i, op.owner.page(i), op.pages[i], out, &op.proofs[i])) {
        op.err = -EIO;
        op.rejected = true;
        break;
      }
    }
  }
  DeviceStats::add(stats_.ios_submitted);
  if (op.pages.size() > 1) DeviceStats::add(stats_.multi_page_ios);
  stats_.io_started();
  if (mode_ == Completion::Inline) {
    perform(op);
    op.done(op.err);
    return;
  }
  {
    MutexLock lk(mu_);
    queue_.push_back(std::move(op));
  }
  cv_.notify_one();
}

void MemorySwapDevice::perform(Op& op) {
  stats_.io_finished();
  uint64_t bytes = op.pages.size() * page_size_;
  if (op.partial) {
    bytes = uint64_t(std::popcount(op.mask)) << op.shift;
    if (op.err == 0 && op.mask != 0) {
      MutexLock lk(mu_);
      std::byte* to = data_[op.first].get();
      if (!to) {
        op.err = -ENODATA;  // freed since submission: the caller broke the contract
      } else {
        const std::byte* from = sealed() ? op.sealed.data() : op.pages[0].data();
        for (unsigned b = 0; b < 64; ++b)
          if (op.mask >> b & 1)
            std::memcpy(to + (size_t{b} << op.shift), from + (size_t{b} << op.shift),
                        size_t{1} << op.shift);
        record(op.first, op.proofs[0]);
      }
    } else if (op.err != 0 && !op.rejected) {
      poison(op.first);  // some blocks may have landed: trust none
    }
  } else if (op.err == 0) {
    MutexLock lk(mu_);
    for (size_t i = 0; i < op.pages.size(); ++i) {
      uint64_t slot = op.first + i;
      if (op.write) {
        if (!data_[slot]) data_[slot] = std::make_unique<std::byte[]>(page_size_);
        std::memcpy(data_[slot].get(),
                    sealed() ? op.sealed.data() + i * page_size_ : op.pages[i].data(), page_size_);
        record(slot, op.proofs[i]);
      } else if (!data_[slot] || !has_data(slot)) {
        op.err = -ENODATA;
      } else {
        std::memcpy(op.pages[i].data(), data_[slot].get(), page_size_);
        int v = verify(slot, op.owner.page(i), op.pages[i]);
        if (v == -EIO && poisoned(slot)) {
          spdlog::error("swapdev(mem): slot {}: its last partial write failed", slot);
        } else if (v == -EIO) {
          DeviceStats::add(stats_.checksum_failures);
          spdlog::error("swapdev(mem): {} at slot {}",
                        sealed() ? "a seal that does not open" : "checksum mismatch", slot);
        }
        if (v != 0 && op.err == 0) op.err = v;
      }
    }
  } else if (op.write && !op.rejected) {
    // A failed write leaves nothing trustworthy behind.
    for (size_t i = 0; i < op.pages.size(); ++i) clear_proof(op.first + i);
  }
  if (op.err != 0) {
    // Never hand back bytes that failed verification.
    if (!op.write && !op.rejected)
      for (auto p : op.pages) std::memset(p.data(), 0, p.size());
    DeviceStats::add(stats_.errors);
  } else {
    DeviceStats::add(op.write ? stats_.bytes_written : stats_.bytes_read, bytes);
  }
}

size_t MemorySwapDevice::complete_pending() {
  size_t n = 0;
  for (;;) {
    Op op;
    {
      MutexLock lk(mu_);
      if (queue_.empty()) return n;
      op = std::move(queue_.front());
      queue_.pop_front();
    }
    perform(op);
    op.done(op.err);
    ++n;
  }
}

void MemorySwapDevice::wait_until(const std::function<bool()>& done) {
  auto nap = std::chrono::microseconds(20);
  while (!done()) {
    if (complete_pending() > 0) continue;
    std::this_thread::sleep_for(nap);
    nap = std::min<std::chrono::microseconds>(nap * 2, std::chrono::milliseconds(1));
  }
}

size_t MemorySwapDevice::pending() const {
  MutexLock lk(mu_);
  return queue_.size();
}

void MemorySwapDevice::worker(std::stop_token st) {
  pthread_setname_np(pthread_self(),
                     "memswap-worker");  // how stack dumps and /proc/PID/task name it
  UniqueLock lk(mu_);
  while (!st.stop_requested()) {
    if (!cv_.wait(lk.native(), st, [&]() REQUIRES(mu_) { return !queue_.empty(); })) break;
    Op op = std::move(queue_.front());
    queue_.pop_front();
    lk.unlock();
    if (delay_.count() > 0) std::this_thread::sleep_for(delay_);
    perform(op);
    op.done(op.err);
    lk.lock();
  }
}

void MemorySwapDevice::corrupt(SwapSlot slot, size_t offset) {
  MutexLock lk(mu_);
  if (slot.value < data_.size() && data_[slot.value])
    data_[slot.value][offset % page_size_] ^= std::byte{0x5a};
}

void MemorySwapDevice::overwrite(SwapSlot slot, std::span<const std::byte> bytes) {
  MutexLock lk(mu_);
  if (slot.value < data_.size() && data_[slot.value] && bytes.size() == page_size_)
    std::memcpy(data_[slot.value].get(), bytes.data(), page_size_);
}

std::vector<std::byte> MemorySwapDevice::stored(SwapSlot slot) const {
  MutexLock lk(mu_);
  if (slot.value >= data_.size() || !data_[slot.value]) return {};
  return {data_[slot.value].get(), data_[slot.value].get() + page_size_};
}

}  // namespace tmpfsd::swapdev
