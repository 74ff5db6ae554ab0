#include "swapdev/slot_allocator.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <random>
#include <set>
#include <thread>
#include <vector>

using namespace tmpfsd::swapdev;

namespace {
SlotAllocator make(uint64_t slots, uint32_t cluster = 16, unsigned shards = 1,
                   bool discard = false) {
  return SlotAllocator(
      {.total_slots = slots, .cluster_slots = cluster, .shards = shards, .discard = discard});
}
}  // namespace

TEST_CASE("allocator: consecutive runs from one thread land together", "[allocator]") {
  auto a = make(256, 64);
  SlotRun r1 = a.allocate(4);
  SlotRun r2 = a.allocate(4);
  REQUIRE(r1.count == 4);
  REQUIRE(r2.count == 4);
  CHECK(r2.first.value == r1.first.value + 4);
  // A run never crosses a cluster: 60 slots are left in this one.
  SlotRun r3 = a.allocate(100);
  CHECK(r3.count == 56);
  CHECK(a.used_slots() == 64);
}

TEST_CASE("allocator: hint continues a neighbour's run, even across clusters", "[allocator]") {
  auto a = make(256, 16);
  SlotRun r = a.allocate(16);
  REQUIRE(r.first.value == 0);
  REQUIRE(r.count == 16);
  SlotRun next = a.allocate(8, r.first + r.count);  // in the next (free) cluster
  CHECK(next.first.value == 16);
  CHECK(next.count == 8);
  SlotRun more = a.allocate(100, next.first + next.count);  // capped at the cluster end
  CHECK(more.first.value == 24);
  CHECK(more.count == 8);
  // Unhinted allocation does not start in the hinted cluster.
  SlotRun plain = a.allocate(1);
  CHECK(plain.first.value == 32);
  // A hint on an allocated slot falls back to the normal path.
  SlotRun taken = a.allocate(1, r.first);
  CHECK(taken.first.value == 33);
  CHECK(a.used_slots() == 34);
}

TEST_CASE("allocator: exhaustion is a clean -ENOSPC and never reuses a slot", "[allocator]") {
  auto a = make(100, 16, 2);  // last cluster is short
  std::set<uint64_t> got;
  for (;;) {
    SlotRun r = a.allocate(7);
    if (r.count == 0) {
      CHECK(r.err == -ENOSPC);
      break;
    }
    for (uint32_t i = 0; i < r.count; ++i) REQUIRE(got.insert(r.first.value + i).second);
  }
  CHECK(got.size() == 100);
  CHECK(*got.rbegin() == 99);
  CHECK(a.used_slots() == 100);
  CHECK(a.allocate(1).err == -ENOSPC);
  CHECK(a.allocate(1, SwapSlot(5)).count == 0);
  CHECK(a.alloc_failures() >= 2);
  CHECK(a.allocate(0).err == -EINVAL);
}

TEST_CASE("allocator: fragmentation is reused once clean clusters run out", "[allocator]") {
  auto a = make(64, 16);
  std::vector<SlotRun> runs;
  for (int i = 0; i < 64; ++i) runs.push_back(a.allocate(1));
  REQUIRE(a.allocate(1).count == 0);
  // Free every other slot: 32 holes, no run longer than 1.
  for (int i = 0; i < 64; i += 2) a.free(runs[i].first, 1);
  CHECK(a.used_slots() == 32);
  std::set<uint64_t> again;
  for (int i = 0; i < 32; ++i) {
    SlotRun r = a.allocate(4);
    REQUIRE(r.count == 1);  // holes are single slots
    CHECK(r.first.value % 2 == 0);
    again.insert(r.first.value);
  }
  CHECK(again.size() == 32);
  CHECK(a.allocate(1).err == -ENOSPC);
  // Free a whole cluster: a long run is possible again.
  for (uint64_t s = 16; s < 32; ++s) a.free(SwapSlot(s), 1);
  SlotRun big = a.allocate(16);
  CHECK(big.first.value == 16);
  CHECK(big.count == 16);
}

