// SwapDevice: where evicted pages go. A device is an array of page-sized
// slots; the caller allocates runs of consecutive slots, writes whole pages to
// them, reads them back, and frees them. swapdev knows nothing about files or
// inodes: a slot is just a number.
//
// Contract (all implementations):
// - Every I/O completes through its IoDone, exactly once, with 0 or a
//   negative errno. UringSwapDevice runs it on its ring (completion) thread,
//   never inside write()/read(); MemorySwapDevice runs it inline, on demand or
//   from its own thread (see its header). A callback may submit new I/O,
//   allocate and free; it must not block on another I/O of the same device
//   (the completion thread would wait on itself). write()/read() never block
//   on I/O.
// - Bad arguments (a slot not allocated, a span not page_size() long, more
//   than 1024 pages) complete with -EINVAL and touch nothing.
// - The page memory passed to write()/read() must stay valid and, for writes,
//   unchanged until `done` runs. The span-of-spans itself is copied before
//   write()/read() return, so it may be a temporary.
// - Writes record a proof per slot: a checksum (XXH3-64), or on a sealed
//   device (sealed()) the AES-256-GCM tag of the page, sealed at submission
//   and bound to the slot, its owner (file, index) and a version unique per
//   write (swapdev/seal.h); the medium then holds only ciphertext. A read
//   whose bytes do not match (or, sealed, that names another owner, or
//   finds a slot's older image or another slot's bytes) gets -EIO and the
//   checksum_failures counter moves; its pages are zeroed. A read of a slot
//   that holds no completed write gets -ENODATA. A failed write leaves its
//   slots without data (reads get -ENODATA), never with stale bytes; a
//   failed write_blocks() leaves its slot poisoned (reads get -EIO).
// - No ordering between in-flight requests: the caller must not have two
//   requests in flight on the same slot, nor free a slot with I/O in flight.
// - free() of a slot that is not allocated is detected (logged, counted in
//   double_frees) and ignored; it never corrupts the allocator.
// - No exceptions leave this API (allocation failure of the process aside).
//
// Threads: any thread may call any method concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <utility>

namespace tmpfsd::swapdev {

class PageSource;

// A slot number. Default-constructed is invalid.
struct SwapSlot {
  static constexpr uint64_t kInvalid = UINT64_MAX;
  uint64_t value = kInvalid;

  constexpr SwapSlot() = default;
  constexpr explicit SwapSlot(uint64_t v) : value(v) {}
  constexpr bool valid() const { return value != kInvalid; }
  constexpr SwapSlot operator+(uint64_t n) const { return SwapSlot(value + n); }
  friend constexpr auto operator<=>(SwapSlot, SwapSlot) = default;
};

// Result of allocate(): `count` consecutive slots from `first`; count 0 with
// err < 0 (-ENOSPC) when nothing could be allocated.
struct SlotRun {
  SwapSlot first;
  uint32_t count = 0;
  int err = 0;
};

// Whose page a request moves: page i of a request is page `index + i` of
// file `file`. A sealed device binds each page's seal to it, so a read must
// name the owner its write named; an unsealed device ignores it. Callers
// that model no files (tests, benchmarks) use the overloads without one:
// file 0 names no file, and every page of such a request is bound to
// {0, 0} (so any run of those slots may be read back), and still to its
// slot and version.
struct PageOwner {
  uint64_t file = 0;   // names the file for as long as its slots live; 0: none
  uint64_t index = 0;  // the first page's index in it

