// The page cache: FilePages (one file's pages) and PageCache (the mount).
// Design and states: pmap.h; the index: file_index.h; locks: LOCKING.md.
#include "core/page_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/file_index.h"
#include "core/frame_pool.h"
#include "core/page_cache_state.h"
#include "core/pmap.h"
#include "core/small_vec.h"

namespace tmpfsd {

namespace {

// Largest byte offset + 1 a file may reach (MAX_LFS_FILESIZE).
constexpr uint64_t kMaxFileBytes = (uint64_t{1} << 63) - 1;
// Bytes of the shared zero region that holes are read from: large enough
// that a hole of a whole FUSE read (1 MiB) is a handful of iovecs.
constexpr size_t kZeroRegionBytes = 256 * 1024;
// iovecs held inline by read(): 64 covers a 256 KiB read of scattered pages.
constexpr size_t kInlineIovecs = 64;

}  // namespace

// ---------------------------------------------------------------------------
// PageCache::State

PageCache::State::State(const PageCacheConfig& c, unsigned shift, std::unique_ptr<FramePool> p,
                        std::span<const std::byte> zero_region)
    : page_size(c.page_size),
      page_shift(shift),
      block_shift(std::max(9u, shift - 6)),
      max_pages(c.max_pages),
      pool(std::move(p)),
      zeros(zero_region) {}

PageCache::State::~State() {
  assert(files.load() == 0 && pages_allocated.load() == 0 && pages_resident.load() == 0);
  munmap(const_cast<std::byte*>(zeros.data()), zeros.size());
}

bool PageCache::State::reserve_pages(uint64_t n) {
  if (n == 0) return true;
  uint64_t cur = pages_allocated.load(std::memory_order_relaxed);
  do {
    if (max_pages != 0 && (cur > max_pages || max_pages - cur < n)) return false;
  } while (!pages_allocated.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed));
  return true;
}

// ---------------------------------------------------------------------------
// FilePagesImpl
//
// mu_ guards index_ and every Pmap in it (binding, dirty, generation) and the
// bytes of their frames: write, truncate, punch_hole, allocate hold it
// exclusive; read, seek_*, pages hold it shared. Readers pin the pmaps they
// reply from for the duration of the callback (so the Reclaimer of issue 5,
// which will not always hold mu_, cannot take the frames).

class FilePagesImpl {
 public:
  explicit FilePagesImpl(PageCache::State& st) : st_(st), index_(&st.metadata) {
    st_.files.fetch_add(1, std::memory_order_relaxed);
    st_.metadata.fetch_add(sizeof(*this), std::memory_order_relaxed);
  }
  ~FilePagesImpl() {
    {
      std::unique_lock lock(mu_);
      free_range_locked(0, UINT64_MAX);
    }
    st_.metadata.fetch_sub(sizeof(*this), std::memory_order_relaxed);
    st_.files.fetch_sub(1, std::memory_order_relaxed);
  }

  void read(uint64_t off, size_t len, const FilePages::ReadDone& done);
  Status write(uint64_t off, std::span<const std::byte> data);
  void truncate(uint64_t old_size, uint64_t new_size);
  void punch_hole(uint64_t off, uint64_t len);
  Status allocate(uint64_t off, uint64_t len);
  std::optional<uint64_t> seek_data(uint64_t off, uint64_t size) const;
  std::optional<uint64_t> seek_hole(uint64_t off, uint64_t size) const;
  uint64_t pages() const {
    std::shared_lock lock(mu_);
    return index_.size();
  }

