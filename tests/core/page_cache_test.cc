// Tests FilePages (core/page_cache.h) against an in-memory model of a tmpfs file.
#include "core/page_cache.h"

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "core/page_cache/page_cache_state.h"
#include "core/page_cache/pmap.h"

namespace tmpfsd {
namespace {

using Bytes = std::vector<std::byte>;

std::unique_ptr<PageCache> make_cache(uint64_t memory_bytes, uint64_t max_pages = 0,
                                      size_t page_size = 4096) {
  auto r = PageCache::create({page_size, memory_bytes, max_pages});
  REQUIRE(r);
  return std::move(r).value();
}

// Reads through the zero-copy interface and copies what the iovecs cover.
Bytes read_bytes(FilePages& f, uint64_t off, size_t len) {
  Bytes out;
  int calls = 0;
  read_and_wait([&](FilePages::ReadDone d) { f.read(off, len, std::move(d)); },
                [&](Status s, std::span<const iovec> iov) {
                  ++calls;
                  REQUIRE(s.is_ok());
                  for (const iovec& v : iov) {
                    auto* p = static_cast<const std::byte*>(v.iov_base);
                    out.insert(out.end(), p, p + v.iov_len);
                  }
                });
  REQUIRE(calls == 1);
  REQUIRE(out.size() == len);
  return out;
}

Bytes pattern(size_t len, uint32_t seed) {
  Bytes b(len);
  std::mt19937 rng(seed);
  for (auto& x : b) x = std::byte(rng() & 0xff);
  // Never all zeros, so a lost write cannot pass for a hole.
  if (len) b[0] = std::byte(0x5a);
  return b;
}

Status write_bytes(FilePages& f, uint64_t off, const Bytes& b) { return f.write(off, b); }

bool all_zero(const Bytes& b) {
  for (std::byte x : b)
    if (x != std::byte{0}) return false;
  return true;
}

// The model: the file's bytes up to its size, and which pages exist and are
// "data" for SEEK_DATA (written) -- kernel tmpfs semantics.
struct Model {
  explicit Model(size_t page_size) : ps(page_size) {}
  size_t ps;
  uint64_t size = 0;
  Bytes bytes;               // bytes.size() == size
  std::set<uint64_t> pages;  // existing pages (may lie past size: KEEP_SIZE)
  std::set<uint64_t> data;   // written pages (subset of pages)

