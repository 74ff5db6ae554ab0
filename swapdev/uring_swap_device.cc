// Submission and completion of UringSwapDevice (see the header for the
// picture). The factory and the discard thread live in uring_swap_open.cc and
// uring_discard.cc.
#include "swapdev/uring_swap_device.h"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

namespace tmpfsd::swapdev {

namespace {
constexpr size_t kDioAlign = 4096;  // memory alignment O_DIRECT needs, at most
constexpr size_t kMaxRequestPages = IOV_MAX;
constexpr size_t kPoolMax = 4096;      // idle Requests (and Units) kept
constexpr size_t kPoolKeepPages = 16;  // larger vectors are not kept
// How long a thread in wait_until() sleeps before it looks again without
// being woken, and the completion thread while waiting threads reap.
constexpr int kWaitSliceMs = 1;

// A number per thread, recorded in each request so that whoever reaps it
// can wake the thread that submitted it.
std::atomic<uint64_t> g_next_thread_token{1};
uint64_t thread_token() {
  thread_local const uint64_t token = g_next_thread_token.fetch_add(1, std::memory_order_relaxed);
  return token;
}
}  // namespace

// A thread's way to sleep until one of three things: io_uring task work for
// it arrives (its own I/O completed: the kernel wakes it to post the CQEs,
// and epoll_wait, unlike a futex wait, then returns -EINTR to user space
// instead of going back to sleep), another thread wake()s it, or a timeout.
// Each thread that calls wait_until() gets one (thread_local, kept until the
// thread exits); the completion thread has its own.
struct UringSwapDevice::Waker {
  int epfd = -1;
  int efd = -1;
  uint64_t token = 0;                 // thread_token() of its thread
  std::atomic<bool> sleeping{false};  // set before sleep(): wake() is needed

  Waker() : token(thread_token()) {
    efd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    epfd = ::epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    if (efd >= 0 && epfd >= 0 && ::epoll_ctl(epfd, EPOLL_CTL_ADD, efd, &ev) != 0) {
      ::close(epfd);
      epfd = -1;
    }
  }
  ~Waker() {
    if (epfd >= 0) ::close(epfd);
    if (efd >= 0) ::close(efd);
  }
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;
  bool ok() const { return epfd >= 0 && efd >= 0; }

  void sleep(int timeout_ms) {
    epoll_event ev;
    if (::epoll_wait(epfd, &ev, 1, timeout_ms) > 0) {
      uint64_t v;
      [[maybe_unused]] ssize_t n = ::read(efd, &v, sizeof v);
    }
  }
  void wake() {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(efd, &one, sizeof one);
  }
  // wake() if it sleeps or is about to (it re-checks after setting the flag).
  void wake_if_sleeping() {
    if (sleeping.exchange(false)) wake();
  }
};

// One read(), write() or write_blocks() call.
struct UringSwapDevice::Request {
  bool write = false;
  bool partial = false;        // write_blocks(): one unit per run of blocks
  bool rejected = false;       // err comes from the arguments: touch nothing
  uint64_t first = 0;
  uint64_t mask = 0;           // write_blocks: blocks to write
  unsigned shift = 0;          // write_blocks: log2 of the block size
  // write_blocks: units not yet completed, and the first error of a finished
  // one. Atomic: two threads may reap two units of one request at once.
  std::atomic<uint32_t> parts{0};
  std::atomic<int> part_err{0};
  uint64_t submitter = 0;      // thread_token() of the calling thread
  std::vector<iovec> pages;    // the caller's pages
  std::vector<uint64_t> sums;  // write: XXH3 of each page, taken at submission
  std::byte* bounce = nullptr; // O_DIRECT with unaligned caller memory
  int err = 0;                 // decided before any I/O (-EINVAL, injected)
  IoDone done;

  ~Request() { std::free(bounce); }
  uint32_t npages() const { return static_cast<uint32_t>(pages.size()); }
  // Back to the freshly constructed state, keeping small vectors' capacity.
  void reset() {
    write = false;
    partial = false;
    rejected = false;
    first = 0;
    mask = 0;
    shift = 0;
    parts.store(0, std::memory_order_relaxed);
    part_err.store(0, std::memory_order_relaxed);
    submitter = 0;
    err = 0;
    done = nullptr;
    std::free(bounce);
    bounce = nullptr;
    if (pages.capacity() > kPoolKeepPages) {
      std::vector<iovec>().swap(pages);
      std::vector<uint64_t>().swap(sums);
    } else {
      pages.clear();
      sums.clear();
    }
  }
};

// One SQE's worth of work: adjacent requests of one direction, merged.
struct UringSwapDevice::Unit {
  bool write = false;
  bool nop = false;        // nothing to move: completes with `err`
  bool partial = false;    // one run of a write_blocks(); never merged
  uint64_t first = 0;      // first slot
  uint32_t npages = 0;
  int err = 0;             // the error a NOP completes with
  std::vector<Request*> reqs;
  std::vector<iovec> iov;  // what the kernel moves; advanced on short transfers
  size_t iov_pos = 0;      // first iovec not fully transferred
  uint64_t offset = 0;     // file offset of iov[iov_pos] (+ partial progress)
  size_t remaining = 0;    // bytes still to move