 private:
  size_t page_size() const { return st_.page_size; }
  uint64_t page_mask() const { return st_.page_size - 1; }
  // Bits of the dirty bitmap covering bytes [from, to) of a page (from < to).
  uint64_t block_bits(size_t from, size_t to) const {
    const unsigned a = static_cast<unsigned>(from >> st_.block_shift);
    const unsigned b = static_cast<unsigned>((to - 1) >> st_.block_shift);
    const unsigned n = b - a + 1;
    return (n >= 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1)) << a;
  }
  // Data for SEEK_DATA: a page that was written (or is swapped, which
  // implies written); fallocated-only pages are holes, as on tmpfs.
  static bool is_data(uint64_t w) {
    return !FileIndex::is_pmap(w) || FileIndex::as_pmap(w)->uptodate();
  }

  Pmap* new_pmap_locked(uint64_t page, FramePool::Reservation& frames, bool* zeroed);
  void zero_in_page_locked(uint64_t page, size_t from, size_t to);
  void free_range_locked(uint64_t first, uint64_t last);

  PageCache::State& st_;
  mutable std::shared_mutex mu_;
  FileIndex index_;  // guarded by mu_
};

Pmap* FilePagesImpl::new_pmap_locked(uint64_t page, FramePool::Reservation& frames,
                                     bool* zeroed) {
  FramePool::Taken t = frames.take();
  auto* p = new Pmap(this, page);
  st_.metadata.fetch_add(sizeof(Pmap), std::memory_order_relaxed);
  p->set_binding(Binding::frame(t.frame));
  t.frame->set_owner(p);
  index_.set(page, FileIndex::of_pmap(p));
  st_.pages_resident.fetch_add(1, std::memory_order_relaxed);
  *zeroed = t.zeroed;
  return p;
}

