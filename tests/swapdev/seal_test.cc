// The seal (swapdev/seal.h) and sealed devices: pages round-trip, the medium
// holds none of their bytes, and bytes altered, moved, swapped or rolled
// back on the medium read as EIO, never as wrong bytes. The unsealed
// device's checksum still catches a flipped bit.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "swapdev/seal.h"
#include "tests/swapdev/fixtures.h"

using namespace tmpfsd::swapdev;
using namespace tmpfsd::swapdev::test;

namespace {

bool contains(const std::vector<std::byte>& hay, std::span<const std::byte> needle) {
  return std::search(hay.begin(), hay.end(), needle.begin(), needle.end()) != hay.end();
}

std::vector<std::byte> bytes_of(std::span<const std::byte> s) { return {s.begin(), s.end()}; }

}  // namespace

TEST_CASE("Sealer: a page opens only with its binding, version and tag", "[seal]") {
  std::string why;
  auto sealer = Sealer::create(&why);
  INFO(why);
  REQUIRE(sealer);
  Pages p(3, 4096);
  p.fill_random(0, 1);
  SealBinding b{.where = 7, .file = 3, .index = 42};
  SealTag tag;
  REQUIRE(sealer->seal(b, p.page(0), p.page(1), &tag));
  CHECK(b.version != 0);
  CHECK_FALSE(std::equal(p.page(0).begin(), p.page(0).end(), p.page(1).begin()));

  auto try_open = [&](SealBinding with, SealTag t) {
    std::memcpy(p.data() + 2 * 4096, p.page(1).data(), 4096);
    return sealer->open(with, p.page(2), t);
  };
  REQUIRE(try_open(b, tag));
  CHECK(std::equal(p.page(0).begin(), p.page(0).end(), p.page(2).begin()));

  SealBinding other = b;
  other.where = 8;
  CHECK_FALSE(try_open(other, tag));
  other = b;
  other.file = 4;
  CHECK_FALSE(try_open(other, tag));
  other = b;
  other.index = 43;
  CHECK_FALSE(try_open(other, tag));
  other = b;
  other.version = b.version + 1;
  CHECK_FALSE(try_open(other, tag));
  SealTag bad = tag;
  bad[5] ^= std::byte{1};
  CHECK_FALSE(try_open(b, bad));
  p.page(1)[4000] ^= std::byte{0x10};
  CHECK_FALSE(try_open(b, tag));

  // The same page sealed again: a new version, other bytes.
  SealBinding again{.where = 7, .file = 3, .index = 42};
  SealTag tag2;
  Pages q(1, 4096);
  REQUIRE(sealer->seal(again, p.page(0), q.page(0), &tag2));
  CHECK(again.version > b.version);
  CHECK_FALSE(std::equal(q.page(0).begin(), q.page(0).end(), p.page(1).begin()));

  // Another Sealer (another mount) has another key.
  auto other_sealer = Sealer::create(&why);
  REQUIRE(other_sealer);
  CHECK_FALSE(other_sealer->open(again, q.page(0), tag2));
}

