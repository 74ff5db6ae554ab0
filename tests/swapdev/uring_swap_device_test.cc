// What only the io_uring device does: the private file (and its fallbacks
// without O_TMPFILE or O_DIRECT), merging, fixed buffers, bouncing, backlog,
// discard, teardown, -EAGAIN and short-transfer resubmission.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <random>
#include <thread>

#include "tests/swapdev/fixtures.h"

using namespace tmpfsd::swapdev;
using namespace tmpfsd::swapdev::test;

TEST_CASE("uring: the swap file is nameless, private and reserved", "[uring]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 8 << 20});
  struct stat st {};
  REQUIRE(::fstat(dev->fd(), &st) == 0);
  CHECK(st.st_nlink == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(st.st_size == 8 << 20);
  CHECK(uint64_t(st.st_blocks) * 512 >= uint64_t(8 << 20));
  CHECK(dev->total_slots() == 2048);
  CHECK(dev->direct_io());
}

TEST_CASE("uring: refuses a tmpfs, a missing directory and a size that does not fit", "[uring]") {
  UringOpenResult r = open_uring_swap_device({.dir = "/dev/shm", .size_bytes = 1 << 20});
  CHECK(r.err == -EINVAL);
  CHECK(!r.device);
  CHECK_THAT(r.error, Catch::Contains("tmpfs"));

  r = open_uring_swap_device({.dir = "/nonexistent/swapdir", .size_bytes = 1 << 20});
  CHECK(r.err == -ENOENT);
  CHECK_THAT(r.error, Catch::Contains("/nonexistent/swapdir"));

  r = open_uring_swap_device({.dir = "/var/tmp", .size_bytes = uint64_t{1} << 50});
  CHECK((r.err == -ENOSPC || r.err == -EFBIG));
  CHECK_THAT(r.error, Catch::Contains("not enough room"));

  r = open_uring_swap_device({.dir = "/var/tmp", .size_bytes = 100});
  CHECK(r.err == -EINVAL);
  r = open_uring_swap_device({.dir = "/var/tmp", .size_bytes = 1 << 20, .page_size = 6000});
  CHECK(r.err == -EINVAL);
}

TEST_CASE("uring: pages evicted together go out as one merged I/O", "[uring]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 16 << 20});
  constexpr int kPages = 32;
  // Clustered allocation: one page at a time, each continuing the last.
  std::vector<SwapSlot> slots;
  SwapSlot hint;
  for (int i = 0; i < kPages; ++i) {
    SlotRun r = dev->allocate(1, hint);
    REQUIRE(r.count == 1);
    slots.push_back(r.first);
    hint = r.first + 1;
  }
  for (int i = 1; i < kPages; ++i) REQUIRE(slots[i] == slots[0] + i);

  Pages src(kPages, 4096), dst(kPages, 4096);
  for (int i = 0; i < kPages; ++i) src.fill_random(i, 31 * i);
  SwapCounters before = dev->counters();
  Latch wl;
  {
    IoBatch batch(*dev);
    std::vector<int> order(kPages);
    for (int i = 0; i < kPages; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), std::mt19937(3));
    for (int i : order) dev->write(slots[i], src.const_spans(i, 1), wl.cb());
    CHECK(dev->counters().ios_submitted == before.ios_submitted);  // plugged: nothing sent yet
  }
  REQUIRE(wl.wait(kPages));
  for (int e : wl.errors()) CHECK(e == 0);
  SwapCounters mid = dev->counters();
  CHECK(mid.ios_submitted - before.ios_submitted == 1);
  CHECK(mid.ios_merged - before.ios_merged == kPages - 1);
  CHECK(mid.multi_page_ios - before.multi_page_ios == 1);

  Latch rl;
  {
    IoBatch batch(*dev);
    for (int i = 0; i < kPages; ++i) dev->read(slots[i], dst.spans(i, 1), rl.cb());
  }
  REQUIRE(rl.wait(kPages));
  for (int e : rl.errors()) CHECK(e == 0);
  CHECK(dev->counters().ios_submitted - mid.ios_submitted == 1);
  CHECK(std::memcmp(src.data(), dst.data(), src.bytes()) == 0);
}

