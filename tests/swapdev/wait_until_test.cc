// SwapDevice::wait_until(): a thread waiting for its own I/O, which on the
// io_uring device reaps completions itself, next to the completion thread.
// Each wait here has a deadline folded into its predicate, so a lost wake-up
// fails the test instead of hanging it.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <thread>

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
  // True once n callbacks ran; false if that took longer than `limit`.
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

}  // namespace

TEMPLATE_TEST_CASE("wait_until: returns once the callbacks it waits for have run", "[wait_until]",
                   SWAPDEV_ALL_DEVICES, SWAPDEV_SEALED_DEVICES) {
  TestType f(256);
  SwapDevice& d = f.d();
  Pages src(16, 4096), dst(16, 4096);
  for (int i = 0; i < 16; ++i) src.fill_random(i, 70 + i);
  SlotRun s = d.allocate(16);
  REQUIRE(s.count == 16);
  Waited w;
  for (int i = 0; i < 16; ++i) d.write(s.first + i, src.const_spans(i, 1), w.cb());
  REQUIRE(w.wait(d, 16));
  for (int e : w.errors()) CHECK(e == 0);
  REQUIRE(read_waiting(d, s.first, dst.spans(0, 16)) == 0);
  CHECK(std::memcmp(src.data(), dst.data(), src.bytes()) == 0);
  // Already true: returns at once.
  d.wait_until([] { return true; });
}

TEST_CASE("wait_until: the memory device's waiter runs queued requests itself (manual mode)",
          "[wait_until]") {
  MemorySwapDevice d({.slots = 64, .completion = MemorySwapDevice::Completion::Manual});
  Pages p(1, 4096);
  SlotRun s = d.allocate(1);
  Waited w;
  d.write(s.first, p.const_spans(0, 1), w.cb());
  CHECK(d.pending() == 1);
  REQUIRE(w.wait(d, 1));
  CHECK(w.errors()[0] == 0);
  CHECK(w.ran_here() == 1);
}

