// Tests core/page_cache/frame_pool.{h,cc}: the budget, reservations, zeroing and the
// return of freed memory to the OS.
#include "core/page_cache/frame_pool.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>
#include <vector>

#include <sys/mman.h>
#include <catch2/catch.hpp>

namespace tmpfsd {
namespace {

// Resident pages of [p, p + len), by mincore.
size_t resident_pages(std::span<std::byte> r) {
  const size_t ps = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> v((r.size() + ps - 1) / ps);
  REQUIRE(mincore(r.data(), r.size(), v.data()) == 0);
  size_t n = 0;
  for (unsigned char c : v) n += c & 1;
  return n;
}

}  // namespace

TEST_CASE("FramePool: reservations are all or nothing and never exceed the budget") {
  auto pool = FramePool::create(4096, 8);
  REQUIRE(pool);
  FramePool& p = **pool;
  CHECK(p.frames_total() == 8);
  CHECK(p.region().size() == 8 * 4096);

  auto r1 = p.reserve(5);
  REQUIRE(r1);
  CHECK_FALSE(p.reserve(4));  // 3 left
  auto r2 = p.reserve(3);
  REQUIRE(r2);
  CHECK_FALSE(p.reserve(1));
  r2->release();  // untaken frames come back
  auto r3 = p.reserve(3);
  REQUIRE(r3);

  std::vector<Frame*> taken;
  while (r1->left() > 0) {
    auto t = r1->take();
    CHECK(t.zeroed);  // fresh memory
    CHECK(t.frame->owner() == nullptr);
    CHECK(t.frame->bytes().size() == 4096);
    // Inside the region, page aligned, distinct.
    CHECK(t.frame->bytes().data() >= p.region().data());
    CHECK(t.frame->bytes().data() + 4096 <= p.region().data() + p.region().size());
    CHECK((t.frame->bytes().data() - p.region().data()) % 4096 == 0);
    for (Frame* f : taken) CHECK(f != t.frame);
    taken.push_back(t.frame);
  }
  CHECK(p.frames_used() == 5);
  for (Frame* f : taken) p.free(f);
  CHECK(p.frames_used() == 0);
  r3->release();
  CHECK(p.reserve(8));
}

TEST_CASE("FramePool: a reused frame is reported as not zeroed until madvised") {
  auto pool = FramePool::create(4096, 4);
  REQUIRE(pool);
  FramePool& p = **pool;
  auto r = p.reserve(1);
  REQUIRE(r);
  auto t = r->take();
  std::memset(t.frame->bytes().data(), 0xab, 4096);
  p.free(t.frame);

  auto r2 = p.reserve(1);
  REQUIRE(r2);
  auto t2 = r2->take();
  CHECK(t2.frame == t.frame);  // warm frames are reused first
  CHECK_FALSE(t2.zeroed);
  CHECK(t2.frame->bytes()[0] == std::byte{0xab});
  p.free(t2.frame);

  p.trim();
  auto r3 = p.reserve(1);
  REQUIRE(r3);
  auto t3 = r3->take();
  CHECK(t3.zeroed);
  for (std::byte b : t3.frame->bytes()) REQUIRE(b == std::byte{0});
  p.free(t3.frame);
}

TEST_CASE("FramePool: freed frames give their memory back to the OS") {
  constexpr uint64_t kFrames = 4096;  // 16 MiB
  auto pool = FramePool::create(4096, kFrames);
  REQUIRE(pool);
  FramePool& p = **pool;
  CHECK(resident_pages(p.region()) == 0);  // MAP_NORESERVE: nothing touched yet
  auto r = p.reserve(kFrames);
  REQUIRE(r);
  std::vector<Frame*> frames;
  for (uint64_t i = 0; i < kFrames; ++i) {
    Frame* f = r->take().frame;
    std::memset(f->bytes().data(), 1, 4096);
    frames.push_back(f);
  }
  CHECK(resident_pages(p.region()) == kFrames);
  for (Frame* f : frames) p.free(f);
  // All but at most kWarmFrames are madvised without an explicit trim.
  CHECK(resident_pages(p.region()) <= FramePool::kWarmFrames);
  // Batched: one madvise per run of adjacent frames, not one per frame.
  CHECK(p.madvise_calls() <= kFrames / FramePool::kWarmFrames + 1);
  p.trim();
  CHECK(resident_pages(p.region()) == 0);
}

// Polls `cond` for up to 10 s: the prefault thread runs on its own time.
template <class F>
bool eventually(F cond) {
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

TEST_CASE("FramePool: prefaulting keeps a window of cold frames faulted in ahead of take()",
          "[threads]") {
  constexpr uint64_t kFrames = 4096, kWindow = 512;
  auto pool = FramePool::create(4096, kFrames);
  REQUIRE(pool);
  FramePool& p = **pool;
  auto frames = [&](uint64_t first, uint64_t n) {
    return p.region().subspan(first * 4096, n * 4096);
  };
  p.start_prefault(kWindow);
  // Nothing until a frame is taken: an idle pool costs no memory.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(p.frames_prefaulted() == 0);
  CHECK(resident_pages(p.region()) == 0);
  // Then the window after it is faulted in, and nothing beyond.
  auto first = p.reserve(1);
  REQUIRE(first);
  Frame* f0 = first->take().frame;
  REQUIRE(eventually([&] { return p.frames_prefaulted() >= kWindow + 1; }));
  CHECK(p.frames_prefaulted() == kWindow + 1);
  CHECK(resident_pages(frames(0, kWindow + 1)) == kWindow + 1);
  CHECK(resident_pages(frames(kWindow + 1, kFrames - kWindow - 1)) == 0);

  // Taking frames moves the window: 1000 taken, so [0, 1512) get faulted in,
  // all but less than a run of it.
  // The frames still read as zeros and say so, and keep what is written.
  constexpr uint64_t kTaken = 1000;
  auto r = p.reserve(kTaken - 1);
  REQUIRE(r);
  std::vector<Frame*> taken{f0};
  std::memset(f0->bytes().data(), 1, 4096);
  for (uint64_t i = 1; i < kTaken; ++i) {
    auto t = r->take();
    CHECK(t.zeroed);
    for (std::byte b : t.frame->bytes()) REQUIRE(b == std::byte{0});
    std::memset(t.frame->bytes().data(), static_cast<int>(i & 0xff) | 1, 4096);
    taken.push_back(t.frame);
  }
  constexpr uint64_t kAhead = kTaken + kWindow - FramePool::kPrefaultRun + 1;
  REQUIRE(eventually([&] { return p.frames_prefaulted() >= kAhead; }));
  CHECK(resident_pages(frames(0, kAhead)) == kAhead);
  // Never past the window.
  CHECK(p.frames_prefaulted() <= kTaken + kWindow);
  CHECK(resident_pages(frames(kTaken + kWindow, kFrames - kTaken - kWindow)) == 0);
  for (uint64_t i = 0; i < kTaken; ++i) {
    for (std::byte b : taken[i]->bytes()) REQUIRE(b == std::byte(static_cast<int>(i & 0xff) | 1));
  }

  // To the end of the region and no further; the destructor stops the thread.
  auto rest = p.reserve(kFrames - kTaken);
  REQUIRE(rest);
  while (rest->left() > 0) taken.push_back(rest->take().frame);
  REQUIRE(eventually([&] { return p.frames_prefaulted() >= kFrames; }));
  CHECK(p.frames_prefaulted() == kFrames);
  for (Frame* f : taken) p.free(f);
}

TEST_CASE("FramePool: batched madvise is cheaper than one call per frame", "[bench]") {
  constexpr uint64_t kFrames = 16384;  // 64 MiB
  auto pool = FramePool::create(4096, kFrames);
  REQUIRE(pool);
  FramePool& p = **pool;
  auto fill = [&] {
    auto r = p.reserve(kFrames);
    REQUIRE(r);
    std::vector<Frame*> v;
    for (uint64_t i = 0; i < kFrames; ++i) {
      Frame* f = r->take().frame;
      std::memset(f->bytes().data(), 1, 4096);
      v.push_back(f);
    }
    return v;
  };
  using clock = std::chrono::steady_clock;
  auto v = fill();
  auto t0 = clock::now();
  for (Frame* f : v) p.free(f);
  p.trim();
  auto batched = clock::now() - t0;

  v = fill();
  t0 = clock::now();
  for (Frame* f : v) {  // what an unbatched pool would do
    madvise(f->bytes().data(), 4096, MADV_DONTNEED);
  }
  auto single = clock::now() - t0;
  for (Frame* f : v) p.free(f);
  p.trim();
  using us = std::chrono::microseconds;
  WARN("free+madvise of " << kFrames << " frames: batched "
                          << std::chrono::duration_cast<us>(batched).count()
                          << " us, one call per frame "
                          << std::chrono::duration_cast<us>(single).count() << " us");
  CHECK(p.frames_used() == 0);
}

TEST_CASE("FramePool: invalid sizes") {
  CHECK(FramePool::create(4096, uint64_t{1} << 32).code() == EINVAL);
  CHECK(FramePool::create(3000, 1).code() == EINVAL);
  auto empty = FramePool::create(4096, 0);
  REQUIRE(empty);
  CHECK_FALSE((*empty)->reserve(1));
  CHECK((*empty)->reserve(0));
}

}  // namespace tmpfsd
