// Read and readahead (FilePagesImpl, file_pages.h): replies from frame
// memory, swap-in of what a read meets, and reading ahead of a sequential
// reader.
#include "core/page_cache/file_pages.h"

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "core/page_cache/swap_in.h"
#include "swapdev/swap_device.h"

namespace tmpfsd {

// Pins every pmap of [off, off + len) into `pins` and appends the iovecs of
// a reply to `iov`: frame memory for pages with a pmap (valid or not yet:
// the caller knows), the shared zero region for holes and zero pages.
// *ra_hit: a page read ahead was used. No swapped page in the range (the
// caller faulted them).
void FilePagesImpl::collect_locked(uint64_t off, size_t len, SmallVec<iovec, kInlineIovecs>& iov,
                                   SmallVec<Pmap*, kInlineIovecs>& pins, bool* ra_hit) {
  const uint64_t end = off + len;
  const std::byte* zeros = st_.zeros.data();
  uint64_t chunk_no = UINT64_MAX;  // cache of the index chunk being read
  const FileIndex::Chunk* chunk = nullptr;
  for (uint64_t pos = off; pos < end;) {
    const uint64_t page = pos >> st_.page_shift;
    const size_t in = pos & page_mask();
    const size_t n = static_cast<size_t>(std::min<uint64_t>(page_size() - in, end - pos));
    if ((page >> FileIndex::kChunkShift) != chunk_no) {
      chunk_no = page >> FileIndex::kChunkShift;
      chunk = index_.find_chunk(chunk_no);
    }
    const PagePlace place = chunk ? chunk->place(page & FileIndex::kMask) : PagePlace::hole();
    const std::byte* base;
    if (place.is_hole() || place.is_zero()) {
      if (!iov.empty() && iov.back().iov_base == zeros &&
          iov.back().iov_len + n <= st_.zeros.size()) {
        iov.back().iov_len += n;
        pos += n;
        continue;
      }
      base = zeros;
    } else {
      assert(place.is_pmap() && "collect_locked over a swapped page");
      Pmap* p = place.pmap();
      p->pin();
      p->set_referenced();
      if (p->test_and_clear_readahead()) {
        *ra_hit = true;
        st_.readahead_hits.fetch_add(1, std::memory_order_relaxed);
      }
      pins.push_back(p);
      base = p->frame()->bytes().data() + in;
    }
    if (!iov.empty() && base != zeros &&
        static_cast<const std::byte*>(iov.back().iov_base) + iov.back().iov_len == base) {
      iov.back().iov_len += n;  // adjacent frames
    } else {
      iov.push_back(iovec{const_cast<std::byte*>(base), n});
    }
    pos += n;
  }
}

// Reads ahead: queues swap-ins of the swapped pages in [from, from + count)
// into frames that are free now (never reclaims for it, and leaves the
// reclaimer's watermark alone). The pages are marked kReadahead; a read
// that uses one counts a hit and reads further ahead.
void FilePagesImpl::readahead_locked(uint64_t from, uint64_t count) {
  SmallVec<uint64_t, 64> pages;
  index_.visit_range(from, from + count, [&](uint64_t page, PagePlace place) {
    if (place.paged_out()) pages.push_back(page);
    return true;
  });
  if (pages.empty()) return;
  // Half of the free frames at most, the rest left to writers; the
  // reclaimer is woken, as reserve_locked wakes it, to make up what this
  // takes below its watermark (at the budget, a window limited to frames
  // above the watermark read nothing ahead: the reclaimer keeps just that
  // many free).
  const uint64_t n = std::min<uint64_t>(pages.size(), st_.pool->frames_available() / 2);
  FramePool::Reservation frames;
  bool reserved = false;
  if (n > 0) {
    if (auto r = st_.pool->reserve(n)) {
      frames = std::move(r).value();
      reserved = true;
    }
  }
  if (st_.reclaimer && st_.pool->frames_available() < st_.reclaimer->high()) st_.reclaimer->kick();
  if (!reserved) return;
  SmallVec<Pmap*, 64> fresh;
  for (uint64_t page : pages.span().first(n)) {
    const swapdev::SwapSlot slot = index_.place(page).device_slot();
    Pmap* p = start_swap_in_locked(page, frames.take().frame, slot);
    index_.set(page, PagePlace::resident(p));
    p->set_readahead();
    fresh.push_back(p);
  }
  st_.lists.add_new(fresh.span());
  st_.readahead_pages.fetch_add(n, std::memory_order_relaxed);
}

uint64_t FilePagesImpl::readahead_window(uint64_t pages) const {
  const uint64_t cap = std::max<uint64_t>(1, st_.pool->frames_total() / 8);
  return std::min(cap, std::clamp<uint64_t>(4 * pages, 32, 1024));
}

void FilePagesImpl::read(uint64_t off, size_t len, FilePages::ReadDone done) {
  if (len == 0) {
    done(Status::ok(), {});
    return;
  }
  const uint64_t first = off >> st_.page_shift;
  const uint64_t last = (off + len - 1) >> st_.page_shift;
  // Sequential: this read starts where the previous one ended (or uses a
  // page read ahead, below).
  const bool sequential = next_page_.exchange(last + 1, std::memory_order_relaxed) == first;
  uint64_t faults = 0;
  {
    ReaderLock lock(mu_);
    index_.visit_range(first, last + 1, [&](uint64_t, PagePlace place) {
      faults += place.paged_out() || (place.is_pmap() && !place.pmap()->bytes_valid());
      return true;
    });
    if (faults == 0) {
      // Everything resident: reply from the frames under the shared lock.
      SmallVec<iovec, kInlineIovecs> iov;
      SmallVec<Pmap*, kInlineIovecs> pins;
      bool ra_hit = false;
      collect_locked(off, len, iov, pins, &ra_hit);
      struct Unpin {
        SmallVec<Pmap*, kInlineIovecs>& pins;
        ~Unpin() {
          for (Pmap* p : pins.span()) p->unpin();
        }
      } unpin{pins};
      done(Status::ok(), iov.span());
      if (!ra_hit || !st_.swap) return;
    }
  }
  if (faults == 0) {
    // A page read ahead was used: keep the window ahead of the reader.
    WriterLock lock(mu_);
    swapdev::IoBatch plug(*st_.swap);
    readahead_locked(last + 1, readahead_window(last - first + 1));
    return;
  }
  // Too many swapped pages to hold in frames at once: read in pieces into
  // one buffer (a copy, only on this rare path: reads larger than a quarter
  // of --memory).
  const uint64_t max_fault = std::max<uint64_t>(1, st_.pool->frames_total() / 4);
  if (faults > max_fault) {
    std::vector<std::byte> buf(len);
    Status status;
    const uint64_t end = off + len;
    for (uint64_t pos = off; pos < end && status.is_ok();) {
      const uint64_t next = std::min(end, ((pos >> st_.page_shift) + max_fault) << st_.page_shift);
      read_and_wait([&](FilePages::ReadDone d) { read(pos, next - pos, std::move(d)); },
                    [&](Status s, std::span<const iovec> iov) {
                      if (!s) {
                        status = s;
                        return;
                      }
                      std::byte* dst = buf.data() + (pos - off);
                      for (const iovec& v : iov) {
                        std::memcpy(dst, v.iov_base, v.iov_len);
                        dst += v.iov_len;
                      }
                    });
      pos = next;
    }
    if (!status) return done(status, {});
    const iovec v{buf.data(), buf.size()};
    done(Status::ok(), {&v, 1});
    return;
  }

  WriterLock lock(mu_);
  auto reserved = reserve_locked(first, last, 0, /*for_write=*/false);
  if (!reserved) {
    lock.unlock();
    return done(reserved.status(), {});
  }
  FramePool::Reservation frames = std::move(reserved).value();
  auto* r = new ReadRequest(st_, std::move(done));
  bool ra_hit = false;
  {
    swapdev::IoBatch plug(*st_.swap);
    SmallVec<Pmap*, kInlineIovecs> fresh;
    index_.update_range(
        first, last + 1, [&](uint64_t page, PagePlace place) REQUIRES(mu_) -> PagePlace {
          if (place.paged_out()) {
            Pmap* p = start_swap_in_locked(page, frames.take().frame, place.device_slot());
            fresh.push_back(p);
            return PagePlace::resident(p);
          }
          if (place.is_pmap()) {
            Pmap* p = place.pmap();
            if (!p->read_pending() && p->read_error()) submit_swap_in_locked(p);  // retry
          }
          return place;
        });
    st_.lists.add_new(fresh.span());
    collect_locked(off, len, r->iov, r->pins, &ra_hit);
    uint32_t awaited = 0;
    for (Pmap* p : r->pins.span()) {
      if (await_locked(p, r)) {
        ++awaited;
      } else if (p->read_error()) {
        r->wait.err.store(-EIO, std::memory_order_relaxed);
      }
    }
    if (awaited > 0) st_.reads_async.fetch_add(1, std::memory_order_relaxed);
    if (sequential || ra_hit) readahead_locked(last + 1, readahead_window(last - first + 1));
  }
  lock.unlock();
  r->page_done(0);  // armed: replies now if nothing is in flight any more
}

}  // namespace tmpfsd
