// UringSwapDevice: the swap file, driven by one io_uring.
//
// The file is private (see swap_file.h): nameless, 0600, reserved up front,
// O_DIRECT when possible. Requests travel like this:
//
//   write()/read() ──> pending_ ──flush──> sorted, adjacent requests merged
//   write_blocks()     (sq_mu_)            into one readv/writev (or
//   (any thread)                           READ/WRITE_FIXED) SQE per run;
//                                          write_blocks: one SQE per run of
//                                          blocks, never merged
//                                              │ io_uring_submit (batched)
//                                              v
//   IoDone(err) <── completion thread <── CQE: -EAGAIN and short transfers
//                   (verifies checksums,       are resubmitted from here
//                   opens seals)
//                   or a thread in wait_until()
//
// A sealed device (UringOptions::seal, seal.h) seals each page of a write
// into a bounce buffer that the SQE then carries (the caller's page stays
// plaintext), and opens each page of a read in place. The cipher is the
// heavy step of both, so it runs on a pool of crypto threads (one per CPU,
// "uring-crypto") as well as the caller's: the completion thread hands
// every sealed read it reaps to the pool, splitting a large one into
// chunks that several threads share, and the last of them on a request
// runs its callback; a flush that seals many deferred writes (the
// reclaimer's) seals a share itself and waits for the pool to seal the
// rest. So the cipher runs on every CPU, and the completion thread only
// reaps and submits. A thread in wait_until() opens what it reaps itself.
//
// A request is queued rather than submitted while the calling thread holds an
// IoBatch on this device; otherwise write()/read() submit at once. When the
// ring is full (in-flight I/Os reach the CQ size) units wait on a backlog that
// whoever reaps drains, so submitters never block on the ring. The
// completion thread plugs itself while it runs each callback, so the I/O one
// callback submits leaves in one io_uring_enter, as soon as it returns.
//
// Why a lock around the SQ, and not the SQ handed to one thread: with the
// lock, the kernel's submission work (ext4 direct I/O, block layer, virtio
// kick) runs on the submitters' CPUs; handed to one ring thread it all
// serialises there, and measured no better at depth 32 and worse with
// several submitters (docs/measurements.md, "Swap device: submission"). The
// lock only covers filling and publishing SQEs: io_uring_enter runs after it
// is dropped (see enqueue()), else every submitter queues behind one virtio
// doorbell (a VM exit). The price is that io_uring delivers each completion
// as task work to the task that submitted it, so a sleeping submitter is
// woken once to post it; COOP_TASKRUN at least keeps a running one from
// being interrupted for it.
//
// wait_until(): a thread that waits for its own I/O (bench-swapdev's
// threaded rows; not the page cache, whose I/O is asynchronous) reaps
// completions itself and runs their callbacks, as a fio job does, which
// saves two of the three wake-ups a completion otherwise costs (interrupt
// -> submitter's task work -> completion thread -> callback waking the
// submitter). It sleeps in epoll_wait on its own eventfd (Waker), not in
// io_uring_enter: the task work of its I/O wakes it, and epoll_wait, unlike
// a futex wait, then returns -EINTR to user space after the task work has
// posted the CQEs, so the one wake-up that io_uring costs anyway is the
// only one. A sleeper in io_uring_enter(GETEVENTS) would be woken by every
// CQE any thread posts, so while a thread waits the completion thread keeps
// out of it too: it sleeps on its own Waker and wakes for its own task
// work, for a kick when the last waiter leaves, or every kWaitSliceMs (for
// completions of threads that do not wait). Every reaper takes CQEs under
// cq_mu_ and completes them outside it, so each CQE is taken once; a
// write_blocks() whose runs two reapers complete counts them atomically. A
// waiter whose callback another thread ran (it took the CQEs first) is woken
// through its Waker by that thread (requests record their submitting
// thread), and any waiter looks again every kWaitSliceMs in any case.
//
// One ring for all submitters, with one completion thread: rings per
// thread, SQPOLL, a combining submitter and the completion thread as the
// issuer were each built and measured, and none gained enough to keep
// (docs/measurements.md, "Swap device: what was tried").
//
// Freed slots: a cluster whose slots are all free waits on the allocator's
// discard list; the discard thread punches batches of them out of the file
// (FALLOC_FL_PUNCH_HOLE) so the disk space comes back, then makes them
// allocatable again. A punched range is no longer reserved: writing it again
// allocates disk blocks.
//
// Locks: sq_mu_ guards pending_, backlog_, the SQ side of the ring (filling
// and publishing SQEs, not the io_uring_enter that sends them) and the
// registered-buffer table; it is never held while a callback runs. cq_mu_
// guards the CQ head (taking CQEs and advancing past them), only for that.
// wait_mu_ guards the list of threads in wait_until(). crypto_mu_ guards the
// crypto threads' queue (a leaf). disc_mu_ guards the
// discard thread's wake-up. Order: none of sq_mu_, cq_mu_, wait_mu_ and the
// allocator's shard locks is held together with another (pool_mu_ is a leaf
// under sq_mu_).
//
// Threads: any thread may call the public methods. Callbacks run on the
// completion thread, a crypto thread (sealed reads), or a thread inside
// wait_until(). The destructor waits
// for every in-flight request (their callbacks run) and must not be called
// from a callback, nor while a thread is in wait_until().
#pragma once