  void write(uint64_t off, const Bytes& b) {
    if (b.empty()) return;
    if (off + b.size() > size) {
      size = off + b.size();
      bytes.resize(size);
    }
    std::memcpy(bytes.data() + off, b.data(), b.size());
    for (uint64_t p = off / ps; p <= (off + b.size() - 1) / ps; ++p) {
      pages.insert(p);
      data.insert(p);
    }
  }
  void truncate(uint64_t n) {
    if (n < size) {
      uint64_t first_gone = (n + ps - 1) / ps;
      pages.erase(pages.lower_bound(first_gone), pages.end());
      data.erase(data.lower_bound(first_gone), data.end());
    }
    bytes.resize(n);  // growing: zeros
    size = n;
  }
  void punch(uint64_t off, uint64_t len) {
    if (len == 0) return;
    uint64_t end = off + len;
    for (uint64_t i = off; i < std::min<uint64_t>(end, size); ++i) bytes[i] = std::byte{0};
    uint64_t fw = (off + ps - 1) / ps, ew = end / ps;
    for (uint64_t p = fw; p < ew; ++p) {
      pages.erase(p);
      data.erase(p);
    }
  }
  void allocate(uint64_t off, uint64_t len, bool keep_size) {
    // tmpfs: pages that existed before become data; new ones do not.
    for (uint64_t p = off / ps; p < (off + len + ps - 1) / ps; ++p) {
      if (!pages.insert(p).second) data.insert(p);
    }
    if (!keep_size && off + len > size) {
      size = off + len;
      bytes.resize(size);
    }
  }
  std::optional<uint64_t> seek_data(uint64_t off) const {
    if (off >= size) return std::nullopt;
    auto it = data.lower_bound(off / ps);
    if (it == data.end() || *it * ps >= size) return std::nullopt;
    return std::max(off, *it * ps);
  }
  std::optional<uint64_t> seek_hole(uint64_t off) const {
    if (off >= size) return std::nullopt;
    uint64_t p = off / ps;
    while (data.count(p)) ++p;
    return std::min(size, std::max(off, p * ps));
  }
};

void check_against(FilePages& f, const Model& m, std::mt19937& rng) {
  REQUIRE(read_bytes(f, 0, m.size) == m.bytes);
  REQUIRE(f.pages() == m.pages.size());
  for (int i = 0; i < 8; ++i) {
    uint64_t off = m.size ? rng() % (m.size + m.ps) : rng() % m.ps;
    REQUIRE(f.seek_data(off, m.size) == m.seek_data(off));
    REQUIRE(f.seek_hole(off, m.size) == m.seek_hole(off));
  }
  if (m.size) {  // a random sub-range too
    uint64_t off = rng() % m.size;
    size_t len = rng() % (m.size - off + 1);
    REQUIRE(read_bytes(f, off, len) == Bytes(m.bytes.begin() + off, m.bytes.begin() + off + len));
  }
}

void random_ops(size_t page_size, uint32_t seed) {
  auto cache = make_cache(64 << 20, 0, page_size);
  std::mt19937 rng(seed);
  Model m(page_size);
  {
    FilePages f(*cache);
    const uint64_t span = 40 * page_size;
    for (int op = 0; op < 600; ++op) {
      const int kind = rng() % 10;
      if (kind < 5) {
        uint64_t off = rng() % span;
        size_t len = rng() % 3 == 0 ? rng() % (3 * page_size) : rng() % 200;
        Bytes b = pattern(len, rng());
        REQUIRE(write_bytes(f, off, b).is_ok());
        m.write(off, b);
      } else if (kind < 7) {
        uint64_t n = rng() % span;
        f.truncate(m.size, n);
        m.truncate(n);
      } else if (kind < 9) {
        uint64_t off = rng() % span;
        uint64_t len = rng() % (4 * page_size);
        f.punch_hole(off, len);
        m.punch(off, len);
      } else {
        uint64_t off = rng() % span;
        uint64_t len = 1 + rng() % (3 * page_size);
        bool keep = rng() % 2;
        REQUIRE(f.allocate(off, len).is_ok());
        m.allocate(off, len, keep);
      }
      check_against(f, m, rng);
      auto st = cache->stats();
      REQUIRE(st.pages_allocated == m.pages.size());
      REQUIRE(st.frames_used == m.pages.size());
      REQUIRE(st.pages_resident == m.pages.size());
    }
  }
  auto st = cache->stats();
  CHECK(st.frames_used == 0);
  CHECK(st.pages_allocated == 0);
}

}  // namespace

TEST_CASE("PageCache: create validates the page size") {
  CHECK(PageCache::create({4096, 1 << 20, 0}));
  CHECK(PageCache::create({65536, 1 << 20, 0}));
  CHECK(PageCache::create({2048, 1 << 20, 0}).code() == EINVAL);
  CHECK(PageCache::create({12288, 1 << 20, 0}).code() == EINVAL);
  auto c = make_cache(10 * 4096 + 100);
  CHECK(c->page_size() == 4096);
  CHECK(c->stats().frames_total == 10);
}

TEST_CASE("PageCache: random writes, truncates, punches and allocates match the model") {
  SECTION("4 KiB pages") {
    random_ops(4096, 1);
    random_ops(4096, 2);
  }
  SECTION("16 KiB pages") { random_ops(16384, 3); }
  SECTION("64 KiB pages") { random_ops(65536, 4); }
}

TEST_CASE("PageCache: holes read as zeros, writes past EOF leave a hole") {
  auto cache = make_cache(1 << 20);
  FilePages f(*cache);
  CHECK(all_zero(read_bytes(f, 0, 100000)));
  Bytes b = pattern(10, 7);
  REQUIRE(f.write(3 * 4096 + 5, b).is_ok());
  CHECK(f.pages() == 1);
  Bytes r = read_bytes(f, 0, 3 * 4096 + 15);
  CHECK(all_zero(Bytes(r.begin(), r.begin() + 3 * 4096 + 5)));
  CHECK(Bytes(r.begin() + 3 * 4096 + 5, r.end()) == b);
  CHECK(f.seek_data(0, 3 * 4096 + 15) == std::optional<uint64_t>(3 * 4096));
  CHECK(f.seek_hole(0, 3 * 4096 + 15) == std::optional<uint64_t>(0));
  CHECK(f.seek_hole(3 * 4096 + 1, 3 * 4096 + 15) == std::optional<uint64_t>(3 * 4096 + 15));
  CHECK(f.seek_data(3 * 4096 + 15, 3 * 4096 + 15) == std::nullopt);
}

TEST_CASE("PageCache: truncate down zeroes the tail; up reads zeros") {
  auto cache = make_cache(1 << 20);
  FilePages f(*cache);
  Bytes b(3 * 4096, std::byte{0xaa});
  REQUIRE(f.write(0, b).is_ok());
  CHECK(f.pages() == 3);
  f.truncate(3 * 4096, 100);
  CHECK(f.pages() == 1);
  CHECK(cache->stats().frames_used == 1);
  f.truncate(100, 3 * 4096);  // grow: allocates nothing
  CHECK(f.pages() == 1);
  Bytes r = read_bytes(f, 0, 3 * 4096);
  CHECK(Bytes(r.begin(), r.begin() + 100) == Bytes(100, std::byte{0xaa}));
  CHECK(all_zero(Bytes(r.begin() + 100, r.end())));
  f.truncate(3 * 4096, 0);
  CHECK(f.pages() == 0);
  CHECK(cache->stats().frames_used == 0);
  CHECK(cache->stats().pages_allocated == 0);
}

TEST_CASE("PageCache: punch_hole frees whole pages and zeroes partial edges") {
  auto cache = make_cache(1 << 20);
  FilePages f(*cache);
  Bytes b(4 * 4096, std::byte{0x11});
  REQUIRE(f.write(0, b).is_ok());
  // [4086, 12298): pages 1 and 2 are whole (freed), 0 and 3 partial (zeroed).
  f.punch_hole(4096 - 10, 2 * 4096 + 20);
  CHECK(f.pages() == 2);
  Bytes r = read_bytes(f, 0, 4 * 4096);
  for (size_t i = 0; i < r.size(); ++i) {
    bool zero = i >= 4086 && i < 12298;
    REQUIRE(r[i] == (zero ? std::byte{0} : std::byte{0x11}));
  }
  // Inside one page: nothing freed.
  f.punch_hole(3 * 4096 + 20, 10);
  CHECK(f.pages() == 2);
  r = read_bytes(f, 3 * 4096, 4096);
  CHECK(r[19] == std::byte{0x11});
  CHECK(all_zero(Bytes(r.begin() + 20, r.begin() + 30)));
  CHECK(r[30] == std::byte{0x11});
  // Past everything, huge length: fine, frees the rest.
  f.punch_hole(0, UINT64_MAX);
  CHECK(f.pages() == 0);
  CHECK(cache->stats().frames_used == 0);
}

TEST_CASE("PageCache: allocate creates zero pages that are holes for SEEK_DATA") {
  auto cache = make_cache(1 << 20, 100);
  FilePages f(*cache);
  REQUIRE(f.allocate(100, 3 * 4096).is_ok());  // pages 0..3
  CHECK(f.pages() == 4);
  CHECK(cache->stats().pages_allocated == 4);
  CHECK(all_zero(read_bytes(f, 0, 4 * 4096)));
  // tmpfs: fallocated, never-written pages are holes for lseek.
  CHECK(f.seek_data(0, 4 * 4096) == std::nullopt);
  CHECK(f.seek_hole(0, 4 * 4096) == std::optional<uint64_t>(0));
  REQUIRE(f.write(4096 + 7, pattern(3, 1)).is_ok());
  CHECK(f.pages() == 4);  // no new page
  CHECK(f.seek_data(0, 4 * 4096) == std::optional<uint64_t>(4096));
  CHECK(f.seek_hole(4096, 4 * 4096) == std::optional<uint64_t>(2 * 4096));
  // Allocating what exists costs nothing, and (tmpfs) makes the pages data.
  REQUIRE(f.allocate(0, 4 * 4096).is_ok());
  CHECK(cache->stats().pages_allocated == 4);
  CHECK(f.seek_data(0, 4 * 4096) == std::optional<uint64_t>(0));
  CHECK(f.seek_hole(0, 4 * 4096) == std::optional<uint64_t>(4 * 4096));
  CHECK(all_zero(read_bytes(f, 2 * 4096, 2 * 4096)));
}

TEST_CASE("PageCache: allocate past size= or memory fails and rolls back") {
  SECTION("size=") {
    auto cache = make_cache(1 << 20, 10);
    FilePages f(*cache);
    REQUIRE(f.allocate(0, 4 * 4096).is_ok());
    CHECK(f.allocate(2 * 4096, 9 * 4096).code() == ENOSPC);  // needs 7 more, 6 left
    CHECK(f.pages() == 4);
    CHECK(cache->stats().pages_allocated == 4);
    CHECK(cache->stats().frames_used == 4);
    REQUIRE(f.allocate(2 * 4096, 8 * 4096).is_ok());  // exactly 6 more
    CHECK(f.pages() == 10);
  }
  SECTION("memory") {
    auto cache = make_cache(8 * 4096);
    FilePages f(*cache);
    CHECK(f.allocate(0, 9 * 4096).code() == ENOSPC);
    CHECK(f.pages() == 0);
    CHECK(cache->stats().frames_used == 0);
    CHECK(cache->stats().pages_allocated == 0);
    // A huge range fails fast and allocates nothing.
    CHECK(f.allocate(0, uint64_t{1} << 50).code() == ENOSPC);
    CHECK(f.allocate(0, 8 * 4096).is_ok());
  }
  SECTION("EFBIG") {
    auto cache = make_cache(8 * 4096);
    FilePages f(*cache);
    CHECK(f.allocate(uint64_t{1} << 63, 1).code() == EFBIG);
    CHECK(f.allocate((uint64_t{1} << 63) - 4096, 4097).code() == EFBIG);
  }
}

TEST_CASE("PageCache: size= limit gives ENOSPC and writes nothing") {
  auto cache = make_cache(1 << 20, 4);
  FilePages a(*cache), b(*cache);
  REQUIRE(a.write(0, pattern(2 * 4096, 1)).is_ok());
  REQUIRE(b.write(0, pattern(4096, 2)).is_ok());
  // a: overwrite page 1 and create pages 2, 3: needs 2 new, 1 left.
  Bytes before = read_bytes(a, 0, 4 * 4096);
  CHECK(a.write(4096 + 10, pattern(2 * 4096 + 10, 3)).code() == ENOSPC);
  CHECK(read_bytes(a, 0, 4 * 4096) == before);  // nothing partially written
  CHECK(a.pages() == 2);
  CHECK(cache->stats().pages_allocated == 3);
  // Overwriting existing pages needs nothing.
  REQUIRE(a.write(0, pattern(2 * 4096, 4)).is_ok());
  REQUIRE(b.write(4096, pattern(1, 5)).is_ok());
  CHECK(cache->stats().pages_allocated == 4);
  CHECK(b.write(2 * 4096, pattern(1, 6)).code() == ENOSPC);
}

TEST_CASE("PageCache: memory limit gives ENOSPC with nothing partially written") {
  auto cache = make_cache(8 * 4096);
  FilePages f(*cache);
  REQUIRE(f.write(0, pattern(6 * 4096, 1)).is_ok());
  CHECK(cache->stats().frames_used == 6);
  Bytes before = read_bytes(f, 0, 20 * 4096);
  // Overwrites pages 4, 5 and needs 3 new frames: 2 free.
  CHECK(f.write(4 * 4096 + 1, pattern(4 * 4096, 2)).code() == ENOSPC);
  CHECK(read_bytes(f, 0, 20 * 4096) == before);
  CHECK(f.pages() == 6);
  CHECK(cache->stats().frames_used == 6);
  CHECK(cache->stats().pages_allocated == 6);
  // Exactly two more fit.
  REQUIRE(f.write(6 * 4096, pattern(2 * 4096, 3)).is_ok());
  CHECK(f.write(100 * 4096, pattern(1, 4)).code() == ENOSPC);
  // Full memory: overwrites still work.
  REQUIRE(f.write(0, pattern(8 * 4096, 5)).is_ok());
  CHECK(read_bytes(f, 0, 8 * 4096) == pattern(8 * 4096, 5));
}

TEST_CASE("PageCache: far offsets cost a few hundred bytes of metadata") {
  auto cache = make_cache(1 << 20);
  const uint64_t base_meta = cache->stats().metadata_bytes;
  {
    FilePages f(*cache);
    const uint64_t file_meta = cache->stats().metadata_bytes - base_meta;
    const uint64_t off = 250ull * 1000 * 1000 * 1000 + 123;
    Bytes b = pattern(5000, 9);
    REQUIRE(f.write(off, b).is_ok());
    CHECK(f.pages() == 2);
    CHECK(read_bytes(f, off, b.size()) == b);
    CHECK(all_zero(read_bytes(f, off - 100000, 100000)));
    const uint64_t meta = cache->stats().metadata_bytes - base_meta - file_meta;
    WARN("metadata for a 2-page write at 250 GB: " << meta << " bytes (file: " << file_meta << ")");
    CHECK(meta <= 1024);  // one index chunk + two pmaps
    // At the largest offset.
    const uint64_t top = (uint64_t{1} << 63) - 1;
    REQUIRE(f.write(top - 10, pattern(10, 1)).is_ok());
    CHECK(f.write(top - 10, pattern(11, 1)).code() == EFBIG);
    CHECK(f.write(top, pattern(1, 1)).code() == EFBIG);
    CHECK(f.write(UINT64_MAX, pattern(1, 1)).code() == EFBIG);
    CHECK(f.write(UINT64_MAX, Bytes{}).is_ok());
    CHECK(read_bytes(f, top - 10, 10) == pattern(10, 1));
    f.truncate(top, 0);
    CHECK(cache->stats().metadata_bytes == base_meta + file_meta);
  }
  CHECK(cache->stats().metadata_bytes == base_meta);
}

TEST_CASE("PageCache: seek over a 1 PB sparse file is fast") {
  auto cache = make_cache(1 << 20);
  FilePages f(*cache);
  const uint64_t pb = uint64_t{1} << 50;
  REQUIRE(f.write(0, pattern(4096, 1)).is_ok());
  REQUIRE(f.write(pb / 2 + 5, pattern(4096, 2)).is_ok());  // two pages
  REQUIRE(f.write(pb - 4096, pattern(4096, 3)).is_ok());
  f.truncate(0, pb);  // grow: nothing
  auto t0 = std::chrono::steady_clock::now();
  CHECK(f.seek_hole(0, pb) == std::optional<uint64_t>(4096));
  CHECK(f.seek_data(4096, pb) == std::optional<uint64_t>(pb / 2));
  CHECK(f.seek_data(pb / 2 + 100, pb) == std::optional<uint64_t>(pb / 2 + 100));
  CHECK(f.seek_hole(pb / 2, pb) == std::optional<uint64_t>(pb / 2 + 2 * 4096));
  CHECK(f.seek_data(pb / 2 + 2 * 4096, pb) == std::optional<uint64_t>(pb - 4096));
  CHECK(f.seek_hole(pb - 4096, pb) == std::optional<uint64_t>(pb));
  CHECK(f.seek_data(pb, pb) == std::nullopt);
  CHECK(f.seek_hole(pb, pb) == std::nullopt);
  f.truncate(pb, pb - 1);  // the last page stays, its last byte zeroed
  CHECK(f.seek_data(pb / 2 + 2 * 4096, pb - 1) == std::optional<uint64_t>(pb - 4096));
  CHECK(f.seek_hole(pb - 4096, pb - 1) == std::optional<uint64_t>(pb - 1));
  f.truncate(pb - 1, pb / 2);
  CHECK(f.seek_data(4096, pb / 2) == std::nullopt);
  CHECK(f.pages() == 1);
  auto dt = std::chrono::steady_clock::now() - t0;
  CHECK(dt < std::chrono::milliseconds(200));
}

TEST_CASE("PageCache: frames come back on truncate and destruction") {
  auto cache = make_cache(4 << 20);
  const auto base = cache->stats();
  {
    FilePages a(*cache), b(*cache);
    REQUIRE(a.write(0, pattern(1 << 20, 1)).is_ok());
    REQUIRE(b.allocate(0, 1 << 20).is_ok());
    CHECK(cache->stats().frames_used == 512);
    CHECK(cache->stats().pages_resident == 512);
    a.truncate(1 << 20, 4096);
    CHECK(cache->stats().frames_used == 257);
  }
  auto st = cache->stats();
  CHECK(st.frames_used == 0);
  CHECK(st.pages_allocated == 0);
  CHECK(st.pages_resident == 0);
  CHECK(st.metadata_bytes == base.metadata_bytes);
}

TEST_CASE("PageCache: metadata per resident page") {
  auto cache = make_cache(64 << 20);
  const uint64_t base = cache->stats().metadata_bytes;
  FilePages f(*cache);
  constexpr uint64_t kPages = 8192;
  REQUIRE(f.write(0, Bytes(kPages * 4096, std::byte{1})).is_ok());
  const double per_page = double(cache->stats().metadata_bytes - base) / kPages;
  WARN("metadata per resident page (dense file): " << per_page << " bytes");
  CHECK(per_page < 80);
}

TEST_CASE("PageCache: read iovecs come from frame memory and holes from the zero region") {
  auto cache = make_cache(1 << 20);
  FilePages f(*cache);
  REQUIRE(f.write(4096, pattern(2 * 4096, 1)).is_ok());
  auto region = cache->state().pool->region();
  f.read(0, 4 * 4096, [&](Status s, std::span<const iovec> iov) {
    REQUIRE(s.is_ok());
    size_t total = 0;
    int in_frames = 0;
    for (const iovec& v : iov) {
      auto* p = static_cast<std::byte*>(v.iov_base);
      if (p >= region.data() && p < region.data() + region.size()) ++in_frames;
      total += v.iov_len;
    }
    CHECK(total == 4 * 4096);
    CHECK(in_frames >= 1);   // zero copy
    CHECK(iov.size() <= 3);  // hole, frames (adjacent frames merged), hole
  });
  // A long hole is a few iovecs, not one per page.
  f.read(1 << 20, 1 << 20, [&](Status s, std::span<const iovec> iov) {
    REQUIRE(s.is_ok());
    CHECK(iov.size() <= 4);
  });
}

TEST_CASE("PageCache: concurrent writers and readers", "[concurrency]") {
  auto cache = make_cache(32 << 20);
  constexpr int kThreads = 4;
  constexpr uint64_t kPages = 64;
  std::atomic<bool> failed{false};

  SECTION("different files") {
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t) {
      ts.emplace_back([&, t] {
        FilePages f(*cache);
        std::mt19937 rng(t);
        Model m(4096);
        for (int i = 0; i < 300 && !failed; ++i) {
          uint64_t off = rng() % (kPages * 4096);
          Bytes b = pattern(rng() % 10000, rng());
          if (!f.write(off, b).is_ok()) failed = true;
          m.write(off, b);
          if (rng() % 8 == 0) {
            uint64_t n = rng() % (kPages * 4096);
            f.truncate(m.size, n);
            m.truncate(n);
          }
          Bytes r;
          f.read(0, m.size, [&](Status, std::span<const iovec> iov) {
            for (const iovec& v : iov) {
              auto* p = static_cast<const std::byte*>(v.iov_base);
              r.insert(r.end(), p, p + v.iov_len);
            }
          });
          if (r != m.bytes) failed = true;
        }
      });
    }
    for (auto& t : ts) t.join();
    CHECK_FALSE(failed);
  }

