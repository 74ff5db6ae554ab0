// UringSwapDevice's completion side: CQEs reaped (by the completion thread or
// a thread in wait_until()), short transfers and -EAGAIN sent again, reads
// verified against their checksums, callbacks run.
#include "swapdev/uring_internal.h"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <thread>

namespace tmpfsd::swapdev {

using namespace uring_detail;

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
  // Sealed reads the crypto threads take leave the unit: their last crypto thread
  // recycles them.
  size_t kept = 0;
  for (Request* r : u->reqs) {
    if (to_crypto(r, err)) continue;
    finish_request(r, err);
    u->reqs[kept++] = r;
  }
  u->reqs.resize(kept);
  recycle(u);
}

bool UringSwapDevice::to_crypto(Request* r, int err) {
  if (ncrypto_ == 0 || r->write || err != 0 || r->err != 0 ||
      thread_token() != completer_token_.load(std::memory_order_relaxed))
    return false;
  const uint32_t n = r->npages();
  const uint32_t chunks = std::clamp<uint32_t>(n / kMinOpenChunk, 1, ncrypto_);
  r->open_parts.store(chunks, std::memory_order_relaxed);
  opening_.fetch_add(1, std::memory_order_relaxed);
  for (uint32_t c = 0; c < chunks; ++c)
    open_batch_.push_back({r, n * c / chunks, n * (c + 1) / chunks});
  return true;
}

void UringSwapDevice::dispatch_opens() {
  if (open_batch_.empty()) return;
  const size_t jobs = open_batch_.size();
  {
    MutexLock lk(crypto_mu_);
    crypto_q_.insert(crypto_q_.end(), open_batch_.begin(), open_batch_.end());
  }
  open_batch_.clear();
  if (jobs == 1)
    crypto_cv_.notify_one();
  else
    crypto_cv_.notify_all();
}

void UringSwapDevice::crypto_loop(std::stop_token st) {
  pthread_setname_np(pthread_self(), "uring-crypto");
  tl_crypto_thread = true;
  for (;;) {
    CryptoJob j;
    {
      UniqueLock lk(crypto_mu_);
      crypto_cv_.wait(lk.native(), st, [&]() REQUIRES(crypto_mu_) { return !crypto_q_.empty(); });
      if (crypto_q_.empty()) return;  // stopped, and nothing left to open
      j = crypto_q_.front();
      crypto_q_.pop_front();
    }
    if (j.seal) {
      for (uint32_t i = j.begin; i < j.end; ++i) prove_request(j.seal[i]);
      std::lock_guard lk(j.batch->mu);
      if (--j.batch->left == 0) j.batch->cv.notify_one();
      continue;
    }
    Request* r = j.r;
    if (int e = verify_pages(r, j.begin, j.end)) {
      int none = 0;
      r->open_err.compare_exchange_strong(none, e, std::memory_order_relaxed);
    }
    if (r->open_parts.fetch_sub(1, std::memory_order_acq_rel) > 1) continue;
    const uint64_t submitter = r->submitter;
    {
      IoBatch plug(*this);  // what the callback submits leaves when it returns
      finish_request(r, r->open_err.load(std::memory_order_relaxed), /*verified=*/true);
    }
    recycle_request(r);
    opening_.fetch_sub(1, std::memory_order_release);
    if (waiting_count_.load(std::memory_order_relaxed) > 0) {
      MutexLock lk(wait_mu_);
      for (Waker* w : waiting_)
        if (w->token == submitter) w->wake_if_sleeping();
    }
  }
}

int UringSwapDevice::verify_pages(Request* r, uint32_t begin, uint32_t end) {
  for (uint32_t i = begin; i < end; ++i) {
    std::byte* at =
        r->bounce ? r->bounce + i * page_size_ : static_cast<std::byte*>(r->pages[i].iov_base);
    const uint64_t slot = r->first + i;
    const int v = verify(slot, r->owner.page(i), {at, page_size_});
    if (v == -EIO && poisoned(slot)) {
      spdlog::error("swapdev: slot {}: its last partial write failed", slot);
    } else if (v == -EIO) {
      DeviceStats::add(stats_.checksum_failures);
      spdlog::error("swapdev: slot {}: {}", slot,
                    sealed() ? "the seal does not open (altered, moved or an old image)"
                             : "checksum mismatch");
    }
    if (v != 0) return v;
  }
  return 0;
}

void UringSwapDevice::finish_request(Request* r, int err, bool verified) {
  const uint32_t n = r->npages();
  if (err == 0) err = r->err;
  if (r->partial) {
    if (err == 0 && r->mask != 0) {
      record(r->first, r->proofs[0]);
      DeviceStats::add(stats_.bytes_written, uint64_t(std::popcount(r->mask)) << r->shift);
    } else if (err != 0 && !r->rejected) {
      poison(r->first);  // some runs may have landed: trust none of it
    }
  } else if (r->write) {
    if (err == 0) {
      for (uint32_t i = 0; i < n; ++i) record(r->first + i, r->proofs[i]);
      DeviceStats::add(stats_.bytes_written, uint64_t{n} * page_size_);
    } else if (!r->rejected) {
      // What is on the medium now is unknown: no read may trust it.
      for (uint32_t i = 0; i < n; ++i) clear_proof(r->first + i);
    }
  } else {
    if (err == 0 && !verified) err = verify_pages(r, 0, n);
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
  pthread_setname_np(pthread_self(),
                     "uring-complete");  // how stack dumps and /proc/PID/task name it
  completer_token_.store(thread_token(), std::memory_order_relaxed);
  Reaped batch;
  for (;;) {
    if (st.stop_requested() && opening_.load(std::memory_order_acquire) > 0) {
      // Stopping, and reads are still with the crypto threads: their callbacks
      // may submit more, so look again shortly, without blocking.
      std::this_thread::sleep_for(std::chrono::milliseconds(kWaitSliceMs));
    } else if (ct_waker_ && waiting_count_.load() > 0) {
      ct_waker_->sleeping.store(true);
      if (waiting_count_.load() > 0 && cq_ready() == 0) ct_waker_->sleep(kWaitSliceMs);
      ct_waker_->sleeping.store(false, std::memory_order_relaxed);
    } else if (cq_ready() == 0) {
      int r = io_uring_enter(static_cast<unsigned>(ring_.ring_fd), 0, 1, IORING_ENTER_GETEVENTS,
                             nullptr);
      if (r < 0 && r != -EINTR)
        spdlog::error("swapdev: io_uring_enter(GETEVENTS): {}", std::strerror(-r));
    }
    reap(batch);
    dispatch_opens();
    MutexLock lk(sq_mu_);
    if (inflight_ == 0 && backlog_.empty() && st.stop_requested() && stopping_ &&
        opening_.load(std::memory_order_acquire) == 0)
      return;
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

}  // namespace tmpfsd::swapdev