#include <liburing.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "swapdev/slot_device.h"
#include "swapdev/thread_annotations.h"

namespace tmpfsd::swapdev {

struct UringOptions {
  std::string dir = "/var/tmp";    // --swap-dir
  uint64_t size_bytes = 0;         // --swap; rounded down to whole pages
  size_t page_size = 4096;         // power of two, >= 4096
  unsigned queue_depth = 128;      // SQ entries; in flight at most 2x this
  uint32_t cluster_slots = 256;    // slots per allocation cluster
  uint32_t max_merge_pages = 256;  // cap of one merged I/O
  bool direct_io = true;           // false: buffered I/O from the start
  bool allow_tmpfs = false;        // tests of the buffered fallback only
  // Seal every page (AES-256-GCM, a key made here and kept in memory only:
  // seal.h) instead of writing it as it is with a checksum. The daemon sets
  // it unless --seal off; the default here is the plain device that
  // bench-swapdev measures against fio.
  bool seal = false;
  // --persist: the file is dir/file_name, kept and opened as it is (see
  // SwapFileOptions::name); a sealed one is keyed with seal_key (empty: a
  // fresh key) and its counter starts at seal_counter, both from the image
  // that names its slots (SlotDevice::adopt_slot).
  std::string file_name{};
  std::vector<std::byte> seal_key{};
  uint64_t seal_counter = 1;
  uint32_t discard_batch = 16;  // clusters waiting before the discard thread runs
  std::chrono::milliseconds discard_interval{1000};  // ... or this long
  // Tests only: see SwapFileOptions.
  bool test_no_tmpfile = false;
  bool test_refuse_direct_open = false;
  bool test_refuse_direct_io = false;
};

class UringSwapDevice;

// Outcome of open_uring_swap_device: a device, or err < 0 and a sentence
// saying what is wrong (no room, tmpfs, no io_uring...).
struct UringOpenResult {
  std::unique_ptr<UringSwapDevice> device;
  int err = 0;
  std::string error;
};

UringOpenResult open_uring_swap_device(const UringOptions& opt) noexcept;

class UringSwapDevice final : public SlotDevice {
 public:
  ~UringSwapDevice() override;

  SlotRun allocate(uint32_t want, SwapSlot hint = {}) override;
  void free(SwapSlot first, uint32_t count = 1) override;
  using SwapDevice::read;
  using SwapDevice::write;
  using SwapDevice::write_blocks;
  void write(SwapSlot first, ConstPages pages, PageOwner owner, IoDone done) override;
  void read(SwapSlot first, MutablePages pages, PageOwner owner, IoDone done) override;
  void write_blocks(SwapSlot slot, std::span<const std::byte> page, PageOwner owner,
                    uint64_t block_mask, unsigned block_shift, IoDone done) override;
  void flush() override;
  // Reaps completions on the calling thread (see the header comment).
  void wait_until(const std::function<bool()>& done) override;

