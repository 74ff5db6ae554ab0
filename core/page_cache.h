// PageCache and FilePages: where every byte of every regular file lives.
//
// The whole of a file's data is one thing: its FilePages, an index from page
// number to where each page lives (its PagePlace, page_cache/binding.h; the
// seed's "binding"): a Pmap (the management record of a page in a Frame from the
// FramePool), a swap slot, a zero page, or nothing (a hole, reads as
// zeros). Nobody outside core/ sees a Pmap; the namespace and the daemon
// use only this header. docs/design.md follows each data path.
//
// PageCache is one per mount. It owns the FramePool (the only memory that
// counts against --memory), the swap device if there is one, and the
// Reclaimer (page_cache/reclaimer.h) that keeps frames free by paging out
// to it. Limits:
//   - size=   : pages allocated in the whole file system (resident + swapped)
//   - --memory: frames. With a swap device a write that finds no free frame
//               waits for reclaim (it reclaims itself: direct reclaim) and
//               gets ENOSPC only when nothing can be paged out (swap full,
//               or every page unwritable); pages allocated are also bounded
//               by frames + swap slots. Without one, ENOSPC at once.
//
// Threads: any FUSE worker may call any method concurrently. A FilePages is
// internally locked (its own mutex); callers serialise size changes
// themselves (the namespace holds the inode's lock around write/truncate so
// that size and data agree). Lock order: Inode::data_mu -> FilePages mutex ->
// PageCache internal locks.
//
// The size of the file is not stored here: it belongs to the inode. Methods
// that need it take it as an argument.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "core/result.h"
#include "swapdev/swap_device.h"