TEST_CASE("uring: pages inside registered memory use fixed buffers", "[uring]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 16 << 20});
  Pages frames(64, 4096);
  REQUIRE(dev->register_memory(frames.data(), frames.bytes()) == 0);
  CHECK(dev->register_memory(frames.data(), frames.bytes()) == -EBUSY);
  SlotRun s = dev->allocate(8);
  REQUIRE(s.count == 8);
  for (int i = 0; i < 8; ++i) frames.fill_random(i, 500 + i);
  REQUIRE(write_sync(*dev, s.first, frames.const_spans(0, 8)) == 0);
  REQUIRE(read_sync(*dev, s.first, frames.spans(32, 8)) == 0);
  CHECK(std::memcmp(frames.page(0).data(), frames.page(32).data(), 8 * 4096) == 0);
  CHECK(dev->counters().fixed_ios == 2);
  // Memory outside the region takes the vectored path.
  Pages other(1, 4096);
  REQUIRE(read_sync(*dev, s.first, other.spans(0, 1)) == 0);
  CHECK(std::memcmp(other.data(), frames.data(), 4096) == 0);
  CHECK(dev->counters().fixed_ios == 2);
}

TEST_CASE("uring: unaligned caller memory is bounced under O_DIRECT", "[uring]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20});
  REQUIRE(dev->direct_io());
  std::vector<std::byte> raw(3 * 4096 + 512);
  std::byte* odd = raw.data() + 512 - reinterpret_cast<uintptr_t>(raw.data()) % 512 + 8;
  std::span<std::byte> page(odd, 4096);
  std::mt19937 rng(9);
  for (auto& b : page) b = std::byte(rng());
  std::vector<std::byte> copy(page.begin(), page.end());
  SlotRun s = dev->allocate(1);
  std::vector<std::span<const std::byte>> w{page};
  REQUIRE(write_sync(*dev, s.first, w) == 0);
  std::memset(odd, 0, 4096);
  std::vector<std::span<std::byte>> r{page};
  REQUIRE(read_sync(*dev, s.first, r) == 0);
  CHECK(std::memcmp(odd, copy.data(), 4096) == 0);
}

TEST_CASE("uring: more requests than the ring holds wait in the backlog", "[uring][mt]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 16 << 20, .queue_depth = 4});
  constexpr int kThreads = 3, kEach = 300;
  Latch l;
  Pages src(kThreads * kEach, 4096);
  std::vector<std::thread> ts;
  std::vector<SwapSlot> slots(kThreads * kEach);
  for (int t = 0; t < kThreads; ++t)
    ts.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) {
        int k = t * kEach + i;
        SlotRun s = dev->allocate(1);
        slots[k] = s.first;
        src.fill_random(k, k);
        dev->write(s.first, src.const_spans(k, 1), l.cb());
      }
    });
  for (auto& t : ts) t.join();
  REQUIRE(l.wait(kThreads * kEach));
  for (int e : l.errors()) REQUIRE(e == 0);
  SwapCounters c = dev->counters();
  CHECK(c.max_queue_depth <= 8);  // CQ entries = 2 x queue depth
  CHECK(c.queue_depth == 0);
  Pages dst(1, 4096);
  for (int k = 0; k < kThreads * kEach; k += 97) {
    REQUIRE(read_sync(*dev, slots[k], dst.spans(0, 1)) == 0);
    CHECK(std::memcmp(dst.data(), src.page(k).data(), 4096) == 0);
  }
}

