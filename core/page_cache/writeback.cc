// The writeback path: a dirty page's swap write (FilePagesImpl::
// write_back_locked, from page_out_locked in evict.cc), its completion
// (Writeback, the seed's generic_writepage), and a writer's copy of a page
// whose write is in flight (copy_under_writeback_locked, --writeback-conflict
// copy). Policy: reclaimer.h.
#include "core/page_cache/file_pages.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <mutex>

#include <spdlog/spdlog.h>

#include "swapdev/swap_device.h"

namespace tmpfsd {

namespace {

// Pages in writeback at once, at most (a quarter of the frames): the rest of
// the frames stay available for faults and writers.
uint64_t writeback_cap(const PageCache::State& st) {
  return std::max<uint64_t>(8, st.pool->frames_total() / 4);
}

// `mask` with each group of 2^k bits folded into one bit: a block bitmap in
// blocks 2^k times larger.
uint64_t coarsen(uint64_t mask, unsigned k) {
  if (k == 0) return mask;
  const unsigned group = 1u << k;
  const uint64_t ones = group >= 64 ? ~uint64_t{0} : (uint64_t{1} << group) - 1;
  uint64_t out = 0;
  for (unsigned i = 0; i * group < 64; ++i)
    if ((mask >> (i * group)) & ones) out |= uint64_t{1} << i;
  return out;
}

}  // namespace

// One page's swap write in flight (docs/design.md's Writeback, the seed's
// generic_writepage): made by page_out_locked under the file's mutex, with
// kWriteback set and the isolating pin handed to it; finished by done() on
// the device's completion thread. It owns p's dirty bits and its frame's
// slot from start() until done() clears kWriteback.
class Writeback {
 public:
  // Writes the whole frame to `slot` (a fresh one), or with `partial`, the
  // blocks `mask` (of 2^shift bytes) into the slot the frame already has.
  static void start(PageCache::State& st, Pmap* p, swapdev::SwapSlot slot, bool background,
                    bool partial, uint64_t mask = 0, unsigned shift = 0) {
    Writeback wb{&st, p, p->frame(), slot, background, partial};
    p->set_writeback();
    st.writeback_in_flight.fetch_add(1, std::memory_order_relaxed);
    // The seal binds the slot's bytes to this page of this file.
    const swapdev::PageOwner owner = p->file()->owner(p->index());
    if (partial) {
      st.swap->write_blocks(slot, wb.f_->bytes(), owner, mask, shift,
                            [wb](int err) { wb.done(err); });
    } else {
      const std::span<const std::byte> bytes = wb.f_->bytes();
      st.swap->write(slot, {&bytes, 1}, owner, [wb](int err) { wb.done(err); });
    }
  }

 private:
  Writeback(PageCache::State* st, Pmap* p, Frame* f, swapdev::SwapSlot slot, bool background,
            bool partial)
      : st_(st), p_(p), f_(f), slot_(slot), background_(background), partial_(partial) {}
  void done(int err) const;

