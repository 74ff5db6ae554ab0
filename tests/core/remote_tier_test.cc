// The page cache over a TieredSwapDevice (core/page_cache with
// swapdev/tiered_swap_device.h): pages evicted while the pool is healthy
// become remote places, read back byte for byte, leave the pool with
// truncate; with the pool gone, new pages fall back to the swap file and
// only the pages that were in the pool read as EIO. Real memcached on
// loopback (tests/swapdev/memcached_server.h); the swap file is a
// MemorySwapDevice.
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "core/page_cache.h"
#include "core/page_cache/page_cache_state.h"
#include "swapdev/memory_swap_device.h"
#include "swapdev/tiered_swap_device.h"
#include "tests/swapdev/memcached_server.h"

namespace tmpfsd {
namespace {

using Bytes = std::vector<std::byte>;
using swapdev::test::MemcachedServer;
constexpr size_t kPage = 4096;

struct TierRig {
  swapdev::TieredSwapDevice* dev = nullptr;  // owned by cache
  std::unique_ptr<PageCache> cache;
};

TierRig make_tier_rig(const MemcachedServer& srv, uint64_t frames, uint64_t file_slots,
                      uint64_t remote_slots, bool local_copy = false) {
  swapdev::MemorySwapDevice::Options fo;
  fo.slots = file_slots;
  fo.cluster_slots = 64;
  fo.seal = true;
  fo.completion = swapdev::MemorySwapDevice::Completion::Thread;
  swapdev::RemoteOptions ro;
  ro.servers.push_back({"127.0.0.1", srv.port()});
  ro.slots = remote_slots;
  ro.timeout = std::chrono::milliseconds(300);
  ro.local_copy = local_copy;
  std::string why;
  auto remote = swapdev::RemoteStore::create(ro, &why);
  INFO(why);
  REQUIRE(remote);
  auto dev = std::make_unique<swapdev::TieredSwapDevice>(
      std::make_unique<swapdev::MemorySwapDevice>(fo), std::move(remote));
  TierRig r;
  r.dev = dev.get();
  PageCacheConfig c;
  c.page_size = kPage;
  c.memory_bytes = frames * kPage;
  auto pc = PageCache::create(c, std::move(dev));
  REQUIRE(pc);
  r.cache = std::move(pc).value();
  return r;
}

Bytes pattern(uint32_t seed) {
  Bytes b(kPage);
  std::mt19937 rng(seed);
  for (auto& x : b) x = std::byte(rng() & 0xff);
  return b;
}

std::pair<Status, Bytes> read_page(FilePages& f, uint64_t page) {
  Bytes out;
  Status st;
  read_and_wait([&](FilePages::ReadDone d) { f.read(page * kPage, kPage, std::move(d)); },
                [&](Status s, std::span<const iovec> iov) {
                  st = s;
                  for (const iovec& v : iov) {
                    auto* p = static_cast<const std::byte*>(v.iov_base);
                    out.insert(out.end(), p, p + v.iov_len);
                  }
                });
  return {st, out};
}

uint64_t pages_of_kind(FilePages& f, uint64_t pages, PageKind kind) {
  std::vector<PageRun> runs(pages + 1);
  size_t n = 0;
  f.where(0, pages, runs, &n);
  uint64_t total = 0;
  for (size_t i = 0; i < n; ++i)
    if (runs[i].kind == kind) total += runs[i].pages;
  return total;
}

}  // namespace

TEST_CASE("remote tier: pages go to the pool, come back, and leave it with truncate", "[remote]") {
  MemcachedServer srv;
  REQUIRE(srv.ready());
  auto rig = make_tier_rig(srv, 16, 1024, 256);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  constexpr uint32_t kPages = 200;
  for (uint32_t i = 0; i < kPages; ++i) REQUIRE(f.write(uint64_t{i} * kPage, pattern(i)).is_ok());
  pc.shrink(16);
  PageCacheStats s = pc.stats();
  CHECK(s.remote_pages > 0);
  CHECK(s.remote_bytes == s.remote_pages * kPage);
  // Sets are pipelined: a writeback pass costs a round trip per window.
  CHECK(s.remote_round_trips > 0);
  CHECK(s.remote_round_trips < s.remote_pages);
  CHECK(pages_of_kind(f, kPages, PageKind::kRemote) > 100);
  for (uint32_t i = 0; i < kPages; ++i) {
    auto [st, b] = read_page(f, i);
    REQUIRE(st.is_ok());
    REQUIRE(b == pattern(i));
  }
  CHECK(pc.stats().remote_bytes_read > 0);
  CHECK(pc.stats().remote_seal_failures == 0);
  pc.shrink(16);
  f.truncate(uint64_t{kPages} * kPage, 0);
  for (int i = 0; i < 200 && pc.stats().remote_pages != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(pc.stats().remote_pages == 0);
  CHECK(pc.stats().swap_slots_used == 0);
}

TEST_CASE("remote tier: beyond --remote-size and with the server gone, pages go to the file",
          "[remote]") {
  MemcachedServer srv;
  REQUIRE(srv.ready());
  auto rig = make_tier_rig(srv, 16, 2048, 64);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  for (uint32_t i = 0; i < 300; ++i) REQUIRE(f.write(uint64_t{i} * kPage, pattern(i)).is_ok());
  pc.shrink(16);
  PageCacheStats s = pc.stats();
  CHECK(s.remote_pages <= 64);
  CHECK(s.remote_fallbacks > 0);
  CHECK(pages_of_kind(f, 300, PageKind::kSwapped) > 0);
  const uint64_t in_pool = pages_of_kind(f, 300, PageKind::kRemote);
  CHECK(in_pool > 0);

  srv.kill();
  // New pages go to the file; the daemon goes on.
  for (uint32_t i = 300; i < 600; ++i) REQUIRE(f.write(uint64_t{i} * kPage, pattern(i)).is_ok());
  pc.shrink(16);
  uint64_t eio = 0;
  for (uint32_t i = 0; i < 600; ++i) {
    auto [st, b] = read_page(f, i);
    if (st.is_ok()) {
      REQUIRE(b == pattern(i));
    } else {
      CHECK(st.code() == EIO);
      ++eio;
    }
  }
  WARN("the server killed: " << eio << " of 600 pages EIO (" << in_pool
                             << " were in the pool), the rest read back");
  CHECK(eio == in_pool);  // exactly the pages whose only copy died
  CHECK(pc.stats().remote_failures > 0);
}

TEST_CASE("remote tier with local_copy: the server killed, every page reads back from its copy",
          "[remote]") {
  MemcachedServer srv;
  REQUIRE(srv.ready());
  auto rig = make_tier_rig(srv, 16, 2048, 256, /*local_copy=*/true);
  PageCache& pc = *rig.cache;
  FilePages f(pc);
  constexpr uint32_t kPages = 300;
  for (uint32_t i = 0; i < kPages; ++i) REQUIRE(f.write(uint64_t{i} * kPage, pattern(i)).is_ok());
  pc.shrink(16);
  PageCacheStats s = pc.stats();
  const uint64_t in_pool = pages_of_kind(f, kPages, PageKind::kRemote);
  CHECK(in_pool > 200);
  CHECK(s.remote_local_copies == s.remote_pages);  // the file had room for every one

  srv.kill();
  for (uint32_t i = 0; i < kPages; ++i) {
    auto [st, b] = read_page(f, i);
    REQUIRE(st.is_ok());
    REQUIRE(b == pattern(i));
  }
  CHECK(pc.stats().remote_local_reads >= in_pool);
  // Truncated, the pages leave the pool and their copies the file.
  f.truncate(uint64_t{kPages} * kPage, 0);
  CHECK(pc.stats().remote_local_copies == 0);
  CHECK(pc.stats().swap_slots_used == 0);
}

}  // namespace tmpfsd
