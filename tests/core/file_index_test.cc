// Tests core/page_cache/file_index.h: the sparse two-level index.
#include "core/page_cache/file_index.h"

#include <set>

#include <catch2/catch.hpp>

namespace tmpfsd {

TEST_CASE("FileIndex: set, get, count and remove across chunks") {
  std::atomic<uint64_t> meta{0};
  {
    FileIndex ix(&meta);
    const std::set<uint64_t> pages = {0, 1, 63, 64, 65, 127, 128, 1000, uint64_t{1} << 50};
    for (uint64_t p : pages) ix.set(p, (p << 2) | 1);
    CHECK(ix.size() == pages.size());
    for (uint64_t p : pages) CHECK(ix.get(p) == ((p << 2) | 1));
    CHECK(ix.get(2) == 0);
    CHECK(ix.get(uint64_t{1} << 49) == 0);
    CHECK(ix.count_present(0, 64) == 3);
    CHECK(ix.count_present(1, 65) == 3);
    CHECK(ix.count_present(63, 129) == 5);
    CHECK(ix.count_present(0, UINT64_MAX) == pages.size());
    CHECK(meta.load() > 0);

    std::vector<uint64_t> seen;
    ix.update_range(64, 1001, [&](uint64_t p, uint64_t) -> uint64_t {
      seen.push_back(p);
      return 0;
    });
    CHECK(seen == std::vector<uint64_t>{64, 65, 127, 128, 1000});
    CHECK(ix.size() == 4);
    CHECK(ix.count_present(0, UINT64_MAX) == 4);

    CHECK(ix.next_matching(2, [](uint64_t) { return true; }) == std::optional<uint64_t>(63));
    CHECK(ix.next_matching(64, [](uint64_t) { return true; }) ==
          std::optional<uint64_t>(uint64_t{1} << 50));
    CHECK(ix.next_matching((uint64_t{1} << 50) + 1, [](uint64_t) { return true; }) == std::nullopt);
    CHECK(ix.next_not_matching(0, [](uint64_t) { return true; }) == 2);
    CHECK(ix.next_not_matching(63, [](uint64_t) { return true; }) == 64);
    CHECK(ix.next_not_matching(uint64_t{1} << 50, [](uint64_t) { return true; }) ==
          (uint64_t{1} << 50) + 1);
    // A predicate that rejects page 1.
    CHECK(ix.next_not_matching(0, [](uint64_t w) { return (w >> 2) != 1; }) == 1);

    ix.update_range(0, UINT64_MAX, [](uint64_t, uint64_t) -> uint64_t { return 0; });
    CHECK(ix.empty());
  }
  CHECK(meta.load() == 0);  // every chunk freed and accounted
}

TEST_CASE("FileIndex: a full chunk and the next one") {
  std::atomic<uint64_t> meta{0};
  FileIndex ix(&meta);
  for (uint64_t p = 64; p < 192; ++p) ix.set(p, 2);
  CHECK(ix.next_not_matching(64, [](uint64_t) { return true; }) == 192);
  CHECK(ix.next_not_matching(0, [](uint64_t) { return true; }) == 0);
  CHECK(ix.next_matching(0, [](uint64_t) { return true; }) == std::optional<uint64_t>(64));
  CHECK(ix.count_present(100, 150) == 50);
  ix.update_range(0, UINT64_MAX, [](uint64_t, uint64_t) -> uint64_t { return 0; });
}

}  // namespace tmpfsd

namespace tmpfsd {

TEST_CASE("FileIndex: a swapped page costs at most 16 bytes") {
  std::atomic<uint64_t> meta{0};
  {
    FileIndex ix(&meta);
    constexpr uint64_t kPages = 1 << 16;  // a dense 256 MiB file
    for (uint64_t p = 0; p < kPages; ++p) ix.set(p, FileIndex::compact_swap(p + 1000));
    const double per_page = double(meta.load()) / kPages;
    WARN("index bytes per swapped page (dense): " << per_page);
    CHECK(per_page <= 16);
    CHECK(FileIndex::is_compact_swap(ix.get(77)));
    CHECK_FALSE(FileIndex::is_pmap(ix.get(77)));
    CHECK(FileIndex::swap_slot_of(ix.get(77)) == 1077);
    // Sparse worst case: one page per chunk costs one chunk.
    FileIndex sparse(&meta);
    const uint64_t before = meta.load();
    sparse.set(uint64_t{1} << 40, FileIndex::compact_swap(1));
    WARN("index bytes for one isolated page: " << meta.load() - before);
    CHECK(meta.load() - before <= 640);
  }
  CHECK(meta.load() == 0);
}

}  // namespace tmpfsd
