// Helpers shared by the swapdev tests: page buffers, and a latch that
// collects the results of asynchronous I/O callbacks.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <span>
#include <vector>

#include "swapdev/swap_device.h"

namespace tmpfsd::swapdev::test {

// Page-aligned pages (O_DIRECT-friendly), freed with the object.
class Pages {
 public:
  Pages(size_t n, size_t page_size)
      : n_(n),
        ps_(page_size),
        mem_(static_cast<std::byte*>(std::aligned_alloc(4096, n * page_size)), &std::free) {
    std::memset(mem_.get(), 0, n * page_size);
  }
  std::span<std::byte> page(size_t i) { return {mem_.get() + i * ps_, ps_}; }
  std::byte* data() { return mem_.get(); }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * ps_; }

  std::vector<std::span<const std::byte>> const_spans(size_t from, size_t count) {
    std::vector<std::span<const std::byte>> v;
    for (size_t i = from; i < from + count; ++i) v.push_back(page(i));
    return v;
  }
  std::vector<std::span<std::byte>> spans(size_t from, size_t count) {
    std::vector<std::span<std::byte>> v;
    for (size_t i = from; i < from + count; ++i) v.push_back(page(i));
    return v;
  }
  void fill_random(size_t i, uint64_t seed) {
    std::mt19937_64 rng(seed);
    auto p = page(i);
    for (size_t o = 0; o < p.size(); o += 8) {
      uint64_t x = rng();
      std::memcpy(p.data() + o, &x, 8);
    }
  }

 private:
  size_t n_, ps_;
  std::unique_ptr<std::byte, decltype(&std::free)> mem_;
};

// Counts callbacks and remembers their errors. wait(n) returns false on
// timeout so a lost callback fails the test instead of hanging it.
class Latch {
 public:
  IoDone cb() {
    return [this](int err) {
      std::lock_guard lk(mu_);
      errs_.push_back(err);
      cv_.notify_all();
    };
  }
  bool wait(size_t n, std::chrono::seconds limit = std::chrono::seconds(20)) {
    std::unique_lock lk(mu_);
    return cv_.wait_for(lk, limit, [&] { return errs_.size() >= n; });
  }
  std::vector<int> errors() {
    std::lock_guard lk(mu_);
    return errs_;
  }
  size_t count() {
    std::lock_guard lk(mu_);
    return errs_.size();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<int> errs_;
};

// Synchronous helpers over the asynchronous API.
inline int write_sync(SwapDevice& d, SwapSlot first,
                      std::vector<std::span<const std::byte>> pages) {
  Latch l;
  d.write(first, pages, l.cb());
  if (!l.wait(1)) return -ETIMEDOUT;
  return l.errors()[0];
}
inline int write_blocks_sync(SwapDevice& d, SwapSlot slot, std::span<const std::byte> page,
                             uint64_t mask, unsigned shift) {
  Latch l;
  d.write_blocks(slot, page, mask, shift, l.cb());
  if (!l.wait(1)) return -ETIMEDOUT;
  return l.errors()[0];
}
inline int read_sync(SwapDevice& d, SwapSlot first, std::vector<std::span<std::byte>> pages) {
  Latch l;
  d.read(first, pages, l.cb());
  if (!l.wait(1)) return -ETIMEDOUT;
  return l.errors()[0];
}

}  // namespace tmpfsd::swapdev::test