  void reset() {
    write = false;
    nop = false;
    partial = false;
    first = 0;
    npages = 0;
    err = 0;
    iov_pos = 0;
    offset = 0;
    remaining = 0;
    reqs.clear();
    if (iov.capacity() > kPoolKeepPages)
      std::vector<iovec>().swap(iov);
    else
      iov.clear();
  }
};

namespace {
// The last of a free list, or null.
template <class T>
T* pop_free(std::vector<T*>& free_list) {
  if (free_list.empty()) return nullptr;
  T* t = free_list.back();
  free_list.pop_back();
  return t;
}
}  // namespace

UringSwapDevice::Request* UringSwapDevice::new_request() {
  Request* r;
  {
    MutexLock lk(pool_mu_);
    r = pop_free(free_reqs_);
  }
  return r ? r : new Request;
}

UringSwapDevice::Unit* UringSwapDevice::new_unit() {
  Unit* u;
  {
    MutexLock lk(pool_mu_);
    u = pop_free(free_units_);
  }
  return u ? u : new Unit;
}

void UringSwapDevice::recycle(Unit* u) {
  // Reset outside the lock: it may free memory (bounce buffers, vectors).
  for (Request* r : u->reqs) r->reset();
  size_t nreq = u->reqs.size();
  size_t kept = 0;
  bool keep_unit = false;
  {
    MutexLock lk(pool_mu_);
    for (; kept < nreq && free_reqs_.size() < kPoolMax; ++kept) free_reqs_.push_back(u->reqs[kept]);
  }
  for (size_t i = kept; i < nreq; ++i) delete u->reqs[i];
  u->reset();
  {
    MutexLock lk(pool_mu_);
    if (free_units_.size() < kPoolMax) {
      free_units_.push_back(u);
      keep_unit = true;
    }
  }
  if (!keep_unit) delete u;
}

UringSwapDevice::UringSwapDevice(const UringOptions& opt, int fd, bool direct, bool can_punch,
                                 unsigned min_block_shift)
    : page_size_(opt.page_size),
      min_block_shift_(min_block_shift),
      max_merge_(std::clamp<uint32_t>(opt.max_merge_pages, 1, kMaxRequestPages)),
      discard_batch_(std::max<uint32_t>(1, opt.discard_batch)),
      discard_interval_(opt.discard_interval),
      fd_(fd),
      direct_(direct),
      can_punch_(can_punch),
      alloc_({.total_slots = opt.size_bytes / opt.page_size,
               .cluster_slots = opt.cluster_slots,
               .shards = 0,
               .discard = can_punch}),
      sums_(opt.size_bytes / opt.page_size) {}

int UringSwapDevice::init_ring(unsigned entries, std::string& error) {
  io_uring_params p{};
  // io_uring posts a completion as task work of the task that submitted the
  // I/O. COOP_TASKRUN: a task that is running is not interrupted (IPI) for
  // it; the work runs when it next enters or leaves the kernel (a system
  // call, at the latest its next timer tick). A sleeping task is still woken
  // at once. The completion thread, which submits most I/O itself, so runs
  // its callbacks undisturbed and finds the completions posted together.
  p.flags = IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  int r = io_uring_queue_init_params(entries, &ring_, &p);
  if (r == -EINVAL) {  // a kernel older than 5.19
    p = io_uring_params{};
    r = io_uring_queue_init_params(entries, &ring_, &p);
  }
  if (r < 0) {
    error = fmt::format("io_uring_queue_init({}): {}", entries, std::strerror(-r));
    return r;
  }
  ring_ready_ = true;
  // publish_locked() relies on the identity mapping of SQ slots to SQEs
  // (liburing sets it up too; this makes it explicit).
  for (unsigned i = 0; i < ring_.sq.ring_entries; ++i) ring_.sq.array[i] = i;
  // Stay under the CQ size so completions never overflow the ring.
  max_inflight_ = p.cq_entries;
  r = io_uring_register_files(&ring_, &fd_, 1);
  if (r < 0) {
    error = fmt::format("io_uring_register_files: {}", std::strerror(-r));
    return r;
  }
  ct_waker_ = std::make_unique<Waker>();
  if (!ct_waker_->ok()) ct_waker_.reset();  // then it sleeps in io_uring_enter only
  completer_ = std::jthread([this](std::stop_token st) { completion_loop(st); });
  discarder_ = std::jthread([this](std::stop_token st) { discard_loop(st); });
  return 0;
}

UringSwapDevice::~UringSwapDevice() {
  if (completer_.joinable()) {
    flush();
    {
      UniqueLock lk(sq_mu_);
      idle_cv_.wait(lk.native(), [&]() REQUIRES(sq_mu_) { return inflight_ == 0 && backlog_.empty() && pending_.empty(); });
      stopping_ = true;
    }
    if (discarder_.joinable()) {
      discarder_.request_stop();
      discarder_.join();
    }
    completer_.request_stop();
    {
      // Wake the completion thread out of io_uring_wait_cqe.
      MutexLock lk(sq_mu_);
      io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
      if (!sqe) {
        io_uring_submit(&ring_);
        sqe = io_uring_get_sqe(&ring_);
      }
      if (sqe) {
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data(sqe, nullptr);
      }
      io_uring_submit(&ring_);
    }
    if (ct_waker_) ct_waker_->wake();
    completer_.join();
  }
  if (ring_ready_) io_uring_queue_exit(&ring_);
  if (fd_ >= 0) ::close(fd_);
  for (Request* r : free_reqs_) delete r;
  for (Unit* u : free_units_) delete u;
}

// What a read and a write check before the disk: a malformed request or
// one outside the allocated slots is refused (EINVAL), an injected error
// taken. True when the request goes on to the ring.
bool UringSwapDevice::admit(Request* r, SwapSlot first, size_t pages, bool malformed) {
  if (malformed || !alloc_.all_allocated(first, pages)) {
    r->err = -EINVAL;
    r->rejected = true;
    return false;
  }
  if (int e = inject_.take()) {
    r->err = e;
    DeviceStats::add(stats_.injected_errors);
    return false;
  }
  return true;
}

void UringSwapDevice::write(SwapSlot first, ConstPages pages, IoDone done) {
  DeviceStats::add(stats_.write_requests);
  Request* r = new_request();
  r->submitter = thread_token();
  r->write = true;
  r->first = first.value;
  r->done = std::move(done);
  r->pages.reserve(pages.size());
  bool bad = pages.empty() || pages.size() > kMaxRequestPages;
  bool aligned = true;
  for (auto p : pages) {
    r->pages.push_back({const_cast<std::byte*>(p.data()), p.size()});
    bad |= p.size() != page_size_;
    aligned &= reinterpret_cast<uintptr_t>(p.data()) % kDioAlign == 0;
  }
  if (admit(r, first, pages.size(), bad)) {
    r->sums.reserve(pages.size());
    for (auto p : pages) r->sums.push_back(ChecksumTable::hash(p));
    if (direct_ && !aligned) {
      // O_DIRECT needs aligned memory: copy into an aligned bounce buffer.
      r->bounce = static_cast<std::byte*>(std::aligned_alloc(kDioAlign, pages.size() * page_size_));
      for (size_t i = 0; i < pages.size(); ++i)
        std::memcpy(r->bounce + i * page_size_, pages[i].data(), page_size_);
    }
  }
  enqueue(r);
}

void UringSwapDevice::read(SwapSlot first, MutablePages pages, IoDone done) {
  DeviceStats::add(stats_.read_requests);
  Request* r = new_request();
  r->submitter = thread_token();
  r->first = first.value;
  r->done = std::move(done);
  r->pages.reserve(pages.size());
  bool bad = pages.empty() || pages.size() > kMaxRequestPages;
  bool aligned = true;
  for (auto p : pages) {
    r->pages.push_back({p.data(), p.size()});
    bad |= p.size() != page_size_;
    aligned &= reinterpret_cast<uintptr_t>(p.data()) % kDioAlign == 0;
  }
  if (admit(r, first, pages.size(), bad) && direct_ && !aligned) {
    r->bounce = static_cast<std::byte*>(std::aligned_alloc(kDioAlign, pages.size() * page_size_));
  }
  enqueue(r);
}

void UringSwapDevice::write_blocks(SwapSlot slot, std::span<const std::byte> page,
                                   uint64_t block_mask, unsigned block_shift, IoDone done) {
  DeviceStats::add(stats_.write_requests);
  Request* r = new_request();
  r->submitter = thread_token();
  r->write = true;
  r->partial = true;
  r->first = slot.value;
  r->mask = block_mask;
  r->shift = block_shift;
  r->done = std::move(done);
  r->pages.push_back({const_cast<std::byte*>(page.data()), page.size()});
  if (page.size() != page_size_ || !valid_block_mask(page_size_, block_mask, block_shift) ||
      !alloc_.all_allocated(slot, 1)) {
    r->err = -EINVAL;
    r->rejected = true;
  } else if (!sums_.has_data(slot.value)) {
    r->err = -ENODATA;
    r->rejected = true;
  } else if (block_mask == 0) {
    // Nothing to write: a NOP completes it with 0.
  } else if (int e = inject_.take()) {
    r->err = e;
    DeviceStats::add(stats_.injected_errors);
  } else {
    r->sums.push_back(ChecksumTable::hash(page));
    if (direct_ && reinterpret_cast<uintptr_t>(page.data()) % kDioAlign != 0) {
      r->bounce = static_cast<std::byte*>(std::aligned_alloc(kDioAlign, page_size_));
      std::memcpy(r->bounce, page.data(), page_size_);
    }
  }
  enqueue(r);
}

// The SQEs are filled and published under sq_mu_; the system call that hands
// them to the kernel runs after it is dropped, so other submitters and the
// completion thread do not queue behind the kernel's submission work (ext4,
// the block layer, the virtio doorbell: a VM exit). Concurrent
// io_uring_enter calls are safe: each submits up to its count of what is
// published, in ring order, and the counts add up to what was published.
void UringSwapDevice::enqueue(Request* r) {
  unsigned n = 0;
  {
    MutexLock lk(sq_mu_);
    pending_.push_back(r);
    if (!IoBatch::plugged(this)) n = flush_locked();
  }
  enter(n);
}

void UringSwapDevice::flush() {
  unsigned n;
  {
    MutexLock lk(sq_mu_);
    n = flush_locked();
  }
  enter(n);
}

unsigned UringSwapDevice::flush_locked() {
  if (pending_.empty()) return 0;
  // Sort so that requests on adjacent slots meet, then cut into units.
  // (stable_sort allocates a buffer: skip it for the common single request.)
  if (pending_.size() > 1)
    std::stable_sort(pending_.begin(), pending_.end(), [](const Request* a, const Request* b) {
      if ((a->err != 0) != (b->err != 0)) return a->err == 0;
      if (a->write != b->write) return a->write;
      return a->first < b->first;
    });
  Unit* u = nullptr;
  for (Request* r : pending_) {
    if (r->partial && r->err == 0 && r->mask != 0) {
      if (u) push_locked(u);
      u = nullptr;
      push_runs_locked(r);
      continue;
    }
    bool joins = u && !u->nop && !u->partial && !r->partial && r->err == 0 &&
                 u->write == r->write && u->first + u->npages == r->first &&
                 u->npages + r->npages() <= max_merge_;
    if (!joins) {
      if (u) push_locked(u);
      u = new_unit();
      u->write = r->write;
      u->first = r->first;
      u->nop = r->err != 0 || r->partial;  // a failed request, or write_blocks of mask 0
      u->partial = r->partial;
      u->err = r->err;
      u->offset = r->first * page_size_;
      if (r->partial) r->parts.store(1, std::memory_order_relaxed);
    } else {
      DeviceStats::add(stats_.ios_merged);
    }
    u->reqs.push_back(r);
    u->npages += r->npages();
    if (!u->nop) {
      if (r->bounce)
        u->iov.push_back({r->bounce, r->npages() * page_size_});
      else
        u->iov.insert(u->iov.end(), r->pages.begin(), r->pages.end());
      u->remaining += r->npages() * page_size_;
    }
  }
  if (u) push_locked(u);
  pending_.clear();
  return publish_locked();
}

unsigned UringSwapDevice::publish_locked() {
  io_uring_sq& sq = ring_.sq;
  unsigned tail = sq.sqe_tail;
  unsigned n = tail - sq.sqe_head;
  if (n != 0) {
    sq.sqe_head = tail;
    io_uring_smp_store_release(sq.ktail, tail);  // the SQEs before the tail
  }
  return n;
}

unsigned UringSwapDevice::unsubmitted_locked() {
  publish_locked();
  return ring_.sq.sqe_tail - io_uring_smp_load_acquire(ring_.sq.khead);
}

void UringSwapDevice::enter(unsigned n) {
  if (n == 0) return;
  int r;
  do {
    r = io_uring_enter(static_cast<unsigned>(ring_.ring_fd), n, 0, 0, nullptr);
  } while (r == -EINTR);
  // -EAGAIN/-EBUSY: the kernel is short of room; the SQEs stay published and
  // the completion thread submits them after it has reaped.
  if (r < 0 && r != -EAGAIN && r != -EBUSY)
    spdlog::error("swapdev: io_uring_enter: {}", std::strerror(-r));
}

// One unit per run of consecutive set bits in r->mask, each writing its
// blocks from the page (or its bounce copy) at their offset in the slot.
void UringSwapDevice::push_runs_locked(Request* r) {
  std::byte* page = r->bounce ? r->bounce : static_cast<std::byte*>(r->pages[0].iov_base);
  // Count first: the completion thread may finish the first unit before the
  // last is pushed, and must know it was not the last.
  uint32_t parts = 0;
  for (uint64_t m = r->mask; m != 0; m &= m + (m & -m)) ++parts;  // drops the lowest run
  r->parts.store(parts, std::memory_order_relaxed);
  uint64_t m = r->mask;
  while (m != 0) {
    unsigned b = static_cast<unsigned>(std::countr_zero(m));
    unsigned e = b + static_cast<unsigned>(std::countr_one(m >> b));
    m = e >= 64 ? 0 : m & (~uint64_t{0} << e);
    size_t off = size_t{b} << r->shift;
    size_t len = size_t{e - b} << r->shift;
    Unit* u = new_unit();
    u->write = true;
    u->partial = true;
    u->first = r->first;
    u->npages = 1;
    u->offset = r->first * page_size_ + off;
    u->remaining = len;
    u->iov.push_back({page + off, len});
    u->reqs.push_back(r);
    push_locked(u);
  }
}

void UringSwapDevice::push_locked(Unit* u) {
  if (!backlog_.empty() || inflight_ >= max_inflight_) {
    backlog_.push_back(u);
    return;
  }
  if (!prep_locked(u)) {
    submit_locked();  // the SQ is full: make room
    if (!prep_locked(u)) backlog_.push_back(u);
  }
}

bool UringSwapDevice::prep_locked(Unit* u) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (!sqe) return false;
  if (u->nop) {
    io_uring_prep_nop(sqe);
  } else {
    // READ/WRITE_FIXED needs one contiguous range inside one registered
    // buffer; frames usually are contiguous for a single page.
    int fixed = -1;
    uintptr_t base = reinterpret_cast<uintptr_t>(u->iov[u->iov_pos].iov_base);
    if (!fixed_.empty()) {
      bool contiguous = true;
      for (size_t i = u->iov_pos + 1; i < u->iov.size() && contiguous; ++i)
        contiguous = reinterpret_cast<uintptr_t>(u->iov[i].iov_base) ==
                     reinterpret_cast<uintptr_t>(u->iov[i - 1].iov_base) + u->iov[i - 1].iov_len;
      for (size_t b = 0; contiguous && b < fixed_.size(); ++b)
        if (base >= fixed_[b].base && base + u->remaining <= fixed_[b].base + fixed_[b].len)
          fixed = static_cast<int>(b);
    }
    // Test hook: send half, as if the kernel had stopped early.
    bool halve = u->remaining > page_size_ && short_inject_.take();
    if (fixed >= 0) {
      size_t len = halve ? u->remaining / page_size_ / 2 * page_size_ : u->remaining;
      if (u->write)
        io_uring_prep_write_fixed(sqe, 0, reinterpret_cast<void*>(base),
                                  static_cast<unsigned>(len), u->offset, fixed);
      else
        io_uring_prep_read_fixed(sqe, 0, reinterpret_cast<void*>(base),
                                 static_cast<unsigned>(len), u->offset, fixed);
      DeviceStats::add(stats_.fixed_ios);
    } else {
      unsigned n = static_cast<unsigned>(u->iov.size() - u->iov_pos);
      if (halve && n > 1) n /= 2;
      if (u->write)
        io_uring_prep_writev(sqe, 0, &u->iov[u->iov_pos], n, u->offset);
      else
        io_uring_prep_readv(sqe, 0, &u->iov[u->iov_pos], n, u->offset);
    }
    sqe->flags |= IOSQE_FIXED_FILE;  // index 0 of the registered files
    if (u->npages > 1) DeviceStats::add(stats_.multi_page_ios);
  }
  io_uring_sqe_set_data(sqe, u);
  ++inflight_;
  stats_.io_started();
  DeviceStats::add(stats_.ios_submitted);
  return true;
}