  SECTION("one file: whole-page writes are never seen torn") {
    FilePages f(*cache);
    std::atomic<bool> stop{false};
    std::vector<std::thread> ts;
    for (int t = 0; t < 2; ++t) {  // writers: page p filled with one byte value
      ts.emplace_back([&, t] {
        std::mt19937 rng(100 + t);
        for (int i = 0; i < 3000 && !failed; ++i) {
          uint64_t p = rng() % kPages;
          Bytes b(4096, std::byte(1 + rng() % 255));
          if (rng() % 16 == 0) {
            f.punch_hole(p * 4096, 4096);
          } else if (!f.write(p * 4096, b).is_ok()) {
            failed = true;
          }
        }
      });
    }
    for (int t = 0; t < 2; ++t) {  // readers
      ts.emplace_back([&, t] {
        std::mt19937 rng(200 + t);
        while (!stop && !failed) {
          uint64_t p = rng() % kPages;
          size_t n = 1 + rng() % 3;
          f.read(p * 4096, n * 4096, [&](Status, std::span<const iovec> iov) {
            Bytes r;
            for (const iovec& v : iov) {
              auto* q = static_cast<const std::byte*>(v.iov_base);
              r.insert(r.end(), q, q + v.iov_len);
            }
            for (size_t k = 0; k < n; ++k) {
              for (size_t i = 1; i < 4096; ++i) {
                if (r[k * 4096 + i] != r[k * 4096]) {
                  failed = true;
                  return;
                }
              }
            }
          });
          (void)f.seek_data(rng() % (kPages * 4096), kPages * 4096);
          (void)f.pages();
        }
      });
    }
    ts[0].join();
    ts[1].join();
    stop = true;
    ts[2].join();
    ts[3].join();
    CHECK_FALSE(failed);
    CHECK(f.pages() == cache->stats().pages_allocated);
  }