TEST_CASE("uring: callbacks may submit more I/O from the completion thread", "[uring]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20, .queue_depth = 2});
  Pages p(2, 4096);
  p.fill_random(0, 1);
  SlotRun s = dev->allocate(1);
  Latch l;
  std::thread::id cb_thread;
  dev->write(s.first, p.const_spans(0, 1), [&](int err) {
    REQUIRE(err == 0);
    cb_thread = std::this_thread::get_id();
    dev->read(s.first, p.spans(1, 1), l.cb());  // chained from the callback
  });
  REQUIRE(l.wait(1));
  CHECK(l.errors()[0] == 0);
  CHECK(cb_thread != std::this_thread::get_id());
  CHECK(std::memcmp(p.page(0).data(), p.page(1).data(), 4096) == 0);
}

TEST_CASE("uring: destruction waits for in-flight I/O and runs every callback", "[uring]") {
  std::atomic<int> ran{0};
  Pages src(64, 4096);
  {
    auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20});
    for (int i = 0; i < 64; ++i) {
      SlotRun s = dev->allocate(1);
      dev->write(s.first, src.const_spans(i, 1), [&](int err) { ran += err == 0; });
    }
  }
  CHECK(ran == 64);
}

TEST_CASE("uring: discard punches freed clusters and gives disk space back", "[uring]") {
  constexpr uint64_t kSize = 32 << 20;
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = kSize, .cluster_slots = 64});
  REQUIRE(dev->can_discard());
  auto blocks = [&] {
    struct stat st {};
    REQUIRE(::fstat(dev->fd(), &st) == 0);
    return uint64_t(st.st_blocks) * 512;
  };
  CHECK(blocks() >= kSize);
  // Fill half the device, in 1 MiB runs.
  std::vector<SlotRun> runs;
  Pages src(256, 4096);
  for (int i = 0; i < 256; ++i) src.fill_random(i, i);
  for (int i = 0; i < 16; ++i) {
    SlotRun r = dev->allocate(256);
    while (r.count < 64) r = dev->allocate(256);  // (never: clusters are 64)
    REQUIRE(r.count == 64);
    REQUIRE(write_sync(*dev, r.first, src.const_spans(0, 64)) == 0);
    runs.push_back(r);
  }
  uint64_t before = blocks();
  // Free 12 of the 16 runs: whole clusters.
  for (int i = 0; i < 12; ++i) dev->free(runs[i].first, runs[i].count);
  dev->discard_now();
  uint64_t after = blocks();
  CHECK(before - after >= 12 * 64 * 4096);
  SwapCounters c = dev->counters();
  CHECK(c.discards >= 1);
  CHECK(c.discarded_bytes >= 12 * 64 * 4096);
  // The surviving data is intact and the punched space is usable again.
  Pages dst(64, 4096);
  REQUIRE(read_sync(*dev, runs[13].first, dst.spans(0, 64)) == 0);
  CHECK(std::memcmp(dst.data(), src.data(), 64 * 4096) == 0);
  std::vector<SlotRun> again;
  for (SlotRun r; (r = dev->allocate(64)).count;) again.push_back(r);
  CHECK(dev->counters().slots_used == dev->total_slots());
  REQUIRE(write_sync(*dev, again[0].first, src.const_spans(0, again[0].count)) == 0);
  REQUIRE(read_sync(*dev, again[0].first, dst.spans(0, again[0].count)) == 0);
  CHECK(std::memcmp(dst.data(), src.data(), again[0].count * 4096) == 0);
}

