// Asynchronous requests of the page cache: a read waiting for pages under
// swap-in (ReadRequest) and a write whose bytes for such pages wait in the
// page wait table (FilePages::PendingWrite). Internal to core/; the design
// is in swap_in.cc. Threads: made by a FUSE worker under the file's mutex,
// finished by the last completion they wait for (or by their starter).
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>

#include "core/page_cache/file_pages.h"

namespace tmpfsd {

// The pages an asynchronous request (a read, a pending write) still waits
// for, +1 until its starter arms it, and the first error among them.
struct PageCountdown {
  std::atomic<uint32_t> pending{1};
  std::atomic<int> err{0};

  void add() { pending.fetch_add(1, std::memory_order_relaxed); }
  // One awaited page is in (e: 0 or a negative errno); true for the last.
  bool arrive(int e) {
    if (e != 0) {
      int none = 0;
      err.compare_exchange_strong(none, e, std::memory_order_relaxed);
    }
    return pending.fetch_sub(1, std::memory_order_acq_rel) == 1;
  }
};

// What a ReadRequest and a PendingWrite share: the pages they wait for
// (PageCountdown), their place in State::reads_in_flight from birth until
// they have replied (drain_reads, truncate and unlink wait for that), and
// one finish(): whoever brings the last awaited page (a swap-in completion,
// or the starter arming it) replies and deletes the request.
class AsyncRequest {
 public:
  AsyncRequest(const AsyncRequest&) = delete;
  AsyncRequest& operator=(const AsyncRequest&) = delete;

  // One awaited page is in (e: 0 or a negative errno); the last replies.
  void page_done(int e) {
    if (wait.arrive(e)) finish();
  }

  PageCountdown wait;

 protected:
  explicit AsyncRequest(PageCache::State& s) : st_(s) {
    st_.reads_in_flight.fetch_add(1, std::memory_order_relaxed);
  }
  virtual ~AsyncRequest() = default;
  // Replies, with 0 or the first error among the awaited pages. An
  // exception it throws is logged, never passed on to a completion thread.
  virtual void reply(int err) = 0;
  virtual const char* what() const = 0;  // for the log: "read", "write"

 private:
  void finish();  // swap_in.cc

  PageCache::State& st_;
};

// A read waiting for pages under swap-in (FilePagesImpl::read). Holds a pin
// on every pmap of its range until it is destroyed, after its reply.
struct ReadRequest final : AsyncRequest {
  ReadRequest(PageCache::State& s, FilePages::ReadDone d) : AsyncRequest(s), done(std::move(d)) {}
  ~ReadRequest() override {
    for (Pmap* p : pins.span()) p->unpin();
  }

  FilePages::ReadDone done;
  SmallVec<iovec, kInlineIovecs> iov;
  SmallVec<Pmap*, kInlineIovecs> pins;  // every pmap of the range

 private:
  void reply(int err) override {
    if (err == 0) {
      done(Status::ok(), iov.span());
    } else {
      done(Errno{EIO}, {});
    }
  }
  const char* what() const override { return "read"; }
};

// A write that left its bytes for one or two pages under swap-in to their
// completions (FilePagesImpl::write, "Deferral"). `wait` counts the
// patches not yet put in, +1 until the caller arms it (when_written).
class FilePages::PendingWrite final : public AsyncRequest {
 public:
  explicit PendingWrite(PageCache::State& s) : AsyncRequest(s) {}

  FilePages::WriteDone done;

 private:
  void reply(int err) override { done(err == 0 ? Status::ok() : Status(Errno{EIO})); }
  const char* what() const override { return "write"; }
};

}  // namespace tmpfsd