void FilePagesImpl::read(uint64_t off, size_t len, const FilePages::ReadDone& done) {
  if (len == 0) {
    done(Status::ok(), {});
    return;
  }
  std::shared_lock lock(mu_);
  SmallVec<iovec, kInlineIovecs> iov;
  SmallVec<Pmap*, kInlineIovecs> pinned;
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
    const uint64_t w = chunk ? chunk->word[page & FileIndex::kMask] : 0;
    const std::byte* base;
    if (w == 0 || !FileIndex::as_pmap(w)->resident()) {
      // Hole (or, in issue 5, a swapped page: swap-in goes here).
      assert(w == 0);
      if (!iov.empty() && iov.back().iov_base == zeros &&
          iov.back().iov_len + n <= st_.zeros.size()) {
        iov.back().iov_len += n;
        pos += n;
        continue;
      }
      base = zeros;
    } else {
      Pmap* p = FileIndex::as_pmap(w);
      p->pin();
      p->set_referenced();
      pinned.push_back(p);
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
  struct Unpin {
    SmallVec<Pmap*, kInlineIovecs>& pins;
    ~Unpin() {
      for (Pmap* p : pins.span()) p->unpin();
    }
  } unpin{pinned};
  done(Status::ok(), iov.span());
}

Status FilePagesImpl::write(uint64_t off, std::span<const std::byte> data) {
  if (data.empty()) return Status::ok();
  if (off > kMaxFileBytes || data.size() > kMaxFileBytes - off) return Errno{EFBIG};
  const uint64_t end = off + data.size();
  const uint64_t first = off >> st_.page_shift;
  const uint64_t last = (end - 1) >> st_.page_shift;  // inclusive

  std::unique_lock lock(mu_);
  // Reserve everything first: after this point the write cannot fail.
  const uint64_t missing = (last - first + 1) - index_.count_present(first, last + 1);
  if (!st_.reserve_pages(missing)) return Errno{ENOSPC};
  auto frames = st_.pool->reserve(missing);
  if (!frames) {
    st_.unreserve_pages(missing);
    return Errno{ENOSPC};
  }
  SmallVec<Pmap*, kInlineIovecs> fresh;
  const std::byte* src = data.data();
  for (uint64_t page = first; page <= last; ++page) {
    const size_t from = page == first ? (off & page_mask()) : 0;
    const size_t to = page == last ? ((end - 1) & page_mask()) + 1 : page_size();
    const uint64_t w = index_.get(page);
    Pmap* p;
    if (w == 0) {
      bool zeroed;
      p = new_pmap_locked(page, *frames, &zeroed);
      fresh.push_back(p);
      if (!zeroed) {
        std::byte* f = p->frame()->bytes().data();
        std::memset(f, 0, from);
        std::memset(f + to, 0, page_size() - to);
      }
    } else {
      p = FileIndex::as_pmap(w);
      assert(p->resident());  // issue 5: fault in a swapped page here
      p->set_referenced();
    }
    std::memcpy(p->frame()->bytes().data() + from, src, to - from);
    src += to - from;
    p->mark_dirty(block_bits(from, to));
    p->set_uptodate();
  }
  assert(frames->left() == 0);
  st_.lists.add_new(fresh.span());
  return Status::ok();
}

void FilePagesImpl::zero_in_page_locked(uint64_t page, size_t from, size_t to) {
  if (from >= to) return;
  const uint64_t w = index_.get(page);
  if (w == 0) return;
  Pmap* p = FileIndex::as_pmap(w);
  assert(p->resident());  // issue 5: a swapped page is faulted in first
  std::memset(p->frame()->bytes().data() + from, 0, to - from);
  p->mark_dirty(block_bits(from, to));
}

// Removes every page in [first, last). Victims are collected under mu_,
// taken off the lists in one LRU critical section, then freed.
void FilePagesImpl::free_range_locked(uint64_t first, uint64_t last) {
  std::vector<Pmap*> victims;
  uint64_t removed = 0;
  index_.update_range(first, last, [&](uint64_t, uint64_t w) -> uint64_t {
    ++removed;
    if (FileIndex::is_pmap(w)) victims.push_back(FileIndex::as_pmap(w));
    // else: a compact swap entry; issue 5 frees its slot here.
    return 0;
  });
  if (removed == 0) return;
  st_.lists.remove(victims);
  for (Pmap* p : victims) {
    // Readers pin under mu_ shared; we hold it exclusive, so only I/O
    // (issue 5: writeback) could still hold a pin.
    assert(p->io_count() == 0);
    if (p->resident()) {
      Frame* f = p->frame();
      f->set_owner(nullptr);
      st_.pool->free(f);
      st_.pages_resident.fetch_sub(1, std::memory_order_relaxed);
    }
    delete p;
  }
  st_.metadata.fetch_sub(victims.size() * sizeof(Pmap), std::memory_order_relaxed);
  st_.unreserve_pages(removed);
}

void FilePagesImpl::truncate(uint64_t old_size, uint64_t new_size) {
  if (new_size > old_size) return;
  std::unique_lock lock(mu_);
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
  std::unique_lock lock(mu_);
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

Status FilePagesImpl::allocate(uint64_t off, uint64_t len) {
  if (len == 0) return Status::ok();
  if (off > kMaxFileBytes || len > kMaxFileBytes - off) return Errno{EFBIG};
  const uint64_t end = off + len;
  const uint64_t first = off >> st_.page_shift;
  const uint64_t last_excl = (end + page_mask()) >> st_.page_shift;

  std::unique_lock lock(mu_);
  const uint64_t missing = (last_excl - first) - index_.count_present(first, last_excl);
  FramePool::Reservation frames;
  if (missing > 0) {
    if (!st_.reserve_pages(missing)) return Errno{ENOSPC};
    auto r = st_.pool->reserve(missing);
    if (!r) {
      st_.unreserve_pages(missing);
      return Errno{ENOSPC};
    }
    frames = std::move(r).value();
  }
  // Kernel tmpfs: a page fallocated by an earlier call and fallocated again
  // becomes Uptodate (shmem_get_folio_gfp, SGP_FALLOC on an existing folio
  // clears it and marks it uptodate), i.e. data for SEEK_DATA; pages new in
  // this call stay !Uptodate. (On ENOSPC the kernel has already done this
  // for the pages before the one that failed; we change nothing.)
  index_.visit_range(first, last_excl, [](uint64_t, uint64_t w) {
    if (FileIndex::is_pmap(w)) FileIndex::as_pmap(w)->set_uptodate();
    return true;
  });
  if (missing == 0) return Status::ok();
  // Only `missing` pages are absent, and missing <= frames_total, so this
  // walk is bounded by memory, not by len.
  std::vector<Pmap*> fresh;
  fresh.reserve(missing);
  for (uint64_t page = first; frames.left() > 0; ++page) {
    assert(page < last_excl);
    if (index_.get(page) != 0) continue;
    bool zeroed;
    Pmap* p = new_pmap_locked(page, frames, &zeroed);
    if (!zeroed) std::memset(p->frame()->bytes().data(), 0, page_size());
    fresh.push_back(p);  // clean, !uptodate: a zero page without a slot
  }
  st_.lists.add_new(fresh);
  return Status::ok();
}

std::optional<uint64_t> FilePagesImpl::seek_data(uint64_t off, uint64_t size) const {
  if (off >= size) return std::nullopt;
  std::shared_lock lock(mu_);
  const auto page = index_.next_matching(off >> st_.page_shift, is_data);
  if (!page || *page > ((size - 1) >> st_.page_shift)) return std::nullopt;
  return std::max(off, *page << st_.page_shift);
}

std::optional<uint64_t> FilePagesImpl::seek_hole(uint64_t off, uint64_t size) const {
  if (off >= size) return std::nullopt;
  std::shared_lock lock(mu_);
  const uint64_t page = index_.next_not_matching(off >> st_.page_shift, is_data);
  if (page > ((size - 1) >> st_.page_shift)) return size;
  return std::min(size, std::max(off, page << st_.page_shift));
}

// ---------------------------------------------------------------------------
// FilePages

FilePages::FilePages(PageCache& cache) : impl_(std::make_unique<FilePagesImpl>(cache.state())) {}
FilePages::~FilePages() = default;

void FilePages::read(uint64_t off, size_t len, ReadDone done) { impl_->read(off, len, done); }
Status FilePages::write(uint64_t off, std::span<const std::byte> data) {
  return impl_->write(off, data);
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
uint64_t FilePages::pages() const { return impl_->pages(); }

// ---------------------------------------------------------------------------
// PageCache

Result<std::unique_ptr<PageCache>> PageCache::create(const PageCacheConfig& config) {
  const size_t ps = config.page_size;
  if (ps < 4096 || (ps & (ps - 1)) != 0 || ps > (size_t{1} << 30)) return Errno{EINVAL};
  const auto shift = static_cast<unsigned>(std::countr_zero(ps));
  auto pool = FramePool::create(ps, config.memory_bytes / ps);
  if (!pool) return Errno{pool.code()};
  const size_t zero_bytes = std::max(ps, kZeroRegionBytes);
  // Never written: every page of it maps the kernel's zero page.
  void* z = mmap(nullptr, zero_bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (z == MAP_FAILED) return Errno{ENOMEM};
  auto state = std::make_unique<State>(
      config, shift, std::move(pool).value(),
      std::span<const std::byte>(static_cast<const std::byte*>(z), zero_bytes));
  return std::unique_ptr<PageCache>(new PageCache(std::move(state)));
}

PageCache::PageCache(std::unique_ptr<State> state) : state_(std::move(state)) {}
PageCache::~PageCache() = default;

size_t PageCache::page_size() const { return state_->page_size; }

PageCacheStats PageCache::stats() const {
  const State& s = *state_;
  PageCacheStats r;
  r.page_size = s.page_size;
  r.pages_allocated = s.pages_allocated.load(std::memory_order_relaxed);
  r.max_pages = s.max_pages;
  r.frames_total = s.pool->frames_total();
  r.frames_used = s.pool->frames_used();
  r.pages_resident = s.pages_resident.load(std::memory_order_relaxed);
  r.pages_swapped = s.pages_swapped.load(std::memory_order_relaxed);
  r.metadata_bytes = s.metadata.load(std::memory_order_relaxed) + s.pool->metadata_bytes() +
                     sizeof(State);
  return r;
}

}  // namespace tmpfsd