  // The owner of the request's page i.
  constexpr PageOwner page(uint64_t i) const {
    return file == 0 ? PageOwner{} : PageOwner{file, index + i};
  }
};

// 0 on success or a negative errno. Runs exactly once.
using IoDone = std::function<void(int err)>;

using ConstPages = std::span<const std::span<const std::byte>>;
using MutablePages = std::span<const std::span<std::byte>>;

// Snapshot of the device's figures (monotonic counts unless noted).
struct SwapCounters {
  uint64_t total_slots = 0;        // constant
  uint64_t slots_used = 0;         // gauge: allocated slots
  uint64_t slots_free = 0;         // gauge: allocatable now (excludes discarding)
  uint64_t bytes_written = 0;      // payload bytes of successful writes
  uint64_t bytes_read = 0;         // payload bytes of successful reads
  uint64_t write_requests = 0;     // write() and write_blocks() calls
  uint64_t read_requests = 0;      // read() calls
  uint64_t ios_submitted = 0;      // I/Os sent to the backend (SQEs, incl. retries)
  uint64_t ios_merged = 0;         // requests that rode in another request's I/O
  uint64_t multi_page_ios = 0;     // I/Os that moved more than one page
  uint64_t fixed_ios = 0;          // I/Os that used registered buffers
  uint64_t queue_depth = 0;        // gauge: I/Os in flight now
  uint64_t max_queue_depth = 0;    // high-water mark of queue_depth
  uint64_t retries = 0;            // -EAGAIN and short-transfer resubmissions
  uint64_t errors = 0;             // requests completed with an error (any cause)
  uint64_t injected_errors = 0;    // of which injected by inject_errors()
  uint64_t checksum_failures = 0;  // reads whose bytes did not match (checksum or seal)
  uint64_t double_frees = 0;       // free() of a slot that was not allocated
  uint64_t alloc_failures = 0;     // allocate() that returned nothing
  uint64_t discards = 0;           // discard operations (punch-hole calls)
  uint64_t discarded_bytes = 0;    // bytes given back by them
  // The remote tier (TieredSwapDevice); all zero without one.
  uint64_t remote_pages = 0;          // gauge: pages in the pool
  uint64_t remote_bytes_written = 0;  // payload bytes written to the pool, not per copy
  uint64_t remote_bytes_read = 0;     // payload bytes read back from it
  uint64_t remote_round_trips = 0;    // sets, deletes, multi-gets
  uint64_t remote_failures = 0;       // network operations that failed (gone, slow, full)
  uint64_t remote_fallbacks = 0;      // new pages sent to the swap file, the pool unfit
  uint64_t remote_seal_failures = 0;  // values that did not open (tampered, stale, other)
  uint64_t remote_local_copies = 0;   // gauge: pool pages with a copy in the swap file
  uint64_t remote_local_reads = 0;    // pool pages read from that copy instead
  // The compressed pool (CompressedSwapDevice); all zero without one.
  uint64_t zpool_pages = 0;        // gauge: pages kept compressed in memory
  uint64_t zpool_bytes = 0;        // gauge: their compressed bytes
  uint64_t zpool_frames = 0;       // gauge: frames the pool holds for them
  uint64_t zpool_same_filled = 0;  // gauge: of zpool_pages, pages of one repeated word
  uint64_t zpool_stored = 0;       // pages that went into the pool
  uint64_t zpool_rejects = 0;      // pages that compressed too little: to the backing device
  uint64_t zpool_skipped = 0;      // pages not tried: their file's last pages were rejects
  uint64_t zpool_full = 0;         // pages the full pool sent to the backing device
  uint64_t zpool_writebacks = 0;   // pool pages written on to the backing device (oldest first)
  uint64_t zpool_loads = 0;        // reads served from the pool
};

class SwapDevice {
 public:
  SwapDevice() = default;
  SwapDevice(const SwapDevice&) = delete;
  SwapDevice& operator=(const SwapDevice&) = delete;
  virtual ~SwapDevice();

  virtual size_t page_size() const = 0;
  virtual uint64_t total_slots() const = 0;
  // log2 of the smallest block write_blocks() can write on this medium
  // (>= 9, <= log2(page_size())): the direct I/O alignment of the swap
  // file's file system. Callers coarsen their block masks to it.
  virtual unsigned min_block_shift() const = 0;

  // Allocates up to `want` (>= 1) consecutive slots. If `hint` is valid and
  // free (typically the slot after a neighbouring page's slot) the run starts
  // there, so a file's neighbouring pages sit together; otherwise it comes
  // from the calling thread's current cluster. Never blocks on I/O.
  virtual SlotRun allocate(uint32_t want, SwapSlot hint = {}) = 0;
  virtual void free(SwapSlot first, uint32_t count = 1) = 0;

  // Writes/reads pages.size() pages at slots first, first+1, ... Each span is
  // exactly page_size() bytes. The whole run is one I/O where the backend
  // allows it; adjacent requests queued in one IoBatch are merged.
  virtual void write(SwapSlot first, ConstPages pages, PageOwner owner, IoDone done) = 0;
  virtual void read(SwapSlot first, MutablePages pages, PageOwner owner, IoDone done) = 0;
  void write(SwapSlot first, ConstPages pages, IoDone done) {
    write(first, pages, PageOwner{}, std::move(done));
  }
  void read(SwapSlot first, MutablePages pages, IoDone done) {
    read(first, pages, PageOwner{}, std::move(done));
  }

  // Partial rewrite of a slot that holds a completed write: `page` is the
  // whole new page (page_size() bytes, page-aligned memory such as a frame),
  // and only the blocks whose bit is set in `block_mask` go to the medium,
  // block i being bytes [i << block_shift, (i + 1) << block_shift). Each run
  // of consecutive set bits is one I/O at its offset in the slot; all runs
  // leave in one submission. On success the slot's checksum is that of the
  // whole `page`, so the caller promises the blocks outside the mask equal
  // what the slot holds. A sealed device writes the whole page, sealed
  // afresh (GCM has no partial rewrite); the mask then only says whether
  // there is anything to write. `done` runs once, after every run, with 0 or the
  // first error. After a failure (injected ones included) the slot's bytes
  // are undefined and it is poisoned: reads get -EIO, never wrong bytes,
  // until a write() of the whole slot or free(). bytes_written counts only
  // the blocks written.
  // - mask 0: completes with 0 and touches nothing (slot and checksum).
  // - -EINVAL, touching nothing: slot not allocated, page not page_size()
  //   long, block_shift < 9, more than 64 blocks per page, or bits set past
  //   the last block. -ENODATA, touching nothing: the slot holds no write.
  // - Under O_DIRECT a block must also be a multiple of the file system's
  //   direct I/O alignment (512 B on common disks); if not, the I/O fails.
  // - Same rules as write() otherwise: `page` valid and unchanged until
  //   `done`, no other request in flight on the slot.
  virtual void write_blocks(SwapSlot slot, std::span<const std::byte> page, PageOwner owner,
                            uint64_t block_mask, unsigned block_shift, IoDone done) = 0;
  void write_blocks(SwapSlot slot, std::span<const std::byte> page, uint64_t block_mask,
                    unsigned block_shift, IoDone done) {
    write_blocks(slot, page, PageOwner{}, block_mask, block_shift, std::move(done));
  }

