// Internal to UringSwapDevice: the per-call and per-SQE records and the
// waiter's wake-up, shared by its three source files:
//   uring_swap_device.cc  pools, the ring's set-up and tear-down, what read(),
//                         write() and write_blocks() check, slots, buffers;
//   uring_submit.cc       pending requests merged into units, SQEs published;
//   uring_complete.cc     CQEs reaped, retries, verification, callbacks, and
//                         the completion thread and wait_until().
// Not part of the device's interface: include only from those files.
#pragma once

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <span>
#include <vector>

#include "swapdev/uring_swap_device.h"

namespace tmpfsd::swapdev {

namespace uring_detail {
constexpr size_t kDioAlign = 4096;  // memory alignment O_DIRECT needs, at most
constexpr size_t kMaxRequestPages = IOV_MAX;
constexpr size_t kPoolMax = 4096;         // idle Requests (and Units) kept
constexpr size_t kPoolKeepPages = 16;     // larger vectors are not kept
constexpr size_t kBounceChunkPages = 64;  // one-page bounce buffers are mapped 64 at a time
// How long a thread in wait_until() sleeps before it looks again without
// being woken, and the completion thread while waiting threads reap.
constexpr int kWaitSliceMs = 1;
// A sealed read is opened by up to this many crypto threads at once, each taking
// at least kMinOpenChunk of its pages (fewer pages: one thread).
constexpr unsigned kMaxCryptoThreads = 8;
constexpr uint32_t kMinOpenChunk = 16;
// A flush seals its deferred writes on the crypto threads too when they
// hold at least this many pages.
constexpr uint32_t kMinParallelSealPages = 32;

// A number per thread, recorded in each request so that whoever reaps it
// can wake the thread that submitted it.
inline std::atomic<uint64_t> g_next_thread_token{1};
inline uint64_t thread_token() {
  thread_local const uint64_t token = g_next_thread_token.fetch_add(1, std::memory_order_relaxed);
  return token;
}

// Sealed writes a thread made while plugged on a device (IoBatch), not yet
// sealed: they are sealed when that device is flushed, outside the locks
// the caller held while it wrote (the reclaimer's file mutexes).
struct DeferredSeal {
  const void* device;
  void* request;
};
inline thread_local std::vector<DeferredSeal> tl_deferred_seals;

// Set on a crypto thread: what it flushes (a callback's writes) it seals
// itself, never waiting on the pool it belongs to (all of them waiting on
// each other would be a deadlock).
inline thread_local bool tl_crypto_thread = false;

// The last of a free list, or null.
template <class T>
T* pop_free(std::vector<T*>& free_list) {
  if (free_list.empty()) return nullptr;
  T* t = free_list.back();
  free_list.pop_back();
  return t;
}
}  // namespace uring_detail

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

  Waker() : token(uring_detail::thread_token()) {
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
  bool partial = false;   // write_blocks(): one unit per run of blocks
  bool rejected = false;  // err comes from the arguments: touch nothing
  bool to_prove = false;  // write: proofs (checksums or seals) not taken yet
  uint64_t first = 0;
  uint64_t mask = 0;   // write_blocks: blocks to write
  unsigned shift = 0;  // write_blocks: log2 of the block size
  // write_blocks: units not yet completed, and the first error of a finished
  // one. Atomic: two threads may reap two units of one request at once.
  std::atomic<uint32_t> parts{0};
  std::atomic<int> part_err{0};
  // sealed read handed to the crypto threads: chunks not yet opened, and the
  // first error of one that was. Atomic: two crypto threads may share a request.
  std::atomic<uint32_t> open_parts{0};
  std::atomic<int> open_err{0};
  uint64_t submitter = 0;         // thread_token() of the calling thread
  PageOwner owner;                // whose pages: sealed pages are bound to it
  std::vector<iovec> pages;       // the caller's pages
  std::vector<PageProof> proofs;  // write: each page's, taken at submission
  // What the kernel moves instead of the caller's pages: sealed writes (the
  // ciphertext; frames stay plaintext), or O_DIRECT with unaligned memory.
  std::byte* bounce = nullptr;
  int err = 0;  // decided before any I/O (-EINVAL, injected)
  IoDone done;

  ~Request() { std::free(bounce); }
  // Records the caller's pages. `bad`: none, too many, or one not page_size
  // long; `aligned`: every page fits O_DIRECT's memory alignment.
  struct PagesCheck {
    bool bad;
    bool aligned;
  };
  template <class Page>
  PagesCheck add_pages(std::span<const Page> in, size_t page_size) {
    PagesCheck c{.bad = in.empty() || in.size() > uring_detail::kMaxRequestPages, .aligned = true};
    pages.reserve(in.size());
    for (const auto& p : in) {
      pages.push_back({const_cast<std::byte*>(p.data()), p.size()});
      c.bad |= p.size() != page_size;
      c.aligned &= reinterpret_cast<uintptr_t>(p.data()) % uring_detail::kDioAlign == 0;
    }
    return c;
  }
  uint32_t npages() const { return static_cast<uint32_t>(pages.size()); }
  // Back to the freshly constructed state, keeping small vectors' capacity.
  void reset() {
    write = false;
    partial = false;
    rejected = false;
    to_prove = false;
    first = 0;
    mask = 0;
    shift = 0;
    parts.store(0, std::memory_order_relaxed);
    part_err.store(0, std::memory_order_relaxed);
    open_parts.store(0, std::memory_order_relaxed);
    open_err.store(0, std::memory_order_relaxed);
    submitter = 0;
    owner = {};
    err = 0;
    done = nullptr;
    std::free(bounce);
    bounce = nullptr;
    if (pages.capacity() > uring_detail::kPoolKeepPages) {
      std::vector<iovec>().swap(pages);
      std::vector<PageProof>().swap(proofs);
    } else {
      pages.clear();
      proofs.clear();
    }
  }
};

// A flush's seal jobs report to this, on the flushing thread's stack; it
// leaves only when `left` is 0, which the last job sets under `mu` (so no
// job touches it after).
struct UringSwapDevice::SealBatch {
  std::mutex mu;
  std::condition_variable cv;
  uint32_t left = 0;
};

// One SQE's worth of work: adjacent requests of one direction, merged.
struct UringSwapDevice::Unit {
  bool write = false;
  bool nop = false;      // nothing to move: completes with `err`
  bool partial = false;  // one run of a write_blocks(); never merged
  uint64_t first = 0;    // first slot
  uint32_t npages = 0;
  int err = 0;  // the error a NOP completes with
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
    if (iov.capacity() > uring_detail::kPoolKeepPages)
      std::vector<iovec>().swap(iov);
    else
      iov.clear();
  }
};
}  // namespace tmpfsd::swapdev
