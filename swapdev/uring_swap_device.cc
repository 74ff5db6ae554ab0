// UringSwapDevice (see the header for the picture): its pools of requests
// and units, the ring's set-up and tear-down, what read(), write() and
// write_blocks() check before the ring, slots and fixed buffers. Submission
// is in uring_submit.cc, completion in uring_complete.cc, the factory and
// the discard thread in uring_swap_open.cc and uring_discard.cc.
#include "swapdev/uring_internal.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>

#include <sys/mman.h>

namespace tmpfsd::swapdev {

using namespace uring_detail;

UringSwapDevice::Request* UringSwapDevice::new_request(bool write, SwapSlot first, IoDone done) {
  DeviceStats::add(write ? stats_.write_requests : stats_.read_requests);
  Request* r;
  {
    MutexLock lk(pool_mu_);
    r = pop_free(free_reqs_);
  }
  if (!r) r = new Request;
  r->submitter = thread_token();
  r->write = write;
  r->first = first.value;
  r->done = std::move(done);
  return r;
}

UringSwapDevice::Unit* UringSwapDevice::new_unit() {
  Unit* u;
  {
    MutexLock lk(pool_mu_);
    u = pop_free(free_units_);
  }
  return u ? u : new Unit;
}

// One-page bounce buffers are carved from chunks mapped for them and never
// given back before the device goes: there are at most as many as pages
// were in flight at once, and a page of their own each (aligned_alloc of a
// page wastes up to another page beside it in the heap).
std::byte* UringSwapDevice::new_bounce(size_t pages) {
  if (pages != 1) return static_cast<std::byte*>(std::aligned_alloc(kDioAlign, pages * page_size_));
  MutexLock lk(pool_mu_);
  if (free_bounces_.empty()) {
    const size_t len = kBounceChunkPages * page_size_;
    void* m = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    bounce_chunks_.push_back(static_cast<std::byte*>(m));
    for (size_t i = 0; i < kBounceChunkPages; ++i)
      free_bounces_.push_back(static_cast<std::byte*>(m) + i * page_size_);
  }
  return pop_free(free_bounces_);
}

void UringSwapDevice::recycle(Unit* u) {
  // One-page bounce buffers back to their free list.
  for (Request* r : u->reqs) {
    if (r->bounce && r->npages() == 1) {
      MutexLock lk(pool_mu_);
      free_bounces_.push_back(r->bounce);
      r->bounce = nullptr;
    }
  }
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

void UringSwapDevice::recycle_request(Request* r) {
  std::byte* one = r->npages() == 1 ? std::exchange(r->bounce, nullptr) : nullptr;
  r->reset();
  {
    MutexLock lk(pool_mu_);
    if (one) free_bounces_.push_back(one);
    if (free_reqs_.size() < kPoolMax) {
      free_reqs_.push_back(r);
      return;
    }
  }
  delete r;
}

UringSwapDevice::UringSwapDevice(const UringOptions& opt, int fd, bool direct, bool can_punch,
                                 unsigned min_block_shift, std::unique_ptr<Sealer> sealer)
    : SlotDevice(opt.page_size, min_block_shift,
                 {.total_slots = opt.size_bytes / opt.page_size,
                  .cluster_slots = opt.cluster_slots,
                  .shards = 0,
                  .discard = can_punch},
                 std::move(sealer)),
      max_merge_(std::clamp<uint32_t>(opt.max_merge_pages, 1, kMaxRequestPages)),
      discard_batch_(std::max<uint32_t>(1, opt.discard_batch)),
      discard_interval_(opt.discard_interval),
      fd_(fd),
      direct_(direct),
      can_punch_(can_punch) {}

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
  if (sealed()) {
    ncrypto_ = std::clamp(std::thread::hardware_concurrency(), 1u, kMaxCryptoThreads);
    for (unsigned i = 0; i < ncrypto_; ++i)
      crypto_threads_.emplace_back([this](std::stop_token st) { crypto_loop(st); });
  }
  discarder_ = std::jthread([this](std::stop_token st) { discard_loop(st); });
  return 0;
}

UringSwapDevice::~UringSwapDevice() {
  if (completer_.joinable()) {
    flush();
    {
      UniqueLock lk(sq_mu_);
      idle_cv_.wait(lk.native(), [&]() REQUIRES(sq_mu_) {
        return inflight_ == 0 && backlog_.empty() && pending_.empty();
      });
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
    completer_.join();  // returns when no read is left with the crypto threads
  }
  for (auto& t : crypto_threads_) t.request_stop();
  crypto_cv_.notify_all();
  crypto_threads_.clear();
  if (ring_ready_) io_uring_queue_exit(&ring_);
  if (fd_ >= 0) ::close(fd_);
  for (Request* r : free_reqs_) delete r;
  for (Unit* u : free_units_) delete u;
  for (std::byte* c : bounce_chunks_) ::munmap(c, kBounceChunkPages * page_size_);
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

// Sealed, every write goes through a bounce buffer (the frames stay
// plaintext); unsealed, only unaligned memory under O_DIRECT does.
void UringSwapDevice::write(SwapSlot first, ConstPages pages, PageOwner owner, IoDone done) {
  Request* r = new_request(true, first, std::move(done));
  r->owner = owner;
  auto [bad, aligned] = r->add_pages(pages, page_size_);
  if (admit(r, first, pages.size(), bad)) {
    if (sealed() || (direct_ && !aligned)) r->bounce = new_bounce(pages.size());
    r->to_prove = true;
  }
  submit_write(r);
}

void UringSwapDevice::submit_write(Request* r) {
  if (r->to_prove && sealed() && IoBatch::plugged(this)) {
    tl_deferred_seals.push_back({this, r});
    return;
  }
  if (r->to_prove) prove_request(r);
  enqueue(r);
}

void UringSwapDevice::prove_request(Request* r) {
  r->to_prove = false;
  if (sealed() && !r->bounce) {
    r->err = -ENOMEM;  // no bounce buffer to seal into
    r->rejected = true;
    return;
  }
  const uint32_t n = r->npages();
  r->proofs.resize(n);
  for (uint32_t i = 0; i < n; ++i) {
    const std::span<const std::byte> page{static_cast<const std::byte*>(r->pages[i].iov_base),
                                          page_size_};
    std::span<std::byte> out;
    if (r->bounce) out = {r->bounce + i * page_size_, page_size_};
    if (!prove(r->first + i, r->owner.page(i), page, out, &r->proofs[i])) {
      r->err = -EIO;  // OpenSSL failed: nothing goes to the medium
      r->rejected = true;
      return;
    }
    if (r->bounce && !sealed()) std::memcpy(out.data(), page.data(), page_size_);
  }
}

// Reads land in the caller's pages (or a bounce buffer under O_DIRECT with
// unaligned memory); a sealed page is opened in place at completion.
void UringSwapDevice::read(SwapSlot first, MutablePages pages, PageOwner owner, IoDone done) {
  Request* r = new_request(false, first, std::move(done));
  r->owner = owner;
  auto [bad, aligned] = r->add_pages(pages, page_size_);
  if (admit(r, first, pages.size(), bad) && direct_ && !aligned)
    r->bounce = new_bounce(pages.size());
  enqueue(r);
}

void UringSwapDevice::write_blocks(SwapSlot slot, std::span<const std::byte> page, PageOwner owner,
                                   uint64_t block_mask, unsigned block_shift, IoDone done) {
  Request* r = new_request(true, slot, std::move(done));
  r->partial = true;
  r->owner = owner;
  r->mask = block_mask;
  r->shift = block_shift;
  r->pages.push_back({const_cast<std::byte*>(page.data()), page.size()});
  if (page.size() != page_size_ || !valid_block_mask(page_size_, block_mask, block_shift) ||
      !alloc_.all_allocated(slot, 1)) {
    r->err = -EINVAL;
    r->rejected = true;
  } else if (!has_data(slot.value)) {
    r->err = -ENODATA;
    r->rejected = true;
  } else if (block_mask == 0) {
    // Nothing to write: a NOP completes it with 0.
  } else if (int e = inject_.take()) {
    r->err = e;
    DeviceStats::add(stats_.injected_errors);
  } else {
    if (sealed()) {
      // A fresh seal changes every byte: the whole page is one block.
      r->shift = static_cast<unsigned>(std::countr_zero(page_size_));
      r->mask = 1;
    }
    if (sealed() || (direct_ && reinterpret_cast<uintptr_t>(page.data()) % kDioAlign != 0))
      r->bounce = new_bounce(1);
    r->to_prove = true;
  }
  submit_write(r);
}

SlotRun UringSwapDevice::allocate(uint32_t want, SwapSlot hint) {
  SlotRun r = alloc_.allocate(want, hint);
  if (r.count == 0 && r.err == -ENOSPC && alloc_.discarding() > 0) {
    // Space is on its way back from a punch: wait for it rather than fail.
    UniqueLock lk(disc_mu_);
    space_cv_.wait_for(lk.native(), std::chrono::seconds(2),
                       [&] { return alloc_.discarding() == 0; });
    lk.unlock();
    r = alloc_.allocate(want, hint);
  }
  return r;
}

void UringSwapDevice::free(SwapSlot first, uint32_t count) {
  if (hold_frees(first, count, [this](SwapSlot s) { free(s, 1); })) return;
  // Forget the checksums before the slots can be handed out again.
  if (alloc_.all_allocated(first, count)) {
    for (uint64_t s = first.value; s < first.value + count; ++s) clear_proof(s);
  } else if (first.valid()) {
    uint64_t end = std::min<uint64_t>(alloc_.total_slots(), first.value + count);
    for (uint64_t s = first.value; s < end; ++s)
      if (alloc_.allocated(SwapSlot(s))) clear_proof(s);
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

}  // namespace tmpfsd::swapdev