TEST_CASE("uring: the discard thread punches on its own once a batch is waiting", "[uring]") {
  auto dev = open_uring({.dir = "/var/tmp",
                         .size_bytes = 8 << 20,
                         .cluster_slots = 16,
                         .discard_batch = 4,
                         .discard_interval = std::chrono::milliseconds(50)});
  Pages src(16, 4096);
  std::vector<SlotRun> runs;
  for (int i = 0; i < 6; ++i) {
    runs.push_back(dev->allocate(16));
    REQUIRE(write_sync(*dev, runs.back().first, src.const_spans(0, 16)) == 0);
  }
  for (auto& r : runs) dev->free(r.first, r.count);
  for (int i = 0; i < 200 && dev->counters().discarded_bytes < 5 * 16 * 4096; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(dev->counters().discarded_bytes >= 5 * 16 * 4096);
}

TEST_CASE("uring: short transfers are resubmitted until complete", "[uring]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20});
  Pages frames(16, 4096);
  REQUIRE(dev->register_memory(frames.data(), frames.bytes()) == 0);
  Pages src(8, 4096), dst(8, 4096);
  for (int i = 0; i < 8; ++i) src.fill_random(i, 70 + i);
  SlotRun s = dev->allocate(8);
  REQUIRE(s.count == 8);

  // Vectored path: 8 iovecs sent as 4, then 2, then the rest.
  dev->inject_short_transfers(2);
  REQUIRE(write_sync(*dev, s.first, src.const_spans(0, 8)) == 0);
  CHECK(dev->counters().retries == 2);
  REQUIRE(read_sync(*dev, s.first, dst.spans(0, 8)) == 0);
  CHECK(std::memcmp(src.data(), dst.data(), src.bytes()) == 0);

  // Fixed-buffer path: one contiguous range, sent in halves.
  std::memset(dst.data(), 0, dst.bytes());
  dev->inject_short_transfers(3);
  REQUIRE(read_sync(*dev, s.first, frames.spans(0, 8)) == 0);
  CHECK(dev->counters().retries == 5);
  CHECK(std::memcmp(src.data(), frames.data(), src.bytes()) == 0);
  CHECK(dev->counters().checksum_failures == 0);
}

// Requests and units are recycled after completion: a reused one must carry
// nothing over (pages, checksums, bounce buffer, error, callback) from the
// request it served before, whatever the mix of sizes, alignment and errors.
TEST_CASE("uring: recycled requests carry nothing over", "[uring]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 8 << 20});
  REQUIRE(dev->direct_io());
  constexpr uint32_t kRun = 8;
  std::vector<SlotRun> runs;
  for (int i = 0; i < 6; ++i) {
    runs.push_back(dev->allocate(kRun));
    REQUIRE(runs.back().count == kRun);
  }
  Pages src(6 * kRun, 4096), dst(6 * kRun, 4096);
  for (uint32_t i = 0; i < 6 * kRun; ++i) src.fill_random(i, 1000 + i);
  std::vector<std::byte> raw(4096 * 2 + 64);
  std::byte* odd = raw.data() + 8;  // never 4096-aligned with this offset
  if (reinterpret_cast<uintptr_t>(odd) % 4096 == 0) odd += 8;

  for (int round = 0; round < 3; ++round) {
    for (size_t k = 0; k < runs.size(); ++k) {
      // Alternate multi-page aligned writes and single unaligned (bounced) ones.
      if (k % 2 == 0) {
        REQUIRE(write_sync(*dev, runs[k].first, src.const_spans(k * kRun, kRun)) == 0);
      } else {
        for (uint32_t i = 0; i < kRun; ++i) {
          std::memcpy(odd, src.page(k * kRun + i).data(), 4096);
          std::vector<std::span<const std::byte>> w{std::span<const std::byte>(odd, 4096)};
          REQUIRE(write_sync(*dev, runs[k].first + i, w) == 0);
        }
      }
    }
    // A rejected and an injected failure in between.
    std::vector<std::span<const std::byte>> bad{std::span<const std::byte>(src.data(), 100)};
    CHECK(write_sync(*dev, runs[0].first, bad) == -EINVAL);
    dev->inject_errors(1, -EIO);
    CHECK(read_sync(*dev, runs[1].first, dst.spans(0, 1)) == -EIO);
    // Read back the other way round: single pages where writes were whole
    // runs, whole runs (some unaligned) where they were single pages.
    std::memset(dst.data(), 0, 6 * kRun * 4096);
    for (size_t k = 0; k < runs.size(); ++k) {
      if (k % 2 == 0) {
        for (uint32_t i = 0; i < kRun; ++i)
          REQUIRE(read_sync(*dev, runs[k].first + i, dst.spans(k * kRun + i, 1)) == 0);
      } else {
        REQUIRE(read_sync(*dev, runs[k].first, dst.spans(k * kRun, kRun)) == 0);
        std::vector<std::span<std::byte>> r{std::span<std::byte>(odd, 4096)};
        REQUIRE(read_sync(*dev, runs[k].first + 3, r) == 0);
        CHECK(std::memcmp(odd, src.page(k * kRun + 3).data(), 4096) == 0);
      }
    }
    CHECK(std::memcmp(dst.data(), src.data(), 6 * kRun * 4096) == 0);
    for (uint32_t i = 0; i < 6 * kRun; ++i) src.fill_random(i, 7777 * (round + 1) + i);
  }
  // A slot whose write failed reads as no data, even through a reused request.
  dev->inject_errors(1, -EIO);
  CHECK(write_sync(*dev, runs[2].first, src.const_spans(0, 1)) == -EIO);
  CHECK(read_sync(*dev, runs[2].first, dst.spans(0, 1)) == -ENODATA);
  SwapCounters c = dev->counters();
  CHECK(c.checksum_failures == 0);
}

TEST_CASE("uring: write_blocks from registered frames uses one fixed-buffer I/O per run",
          "[uring][write_blocks]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20});
  Pages frames(4, 4096);
  REQUIRE(dev->register_memory(frames.data(), frames.bytes()) == 0);
  SlotRun s = dev->allocate(1);
  frames.fill_random(1, 60);
  REQUIRE(write_sync(*dev, s.first, frames.const_spans(1, 1)) == 0);
  std::vector<std::byte> old(frames.page(1).begin(), frames.page(1).end());
  // 1 KiB blocks, mask 0b1011: two runs (blocks 0-1 and 3).
  std::mt19937 rng(61);
  for (size_t i = 0; i < 2048; ++i) frames.page(1)[i] = std::byte(rng());
  for (size_t i = 3072; i < 4096; ++i) frames.page(1)[i] = std::byte(rng());
  SwapCounters before = dev->counters();
  REQUIRE(write_blocks_sync(*dev, s.first, frames.page(1), 0b1011, 10) == 0);
  SwapCounters after = dev->counters();
  CHECK(after.fixed_ios - before.fixed_ios == 2);
  CHECK(after.ios_submitted - before.ios_submitted == 2);
  CHECK(after.bytes_written - before.bytes_written == 3072);
  CHECK(std::memcmp(stored_in_file(*dev, s.first).data(), frames.page(1).data(), 4096) == 0);
  REQUIRE(read_sync(*dev, s.first, frames.spans(2, 1)) == 0);
  CHECK(std::memcmp(frames.page(2).data(), frames.page(1).data(), 4096) == 0);
  CHECK(std::memcmp(old.data() + 2048, frames.page(2).data() + 2048, 1024) == 0);
}

TEST_CASE("uring: write_blocks with 64 blocks a page, unaligned memory, and a run to the end",
          "[uring][write_blocks]") {
  constexpr size_t kPage = 32768;  // 64 blocks of 512 bytes
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20, .page_size = kPage});
  REQUIRE(dev->direct_io());
  Pages p(3, kPage);
  p.fill_random(0, 70);
  SlotRun s = dev->allocate(1);
  REQUIRE(write_sync(*dev, s.first, p.const_spans(0, 1)) == 0);
  // Every other block below 56 (28 runs of one block), then blocks 56-63:
  // a run that ends with the page.
  const uint64_t mask = 0x5555'5555'5555'5555ull | (uint64_t{0xff} << 56);
  std::memcpy(p.page(1).data(), p.page(0).data(), kPage);
  std::mt19937 rng(71);
  for (unsigned b = 0; b < 64; ++b)
    if (mask >> b & 1)
      for (size_t i = 0; i < 512; ++i) p.page(1)[b * 512 + i] = std::byte(rng());
  // Unaligned under O_DIRECT: goes through a bounce copy.
  std::vector<std::byte> raw(kPage + 64);
  std::byte* odd =
      raw.data() + 8 + (reinterpret_cast<uintptr_t>(raw.data() + 8) % 4096 == 0 ? 8 : 0);
  std::memcpy(odd, p.page(1).data(), kPage);
  SwapCounters before = dev->counters();
  REQUIRE(write_blocks_sync(*dev, s.first, {odd, kPage}, mask, 9) == 0);
  SwapCounters after = dev->counters();
  CHECK(after.ios_submitted - before.ios_submitted == 29);  // 28 single blocks + 56..63
  CHECK(after.bytes_written - before.bytes_written == uint64_t(std::popcount(mask)) * 512);
  REQUIRE(read_sync(*dev, s.first, p.spans(2, 1)) == 0);
  CHECK(std::memcmp(p.page(2).data(), p.page(1).data(), kPage) == 0);
  // All 64: one I/O of the whole page.
  p.fill_random(1, 72);
  before = dev->counters();
  REQUIRE(write_blocks_sync(*dev, s.first, p.page(1), ~uint64_t{0}, 9) == 0);
  CHECK(dev->counters().ios_submitted - before.ios_submitted == 1);
  REQUIRE(read_sync(*dev, s.first, p.spans(2, 1)) == 0);
  CHECK(std::memcmp(p.page(2).data(), p.page(1).data(), kPage) == 0);
}