  SECTION("size= is shared: racing files never exceed it") {
    auto small = make_cache(32 << 20, 100);
    std::vector<std::thread> ts;
    std::atomic<uint64_t> ok_pages{0};
    std::atomic<int> done{0};
    for (int t = 0; t < kThreads; ++t) {
      ts.emplace_back([&, t] {
        FilePages f(*small);
        for (uint64_t p = 0; p < 60; ++p) {
          if (f.write(p * 4096, pattern(4096, t)).is_ok()) ok_pages++;
        }
        if (small->stats().pages_allocated > 100) failed = true;
        // Keep the pages until everyone has tried.
        done++;
        while (done.load() < kThreads) std::this_thread::yield();
      });
    }
    for (auto& t : ts) t.join();
    CHECK(ok_pages == 100);
    CHECK_FALSE(failed);
    CHECK(small->stats().pages_allocated == 0);
  }
  CHECK(cache->stats().frames_used == 0);
}

}  // namespace tmpfsd

namespace tmpfsd {

TEST_CASE("PageCache: read pins the frames it replies from until done returns") {
  auto cache = make_cache(1 << 20);
  FilePages f(*cache);
  REQUIRE(f.write(0, pattern(3 * 4096, 1)).is_ok());
  FramePool& pool = *cache->state().pool;
  std::vector<Pmap*> seen;
  f.read(100, 2 * 4096, [&](Status s, std::span<const iovec> iov) {
    REQUIRE(s.is_ok());
    for (const iovec& v : iov) {
      auto* p = static_cast<const std::byte*>(v.iov_base);
      for (size_t o = 0; o < v.iov_len; o += 4096) {
        Frame* fr = pool.frame_at(p + o);
        REQUIRE(fr != nullptr);
        REQUIRE(fr->owner() != nullptr);
        CHECK(fr->owner()->io_count() == 1);
        CHECK(fr->owner()->referenced());
        seen.push_back(fr->owner());
      }
    }
  });
  REQUIRE(seen.size() >= 2);
  for (Pmap* p : seen) CHECK(p->io_count() == 0);
}

TEST_CASE("PageCache: writes dirty only the blocks they touch") {
  SECTION("4 KiB pages, 512 B blocks") {
    auto cache = make_cache(1 << 20);
    FilePages f(*cache);
    FramePool& pool = *cache->state().pool;
    auto pmap_of = [&](uint64_t off) {
      Pmap* p = nullptr;
      f.read(off, 1, [&](Status, std::span<const iovec> iov) {
        p = pool.frame_at(static_cast<const std::byte*>(iov[0].iov_base))->owner();
      });
      return p;
    };
    REQUIRE(f.write(600, pattern(1, 1)).is_ok());
    CHECK(pmap_of(0)->dirty_blocks() == 0b10);
    CHECK(pmap_of(0)->uptodate());
    REQUIRE(f.write(4000, pattern(200, 1)).is_ok());  // [4000, 4200)
    CHECK(pmap_of(0)->dirty_blocks() == (0b10 | (uint64_t{1} << 7)));
    CHECK(pmap_of(4096)->dirty_blocks() == 0b1);
    REQUIRE(f.write(8192, pattern(4096, 1)).is_ok());
    CHECK(pmap_of(8192)->dirty_blocks() == 0xff);
    // Zeroing by truncate dirties the zeroed blocks.
    f.truncate(3 * 4096, 8192 + 1000);
    CHECK(pmap_of(8192)->dirty_blocks() == 0xff);
    // fallocate: clean and not uptodate.
    REQUIRE(f.allocate(5 * 4096, 1).is_ok());
    CHECK(pmap_of(5 * 4096)->dirty_blocks() == 0);
    CHECK_FALSE(pmap_of(5 * 4096)->uptodate());
  }
  SECTION("256 KiB pages: 4 KiB blocks keep the bitmap one word") {
    auto cache = make_cache(4 << 20, 0, 256 * 1024);
    FilePages f(*cache);
    FramePool& pool = *cache->state().pool;
    REQUIRE(f.write(5000, pattern(4000, 1)).is_ok());  // [5000, 9000): blocks 1, 2
    f.read(0, 1, [&](Status, std::span<const iovec> iov) {
      Pmap* p = pool.frame_at(static_cast<const std::byte*>(iov[0].iov_base))->owner();
      CHECK(p->dirty_blocks() == 0b110);
    });
  }
}

TEST_CASE("PageCache: new pages go on the inactive list and leave it when freed") {
  auto cache = make_cache(1 << 20);
  auto& lists = cache->state().lists;
  {
    FilePages f(*cache);
    REQUIRE(f.write(0, pattern(5 * 4096, 1)).is_ok());
    REQUIRE(f.allocate(10 * 4096, 4096).is_ok());
    CHECK(lists.inactive_count() == 6);
    CHECK(lists.active_count() == 0);
    f.punch_hole(0, 4096);
    CHECK(lists.inactive_count() == 5);
  }
  CHECK(lists.inactive_count() == 0);
}

TEST_CASE("PageCache: throughput", "[.bench]") {
  constexpr uint64_t kBytes = 512ull << 20;
  auto cache = make_cache(kBytes);
  FilePages f(*cache);
  Bytes buf = pattern(128 * 1024, 1);
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  for (uint64_t off = 0; off < kBytes; off += buf.size()) REQUIRE(f.write(off, buf).is_ok());
  auto t1 = clock::now();
  uint64_t sum = 0;
  for (uint64_t off = 0; off < kBytes; off += buf.size()) {
    f.read(off, buf.size(), [&](Status, std::span<const iovec> iov) { sum += iov.size(); });
  }
  auto t2 = clock::now();
  auto mbps = [](clock::duration d) {
    return double(kBytes) / (1 << 20) / std::chrono::duration<double>(d).count();
  };
  WARN("write 128 KiB: " << mbps(t1 - t0) << " MiB/s (first touch of frames included); "
                         << "read (iovec build, no copy): " << mbps(t2 - t1) << " MiB/s, " << sum
                         << " iovecs");
  auto t3 = clock::now();
  for (uint64_t off = 0; off < kBytes; off += buf.size()) REQUIRE(f.write(off, buf).is_ok());
  WARN("overwrite 128 KiB: " << mbps(clock::now() - t3) << " MiB/s");
  auto t4 = clock::now();
  f.truncate(kBytes, 0);
  using ms = std::chrono::duration<double, std::milli>;
  WARN("truncate of " << (kBytes >> 20) << " MiB: " << ms(clock::now() - t4).count() << " ms");
}

}  // namespace tmpfsd