namespace tmpfsd {

namespace swapdev {
class SwapDevice;
}

class PageCache;
class FilePagesImpl;

// Largest byte offset + 1 a file may reach: 2^63 - 1 (MAX_LFS_FILESIZE).
// Beyond it, writes, truncate and fallocate get EFBIG.
inline constexpr uint64_t kMaxFileSize = (uint64_t{1} << 63) - 1;

struct PageCacheConfig {
  size_t page_size = 4096;         // power of two, >= 4096, fixed per mount
  uint64_t memory_bytes = 0;       // frame budget (--memory); rounded down to pages
  uint64_t max_pages = 0;          // size= in pages; 0 = unlimited
  bool background_reclaim = true;  // with swap: run the Reclaimer thread
  // A write to a page whose swap write is in flight: false waits for the
  // I/O; true copies the page to a new frame (when one is free at once) and
  // writes there, the I/O keeping the old frame (--writeback-conflict copy).
  bool writeback_copy = false;
  // Frames a write must leave free (or reclaimable) for reads: with a swap
  // device that cannot always take a dirty page (the compressed pool with
  // no swap file), memory full of dirty pages that fit nowhere would leave
  // no frame to read a paged-out page into. 0: none.
  uint64_t write_headroom = 0;
};

// Figures for statfs and `tmpfsctl stats`, listed once. Each row:
// X(name, source, kind, what it counts). source `counter`: an atomic of
// PageCache::State with the same name, copied by stats(); `figure`:
// computed by stats() (the frame pool, the swap device, sums). kind
// `counter`: only grows while the daemon runs (a total of events or bytes);
// `gauge`: a level that goes up and down (what Prometheus calls them). The stats
// struct, State's counters and stats() are generated from this table, and
// PageCacheStats::visit walks it for any printed form (JSON, a log line).
// The daemon's unmount log is still written by hand: tests/mount/
// pressure_test.py and tools/bench-* parse its wording.
#define TMPFSD_PAGE_CACHE_STATS(X)                                                               \
  X(page_size, figure, gauge, "bytes per page")                                                  \
  X(pages_allocated, counter, gauge, "counted against size= (resident + swapped)")               \
  X(max_pages, figure, gauge, "size= in pages (0 = unlimited)")                                  \
  X(frames_total, figure, gauge, "--memory in frames")                                           \
  X(frames_used, figure, gauge, "frames holding pages")                                          \
  X(frames_prefaulted, figure, gauge, "faulted in ahead of the writers (FramePool)")             \
  X(pages_resident, counter, gauge, "pages in a frame")                                          \
  X(pages_swapped, counter, gauge, "pages in swap only (a compact index word)")                  \
  X(metadata_bytes, figure, gauge, "pmaps + indexes + pool descriptors, not frames")             \
  /* Swap and reclaim; all zero without a swap device. */                                        \
  X(frames_free, figure, gauge, "neither used nor promised to a writer")                         \
  X(swap_slots_total, figure, gauge, "slots of the swap device")                                 \
  X(swap_slots_used, figure, gauge, "slots in use")                                              \
  X(swap_cached, counter, gauge,                                                                 \
    "resident pages that also have a slot (all of a clean page, all but the dirty "              \
    "blocks of a dirty one)")                                                                    \
  X(swap_ins, counter, counter, "pages read back from swap")                                     \
  X(swap_in_errors, counter, counter, "reads that failed (EIO to the reader)")                   \
  X(writebacks, counter, counter, "pages written to swap successfully")                          \
  X(partial_writebacks, counter, counter, "of writebacks: only the dirty blocks, into the slot") \
  X(writeback_errors, counter, counter, "page writes that failed (page kept dirty)")             \
  X(background_cleaned, counter, counter, "of writebacks: by the cleaning watermark")            \
  X(reclaim_scans, counter, counter, "pmaps looked at on the inactive tail")                     \
  X(pages_evicted, counter, counter, "frames dropped by reclaim")                                \
  X(writeback_waits, counter, counter, "changes that waited for a page's swap write")            \
  X(writeback_copies, counter, counter, "pages copied to a new frame instead (writeback_copy)")  \
  X(frame_waits, counter, counter, "writes/faults that had to reclaim first")                    \
  X(reads_async, counter, counter, "reads replied from a swap-in completion")                    \
  X(writes_async, counter, counter, "writes replied from a swap-in completion")                  \
  X(readahead_pages, counter, counter, "swapped pages read ahead of a sequential reader")        \
  X(readahead_hits, counter, counter, "of those, pages a read then used")                        \
  /* The swap device's own figures (swapdev::SwapCounters). */                                   \
  X(swap_ios, figure, counter, "I/Os submitted (after merging)")                                 \
  X(swap_bytes_written, figure, counter, "bytes written to the swap device")                     \
  X(swap_bytes_read, figure, counter, "bytes read from the swap device")                         \
  X(swap_max_queue_depth, figure, gauge, "most I/Os in flight at once")                          \
  X(swap_errors, figure, counter, "requests that failed, checksum failures included")            \
  X(swap_checksum_failures, figure, counter, "reads whose checksum did not match")               \
  /* The remote tier (swapdev/tiered_swap_device.h); all zero without one. */                    \
  X(remote_pages, figure, gauge, "pages in the remote pool")                                     \
  X(remote_bytes, figure, gauge, "bytes of pages in the remote pool (not per copy)")             \
  X(remote_bytes_written, figure, counter, "bytes written to the pool")                          \
  X(remote_bytes_read, figure, counter, "bytes read back from the pool")                         \
  X(remote_round_trips, figure, counter, "memcached sets, deletes and multi-gets")               \
  X(remote_failures, figure, counter, "memcached operations that failed (gone, slow, full)")     \
  X(remote_fallbacks, figure, counter, "new pages sent to the swap file, the pool unfit")        \
  X(remote_seal_failures, figure, counter, "pool values that did not open (EIO)")                \
  X(remote_local_copies, figure, gauge, "pool pages with a copy in the swap file (local_copy)")  \
  X(remote_local_reads, figure, counter, "pool pages read from their swap-file copy instead")    \
  /* The compressed pool (swapdev/compressed_swap_device.h); all zero without one. */            \
  X(zpool_pages, figure, gauge, "pages kept compressed in memory")                               \
  X(zpool_bytes, figure, gauge, "their compressed bytes")                                        \
  X(zpool_frames, figure, gauge, "frames the compressed pool holds (part of frames_used)")       \
  X(zpool_same_filled, figure, gauge, "of zpool_pages, pages of one repeated word (8 bytes)")    \
  X(zpool_stored, figure, counter, "pages that went into the compressed pool")                   \
  X(zpool_rejects, figure, counter, "pages that compressed too little: to the swap file")        \
  X(zpool_skipped, figure, counter,                                                              \
    "pages not tried, their file's last ones rejects: to the swap file")                         \
  X(zpool_full, figure, counter, "pages the full pool sent to the swap file")                    \
  X(zpool_writebacks, figure, counter, "pool pages written on to the swap file, oldest first")   \
  X(zpool_loads, figure, counter, "reads served from the compressed pool")

struct PageCacheStats {
#define TMPFSD_STATS_FIELD(name, source, kind, what) uint64_t name = 0;
  TMPFSD_PAGE_CACHE_STATS(TMPFSD_STATS_FIELD)
#undef TMPFSD_STATS_FIELD

