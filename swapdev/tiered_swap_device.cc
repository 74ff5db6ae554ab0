#include "swapdev/tiered_swap_device.h"

#include <cassert>

namespace tmpfsd::swapdev {

TieredSwapDevice::TieredSwapDevice(std::unique_ptr<SwapDevice> file,
                                   std::unique_ptr<RemoteStore> remote)
    : file_(std::move(file)), base_(file_->total_slots()), remote_(std::move(remote)) {
  assert(remote_ && remote_->page_size() == file_->page_size());
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
  if (is_remote(first))
    remote_->free(to_remote(first), count);
  else
    file_->free(first, count);
}

void TieredSwapDevice::write(SwapSlot first, ConstPages pages, PageOwner owner, IoDone done) {
  if (is_remote(first))
    remote_->write(to_remote(first), pages, owner, std::move(done));
  else
    file_->write(first, pages, owner, std::move(done));
}

void TieredSwapDevice::read(SwapSlot first, MutablePages pages, PageOwner owner, IoDone done) {
  if (is_remote(first))
    remote_->read(to_remote(first), pages, owner, std::move(done));
  else
    file_->read(first, pages, owner, std::move(done));
}

void TieredSwapDevice::write_blocks(SwapSlot slot, std::span<const std::byte> page, PageOwner owner,
                                    uint64_t block_mask, unsigned block_shift, IoDone done) {
  if (is_remote(slot))
    remote_->write_blocks(to_remote(slot), page, owner, block_mask, block_shift, std::move(done));
  else
    file_->write_blocks(slot, page, owner, block_mask, block_shift, std::move(done));
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
  return c;
}

}  // namespace tmpfsd::swapdev
