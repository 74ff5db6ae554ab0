// write_blocks(): partial rewrites of a written slot, on every device.
#include <catch2/catch.hpp>

#include <bit>
#include <cerrno>
#include <cstring>
#include <random>
#include <vector>

#include "tests/swapdev/fixtures.h"

using namespace tmpfsd::swapdev;
using namespace tmpfsd::swapdev::test;

namespace {

constexpr size_t kPage = 4096;
constexpr unsigned kShift = 9;  // 512-byte blocks: 8 per page
constexpr size_t kBlock = size_t{1} << kShift;

// Overwrites the blocks of `page` set in `mask` with fresh random bytes.
void scribble(std::span<std::byte> page, uint64_t mask, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (unsigned b = 0; b < page.size() / kBlock; ++b)
    if (mask >> b & 1)
      for (size_t i = 0; i < kBlock; ++i) page[b * kBlock + i] = std::byte(rng());
}

// `base` with the blocks in `mask` taken from `from`.
std::vector<std::byte> mix(std::span<const std::byte> base, std::span<const std::byte> from,
                           uint64_t mask) {
  std::vector<std::byte> out(base.begin(), base.end());
  for (unsigned b = 0; b < base.size() / kBlock; ++b)
    if (mask >> b & 1) std::memcpy(out.data() + b * kBlock, from.data() + b * kBlock, kBlock);
  return out;
}

bool same(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

TEMPLATE_TEST_CASE("write_blocks: scattered blocks of a modified page read back whole",
                   "[device][write_blocks]", SWAPDEV_ALL_DEVICES) {
  TestType f(512);
  SwapDevice& d = f.d();
  SlotRun s = d.allocate(1);
  REQUIRE(s.count == 1);
  Pages p(3, kPage);  // 0: the page as written; 1: the new page; 2: read back
  p.fill_random(0, 1);
  REQUIRE(write_sync(d, s.first, p.const_spans(0, 1)) == 0);

  // Three runs: block 0, blocks 2-3, block 7.
  const uint64_t mask = 0b1000'1101;
  std::memcpy(p.page(1).data(), p.page(0).data(), kPage);
  scribble(p.page(1), mask, 2);
  SwapCounters before = d.counters();
  REQUIRE(write_blocks_sync(d, s.first, p.page(1), mask, kShift) == 0);
  SwapCounters after = d.counters();
  CHECK(after.bytes_written - before.bytes_written == std::popcount(mask) * kBlock);
  CHECK(after.write_requests - before.write_requests == 1);
  CHECK(after.errors == before.errors);
  CHECK(same(f.stored(s.first), p.page(1)));

  REQUIRE(read_sync(d, s.first, p.spans(2, 1)) == 0);
  CHECK(same(p.page(2), p.page(1)));

  // Again on the result, with the other blocks: still whole and verified.
  std::memcpy(p.page(0).data(), p.page(1).data(), kPage);
  scribble(p.page(1), ~mask & 0xff, 3);
  REQUIRE(write_blocks_sync(d, s.first, p.page(1), ~mask & 0xff, kShift) == 0);
  REQUIRE(read_sync(d, s.first, p.spans(2, 1)) == 0);
  CHECK(same(p.page(2), p.page(1)));
  CHECK(d.counters().checksum_failures == 0);
}

TEMPLATE_TEST_CASE("write_blocks: blocks outside the mask are not written",
                   "[device][write_blocks]", SWAPDEV_ALL_DEVICES) {
  TestType f(512);
  SwapDevice& d = f.d();
  SlotRun s = d.allocate(1);
  REQUIRE(s.count == 1);
  Pages p(3, kPage);
  p.fill_random(0, 10);
  REQUIRE(write_sync(d, s.first, p.const_spans(0, 1)) == 0);

  // The new page differs inside the mask and also outside it (blocks 1, 6).
  const uint64_t mask = 0b0010'0100;
  std::memcpy(p.page(1).data(), p.page(0).data(), kPage);
  scribble(p.page(1), mask | 0b0100'0010, 11);
  REQUIRE(write_blocks_sync(d, s.first, p.page(1), mask, kShift) == 0);
  // The medium holds the old page with only the masked blocks replaced...
  CHECK(same(f.stored(s.first), mix(p.page(0), p.page(1), mask)));
  // ...which is not the page the checksum now describes: a read says so.
  std::memset(p.page(2).data(), 0xee, kPage);
  CHECK(read_sync(d, s.first, p.spans(2, 1)) == -EIO);
  CHECK(d.counters().checksum_failures == 1);
  CHECK(same(p.page(2), std::vector<std::byte>(kPage)));  // zeros, never the mix

  // A whole write heals it.
  REQUIRE(write_sync(d, s.first, p.const_spans(1, 1)) == 0);
  REQUIRE(read_sync(d, s.first, p.spans(2, 1)) == 0);
  CHECK(same(p.page(2), p.page(1)));
}

TEMPLATE_TEST_CASE("write_blocks: a failed rewrite poisons the slot until it is rewritten",
                   "[device][write_blocks]", SWAPDEV_ALL_DEVICES) {
  TestType f(512);
  SwapDevice& d = f.d();
  SlotRun s = d.allocate(2);
  REQUIRE(s.count == 2);
  Pages p(4, kPage);
  p.fill_random(0, 20);
  p.fill_random(1, 21);
  REQUIRE(write_sync(d, s.first, p.const_spans(0, 2)) == 0);
  std::memcpy(p.page(2).data(), p.page(0).data(), kPage);
  scribble(p.page(2), 0b11, 22);

  SwapCounters before = d.counters();
  d.inject_errors(1, -EIO);
  CHECK(write_blocks_sync(d, s.first, p.page(2), 0b11, kShift) == -EIO);
  SwapCounters after = d.counters();
  CHECK(after.bytes_written == before.bytes_written);
  CHECK(after.injected_errors - before.injected_errors == 1);
  // Never the old bytes, never a mix: -EIO, and the caller's page is zeroed.
  std::memset(p.page(3).data(), 0xee, kPage);
  CHECK(read_sync(d, s.first, p.spans(3, 1)) == -EIO);
  CHECK(same(p.page(3), std::vector<std::byte>(kPage)));
  CHECK(read_sync(d, s.first, p.spans(3, 1)) == -EIO);  // and it stays so
  // The neighbour is untouched.
  REQUIRE(read_sync(d, s.first + 1, p.spans(3, 1)) == 0);
  CHECK(same(p.page(3), p.page(1)));

  // -ENOSPC too, and a multi-run mask.
  d.inject_errors(1, -ENOSPC);
  CHECK(write_blocks_sync(d, s.first + 1, p.page(1), 0b1010'0101, kShift) == -ENOSPC);
  CHECK(read_sync(d, s.first + 1, p.spans(3, 1)) == -EIO);

  // A whole write() heals the first; free() clears the second.
  REQUIRE(write_sync(d, s.first, p.const_spans(2, 1)) == 0);
  REQUIRE(read_sync(d, s.first, p.spans(3, 1)) == 0);
  CHECK(same(p.page(3), p.page(2)));
  d.free(s.first + 1, 1);
  SlotRun again = d.allocate(1, s.first + 1);
  REQUIRE(again.first == s.first + 1);
  CHECK(read_sync(d, again.first, p.spans(3, 1)) == -ENODATA);
}

TEMPLATE_TEST_CASE(
    "write_blocks: mask 0 completes and touches nothing; bad arguments touch nothing",
    "[device][write_blocks]", SWAPDEV_ALL_DEVICES) {
  TestType f(512);
  SwapDevice& d = f.d();
  SlotRun s = d.allocate(2);
  REQUIRE(s.count == 2);
  Pages p(3, kPage);
  p.fill_random(0, 30);
  p.fill_random(1, 31);  // differs everywhere from what the slot holds
  REQUIRE(write_sync(d, s.first, p.const_spans(0, 1)) == 0);

  SwapCounters before = d.counters();
  CHECK(write_blocks_sync(d, s.first, p.page(1), 0, kShift) == 0);
  CHECK(d.counters().bytes_written == before.bytes_written);
  CHECK(same(f.stored(s.first), p.page(0)));
  REQUIRE(read_sync(d, s.first, p.spans(2, 1)) == 0);
  CHECK(same(p.page(2), p.page(0)));

  // Each of these fails before any I/O and leaves the slot as it was.
  CHECK(write_blocks_sync(d, s.first, p.page(1), 1, 8) == -EINVAL);            // 256 B blocks
  CHECK(write_blocks_sync(d, s.first, p.page(1), 1 << 8, kShift) == -EINVAL);  // past block 7
  CHECK(write_blocks_sync(d, s.first, p.page(1), 1, 13) == -EINVAL);           // block > page
  CHECK(write_blocks_sync(d, s.first, p.page(1).first(2048), 1, kShift) == -EINVAL);
  CHECK(write_blocks_sync(d, SwapSlot(), p.page(1), 1, kShift) == -EINVAL);
  CHECK(write_blocks_sync(d, s.first + 300, p.page(1), 1, kShift) == -EINVAL);  // not allocated
  CHECK(write_blocks_sync(d, s.first + 1, p.page(1), 1, kShift) == -ENODATA);   // never written
  CHECK(read_sync(d, s.first + 1, p.spans(2, 1)) == -ENODATA);
  // One 4 KiB block is the whole page.
  CHECK(d.counters().bytes_written == before.bytes_written);
  REQUIRE(read_sync(d, s.first, p.spans(2, 1)) == 0);
  CHECK(same(p.page(2), p.page(0)));
  REQUIRE(write_blocks_sync(d, s.first, p.page(1), 1, 12) == 0);
  CHECK(d.counters().bytes_written - before.bytes_written == kPage);
  REQUIRE(read_sync(d, s.first, p.spans(2, 1)) == 0);
  CHECK(same(p.page(2), p.page(1)));
  CHECK(d.counters().checksum_failures == 0);
}

TEMPLATE_TEST_CASE(
    "write_blocks: batched with whole writes of the neighbours, nothing merges wrongly",
    "[device][write_blocks]", SWAPDEV_ALL_DEVICES) {
  TestType f(512);
  SwapDevice& d = f.d();
  constexpr int kSlots = 8;
  SlotRun s = d.allocate(kSlots);
  REQUIRE(s.count == kSlots);
  Pages old(kSlots, kPage), now(kSlots, kPage), back(kSlots, kPage);
  for (int i = 0; i < kSlots; ++i) old.fill_random(i, 40 + i);
  REQUIRE(write_sync(d, s.first, old.const_spans(0, kSlots)) == 0);
  std::memcpy(now.data(), old.data(), old.bytes());
  std::mt19937_64 rng(5);
  std::vector<uint64_t> masks(kSlots);
  for (int i = 0; i < kSlots; ++i) {
    masks[i] = rng() & 0xff;
    scribble(now.page(i), i % 2 ? masks[i] : 0xff, 50 + i);
  }
  Latch l;
  {
    // Odd slots partially, even slots whole, all in one batch: the whole
    // writes are neighbours of each other's runs but must stay apart.
    IoBatch batch(d);
    for (int i = 0; i < kSlots; ++i) {
      if (i % 2)
        d.write_blocks(s.first + i, now.page(i), masks[i], kShift, l.cb());
      else
        d.write(s.first + i, now.const_spans(i, 1), l.cb());
    }
  }
  REQUIRE(l.wait(kSlots));
  for (int e : l.errors()) CHECK(e == 0);
  REQUIRE(read_sync(d, s.first, back.spans(0, kSlots)) == 0);
  CHECK(std::memcmp(back.data(), now.data(), now.bytes()) == 0);
  CHECK(d.counters().checksum_failures == 0);
}
