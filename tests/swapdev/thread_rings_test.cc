// UringSwapDevice's thread rings: a thread that waits in wait_until() gets an
// io_uring of its own, submits there from then on and reaps it, while the
// page cache's asynchronous I/O stays on the shared ring and the completion
// thread. Each wait has a deadline folded into its predicate, so a lost
// wake-up fails the test instead of hanging it.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "tests/swapdev/fixtures.h"

using namespace tmpfsd::swapdev;
using namespace tmpfsd::swapdev::test;
using Clock = std::chrono::steady_clock;

namespace {

// Callback results collected for a thread that waits in wait_until().
class Waited {
 public:
  IoDone cb() {
    return [this](int err) {
      std::lock_guard lk(mu_);
      errs_.push_back(err);
      threads_.push_back(std::this_thread::get_id());
    };
  }
  bool wait(SwapDevice& d, size_t n, std::chrono::seconds limit = std::chrono::seconds(20)) {
    auto deadline = Clock::now() + limit;
    d.wait_until([&] { return count() >= n || Clock::now() > deadline; });
    return count() >= n;
  }
  size_t count() {
    std::lock_guard lk(mu_);
    return errs_.size();
  }
  std::vector<int> errors() {
    std::lock_guard lk(mu_);
    return errs_;
  }
  size_t ran_here() {
    std::lock_guard lk(mu_);
    return static_cast<size_t>(
        std::count(threads_.begin(), threads_.end(), std::this_thread::get_id()));
  }

 private:
  std::mutex mu_;
  std::vector<int> errs_;
  std::vector<std::thread::id> threads_;
};

int write_waiting(SwapDevice& d, SwapSlot s, std::vector<std::span<const std::byte>> pages) {
  Waited w;
  d.write(s, pages, w.cb());
  return w.wait(d, 1) ? w.errors()[0] : -ETIMEDOUT;
}
int read_waiting(SwapDevice& d, SwapSlot s, std::vector<std::span<std::byte>> pages) {
  Waited w;
  d.read(s, pages, w.cb());
  return w.wait(d, 1) ? w.errors()[0] : -ETIMEDOUT;
}

// The calling thread's first wait (done() is false once, so that it does
// wait): from here on its I/O goes to its ring.
void take_ring(SwapDevice& d) {
  int looks = 0;
  d.wait_until([&] { return looks++ > 0; });
}

}  // namespace

// Catch2's assertions stay on the main thread: the other threads count
// what went wrong and the main thread checks it.
TEST_CASE("thread rings: a waiter's I/O moves to its own ring; the rest stays shared",
          "[thread_rings][uring]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20});
  Pages src(4, 4096), dst(4, 4096);
  for (int i = 0; i < 4; ++i) src.fill_random(i, 10 + i);
  SlotRun s = dev->allocate(4);
  // Asynchronous I/O of a thread that never waited: no ring.
  Latch l;
  dev->write(s.first, src.const_spans(0, 4), l.cb());
  REQUIRE(l.wait(1));
  CHECK(l.errors()[0] == 0);
  CHECK(dev->thread_rings() == 0);
  // The first wait takes a ring; the callbacks then run here.
  Waited w;
  dev->read(s.first, dst.spans(0, 4), w.cb());
  REQUIRE(w.wait(*dev, 1));
  CHECK(w.errors()[0] == 0);
  CHECK(dev->thread_rings() == 1);
  Waited w2;
  for (int i = 0; i < 4; ++i) dev->read(s.first + i, dst.spans(i, 1), w2.cb());
  REQUIRE(w2.wait(*dev, 4));
  CHECK(w2.ran_here() == 4);
  for (int e : w2.errors()) CHECK(e == 0);
  CHECK(std::memcmp(src.data(), dst.data(), src.bytes()) == 0);
  // Another thread's asynchronous I/O runs on the completion thread.
  std::thread::id ran_on, submitter;
  std::atomic<int> err{1};
  std::thread([&] {
    submitter = std::this_thread::get_id();
    Latch l2;
    dev->read(s.first, dst.spans(0, 1), [&](int e) {
      ran_on = std::this_thread::get_id();
      err = e;
      l2.cb()(e);
    });
    l2.wait(1);
  }).join();
  CHECK(err == 0);
  CHECK(ran_on != submitter);
  CHECK(ran_on != std::this_thread::get_id());
  CHECK(dev->thread_rings() == 1);
}