TEMPLATE_TEST_CASE("sealed device: pages round-trip and the medium holds none of their bytes",
                   "[seal][device]", SWAPDEV_SEALED_DEVICES) {
  TestType f(64);
  SwapDevice& d = f.d();
  CHECK(d.sealed());
  SlotRun s = d.allocate(4);
  REQUIRE(s.count == 4);
  Pages src(4, 4096), dst(4, 4096);
  for (size_t i = 0; i < 4; ++i) src.fill_random(i, 100 + i);
  const PageOwner owner{.file = 9, .index = 1000};
  Latch l;
  d.write(s.first, src.const_spans(0, 4), owner, l.cb());
  REQUIRE(l.wait(1));
  REQUIRE(l.errors()[0] == 0);
  for (uint32_t i = 0; i < 4; ++i) {
    auto on_medium = f.stored(s.first + i);
    REQUIRE(on_medium.size() == 4096);
    // Not the page, nor any 32-byte piece of any page written.
    for (size_t k = 0; k < 4; ++k)
      for (size_t off = 0; off < 4096; off += 512)
        CHECK_FALSE(contains(on_medium, src.page(k).subspan(off, 32)));
  }
  // Read back page by page (each names its own index) and as one run.
  for (uint32_t i = 0; i < 4; ++i) {
    Latch r;
    const std::span<std::byte> one = dst.page(i);
    d.read(s.first + i, {&one, 1}, owner.page(i), r.cb());
    REQUIRE(r.wait(1));
    CHECK(r.errors()[0] == 0);
  }
  CHECK(std::memcmp(dst.data(), src.data(), 4 * 4096) == 0);
  std::memset(dst.data(), 0, dst.bytes());
  Latch r;
  d.read(s.first, dst.spans(0, 4), owner, r.cb());
  REQUIRE(r.wait(1));
  CHECK(r.errors()[0] == 0);
  CHECK(std::memcmp(dst.data(), src.data(), 4 * 4096) == 0);

  // The same slot read as another file's page, or another index: EIO.
  const uint64_t fails = d.counters().checksum_failures;
  for (PageOwner wrong : {PageOwner{10, 1000}, PageOwner{9, 1001}, PageOwner{}}) {
    Latch w;
    const std::span<std::byte> one = dst.page(0);
    d.read(s.first, {&one, 1}, wrong, w.cb());
    REQUIRE(w.wait(1));
    CHECK(w.errors()[0] == -EIO);
    CHECK(std::all_of(dst.page(0).begin(), dst.page(0).end(),
                      [](std::byte b) { return b == std::byte{0}; }));
  }
  CHECK(d.counters().checksum_failures == fails + 3);
}

TEMPLATE_TEST_CASE(
    "sealed device: a flipped bit, a slot copied over another, two slots swapped "
    "and an old image written back are each EIO",
    "[seal][device]", SWAPDEV_SEALED_DEVICES) {
  TestType f(64);
  SwapDevice& d = f.d();
  SlotRun s = d.allocate(4);
  REQUIRE(s.count == 4);
  Pages src(4, 4096), dst(1, 4096);
  for (size_t i = 0; i < 4; ++i) src.fill_random(i, 7 + i);
  // Same file, index = slot order: only the seal tells the slots apart.
  const PageOwner owner{.file = 5, .index = 0};
  auto write_one = [&](uint32_t i, size_t page) {
    Latch l;
    const std::span<const std::byte> one = src.page(page);
    d.write(s.first + i, {&one, 1}, owner.page(i), l.cb());
    REQUIRE(l.wait(1));
    REQUIRE(l.errors()[0] == 0);
  };
  auto read_one = [&](uint32_t i) {
    Latch l;
    const std::span<std::byte> one = dst.page(0);
    d.read(s.first + i, {&one, 1}, owner.page(i), l.cb());
    REQUIRE(l.wait(1));
    return l.errors()[0];
  };
  for (uint32_t i = 0; i < 4; ++i) write_one(i, i);
  const uint64_t fails = d.counters().checksum_failures;

  SECTION("a flipped bit") {
    f.corrupt(s.first + 0);
    CHECK(read_one(0) == -EIO);
    CHECK(read_one(1) == 0);
    CHECK(d.counters().checksum_failures == fails + 1);
  }
  SECTION("a slot copied over another") {
    f.overwrite(s.first + 1, f.stored(s.first + 0));
    CHECK(read_one(1) == -EIO);
    CHECK(read_one(0) == 0);
    CHECK(std::memcmp(dst.data(), src.page(0).data(), 4096) == 0);
  }
  SECTION("two slots swapped") {
    auto a = f.stored(s.first + 2), b = f.stored(s.first + 3);
    f.overwrite(s.first + 2, b);
    f.overwrite(s.first + 3, a);
    CHECK(read_one(2) == -EIO);
    CHECK(read_one(3) == -EIO);
    CHECK(d.counters().checksum_failures == fails + 2);
  }
  SECTION("an old image written back (rollback)") {
    auto old_image = f.stored(s.first + 0);
    write_one(0, 3);  // the slot's new contents
    REQUIRE(read_one(0) == 0);
    CHECK(std::memcmp(dst.data(), src.page(3).data(), 4096) == 0);
    f.overwrite(s.first + 0, old_image);
    CHECK(read_one(0) == -EIO);
    CHECK(std::all_of(dst.page(0).begin(), dst.page(0).end(),
                      [](std::byte b) { return b == std::byte{0}; }));
  }
  SECTION("the same page rewritten leaves other bytes on the medium") {
    auto first = f.stored(s.first + 0);
    write_one(0, 0);
    CHECK(f.stored(s.first + 0) != first);
    CHECK(read_one(0) == 0);
    CHECK(std::memcmp(dst.data(), src.page(0).data(), 4096) == 0);
  }
}