  // Registers [base, base+len) (page-aligned memory) as io_uring
  // fixed buffers, so I/O on pages inside it uses READ_FIXED/WRITE_FIXED and
  // the kernel skips pinning pages per request. Call once, before I/O starts;
  // the memory must outlive the device. 0 or -errno (-EBUSY if called twice,
  // -ENOMEM/-EPERM when RLIMIT_MEMLOCK is too low). bench-swapdev and the
  // tests call it; the page cache does not (core/page_cache/page_cache.cc says why), so
  // the daemon's I/O is plain readv/writev.
  int register_memory(void* base, size_t len);

  // Punches every cluster waiting for discard now and returns when done.
  void discard_now();

  // Test hook: the next n I/Os of more than one page are sent with only half
  // their length, so the kernel reports a short transfer and the resubmission
  // path runs.
  void inject_short_transfers(uint32_t n) { short_inject_.arm(n, 1); }

  // Test hook: the next n I/Os that reach the kernel are done by it but
  // their completions report `err`: -EAGAIN runs the resubmission path, -EIO
  // a failure after the medium may have been written.
  void inject_completion_errors(uint32_t n, int err) { cqe_inject_.arm(n, err); }

  int fd() const { return fd_; }  // test hook: corrupt behind our back
  bool direct_io() const { return direct_; }
  bool can_discard() const { return can_punch_.load(std::memory_order_relaxed); }

 private:
  struct Request;
  struct Unit;
  struct Waker;
  // What one reap() took from the CQ; kept per thread to reuse its capacity.
  struct Reaped {
    std::vector<std::pair<Unit*, int>> cqes;  // user_data, res
    std::vector<uint64_t> owners;             // submitters of reaped requests, not ours
  };
  friend UringOpenResult open_uring_swap_device(const UringOptions&) noexcept;

  UringSwapDevice(const UringOptions& opt, int fd, bool direct, bool can_punch,
                  unsigned min_block_shift, std::unique_ptr<Sealer> sealer);
  int init_ring(unsigned entries, std::string& error);

  void enqueue(Request* r);
  // A write whose proofs are to be taken: sealed under a plug, deferred to
  // this thread's flush of the device; otherwise proved and enqueued now.
  void submit_write(Request* r);
  void prove_request(Request* r);              // seals (or sums) r's pages; -EIO if OpenSSL fails
  void prove_deferred();                       // this thread's deferred seals, into pending_
  unsigned flush_locked() REQUIRES(sq_mu_);    // returns what enter() must send
  unsigned publish_locked() REQUIRES(sq_mu_);  // makes prepared SQEs visible; how many
  unsigned unsubmitted_locked() REQUIRES(sq_mu_);      // published, not yet taken by the kernel
  void enter(unsigned n);                              // hands n SQEs to the kernel; no lock held
  void push_locked(Unit* u) REQUIRES(sq_mu_);          // into the ring, or the backlog
  void push_runs_locked(Request* r) REQUIRES(sq_mu_);  // write_blocks: a unit per run of blocks
  bool prep_locked(Unit* u) REQUIRES(sq_mu_);          // false: no SQE free
  void submit_locked() REQUIRES(sq_mu_);
  unsigned reap(Reaped& out);       // takes every CQE and completes it; how many
  unsigned cq_ready() const;        // CQEs posted and not taken: a hint, no lock
  void complete(Unit* u, int res);  // the reaping thread
  void finish(Unit* u, int err);    // runs the callbacks, frees u
  // `verified`: a read's pages were opened or checked already (crypto threads).
  void finish_request(Request* r, int err, bool verified = false);
  // Pages [begin, end) of read r checked, or opened in place; the first error.
  int verify_pages(Request* r, uint32_t begin, uint32_t end);
  // On the completion thread: a sealed read that arrived intact is queued
  // for the crypto threads instead of opened here; false when it is not theirs.
  bool to_crypto(Request* r, int err);
  void dispatch_opens();  // the completion thread's queued opens, to the crypto threads
  void crypto_loop(std::stop_token st);
  void recycle_request(Request* r);  // r (not in a unit) back to the pool
  // From the pool, or the heap: counted as a read or write request, and
  // stamped with the calling thread and the caller's callback.
  Request* new_request(bool write, SwapSlot first, IoDone done);
  bool admit(Request* r, SwapSlot first, size_t pages, bool malformed);
  Unit* new_unit();
  void recycle(Unit* u);  // u and its requests back to the pool
  // A bounce buffer of `pages` pages (aligned for O_DIRECT); single pages
  // come from a free list, so that sealed writeback, which bounces every
  // page, does not churn (and fragment) the heap.
  std::byte* new_bounce(size_t pages);
  void completion_loop(std::stop_token st);
  void discard_loop(std::stop_token st);
  size_t discard_round(size_t max_clusters);