// Waiters on their own rings chain write -> read -> write_blocks with short
// transfers and -EAGAIN mixed in, while two threads that never wait run the
// page cache's pattern on the shared ring: plugged batches of adjacent
// writes, then reads, their callbacks on the completion thread. Every
// callback runs exactly once and every read returns what was written.
TEST_CASE("thread rings: several waiters on their own rings next to plugged asynchronous I/O",
          "[thread_rings][uring][mt]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 32 << 20, .queue_depth = 8});
  constexpr int kWaiters = 4, kDepth = 6, kRounds = 100;
  constexpr int kLanes = kWaiters * kDepth;
  Pages src(kLanes, 4096), dst(kLanes, 4096);
  std::vector<SwapSlot> slots(kLanes);
  for (int l = 0; l < kLanes; ++l) {
    SlotRun r = dev->allocate(1);
    REQUIRE(r.count == 1);
    slots[l] = r.first;
  }
  std::vector<std::atomic<int>> calls(size_t{kLanes} * kRounds * 3);
  std::atomic<int> bad{0};
  auto deadline = Clock::now() + std::chrono::seconds(60);

  // The waiters.
  std::vector<std::thread> ts;
  std::atomic<int> ran_on_owner{0};
  for (int t = 0; t < kWaiters; ++t)
    ts.emplace_back([&, t] {
      std::atomic<int> finished{0};
      const std::thread::id me = std::this_thread::get_id();
      std::vector<std::function<void(int)>> next(kDepth);
      std::vector<int> round(kDepth, 0);
      for (int k = 0; k < kDepth; ++k) {
        int lane = t * kDepth + k;
        next[k] = [&, k, lane](int) {
          int r = round[k];
          if (r == kRounds) {
            ++finished;
            return;
          }
          size_t base = (size_t(lane) * kRounds + r) * 3;
          src.fill_random(lane, lane * 7919 + r);
          dev->write(slots[lane], src.const_spans(lane, 1), [&, base, lane, k](int err) {
            if (calls[base].fetch_add(1) != 0 || err != 0) ++bad;
            ran_on_owner += std::this_thread::get_id() == me;
            dev->read(slots[lane], dst.spans(lane, 1), [&, base, lane, k](int err) {
              if (calls[base + 1].fetch_add(1) != 0 || err != 0 ||
                  std::memcmp(src.page(lane).data(), dst.page(lane).data(), 4096) != 0)
                ++bad;
              std::memset(src.page(lane).data() + 1024, lane, 1024);
              dev->write_blocks(slots[lane], src.page(lane), 0b0000'1100, 9,
                                [&, base, k](int err) {
                                  if (calls[base + 2].fetch_add(1) != 0 || err != 0) ++bad;
                                  ++round[k];
                                  next[k](0);
                                });
            });
          });
        };
      }
      // The first wait takes the ring; everything after is submitted there.
      take_ring(*dev);
      for (int k = 0; k < kDepth; ++k) next[k](0);
      dev->inject_short_transfers(2);
      dev->inject_completion_errors(2, -EAGAIN);
      dev->wait_until([&] { return finished.load() == kDepth || Clock::now() > deadline; });
      if (finished.load() != kDepth) ++bad;
    });

  // Page-cache style on the shared ring: plugged batches of 16 adjacent
  // pages, written then read back, callbacks on the completion thread.
  constexpr int kAsync = 2, kBatches = 40, kBatch = 16;
  std::atomic<int> async_bad{0};
  for (int t = 0; t < kAsync; ++t)
    ts.emplace_back([&, t] {
      Pages a(kBatch, 4096), b(kBatch, 4096);
      SlotRun run = dev->allocate(kBatch);
      if (run.count != kBatch) {
        ++async_bad;
        return;
      }
      for (int i = 0; i < kBatches; ++i) {
        for (int p = 0; p < kBatch; ++p) a.fill_random(p, t * 100000 + i * 100 + p);
        Latch w;
        {
          IoBatch batch(*dev);
          for (int p = 0; p < kBatch; ++p) dev->write(run.first + p, a.const_spans(p, 1), w.cb());
        }
        if (!w.wait(kBatch)) ++async_bad;
        Latch r;
        {
          IoBatch batch(*dev);
          for (int p = 0; p < kBatch; ++p) dev->read(run.first + p, b.spans(p, 1), r.cb());
        }
        if (!r.wait(kBatch)) ++async_bad;
        for (int e : w.errors()) async_bad += e != 0;
        for (int e : r.errors()) async_bad += e != 0;
        if (std::memcmp(a.data(), b.data(), a.bytes()) != 0) ++async_bad;
        if (w.count() != kBatch || r.count() != kBatch) ++async_bad;
      }
    });
  for (auto& t : ts) t.join();
  CHECK(bad.load() == 0);
  CHECK(async_bad.load() == 0);
  size_t wrong = 0;
  for (auto& c : calls) wrong += c.load() != 1;
  CHECK(wrong == 0);
  CHECK(dev->thread_rings() == kWaiters);
  CHECK(ran_on_owner.load() > kLanes * kRounds / 2);  // the owners reaped their rings
  SwapCounters c = dev->counters();
  CHECK(c.errors == 0);
  CHECK(c.checksum_failures == 0);
  CHECK(c.queue_depth == 0);
  CHECK(c.ios_merged > 0);  // the plugged batches merged on the shared ring
  CHECK(c.max_queue_depth <= 16 * (1 + kWaiters));
}

