// What only the memory device does: completion on demand, so callers can
// test races.
#include <catch2/catch.hpp>

#include <cstring>
#include <thread>

#include "tests/swapdev/fixtures.h"

using namespace tmpfsd::swapdev;
using namespace tmpfsd::swapdev::test;

TEST_CASE("memory: manual completion holds callbacks until complete_pending", "[memory]") {
  MemorySwapDevice dev({.slots = 64, .completion = MemorySwapDevice::Completion::Manual});
  Pages p(2, 4096);
  p.fill_random(0, 3);
  SlotRun s = dev.allocate(1);
  Latch l;
  dev.write(s.first, p.const_spans(0, 1), l.cb());
  CHECK(l.count() == 0);
  CHECK(dev.pending() == 1);
  CHECK(dev.counters().queue_depth == 1);
  CHECK(dev.complete_pending() == 1);
  REQUIRE(l.count() == 1);
  CHECK(l.errors()[0] == 0);
  dev.read(s.first, p.spans(1, 1), l.cb());
  CHECK(l.count() == 1);
  dev.complete_pending();
  REQUIRE(l.count() == 2);
  CHECK(std::memcmp(p.page(0).data(), p.page(1).data(), 4096) == 0);
}

TEST_CASE("memory: a page changed while its write is in flight reads back as EIO", "[memory]") {
  MemorySwapDevice dev({.slots = 64, .completion = MemorySwapDevice::Completion::Manual});
  Pages p(2, 4096);
  p.fill_random(0, 3);
  SlotRun s = dev.allocate(1);
  Latch l;
  dev.write(s.first, p.const_spans(0, 1), l.cb());
  p.page(0)[10] ^= std::byte{1};  // the bug writeback must not have
  dev.complete_pending();
  dev.read(s.first, p.spans(1, 1), l.cb());
  dev.complete_pending();
  REQUIRE(l.wait(2));
  CHECK(l.errors()[1] == -EIO);
  CHECK(dev.counters().checksum_failures == 1);
}

TEST_CASE("memory: destruction completes what is pending", "[memory]") {
  int ran = 0;
  Pages p(1, 4096);
  {
    MemorySwapDevice dev({.slots = 64, .completion = MemorySwapDevice::Completion::Manual});
    SlotRun s = dev.allocate(1);
    dev.write(s.first, p.const_spans(0, 1), [&](int err) { ran += err == 0; });
  }
  CHECK(ran == 1);
}

TEST_CASE("memory: threaded completion runs callbacks on another thread", "[memory]") {
  MemorySwapDevice dev({.slots = 64, .completion = MemorySwapDevice::Completion::Thread});
  Pages p(1, 4096);
  SlotRun s = dev.allocate(1);
  Latch l;
  std::thread::id where;
  dev.write(s.first, p.const_spans(0, 1), [&](int err) {
    where = std::this_thread::get_id();
    l.cb()(err);
  });
  REQUIRE(l.wait(1));
  CHECK(where != std::this_thread::get_id());
}