void UringSwapDevice::submit_locked() {
  if (io_uring_sq_ready(&ring_) == 0) return;
  int r;
  do {
    r = io_uring_submit(&ring_);
  } while (r == -EINTR);
  // -EAGAIN/-EBUSY: the kernel is short of room; the SQEs stay queued and the
  // completion thread submits them after it has reaped.
  if (r < 0 && r != -EAGAIN && r != -EBUSY)
    spdlog::error("swapdev: io_uring_submit: {}", std::strerror(-r));
}

// Decides what a CQE means for its unit: finished (callbacks run) or sent
// again (-EAGAIN, short transfer). The thread that reaped its CQE.
void UringSwapDevice::complete(Unit* u, int res) {
  if (u->nop) return finish(u, u->err);
  if (res >= 0)
    if (int e = cqe_inject_.take()) res = e;
  if (res == -EAGAIN || res == -EINTR) {
    DeviceStats::add(stats_.retries);
  } else if (res < 0) {
    return finish(u, res);
  } else if (static_cast<size_t>(res) >= u->remaining) {
    return finish(u, 0);
  } else if (res == 0) {
    return finish(u, -EIO);  // the file is preallocated: no progress is an error
  } else {
    // Short transfer: skip what was moved and send the rest.
    DeviceStats::add(stats_.retries);
    size_t left = static_cast<size_t>(res);
    u->offset += left;
    u->remaining -= left;
    while (left > 0) {
      iovec& v = u->iov[u->iov_pos];
      size_t take = std::min(left, v.iov_len);
      v.iov_base = static_cast<char*>(v.iov_base) + take;
      v.iov_len -= take;
      left -= take;
      if (v.iov_len == 0) ++u->iov_pos;
    }
  }
  unsigned n;
  {
    MutexLock lk(sq_mu_);
    push_locked(u);
    n = publish_locked();
  }
  enter(n);
}