TEST_CASE("uring: min_block_shift is the smallest block O_DIRECT writes; buffered says 512",
          "[uring][write_blocks]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20});
  REQUIRE(dev->direct_io());
  const unsigned shift = dev->min_block_shift();
  CHECK(shift >= 9);
  CHECK(shift <= 12);
  const size_t block = size_t{1} << shift;
  Pages p(3, 4096);
  p.fill_random(0, 80);
  SlotRun s = dev->allocate(1);
  REQUIRE(write_sync(*dev, s.first, p.const_spans(0, 1)) == 0);
  // The last block of the page alone, at the reported size: the kernel takes it.
  std::memcpy(p.page(1).data(), p.page(0).data(), 4096);
  std::memset(p.page(1).data() + 4096 - block, 0x5a, block);
  const uint64_t mask = uint64_t{1} << ((4096 >> shift) - 1);
  SwapCounters before = dev->counters();
  REQUIRE(write_blocks_sync(*dev, s.first, p.page(1), mask, shift) == 0);
  CHECK(dev->counters().bytes_written - before.bytes_written == block);
  REQUIRE(read_sync(*dev, s.first, p.spans(2, 1)) == 0);
  CHECK(std::memcmp(p.page(2).data(), p.page(1).data(), 4096) == 0);

  auto buffered = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20, .direct_io = false});
  CHECK_FALSE(buffered->direct_io());
  CHECK(buffered->min_block_shift() == 9);
}

