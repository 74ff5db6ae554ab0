// Behaviour every SwapDevice must show, run against each implementation.
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <random>
#include <thread>

#include "tests/swapdev/fixtures.h"

using namespace tmpfsd::swapdev;
using namespace tmpfsd::swapdev::test;

#define DEVICES SWAPDEV_ALL_DEVICES, SWAPDEV_SEALED_DEVICES

TEMPLATE_TEST_CASE("device: random pages at random slots round-trip with concurrent submitters",
                   "[device][mt]", DEVICES) {
  TestType f(4096, 64);
  SwapDevice& d = f.d();
  constexpr int kThreads = 4;
  constexpr int kRunsPerThread = 120;
  std::atomic<int> mismatches{0}, failures{0};
  auto work = [&](int id) {
    std::mt19937 rng(1234 + id);
    struct Run {
      SlotRun slots;
      size_t at;  // first page in `src`
    };
    Pages src(kRunsPerThread * 8, 4096);
    std::vector<Run> runs;
    size_t used = 0;
    Latch wl;
    SwapSlot hint;
    for (int i = 0; i < kRunsPerThread; ++i) {
      uint32_t want = 1 + rng() % 8;
      // Sometimes continue the previous run, sometimes start anywhere.
      SlotRun s = d.allocate(want, rng() % 2 ? hint : SwapSlot());
      if (s.count == 0) {
        ++failures;
        continue;
      }
      hint = s.first + s.count;
      for (uint32_t k = 0; k < s.count; ++k) src.fill_random(used + k, rng());
      d.write(s.first, src.const_spans(used, s.count), wl.cb());
      runs.push_back({s, used});
      used += s.count;
    }
    if (!wl.wait(runs.size())) ++failures;
    for (int e : wl.errors()) failures += e != 0;
    // Read back in a shuffled order, into fresh memory.
    std::shuffle(runs.begin(), runs.end(), rng);
    Pages dst(used, 4096);
    Latch rl;
    for (auto& r : runs) d.read(r.slots.first, dst.spans(r.at, r.slots.count), rl.cb());
    if (!rl.wait(runs.size())) ++failures;
    for (int e : rl.errors()) failures += e != 0;
    if (std::memcmp(src.data(), dst.data(), used * 4096) != 0) ++mismatches;
    for (auto& r : runs) d.free(r.slots.first, r.slots.count);
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) ts.emplace_back(work, t);
  for (auto& t : ts) t.join();
  CHECK(failures == 0);
  CHECK(mismatches == 0);
  SwapCounters c = d.counters();
  CHECK(c.slots_used == 0);
  CHECK(c.errors == 0);
  CHECK(c.double_frees == 0);
  CHECK(c.bytes_written == c.bytes_read);
  CHECK(c.bytes_written > 0);
  CHECK(c.write_requests == c.read_requests);
  CHECK(c.queue_depth == 0);
}

TEMPLATE_TEST_CASE("device: a slot corrupted behind the device's back reads as EIO", "[device]",
                   DEVICES) {
  TestType f(512);
  SwapDevice& d = f.d();
  SlotRun s = d.allocate(3);
  REQUIRE(s.count == 3);
  Pages src(3, 4096);
  for (int i = 0; i < 3; ++i) src.fill_random(i, 77 + i);
  REQUIRE(write_sync(d, s.first, src.const_spans(0, 3)) == 0);
  f.corrupt(s.first + 1);

  Pages dst(3, 4096);
  std::memset(dst.data(), 0xee, dst.bytes());
  CHECK(read_sync(d, s.first, dst.spans(0, 3)) == -EIO);
  CHECK(d.counters().checksum_failures == 1);
  // The corrupted bytes never reach the caller.
  std::vector<std::byte> zero(4096);
  CHECK(std::memcmp(dst.page(1).data(), zero.data(), 4096) == 0);
  // Neighbours are intact and readable alone.
  CHECK(read_sync(d, s.first, dst.spans(0, 1)) == 0);
  CHECK(std::memcmp(dst.page(0).data(), src.page(0).data(), 4096) == 0);
  CHECK(read_sync(d, s.first + 2, dst.spans(2, 1)) == 0);
  CHECK(std::memcmp(dst.page(2).data(), src.page(2).data(), 4096) == 0);
  // Rewriting the slot heals it.
  REQUIRE(write_sync(d, s.first + 1, src.const_spans(1, 1)) == 0);
  CHECK(read_sync(d, s.first + 1, dst.spans(1, 1)) == 0);
  CHECK(std::memcmp(dst.page(1).data(), src.page(1).data(), 4096) == 0);
}

