// Tests reclaim, writeback and swap-in (core/page_cache/evict.cc, writeback.cc, swap_in.cc)
// against MemorySwapDevice: tiny frame budgets, byte-for-byte models, held
// I/O (manual completion), injected errors, and threads.
#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "core/page_cache.h"
#include "core/page_cache/page_cache_state.h"
#include "core/page_cache/reclaimer.h"
#include "swapdev/memory_swap_device.h"

namespace tmpfsd {
namespace {

using Bytes = std::vector<std::byte>;
using swapdev::MemorySwapDevice;
constexpr size_t kPage = 4096;

struct Rig {
  MemorySwapDevice* dev = nullptr;  // owned by cache
  std::unique_ptr<PageCache> cache;
};

Rig make_rig(uint64_t frames, uint64_t slots,
             MemorySwapDevice::Completion mode = MemorySwapDevice::Completion::Inline,
             bool background = true, uint64_t max_pages = 0, unsigned min_block_shift = 9,
             bool writeback_copy = false, bool seal = false, bool keeps_pages = false) {
  MemorySwapDevice::Options o;
  o.seal = seal;
  o.keeps_pages = keeps_pages;
  o.slots = slots;
  o.min_block_shift = min_block_shift;
  o.page_size = kPage;
  o.cluster_slots = 64;
  o.completion = mode;
  if (mode == MemorySwapDevice::Completion::Thread) o.delay = std::chrono::microseconds(20);
  auto dev = std::make_unique<MemorySwapDevice>(o);
  Rig r;
  r.dev = dev.get();
  PageCacheConfig c;
  c.page_size = kPage;
  c.memory_bytes = frames * kPage;
  c.max_pages = max_pages;
  c.background_reclaim = background;
  c.writeback_copy = writeback_copy;
  auto pc = PageCache::create(c, std::move(dev));
  REQUIRE(pc);
  r.cache = std::move(pc).value();
  return r;
}

// Returns the status and the bytes read. No Catch macros: called from
// threads (Catch2 assertions are not thread-safe).
std::pair<Status, Bytes> try_read(FilePages& f, uint64_t off, size_t len) {
  Bytes out;
  Status st;
  int calls = 0;
  read_and_wait([&](FilePages::ReadDone d) { f.read(off, len, std::move(d)); },
                [&](Status s, std::span<const iovec> iov) {
                  ++calls;
                  st = s;
                  for (const iovec& v : iov) {
                    auto* p = static_cast<const std::byte*>(v.iov_base);
                    out.insert(out.end(), p, p + v.iov_len);
                  }
                });
  if (calls != 1) st = Errno{EPROTO};
  return {st, out};
}

Bytes read_bytes(FilePages& f, uint64_t off, size_t len) {
  auto [s, b] = try_read(f, off, len);
  REQUIRE(s.is_ok());
  REQUIRE(b.size() == len);
  return b;
}

Bytes pattern(size_t len, uint32_t seed) {
  Bytes b(len);
  std::mt19937 rng(seed);
  for (auto& x : b) x = std::byte(rng() & 0xff);
  if (len) b[0] = std::byte(0x5a);
  return b;
}

// A file and its model.
struct Model {
  Bytes data;
  void write(uint64_t off, const Bytes& b) {
    if (data.size() < off + b.size()) data.resize(off + b.size());
    std::memcpy(data.data() + off, b.data(), b.size());
  }
};

void check_file(FilePages& f, const Model& m, size_t chunk = 3 * kPage) {
  for (uint64_t off = 0; off < m.data.size(); off += chunk) {
    const size_t n = std::min<uint64_t>(chunk, m.data.size() - off);
    Bytes got = read_bytes(f, off, n);
    REQUIRE(std::memcmp(got.data(), m.data.data() + off, n) == 0);
  }
}

struct Capture {
  std::atomic<int> calls{0};
  Status status;
  Bytes bytes;
  FilePages::ReadDone done() {
    return [this](Status s, std::span<const iovec> iov) {
      status = s;
      for (const iovec& v : iov) {
        auto* p = static_cast<const std::byte*>(v.iov_base);
        bytes.insert(bytes.end(), p, p + v.iov_len);
      }
      calls.fetch_add(1);
    };
  }
};

// A read on a manual-completion device: completes I/O until it replies.
Bytes read_manual(Rig& rig, FilePages& f, uint64_t off, size_t len) {
  Capture c;
  f.read(off, len, c.done());
  while (c.calls == 0) rig.dev->complete_pending();
  REQUIRE(c.status.is_ok());
  return c.bytes;
}

// Pages every page out on a manual-completion device (passes, completing
// the writes each time) until all are in swap.
void evict_all(Rig& rig) {
  PageCache& pc = *rig.cache;
  for (int i = 0; i < 10 && pc.stats().pages_swapped < pc.stats().pages_allocated; ++i) {
    ScanControl sc;
    reclaim_pass(pc.state(), sc);
    rig.dev->complete_pending();
  }
  REQUIRE(pc.stats().pages_swapped == pc.stats().pages_allocated);
}

}  // namespace

TEST_CASE("reclaim: 1000 pages through 16 frames read back byte for byte", "[reclaim]") {
  auto rig = make_rig(16, 4096);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  Model m;
  for (uint32_t i = 0; i < 1000; ++i) {
    Bytes b = pattern(kPage, i + 1);
    REQUIRE(f.write(uint64_t{i} * kPage, b).is_ok());
    m.write(uint64_t{i} * kPage, b);
    REQUIRE(pc.stats().frames_used <= 16);
  }
  check_file(f, m);
  PageCacheStats s = pc.stats();
  CHECK(s.frames_used <= 16);
  CHECK(s.writebacks >= 984);
  CHECK(s.swap_ins > 0);
  CHECK(s.pages_allocated == 1000);
  // Everything out: metadata per swapped page.
  pc.shrink(16);
  s = pc.stats();
  CHECK(s.pages_swapped + s.pages_resident == 1000);
  CHECK(s.pages_swapped >= 984);
  // Evicting the swap cache pages cost no I/O: writebacks did not move.
  const uint64_t wb = s.writebacks;
  check_file(f, m);
  pc.shrink(16);
  CHECK(pc.stats().writebacks == wb);
}

TEST_CASE(
    "reclaim: dirty pages are cleaned ahead below a quarter of the frames free, in front of a "
    "device that keeps pages in memory only below a sixteenth",
    "[reclaim]") {
  using namespace std::chrono_literals;
  for (bool keeps : {false, true}) {
    INFO("keeps_pages " << keeps);
    auto rig =
        make_rig(256, 4096, MemorySwapDevice::Completion::Inline, true, 0, 9, false, false, keeps);
    PageCache& pc = *rig.cache;
    FilePages f(pc);
    // 200 of 256 frames: 56 free, under a quarter, over a sixteenth.
    for (uint32_t i = 0; i < 200; ++i)
      REQUIRE(f.write(uint64_t{i} * kPage, pattern(kPage, i + 1)).is_ok());
    auto cleaned = [&] { return pc.stats().background_cleaned; };
    auto wait_for_cleaning = [&] {
      for (int i = 0; i < 200 && cleaned() == 0; ++i) std::this_thread::sleep_for(10ms);
    };
    wait_for_cleaning();
    if (!keeps) {
      CHECK(cleaned() > 0);
      continue;
    }
    std::this_thread::sleep_for(100ms);
    CHECK(cleaned() == 0);
    CHECK(pc.stats().writebacks == 0);
    // 250 of 256: under a sixteenth free, pages go to the device.
    for (uint32_t i = 200; i < 250; ++i)
      REQUIRE(f.write(uint64_t{i} * kPage, pattern(kPage, i + 1)).is_ok());
    for (int i = 0; i < 200 && pc.stats().writebacks == 0; ++i) std::this_thread::sleep_for(10ms);
    CHECK(pc.stats().writebacks > 0);
    for (uint32_t i = 0; i < 250; i += 7)
      CHECK(read_bytes(f, uint64_t{i} * kPage, kPage) == pattern(kPage, i + 1));
  }
}

TEST_CASE("reclaim: metadata bytes per swapped page", "[reclaim]") {
  auto rig = make_rig(64, 70000);
  PageCache& pc = *rig.cache;
  auto f = std::make_unique<FilePages>(pc);
  const uint64_t before = pc.stats().metadata_bytes;
  const uint64_t pages = 65536;  // 256 MiB through 256 KiB of frames
  Bytes b = pattern(16 * kPage, 7);
  for (uint64_t p = 0; p < pages; p += 16) REQUIRE(f->write(p * kPage, b).is_ok());
  pc.shrink(64);
  PageCacheStats s = pc.stats();
  REQUIRE(s.pages_swapped > pages - 64);
  const double per_page = double(s.metadata_bytes - before) / double(pages);
  WARN("metadata bytes per swapped 4 KiB page: " << per_page);
  CHECK(per_page <= 16.0);
  f.reset();
  CHECK(pc.stats().pages_swapped == 0);
  CHECK(pc.stats().swap_slots_used == 0);
}

TEST_CASE("reclaim: partial and page-crossing writes after swap-in", "[reclaim]") {
  auto rig = make_rig(16, 4096);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  Model m;
  const uint64_t size = 200 * kPage;
  Bytes all = pattern(size, 3);
  for (uint64_t off = 0; off < size; off += 8 * kPage) {
    Bytes b(all.begin() + off, all.begin() + off + 8 * kPage);
    REQUIRE(f.write(off, b).is_ok());
  }
  m.write(0, all);
  std::mt19937 rng(11);
  for (int i = 0; i < 500; ++i) {
    pc.shrink(16);  // push everything out often
    const uint64_t off = rng() % size;
    const size_t len = 1 + rng() % (3 * kPage);
    Bytes b = pattern(len, 1000 + i);
    REQUIRE(f.write(off, b).is_ok());
    m.write(off, b);
  }
  check_file(f, m, 5 * kPage + 17);
  // Truncate into a swapped page zeroes its tail for a later extension.
  pc.shrink(16);
  const uint64_t cut = 50 * kPage + 100;
  f.truncate(m.data.size(), cut);
  m.data.resize(cut);
  m.data.resize(52 * kPage);
  check_file(f, m);
  // Punch a hole whose edges fall inside swapped pages.
  pc.shrink(16);
  f.punch_hole(10 * kPage + 5, 3 * kPage);
  std::memset(m.data.data() + 10 * kPage + 5, 0, 3 * kPage);
  check_file(f, m);
}

TEST_CASE(
    "reclaim: sealed swap: two files page out and back, partial rewrites included; slot "
    "images moved on the medium are EIO",
    "[reclaim][seal]") {
  auto rig = make_rig(16, 4096, MemorySwapDevice::Completion::Inline, true, 0, 9, false, true);
  REQUIRE(rig.dev->sealed());
  PageCache& pc = *rig.cache;
  FilePages f1(pc), f2(pc);
  Model m1, m2;
  const uint64_t size = 40 * kPage;
  m1.write(0, pattern(size, 21));
  m2.write(0, pattern(size, 22));
  REQUIRE(f1.write(0, m1.data).is_ok());
  REQUIRE(f2.write(0, m2.data).is_ok());
  std::mt19937 rng(5);
  for (int i = 0; i < 200; ++i) {
    pc.shrink(16);
    FilePages& f = i % 2 ? f1 : f2;
    Model& m = i % 2 ? m1 : m2;
    const uint64_t off = rng() % size;
    Bytes b = pattern(1 + rng() % 700, 500 + i);
    if (off + b.size() > size) b.resize(size - off);
    REQUIRE(f.write(off, b).is_ok());
    m.write(off, b);
  }
  check_file(f1, m1);
  check_file(f2, m2);
  CHECK(pc.stats().partial_writebacks > 0);  // write_blocks, resealed whole
  CHECK(pc.stats().swap_checksum_failures == 0);
  // Out again; no slot holds a page's bytes, and each slot's image moved to
  // the next used slot (same device, same key) reads as EIO, never as
  // another page's bytes.
  pc.shrink(16);
  std::vector<swapdev::SwapSlot> used;
  for (uint64_t s = 0; s < 4096; ++s)
    if (!rig.dev->stored(swapdev::SwapSlot(s)).empty()) used.push_back(swapdev::SwapSlot(s));
  REQUIRE(used.size() >= 40);
  for (auto s : used) {
    auto img = rig.dev->stored(s);
    CHECK(std::search(img.begin(), img.end(), m1.data.begin(), m1.data.begin() + 64) == img.end());
  }
  std::vector<std::vector<std::byte>> images;
  for (auto s : used) images.push_back(rig.dev->stored(s));
  for (size_t i = 0; i < used.size(); ++i)
    rig.dev->overwrite(used[i], images[(i + 1) % used.size()]);
  int eio = 0;
  for (uint64_t p = 0; p < 40; ++p) {
    auto [s1, b1] = try_read(f1, p * kPage, kPage);
    auto [s2, b2] = try_read(f2, p * kPage, kPage);
    eio += (s1.code() == EIO) + (s2.code() == EIO);
    if (s1.is_ok()) CHECK(std::memcmp(b1.data(), m1.data.data() + p * kPage, kPage) == 0);
    if (s2.is_ok()) CHECK(std::memcmp(b2.data(), m2.data.data() + p * kPage, kPage) == 0);
  }
  CHECK(eio > 0);
  CHECK(pc.stats().swap_checksum_failures > 0);
}

TEST_CASE("reclaim: a write during writeback waits and never changes the bytes in flight",
          "[reclaim]") {
  auto rig = make_rig(16, 1024, MemorySwapDevice::Completion::Manual, false);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  Bytes a = pattern(4 * kPage, 1);
  REQUIRE(f.write(0, a).is_ok());
  ScanControl sc;
  reclaim_pass(pc.state(), sc);
  REQUIRE(sc.submitted == 4);
  REQUIRE(rig.dev->pending() > 0);
  Bytes b = pattern(100, 2);
  std::atomic<bool> written{false};
  Status wst;
  std::thread writer([&] {
    wst = f.write(kPage + 10, b);
    written = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_FALSE(written.load());  // waits for the write of page 1
  rig.dev->complete_pending();  // checksums verify: the bytes did not change
  writer.join();
  CHECK(written.load());
  CHECK(wst.is_ok());
  CHECK(pc.stats().writeback_waits >= 1);
  CHECK(pc.stats().writebacks == 4);
  // Page 1 is dirty again; the others are clean in the swap cache. Evict all
  // (complete the rewrite of page 1) and read back.
  evict_all(rig);
  CHECK(pc.stats().pages_swapped == 4);
  std::memcpy(a.data() + kPage + 10, b.data(), b.size());
  CHECK(read_manual(rig, f, 0, 4 * kPage) == a);
  CHECK(rig.dev->counters().checksum_failures == 0);
}

TEST_CASE(
    "reclaim: writeback_copy: a write during writeback copies the page, not the bytes in flight",
    "[reclaim][copy]") {
  auto rig = make_rig(16, 1024, MemorySwapDevice::Completion::Manual, false, 0, 9, true);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  Model m;
  Bytes a = pattern(4 * kPage, 1);
  REQUIRE(f.write(0, a).is_ok());
  m.write(0, a);
  ScanControl sc;
  reclaim_pass(pc.state(), sc);
  REQUIRE(sc.submitted == 4);
  REQUIRE(rig.dev->pending() > 0);
  // Same thread, I/O held: the write cannot wait for it, so it must copy.
  Bytes b = pattern(100, 2);
  REQUIRE(f.write(kPage + 10, b).is_ok());
  m.write(kPage + 10, b);
  Bytes c = pattern(50, 3);
  REQUIRE(f.write(kPage + 3000, c).is_ok());  // the same page again: no second copy
  m.write(kPage + 3000, c);
  PageCacheStats s = pc.stats();
  CHECK(s.writeback_copies == 1);
  CHECK(s.writeback_waits == 0);
  CHECK(s.frames_used == 5);  // the old frame stays with the I/O
  CHECK(read_bytes(f, 0, 4 * kPage) == m.data);
  // The swap writes carry the pages as they were when submitted: the
  // device's checksums (taken at submission) verify and the slot of page 1
  // holds the old bytes.
  rig.dev->complete_pending();
  s = pc.stats();
  CHECK(s.frames_used == 4);
  CHECK(pc.state().writeback_in_flight.load() == 0);
  CHECK(s.swap_cached == 3);      // page 1 is dirty again, without a slot
  CHECK(s.swap_slots_used == 3);  // its slot (old bytes) was freed
  CHECK(rig.dev->counters().checksum_failures == 0);
  // Out and back in: page 1 goes out whole, with the new bytes.
  evict_all(rig);
  REQUIRE(pc.stats().pages_swapped == 4);
  CHECK(read_manual(rig, f, 0, 4 * kPage) == m.data);
  CHECK(rig.dev->counters().checksum_failures == 0);
}

TEST_CASE("reclaim: writeback_copy with no free frame waits for the I/O instead",
          "[reclaim][copy]") {
  auto rig = make_rig(16, 1024, MemorySwapDevice::Completion::Manual, false, 0, 9, true);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  Model m;
  Bytes a = pattern(16 * kPage, 4);
  REQUIRE(f.write(0, a).is_ok());  // every frame
  m.write(0, a);
  ScanControl sc;
  sc.evict = false;
  reclaim_pass(pc.state(), sc);
  REQUIRE(sc.submitted > 0);
  REQUIRE(pc.stats().frames_free == 0);
  // The first page sent: the inactive tail is the oldest page, page 0.
  Bytes b = pattern(10, 5);
  std::atomic<bool> written{false};
  Status wst;
  std::thread writer([&] {
    wst = f.write(5, b);
    written = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_FALSE(written.load());
  rig.dev->complete_pending();
  writer.join();
  REQUIRE(wst.is_ok());
  m.write(5, b);
  PageCacheStats s = pc.stats();
  CHECK(s.writeback_copies == 0);
  CHECK(s.writeback_waits >= 1);
  CHECK(read_bytes(f, 0, 16 * kPage) == m.data);
  CHECK(rig.dev->counters().checksum_failures == 0);
}

TEST_CASE("reclaim: destroying a file with writeback in flight waits for it", "[reclaim]") {
  auto rig = make_rig(16, 1024, MemorySwapDevice::Completion::Manual, false);
  PageCache& pc = *rig.cache;
  auto f = std::make_unique<FilePages>(pc);
  REQUIRE(f->write(0, pattern(8 * kPage, 5)).is_ok());
  ScanControl sc;
  reclaim_pass(pc.state(), sc);
  REQUIRE(sc.submitted == 8);
  std::atomic<bool> gone{false};
  std::thread unlinker([&] {
    f.reset();
    gone = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  CHECK_FALSE(gone.load());
  rig.dev->complete_pending();
  unlinker.join();
  PageCacheStats s = pc.stats();
  CHECK(s.pages_allocated == 0);
  CHECK(s.frames_used == 0);
  CHECK(s.swap_slots_used == 0);
}

TEST_CASE("reclaim: swap-in racing truncate, rewrite and unlink", "[reclaim]") {
  auto rig = make_rig(16, 8192, MemorySwapDevice::Completion::Thread);
  PageCache& pc = *rig.cache;
  for (int round = 0; round < 20; ++round) {
    auto f = std::make_unique<FilePages>(pc);
    const uint64_t size = 64 * kPage;
    Bytes b = pattern(size, round + 1);
    REQUIRE(f->write(0, b).is_ok());
    std::atomic<uint64_t> cur_size{size};
    std::atomic<bool> stop{false};
    std::atomic<int> bad{0};
    std::thread reader([&] {
      std::mt19937 rng(round);
      while (!stop) {
        const uint64_t off = (rng() % 64) * kPage;
        auto [s, got] = try_read(*f, off, kPage);
        if (!s || got.size() != kPage) {
          ++bad;
          continue;
        }
        // Either the original bytes or zeros (truncated and extended).
        const bool orig = std::memcmp(got.data(), b.data() + off, kPage) == 0;
        bool zero = true;
        for (std::byte x : got) zero = zero && x == std::byte{0};
        if (!orig && !zero) ++bad;
      }
    });
    std::mt19937 rng(100 + round);
    for (int i = 0; i < 20; ++i) {
      pc.shrink(16);
      const uint64_t to = (rng() % 64) * kPage;
      f->truncate(cur_size, to);
      cur_size = to;
      f->truncate(to, size);  // growing allocates nothing; reads zeros
      cur_size = size;
    }
    stop = true;
    reader.join();
    CHECK(bad == 0);
    f.reset();  // unlink with pages swapped, cached and in flight
  }
  PageCacheStats s = pc.stats();
  CHECK(s.pages_allocated == 0);
  CHECK(s.pages_swapped == 0);
  CHECK(s.swap_slots_used == 0);
}

TEST_CASE("reclaim: a swap read error is EIO, and the page stays readable later", "[reclaim]") {
  auto rig = make_rig(16, 1024);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  Bytes b = pattern(4 * kPage, 9);
  REQUIRE(f.write(0, b).is_ok());
  pc.shrink(16);
  REQUIRE(pc.stats().pages_swapped == 4);
  rig.dev->inject_errors(1, -EIO);
  auto [s, got] = try_read(f, 0, kPage);
  CHECK(s.code() == EIO);
  CHECK(pc.stats().swap_in_errors == 1);
  // Every page still has its slot: page 0 as a failed swap-in (kept for a
  // retry), pages 1-3 swapped or read ahead into the swap cache.
  CHECK(pc.stats().pages_swapped + pc.stats().swap_cached == 4);
  CHECK(pc.stats().swap_slots_used == 4);
  CHECK(read_bytes(f, 0, 4 * kPage) == b);
  // A write over two whole swapped pages and part of a third whose read
  // fails: EIO, and nothing changes (the whole pages keep their slots).
  pc.shrink(16);
  REQUIRE(pc.stats().pages_swapped == 4);
  rig.dev->inject_errors(1, -EIO);
  CHECK(f.write(0, pattern(2 * kPage + 10, 77)).code() == EIO);
  CHECK(read_bytes(f, 0, 4 * kPage) == b);
  // A checksum mismatch is EIO too, never wrong bytes.
  pc.shrink(16);
  for (uint64_t slot = 0; slot < 1024; ++slot) rig.dev->corrupt(swapdev::SwapSlot(slot));
  for (uint64_t p = 0; p < 4; ++p) {
    auto [s2, g2] = try_read(f, p * kPage, kPage);
    CHECK(s2.code() == EIO);
  }
}

TEST_CASE("reclaim: a failed swap write keeps the page dirty and resident", "[reclaim]") {
  for (int err : {-EIO, -ENOSPC}) {
    auto rig = make_rig(16, 1024, MemorySwapDevice::Completion::Inline, false);
    PageCache& pc = *rig.cache;
    FilePages f(pc);
    Bytes b = pattern(4 * kPage, 4);
    REQUIRE(f.write(0, b).is_ok());
    rig.dev->inject_errors(4, err);
    ScanControl sc;
    reclaim_pass(pc.state(), sc);
    CHECK(sc.submitted == 4);
    PageCacheStats s = pc.stats();
    CHECK(s.writeback_errors == 4);
    CHECK(s.pages_resident == 4);
    CHECK(s.pages_swapped == 0);
    CHECK(s.swap_slots_used == 0);
    CHECK(read_bytes(f, 0, 4 * kPage) == b);
    // Later writeback succeeds.
    pc.shrink(16);
    CHECK(pc.stats().pages_swapped == 4);
    CHECK(read_bytes(f, 0, 4 * kPage) == b);
  }
}

namespace {
// 8 pages written, evicted and read back: every page clean in the swap
// cache (a frame and the slot that holds it).
void swap_cache_8_pages(PageCache& pc, FilePages& f, Model& m) {
  Bytes b = pattern(8 * kPage, 21);
  REQUIRE(f.write(0, b).is_ok());
  m.write(0, b);
  pc.shrink(16);
  REQUIRE(pc.stats().pages_swapped == 8);
  REQUIRE(read_bytes(f, 0, 8 * kPage) == b);
  REQUIRE(pc.stats().swap_cached == 8);
}
}  // namespace

TEST_CASE("reclaim: writeback of partial pages writes only dirty blocks", "[reclaim][partial]") {
  auto rig = make_rig(16, 1024, MemorySwapDevice::Completion::Inline, false);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  Model m;
  swap_cache_8_pages(pc, f, m);
  auto put = [&](uint64_t off, size_t len, uint32_t seed) {
    Bytes b = pattern(len, seed);
    REQUIRE(f.write(off, b).is_ok());
    m.write(off, b);
  };
  put(0 * kPage + 10, 100, 1);    // page 0: block 0
  put(1 * kPage + 1000, 600, 2);  // page 1: blocks 1..3
  put(3 * kPage - 10, 20, 3);     // page 2 block 7, page 3 block 0
  put(4 * kPage + 512, 512, 4);   // page 4: block 1 exactly
  put(5 * kPage, kPage, 5);       // page 5: whole, a fresh slot
  put(6 * kPage + 100, 10, 6);    // page 6: block 0, then...
  put(6 * kPage + 3000, 10, 7);   // ...block 5: two runs
  // Partly rewritten pages keep their slots; page 5 gave its slot up.
  PageCacheStats s = pc.stats();
  CHECK(s.swap_cached == 7);
  CHECK(s.swap_slots_used == 7);
  const swapdev::SwapCounters before = rig.dev->counters();
  pc.shrink(16);
  const swapdev::SwapCounters after = rig.dev->counters();
  s = pc.stats();
  CHECK(s.pages_swapped == 8);
  CHECK(s.writebacks == 8 + 7);
  CHECK(s.partial_writebacks == 6);
  // 1 + 3 + 1 + 1 + 1 + 2 blocks of 512 bytes, and page 5 whole.
  CHECK(after.bytes_written - before.bytes_written == 9 * 512 + kPage);
  CHECK(after.write_requests - before.write_requests == 7);
  CHECK(s.swap_slots_used == 8);
  // The slots hold whole, verified pages: read back through swap-in.
  check_file(f, m);
  CHECK(rig.dev->counters().checksum_failures == 0);
  CHECK(rig.dev->counters().errors == 0);
  // A page rewritten bit by bit until every block is dirty goes whole to a
  // fresh slot.
  for (uint32_t b = 0; b < 8; ++b) put(7 * kPage + b * 512 + 7, 3, 100 + b);
  const swapdev::SwapCounters before2 = rig.dev->counters();
  pc.shrink(16);
  CHECK(rig.dev->counters().bytes_written - before2.bytes_written == kPage);
  CHECK(pc.stats().partial_writebacks == 6);
  check_file(f, m);
}

TEST_CASE("reclaim: partial writeback in the swap file's block size", "[reclaim][partial]") {
  // A file system whose O_DIRECT takes 1 KiB or 4 KiB blocks at least.
  for (unsigned shift : {10u, 12u}) {
    auto rig = make_rig(16, 1024, MemorySwapDevice::Completion::Inline, false, 0, shift);
    PageCache& pc = *rig.cache;
    FilePages f(pc);
    Model m;
    swap_cache_8_pages(pc, f, m);
    Bytes b = pattern(10, 9);
    REQUIRE(f.write(kPage + 600, b).is_ok());  // 512-byte block 1: 1 KiB block 0
    m.write(kPage + 600, b);
    REQUIRE(f.write(2 * kPage + 1020, b).is_ok());  // 512-byte blocks 1 and 2
    m.write(2 * kPage + 1020, b);
    const swapdev::SwapCounters before = rig.dev->counters();
    pc.shrink(16);
    const uint64_t written = rig.dev->counters().bytes_written - before.bytes_written;
    CHECK(written == (shift == 10 ? 1024 + 2048 : 2 * kPage));
    CHECK(pc.stats().partial_writebacks == 2);
    check_file(f, m);
    CHECK(rig.dev->counters().checksum_failures == 0);
  }
}

TEST_CASE("reclaim: a failed partial writeback loses nothing; the page goes whole to a new slot",
          "[reclaim][partial]") {
  for (int err : {-EIO, -ENOSPC}) {
    auto rig = make_rig(16, 1024, MemorySwapDevice::Completion::Inline, false);
    PageCache& pc = *rig.cache;
    FilePages f(pc);
    Model m;
    swap_cache_8_pages(pc, f, m);
    Bytes b = pattern(50, 31);
    REQUIRE(f.write(2 * kPage + 2000, b).is_ok());
    m.write(2 * kPage + 2000, b);
    rig.dev->inject_errors(1, err);
    const swapdev::SwapCounters before = rig.dev->counters();
    // The partial rewrite fails; reclaim goes on and writes the page whole
    // to a new slot (the poisoned one is freed).
    pc.shrink(16);
    PageCacheStats s = pc.stats();
    CHECK(s.writeback_errors == 1);
    CHECK(s.partial_writebacks == 0);
    CHECK(s.pages_swapped == 8);
    CHECK(s.swap_slots_used == 8);
    check_file(f, m);
    CHECK(rig.dev->counters().bytes_written - before.bytes_written == kPage);
    CHECK(rig.dev->counters().checksum_failures == 0);
  }
}

TEST_CASE("reclaim: memory and swap full is ENOSPC, earlier data intact", "[reclaim]") {
  auto rig = make_rig(16, 64);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  Model m;
  uint64_t page = 0;
  Status last;
  for (; page < 200; ++page) {
    Bytes b = pattern(kPage, 50 + page);
    last = f.write(page * kPage, b);
    if (!last) break;
    m.write(page * kPage, b);
  }
  CHECK(last.code() == ENOSPC);
  CHECK(page == 64);  // the swap's slots are the space; frames are a cache
  check_file(f, m);
  // Allocation fails the same way; rewriting existing pages still works.
  CHECK(f.allocate(page * kPage, kPage).code() == ENOSPC);
  Bytes b = pattern(kPage + 7, 999);
  REQUIRE(f.write(3 * kPage + 1, b).is_ok());
  m.write(3 * kPage + 1, b);
  check_file(f, m);
}

TEST_CASE("reclaim: fallocated pages need neither frames nor slots", "[reclaim]") {
  auto rig = make_rig(16, 64);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  REQUIRE(f.allocate(0, 60 * kPage).is_ok());
  CHECK(pc.stats().frames_used == 0);
  CHECK(f.pages() == 60);
  CHECK_FALSE(f.seek_data(0, 60 * kPage).has_value());
  Bytes got = read_bytes(f, 0, 60 * kPage);  // more than 16 frames of zero words
  for (std::byte x : got) REQUIRE(x == std::byte{0});
  REQUIRE(f.write(5 * kPage + 3, pattern(10, 1)).is_ok());
  CHECK(f.seek_data(0, 60 * kPage).value() == 5 * kPage);
  CHECK(f.allocate(0, 70 * kPage).code() == ENOSPC);
}

TEST_CASE("reclaim: threads writing and reading their own files under pressure",
          "[reclaim][threads]") {
  const bool copy = GENERATE(false, true);
  INFO("writeback_copy " << copy);
  auto rig = make_rig(32, 16384, MemorySwapDevice::Completion::Thread, true, 0, 9, copy);
  PageCache& pc = *rig.cache;
  constexpr int kThreads = 4;
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      FilePages f(pc);
      Model m;
      std::mt19937 rng(t * 7919);
      for (int i = 0; i < 300; ++i) {
        const uint64_t off = rng() % (300 * kPage);
        const size_t len = 1 + rng() % (2 * kPage);
        Bytes b = pattern(len, t * 100000 + i);
        if (!f.write(off, b)) {
          ++failures;
          return;
        }
        m.write(off, b);
        if (i % 16 == 0) {
          const uint64_t roff = rng() % m.data.size();
          const size_t rlen = std::min<uint64_t>(1 + rng() % (3 * kPage), m.data.size() - roff);
          auto [s, got] = try_read(f, roff, rlen);
          if (!s || std::memcmp(got.data(), m.data.data() + roff, rlen) != 0) ++failures;
        }
      }
      for (uint64_t off = 0; off < m.data.size(); off += 4 * kPage) {
        const size_t n = std::min<uint64_t>(4 * kPage, m.data.size() - off);
        auto [s, got] = try_read(f, off, n);
        if (!s || std::memcmp(got.data(), m.data.data() + off, n) != 0) ++failures;
      }
    });
  }
  for (auto& th : ts) th.join();
  CHECK(failures == 0);
  PageCacheStats s = pc.stats();
  CHECK(s.pages_allocated == 0);
  CHECK(s.frames_used == 0);
  CHECK(s.swap_slots_used == 0);
}

// ---- asynchronous swap-in and readahead ------------------------------------

// A read callback that copies what it is given and counts its calls; safe to
// run on another thread (no Catch macros).
// Runs `op` on a thread while reads are held on a manual-completion device:
// true when `op` was still blocked after 30 ms (it waits for the I/O). Then
// completes I/O until `op` has returned.
template <class Op>
bool blocks_until_completed(Rig& rig, Op&& op) {
  std::atomic<bool> finished{false};
  std::thread t([&] {
    op();
    finished = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  const bool blocked = !finished.load();
  while (!finished) {
    rig.dev->complete_pending();
    std::this_thread::yield();
  }
  t.join();
  return blocked;
}

TEST_CASE("swap-in: a read of swapped pages returns at once and replies from the completion",
          "[reclaim][async]") {
  auto rig = make_rig(16, 1024, MemorySwapDevice::Completion::Manual, false);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  Bytes a = pattern(4 * kPage, 3);
  REQUIRE(f.write(0, a).is_ok());
  evict_all(rig);
  REQUIRE(pc.stats().pages_swapped == 4);
  // Two reads of overlapping ranges, neither waits: both are parked on the
  // same pages under swap-in (the second through the page wait table).
  Capture first, second;
  f.read(kPage + 100, 2 * kPage, first.done());
  f.read(2 * kPage, kPage, second.done());
  CHECK(first.calls == 0);
  CHECK(second.calls == 0);
  CHECK(rig.dev->pending() > 0);
  rig.dev->complete_pending();
  REQUIRE(first.calls == 1);
  REQUIRE(second.calls == 1);
  CHECK(first.status.is_ok());
  CHECK(first.bytes == Bytes(a.begin() + kPage + 100, a.begin() + 3 * kPage + 100));
  CHECK(second.status.is_ok());
  CHECK(second.bytes == Bytes(a.begin() + 2 * kPage, a.begin() + 3 * kPage));
  CHECK(pc.stats().reads_async >= 1);
  CHECK(pc.state().read_waiters.empty());
  CHECK(read_manual(rig, f, 0, 4 * kPage) == a);
}

TEST_CASE("swap-in: truncate, punch and write wait for a swap-in in flight", "[reclaim][async]") {
  auto rig = make_rig(16, 1024, MemorySwapDevice::Completion::Manual, false);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  Bytes a = pattern(4 * kPage, 4);
  REQUIRE(f.write(0, a).is_ok());
  evict_all(rig);

  // truncate to 1 page while pages 2-3 are being read: it waits; the reader
  // gets the bytes as they were (the read came first).
  Capture r1;
  f.read(2 * kPage, 2 * kPage, r1.done());
  REQUIRE(r1.calls == 0);
  CHECK(blocks_until_completed(rig, [&] { f.truncate(4 * kPage, kPage + 10); }));
  REQUIRE(r1.calls == 1);
  CHECK(r1.status.is_ok());
  CHECK(r1.bytes == Bytes(a.begin() + 2 * kPage, a.end()));
  Bytes want(a.begin(), a.begin() + kPage + 10);
  want.resize(2 * kPage);  // the tail of page 1 reads as zeros
  CHECK(read_manual(rig, f, 0, 2 * kPage) == want);

  // A write into part of a page under swap-in leaves its bytes to the
  // read's completion (the blocking form, FilePages::write, waits for it):
  // the reader, concurrent with the write, gets the page with them.
  evict_all(rig);
  Capture r2;
  f.read(0, kPage, r2.done());
  REQUIRE(r2.calls == 0);
  Status wst;
  CHECK(blocks_until_completed(rig, [&] { wst = f.write(50, pattern(10, 8)); }));
  CHECK(wst.is_ok());
  REQUIRE(r2.calls == 1);
  Bytes p8 = pattern(10, 8);
  std::memcpy(want.data() + 50, p8.data(), p8.size());
  CHECK(r2.bytes == Bytes(want.begin(), want.begin() + kPage));
  CHECK(read_manual(rig, f, 0, 2 * kPage) == want);

  // Destroying the file with a swap-in in flight waits for it too.
  evict_all(rig);
  auto g = std::make_unique<FilePages>(pc);
  REQUIRE(g->write(0, pattern(2 * kPage, 9)).is_ok());
  evict_all(rig);
  Capture r3;
  g->read(0, 2 * kPage, r3.done());
  CHECK(blocks_until_completed(rig, [&] { g.reset(); }));
  CHECK(r3.calls == 1);
  CHECK(r3.bytes == pattern(2 * kPage, 9));
}

namespace {
struct WriteCapture {
  std::atomic<int> calls{0};
  Status status;
  FilePages::WriteDone done() {
    return [this](Status s) {
      status = s;
      calls.fetch_add(1);
    };
  }
};
}  // namespace

TEST_CASE("swap-in: a write into part of a swapped page does not wait for the read",
          "[reclaim][async][write]") {
  auto rig = make_rig(64, 1024, MemorySwapDevice::Completion::Manual, false);
  PageCache& pc = *rig.cache;
  auto f = std::make_unique<FilePages>(pc);
  Model m;
  Bytes a = pattern(6 * kPage, 40);
  REQUIRE(f->write(0, a).is_ok());
  m.write(0, a);
  evict_all(rig);

  // Pages 1 (from byte 100), 2 (whole: needs no read) and 3 (its first 100
  // bytes): returns at once, I/O held; the bytes of 1 and 3 wait.
  Bytes b = pattern(2 * kPage, 41);
  auto w = f->start_write(kPage + 100, b);
  REQUIRE(w);
  REQUIRE(*w != nullptr);
  m.write(kPage + 100, b);
  WriteCapture wc;
  FilePages::when_written(*w, wc.done());
  CHECK(wc.calls == 0);
  CHECK(pc.stats().writes_async == 1);
  // A reader meanwhile waits for pages 1 and 3 and sees the write's bytes.
  Capture r;
  f->read(0, 6 * kPage, r.done());
  CHECK(r.calls == 0);
  rig.dev->complete_pending();
  CHECK(wc.calls == 1);
  CHECK(wc.status.is_ok());
  REQUIRE(r.calls == 1);
  CHECK(r.bytes == m.data);
  // The pages are dirty with a slot (per-block writeback): out and back.
  evict_all(rig);
  CHECK(read_manual(rig, *f, 0, 6 * kPage) == m.data);

  // A second write into a page that already holds a waiting write's bytes
  // waits for it (order kept); both land.
  evict_all(rig);
  Bytes c = pattern(10, 42), d = pattern(20, 43);
  auto w1 = f->start_write(4 * kPage + 5, c);
  REQUIRE(w1);
  REQUIRE(*w1 != nullptr);
  m.write(4 * kPage + 5, c);
  WriteCapture wc1;
  FilePages::when_written(*w1, wc1.done());
  Status st2;
  CHECK(blocks_until_completed(rig, [&] { st2 = f->write(4 * kPage + 10, d); }));
  CHECK(st2.is_ok());
  m.write(4 * kPage + 10, d);
  CHECK(wc1.calls == 1);
  CHECK(read_manual(rig, *f, 0, 6 * kPage) == m.data);

  // A swap read error: the write gets EIO, that page is unchanged, and it
  // reads back once the read succeeds.
  evict_all(rig);
  rig.dev->inject_errors(1, -EIO);
  auto w2 = f->start_write(5 * kPage + 7, pattern(30, 44));
  REQUIRE(w2);
  REQUIRE(*w2 != nullptr);
  WriteCapture wc2;
  FilePages::when_written(*w2, wc2.done());
  rig.dev->complete_pending();
  CHECK(wc2.calls == 1);
  CHECK(wc2.status.code() == EIO);
  CHECK(read_manual(rig, *f, 0, 6 * kPage) == m.data);

  // Truncate and file destruction wait for a pending write's page; the
  // write is replied first.
  evict_all(rig);
  Bytes e = pattern(40, 45);
  auto w3 = f->start_write(2 * kPage + 9, e);
  REQUIRE(w3);
  REQUIRE(*w3 != nullptr);
  m.write(2 * kPage + 9, e);
  WriteCapture wc3;
  FilePages::when_written(*w3, wc3.done());
  // (Into page 2: its tail is zeroed, so truncate needs it.)
  CHECK(blocks_until_completed(rig, [&] { f->truncate(6 * kPage, 2 * kPage + 20); }));
  CHECK(wc3.calls == 1);
  m.data.resize(2 * kPage + 20);
  m.data.resize(3 * kPage);
  CHECK(read_manual(rig, *f, 0, 3 * kPage) == m.data);
  evict_all(rig);
  auto w4 = f->start_write(kPage + 1, pattern(3, 46));
  REQUIRE(w4);
  REQUIRE(*w4 != nullptr);
  WriteCapture wc4;
  FilePages::when_written(*w4, wc4.done());
  CHECK(blocks_until_completed(rig, [&] { f.reset(); }));
  CHECK(wc4.calls == 1);
  CHECK(pc.stats().pages_allocated == 0);
  CHECK(pc.stats().swap_slots_used == 0);
  CHECK(rig.dev->counters().checksum_failures == 0);
}

TEST_CASE("swap-in: a sequential reader gets readahead; a random one does not",
          "[reclaim][async]") {
  auto rig = make_rig(256, 4096);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  const size_t pages = 512;  // twice the frames
  Bytes a = pattern(pages * kPage, 5);
  REQUIRE(f.write(0, a).is_ok());
  pc.shrink(256);
  REQUIRE(pc.stats().pages_swapped >= pages - 8);
  const uint64_t ins_before = pc.stats().swap_ins;
  for (size_t off = 0; off < a.size(); off += 4 * kPage) {
    CHECK(read_bytes(f, off, 4 * kPage) == Bytes(a.begin() + off, a.begin() + off + 4 * kPage));
  }
  PageCacheStats s = pc.stats();
  CHECK(s.readahead_pages > 0);
  CHECK(s.readahead_hits > 0);
  CHECK(s.readahead_hits <= s.readahead_pages);
  CHECK(s.swap_ins - ins_before >= pages - 8);

  // Random single-page reads: no new readahead.
  pc.shrink(256);
  const uint64_t ra = pc.stats().readahead_pages;
  std::mt19937 rng(7);
  for (int i = 0; i < 64; ++i) {
    const uint64_t p = 1 + 2 * (rng() % (pages / 2 - 1));  // odd pages: never adjacent
    CHECK(read_bytes(f, p * kPage, kPage) ==
          Bytes(a.begin() + p * kPage, a.begin() + (p + 1) * kPage));
  }
  CHECK(pc.stats().readahead_pages == ra);
}

TEST_CASE("swap-in: many readers of one swapped file on threads", "[reclaim][async]") {
  auto rig = make_rig(32, 4096, MemorySwapDevice::Completion::Thread);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  const size_t pages = 256;
  Bytes a = pattern(pages * kPage, 6);
  REQUIRE(f.write(0, a).is_ok());
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      std::mt19937 rng(t);
      for (int i = 0; i < 400; ++i) {
        const uint64_t off = rng() % (a.size() - 3 * kPage);
        const size_t len = 1 + rng() % (3 * kPage);
        auto [s, got] = try_read(f, off, len);
        if (!s.is_ok() || got != Bytes(a.begin() + off, a.begin() + off + len)) ++bad;
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(bad == 0);
  CHECK(pc.stats().swap_ins > 0);
  CHECK(pc.state().read_waiters.empty());
}

}  // namespace tmpfsd