void UringSwapDevice::finish(Unit* u, int err) {
  if (u->partial) {
    // One run of a write_blocks(): the request finishes with its last unit.
    Request* r = u->reqs[0];
    int none = 0;
    if (err != 0) r->part_err.compare_exchange_strong(none, err, std::memory_order_relaxed);
    if (r->parts.fetch_sub(1, std::memory_order_acq_rel) > 1) {
      u->reqs.clear();  // the request lives on with its other units
      recycle(u);
      return;
    }
    err = r->part_err.load(std::memory_order_relaxed);
  }
  for (Request* r : u->reqs) finish_request(r, err);
  recycle(u);
}

void UringSwapDevice::finish_request(Request* r, int err) {
  const uint32_t n = r->npages();
  if (err == 0) err = r->err;
  if (r->partial) {
    if (err == 0 && r->mask != 0) {
      sums_.set(r->first, r->sums[0]);
      DeviceStats::add(stats_.bytes_written, uint64_t(std::popcount(r->mask)) << r->shift);
    } else if (err != 0 && !r->rejected) {
      sums_.poison(r->first);  // some runs may have landed: trust none of it
    }
  } else if (r->write) {
    if (err == 0) {
      for (uint32_t i = 0; i < n; ++i) sums_.set(r->first + i, r->sums[i]);
      DeviceStats::add(stats_.bytes_written, uint64_t{n} * page_size_);
    } else if (!r->rejected) {
      // What is on the medium now is unknown: no read may trust it.
      for (uint32_t i = 0; i < n; ++i) sums_.clear(r->first + i);
    }
  } else {
    for (uint32_t i = 0; i < n && err == 0; ++i) {
      std::byte* at = r->bounce ? r->bounce + i * page_size_
                                : static_cast<std::byte*>(r->pages[i].iov_base);
      int v = sums_.verify(r->first + i, {at, page_size_});
      if (v == -EIO && sums_.poisoned(r->first + i)) {
        spdlog::error("swapdev: slot {}: its last partial write failed", r->first + i);
      } else if (v == -EIO) {
        DeviceStats::add(stats_.checksum_failures);
        spdlog::error("swapdev: checksum mismatch reading slot {}", r->first + i);
      }
      err = v;
    }
    if (err == 0 && r->bounce)
      for (uint32_t i = 0; i < n; ++i)
        std::memcpy(r->pages[i].iov_base, r->bounce + i * page_size_, page_size_);
    if (err == 0) DeviceStats::add(stats_.bytes_read, uint64_t{n} * page_size_);
    // Never leave bytes that failed verification in the caller's page.
    if (err != 0 && !r->rejected)
      for (auto& p : r->pages) std::memset(p.iov_base, 0, page_size_);
  }
  if (err != 0) DeviceStats::add(stats_.errors);
  try {
    r->done(err);
  } catch (const std::exception& e) {
    spdlog::error("swapdev: an I/O callback threw: {}", e.what());
  } catch (...) {
    spdlog::error("swapdev: an I/O callback threw");
  }
  r->done = nullptr;  // what it captured goes now, not when the Request is reused
}

