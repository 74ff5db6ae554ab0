// Truncate and punch hole (FilePagesImpl, file_pages.h): freeing pages
// (free_range_locked, also ~FilePages's) and zeroing the edges.
#include "core/page_cache/file_pages.h"

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
    } else if (place.paged_out()) {
      slots.push_back(place.device_slot());
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

}  // namespace tmpfsd
