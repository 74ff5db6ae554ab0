// Tests swapdev/zpool.{h,cc}: packing, freeing, the frame bound,
// compaction under churn and the order of the oldest.
#include "swapdev/zpool.h"

#include "counted_pages.h"

#include <algorithm>
#include <map>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

namespace tmpfsd::swapdev {
namespace {

// Stores and returns the handle; fails the test if the store does.
ZHandle put(ZPool& z, const std::vector<std::byte>& data, uint64_t tag) {
  ZHandle h;
  REQUIRE(z.store(data, tag, &h) == 0);
  return h;
}

std::vector<std::byte> object(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<std::byte>(rng());
  return v;
}

std::vector<std::byte> load(const ZPool& z, ZHandle h) {
  std::vector<std::byte> v(z.max_object());
  v.resize(z.load(h, v));
  return v;
}

}  // namespace

TEST_CASE("ZPool: size classes waste little: 2,704-byte slots go three to two frames") {
  CountedPages fp(4096, 16);
  ZPool z(fp, 16, 3072);
  CHECK(z.class_shape(2700) == std::pair<size_t, unsigned>{2704, 2});
  CHECK(z.class_shape(1) == std::pair<size_t, unsigned>{16, 1});
  CHECK(z.class_shape(2048) == std::pair<size_t, unsigned>{2048, 1});
  CHECK(z.class_shape(3072).first == 3072);
  // Three objects of 2,700 bytes: two frames, one of them straddling both.
  std::vector<ZHandle> h;
  for (uint32_t i = 0; i < 3; ++i) h.push_back(put(z, object(2700, i), i));
  CHECK(z.stats().frames == 2);
  CHECK(fp.used() == 2);
  for (uint32_t i = 0; i < 3; ++i) {
    CHECK(load(z, h[i]) == object(2700, i));
    CHECK(z.size(h[i]) == 2700);
    CHECK(z.tag(h[i]) == i);
  }
}

TEST_CASE("ZPool: pages of 2:1 data (2,100 bytes) pack over 1.9 to a frame in long spans") {
  CountedPages fp(4096, 4096);
  ZPool z(fp, 4096, 3072);
  const auto [slot, frames] = z.class_shape(2100);
  CHECK(slot == 2112);
  CHECK(frames > 4);
  CHECK(frames <= ZPool::kMaxSpanFrames);
  std::vector<ZHandle> h;
  for (uint32_t i = 0; i < 1000; ++i) h.push_back(put(z, object(2100, i), i));
  const auto st = z.stats();
  INFO("frames " << st.frames << " spans " << st.spans);
  CHECK(1000.0 / st.frames > 1.9);
  // Objects straddle frames; every one reads back whole.
  for (uint32_t i = 0; i < 1000; i += 7) REQUIRE(load(z, h[i]) == object(2100, i));
  // A freed slot in the middle of a span is the next one taken.
  z.free(h[500]);
  h[500] = put(z, object(2100, 5000), 5000);
  CHECK(z.stats().frames == st.frames);
  CHECK(load(z, h[500]) == object(2100, 5000));
  CHECK(load(z, h[501]) == object(2100, 501));
  for (ZHandle y : h) z.free(y);
  CHECK(fp.used() == 0);
}

TEST_CASE("ZPool: large pages: a span holds at most 65,535 slots, and small objects still fit") {
  CountedPages fp(size_t{4} << 20, 8);  // --page-size 4M
  ZPool z(fp, 8, size_t{3} << 20);
  CHECK(z.max_object() == UINT16_MAX);
  const auto [slot, frames] = z.class_shape(16);
  CHECK(slot == 16);
  CHECK(frames == 1);
  std::vector<ZHandle> h;
  for (uint32_t i = 0; i < 70000; ++i) h.push_back(put(z, object(10, i), i));
  CHECK(z.stats().frames == 2);  // 65,535 a span, not 262,144
  CHECK(load(z, h[0]) == object(10, 0));
  CHECK(load(z, h[69999]) == object(10, 69999));
  for (ZHandle y : h) z.free(y);
  CHECK(fp.used() == 0);
}

TEST_CASE("ZPool: bad sizes are EINVAL; the frame bound is ENOSPC; freeing gives frames back") {
  CountedPages fp(4096, 16);
  ZPool z(fp, 4, 3072);
  ZHandle x;
  CHECK(z.store({}, 0, &x) == -EINVAL);
  CHECK(z.store(object(3073, 1), 0, &x) == -EINVAL);
  // 1,024-byte objects: four to a frame, four frames at most.
  std::vector<ZHandle> h;
  for (uint32_t i = 0; i < 16; ++i) h.push_back(put(z, object(1000, i), i));
  CHECK(z.stats().frames == 4);
  CHECK(z.store(object(1000, 99), 0, &x) == -ENOSPC);
  // The source's own limit counts too: it has no page left.
  {
    fp.set_limit(4);
    ZPool other(fp, 16, 3072);
    CHECK(other.store(object(100, 1), 0, &x) == -ENOSPC);
    fp.set_limit(16);
  }
  for (ZHandle y : h) z.free(y);
  CHECK(z.stats().frames == 0);
  CHECK(z.stats().objects == 0);
  CHECK(fp.used() == 0);
  CHECK_FALSE(z.oldest().valid());
}

TEST_CASE("ZPool: churn keeps every object intact, and compaction gives back the frames") {
  CountedPages fp(4096, 2048);
  ZPool z(fp, 2048, 3072);
  std::mt19937 rng(42);
  std::map<uint32_t, std::pair<ZHandle, size_t>> live;  // seed -> handle, size
  uint32_t seed = 0;
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 400; ++i) {
      const size_t n = 1 + rng() % 3072;
      const ZHandle h = put(z, object(n, seed), seed);
      live[seed++] = {h, n};
    }
    // Free about a third, at random.
    for (auto it = live.begin(); it != live.end();) {
      if (rng() % 3 == 0) {
        z.free(it->second.first);
        it = live.erase(it);
      } else {
        ++it;
      }
    }
  }
  uint64_t bytes = 0;
  for (auto& [s, hn] : live) bytes += hn.second;
  const auto before = z.stats();
  CHECK(before.objects == live.size());
  CHECK(before.object_bytes == bytes);
  const uint64_t freed = z.compact();
  const auto after = z.stats();
  CHECK(freed == before.frames - after.frames);
  CHECK(freed > 0);
  CHECK(after.moved > 0);
  // After compaction each class has at most one partial span: the frames
  // held are within a span per class of what the objects need.
  const uint64_t need = (bytes + 4095) / 4096;
  INFO("objects " << after.objects << " bytes " << bytes << " frames " << after.frames);
  CHECK(after.frames <= need + need / 4 + 96 * ZPool::kMaxSpanFrames);
  CHECK(fp.used() == after.frames);
  for (auto& [s, hn] : live) {
    INFO(s);
    REQUIRE(load(z, hn.first) == object(hn.second, s));
    CHECK(z.tag(hn.first) == s);
  }
  // Metadata is counted, and small beside the data (its vectors keep the
  // high-water mark of the churn above).
  CHECK(after.metadata_bytes > 0);
  CHECK(after.metadata_bytes < bytes / 10);
}

TEST_CASE("ZPool: oldest() follows the order of stores, across frees") {
  CountedPages fp(4096, 16);
  ZPool z(fp, 16, 3072);
  std::vector<ZHandle> h;
  for (uint32_t i = 0; i < 5; ++i) h.push_back(put(z, object(500, i), 100 + i));
  CHECK(z.oldest() == h[0]);
  z.free(h[0]);
  CHECK(z.oldest() == h[1]);
  z.free(h[2]);
  z.free(h[1]);
  CHECK(z.oldest() == h[3]);
  const ZHandle again = put(z, object(10, 9), 9);
  z.free(h[3]);
  z.free(h[4]);
  CHECK(z.oldest() == again);
  CHECK(z.tag(z.oldest()) == 9);
  z.free(again);
  CHECK_FALSE(z.oldest().valid());
}

}  // namespace tmpfsd::swapdev
