// UringSwapDevice's submission side: pending requests sorted and merged into
// units, one SQE per unit, published under sq_mu_ and entered after it.
#include "swapdev/uring_internal.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

namespace tmpfsd::swapdev {

using namespace uring_detail;

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
  prove_deferred();
  unsigned n;
  {
    MutexLock lk(sq_mu_);
    n = flush_locked();
  }
  enter(n);
}

// Seals what this thread wrote to this device under its plug, with no lock
// held, then queues it. The reclaimer writes pages out under each file's
// mutex and flushes after it has dropped them all, so the cipher (about
// 1 us a page) runs outside them, as the checksum did not need to.
void UringSwapDevice::prove_deferred() {
  auto& all = tl_deferred_seals;
  if (all.empty()) return;
  std::vector<Request*> mine;
  auto keep = all.begin();
  for (auto& d : all) {
    if (d.device == this)
      mine.push_back(static_cast<Request*>(d.request));
    else
      *keep++ = d;
  }
  all.erase(keep, all.end());
  seal_in_parallel(mine);
  MutexLock lk(sq_mu_);
  pending_.insert(pending_.end(), mine.begin(), mine.end());
}

// Seals reqs on this thread and, when they are many pages, on the crypto
// threads too: they take all but the first share, this thread seals that
// one and waits for theirs.
void UringSwapDevice::seal_in_parallel(std::vector<Request*>& reqs) {
  size_t pages = 0;
  for (Request* r : reqs) pages += r->npages();
  const size_t shares =
      std::min<size_t>({ncrypto_ + size_t{1}, pages / kMinParallelSealPages, reqs.size()});
  if (shares <= 1 || tl_crypto_thread) {
    for (Request* r : reqs) prove_request(r);
    return;
  }
  // Shares of about pages / shares pages each, cut between requests.
  std::vector<uint32_t> cut{0};
  size_t acc = 0;
  for (uint32_t i = 0; i < reqs.size() && cut.size() < shares; ++i) {
    acc += reqs[i]->npages();
    if (acc * shares >= pages * cut.size()) cut.push_back(i + 1);
  }
  if (cut.back() != reqs.size()) cut.push_back(static_cast<uint32_t>(reqs.size()));
  SealBatch batch;
  batch.left = static_cast<uint32_t>(cut.size() - 2);
  if (batch.left > 0) {
    {
      MutexLock lk(crypto_mu_);
      for (size_t k = 1; k + 1 < cut.size(); ++k)
        crypto_q_.push_back(
            {.begin = cut[k], .end = cut[k + 1], .seal = reqs.data(), .batch = &batch});
    }
    crypto_cv_.notify_all();
  }
  for (uint32_t i = cut[0]; i < cut[1]; ++i) prove_request(reqs[i]);
  std::unique_lock lk(batch.mu);
  batch.cv.wait(lk, [&] { return batch.left == 0; });
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
        io_uring_prep_write_fixed(sqe, 0, reinterpret_cast<void*>(base), static_cast<unsigned>(len),
                                  u->offset, fixed);
      else
        io_uring_prep_read_fixed(sqe, 0, reinterpret_cast<void*>(base), static_cast<unsigned>(len),
                                 u->offset, fixed);
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

}  // namespace tmpfsd::swapdev
