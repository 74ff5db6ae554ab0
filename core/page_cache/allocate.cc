// Allocate (FilePagesImpl, file_pages.h): fallocate mode 0 and KEEP_SIZE,
// pages that exist and read as zeros.
#include "core/page_cache/file_pages.h"

#include <cassert>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <vector>

namespace tmpfsd {

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

}  // namespace tmpfsd