  // Calls f(name, value, kind, what) for every figure, in the table's order.
  template <class F>
  void visit(F&& f) const {
#define TMPFSD_STATS_VISIT(name, source, kind, what) f(#name, name, #kind, what);
    TMPFSD_PAGE_CACHE_STATS(TMPFSD_STATS_VISIT)
#undef TMPFSD_STATS_VISIT
  }
};

// Where a run of a file's pages is (FilePages::where): PagePlace's kinds
// (page_cache/binding.h) as the outside sees them.
// kCompressed: swapped, to a slot the swap device keeps in its compressed
// pool (SwapDevice::pooled), not on the medium.
enum class PageKind : uint8_t { kHole, kResident, kSwapped, kZero, kRemote, kCompressed };
struct PageRun {
  uint64_t first = 0;  // page number
  uint64_t pages = 0;
  PageKind kind = PageKind::kHole;
};

// The data of one regular file. Not copyable or movable: pmaps and frames
// point back to it.
class FilePages {
 public:
  explicit FilePages(PageCache& cache);
  // A file restored from a lazy image: its serial (serial()) is the one its
  // pages' slots were sealed for. The cache's later files get serials past it.
  FilePages(PageCache& cache, uint64_t serial);
  ~FilePages();  // frees every frame, slot and pmap of the file
  FilePages(const FilePages&) = delete;
  FilePages& operator=(const FilePages&) = delete;

  // Reads [off, off + len). The caller has clamped the range to the file
  // size. `done` is called exactly once with either an error or iovecs that
  // cover exactly len bytes in order: frame memory for resident pages, a
  // shared zero region for holes (one iovec covers up to 256 KiB of hole;
  // adjacent frames are merged, so a 1 MiB read needs at most ~260 iovecs,
  // below IOV_MAX). The iovecs and the memory they point to are valid only
  // for the duration of the callback (the frames are pinned until it
  // returns), so the callback replies straight from frame memory: the
  // zero-copy read of docs/design.md.
  //   - All pages resident: `done` runs before read() returns, with this
  //     file's lock held shared (writers to the file wait until it returns).
  //   - Some pages swapped: read() queues their swap-in and returns at once;
  //     `done` runs later on the swap device's completion thread, when the
  //     last of them is in (EIO if one failed: that page stays in swap), or
  //     on the calling thread if they were all in by the end of read().
  // Either way `done` must not call into the same FilePages nor take an
  // Inode lock, and must not block; replying (fuse_reply_iov) is what it is
  // for. Callers that need the bytes before going on use read_and_wait().
  // A sequential reader of swapped pages gets readahead of the following
  // swapped pages, into frames that are free.
  using ReadDone = std::function<void(Status, std::span<const iovec>)>;
  void read(uint64_t off, size_t len, ReadDone done);

  // Copies data into the pages covering [off, off + data.size()), creating
  // pmaps and frames as needed and marking the touched blocks dirty.
  // All or nothing for limits: ENOSPC (size= or no frame) writes nothing.
  // EFBIG when off + data.size() > 2^63 - 1 (MAX_LFS_FILESIZE); no short
  // writes (the kernel clamps before the request reaches the daemon).
  // Returns an error (nothing written), or nullptr (written), or, when the
  // write covers only part of a page that is being read from swap (its
  // first or last page), a PendingWrite: every other page is written, and
  // the bytes for those pages wait, copied, in the page wait table; the
  // swap-in's completion puts them in before anyone sees the page. The FUSE
  // worker does not wait for the read. The caller then calls
  // when_written(), after its own bookkeeping (the file size): the `done`
  // it gives runs once, on the completion thread or before when_written()
  // returns, with ok or EIO (a swap read failed: that page is unchanged;
  // the other pages hold the new bytes).
  class PendingWrite;
  using WriteDone = std::function<void(Status)>;
  Result<PendingWrite*> start_write(uint64_t off, std::span<const std::byte> data);
  static void when_written(PendingWrite* w, WriteDone done);
  // start_write, and wait for a pending write's completion (tests,
  // copy_file_range, the pieces of a write too large for memory).
  Status write(uint64_t off, std::span<const std::byte> data);

  // The file's size changes from old_size to new_size. Shrinking (or keeping
  // the size) frees every page wholly past new_size, fallocated ones beyond
  // the end included, and zeroes the tail of the last partial page (so a
  // later extension reads zeros). Growing allocates nothing.
  void truncate(uint64_t old_size, uint64_t new_size);

  // Makes [off, off + len) read as zeros: whole pages inside are freed,
  // partial pages at the edges are zeroed in place.
  void punch_hole(uint64_t off, uint64_t len);

  // fallocate mode 0 / KEEP_SIZE: makes sure every page touching
  // [off, off + len) exists (reads zeros where it did not). ENOSPC against
  // size= or memory; on ENOSPC, pages allocated by this call are freed again.
  Status allocate(uint64_t off, uint64_t len);

  // lseek SEEK_DATA / SEEK_HOLE over a file of `size` bytes, with tmpfs's
  // answers: data is any page that has been written; holes are pages that do
  // not exist AND pages that were only fallocated and never written (kernel
  // tmpfs keeps those !Uptodate: lseek(SEEK_DATA) on a freshly fallocated
  // tmpfs file gives ENXIO, checked on Linux 6.x); the end of the file is a
  // hole. nullopt = ENXIO.
  std::optional<uint64_t> seek_data(uint64_t off, uint64_t size) const;
  std::optional<uint64_t> seek_hole(uint64_t off, uint64_t size) const;

