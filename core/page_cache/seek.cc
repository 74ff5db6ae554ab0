// Seek and where (FilePagesImpl, file_pages.h): SEEK_DATA/SEEK_HOLE and
// where the pages are (tmpfsctl where), under the file's mutex held shared.
#include "core/page_cache/file_pages.h"

#include <algorithm>
#include <mutex>
#include <shared_mutex>

#include "core/page_cache/page_cache_state.h"
#include "swapdev/swap_device.h"

namespace tmpfsd {

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

PageKind kind_of(PagePlace place, const swapdev::SwapDevice* swap) {
  switch (place.kind()) {
    case PagePlace::Kind::kHole:
      return PageKind::kHole;
    case PagePlace::Kind::kResident:
      return PageKind::kResident;
    case PagePlace::Kind::kSwapped:
      return swap && swap->pooled(place.slot()) ? PageKind::kCompressed : PageKind::kSwapped;
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
      if (!add(page, 1, kind_of(place, st_.swap.get()))) {
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