TEST_CASE("allocator: double free is detected and does not corrupt state", "[allocator]") {
  auto a = make(64, 16);
  SlotRun r = a.allocate(4);
  REQUIRE(a.free(r.first, 4) == 4);
  CHECK(a.free(r.first, 4) == 0);
  CHECK(a.double_frees() == 4);
  CHECK(a.used_slots() == 0);
  // Partly allocated range: only the allocated part is freed.
  SlotRun s = a.allocate(2);
  CHECK(a.free(s.first, 3) == 2);
  CHECK(a.double_frees() == 5);
  // Out of range and invalid slots.
  CHECK(a.free(SwapSlot(1000), 1) == 0);
  CHECK(a.free(SwapSlot(), 1) == 0);
  // Every slot is still allocatable exactly once.
  std::set<uint64_t> got;
  for (SlotRun x; (x = a.allocate(5)).count;)
    for (uint32_t i = 0; i < x.count; ++i) REQUIRE(got.insert(x.first.value + i).second);
  CHECK(got.size() == 64);
}

TEST_CASE("allocator: freed clusters wait for discard and come back after it", "[allocator]") {
  auto a = make(64, 16, 1, /*discard=*/true);
  SlotRun r1 = a.allocate(16);
  SlotRun r2 = a.allocate(16);
  REQUIRE(r1.count == 16);
  REQUIRE(r2.count == 16);
  a.free(r1.first, 16);
  CHECK(a.discard_waiting() == 1);
  CHECK(a.allocatable_slots() == 32);  // the waiting cluster does not count
  auto ranges = a.take_discard_batch(10);
  REQUIRE(ranges.size() == 1);
  CHECK(ranges[0].first == r1.first.value);
  CHECK(ranges[0].count == 16);
  CHECK(a.discarding() == 1);
  // While punching, nothing is handed out from it, not even through a hint.
  SlotRun h = a.allocate(1, r1.first);
  CHECK(h.first != r1.first);
  a.finish_discard(ranges);
  CHECK(a.discarding() == 0);
  CHECK(a.allocatable_slots() == 64 - 16 - 1);
}

TEST_CASE("allocator: under pressure a cluster waiting for discard is reused unpunched",
          "[allocator]") {
  auto a = make(32, 16, 1, true);
  SlotRun r1 = a.allocate(16);
  SlotRun r2 = a.allocate(16);
  REQUIRE(a.allocate(1).count == 0);
  a.free(r2.first, 16);
  REQUIRE(a.discard_waiting() == 1);
  SlotRun r3 = a.allocate(16);
  CHECK(r3.count == 16);
  CHECK(r3.first == r2.first);
  CHECK(a.discard_waiting() == 0);
  (void)r1;
}

TEST_CASE("allocator: concurrent allocate/free never hands a slot out twice", "[allocator][mt]") {
  auto a = make(4096, 64, 4, true);
  std::vector<std::atomic<int>> owner(4096);
  std::atomic<int> errors{0};
  auto work = [&](int id) {
    std::mt19937 rng(id);
    std::vector<SlotRun> mine;
    for (int i = 0; i < 20000; ++i) {
      if (mine.size() < 40 && rng() % 3 != 0) {
        SlotRun hint = mine.empty() ? SlotRun{} : mine.back();
        SlotRun r = a.allocate(1 + rng() % 8, hint.count ? hint.first + hint.count : SwapSlot());
        if (!r.count) continue;
        for (uint32_t k = 0; k < r.count; ++k)
          if (owner[r.first.value + k].exchange(id + 1) != 0) ++errors;
        mine.push_back(r);
      } else if (!mine.empty()) {
        size_t j = rng() % mine.size();
        SlotRun r = mine[j];
        mine.erase(mine.begin() + j);
        for (uint32_t k = 0; k < r.count; ++k)
          if (owner[r.first.value + k].exchange(0) != id + 1) ++errors;
        a.free(r.first, r.count);
      }
      if (i % 1000 == 0) {
        auto b = a.take_discard_batch(4);
        a.finish_discard(b);
      }
    }
    for (SlotRun r : mine) {
      for (uint32_t k = 0; k < r.count; ++k) owner[r.first.value + k].store(0);
      a.free(r.first, r.count);
    }
  };
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) ts.emplace_back(work, t);
  for (auto& t : ts) t.join();
  CHECK(errors == 0);
  CHECK(a.used_slots() == 0);
  CHECK(a.double_frees() == 0);
}