  // Where pages [first, end) are: fills `out` with runs of one kind, in
  // order, adjacent pages of one kind merged, holes included, and returns
  // the page after the last one described (== end: all of it; less: `out`
  // was full). Costs O(runs + pages present) under the file's lock held
  // shared, never O(end - first): holes are skipped by the index. A
  // snapshot: pages may move once it returns. `end` is the caller's (the
  // file size in pages); end_present() extends it to pages allocated past
  // the size.
  uint64_t where(uint64_t first, uint64_t end, std::span<PageRun> out, size_t* count) const;
  // The page after the last one present (0: none).
  uint64_t end_present() const;

  // Pages that exist, written or fallocated (for st_blocks:
  // pages * page_size / 512).
  uint64_t pages() const;

  // The number naming this file to the swap device's seals (PageOwner).
  uint64_t serial() const;

  // --persist's lazy image (docs/design.md, "Surviving a restart"): where
  // each present page is. kSlot: wholly in `slot` (swapped, or a clean
  // frame whose swap-cache slot holds it); kZero/kZeroUptodate: a
  // fallocated page that reads as zeros; kCopy: its bytes are only in
  // memory (dirty, under I/O, or no slot), the caller writes them to a
  // slot of its own.
  struct Binding {
    enum Kind : uint8_t { kSlot, kZero, kZeroUptodate, kCopy };
    uint64_t page = 0;
    swapdev::SwapSlot slot;
    Kind kind = kSlot;
  };
  void bindings(std::vector<Binding>* out) const;
  // Puts each page b.page of this file (which has none yet) in b.slot
  // (kSlot: swapped, the caller has taken the slot in the device) or makes
  // it a zero page. ENOSPC past size=; EINVAL for kCopy, pages out of
  // order, or a file with pages.
  Status adopt(std::span<const Binding> bs);

 private:
  // Every method forwards to it (page_cache/page_cache.cc): pmaps, the index
  // and the file's mutex stay out of this header.
  std::unique_ptr<FilePagesImpl> impl_;
};

// Calls `start` with a ReadDone that forwards to `done`, and returns once
// `done` has returned: `start` calls one FilePages::read (or
// Namespace::read). For callers that need the bytes before they go on
// (copy_file_range, the piecewise large read, tests). Must not hold locks
// of that file.
void read_and_wait(const std::function<void(FilePages::ReadDone)>& start,
                   const FilePages::ReadDone& done);
// read_and_wait into a buffer: the bytes the read returned are copied to
// the front of `out` (at least as long as the read asked for); *got says
// how many. The read's status.
Status read_into(const std::function<void(FilePages::ReadDone)>& start, std::span<std::byte> out,
                 size_t* got);

// Every FilePages must be destroyed before its PageCache.
class PageCache {
 public:
  // Fails (EINVAL) for a page size that is not a power of two >= 4096, or
  // ENOMEM when the frame region cannot be reserved.
  static Result<std::unique_ptr<PageCache>> create(const PageCacheConfig& config);
  // With a swap device (page_size must match): frames become a cache in
  // front of it. The device is owned and destroyed after the last I/O.
  static Result<std::unique_ptr<PageCache>> create(const PageCacheConfig& config,
                                                   std::unique_ptr<swapdev::SwapDevice> swap);
  ~PageCache();
  PageCache(const PageCache&) = delete;
  PageCache& operator=(const PageCache&) = delete;

  size_t page_size() const;
  PageCacheStats stats() const;
  // The swap device (null: none).
  swapdev::SwapDevice* swap() const;

  // size= in pages at run time (0 = unlimited). Refused when pages in use
  // exceed it (kTooSmall) or when the mount was unlimited and `pages` is
  // not 0 (kUnlimited: tmpfs's "Cannot retroactively limit size"); nothing
  // changes then. A concurrent write either fits the new limit or gets
  // ENOSPC.
  enum class Resize { kDone, kTooSmall, kUnlimited };
  Resize set_max_pages(uint64_t pages);

  // Waits until every asynchronous read and pending write has replied (its
  // `done` returned): the daemon calls it before the FUSE session those
  // replies go to is destroyed.
  void drain_reads();

  // Reclaims on the calling thread until `frames` frames are free or
  // nothing more can be paged out; returns the frames free. Without swap,
  // returns at once. (Tests; the daemon relies on the Reclaimer thread.)
  uint64_t shrink(uint64_t frames);

  // The implementation (FramePool, pmap lists, counters); defined in core/.
  struct State;
  State& state() { return *state_; }

 private:
  explicit PageCache(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace tmpfsd