namespace {
// Names of create+unlink fallback files left in `dir` (there should be none).
int named_swap_files(const std::string& dir) {
  int n = 0;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) n += std::strncmp(e->d_name, ".tmpfsd-swap-", 13) == 0;
    ::closedir(d);
  }
  return n;
}

void round_trip(UringSwapDevice& dev, uint64_t seed) {
  Pages src(4, 4096), dst(4, 4096);
  for (int i = 0; i < 4; ++i) src.fill_random(i, seed + i);
  SlotRun s = dev.allocate(4);
  REQUIRE(s.count == 4);
  REQUIRE(write_sync(dev, s.first, src.const_spans(0, 4)) == 0);
  REQUIRE(read_sync(dev, s.first, dst.spans(0, 4)) == 0);
  CHECK(std::memcmp(src.data(), dst.data(), src.bytes()) == 0);
  dev.free(s.first, 4);
}
}  // namespace

TEST_CASE("uring: without O_TMPFILE the file is created, unlinked at once, and private",
          "[uring]") {
  int before = named_swap_files("/var/tmp");
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20, .test_no_tmpfile = true});
  struct stat st {};
  REQUIRE(::fstat(dev->fd(), &st) == 0);
  CHECK(st.st_nlink == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(st.st_size == 4 << 20);
  CHECK(named_swap_files("/var/tmp") == before);
  CHECK(dev->direct_io());
  round_trip(*dev, 100);
}

