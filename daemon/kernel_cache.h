// KernelCache: keeps the kernel's page cache of the mount from holding
// bytes older than a direct write the kernel has completed.
//
// The problem. Before an O_DIRECT write the FUSE client drops its cached
// pages of the range (generic_file_direct_write: kiocb_invalidate_pages),
// and after a synchronous one it drops them again
// (kiocb_invalidate_post_direct_write). An asynchronous one (aio, io_uring:
// fuse_direct_IO returns -EIOCBQUEUED under FUSE_ASYNC_DIO) completes in
// fuse_aio_complete, which drops nothing. A buffered read of the range
// between the first drop and the daemon's write caches the old bytes, and
// they stay: a read after the write completed returns them.
//
//   writer  drop ----- FUSE_WRITE ----- applied -- reply --> io_getevents
//   reader        FUSE_READ (readahead): old bytes cached, never dropped
//
// The remedy: the reply to a direct write waits until the kernel has
// dropped its pages of the range (FUSE_NOTIFY_INVAL_INODE), sent once the
// bytes are in place. A page cached before that is dropped by it (the
// kernel first waits for a page being filled by a read in flight); a page
// read after it holds the new bytes. Not asking for FUSE_ASYNC_DIO would
// also do (the kernel's synchronous path drops after the write), at the
// price of the queue depth of aio and io_uring.
//
// Who pays: a direct write to a file the kernel may hold pages of, that
// is, one whose data reached the kernel's page cache through the daemon
// (a page-cache read, a buffered write: note_cached() before the bytes are
// read or written). That is remembered by inode number in a bitmap that is
// never cleared: a colliding or reused number costs a needless
// notification, never a stale page. A file used only with O_DIRECT (the
// usual O_DIRECT user) is answered at once, as before.
//
// Threads. The notification waits for pages locked by reads in flight,
// which the FUSE worker threads answer; so it is sent from a thread of its
// own ("cache-inval"), never from a worker (workers blocked in it could
// leave none to answer those reads). It takes every write queued at once,
// sends one notification per inode for them, and answers them in the order
// they completed.
// The wait ends once the workers have answered those reads, unless a
// read's request is itself queued in the kernel behind max_background
// background requests that are all direct writes waiting here. That is a
// known hang, not yet solved: op_init asks for max_background 64 (more
// lets hundreds of direct writes hold frames at once, ENOSPC under a small
// --memory), and 512 asynchronous direct writes in flight (fio, libaio,
// iodepth 256, two jobs, on a 1 MiB file read buffered meanwhile) hung the
// mount in seconds.
// Pages under writeback (a shared writable mapping, --writeback-cache) are
// waited for the same way, and their requests are background ones too.
//
// note_cached() and may_cache() are lock-free and called from any thread;
// after_dropping() from any thread; the destructor answers every queued
// write before it returns.
#pragma once

#include <fuse_lowlevel.h>

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tmpfsd {

class KernelCache {
 public:
  explicit KernelCache(fuse_session* se);
  ~KernelCache();
  KernelCache(const KernelCache&) = delete;
  KernelCache& operator=(const KernelCache&) = delete;

  // The kernel may from now on hold pages of `ino`: call before the bytes
  // it caches are read or written.
  void note_cached(uint64_t ino) noexcept;
  bool may_cache(uint64_t ino) const noexcept;

  // Drops the kernel's pages of `ino` from byte `off` on (`len` bytes; 0:
  // to the end of the file), then calls `then` (the write's reply), on the
  // cache-inval thread. If the queue cannot grow (no memory), on this one.
  void after_dropping(uint64_t ino, uint64_t off, uint64_t len,
                      std::function<void()> then) noexcept;

 private:
  struct Span {
    uint64_t ino;
    uint64_t off;
    uint64_t len;  // 0: to the end of the file
  };
  struct Job {
    Span span;
    std::function<void()> then;
  };
  static constexpr size_t kWords = 1024;  // 65,536 bits: 8 KiB

  void drop(const Span& span) noexcept;
  void run(std::stop_token stop);
  // Widens the span of s.ino in `spans` to cover s, or appends s.
  static void merge(std::vector<Span>& spans, const Span& s);
  static size_t bit_of(uint64_t ino) noexcept;

  fuse_session* const se_;
  std::array<std::atomic<uint64_t>, kWords> cached_{};  // bit_of(ino): may_cache
  std::mutex mu_;
  std::condition_variable_any wake_;
  std::deque<Job> jobs_;  // guarded by mu_: completed writes, oldest first
  std::jthread thread_;   // last: started once the rest exists
};

}  // namespace tmpfsd