TEST_CASE("thread rings: errors, retries and checksum failures on a thread ring",
          "[thread_rings][uring]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20});
  Pages src(8, 4096), dst(8, 4096);
  for (int i = 0; i < 8; ++i) src.fill_random(i, 300 + i);
  SlotRun s = dev->allocate(8);
  REQUIRE(s.count == 8);
  take_ring(*dev);
  REQUIRE(dev->thread_rings() == 1);
  {
    SECTION("injected request errors") {
      dev->inject_errors(2, -EIO);
      CHECK(write_waiting(*dev, s.first, src.const_spans(0, 8)) == -EIO);
      CHECK(read_waiting(*dev, s.first, dst.spans(0, 8)) == -EIO);
      CHECK(dev->counters().injected_errors == 2);
      REQUIRE(write_waiting(*dev, s.first, src.const_spans(0, 8)) == 0);
      REQUIRE(read_waiting(*dev, s.first, dst.spans(0, 8)) == 0);
      CHECK(std::memcmp(src.data(), dst.data(), src.bytes()) == 0);
    }
    SECTION("-EAGAIN and short transfers are resubmitted on the same ring") {
      dev->inject_completion_errors(2, -EAGAIN);
      REQUIRE(write_waiting(*dev, s.first, src.const_spans(0, 8)) == 0);
      dev->inject_short_transfers(2);
      REQUIRE(read_waiting(*dev, s.first, dst.spans(0, 8)) == 0);
      CHECK(dev->counters().retries == 4);
      CHECK(std::memcmp(src.data(), dst.data(), src.bytes()) == 0);
    }
    SECTION("a failure in the kernel leaves no data; a corrupted slot reads -EIO") {
      dev->inject_completion_errors(1, -EIO);
      CHECK(write_waiting(*dev, s.first, src.const_spans(0, 8)) == -EIO);
      CHECK(read_waiting(*dev, s.first, dst.spans(0, 1)) == -ENODATA);
      REQUIRE(write_waiting(*dev, s.first, src.const_spans(0, 8)) == 0);
      corrupt_file(*dev, s.first + 3);
      CHECK(read_waiting(*dev, s.first, dst.spans(0, 8)) == -EIO);
      CHECK(dev->counters().checksum_failures == 1);
      CHECK(std::all_of(dst.data(), dst.data() + dst.bytes(),
                        [](std::byte b) { return b == std::byte{0}; }));
    }
    SECTION("write_blocks: a failing run poisons the slot; -EAGAIN on a run retries") {
      REQUIRE(write_waiting(*dev, s.first, src.const_spans(0, 1)) == 0);
      dev->inject_completion_errors(1, -EAGAIN);
      Waited ok;
      dev->write_blocks(s.first, src.page(0), 0b0101'0101, 9, ok.cb());
      REQUIRE(ok.wait(*dev, 1));
      CHECK(ok.errors()[0] == 0);
      REQUIRE(read_waiting(*dev, s.first, dst.spans(0, 1)) == 0);
      dev->inject_completion_errors(1, -EIO);
      Waited w;
      dev->write_blocks(s.first, src.page(0), 0b0101'0101, 9, w.cb());
      REQUIRE(w.wait(*dev, 1));
      CHECK(w.errors()[0] == -EIO);
      CHECK(read_waiting(*dev, s.first, dst.spans(0, 1)) == -EIO);
    }
  }
}

TEST_CASE("thread rings: registered memory is used on thread rings made before and after",
          "[thread_rings][uring]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20});
  Pages mem(8, 4096), dst(8, 4096);
  for (int i = 0; i < 8; ++i) mem.fill_random(i, 50 + i);
  SlotRun s = dev->allocate(8);
  // One ring exists before registration, one is made after.
  std::thread([&] { take_ring(*dev); }).join();
  REQUIRE(dev->thread_rings() == 1);
  REQUIRE(dev->register_memory(mem.data(), mem.bytes()) == 0);
  std::atomic<int> bad{0};
  auto fixed_io = [&] {
    uint64_t before = dev->counters().fixed_ios;
    bad += write_waiting(*dev, s.first, mem.const_spans(0, 8)) != 0;
    bad += read_waiting(*dev, s.first, dst.spans(0, 8)) != 0;  // dst is not registered
    bad += dev->counters().fixed_ios != before + 1;
    bad += std::memcmp(mem.data(), dst.data(), mem.bytes()) != 0;
  };
  std::thread t1([&] {  // reuses the first ring, registered after it was made
    take_ring(*dev);
    fixed_io();
  });
  t1.join();
  CHECK(dev->thread_rings() == 1);
  std::atomic<bool> hold{true}, taken{false};
  std::thread t2([&] {  // holds the first ring
    take_ring(*dev);
    taken = true;
    while (hold) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  while (!taken) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::thread t3([&] {  // makes a second one, registered as it is made
    take_ring(*dev);
    fixed_io();
  });
  t3.join();
  hold = false;
  t2.join();
  CHECK(dev->thread_rings() == 2);
  CHECK(bad == 0);
  fixed_io();  // the shared ring: the write leaves before this thread's first wait
  CHECK(bad == 0);
}

// A thread that has a ring submits and leaves (stops waiting, or exits) with
// I/O in flight: the completion thread reaps its ring, and the next thread
// that waits gets that ring.
TEST_CASE("thread rings: orphaned completions are reaped; a ring outlives its thread",
          "[thread_rings][uring][mt]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 8 << 20, .thread_rings = 2});
  Pages src(64, 4096);
  SlotRun s = dev->allocate(64);
  REQUIRE(s.count == 64);
  std::vector<std::atomic<int>> calls(64);

  SECTION("the owner stops waiting and sleeps on a condition variable") {
    take_ring(*dev);
    Latch l;
    for (int i = 0; i < 16; ++i)
      dev->write(s.first + i, src.const_spans(i, 1), [&, i](int err) {
        ++calls[i];
        l.cb()(err);
      });
    REQUIRE(l.wait(16));  // not in wait_until: the completion thread reaps
    for (int e : l.errors()) CHECK(e == 0);
    for (int i = 0; i < 16; ++i) CHECK(calls[i] == 1);
  }
  SECTION("owners exit with I/O in flight; later threads reuse their rings") {
    Latch l;
    for (int round = 0; round < 4; ++round) {
      std::vector<std::thread> ts;
      std::atomic<int> holding{0};
      for (int t = 0; t < 2; ++t)
        ts.emplace_back([&, round, t] {
          take_ring(*dev);
          // Both hold a ring at once, so neither takes the other's.
          ++holding;
          while (holding.load() < 2) std::this_thread::yield();
          for (int i = 0; i < 8; ++i) {
            int k = round * 16 + t * 8 + i;
            dev->write(s.first + k, src.const_spans(k, 1), [&, k](int err) {
              ++calls[k];
              l.cb()(err);
            });
          }
        });  // exits at once
      for (auto& t : ts) t.join();
      CHECK(dev->thread_rings() == 2);
    }
    REQUIRE(l.wait(64));
    for (int e : l.errors()) CHECK(e == 0);
    for (auto& c : calls) CHECK(c == 1);
    // More waiters than rings: the rest share the shared ring.
    std::vector<std::thread> ts;
    std::atomic<int> bad{0};
    for (int t = 0; t < 5; ++t)
      ts.emplace_back([&, t] {
        Pages dst(1, 4096);
        for (int i = 0; i < 20; ++i)
          bad += read_waiting(*dev, s.first + (t * 20 + i) % 64, dst.spans(0, 1)) != 0;
      });
    for (auto& t : ts) t.join();
    CHECK(bad == 0);
    CHECK(dev->thread_rings() == 2);
  }
}

TEST_CASE("thread rings: a waiter's plugged batch leaves from its ring as merged I/O",
          "[thread_rings][uring]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20});
  Pages src(16, 4096), dst(16, 4096);
  for (int i = 0; i < 16; ++i) src.fill_random(i, 600 + i);
  SlotRun s = dev->allocate(16);
  take_ring(*dev);
  uint64_t merged = dev->counters().ios_merged;
  Waited w;
  {
    IoBatch batch(*dev);
    for (int i = 0; i < 16; ++i) dev->write(s.first + i, src.const_spans(i, 1), w.cb());
  }
  REQUIRE(w.wait(*dev, 16));
  CHECK(dev->counters().ios_merged == merged + 15);
  CHECK(w.ran_here() == 16);
  REQUIRE(read_waiting(*dev, s.first, dst.spans(0, 16)) == 0);
  CHECK(std::memcmp(src.data(), dst.data(), src.bytes()) == 0);
}

TEST_CASE("thread rings: the destructor waits for I/O in flight on every ring",
          "[thread_rings][uring][mt]") {
  constexpr int kThreads = 4, kEach = 32;
  std::atomic<int> ran{0}, failed{0};
  Pages src(kThreads * kEach, 4096);
  {
    auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 8 << 20, .queue_depth = 8});
    std::vector<SwapSlot> slots;
    for (int i = 0; i < kThreads * kEach + 16; ++i) slots.push_back(dev->allocate(1).first);
    std::mutex mu;
    std::condition_variable cv;
    int submitted = 0;
    bool release = false;
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t)
      ts.emplace_back([&, t] {
        take_ring(*dev);
        for (int i = 0; i < kEach; ++i) {
          int k = t * kEach + i;
          // More than the ring holds: some wait in its backlog.
          dev->write(slots[k], src.const_spans(k, 1), [&](int err) {
            ++ran;
            failed += err != 0;
          });
        }
        std::unique_lock lk(mu);
        ++submitted;
        cv.notify_all();
        cv.wait(lk, [&] { return release; });  // alive, not waiting
      });
    {
      std::unique_lock lk(mu);
      cv.wait(lk, [&] { return submitted == kThreads; });
    }
    CHECK(dev->thread_rings() == kThreads);
    // Shared-ring I/O in flight too.
    for (int i = 0; i < 16; ++i)
      dev->write(slots[kThreads * kEach + i], src.const_spans(i, 1), [&](int err) {
        ++ran;
        failed += err != 0;
      });
    dev.reset();
    CHECK(ran == kThreads * kEach + 16);
    {
      std::lock_guard lk(mu);
      release = true;
    }
    cv.notify_all();
    for (auto& t : ts) t.join();
  }
  CHECK(ran == kThreads * kEach + 16);
  CHECK(failed == 0);
}