unsigned UringSwapDevice::cq_ready() const {
  return io_uring_smp_load_acquire(ring_.cq.ktail) - io_uring_smp_load_acquire(ring_.cq.khead);
}

unsigned UringSwapDevice::reap(Reaped& out) {
  out.cqes.clear();
  out.owners.clear();
  {
    MutexLock lk(cq_mu_);
    unsigned head;
    unsigned seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      out.cqes.emplace_back(static_cast<Unit*>(io_uring_cqe_get_data(cqe)), cqe->res);
      ++seen;
    }
    if (seen == 0) return 0;
    io_uring_cq_advance(&ring_, seen);
  }
  unsigned units = 0;
  for (auto& [u, res] : out.cqes) units += u != nullptr;
  unsigned n;
  {
    // Give the ring room first, so callbacks and resubmissions find it.
    MutexLock lk(sq_mu_);
    inflight_ -= units;
    stats_.io_finished(units);
    while (!backlog_.empty() && inflight_ < max_inflight_) {
      if (!prep_locked(backlog_.front())) {
        submit_locked();
        if (!prep_locked(backlog_.front())) break;
      }
      backlog_.pop_front();
    }
    // Also whatever an earlier io_uring_enter left (-EAGAIN/-EBUSY).
    n = unsubmitted_locked();
  }
  enter(n);
  // Whose requests these are matters only while threads wait in
  // wait_until(): a thread whose callback runs here must be woken.
  const bool track = waiting_count_.load(std::memory_order_relaxed) > 0;
  const uint64_t me = thread_token();
  // What a callback submits leaves when that callback returns (all of it in
  // one io_uring_enter), not after the whole batch: the disk would idle
  // while the rest of the batch is verified and called back. Measured at
  // 4 KiB qd32 (swapdev/fio IOPS ratio): plugged per batch 0.75x write,
  // 0.84x read; per 4 completions 0.97x, 0.92x; per completion 1.00x, 0.97x.
  for (auto& [u, res] : out.cqes) {
    if (!u) continue;
    if (track)
      for (Request* r : u->reqs)
        if (r->submitter != me) out.owners.push_back(r->submitter);
    IoBatch plug(*this);
    complete(u, res);
  }
  {
    MutexLock lk(sq_mu_);
    if (inflight_ == 0 && backlog_.empty()) idle_cv_.notify_all();
  }
  if (!out.owners.empty()) {
    MutexLock lk(wait_mu_);
    for (Waker* w : waiting_)
      if (std::find(out.owners.begin(), out.owners.end(), w->token) != out.owners.end())
        w->wake_if_sleeping();
  }
  return static_cast<unsigned>(out.cqes.size());
}

