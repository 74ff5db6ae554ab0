// Write (FilePagesImpl, file_pages.h): reserving the new pages, faulting in
// the ones the write touches (fault.cc), and copying the bytes into them.
#include "core/page_cache/file_pages.h"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <shared_mutex>

#include "core/page_cache/swap_in.h"
#include "swapdev/swap_device.h"

namespace tmpfsd {

Result<FilePages::PendingWrite*> FilePagesImpl::write(uint64_t off,
                                                      std::span<const std::byte> data) {
  if (data.empty()) return nullptr;
  if (off > kMaxFileSize || data.size() > kMaxFileSize - off) return Errno{EFBIG};
  const uint64_t end = off + data.size();
  const uint64_t first = off >> st_.page_shift;
  const uint64_t last = (end - 1) >> st_.page_shift;  // inclusive
  // A write must hold all its frames at once; one larger than a quarter of
  // --memory goes in pieces (then ENOSPC, when the swap fills, may leave
  // the pieces before it written: the only non-atomic case).
  const uint64_t max_pages = std::max<uint64_t>(1, st_.pool->frames_total() / 4);
  // The pieces wait for their swap-ins (the worker blocks: rare).
  if (st_.swap && last - first + 1 > max_pages) {
    for (uint64_t pos = off; pos < end;) {
      const uint64_t next = std::min(end, ((pos >> st_.page_shift) + max_pages) << st_.page_shift);
      auto piece = write(pos, data.subspan(pos - off, next - pos));
      if (!piece) return Errno{piece.code()};
      if (Status s = wait_for(*piece); !s) return Errno{s.code()};
      pos = next;
    }
    return nullptr;
  }

  WriterLock lock(mu_);
  // Reserve everything first: after this point the write cannot fail.
  // (Callers serialise writers of one file, so `missing` cannot change while
  // fault_range_locked drops the lock to reclaim: only reclaim runs then,
  // and it never adds or removes pages.)
  const uint64_t missing = (last - first + 1) - index_.count_present(first, last + 1);
  if (!st_.reserve_pages(missing)) return Errno{ENOSPC};
  FramePool::Reservation frames;
  Deferral defer{off, data, {}, nullptr};
  if (st_.swap) {
    FaultRequest req;
    req.first = first;
    req.last = last;
    req.how = OnWriteback::kCopy;
    req.for_write = true;
    req.off = off;
    req.end = end;
    req.extra = missing;
    req.defer = &defer;
    if (Status s = fault_range_locked(req); !s) {
      st_.unreserve_pages(missing);
      return Errno{s.code()};
    }
    frames = std::move(req.frames);
    wait_busy_locked(first, last, OnWriteback::kCopy, defer.pages.span());
  } else if (missing > 0) {
    auto r = st_.pool->reserve(missing);
    if (!r) {
      st_.unreserve_pages(missing);
      return Errno{ENOSPC};
    }
    frames = std::move(r).value();
  }
  SmallVec<Pmap*, kInlineIovecs> fresh;
  const std::span<Pmap*> deferred = defer.pages.span();
  const std::byte* src = data.data();
  for (uint64_t page = first; page <= last; ++page) {
    const size_t from = page == first ? (off & page_mask()) : 0;
    const size_t to = page == last ? ((end - 1) & page_mask()) + 1 : page_size();
    const PagePlace place = index_.place(page);
    Pmap* p;
    if (place.is_hole()) {
      bool zeroed;
      p = new_pmap_locked(page, frames, &zeroed);
      fresh.push_back(p);
      if (!zeroed) {
        std::byte* f = p->frame()->bytes().data();
        std::memset(f, 0, from);
        std::memset(f + to, 0, page_size() - to);
      }
    } else {
      p = place.pmap();
      if (std::ranges::find(deferred, p) != deferred.end()) {
        src += to - from;  // its bytes wait in the page wait table
        continue;
      }
      assert(p->resident() && (!p->writeback() || p->copied()) && p->bytes_valid());
      p->set_referenced();
    }
    std::memcpy(p->frame()->bytes().data() + from, src, to - from);
    src += to - from;
    dirty_locked(p, block_bits(from, to));
    p->set_uptodate();
  }
  assert(frames.left() == 0);
  st_.lists.add_new(fresh.span());
  publish_pages_locked();
  if (defer.write) st_.writes_async.fetch_add(1, std::memory_order_relaxed);
  return defer.write;
}

}  // namespace tmpfsd
