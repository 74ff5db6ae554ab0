// Tests swapdev/compressed_swap_device.{h,cc}: pages that compress stay in
// the pool and read back byte for byte; the others, and the oldest when the
// pool is full, reach the backing device; frees and rewrites racing a
// write-back in flight; the pool's memory comes back; with no swap file
// (pool only), what does not fit fails with ENOSPC.
#include "swapdev/compressed_swap_device.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "counted_pages.h"
#include "swapdev/memory_swap_device.h"
#include "swapdev/slot_only_device.h"

namespace tmpfsd::swapdev {
namespace {

constexpr size_t kPage = 4096;

std::vector<std::byte> text_page(uint32_t seed) {
  std::vector<std::byte> p(kPage);
  const std::string line = "page " + std::to_string(seed) + ": a line of text that compresses\n";
  for (size_t i = 0; i < kPage; ++i) p[i] = static_cast<std::byte>(line[i % line.size()]);
  return p;
}

std::vector<std::byte> random_page(uint32_t seed) {
  std::vector<std::byte> p(kPage);
  std::mt19937 rng(seed);
  for (auto& b : p) b = static_cast<std::byte>(rng());
  return p;
}

struct Rig {
  explicit Rig(uint64_t pool_pages,
               MemorySwapDevice::Completion mode = MemorySwapDevice::Completion::Inline)
      : pages(kPage, 1 << 20) {
    MemorySwapDevice::Options mo;
    mo.slots = 4096;
    mo.completion = mode;
    auto b = std::make_unique<MemorySwapDevice>(mo);
    backing = b.get();
    CompressedSwapDevice::Options co;
    co.max_pages = pool_pages;
    dev = std::make_unique<CompressedSwapDevice>(std::move(b), co);
    dev->use_pages(&pages);
  }
  SwapSlot slot() {
    SlotRun r = dev->allocate(1);
    REQUIRE(r.count == 1);
    return r.first;
  }
  int put(SwapSlot s, const std::vector<std::byte>& page, uint64_t file = 7) {
    int got = 1;
    const std::span<const std::byte> p = page;
    dev->write(s, {&p, 1}, PageOwner{file, s.value}, [&](int e) { got = e; });
    if (backing_manual) backing->complete_pending();
    dev->wait_until([&] { return got != 1; });
    return got;
  }
  std::vector<std::byte> get(SwapSlot s, int* err = nullptr) {
    std::vector<std::byte> page(kPage);
    int got = 1;
    const std::span<std::byte> p = page;
    dev->read(s, {&p, 1}, PageOwner{7, s.value}, [&](int e) { got = e; });
    if (backing_manual) backing->complete_pending();
    dev->wait_until([&] { return got != 1; });
    if (err) *err = got;
    return page;
  }
  CountedPages pages;  // outlives dev, as the frame pool outlives the device
  MemorySwapDevice* backing;
  std::unique_ptr<CompressedSwapDevice> dev;
  bool backing_manual = false;
};

}  // namespace

TEST_CASE(
    "CompressedSwapDevice: compressible pages stay in memory, others reach the backing device",
    "[zswap]") {
  Rig r(64);
  std::vector<SwapSlot> text, noise;
  for (uint32_t i = 0; i < 20; ++i) {
    text.push_back(r.slot());
    REQUIRE(r.put(text.back(), text_page(i)) == 0);
    noise.push_back(r.slot());
    REQUIRE(r.put(noise.back(), random_page(i)) == 0);
  }
  const SwapCounters c = r.dev->counters();
  CHECK(c.zpool_pages == 20);
  CHECK(c.zpool_stored == 20);
  CHECK(c.zpool_rejects == 20);
  CHECK(c.bytes_written == 20 * kPage);  // only the random pages reached the backing device
  CHECK(c.zpool_bytes < 20 * kPage / 4);
  CHECK(c.zpool_frames == r.pages.used());
  for (uint32_t i = 0; i < 20; ++i) {
    CHECK(r.dev->pooled(text[i]));
    CHECK_FALSE(r.dev->pooled(noise[i]));
    CHECK(r.get(text[i]) == text_page(i));
    CHECK(r.get(noise[i]) == random_page(i));
  }
  CHECK(r.dev->counters().zpool_loads == 20);
  // A pooled slot rewritten with a page that does not compress moves to the
  // backing device; freeing everything gives every frame back.
  REQUIRE(r.put(text[0], random_page(99)) == 0);
  CHECK_FALSE(r.dev->pooled(text[0]));
  CHECK(r.get(text[0]) == random_page(99));
  for (SwapSlot s : text) r.dev->free(s);
  for (SwapSlot s : noise) r.dev->free(s);
  CHECK(r.dev->counters().zpool_pages == 0);
  CHECK(r.pages.used() == 0);
  CHECK(r.dev->counters().slots_used == 0);
}

TEST_CASE(
    "CompressedSwapDevice: a file whose pages do not compress is tried one page in 16 until one "
    "does",
    "[zswap]") {
  Rig r(64);
  constexpr uint32_t kRun = CompressedSwapDevice::kRejectsBeforeSkip;
  constexpr uint32_t kEvery = CompressedSwapDevice::kProbeEvery;
  std::vector<std::pair<SwapSlot, std::vector<std::byte>>> all;
  auto put = [&](std::vector<std::byte> page, uint64_t file) {
    all.emplace_back(r.slot(), std::move(page));
    REQUIRE(r.put(all.back().first, all.back().second, file) == 0);
  };
  for (uint32_t i = 0; i < kRun + 2 * kEvery; ++i) put(random_page(i), 7);
  SwapCounters c = r.dev->counters();
  CHECK(c.zpool_rejects == kRun + 2);
  CHECK(c.zpool_skipped == 2 * kEvery - 2);
  // Another file is tried page by page; same-filled pages are always kept.
  put(text_page(1), 9);
  put(std::vector<std::byte>(kPage), 7);
  c = r.dev->counters();
  CHECK(c.zpool_stored == 2);
  CHECK(c.zpool_skipped == 2 * kEvery - 2);
  // File 7 turns compressible: within kProbeEvery pages a probe finds it,
  // and from then on every page is tried.
  uint32_t before_probe = 0;
  for (; r.dev->counters().zpool_stored == 2; ++before_probe) {
    REQUIRE(before_probe < kEvery);
    put(text_page(100 + before_probe), 7);
  }
  for (uint32_t i = 0; i < 20; ++i) put(text_page(200 + i), 7);
  c = r.dev->counters();
  CHECK(c.zpool_stored == 3 + 20);
  CHECK(c.zpool_skipped == 2 * kEvery - 2 + before_probe - 1);
  // Skipped pages went to the backing device whole, and read back.
  for (auto& [slot, page] : all) REQUIRE(r.get(slot) == page);
}

TEST_CASE("CompressedSwapDevice: same-filled pages cost a word; write_blocks of a pooled page",
          "[zswap]") {
  Rig r(8);
  std::vector<std::byte> zeros(kPage), pattern(kPage);
  const uint64_t w = 0xdeadbeefcafef00dULL;
  for (size_t i = 0; i < kPage; i += 8) std::memcpy(pattern.data() + i, &w, 8);
  const SwapSlot a = r.slot(), b = r.slot();
  REQUIRE(r.put(a, zeros) == 0);
  REQUIRE(r.put(b, pattern) == 0);
  CHECK(r.dev->counters().zpool_same_filled == 2);
  CHECK(r.dev->counters().zpool_bytes == 16);
  CHECK(r.get(a) == zeros);
  CHECK(r.get(b) == pattern);
  // A partial rewrite: the caller hands the whole new page.
  auto page = text_page(5);
  int got = 1;
  r.dev->write_blocks(a, page, PageOwner{7, a.value}, 0b11, 9, [&](int e) { got = e; });
  CHECK(got == 0);
  CHECK(r.get(a) == page);
  CHECK(r.dev->counters().zpool_same_filled == 1);
  r.dev->free(a);
  r.dev->free(b);
  CHECK(r.pages.used() == 0);
}

TEST_CASE(
    "CompressedSwapDevice: a full pool writes its oldest pages on and keeps the newest; nothing "
    "is lost",
    "[zswap]") {
  for (auto mode : {MemorySwapDevice::Completion::Inline, MemorySwapDevice::Completion::Thread}) {
    INFO("backing completion mode " << int(mode));
    Rig r(4, mode);
    std::vector<SwapSlot> s;
    for (uint32_t i = 0; i < 300; ++i) {
      s.push_back(r.slot());
      REQUIRE(r.put(s.back(), text_page(i)) == 0);
      CHECK(r.dev->counters().zpool_frames <= 4);
    }
    r.dev->backing().wait_until([&] { return r.dev->counters().zpool_writebacks > 0; });
    const SwapCounters c = r.dev->counters();
    CHECK(c.zpool_writebacks > 0);
    CHECK(c.zpool_frames <= 4);
    // The newest pages took the room of the oldest.
    CHECK(c.zpool_stored + c.zpool_full == 300);
    if (mode == MemorySwapDevice::Completion::Inline) {
      CHECK(c.zpool_stored == 300);
      CHECK(r.dev->pooled(s.back()));
    }
    CHECK_FALSE(r.dev->pooled(s.front()));
    for (uint32_t i = 0; i < 300; ++i) {
      INFO(i);
      int err = 1;
      CHECK(r.get(s[i], &err) == text_page(i));
      CHECK(err == 0);
    }
    for (SwapSlot x : s) r.dev->free(x);
    r.dev->backing().wait_until([&] { return r.dev->counters().slots_used == 0; });
    CHECK(r.pages.used() == 0);
  }
}

TEST_CASE("CompressedSwapDevice: a free or a rewrite while the page is being written on",
          "[zswap]") {
  Rig r(4, MemorySwapDevice::Completion::Manual);
  r.backing_manual = true;
  // Fill the pool (four frames) with small pages, then one more: the oldest go
  // to the backing device, whose writes wait (Manual).
  std::vector<SwapSlot> s;
  int last = 1;  // the write that found the pool full waits too
  std::vector<std::byte> overflow;
  for (uint32_t i = 0; i < 2000 && r.dev->counters().zpool_full == 0; ++i) {
    s.push_back(r.slot());
    overflow = text_page(i);
    const std::span<const std::byte> p = overflow;
    last = 1;
    r.dev->write(s.back(), {&p, 1}, PageOwner{7, s.back().value}, [&](int e) { last = e; });
  }
  REQUIRE(r.dev->counters().zpool_full > 0);
  REQUIRE(r.backing->pending() > 0);  // write-backs of the oldest, waiting
  // The oldest two are being written on: read one (served from memory),
  // free the other, rewrite a third with a page that goes to the backing
  // device (it must wait for the write-back of that slot).
  REQUIRE(s.size() > CompressedSwapDevice::kWritebackBatch);
  std::vector<std::byte> back(kPage);
  const std::span<std::byte> b = back;
  int read = 1;
  r.dev->read(s[0], {&b, 1}, PageOwner{7, s[0].value}, [&](int e) { read = e; });
  CHECK(read == 0);  // at once, from memory
  CHECK(back == text_page(0));
  r.dev->free(s[1]);
  int got = 1;
  auto fresh = random_page(7);
  const std::span<const std::byte> p = fresh;
  r.dev->write(s[2], {&p, 1}, PageOwner{7, s[2].value}, [&](int e) { got = e; });
  CHECK(got == 1);  // deferred behind the write-back
  while (r.backing->pending() > 0) r.backing->complete_pending();
  CHECK(got == 0);
  CHECK(last == 0);
  CHECK(r.get(s.back()) == overflow);
  CHECK(r.get(s[2]) == fresh);
  CHECK(r.get(s[0]) == text_page(0));
  CHECK_FALSE(r.dev->pooled(s[1]));
  for (size_t i = 0; i < s.size(); ++i)
    if (i != 1) r.dev->free(s[i]);
  CHECK(r.dev->counters().slots_used == 0);
  CHECK(r.pages.used() == 0);
}

TEST_CASE(
    "CompressedSwapDevice pool only: what does not fit fails with ENOSPC; a run of "
    "misses makes allocate() say full until a pooled page is freed",
    "[zswap]") {
  CountedPages pages(kPage, 1 << 20);
  CompressedSwapDevice::Options co;
  co.max_pages = 2;
  co.pool_only = true;
  CompressedSwapDevice dev(std::make_unique<SlotOnlyDevice>(kPage, 1000), co);
  dev.use_pages(&pages);
  auto put = [&](SwapSlot s, const std::vector<std::byte>& page) {
    int got = 1;
    const std::span<const std::byte> p = page;
    dev.write(s, {&p, 1}, PageOwner{7, s.value}, [&](int e) { got = e; });
    REQUIRE(got != 1);  // inline
    return got;
  };
  // Compressible pages are kept and read back.
  const SlotRun a = dev.allocate(1);
  REQUIRE(a.count == 1);
  CHECK(put(a.first, text_page(1)) == 0);
  CHECK(dev.pooled(a.first));
  std::vector<std::byte> back(kPage);
  const std::span<std::byte> b = back;
  int got = 1;
  dev.read(a.first, {&b, 1}, PageOwner{7, a.first.value}, [&](int e) { got = e; });
  CHECK(got == 0);
  CHECK(back == text_page(1));
  // Random pages fail with ENOSPC, and are not in the pool.
  for (unsigned i = 0; i + 1 < CompressedSwapDevice::kMissesBeforeFull; ++i) {
    const SlotRun r = dev.allocate(1);
    REQUIRE(r.count == 1);
    CHECK(put(r.first, random_page(i)) == -ENOSPC);
    CHECK_FALSE(dev.pooled(r.first));
    dev.free(r.first);  // as the page cache does after a failed write
  }
  const SlotRun last = dev.allocate(1);
  REQUIRE(last.count == 1);
  CHECK(put(last.first, random_page(99)) == -ENOSPC);
  dev.free(last.first);
  // kMissesBeforeFull in a row: full, with no I/O tried.
  const SlotRun none = dev.allocate(1);
  CHECK(none.count == 0);
  CHECK(none.err == -ENOSPC);
  // A pooled page freed: room, maybe; allocate() answers again.
  dev.free(a.first);
  CHECK(dev.allocate(1).count == 1);
  CHECK(dev.counters().zpool_pages == 0);
}

}  // namespace tmpfsd::swapdev