TEMPLATE_TEST_CASE("sealed device: write_blocks reseals the whole page", "[seal][write_blocks]",
                   SWAPDEV_SEALED_DEVICES) {
  TestType f(64);
  SwapDevice& d = f.d();
  SlotRun s = d.allocate(1);
  REQUIRE(s.count == 1);
  Pages p(3, 4096);
  p.fill_random(0, 1);
  const PageOwner owner{.file = 2, .index = 17};
  Latch w;
  const std::span<const std::byte> first = p.page(0);
  d.write(s.first, {&first, 1}, owner, w.cb());
  REQUIRE(w.wait(1));
  REQUIRE(w.errors()[0] == 0);
  auto old_image = f.stored(s.first);
  // Change one 512-byte block; only it is in the mask.
  std::memcpy(p.page(1).data(), p.page(0).data(), 4096);
  std::memset(p.page(1).data() + 1024, 0xab, 512);
  const uint64_t before = d.counters().bytes_written;
  Latch b;
  d.write_blocks(s.first, p.page(1), owner, uint64_t{1} << 2, 9, b.cb());
  REQUIRE(b.wait(1));
  REQUIRE(b.errors()[0] == 0);
  CHECK(d.counters().bytes_written - before == 4096);  // the whole page, resealed
  Latch r;
  const std::span<std::byte> back = p.page(2);
  d.read(s.first, {&back, 1}, owner, r.cb());
  REQUIRE(r.wait(1));
  CHECK(r.errors()[0] == 0);
  CHECK(std::memcmp(p.page(2).data(), p.page(1).data(), 4096) == 0);
  // The image before the rewrite is now a rollback.
  f.overwrite(s.first, old_image);
  Latch r2;
  d.read(s.first, {&back, 1}, owner, r2.cb());
  REQUIRE(r2.wait(1));
  CHECK(r2.errors()[0] == -EIO);
}

TEMPLATE_TEST_CASE(
    "unsealed device (--seal off): the page is on the medium as it is, and a "
    "flipped bit is EIO by checksum",
    "[seal][device]", MemoryInline, UringDirect) {
  TestType f(64);
  SwapDevice& d = f.d();
  CHECK_FALSE(d.sealed());
  SlotRun s = d.allocate(1);
  REQUIRE(s.count == 1);
  Pages p(2, 4096);
  p.fill_random(0, 3);
  REQUIRE(write_sync(d, s.first, p.const_spans(0, 1)) == 0);
  CHECK(f.stored(s.first) == bytes_of(p.page(0)));  // what the sealed test shows is not so
  const uint64_t fails = d.counters().checksum_failures;
  f.corrupt(s.first);
  CHECK(read_sync(d, s.first, p.spans(1, 1)) == -EIO);
  CHECK(d.counters().checksum_failures == fails + 1);
}

