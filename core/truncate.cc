// Truncate, punch hole, allocate and seek (FilePagesImpl, file_pages.h):
// freeing pages, zeroing the edges, fallocate, SEEK_DATA/SEEK_HOLE, and
// where the pages are (tmpfsctl where).
#include "core/file_pages.h"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include <spdlog/spdlog.h>

#include "swapdev/swap_device.h"

namespace tmpfsd {

void FilePagesImpl::zero_in_page_locked(uint64_t page, size_t from, size_t to) {
  if (from >= to) return;
  PagePlace place = index_.place(page);
  if (place.is_hole() || place.is_zero()) return;  // reads as zeros already
  if (!place.is_pmap()) {
    FaultRequest req;  // zeroing: no write, wait for writeback
    req.first = page;
    req.last = page;
    if (Status s = fault_range_locked(req); !s) {
      // The tail stays in swap un-zeroed; a later extension of the file
      // would show it. Only after a swap read error or total exhaustion.
      spdlog::error("cannot fault in page {} to zero its tail: {}", page, std::strerror(s.code()));
      return;
    }
    place = index_.place(page);
    if (place.is_hole() || !place.is_pmap()) return;
  }
  wait_busy_locked(page, page);
  Pmap* p = index_.place(page).pmap();
  std::memset(p->frame()->bytes().data() + from, 0, to - from);
  dirty_locked(p, block_bits(from, to));
}

// Removes every page in [first, last). Words are cleared from the index at
// once; pmaps are then taken off the lists, waiting for any that reclaim has
// isolated or that are under writeback (both finish without this file's
// mutex), and freed with their frames and slots.
void FilePagesImpl::free_range_locked(uint64_t first, uint64_t last) {
  std::vector<Pmap*> victims;
  std::vector<swapdev::SwapSlot> slots;
  uint64_t removed = 0;
  uint64_t swapped = 0;
  index_.update_range(first, last, [&](uint64_t, PagePlace place) -> PagePlace {
    ++removed;
    if (place.is_pmap()) {
      victims.push_back(place.pmap());
    } else if (place.is_swapped()) {
      slots.push_back(place.slot());
      ++swapped;
    }
    return PagePlace::hole();
  });
  if (removed == 0) return;
  publish_pages_locked();
  while (!st_.lists.remove_idle(victims)) st_.wait_progress();
  for (Pmap* p : victims) {
    assert(p->io_count() == 0 && !p->writeback());
    if (p->resident()) {
      Frame* f = p->frame();
      if (f->has_slot()) slots.push_back(st_.take_slot(f));
      f->set_owner(nullptr);
      st_.pool->free(f);
      st_.pages_resident.fetch_sub(1, std::memory_order_relaxed);
    }
    delete p;
  }
  for (swapdev::SwapSlot s : slots) st_.swap->free(s);
  st_.pages_swapped.fetch_sub(swapped, std::memory_order_relaxed);
  st_.metadata.fetch_sub(victims.size() * sizeof(Pmap), std::memory_order_relaxed);
  st_.unreserve_pages(removed);
}

void FilePagesImpl::truncate(uint64_t old_size, uint64_t new_size) {
  if (new_size > old_size) return;
  WriterLock lock(mu_);
  // Everything from the first page wholly past new_size, including pages
  // fallocated with KEEP_SIZE beyond old_size (as shmem_setattr does).
  const uint64_t first_gone = (new_size + page_mask()) >> st_.page_shift;
  free_range_locked(first_gone, UINT64_MAX);
  if (const size_t tail = new_size & page_mask(); tail != 0) {
    zero_in_page_locked(new_size >> st_.page_shift, tail, page_size());
  }
}

void FilePagesImpl::punch_hole(uint64_t off, uint64_t len) {
  if (len == 0) return;
  const uint64_t end = len > UINT64_MAX - off ? UINT64_MAX : off + len;
  WriterLock lock(mu_);
  const uint64_t first_whole = (off >> st_.page_shift) + ((off & page_mask()) ? 1 : 0);
  const uint64_t end_whole = end >> st_.page_shift;
  if (first_whole < end_whole) free_range_locked(first_whole, end_whole);
  const uint64_t first_page = off >> st_.page_shift;
  const uint64_t last_page = (end - 1) >> st_.page_shift;
  const size_t head = off & page_mask();
  const size_t tail = end & page_mask();
  if (head != 0) {
    zero_in_page_locked(first_page, head,
                        first_page == last_page ? ((end - 1) & page_mask()) + 1 : page_size());
  }
  if (tail != 0 && (first_page != last_page || head == 0)) {
    zero_in_page_locked(last_page, 0, tail);
  }
}

Status FilePagesImpl::allocate(uint64_t off, uint64_t len) {
  if (len == 0) return Status::ok();
  if (off > kMaxFileSize || len > kMaxFileSize - off) return Errno{EFBIG};
  const uint64_t end = off + len;
  const uint64_t first = off >> st_.page_shift;
  const uint64_t last_excl = (end + page_mask()) >> st_.page_shift;

  WriterLock lock(mu_);
  const uint64_t missing = (last_excl - first) - index_.count_present(first, last_excl);
  FramePool::Reservation frames;
  if (missing > 0) {
    if (!st_.reserve_pages(missing)) return Errno{ENOSPC};
    if (!st_.swap) {
      auto r = st_.pool->reserve(missing);
      if (!r) {
        st_.unreserve_pages(missing);
        return Errno{ENOSPC};
      }
      frames = std::move(r).value();
    }
  }
  // Kernel tmpfs: a page fallocated by an earlier call and fallocated again
  // becomes Uptodate (shmem_get_folio_gfp, SGP_FALLOC on an existing folio
  // clears it and marks it uptodate), i.e. data for SEEK_DATA; pages new in
  // this call stay !Uptodate. (On ENOSPC the kernel has already done this
  // for the pages before the one that failed; we change nothing.)
  index_.update_range(first, last_excl, [](uint64_t, PagePlace place) -> PagePlace {
    if (place.is_pmap()) place.pmap()->set_uptodate();
    return place == PagePlace::zero() ? PagePlace::zero(true) : place;
  });
  if (missing == 0) return Status::ok();
  if (st_.swap) {
    // With swap, a fallocated page needs no frame until it is written: a
    // zero word (costs its index word only; reads as zeros).
    for (uint64_t page = first, left = missing; left > 0; ++page) {
      assert(page < last_excl);
      if (index_.place(page).present()) continue;
      index_.set(page, PagePlace::zero());
      --left;
    }
    publish_pages_locked();
    return Status::ok();
  }
  // Only `missing` pages are absent, and missing <= frames_total, so this
  // walk is bounded by memory, not by len.
  std::vector<Pmap*> fresh;
  fresh.reserve(missing);
  for (uint64_t page = first; frames.left() > 0; ++page) {
    assert(page < last_excl);
    if (index_.place(page).present()) continue;
    bool zeroed;
    Pmap* p = new_pmap_locked(page, frames, &zeroed);
    if (!zeroed) std::memset(p->frame()->bytes().data(), 0, page_size());
    fresh.push_back(p);  // clean, !uptodate: a zero page without a slot
  }
  st_.lists.add_new(fresh);
  publish_pages_locked();
  return Status::ok();
}

std::optional<uint64_t> FilePagesImpl::seek_data(uint64_t off, uint64_t size) const {
  if (off >= size) return std::nullopt;
  ReaderLock lock(mu_);
  const auto page = index_.next_matching(off >> st_.page_shift, is_data);
  if (!page || *page > ((size - 1) >> st_.page_shift)) return std::nullopt;
  return std::max(off, *page << st_.page_shift);
}

std::optional<uint64_t> FilePagesImpl::seek_hole(uint64_t off, uint64_t size) const {
  if (off >= size) return std::nullopt;
  ReaderLock lock(mu_);
  const uint64_t page = index_.next_not_matching(off >> st_.page_shift, is_data);
  if (page > ((size - 1) >> st_.page_shift)) return size;
  return std::min(size, std::max(off, page << st_.page_shift));
}

namespace {

PageKind kind_of(PagePlace place) {
  switch (place.kind()) {
    case PagePlace::Kind::kHole:
      return PageKind::kHole;
    case PagePlace::Kind::kResident:
      return PageKind::kResident;
    case PagePlace::Kind::kSwapped:
      return PageKind::kSwapped;
    case PagePlace::Kind::kZero:
      return PageKind::kZero;
    case PagePlace::Kind::kRemote:
      return PageKind::kRemote;
  }
  return PageKind::kHole;
}

}  // namespace

// One visit of the pages present in [first, end): the holes between them
// are runs found by arithmetic, never walked.
uint64_t FilePagesImpl::where(uint64_t first, uint64_t end, std::span<PageRun> out,
                              size_t* count) const {
  size_t n = 0;
  // Adds pages [page, page + pages) of `kind` to the last run or a new one;
  // false when `out` is full.
  auto add = [&](uint64_t page, uint64_t pages, PageKind kind) {
    if (n > 0 && out[n - 1].kind == kind && out[n - 1].first + out[n - 1].pages == page) {
      out[n - 1].pages += pages;
      return true;
    }
    if (n == out.size()) return false;
    out[n++] = PageRun{page, pages, kind};
    return true;
  };
  uint64_t next = first;  // pages [first, next) are described
  bool full = false;
  if (first < end) {
    ReaderLock lock(mu_);
    index_.visit_range(first, end, [&](uint64_t page, PagePlace place) {
      // `next` moves past each run as it goes in: a full `out` stops after
      // the hole before a page, or before the hole.
      if (page > next) {
        if (!add(next, page - next, PageKind::kHole)) {
          full = true;
          return false;
        }
        next = page;
      }
      if (!add(page, 1, kind_of(place))) {
        full = true;
        return false;
      }
      next = page + 1;
      return true;
    });
  }
  if (!full && next < end && add(next, end - next, PageKind::kHole)) next = end;
  *count = n;
  return next;
}

uint64_t FilePagesImpl::end_present() const {
  ReaderLock lock(mu_);
  return index_.last_present().value_or(UINT64_MAX) + 1;  // none: UINT64_MAX + 1 == 0
}

}  // namespace tmpfsd
