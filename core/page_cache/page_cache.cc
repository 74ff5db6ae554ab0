// The page cache: PageCache::State, the helpers every FilePagesImpl path
// shares (a new pmap bound to a frame, a page's swap-cache slot and dirty
// bits), FilePages (forwarding to FilePagesImpl), read_and_wait and
// PageCache. The data paths have a file each (file_pages.h lists them).
// Design: docs/design.md; states: pmap.h; the index: file_index.h; locks:
// LOCKING.md.
#include "core/page_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "core/await.h"
#include "core/page_cache/file_pages.h"
#include "core/page_cache/swap_in.h"
#include "swapdev/swap_device.h"

namespace tmpfsd {

namespace {

// Bytes of the shared zero region that holes are read from: large enough
// that a hole of a whole FUSE read (1 MiB) is a handful of iovecs.
constexpr size_t kZeroRegionBytes = 256 * 1024;

}  // namespace

// ---------------------------------------------------------------------------
// PageCache::State

PageCache::State::State(const PageCacheConfig& c, unsigned shift, std::unique_ptr<FramePool> p,
                        std::span<const std::byte> zero_region,
                        std::unique_ptr<swapdev::SwapDevice> dev)
    : page_size(c.page_size),
      page_shift(shift),
      block_shift(std::max(9u, shift - 6)),
      all_blocks(block_shift + 6 <= shift
                     ? ~uint64_t{0}
                     : (uint64_t{1} << (uint64_t{1} << (shift - block_shift))) - 1),
      max_pages(c.max_pages),
      writeback_copy(c.writeback_copy),
      write_headroom(c.write_headroom),
      pool(std::move(p)),
      zeros(zero_region),
      swap(std::move(dev)),
      swap_slots(swap ? swap->total_slots() : 0) {}

PageCache::State::~State() {
  reclaimer.reset();  // first: it runs passes over everything below
  assert(files.load() == 0 && pages_allocated.load() == 0 && pages_resident.load() == 0);
  assert(pages_swapped.load() == 0 && writeback_in_flight.load() == 0);
  munmap(const_cast<std::byte*>(zeros.data()), zeros.size());
}

bool PageCache::State::reserve_pages(uint64_t n) {
  if (n == 0) return true;
  uint64_t cur = pages_allocated.load(std::memory_order_relaxed);
  // With swap, at most one page per slot: then every dirty page can always
  // get a slot (slots in use <= pages - dirty pages), so reclaim can always
  // free a frame and a read of a swapped page never waits forever behind a
  // memory full of dirty pages. Frames are a cache; the slots are the space.
  const uint64_t cap = swap ? swap_slots : 0;
  auto fits = [n](uint64_t used, uint64_t limit) {
    return limit == 0 || (used <= limit && limit - used >= n);
  };
  do {
    if (!fits(cur, max_pages.load(std::memory_order_relaxed))) return false;
    if (cap != 0 && !fits(cur, cap)) return false;
  } while (!pages_allocated.compare_exchange_weak(cur, cur + n, std::memory_order_seq_cst,
                                                  std::memory_order_relaxed));
  // A shrink of size= (set_max_pages) stores the limit and then reads
  // pages_allocated, both seq_cst: either it sees these pages and refuses,
  // or this load sees its limit, and the pages go back if they do not fit.
  if (!fits(cur, max_pages.load(std::memory_order_seq_cst))) {
    unreserve_pages(n);
    return false;
  }
  return true;
}

Pmap* FilePagesImpl::new_pmap_locked(uint64_t page, FramePool::Reservation& frames, bool* zeroed) {
  FramePool::Taken t = frames.take();
  Pmap* p = bind_locked(page, t.frame);
  index_.set(page, PagePlace::resident(p));
  *zeroed = t.zeroed;
  return p;
}

// A new Pmap for `page` bound to `frame` (resident). The caller stores it
// in the index and adds it to the lists.
Pmap* FilePagesImpl::bind_locked(uint64_t page, Frame* frame) {
  auto* p = new Pmap(this, page);
  st_.metadata.fetch_add(sizeof(Pmap), std::memory_order_relaxed);
  p->set_frame(frame);
  frame->set_owner(p);
  st_.pages_resident.fetch_add(1, std::memory_order_relaxed);
  return p;
}

// The page gives up its swap-cache slot. No I/O is in flight on it
// (writeback waited for, faults are synchronous under mu_).
void FilePagesImpl::drop_slot_locked(Pmap* p) {
  if (p->frame()->has_slot()) st_.drop_slot(p->frame());
}

// The page changes in `blocks` (no I/O in flight on it). A swap-cached page
// keeps its slot while part of it is still clean: the slot then holds every
// block but the dirty ones, and writeback rewrites only those
// (page_out_locked). Once every block is dirty the slot holds nothing of
// use and is freed: the page goes to a fresh slot next to its neighbours.
void FilePagesImpl::dirty_locked(Pmap* p, uint64_t blocks) {
  // Copied during its writeback: the completion owns the dirty bits and
  // marks the whole page dirty.
  if (p->writeback()) {
    assert(p->copied());
    return;
  }
  p->mark_dirty(blocks);
  if ((p->dirty_blocks() & st_.all_blocks) == st_.all_blocks) drop_slot_locked(p);
}

// ---------------------------------------------------------------------------
// FilePages

FilePages::FilePages(PageCache& cache) : impl_(std::make_unique<FilePagesImpl>(cache.state())) {}
FilePages::FilePages(PageCache& cache, uint64_t serial)
    : impl_(std::make_unique<FilePagesImpl>(cache.state(), serial)) {}
FilePages::~FilePages() = default;

uint64_t FilePages::serial() const { return impl_->serial(); }
void FilePages::bindings(std::vector<Binding>* out) const { impl_->bindings(out); }
Status FilePages::adopt(std::span<const Binding> bs) { return impl_->adopt(bs); }

void FilePages::read(uint64_t off, size_t len, ReadDone done) {
  impl_->read(off, len, std::move(done));
}

void read_and_wait(const std::function<void(FilePages::ReadDone)>& start,
                   const FilePages::ReadDone& done) {
  // The iovecs are valid only inside the callback: `done` runs there, and
  // the wait ends once it has returned.
  (void)await_callback<Status>([&start, &done](auto finished) {
    start([&done, finished](Status s, std::span<const iovec> iov) {
      done(s, iov);
      finished(s);
    });
  });
}

Status read_into(const std::function<void(FilePages::ReadDone)>& start, std::span<std::byte> out,
                 size_t* got) {
  Status status;
  *got = 0;
  read_and_wait(start, [&](Status s, std::span<const iovec> iov) {
    status = s;
    if (!s) return;
    for (const iovec& v : iov) {
      std::memcpy(out.data() + *got, v.iov_base, v.iov_len);
      *got += v.iov_len;
    }
  });
  return status;
}

Result<FilePages::PendingWrite*> FilePages::start_write(uint64_t off,
                                                        std::span<const std::byte> data) {
  return impl_->write(off, data);
}

void FilePages::when_written(PendingWrite* w, WriteDone done) {
  w->done = std::move(done);
  w->page_done(0);  // armed: runs `done` now if every page is in already
}

Status FilePages::write(uint64_t off, std::span<const std::byte> data) {
  auto w = impl_->write(off, data);
  if (!w) return w.status();
  return wait_for(*w);
}
void FilePages::truncate(uint64_t old_size, uint64_t new_size) {
  impl_->truncate(old_size, new_size);
}
void FilePages::punch_hole(uint64_t off, uint64_t len) { impl_->punch_hole(off, len); }
Status FilePages::allocate(uint64_t off, uint64_t len) { return impl_->allocate(off, len); }
std::optional<uint64_t> FilePages::seek_data(uint64_t off, uint64_t size) const {
  return impl_->seek_data(off, size);
}
std::optional<uint64_t> FilePages::seek_hole(uint64_t off, uint64_t size) const {
  return impl_->seek_hole(off, size);
}
uint64_t FilePages::where(uint64_t first, uint64_t end, std::span<PageRun> out,
                          size_t* count) const {
  return impl_->where(first, end, out, count);
}
uint64_t FilePages::end_present() const { return impl_->end_present(); }
uint64_t FilePages::pages() const { return impl_->pages(); }

swapdev::SwapDevice* PageCache::swap() const { return state_->swap.get(); }

// ---------------------------------------------------------------------------
// PageCache

Result<std::unique_ptr<PageCache>> PageCache::create(const PageCacheConfig& config) {
  return create(config, nullptr);
}

Result<std::unique_ptr<PageCache>> PageCache::create(const PageCacheConfig& config,
                                                     std::unique_ptr<swapdev::SwapDevice> swap) {
  const size_t ps = config.page_size;
  if (swap && swap->page_size() != ps) return Errno{EINVAL};
  if (ps < 4096 || (ps & (ps - 1)) != 0 || ps > (size_t{1} << 30)) return Errno{EINVAL};
  const auto shift = static_cast<unsigned>(std::countr_zero(ps));
  auto pool = FramePool::create(ps, config.memory_bytes / ps);
  if (!pool) return Errno{pool.code()};
  const size_t zero_bytes = std::max(ps, kZeroRegionBytes);
  // Never written: every page of it maps the kernel's zero page.
  void* z =
      mmap(nullptr, zero_bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (z == MAP_FAILED) return Errno{ENOMEM};
  auto state = std::make_unique<State>(
      config, shift, std::move(pool).value(),
      std::span<const std::byte>(static_cast<const std::byte*>(z), zero_bytes), std::move(swap));
  if (state->swap) state->pool->set_warm_limit(state->pool->frames_total());
  // A device that keeps pages in memory (the compressed pool) takes them
  // from the frames: they count against --memory like any page.
  if (state->swap) state->swap->use_pages(&state->frame_pages);
  // With a swap device a used frame stays warm for good, so faulting the
  // untouched ones in ahead of the writers costs RSS only a little earlier
  // than the writers would (frame_pool.h, "Prefaulting"). The window: an
  // eighth of --memory, at least one run, at most 16 MiB (RSS above the
  // frames used; 3-5 ms of writing at full speed).
  if (state->swap && config.background_reclaim) {
    const uint64_t total = state->pool->frames_total();
    state->pool->start_prefault(std::min(std::max(total / 8, FramePool::kPrefaultRun),
                                         std::max<uint64_t>((uint64_t{16} << 20) / ps, 1)));
  }
  // The frame region is not registered with the swap device as io_uring
  // fixed buffers (UringSwapDevice::register_memory could). Registration
  // pins every page of the region: the kernel faults all of --memory in at
  // mount (registering a 1 GiB MAP_NORESERVE region took VmRSS from 3 MiB
  // to 1,052 MiB), where the pool's memory otherwise follows the frames
  // used, as tmpfs's does. And a pinned frame the pool gives back with
  // MADV_DONTNEED keeps the ring on the old physical page while the mapping
  // gets a new one: fixed I/O would then move bytes the page cache never
  // sees. What per-request pinning costs instead has not been measured
  // through the page cache (bench-swapdev registers its buffers, as fio
  // does; docs/measurements.md).
  if (state->swap && config.background_reclaim) {
    state->reclaimer = std::make_unique<Reclaimer>(*state);
  }
  return std::unique_ptr<PageCache>(new PageCache(std::move(state)));
}

PageCache::PageCache(std::unique_ptr<State> state) : state_(std::move(state)) {}
PageCache::~PageCache() = default;

size_t PageCache::page_size() const { return state_->page_size; }

PageCache::Resize PageCache::set_max_pages(uint64_t pages) {
  State& s = *state_;
  MutexLock lock(s.resize_mu);  // one resize at a time; writers do not take it
  const uint64_t old = s.max_pages.load(std::memory_order_relaxed);
  if (old == 0 && pages != 0) return Resize::kUnlimited;
  s.max_pages.store(pages, std::memory_order_seq_cst);
  if (pages != 0 && s.pages_allocated.load(std::memory_order_seq_cst) > pages) {
    s.max_pages.store(old, std::memory_order_seq_cst);
    return Resize::kTooSmall;
  }
  return Resize::kDone;
}

PageCacheStats PageCache::stats() const {
  State& s = *state_;
  PageCacheStats r;
#define TMPFSD_STATS_COPY_counter(name) r.name = s.name.load(std::memory_order_relaxed);
#define TMPFSD_STATS_COPY_figure(name)
#define TMPFSD_STATS_COPY(name, source, kind, what) TMPFSD_STATS_COPY_##source(name)
  TMPFSD_PAGE_CACHE_STATS(TMPFSD_STATS_COPY)
#undef TMPFSD_STATS_COPY
#undef TMPFSD_STATS_COPY_figure
#undef TMPFSD_STATS_COPY_counter
  // The figures.
  r.page_size = s.page_size;
  r.max_pages = s.max_pages.load(std::memory_order_relaxed);
  r.frames_total = s.pool->frames_total();
  r.frames_used = s.pool->frames_used();
  r.frames_prefaulted = s.pool->frames_prefaulted();
  r.metadata_bytes =
      s.metadata.load(std::memory_order_relaxed) + s.pool->metadata_bytes() + sizeof(State);
  r.frames_free = s.pool->frames_available();
  if (s.swap) {
    const swapdev::SwapCounters c = s.swap->counters();
    r.swap_slots_total = c.total_slots;
    r.swap_slots_used = c.slots_used;
    r.swap_ios = c.ios_submitted;
    r.swap_bytes_written = c.bytes_written;
    r.swap_bytes_read = c.bytes_read;
    r.swap_max_queue_depth = c.max_queue_depth;
    r.swap_errors = c.errors;
    r.swap_checksum_failures = c.checksum_failures;
    r.remote_pages = c.remote_pages;
    r.remote_bytes = c.remote_pages * s.page_size;
    r.remote_bytes_written = c.remote_bytes_written;
    r.remote_bytes_read = c.remote_bytes_read;
    r.remote_round_trips = c.remote_round_trips;
    r.remote_failures = c.remote_failures;
    r.remote_fallbacks = c.remote_fallbacks;
    r.remote_seal_failures = c.remote_seal_failures;
    r.remote_local_copies = c.remote_local_copies;
    r.remote_local_reads = c.remote_local_reads;
    r.zpool_pages = c.zpool_pages;
    r.zpool_bytes = c.zpool_bytes;
    r.zpool_frames = c.zpool_frames;
    r.zpool_same_filled = c.zpool_same_filled;
    r.zpool_stored = c.zpool_stored;
    r.zpool_rejects = c.zpool_rejects;
    r.zpool_skipped = c.zpool_skipped;
    r.zpool_full = c.zpool_full;
    r.zpool_writebacks = c.zpool_writebacks;
    r.zpool_loads = c.zpool_loads;
  }
  return r;
}

void PageCache::drain_reads() {
  while (state_->reads_in_flight.load(std::memory_order_acquire) != 0) state_->wait_progress();
}

uint64_t PageCache::shrink(uint64_t frames) {
  if (state_->swap) (void)direct_reclaim(*state_, frames);
  return state_->pool->frames_available();
}

}  // namespace tmpfsd
