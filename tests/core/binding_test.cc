// Tests core/page_cache/binding.h: every kind of PagePlace round-trips through the
// index word and is told apart from every other kind.
#include "core/page_cache/binding.h"

#include <vector>

#include <catch2/catch.hpp>

#include "core/page_cache/file_index.h"

namespace tmpfsd {

namespace {

using Kind = PagePlace::Kind;

struct Case {
  PagePlace place;
  Kind kind;
};

void check_only(PagePlace place, Kind k) {
  CHECK(place.kind() == k);
  CHECK(place.is_hole() == (k == Kind::kHole));
  CHECK(place.present() == (k != Kind::kHole));
  CHECK(place.is_pmap() == (k == Kind::kResident));
  CHECK(place.is_swapped() == (k == Kind::kSwapped));
  CHECK(place.is_zero() == (k == Kind::kZero));
  CHECK(place.is_remote() == (k == Kind::kRemote));
  CHECK(place.paged_out() == (k == Kind::kSwapped || k == Kind::kRemote));
  CHECK(place.needs_fault() == (k == Kind::kSwapped || k == Kind::kZero || k == Kind::kRemote));
  CHECK(place.reads_as_zeros() == (k == Kind::kHole || k == Kind::kZero));
  // What the index stores is what comes back.
  CHECK(PagePlace::from_word(place.word()) == place);
}

}  // namespace

TEST_CASE("PagePlace: each kind round-trips and is told apart from the others") {
  alignas(64) static unsigned char pmaps[4][64];  // stand-ins: only the address is used
  auto* p0 = reinterpret_cast<Pmap*>(pmaps[0]);
  auto* p3 = reinterpret_cast<Pmap*>(pmaps[3]);
  const std::vector<Case> cases = {
      {PagePlace(), Kind::kHole},
      {PagePlace::hole(), Kind::kHole},
      {PagePlace::resident(p0), Kind::kResident},
      {PagePlace::resident(p3), Kind::kResident},
      {PagePlace::swapped(swapdev::SwapSlot(0)), Kind::kSwapped},
      {PagePlace::swapped(swapdev::SwapSlot(1)), Kind::kSwapped},
      {PagePlace::swapped(swapdev::SwapSlot(PagePlace::kMaxSlot)), Kind::kSwapped},
      {PagePlace::zero(), Kind::kZero},
      {PagePlace::zero(true), Kind::kZero},
      {PagePlace::remote(0), Kind::kRemote},
      {PagePlace::remote(1), Kind::kRemote},
      {PagePlace::remote(2), Kind::kRemote},  // (2 << 2) | 2 would read as a Pmap
      {PagePlace::remote(PagePlace::kMaxRemoteKey), Kind::kRemote},
  };
  for (const Case& c : cases) check_only(c.place, c.kind);

  // Payloads come back.
  CHECK(PagePlace::resident(p3).pmap() == p3);
  CHECK(PagePlace::swapped(swapdev::SwapSlot(12345)).slot() == swapdev::SwapSlot(12345));
  CHECK(PagePlace::swapped(swapdev::SwapSlot(PagePlace::kMaxSlot)).slot().value ==
        PagePlace::kMaxSlot);
  CHECK_FALSE(PagePlace::zero().zero_uptodate());
  CHECK(PagePlace::zero(true).zero_uptodate());
  CHECK(PagePlace::remote(77).remote_key() == 77);
  CHECK(PagePlace::remote(PagePlace::kMaxRemoteKey).remote_key() == PagePlace::kMaxRemoteKey);
  // A page in the swap device: the device says whether its slot is remote,
  // and either kind gives the slot back.
  const swapdev::SwapSlot s(4242);
  CHECK(PagePlace::paged_out(s, false) == PagePlace::swapped(s));
  CHECK(PagePlace::paged_out(s, true) == PagePlace::remote(4242));
  CHECK(PagePlace::paged_out(s, false).device_slot() == s);
  CHECK(PagePlace::paged_out(s, true).device_slot() == s);

  // Distinct values never share a word (besides the two spellings of hole).
  for (size_t i = 0; i < cases.size(); ++i) {
    for (size_t j = i + 1; j < cases.size(); ++j) {
      if (cases[i].kind == Kind::kHole && cases[j].kind == Kind::kHole) continue;
      CHECK(cases[i].place != cases[j].place);
    }
  }
}

TEST_CASE("PagePlace: the encoding the index has always stored") {
  // Swapped pages and zero pages keep the words of the index before
  // PagePlace existed (file_index_test.cc's raw words still mean the same).
  CHECK(PagePlace::swapped(swapdev::SwapSlot(5)).word() == ((5u << 2) | 1));
  CHECK(PagePlace::zero().word() == 3);
  CHECK(PagePlace::zero(true).word() == 7);
  CHECK(FileIndex::compact_swap(5) == PagePlace::swapped(swapdev::SwapSlot(5)).word());
  CHECK(FileIndex::swap_slot_of(FileIndex::compact_swap(9)) == 9);
}

TEST_CASE("FileIndex: callbacks taking a PagePlace see places") {
  std::atomic<uint64_t> meta{0};
  FileIndex ix(&meta);
  ix.set(1, PagePlace::swapped(swapdev::SwapSlot(10)));
  ix.set(2, PagePlace::zero());
  ix.set(3, PagePlace::remote(4));
  CHECK(ix.place(1).slot().value == 10);
  CHECK(ix.place(4).is_hole());
  std::vector<Kind> kinds;
  ix.visit_range(0, 10, [&](uint64_t, PagePlace place) {
    kinds.push_back(place.kind());
    return true;
  });
  CHECK(kinds == std::vector<Kind>{Kind::kSwapped, Kind::kZero, Kind::kRemote});
  CHECK(ix.next_matching(0, [](PagePlace place) { return place.is_remote(); }) ==
        std::optional<uint64_t>(3));
  ix.update_range(0, UINT64_MAX, [](uint64_t, PagePlace) { return PagePlace::hole(); });
  CHECK(ix.empty());
}

}  // namespace tmpfsd
