#include "swapdev/tiered_swap_device.h"

#include <cassert>
#include <cerrno>

namespace tmpfsd::swapdev {

// One request that is two or more: the pool's and its local copies'. The
// last part to complete reports `err` (the pool's, or a read's first).
struct TieredSwapDevice::Join {
  std::atomic<size_t> left{0};
  std::atomic<int> err{0};
  IoDone done;
  std::vector<std::span<std::byte>> pages;  // a read's, kept for its parts

  void finish() {
    if (left.fetch_sub(1, std::memory_order_acq_rel) == 1) done(err.load());
  }
  void fail(int e) {
    int none = 0;
    err.compare_exchange_strong(none, e);
  }
};

TieredSwapDevice::TieredSwapDevice(std::unique_ptr<SwapDevice> file,
                                   std::unique_ptr<RemoteStore> remote)
    : file_(std::move(file)), base_(file_->total_slots()), remote_(std::move(remote)) {
  assert(remote_ && remote_->page_size() == file_->page_size());
  if (remote_->options().local_copy)
    shadow_.reset(new std::atomic<uint64_t>[remote_->total_slots()]());
}

void TieredSwapDevice::give_copies(uint64_t k, size_t n) {
  uint64_t hint = 0;  // the previous page's copy + 1: adjacent copies merge
  for (size_t i = 0; i < n;) {
    if (const uint64_t c = copy_of(k + i)) {
      hint = c;
      ++i;
      continue;
    }
    size_t want = 1;
    while (i + want < n && copy_of(k + i + want) == 0) ++want;
    const SlotRun r = file_->allocate(static_cast<uint32_t>(want), SwapSlot(hint));
    if (r.count == 0) return;  // the file has no room: these pages go without
    for (uint32_t x = 0; x < r.count; ++x)
      shadow_[k + i + x].store(r.first.value + x + 1, std::memory_order_release);
    local_copies_.fetch_add(r.count, std::memory_order_relaxed);
    hint = r.first.value + r.count;
    i += r.count;
  }
}

void TieredSwapDevice::drop_copy(uint64_t k) {
  if (const uint64_t c = shadow_[k].exchange(0, std::memory_order_acq_rel)) {
    file_->free(SwapSlot(c - 1), 1);
    local_copies_.fetch_sub(1, std::memory_order_relaxed);
  }
}

std::vector<TieredSwapDevice::CopyRun> TieredSwapDevice::copy_runs(uint64_t k, size_t n) const {
  std::vector<CopyRun> runs;
  for (size_t i = 0; i < n; ++i) {
    const uint64_t c = copy_of(k + i);
    if (c == 0) continue;
    if (!runs.empty() && runs.back().i + runs.back().n == i &&
        runs.back().file.value + runs.back().n == c - 1)
      ++runs.back().n;
    else
      runs.push_back({i, 1, SwapSlot(c - 1)});
  }
  return runs;
}

TieredSwapDevice::~TieredSwapDevice() = default;

SlotRun TieredSwapDevice::allocate(uint32_t want, SwapSlot hint) {
  if (remote_->healthy()) {
    const SwapSlot h = is_remote(hint) ? to_remote(hint) : SwapSlot();
    SlotRun r = remote_->allocate(want, h);
    if (r.count > 0) {
      r.first = SwapSlot(r.first.value + base_);
      return r;
    }
  }
  fallbacks_.fetch_add(want, std::memory_order_relaxed);
  return file_->allocate(want, is_remote(hint) ? SwapSlot() : hint);
}

void TieredSwapDevice::free(SwapSlot first, uint32_t count) {
  if (!is_remote(first)) return file_->free(first, count);
  const SwapSlot r = to_remote(first);
  if (shadow_)
    for (uint64_t k = r.value; k < r.value + count && k < remote_->total_slots(); ++k) drop_copy(k);
  remote_->free(r, count);
}

void TieredSwapDevice::write(SwapSlot first, ConstPages pages, PageOwner owner, IoDone done) {
  if (!is_remote(first)) return file_->write(first, pages, owner, std::move(done));
  const SwapSlot r = to_remote(first);
  if (!shadow_ || pages.empty() || r.value + pages.size() > remote_->total_slots())
    return remote_->write(r, pages, owner, std::move(done));
  give_copies(r.value, pages.size());
  const std::vector<CopyRun> runs = copy_runs(r.value, pages.size());
  auto j = std::make_shared<Join>();
  j->left = 1 + runs.size();
  j->done = std::move(done);
  remote_->write(r, pages, owner, [j](int e) {
    j->fail(e);
    j->finish();
  });
  for (const CopyRun& c : runs) {
    file_->write(c.file, pages.subspan(c.i, c.n), owner.page(c.i),
                 [this, j, k = r.value + c.i, n = c.n](int e) {
                   if (e != 0)  // the copy is lost, not the page
                     for (size_t x = 0; x < n; ++x) drop_copy(k + x);
                   j->finish();
                 });
  }
}

void TieredSwapDevice::read(SwapSlot first, MutablePages pages, PageOwner owner, IoDone done) {
  if (!is_remote(first)) return file_->read(first, pages, owner, std::move(done));
  const SwapSlot r = to_remote(first);
  if (!shadow_ || pages.empty() || r.value + pages.size() > remote_->total_slots())
    return remote_->read(r, pages, owner, std::move(done));
  auto j = std::make_shared<Join>();
  j->done = std::move(done);
  j->pages.assign(pages.begin(), pages.end());
  remote_->read(r, pages, owner, [this, j, k = r.value, owner](int e) {
    // Every copy in the pool gone or bad: the local copies, if all are there.
    const size_t n = j->pages.size();
    bool all = e == -EIO;
    for (size_t i = 0; all && i < n; ++i) all = copy_of(k + i) != 0;
    if (!all) return j->done(e);
    const std::vector<CopyRun> runs = copy_runs(k, n);
    local_reads_.fetch_add(n, std::memory_order_relaxed);
    j->left = runs.size();
    for (const CopyRun& c : runs) {
      file_->read(c.file, std::span(j->pages).subspan(c.i, c.n), owner.page(c.i), [j](int err) {
        if (err != 0) j->fail(err);
        j->finish();
      });
    }
  });
}

void TieredSwapDevice::write_blocks(SwapSlot slot, std::span<const std::byte> page, PageOwner owner,
                                    uint64_t block_mask, unsigned block_shift, IoDone done) {
  if (!is_remote(slot))
    return file_->write_blocks(slot, page, owner, block_mask, block_shift, std::move(done));
  const SwapSlot r = to_remote(slot);
  if (shadow_ && block_mask != 0 && r.value < remote_->total_slots()) give_copies(r.value, 1);
  const uint64_t c =
      shadow_ && block_mask != 0 && r.value < remote_->total_slots() ? copy_of(r.value) : 0;
  if (c == 0)
    return remote_->write_blocks(r, page, owner, block_mask, block_shift, std::move(done));
  // The pool reseals the whole page; the copy is rewritten whole too.
  auto j = std::make_shared<Join>();
  j->left = 2;
  j->done = std::move(done);
  remote_->write_blocks(r, page, owner, block_mask, block_shift, [j](int e) {
    j->fail(e);
    j->finish();
  });
  file_->write(SwapSlot(c - 1), {&page, 1}, owner, [this, j, k = r.value](int e) {
    if (e != 0) drop_copy(k);
    j->finish();
  });
}

void TieredSwapDevice::flush() {
  file_->flush();
  remote_->flush();
}

SwapCounters TieredSwapDevice::counters() const {
  SwapCounters c = file_->counters();
  const SwapCounters r = remote_->counters();
  c.bytes_written += r.bytes_written;
  c.bytes_read += r.bytes_read;
  c.write_requests += r.write_requests;
  c.read_requests += r.read_requests;
  c.ios_submitted += r.ios_submitted;
  c.multi_page_ios += r.multi_page_ios;
  c.queue_depth += r.queue_depth;
  c.max_queue_depth = std::max(c.max_queue_depth, r.max_queue_depth);
  c.errors += r.errors;
  c.injected_errors += r.injected_errors;
  c.checksum_failures += r.checksum_failures;
  c.double_frees += r.double_frees;
  const RemoteCounters rc = remote_->remote_counters();
  c.remote_pages = rc.pages;
  c.remote_bytes_written = r.bytes_written;
  c.remote_bytes_read = r.bytes_read;
  c.remote_round_trips = rc.round_trips;
  c.remote_failures = rc.failures;
  c.remote_fallbacks = fallbacks_.load(std::memory_order_relaxed);
  c.remote_seal_failures = rc.seal_failures;
  c.remote_local_copies = local_copies_.load(std::memory_order_relaxed);
  c.remote_local_reads = local_reads_.load(std::memory_order_relaxed);
  return c;
}

}  // namespace tmpfsd::swapdev
