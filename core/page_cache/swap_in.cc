// Asynchronous swap-in and pending writes (FilePagesImpl, file_pages.h).
#include "core/page_cache/file_pages.h"

#include <cassert>
#include <cstring>
#include <memory>
#include <mutex>

#include <spdlog/spdlog.h>

#include "core/page_cache/swap_in.h"
#include "swapdev/swap_device.h"

namespace tmpfsd {

// ---------------------------------------------------------------------------
// Asynchronous swap-in
//
// A read that meets swapped pages does not wait for them. Under the file's
// mutex (exclusive) it binds each one to a fresh frame as a pmap under
// swap-in (kReadPending; pinned by its I/O; on the inactive list; the slot
// kept as the frame's swap-cache slot), queues the slot reads in one batch,
// pins every page of its range for the reply, registers in the page wait
// table for the pages still in flight, and returns: the FUSE worker is free.
// The reply (`done`) runs from the completion of the last read it waits
// for, on the device's completion thread, straight from the frames.
//
// A write that covers such a page only in part (its first or last page)
// does not wait either: it copies its bytes for the page into the page wait
// table and writes the rest (defer_locked); the completion puts them in
// before anyone can see the page, and replies the write (start_write). A
// write covering a swapped page whole needs no read at all. Other writers
// of the page (one whose bytes are already waiting there comes first),
// truncate and punch wait for it with the mutex held (wait_busy_locked):
// completions take no file mutex.
// A failed read leaves the pmap with kReadError (frame bytes garbage, slot
// still the page's): the read that waited gets EIO, the next access reads
// the slot again, and reclaim, finding it clean with a slot, turns it back
// into a swap word.

void AsyncRequest::finish() {
  const int e = wait.err.load(std::memory_order_relaxed);
  try {
    reply(e);
  } catch (const std::exception& ex) {
    spdlog::error("{} reply failed: {}", what(), ex.what());
  }
  PageCache::State& state = st_;
  delete this;
  state.reads_in_flight.fetch_sub(1, std::memory_order_release);
  state.notify_progress();  // truncate, unlink and drain_reads wait for this
}

// A pending write's bytes for one page under swap-in, kept in the page wait
// table (State::write_patches) until the page's completion copies them in.
struct WritePatch {
  FilePages::PendingWrite* write;
  uint32_t from;  // bytes [from, to) of the page
  uint32_t to;
  uint64_t blocks;  // their dirty bits
  std::unique_ptr<std::byte[]> bytes;
};

namespace {

// Completion of the slot read of p (swap-in or readahead), on the device's
// completion thread; no file mutex. Clears kReadPending and takes the
// page's waiters in one critical section of the wait table, then gives the
// I/O's pin back: p may be freed after that.
//
// A pending write's patch for p goes in first, in the same critical section:
// the completion owns the frame, its slot and p's dirty bits until it clears
// kReadPending, so nobody sees the page without the write's bytes. On a
// failed read the patch is dropped and the write gets EIO.
void swap_in_done(PageCache::State& st, Pmap* p, swapdev::SwapSlot slot, int err) {
  if (err == 0) {
    st.swap_ins.fetch_add(1, std::memory_order_relaxed);
  } else {
    p->set_read_error();
    st.swap_in_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::warn("swap-in of slot {} failed: {}", slot.value, std::strerror(-err));
  }
  SmallVec<ReadRequest*, 8> wake;
  std::unique_ptr<WritePatch> patch;
  swapdev::SwapSlot dropped;  // invalid: none
  {
    MutexLock lock(st.read_wait_mu);
    if (auto it = st.write_patches.find(p); it != st.write_patches.end()) {
      patch.reset(it->second);
      st.write_patches.erase(it);
      if (err == 0) {
        Frame* f = p->frame();
        std::memcpy(f->bytes().data() + patch->from, patch->bytes.get(), patch->to - patch->from);
        p->mark_dirty(patch->blocks);
        // Every block dirty: the slot holds nothing of use (dirty_locked).
        if ((p->dirty_blocks() & st.all_blocks) == st.all_blocks) dropped = st.take_slot(f);
      }
    }
    p->clear_read_pending();
    auto [from, to] = st.read_waiters.equal_range(p);
    for (auto it = from; it != to; ++it) wake.push_back(it->second);
    st.read_waiters.erase(from, to);
  }
  if (dropped.valid()) st.swap->free(dropped);
  p->unpin();
  st.notify_progress();  // writers in wait_busy_locked
  for (ReadRequest* r : wake.span()) r->page_done(err);
  if (patch) patch->write->page_done(err);
}

}  // namespace

// Queues the read of p's slot into its frame (p's frame holds its slot).
void FilePagesImpl::submit_swap_in_locked(Pmap* p) {
  p->clear_read_error();
  p->set_read_pending();
  p->pin();  // the I/O's
  Frame* f = p->frame();
  const swapdev::SwapSlot slot = f->swap_slot();
  std::span<std::byte> bytes = f->bytes();
  PageCache::State* st = &st_;
  st_.swap->read(slot, {&bytes, 1}, owner(p->index()),
                 [st, p, slot](int err) { swap_in_done(*st, p, slot, err); });
}

// A swapped page (its word is the compact word of `slot`) becomes a pmap
// under swap-in bound to `frame`. The caller stores it in the index and adds
// it to the lists.
Pmap* FilePagesImpl::start_swap_in_locked(uint64_t page, Frame* frame, swapdev::SwapSlot slot) {
  Pmap* p = bind_locked(page, frame);
  frame->set_swap_slot(slot);  // swap cache: the page is clean
  st_.swap_cached.fetch_add(1, std::memory_order_relaxed);
  p->set_uptodate();  // swapped implies written
  st_.pages_swapped.fetch_sub(1, std::memory_order_relaxed);
  submit_swap_in_locked(p);
  return p;
}

// Under mu_: r waits for p if p is still under swap-in; false when its read
// has completed already.
bool FilePagesImpl::await_locked(Pmap* p, ReadRequest* r) {
  MutexLock lock(st_.read_wait_mu);
  if (!p->read_pending()) return false;
  st_.read_waiters.emplace(p, r);
  r->wait.add();
  return true;
}
// Hands the write's bytes for `pages` (under swap-in, covered in part: at
// most its first and last page) to their completions, all or none, in one
// critical section of the page wait table. False when one of them is no
// longer under swap-in (the caller then waits for it), or already holds
// another write's bytes (their order must be kept: wait too).
bool FilePagesImpl::defer_locked(std::span<Pmap* const> pages, Deferral& d) {
  assert(!pages.empty() && pages.size() <= 2 && d.pages.empty() && !d.write);
  const uint64_t end = d.off + d.data.size();
  std::array<std::unique_ptr<WritePatch>, 2> made;
  for (size_t i = 0; i < pages.size(); ++i) {
    const uint64_t pstart = pages[i]->index() << st_.page_shift;
    const size_t from = d.off > pstart ? static_cast<size_t>(d.off - pstart) : 0;
    const size_t to = static_cast<size_t>(std::min<uint64_t>(end - pstart, page_size()));
    made[i] = std::make_unique<WritePatch>();
    made[i]->from = static_cast<uint32_t>(from);
    made[i]->to = static_cast<uint32_t>(to);
    made[i]->blocks = block_bits(from, to);
    made[i]->bytes = std::make_unique_for_overwrite<std::byte[]>(to - from);
    std::memcpy(made[i]->bytes.get(), d.data.data() + (pstart + from - d.off), to - from);
  }
  MutexLock lock(st_.read_wait_mu);
  for (Pmap* p : pages) {
    if (!p->read_pending() || st_.write_patches.contains(p)) return false;
  }
  d.write = new FilePages::PendingWrite(st_);
  for (size_t i = 0; i < pages.size(); ++i) {
    made[i]->write = d.write;
    d.write->wait.add();
    st_.write_patches.emplace(pages[i], made[i].release());
    pages[i]->set_referenced();
    d.pages.push_back(pages[i]);
  }
  return true;
}

}  // namespace tmpfsd