  // True when pages are sealed (AES-256-GCM) on the medium, false when they
  // are written as they are, with a checksum.
  virtual bool sealed() const = 0;

  // Submits everything queued (see IoBatch). Cheap when nothing is queued.
  virtual void flush() = 0;

  // Blocks the calling thread until done() returns true, for a thread that
  // waits for I/O it submitted itself (a benchmark, a synchronous caller).
  // Flushes first. A device may have the waiting thread reap completions and
  // run their callbacks itself (UringSwapDevice does: one wake-up per
  // completion instead of three), so callbacks of any request of this
  // device, not only the caller's, may run on this thread, inside this
  // call. done() runs on the calling thread, with no device lock held; it
  // must read what the callbacks write through a mutex or seq_cst atomics.
  // It is re-evaluated after every completion this thread reaps, at once
  // when a callback of a request this thread submitted runs elsewhere, and
  // otherwise at least every millisecond or so: a done() that turns true by
  // other means is noticed late, not never. Must not be called from a
  // callback (the completion thread would wait on itself), nor while this
  // thread has I/O of this device queued under an IoBatch it expects to
  // stay queued. The default just flushes and re-evaluates done() after
  // short, growing sleeps (up to 1 ms).
  virtual void wait_until(const std::function<bool()>& done);

  virtual SwapCounters counters() const = 0;

  // True when `slot` lives in a remote pool (TieredSwapDevice), not on
  // this machine: the page cache records such a page as PagePlace::remote.
  virtual bool is_remote(SwapSlot) const { return false; }
  // True when `slot`'s page is kept in this process's memory
  // (CompressedSwapDevice's pool), not on the medium: tmpfsctl where shows
  // such a page as compressed. The page word does not change when the pool
  // writes the page on, so this is asked at the time of the question.
  virtual bool pooled(SwapSlot) const { return false; }
  // True when `slot` holds a page an image on disk names (--persist's lazy
  // restore, SlotDevice::adopt_slot): it must not be written again, so a
  // partial rewrite of its page takes a new slot instead.
  virtual bool pinned(SwapSlot) const { return false; }
  // A device that keeps pages in memory (CompressedSwapDevice) takes them
  // from `pages` from now on; the page cache calls this once, with its
  // frame pool, before any I/O. The default keeps none.
  virtual void use_pages(PageSource* pages) { (void)pages; }
  // True when a write may keep its pages in this process's memory
  // (CompressedSwapDevice): writing a page out ahead of its eviction would
  // then hold it twice, in its frame and in the pool, so the page cache
  // cleans ahead only when memory is nearly full.
  virtual bool keeps_pages() const { return false; }
  // True when an IoBatch on this device plugs `dev` too (a device made of
  // others: TieredSwapDevice plugs its two, and flushes them in flush()).
  virtual bool plugs(const SwapDevice*) const { return false; }

  // Test hook: the next n read/write requests fail with `err` (e.g. -EIO,
  // -ENOSPC) without touching the medium; callbacks still run asynchronously.
  virtual void inject_errors(uint32_t n, int err) = 0;
};

// Plugging, as in the block layer: while an IoBatch on `dev` lives on this
// thread, write()/read() on `dev` from this thread only queue; the outermost
// IoBatch's destructor flushes `dev`. (Another thread's unplugged request or
// flush() may submit them earlier, which is harmless.) Use it to evict or read ahead many pages so
// that one io_uring_enter carries them all and adjacent slots merge into one I/O.
// A device made of others (plugs(): TieredSwapDevice) plugs them with itself,
// and its flush() flushes them.
class IoBatch {
 public:
  explicit IoBatch(SwapDevice& dev);
  ~IoBatch();
  IoBatch(const IoBatch&) = delete;
  IoBatch& operator=(const IoBatch&) = delete;

  // True while the calling thread holds an IoBatch on `dev`.
  static bool plugged(const SwapDevice* dev);

 private:
  SwapDevice& dev_;
  const SwapDevice* outer_;  // the thread's previous plug, restored on exit
};

}  // namespace tmpfsd::swapdev
