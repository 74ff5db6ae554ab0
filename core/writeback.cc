// Writeback: paging one page out (FilePagesImpl::page_out_locked) and the
// completion of its swap write (the seed's generic_writepage). Policy:
// reclaimer.h.
#include "core/file_pages.h"

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

// Writeback completion, on the device's completion thread. Takes no file
// mutex: it owns p's dirty bits and its frame's slot until it clears
// kWriteback, and gives the pin back with the pmap on a list (putback_unpin)
// as its last touch of p. `partial`: the dirty blocks were rewritten in the
// slot the frame already had (write_blocks).
void writeback_done(PageCache::State& st, Pmap* p, Frame* f, swapdev::SwapSlot slot, bool background,
                    bool partial, int err) {
  if (p->begin_writeback_completion()) {
    // A writer copied the page to a new frame during the write
    // (copy_under_writeback_locked): f is ours alone now, and neither it
    // nor the slot holds the page any more.
    if (partial) {
      f->clear_swap_slot();
      st.swap_cached.fetch_sub(1, std::memory_order_relaxed);
    }
    st.swap->free(slot);
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
    if (!partial) {
      f->set_swap_slot(slot);
      st.swap_cached.fetch_add(1, std::memory_order_relaxed);
    } else {
      st.partial_writebacks.fetch_add(1, std::memory_order_relaxed);
    }
    st.writebacks.fetch_add(1, std::memory_order_relaxed);
    if (background) st.background_cleaned.fetch_add(1, std::memory_order_relaxed);
  } else {
    // -EIO, -ENOSPC...: the slot holds nothing of use (a failed partial
    // rewrite leaves it poisoned); the page stays resident and, with no
    // slot, wholly dirty. It goes to the active list so it is not retried
    // at once.
    if (partial) {
      f->clear_swap_slot();
      st.swap_cached.fetch_sub(1, std::memory_order_relaxed);
      p->mark_dirty(st.all_blocks);
    }
    st.swap->free(slot);
    st.writeback_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("writeback to slot {} failed: {}", slot.value, std::strerror(-err));
  }
  st.writeback_in_flight.fetch_sub(1, std::memory_order_relaxed);
  p->end_writeback();
  // Clean pages go to the inactive tail: the next pass drops them.
  st.lists.putback_unpin(p, err == 0 ? PmapLists::Where::kInactiveTail
                                     : PmapLists::Where::kActiveHead);
  st.notify_progress();
}

}  // namespace

// p is isolated and pinned by the caller; this file's mutex is held
// exclusive. Every path ends with p put back, freed, or handed to I/O.
void FilePagesImpl::page_out_locked(Pmap* p, ScanControl& sc) {
  using Where = PmapLists::Where;
  if (p->io_count() != 1) return st_.lists.putback_unpin(p, Where::kInactiveHead);
  if (p->test_and_clear_referenced()) return st_.lists.putback_unpin(p, Where::kActiveHead);
  Frame* f = p->frame();
  if (!p->dirty()) {
    if (!sc.evict) return st_.lists.putback_unpin(p, Where::kInactiveHead);
    PagePlace word;
    if (f->has_slot()) {
      word = PagePlace::swapped(f->swap_slot());
      f->clear_swap_slot();
      st_.swap_cached.fetch_sub(1, std::memory_order_relaxed);
      st_.pages_swapped.fetch_add(1, std::memory_order_relaxed);
    } else {
      word = PagePlace::zero(p->uptodate());  // clean, no slot: zeros
    }
    index_.set(p->index(), word);
    f->set_owner(nullptr);
    st_.pool->free(f);
    st_.pages_resident.fetch_sub(1, std::memory_order_relaxed);
    p->unpin();
    delete p;
    st_.metadata.fetch_sub(sizeof(Pmap), std::memory_order_relaxed);
    st_.pages_evicted.fetch_add(1, std::memory_order_relaxed);
    ++sc.freed;
    return;
  }
  if (st_.writeback_in_flight.load(std::memory_order_relaxed) >= writeback_cap(st_)) {
    return st_.lists.putback_unpin(p, Where::kInactiveHead);
  }
  PageCache::State* st = &st_;
  const bool background = sc.background;
  if (f->has_slot()) {
    // Swapped in, then partly rewritten (dirty_locked): the slot holds the
    // rest, so only the dirty blocks go out, in the medium's block size.
    const unsigned shift = std::max(st_.block_shift, st_.swap->min_block_shift());
    const uint64_t mask = coarsen(p->dirty_blocks() & st_.all_blocks, shift - st_.block_shift);
    const swapdev::SwapSlot slot = f->swap_slot();
    ++sc.submitted;
    p->set_writeback();
    st_.writeback_in_flight.fetch_add(1, std::memory_order_relaxed);
    st_.swap->write_blocks(slot, f->bytes(), mask, shift,
                           [st, p, f, slot, background](int err) {
                             writeback_done(*st, p, f, slot, background, true, err);
                           });
    return;
  }
  swapdev::SwapSlot hint;
  if (sc.last_file == this && sc.last_index + 1 == p->index()) {
    hint = swapdev::SwapSlot(sc.last_slot + 1);
  }
  const swapdev::SlotRun run = st_.swap->allocate(1, hint);
  if (run.count == 0) {
    sc.swap_full = true;
    return st_.lists.putback_unpin(p, Where::kActiveHead);
  }
  sc.last_file = this;
  sc.last_index = p->index();
  sc.last_slot = run.first.value;
  ++sc.submitted;
  // The pin is the I/O's now; writers of this page wait for kWriteback.
  p->set_writeback();
  st_.writeback_in_flight.fetch_add(1, std::memory_order_relaxed);
  const std::span<const std::byte> bytes = f->bytes();
  const swapdev::SwapSlot slot = run.first;
  st_.swap->write(run.first, {&bytes, 1}, [st, p, f, slot, background](int err) {
    writeback_done(*st, p, f, slot, background, false, err);
  });
}


}  // namespace tmpfsd