// Four submitters keep 8 requests each in flight and wait in wait_until()
// while a fifth submits without waiting (its completions are the completion
// thread's, or whoever reaps first) and all of them chain write -> read ->
// check, with short transfers, -EAGAIN and write_blocks runs mixed in. Every
// callback must run exactly once and every read must return what was
// written.
TEST_CASE("wait_until: callbacks run exactly once with several reapers and the completion thread",
          "[wait_until][uring][mt]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 16 << 20, .queue_depth = 8});
  constexpr int kWaiters = 4, kDepth = 8, kRounds = 150;
  constexpr int kLanes = (kWaiters + 1) * kDepth;
  Pages src(kLanes * 2, 4096), dst(kLanes * 2, 4096);
  std::vector<SwapSlot> slots(kLanes);
  for (int l = 0; l < kLanes; ++l) {
    SlotRun r = dev->allocate(2);
    REQUIRE(r.count == 2);
    slots[l] = r.first;
  }
  // calls[lane * kRounds * 3 + round * 3 + step]: step 0 write, 1 read, 2 write_blocks.
  std::vector<std::atomic<int>> calls(size_t{kLanes} * kRounds * 3);
  std::atomic<int> bad{0};
  std::atomic<int> on_waiters{0};  // callbacks that ran on a waiting thread
  static thread_local bool waiter = false;
  std::atomic<bool> stop_foreign{false};

  // One lane: kRounds times write 2 pages, read them back and compare, then
  // rewrite some blocks of the first. Each step is submitted by the callback
  // of the one before, on whichever thread reaped it.
  struct Lane {
    int round = 0;
    std::atomic<int>* finished = nullptr;
    std::function<void()> next;
  };
  std::vector<Lane> lanes(kLanes);
  for (int lane = 0; lane < kLanes; ++lane) {
    Lane& ln = lanes[lane];
    ln.next = [&, lane] {
      Lane& me = lanes[lane];
      int k = me.round;
      if (k == kRounds) {
        ++*me.finished;
        return;
      }
      size_t base = (size_t(lane) * kRounds + k) * 3;
      src.fill_random(lane * 2, lane * 1000 + k);
      src.fill_random(lane * 2 + 1, lane * 1000 + k + 500);
      dev->write(slots[lane], src.const_spans(lane * 2, 2), [&, base, lane](int err) {
        if (calls[base].fetch_add(1) != 0 || err != 0) ++bad;
        on_waiters += waiter;
        dev->read(slots[lane], dst.spans(lane * 2, 2), [&, base, lane](int read_err) {
          if (calls[base + 1].fetch_add(1) != 0 || read_err != 0 ||
              std::memcmp(src.page(lane * 2).data(), dst.page(lane * 2).data(), 2 * 4096) != 0)
            ++bad;
          // Blocks 0, 4 and 5 change; the rest is what the slot holds.
          std::memset(src.page(lane * 2).data(), lane, 512);
          std::memset(src.page(lane * 2).data() + 2048, lane + 1, 1024);
          dev->write_blocks(slots[lane], src.page(lane * 2), 0b0011'0001, 9,
                            [&, base, lane](int blocks_err) {
                              if (calls[base + 2].fetch_add(1) != 0 || blocks_err != 0) ++bad;
                              ++lanes[lane].round;
                              lanes[lane].next();
                            });
        });
      });
    };
  }
  auto run_lane = [&](int lane, std::atomic<int>& finished) {
    lanes[lane].finished = &finished;
    lanes[lane].next();
  };

  auto deadline = Clock::now() + std::chrono::seconds(60);
  std::vector<std::thread> ts;
  for (int t = 0; t < kWaiters; ++t)
    ts.emplace_back([&, t] {
      waiter = true;
      std::atomic<int> finished{0};
      for (int k = 0; k < kDepth; ++k) run_lane(t * kDepth + k, finished);
      // Now and then a retry, from the thread that will reap it.
      dev->inject_short_transfers(3);
      dev->inject_completion_errors(2, -EAGAIN);
      dev->wait_until([&] { return finished.load() == kDepth || Clock::now() > deadline; });
      if (finished.load() != kDepth) ++bad;
    });
  std::atomic<int> foreign_finished{0};
  ts.emplace_back([&] {
    for (int k = 0; k < kDepth; ++k) run_lane(kWaiters * kDepth + k, foreign_finished);
    while (!stop_foreign) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  });
  for (int t = 0; t < kWaiters; ++t) ts[t].join();
  while (foreign_finished.load() != kDepth && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  stop_foreign = true;
  for (auto& t : ts)
    if (t.joinable()) t.join();
  CHECK(foreign_finished.load() == kDepth);
  CHECK(bad.load() == 0);
  size_t wrong = 0;
  for (auto& c : calls) wrong += c.load() != 1;
  CHECK(wrong == 0);
  CHECK(on_waiters.load() > 0);  // the waiters did reap
  SwapCounters c = dev->counters();
  CHECK(c.errors == 0);
  CHECK(c.checksum_failures == 0);
  CHECK(c.queue_depth == 0);
  CHECK(c.max_queue_depth <= 16);  // the backlog held the rest
}

// The waiter's request completes while it is not yet waiting, so another
// thread (the completion thread, or a waiter that wakes for its own I/O) reaps
// it and runs its callback; the callback holds on until the waiter has gone to
// sleep. With and without another thread waiting at the same time (which
// decides whether the completion thread sleeps in io_uring_enter or on its
// Waker, and whether the reaper wakes the owner or the owner's slice does).
TEST_CASE("wait_until: a waiter whose callback runs on another thread still returns",
          "[wait_until][uring][mt]") {
  bool other_waiter = GENERATE(false, true);
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20});
  Pages p(1, 4096);
  SlotRun s = dev->allocate(1);
  std::atomic<bool> stop_other{false};
  std::thread other;
  if (other_waiter)
    other = std::thread([&] { dev->wait_until([&] { return stop_other.load(); }); });
  for (int i = 0; i < 20; ++i) {
    std::atomic<bool> entered{false}, release{false}, done{false};
    std::atomic<int> result{1};
    std::thread::id ran_on;
    dev->write(s.first, p.const_spans(0, 1), [&](int err) {
      result = err;
      ran_on = std::this_thread::get_id();
      entered = true;
      while (!release) std::this_thread::sleep_for(std::chrono::microseconds(100));
      done = true;
    });
    // Let the I/O complete here (this thread's task work posts the CQE as
    // it sleeps) and someone else reap it.
    auto give_up = Clock::now() + std::chrono::seconds(10);
    while (!entered && Clock::now() < give_up)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    REQUIRE(entered);
    std::thread releaser([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
      release = true;
    });
    auto deadline = Clock::now() + std::chrono::seconds(10);
    dev->wait_until([&] { return done.load() || Clock::now() > deadline; });
    releaser.join();
    REQUIRE(done);
    CHECK(result == 0);
    CHECK(ran_on != std::this_thread::get_id());
  }
  stop_other = true;
  if (other.joinable()) other.join();
}