TEMPLATE_TEST_CASE("device: injected EIO and ENOSPC reach the callbacks and leave it usable",
                   "[device]", DEVICES) {
  TestType f(512);
  SwapDevice& d = f.d();
  SlotRun s = d.allocate(4);
  REQUIRE(s.count == 4);
  Pages src(4, 4096), dst(4, 4096);
  for (int i = 0; i < 4; ++i) src.fill_random(i, 900 + i);
  REQUIRE(write_sync(d, s.first, src.const_spans(0, 2)) == 0);

  d.inject_errors(2, -EIO);
  CHECK(write_sync(d, s.first + 2, src.const_spans(2, 1)) == -EIO);
  CHECK(read_sync(d, s.first, dst.spans(0, 1)) == -EIO);
  // Exhausted: the next requests work.
  CHECK(read_sync(d, s.first, dst.spans(0, 2)) == 0);
  CHECK(std::memcmp(dst.data(), src.data(), 2 * 4096) == 0);
  // The slot whose write failed holds no data.
  CHECK(read_sync(d, s.first + 2, dst.spans(2, 1)) == -ENODATA);

  d.inject_errors(1, -ENOSPC);
  CHECK(write_sync(d, s.first + 3, src.const_spans(3, 1)) == -ENOSPC);
  CHECK(write_sync(d, s.first + 2, src.const_spans(2, 2)) == 0);
  CHECK(read_sync(d, s.first, dst.spans(0, 4)) == 0);
  CHECK(std::memcmp(dst.data(), src.data(), 4 * 4096) == 0);

  SwapCounters c = d.counters();
  CHECK(c.injected_errors == 3);
  CHECK(c.errors == 4);  // three injected and the -ENODATA read
  CHECK(c.checksum_failures == 0);
}

TEMPLATE_TEST_CASE("device: bad requests fail with EINVAL, unwritten and freed slots ENODATA",
                   "[device]", DEVICES) {
  TestType f(512);
  SwapDevice& d = f.d();
  Pages p(2, 4096);
  p.fill_random(0, 5);
  // Not allocated.
  CHECK(write_sync(d, SwapSlot(7), p.const_spans(0, 1)) == -EINVAL);
  CHECK(read_sync(d, SwapSlot(), p.spans(1, 1)) == -EINVAL);
  SlotRun s = d.allocate(1);
  REQUIRE(s.count == 1);
  // Wrong page size; run longer than the allocation.
  std::vector<std::span<const std::byte>> half{p.page(0).first(2048)};
  CHECK(write_sync(d, s.first, half) == -EINVAL);
  CHECK(write_sync(d, s.first, p.const_spans(0, 2)) == -EINVAL);
  CHECK(read_sync(d, s.first, p.spans(1, 1)) == -ENODATA);
  REQUIRE(write_sync(d, s.first, p.const_spans(0, 1)) == 0);
  CHECK(read_sync(d, s.first, p.spans(1, 1)) == 0);
  CHECK(std::memcmp(p.page(0).data(), p.page(1).data(), 4096) == 0);
  // Freed and allocated again (through the hint): the old bytes are gone.
  d.free(s.first, 1);
  SlotRun again = d.allocate(1, s.first);
  REQUIRE(again.first == s.first);
  CHECK(read_sync(d, again.first, p.spans(1, 1)) == -ENODATA);
  d.free(again.first, 1);
  d.free(again.first, 1);
  CHECK(d.counters().double_frees == 1);
}

TEMPLATE_TEST_CASE("device: allocation exhausts cleanly and slots are reusable", "[device]",
                   DEVICES) {
  TestType f(300, 32);
  SwapDevice& d = f.d();
  std::vector<SlotRun> runs;
  uint64_t total = 0;
  for (SlotRun r; (r = d.allocate(16)).count;) {
    runs.push_back(r);
    total += r.count;
  }
  CHECK(total == 300);
  CHECK(d.allocate(1).err == -ENOSPC);
  CHECK(d.counters().slots_used == 300);
  CHECK(d.counters().alloc_failures >= 1);
  // Free one run in the middle and write through the space it leaves.
  SlotRun mid = runs[runs.size() / 2];
  d.free(mid.first, mid.count);
  SlotRun r = d.allocate(mid.count);
  REQUIRE(r.count >= 1);
  Pages p(2, 4096);
  p.fill_random(0, 11);
  REQUIRE(write_sync(d, r.first, p.const_spans(0, 1)) == 0);
  REQUIRE(read_sync(d, r.first, p.spans(1, 1)) == 0);
  CHECK(std::memcmp(p.page(0).data(), p.page(1).data(), 4096) == 0);
}