// While no thread waits in wait_until(), this thread sleeps in io_uring_enter
// and reaps every completion, as it always did. While some do, they reap
// their own (their task work wakes them, see Waker), and this thread keeps
// out of io_uring_enter: a sleeper there is woken by every CQE posted, and
// would take the waiters' completions from under them (a second and third
// wake-up). It then wakes for its own task work (I/O its callbacks or
// resubmissions sent), a kick when the last waiter leaves, or every
// kWaitSliceMs for completions of threads that do not wait.
void UringSwapDevice::completion_loop(std::stop_token st) {
  pthread_setname_np(pthread_self(), "uring-complete");  // how stack dumps and /proc/PID/task name it
  Reaped batch;
  for (;;) {
    if (ct_waker_ && waiting_count_.load() > 0) {
      ct_waker_->sleeping.store(true);
      if (waiting_count_.load() > 0 && cq_ready() == 0) ct_waker_->sleep(kWaitSliceMs);
      ct_waker_->sleeping.store(false, std::memory_order_relaxed);
    } else if (cq_ready() == 0) {
      int r = io_uring_enter(static_cast<unsigned>(ring_.ring_fd), 0, 1, IORING_ENTER_GETEVENTS,
                             nullptr);
      if (r < 0 && r != -EINTR) spdlog::error("swapdev: io_uring_enter(GETEVENTS): {}", std::strerror(-r));
    }
    reap(batch);
    MutexLock lk(sq_mu_);
    if (inflight_ == 0 && backlog_.empty() && st.stop_requested() && stopping_) return;
  }
}

