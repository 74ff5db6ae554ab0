// Fault and reserve (FilePagesImpl, file_pages.h): making the pages of a
// range ready to be changed or read. reserve_locked gets frames for them
// (reclaiming when none are free), fault_range_locked brings swapped and
// zero pages into frames and waits for their reads, wait_busy_locked waits
// for pages under I/O or pinned by a reply. Called by write (write.cc),
// read (read.cc, reserve only) and the zeroing of truncate and punch hole
// (truncate.cc).
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

// Reserves frames for the pages of [first, last] that want one
// (wants_frame), plus `extra`. May drop and retake mu_ to reclaim; the
// count is redone every time. ENOSPC: no frames and nothing to reclaim.
Result<FramePool::Reservation> FilePagesImpl::reserve_locked(uint64_t first, uint64_t last,
                                                             uint64_t extra, bool for_write) {
  for (int attempt = 0, gave_up = 0;; ++attempt) {
    uint64_t need = extra;
    index_.visit_range(first, last + 1, [&](uint64_t, PagePlace place) {
      need += wants_frame(place, for_write);
      return true;
    });
    if (need == 0) return FramePool::Reservation{};
    const uint64_t keep = for_write ? st_.write_headroom : 0;
    if (auto r = st_.pool->reserve(need, keep)) {
      if (st_.reclaimer && st_.pool->frames_available() < st_.reclaimer->high()) {
        st_.reclaimer->kick();
      }
      return std::move(r).value();
    }
    if (!st_.swap || need > st_.pool->frames_total() || gave_up >= 2) return Errno{ENOSPC};
    if (attempt == 0) st_.frame_waits.fetch_add(1, std::memory_order_relaxed);
    if (st_.reclaimer) st_.reclaimer->kick();
    // The caller's lock object still owns mu_: it is held again on return.
    mu_.unlock();
    if (!direct_reclaim(st_, need + keep)) ++gave_up;
    mu_.lock();
  }
}