  // Constant after construction.
  const uint32_t max_merge_;
  const uint32_t discard_batch_;
  const std::chrono::milliseconds discard_interval_;
  const int fd_;
  const bool direct_;
  std::atomic<bool> can_punch_;  // cleared if punching starts failing
  bool ring_ready_ = false;      // io_uring_queue_init succeeded

  ErrorInjector short_inject_;
  ErrorInjector cqe_inject_;

  io_uring ring_{};
  unsigned max_inflight_ = 0;

  Mutex sq_mu_;
  std::vector<Request*> pending_ GUARDED_BY(sq_mu_);  // queued, not yet in units
  std::deque<Unit*> backlog_ GUARDED_BY(sq_mu_);      // units waiting for ring room
  unsigned inflight_ GUARDED_BY(sq_mu_) = 0;          // units in the kernel
  struct FixedChunk {
    uintptr_t base;
    size_t len;
  };
  std::vector<FixedChunk> fixed_ GUARDED_BY(sq_mu_);  // index = buffer index
  bool stopping_ GUARDED_BY(sq_mu_) = false;
  std::condition_variable idle_cv_;  // inflight_ == 0 && backlog_ empty

  // Reaping: the completion thread and threads in wait_until() share the CQ.
  Mutex cq_mu_;    // guards the CQ head: taking CQEs, advancing it
  Mutex wait_mu_;  // a leaf lock
  std::vector<Waker*> waiting_ GUARDED_BY(wait_mu_);  // threads in wait_until()
  std::atomic<unsigned> waiting_count_{0};            // waiting_.size(), read without the lock
  std::unique_ptr<Waker> ct_waker_;                   // the completion thread's; null if no fds

  // Finished Requests and Units, kept with their vectors' capacity so that
  // an I/O costs no heap allocation in the steady state.
  Mutex pool_mu_;  // a leaf lock (taken under sq_mu_ too)
  std::vector<Request*> free_reqs_ GUARDED_BY(pool_mu_);
  std::vector<Unit*> free_units_ GUARDED_BY(pool_mu_);
  std::vector<std::byte*> free_bounces_ GUARDED_BY(pool_mu_);   // one page each
  std::vector<std::byte*> bounce_chunks_ GUARDED_BY(pool_mu_);  // their mappings

  Mutex disc_mu_;
  std::condition_variable_any disc_cv_;   // wakes the discard thread
  std::condition_variable_any space_cv_;  // a discard round finished
  bool disc_kick_ GUARDED_BY(disc_mu_) = false;

  // The crypto threads (see the header comment). The completion thread
  // collects a reap's worth of read chunks in open_batch_ (its own), then
  // moves them to crypto_q_, which the crypto threads drain; a flush puts
  // its seal jobs there directly and waits on their SealBatch.
  struct SealBatch;
  struct CryptoJob {
    Request* r = nullptr;  // a read: pages [begin, end) of it to open
    uint32_t begin = 0, end = 0;
    Request* const* seal = nullptr;  // or writes: seal[begin, end) to seal
    SealBatch* batch = nullptr;      // ... and whom to tell
  };
  void seal_in_parallel(std::vector<Request*>& reqs);
  std::atomic<uint64_t> completer_token_{0};  // thread_token() of the completion thread
  std::vector<CryptoJob> open_batch_;         // the completion thread's only
  Mutex crypto_mu_;                           // a leaf lock
  std::deque<CryptoJob> crypto_q_ GUARDED_BY(crypto_mu_);
  std::condition_variable_any crypto_cv_;  // crypto_q_ not empty
  unsigned ncrypto_ = 0;                   // constant once the ring is up
  std::atomic<unsigned> opening_{0};       // reads with the crypto threads, callbacks not yet run

  std::jthread completer_;
  std::jthread discarder_;
  std::vector<std::jthread> crypto_threads_;  // sealed devices only
};

}  // namespace tmpfsd::swapdev