void UringSwapDevice::wait_until(const std::function<bool()>& done) {
  flush();
  if (done()) return;
  thread_local std::unique_ptr<Waker> mine;
  if (!mine) mine = std::make_unique<Waker>();
  if (!mine->ok()) return SwapDevice::wait_until(done);  // no fds: the completion thread reaps
  Waker* w = mine.get();
  {
    MutexLock lk(wait_mu_);
    waiting_.push_back(w);
    waiting_count_.store(static_cast<unsigned>(waiting_.size()));
  }
  thread_local Reaped batch;
  const bool plugged = IoBatch::plugged(this);
  for (;;) {
    unsigned got = reap(batch);
    if (plugged) flush();  // the callbacks' I/O, queued under our plug
    if (done()) break;
    if (got > 0) continue;
    // Whoever runs our callback clears `sleeping` and wakes us; set it
    // before the last look so that one of the two sees the other.
    w->sleeping.store(true);
    if (!done() && cq_ready() == 0) w->sleep(kWaitSliceMs);
    w->sleeping.store(false, std::memory_order_relaxed);
  }
  bool last;
  {
    MutexLock lk(wait_mu_);
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), w));
    last = waiting_.empty();
    waiting_count_.store(static_cast<unsigned>(waiting_.size()));
  }
  // Completions of threads that do not wait are the completion thread's
  // again: back to io_uring_enter at once, not after its slice.
  if (last && ct_waker_) ct_waker_->wake_if_sleeping();
}