TEST_CASE("wait_until: errors, retries and checksum failures through the reaping path",
          "[wait_until][uring]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20});
  Pages src(8, 4096), dst(8, 4096);
  for (int i = 0; i < 8; ++i) src.fill_random(i, 900 + i);
  SlotRun s = dev->allocate(8);
  REQUIRE(s.count == 8);

  SECTION("injected request errors") {
    dev->inject_errors(2, -EIO);
    CHECK(write_waiting(*dev, s.first, src.const_spans(0, 8)) == -EIO);
    CHECK(read_waiting(*dev, s.first, dst.spans(0, 8)) == -EIO);
    CHECK(dev->counters().injected_errors == 2);
    REQUIRE(write_waiting(*dev, s.first, src.const_spans(0, 8)) == 0);
    REQUIRE(read_waiting(*dev, s.first, dst.spans(0, 8)) == 0);
    CHECK(std::memcmp(src.data(), dst.data(), src.bytes()) == 0);
  }
  SECTION("-EAGAIN and short transfers are resubmitted by the reaper") {
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
    // Nothing that failed verification is left in the caller's pages.
    CHECK(std::all_of(dst.data(), dst.data() + dst.bytes(),
                      [](std::byte b) { return b == std::byte{0}; }));
  }
  SECTION("write_blocks: a failing run poisons the slot") {
    REQUIRE(write_waiting(*dev, s.first, src.const_spans(0, 1)) == 0);
    dev->inject_completion_errors(1, -EIO);
    Waited w;
    dev->write_blocks(s.first, src.page(0), 0b0101'0101, 9, w.cb());
    REQUIRE(w.wait(*dev, 1));
    CHECK(w.errors()[0] == -EIO);
    CHECK(read_waiting(*dev, s.first, dst.spans(0, 1)) == -EIO);
  }
}

// More requests than the ring holds, from threads that wait: the backlog is
// drained by whoever reaps.
TEST_CASE("wait_until: waiters drain the backlog", "[wait_until][uring][mt]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 16 << 20, .queue_depth = 4});
  constexpr int kThreads = 3, kEach = 200;
  Pages src(kThreads * kEach, 4096);
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      Waited w;
      for (int i = 0; i < kEach; ++i) {
        SlotRun s = dev->allocate(1);
        src.fill_random(t * kEach + i, i);
        dev->write(s.first, src.const_spans(t * kEach + i, 1), w.cb());
      }
      if (!w.wait(*dev, kEach)) ++bad;
      for (int e : w.errors()) bad += e != 0;
    });
  for (auto& t : ts) t.join();
  CHECK(bad == 0);
  SwapCounters c = dev->counters();
  CHECK(c.max_queue_depth <= 8);
  CHECK(c.queue_depth == 0);
}