TEST_CASE("uring: O_DIRECT refused at open or at the first write falls back to buffered I/O",
          "[uring]") {
  SECTION("refused at open") {
    auto dev =
        open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20, .test_refuse_direct_open = true});
    CHECK_FALSE(dev->direct_io());
    CHECK((::fcntl(dev->fd(), F_GETFL) & O_DIRECT) == 0);
    round_trip(*dev, 200);
  }
  SECTION("refused at I/O time") {
    auto dev =
        open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20, .test_refuse_direct_io = true});
    CHECK_FALSE(dev->direct_io());
    CHECK((::fcntl(dev->fd(), F_GETFL) & O_DIRECT) == 0);
    round_trip(*dev, 300);
  }
  SECTION("both, without O_TMPFILE either") {
    int before = named_swap_files("/var/tmp");
    auto dev = open_uring({.dir = "/var/tmp",
                           .size_bytes = 4 << 20,
                           .test_no_tmpfile = true,
                           .test_refuse_direct_open = true});
    CHECK_FALSE(dev->direct_io());
    CHECK(named_swap_files("/var/tmp") == before);
    round_trip(*dev, 400);
  }
}

TEST_CASE("uring: -EAGAIN completions are resubmitted until they succeed", "[uring]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20});
  Pages src(8, 4096), dst(8, 4096);
  for (int i = 0; i < 8; ++i) src.fill_random(i, 500 + i);
  SlotRun s = dev->allocate(8);
  REQUIRE(s.count == 8);
  dev->inject_completion_errors(2, -EAGAIN);
  REQUIRE(write_sync(*dev, s.first, src.const_spans(0, 8)) == 0);
  CHECK(dev->counters().retries == 2);
  dev->inject_completion_errors(3, -EAGAIN);
  REQUIRE(read_sync(*dev, s.first, dst.spans(0, 8)) == 0);
  CHECK(dev->counters().retries == 5);
  CHECK(std::memcmp(src.data(), dst.data(), src.bytes()) == 0);
  SwapCounters c = dev->counters();
  CHECK(c.errors == 0);
  CHECK(c.ios_submitted == 2 + 5);
}

TEST_CASE("uring: write_blocks: a run failing in the kernel poisons the slot; -EAGAIN retries",
          "[uring][write_blocks]") {
  auto dev = open_uring({.dir = "/var/tmp", .size_bytes = 4 << 20});
  Pages p(3, 4096);
  p.fill_random(0, 600);
  SlotRun s = dev->allocate(1);
  REQUIRE(write_sync(*dev, s.first, p.const_spans(0, 1)) == 0);
  std::memcpy(p.page(1).data(), p.page(0).data(), 4096);
  const uint64_t mask = 0b1011'0101;  // four runs
  std::mt19937 rng(601);
  for (size_t i = 0; i < 4096; ++i)
    if (mask >> (i / 512) & 1) p.page(1)[i] = std::byte(rng());

  // One of the four runs fails after reaching the kernel.
  dev->inject_completion_errors(1, -EIO);
  CHECK(write_blocks_sync(*dev, s.first, p.page(1), mask, 9) == -EIO);
  CHECK(read_sync(*dev, s.first, p.spans(2, 1)) == -EIO);
  CHECK(dev->counters().errors == 2);

  // A whole write heals it; then -EAGAIN on two runs is retried.
  REQUIRE(write_sync(*dev, s.first, p.const_spans(0, 1)) == 0);
  uint64_t retries = dev->counters().retries;
  dev->inject_completion_errors(2, -EAGAIN);
  REQUIRE(write_blocks_sync(*dev, s.first, p.page(1), mask, 9) == 0);
  CHECK(dev->counters().retries - retries == 2);
  REQUIRE(read_sync(*dev, s.first, p.spans(2, 1)) == 0);
  CHECK(std::memcmp(p.page(2).data(), p.page(1).data(), 4096) == 0);
}

