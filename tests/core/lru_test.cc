// PmapLists (core/page_cache/lru.h): the order in which reclaim meets pages, as the
// Reclaimer and Writeback rely on it. isolate() takes from the inactive
// tail; putback_unpin() puts a page at the end it names.
#include <catch2/catch.hpp>

#include <memory>
#include <vector>

#include "core/page_cache/lru.h"

namespace tmpfsd {
namespace {

struct Lists {
  std::vector<std::unique_ptr<Pmap>> pmaps;
  PmapLists lists;
  explicit Lists(int n) {
    std::vector<Pmap*> raw;
    for (int i = 0; i < n; ++i) {
      pmaps.push_back(std::make_unique<Pmap>(nullptr, i));
      raw.push_back(pmaps.back().get());
    }
    lists.add_new(raw);
  }
  ~Lists() {
    std::vector<Pmap*> raw;
    for (auto& p : pmaps) raw.push_back(p.get());
    lists.remove_idle(raw);  // the lists and pmaps end empty, as their destructors assert
  }
  // The indexes of the next `n` pages reclaim isolates; they stay isolated
  // (pinned) until put back.
  std::vector<uint64_t> isolate(size_t n, std::vector<Pmap*>* got = nullptr) {
    std::vector<Pmap*> out(n);
    uint64_t scanned = 0;
    out.resize(lists.isolate(out, n, &scanned));
    std::vector<uint64_t> idx;
    for (Pmap* p : out) idx.push_back(p->index());
    if (got) *got = out;
    return idx;
  }
};

}  // namespace

TEST_CASE("PmapLists: isolate takes the inactive tail; putback puts a page at the end it names") {
  Lists l(3);  // added 0, 1, 2: the inactive list runs 2 1 0 from head to tail
  CHECK(l.lists.inactive_count() == 3);
  std::vector<Pmap*> got;
  CHECK(l.isolate(1, &got) == std::vector<uint64_t>{0});
  CHECK(l.lists.inactive_count() == 2);
  CHECK(got[0]->io_count() == 1);  // isolated pages are pinned

  // Written back cleanly: to the inactive tail, the next to be isolated.
  l.lists.putback_unpin(got[0], PmapLists::Where::kInactiveTail);
  CHECK(got[0]->io_count() == 0);
  CHECK(l.isolate(1, &got) == std::vector<uint64_t>{0});

  // Back at the head: the last of the three.
  l.lists.putback_unpin(got[0], PmapLists::Where::kInactiveHead);
  CHECK(l.isolate(3, &got) == std::vector<uint64_t>{1, 2, 0});
  l.lists.putback_unpin(got, PmapLists::Where::kInactiveTail);
  // Put back in that order at the tail, each behind the last: 0 is at the tail now.
  CHECK(l.isolate(3, &got) == std::vector<uint64_t>{0, 2, 1});

  // A failed write goes to the active head; ageing brings it back to the
  // inactive list only when the inactive list is the shorter.
  l.lists.putback_unpin(got[0], PmapLists::Where::kActiveHead);
  l.lists.putback_unpin(got[1], PmapLists::Where::kInactiveTail);
  l.lists.putback_unpin(got[2], PmapLists::Where::kInactiveTail);
  CHECK(l.lists.active_count() == 1);
  CHECK(l.lists.inactive_count() == 2);
  CHECK(l.isolate(3, &got) == std::vector<uint64_t>{1, 2});
  CHECK(l.lists.active_count() == 1);
  l.lists.putback_unpin(got, PmapLists::Where::kInactiveHead);
}

}  // namespace tmpfsd