// Makes every present page of [first, last] resident with valid bytes and,
// for a write, reserves `extra` more frames into req.frames (its new
// pages). This is the synchronous form, for writers and zeroing: the
// calling thread waits for the slot reads, with mu_ held. A swapped page
// that [off, end) covers whole and that is about to be written is not
// read. May drop and retake mu_ to reclaim; everything is re-checked
// after. Errors: EIO (a swap read failed: that page stays in swap,
// readable later; pages already read stay resident), ENOSPC (no frames and
// nothing to reclaim).
Status FilePagesImpl::fault_range_locked(FaultRequest& req) {
  const uint64_t first = req.first;
  const uint64_t last = req.last;
  const bool for_write = req.for_write;
  Deferral* defer = req.defer;
  auto covered = [&req, this](uint64_t page) {
    const uint64_t pstart = page << st_.page_shift;
    return req.for_write && req.off <= pstart && req.end >= pstart + page_size();
  };
  auto reserved = reserve_locked(first, last, req.extra, for_write);
  if (!reserved) return reserved.status();
  FramePool::Reservation frames = std::move(reserved).value();

  struct Whole {  // swapped, overwritten whole: bound only if nothing fails
    uint64_t page;
    Frame* frame;
    swapdev::SwapSlot slot;
  };
  SmallVec<Whole, 16> wholes;
  SmallVec<Pmap*, kInlineIovecs> fresh;
  {
    swapdev::IoBatch plug(*st_.swap);
    index_.update_range(first, last + 1,
                        [&](uint64_t page, PagePlace place) REQUIRES(mu_) -> PagePlace {
                          if (place.is_pmap()) {
                            Pmap* p = place.pmap();
                            if (!p->read_pending() && p->read_error() && !covered(page))
                              submit_swap_in_locked(p);
                            return place;
                          }
                          if (!wants_frame(place, for_write)) return place;
                          FramePool::Taken t = frames.take();
                          if (place.is_zero()) {
                            if (!t.zeroed) std::memset(t.frame->bytes().data(), 0, page_size());
                            Pmap* p = bind_locked(page, t.frame);
                            if (place.zero_uptodate()) p->set_uptodate();
                            p->set_referenced();
                            fresh.push_back(p);
                            return PagePlace::resident(p);
                          }
                          const swapdev::SwapSlot slot = place.device_slot();
                          if (covered(page)) {
                            wholes.push_back({page, t.frame, slot});
                            return place;
                          }
                          Pmap* p = start_swap_in_locked(page, t.frame, slot);
                          p->set_referenced();
                          fresh.push_back(p);
                          return PagePlace::resident(p);
                        });
  }
  st_.lists.add_new(fresh.span());
  for (;;) {
    // A write need not wait for the swap-in of a page it covers only in
    // part (its first or last): it leaves its bytes for it to the
    // completion. Those pages are not waited for.
    SmallVec<Pmap*, 2> skip;
    if (defer) {
      for (uint64_t page : {first, last}) {
        const PagePlace place = index_.place(page);
        if (covered(page) || !place.is_pmap()) continue;
        Pmap* p = place.pmap();
        if (p->read_pending() && (skip.empty() || skip.back() != p)) skip.push_back(p);
      }
    }
    wait_busy_locked(first, last, req.how, skip.span());

    Status status;
    index_.visit_range(first, last + 1, [&](uint64_t page, PagePlace place) {
      if (place.is_pmap() && place.pmap()->read_error() && !covered(page)) {
        status = Errno{EIO};
      }
      return status.is_ok();
    });
    if (!status) {
      // The write will not happen: pages it would have overwritten whole
      // stay as they are, in swap.
      for (const Whole& h : wholes.span()) st_.pool->free(h.frame);
      return status;
    }
    // Nothing can fail after this: the bytes may be handed over.
    if (skip.empty() || defer_locked(skip.span(), *defer)) break;
    defer = nullptr;  // a read finished first: wait for every page instead
  }
  SmallVec<Pmap*, 16> bound;
  for (const Whole& h : wholes.span()) {
    st_.swap->free(h.slot);  // the write replaces it all
    Pmap* p = bind_locked(h.page, h.frame);
    // Until the write copies in, the frame must not pass for zeros-and-clean.
    p->mark_dirty(st_.all_blocks);
    p->set_uptodate();
    p->set_referenced();
    index_.set(h.page, PagePlace::resident(p));
    st_.pages_swapped.fetch_sub(1, std::memory_order_relaxed);
    bound.push_back(p);
  }
  st_.lists.add_new(bound.span());
  // Pages that failed an earlier read and are now overwritten whole: the
  // slot's copy is given up, the write supplies every byte.
  index_.visit_range(first, last + 1, [&](uint64_t page, PagePlace place) REQUIRES(mu_) {
    if (!place.is_pmap() || !covered(page)) return true;
    Pmap* p = place.pmap();
    if (p->read_error()) {
      p->clear_read_error();
      drop_slot_locked(p);
      p->mark_dirty(st_.all_blocks);
    }
    return true;
  });
  if (for_write) req.frames = std::move(frames);  // what is left: `extra`
  return Status::ok();
}

// Waits until no pmap in [first, last] is under writeback or swap-in or
// pinned by a reply. The completions take no file mutex, so waiting with
// mu_ held cannot deadlock. kCopy (writes, with writeback_copy): a page
// under writeback is copied to a new frame instead when one is free now
// (copy_under_writeback_locked); the caller then writes into the copy.
// `skip`: pages under swap-in that the caller's write leaves to their
// completion (Deferral).
void FilePagesImpl::wait_busy_locked(uint64_t first, uint64_t last, OnWriteback how,
                                     std::span<Pmap* const> skip) {
  const bool copy = how == OnWriteback::kCopy && st_.writeback_copy;
  for (bool waited = false;;) {
    bool busy = false;
    bool on_writeback = false;
    index_.visit_range(first, last + 1, [&](uint64_t, PagePlace place) REQUIRES(mu_) {
      if (place.is_pmap()) {
        Pmap* p = place.pmap();
        if (std::ranges::find(skip, p) != skip.end()) return true;
        // Only the writeback's pin: nobody replies from the frame.
        if (copy && p->writeback() && p->io_count() == 1 &&
            (p->copied() || copy_under_writeback_locked(p))) {
          return true;
        }
        // io_count: also a reply in flight from this page (an
        // asynchronous read's pins): a write waits for it, so a reply
        // never carries half-old, half-new bytes. Reclaim's pins are
        // transient (it cannot take mu_ from us and puts the page back).
        busy = p->writeback() || p->read_pending() || p->io_count() != 0;
        on_writeback = p->writeback();
      }
      return !busy;
    });
    if (!busy) return;
    if (!waited && on_writeback) st_.writeback_waits.fetch_add(1, std::memory_order_relaxed);
    waited = true;
    st_.wait_progress();
  }
}

}  // namespace tmpfsd