SlotRun UringSwapDevice::allocate(uint32_t want, SwapSlot hint) {
  SlotRun r = alloc_.allocate(want, hint);
  if (r.count == 0 && r.err == -ENOSPC && alloc_.discarding() > 0) {
    // Space is on its way back from a punch: wait for it rather than fail.
    UniqueLock lk(disc_mu_);
    space_cv_.wait_for(lk.native(), std::chrono::seconds(2), [&] { return alloc_.discarding() == 0; });
    lk.unlock();
    r = alloc_.allocate(want, hint);
  }
  return r;
}

void UringSwapDevice::free(SwapSlot first, uint32_t count) {
  // Forget the checksums before the slots can be handed out again.
  if (alloc_.all_allocated(first, count)) {
    for (uint64_t s = first.value; s < first.value + count; ++s) sums_.clear(s);
  } else if (first.valid()) {
    uint64_t end = std::min<uint64_t>(alloc_.total_slots(), first.value + count);
    for (uint64_t s = first.value; s < end; ++s)
      if (alloc_.allocated(SwapSlot(s))) sums_.clear(s);
  }
  alloc_.free(first, count);
  if (alloc_.discard_waiting() >= discard_batch_) {
    MutexLock lk(disc_mu_);
    disc_kick_ = true;
    disc_cv_.notify_one();
  }
}

int UringSwapDevice::register_memory(void* base, size_t len) {
  if (!base || len == 0) return -EINVAL;
  MutexLock lk(sq_mu_);
  if (!fixed_.empty()) return -EBUSY;
  // The kernel takes at most 1 GiB per registered buffer.
  constexpr size_t kChunk = size_t{1} << 30;
  std::vector<iovec> iov;
  std::vector<FixedChunk> chunks;
  for (size_t off = 0; off < len; off += kChunk) {
    size_t n = std::min(kChunk, len - off);
    iov.push_back({static_cast<char*>(base) + off, n});
    chunks.push_back({reinterpret_cast<uintptr_t>(base) + off, n});
  }
  int r = io_uring_register_buffers(&ring_, iov.data(), static_cast<unsigned>(iov.size()));
  if (r < 0) {
    spdlog::warn("swapdev: cannot register {} bytes as fixed buffers: {}", len, std::strerror(-r));
    return r;
  }
  fixed_ = std::move(chunks);
  return 0;
}

SwapCounters UringSwapDevice::counters() const {
  return stats_.counters(alloc_);
}

}  // namespace tmpfsd::swapdev