// --persist: a named swap file outlives its device, and a later device on
// it (the same key, the proofs an image carries) reads the slots back.
TEST_CASE("uring: a named swap file is kept and its slots adopted by the next device",
          "[uring][persist]") {
  for (const bool seal : {false, true}) {
    INFO("sealed " << seal);
    char dir[] = "/var/tmp/tmpfsd-named-XXXXXX";
    REQUIRE(::mkdtemp(dir) != nullptr);
    const std::string path = std::string(dir) + "/swap";
    constexpr size_t kPages = 5;
    Pages data(kPages, 4096);
    for (size_t i = 0; i < kPages; ++i) data.fill_random(i, 100 + i);
    std::vector<SwapSlot> slots;
    std::vector<PageProof> proofs(kPages);
    std::vector<std::byte> key;
    uint64_t counter = 1;
    {
      auto dev = open_uring({.dir = dir, .size_bytes = 4 << 20, .seal = seal, .file_name = "swap"});
      struct stat st {};
      REQUIRE(::fstat(dev->fd(), &st) == 0);
      CHECK(st.st_nlink == 1);
      CHECK(st.st_size == 4 << 20);
      for (size_t i = 0; i < kPages; ++i) {
        SlotRun r = dev->allocate(1);
        REQUIRE(r.count == 1);
        slots.push_back(r.first);
        REQUIRE(write_sync(*dev, r.first, data.const_spans(i, 1)) == 0);
        REQUIRE(dev->slot_proof(r.first, &proofs[i]));
      }
      CHECK_FALSE(dev->slot_proof(SwapSlot(1000), &proofs[0]));  // nothing written there
      if (seal) {
        key.resize(Sealer::kKeyBytes);
        dev->sealer()->copy_key(std::span<std::byte, Sealer::kKeyBytes>(key.data(), key.size()));
        counter = dev->sealer()->counter();
      }
    }
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);  // kept
    // The next device on the same file, key and counter.
    auto reopen = [&] {
      return open_uring({.dir = dir,
                         .size_bytes = 4 << 20,
                         .seal = seal,
                         .file_name = "swap",
                         .seal_key = key,
                         .seal_counter = counter});
    };
    {
      auto dev = reopen();
      for (size_t i = 0; i < kPages; ++i) REQUIRE(dev->adopt_slot(slots[i], proofs[i]));
      CHECK_FALSE(dev->adopt_slot(slots[0], proofs[0]));  // taken already
      CHECK(dev->counters().slots_used == kPages);
      Pages back(kPages, 4096);
      for (size_t i = 0; i < kPages; ++i) {
        REQUIRE(read_sync(*dev, slots[i], back.spans(i, 1)) == 0);
        CHECK(std::memcmp(back.page(i).data(), data.page(i).data(), 4096) == 0);
      }
      // A new write never lands on an adopted slot.
      for (int i = 0; i < 64; ++i) {
        SlotRun r = dev->allocate(1);
        REQUIRE(r.count == 1);
        CHECK(std::find(slots.begin(), slots.end(), r.first) == slots.end());
      }
    }
    {
      // A proof that is not the slot's: the read fails, never wrong bytes.
      auto dev = reopen();
      REQUIRE(dev->adopt_slot(slots[0], proofs[1]));
      Pages back(1, 4096);
      CHECK(read_sync(*dev, slots[0], back.spans(0, 1)) == -EIO);
    }
    ::unlink(path.c_str());
    ::rmdir(dir);
  }
}