TEST_CASE("sealed uring device: writes under a plug are sealed at the flush and still merge",
          "[seal][uring]") {
  UringSealed f(64);
  SwapDevice& d = f.d();
  SlotRun s = d.allocate(8);
  REQUIRE(s.count == 8);
  Pages src(8, 4096), dst(8, 4096);
  for (size_t i = 0; i < 8; ++i) src.fill_random(i, 40 + i);
  const PageOwner owner{.file = 3, .index = 8};
  Latch l;
  const uint64_t before = d.counters().ios_submitted;
  {
    IoBatch plug(d);
    for (uint32_t i = 0; i < 8; ++i) {
      const std::span<const std::byte> one = src.page(i);
      d.write(s.first + i, {&one, 1}, owner.page(i), l.cb());
    }
    CHECK(d.counters().ios_submitted == before);  // queued, not yet sealed nor sent
  }
  REQUIRE(l.wait(8));
  for (int e : l.errors()) CHECK(e == 0);
  CHECK(d.counters().ios_submitted - before == 1);  // the eight merged into one I/O
  for (uint32_t i = 0; i < 8; ++i) {
    auto img = f.stored(s.first + i);
    CHECK_FALSE(std::equal(img.begin(), img.end(), src.page(i).begin()));
  }
  Latch r;
  d.read(s.first, dst.spans(0, 8), owner, r.cb());
  REQUIRE(r.wait(1));
  CHECK(r.errors()[0] == 0);
  CHECK(std::memcmp(dst.data(), src.data(), 8 * 4096) == 0);
}

TEST_CASE(
    "sealed uring device: a large read is opened in chunks by several threads, and one bad "
    "page fails it whole",
    "[seal][uring]") {
  UringSealed f(256);
  SwapDevice& d = f.d();
  SlotRun s = d.allocate(128);
  REQUIRE(s.count == 128);
  Pages src(128, 4096), dst(128, 4096);
  for (size_t i = 0; i < 128; ++i) src.fill_random(i, 900 + i);
  const PageOwner owner{.file = 4, .index = 0};
  Latch w;
  d.write(s.first, src.const_spans(0, 128), owner, w.cb());
  REQUIRE(w.wait(1));
  REQUIRE(w.errors()[0] == 0);
  // Two reads at once, each long enough for every opener to take a chunk.
  Latch r;
  d.read(s.first, dst.spans(0, 64), owner, r.cb());
  d.read(s.first + 64, dst.spans(64, 64), owner.page(64), r.cb());
  REQUIRE(r.wait(2));
  for (int e : r.errors()) CHECK(e == 0);
  CHECK(std::memcmp(dst.data(), src.data(), 128 * 4096) == 0);

  // A flipped bit in the last page: the whole read is EIO and zeroed.
  f.corrupt(s.first + 127);
  std::memset(dst.data(), 0xaa, dst.bytes());
  Latch bad;
  d.read(s.first, dst.spans(0, 128), owner, bad.cb());
  REQUIRE(bad.wait(1));
  CHECK(bad.errors()[0] == -EIO);
  CHECK(std::all_of(dst.data(), dst.data() + dst.bytes(),
                    [](std::byte b) { return b == std::byte{0}; }));
}

TEST_CASE("sealed uring device: a flush of many plugged writes seals them on several threads",
          "[seal][uring]") {
  UringSealed f(256);
  SwapDevice& d = f.d();
  SlotRun s = d.allocate(96);
  REQUIRE(s.count == 96);
  Pages src(96, 4096), dst(96, 4096);
  for (size_t i = 0; i < 96; ++i) src.fill_random(i, 500 + i);
  const PageOwner owner{.file = 6, .index = 0};
  Latch l;
  {
    IoBatch plug(d);
    for (uint32_t i = 0; i < 96; ++i) {
      const std::span<const std::byte> one = src.page(i);
      d.write(s.first + i, {&one, 1}, owner.page(i), l.cb());
    }
  }
  REQUIRE(l.wait(96));
  for (int e : l.errors()) CHECK(e == 0);
  for (uint32_t i = 0; i < 96; i += 19) {
    auto img = f.stored(s.first + i);
    CHECK_FALSE(std::equal(img.begin(), img.end(), src.page(i).begin()));
  }
  Latch r;
  d.read(s.first, dst.spans(0, 96), owner, r.cb());
  REQUIRE(r.wait(1));
  CHECK(r.errors()[0] == 0);
  CHECK(std::memcmp(dst.data(), src.data(), 96 * 4096) == 0);
}