  PageCache::State* st_;
  Pmap* p_;
  Frame* f_;                // the frame written (a copy may have replaced it in p)
  swapdev::SwapSlot slot_;  // written to
  bool background_;         // counted as background cleaning
  bool partial_;            // only dirty blocks, into the frame's own slot
};

// Writeback completion, on the device's completion thread. Takes no file
// mutex: it owns p's dirty bits and its frame's slot until it clears
// kWriteback, and gives the pin back with the pmap on a list (putback_unpin)
// as its last touch of p. partial_: the dirty blocks were rewritten in the
// slot the frame already had (write_blocks).
void Writeback::done(int err) const {
  PageCache::State& st = *st_;
  Pmap* p = p_;
  Frame* f = f_;
  if (p->begin_writeback_completion()) {
    // A writer copied the page to a new frame during the write
    // (copy_under_writeback_locked): f is ours alone now, and neither it
    // nor the slot holds the page any more.
    if (partial_) {
      st.drop_slot(f);  // f's slot is slot_
    } else {
      st.swap->free(slot_);
    }
    f->set_owner(nullptr);
    st.pool->free(f);
    p->mark_dirty(st.all_blocks);
    if (err != 0) st.writeback_errors.fetch_add(1, std::memory_order_relaxed);
    st.writeback_in_flight.fetch_sub(1, std::memory_order_relaxed);
    p->end_writeback();
    st.lists.putback_unpin(p, PmapLists::Where::kActiveHead);
    st.notify_progress();
    return;
  }
  if (err == 0) {
    p->clear_dirty(~uint64_t{0});
    if (!partial_) {
      f->set_swap_slot(slot_);
      st.swap_cached.fetch_add(1, std::memory_order_relaxed);
    } else {
      st.partial_writebacks.fetch_add(1, std::memory_order_relaxed);
    }
    st.writebacks.fetch_add(1, std::memory_order_relaxed);
    if (background_) st.background_cleaned.fetch_add(1, std::memory_order_relaxed);
  } else {
    // -EIO, -ENOSPC...: the slot holds nothing of use (a failed partial
    // rewrite leaves it poisoned); the page stays resident and, with no
    // slot, wholly dirty. It goes to the active list so it is not retried
    // at once.
    if (partial_) {
      st.drop_slot(f);  // f's slot is slot_
      p->mark_dirty(st.all_blocks);
    } else {
      st.swap->free(slot_);
    }
    st.writeback_errors.fetch_add(1, std::memory_order_relaxed);
    // -ENOSPC is the compressed pool with no swap file turning a page away
    // (swapdev/slot_only_device.h): routine, not worth a line each.
    spdlog::log(err == -ENOSPC ? spdlog::level::debug : spdlog::level::warn,
                "writeback to slot {} failed: {}", slot_.value, std::strerror(-err));
  }
  st.writeback_in_flight.fetch_sub(1, std::memory_order_relaxed);
  p->end_writeback();
  // Clean pages go to the inactive tail: the next pass drops them.
  st.lists.putback_unpin(
      p, err == 0 ? PmapLists::Where::kInactiveTail : PmapLists::Where::kActiveHead);
  st.notify_progress();
}

// p is dirty, isolated and pinned by the caller (page_out_locked); this
// file's mutex is held exclusive. Starts its swap write (the pin becomes the
// I/O's), or puts it back when too many writes are in flight or the swap is
// full.
PageOut FilePagesImpl::write_back_locked(Pmap* p, ScanControl& sc) {
  using Where = PmapLists::Where;
  Frame* f = p->frame();
  if (st_.writeback_in_flight.load(std::memory_order_relaxed) >= writeback_cap(st_)) {
    st_.lists.putback_unpin(p, Where::kInactiveHead);
    return PageOut::kKept;
  }
  if (f->has_slot() && st_.swap->pinned(f->swap_slot())) {
    // The slot is a saved image's (--persist): the whole page goes to a
    // new one; the device holds the free.
    st_.drop_slot(f);
  }
  if (f->has_slot()) {
    // Swapped in, then partly rewritten (dirty_locked): the slot holds the
    // rest, so only the dirty blocks go out, in the medium's block size.
    const unsigned shift = std::max(st_.block_shift, st_.swap->min_block_shift());
    const uint64_t mask = coarsen(p->dirty_blocks() & st_.all_blocks, shift - st_.block_shift);
    Writeback::start(st_, p, f->swap_slot(), sc.background, /*partial=*/true, mask, shift);
    return PageOut::kWriteback;
  }
  swapdev::SwapSlot hint;
  if (sc.last_file == this && sc.last_index + 1 == p->index()) {
    hint = swapdev::SwapSlot(sc.last_slot + 1);
  }
  const swapdev::SlotRun run = st_.swap->allocate(1, hint);
  if (run.count == 0) {
    st_.lists.putback_unpin(p, Where::kActiveHead);
    return PageOut::kSwapFull;
  }
  sc.last_file = this;
  sc.last_index = p->index();
  sc.last_slot = run.first.value;
  // The pin is the I/O's now; writers of this page wait for kWriteback.
  Writeback::start(st_, p, run.first, sc.background, /*partial=*/false);
  return PageOut::kWriteback;
}

// p is under writeback, pinned only by its I/O: copies its frame to a frame
// free now and binds p to the copy, leaving the old frame to the I/O
// (Writeback::done frees it, with the slot, and marks p wholly dirty). The
// copy is made before p is marked copied: until then the completion may
// still free the old frame, and if it has begun, the copy is given up and
// the caller waits. False: no frame free, or the completion has begun.
bool FilePagesImpl::copy_under_writeback_locked(Pmap* p) {
  auto r = st_.pool->reserve(1);
  if (!r) return false;
  FramePool::Taken t = r.value().take();
  Frame* old = p->frame();
  std::memcpy(t.frame->bytes().data(), old->bytes().data(), page_size());
  if (!p->try_mark_copied()) {
    st_.pool->free(t.frame);
    return false;
  }
  t.frame->set_owner(p);
  p->set_frame(t.frame);
  st_.writeback_copies.fetch_add(1, std::memory_order_relaxed);
  return true;
}

}  // namespace tmpfsd
