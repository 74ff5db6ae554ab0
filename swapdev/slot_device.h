// What both swap devices stand on: a SlotAllocator that hands out the
// slots, the proof every read is verified against (a ChecksumTable, or
// with a Sealer a SealTable: each page sealed with AES-256-GCM, see
// seal.h), the I/O counters, and the error injection of the tests.
// MemorySwapDevice and UringSwapDevice add only where the bytes go and how
// I/O completes.
//
// A write takes its proof at submission (prove(): the checksum of the
// page, or its seal into the bytes that go to the medium), records it when
// the write completes (record()); a read is verified at completion
// (verify(): the checksum compared, or the page opened in place).
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "swapdev/checksum_table.h"
#include "swapdev/device_stats.h"
#include "swapdev/seal.h"
#include "swapdev/seal_table.h"
#include "swapdev/slot_allocator.h"
#include "swapdev/swap_device.h"

namespace tmpfsd::swapdev {

// A write's proof of one page, taken at submission: its checksum, or its
// seal's version and tag.
struct PageProof {
  uint64_t sum_or_version = 0;
  SealTag tag{};
};

class SlotDevice : public SwapDevice {
 public:
  size_t page_size() const final { return page_size_; }
  uint64_t total_slots() const final { return alloc_.total_slots(); }
  unsigned min_block_shift() const final { return min_block_shift_; }
  SwapCounters counters() const final { return stats_.counters(alloc_); }
  void inject_errors(uint32_t n, int err) final { inject_.arm(n, err); }
  bool sealed() const final { return sealer_ != nullptr; }

  // --persist (docs/design.md, "Surviving a restart"): what a later device
  // on the same medium needs to read a slot back. The proof of `slot`'s
  // last completed write; false when it holds none (or is poisoned).
  bool slot_proof(SwapSlot slot, PageProof* out) const {
    if (!slot.valid() || slot.value >= total_slots()) return false;
    const uint64_t s = slot.value;
    if (!has_data(s) || poisoned(s)) return false;
    if (sealer_) {
      out->sum_or_version = seals_.version(s);
      out->tag = seals_.tag(s);
    } else {
      out->sum_or_version = sums_.raw(s);
      out->tag = {};
    }
    return true;
  }
  // Takes `slot` as holding a completed write whose proof is `p` (from
  // slot_proof() of an earlier device on this medium, with this device's
  // key). False, touching nothing, when the slot is out of range or taken,
  // or the proof names no write.
  // The slot is pinned (pinned()): the image that names it must stay
  // readable after a crash, so it is never written again, and a free of it
  // is held (the slot stays taken) for the device's life.
  bool adopt_slot(SwapSlot slot, const PageProof& p) {
    if (p.sum_or_version == 0 || (sealer_ && p.sum_or_version == SealTable::kPoisoned) ||
        (!sealer_ && p.sum_or_version == ChecksumTable::kPoisonedRaw))
      return false;
    if (!alloc_.claim(slot)) return false;
    pinned_[slot.value / 64].fetch_or(uint64_t{1} << (slot.value % 64), std::memory_order_relaxed);
    any_pinned_.store(true, std::memory_order_relaxed);
    if (sealer_)
      seals_.set(slot.value, p.sum_or_version, p.tag);
    else
      sums_.set_raw(slot.value, p.sum_or_version);
    return true;
  }
  // The sealer (null: checksums), for its key and counter.
  const Sealer* sealer() const { return sealer_.get(); }
  // A sealed device takes an earlier Sealer's key and counter, before any
  // slot is used (the image that names its slots is read after the device
  // is made). False with `why` otherwise.
  bool adopt_key(std::span<const std::byte> key, uint64_t counter, std::string* why) {
    if (!sealer_) return (*why = "the swap file is not sealed here (--seal off?)", false);
    if (alloc_.used_slots() != 0) return (*why = "the swap device is in use already", false);
    std::unique_ptr<Sealer> s = Sealer::create_with(key, counter, why);
    if (!s) return false;
    sealer_ = std::move(s);
    return true;
  }
  bool pinned(SwapSlot slot) const override {
    return slot.valid() && slot.value < total_slots() &&
           (pinned_[slot.value / 64].load(std::memory_order_relaxed) >> (slot.value % 64) & 1);
  }
  // From now on free() frees nothing: the slots an image just saved names
  // stay as they are (not reused, not discarded) while the daemon tears its
  // files down.
  void keep_slots() { keep_all_.store(true, std::memory_order_relaxed); }

 protected:
  // One slot of page_size bytes per page; alloc.total_slots of them.
  // `sealer` null: checksums only.
  SlotDevice(size_t page_size, unsigned min_block_shift, const SlotAllocator::Options& alloc,
             std::unique_ptr<Sealer> sealer)
      : page_size_(page_size),
        min_block_shift_(min_block_shift),
        alloc_(alloc),
        sealer_(std::move(sealer)),
        sums_(sealer_ ? 0 : alloc.total_slots),
        seals_(sealer_ ? alloc.total_slots : 0),
        pinned_(new std::atomic<uint64_t>[(alloc.total_slots + 63) / 64 + 1]()) {}

  // free() calls it first: true when the run [first, first+count) was
  // dealt with here (every slot kept, or the pinned ones held and the
  // others freed one by one through free_one).
  template <class F>
  bool hold_frees(SwapSlot first, uint32_t count, F&& free_one) {
    if (keep_all_.load(std::memory_order_relaxed)) return true;
    if (!any_pinned_.load(std::memory_order_relaxed) || !first.valid() ||
        first.value >= total_slots())
      return false;
    const uint64_t end = std::min<uint64_t>(total_slots(), first.value + count);
    bool any = false;
    for (uint64_t s = first.value; s < end && !any; ++s) any = pinned(SwapSlot(s));
    if (!any) return false;
    for (uint64_t s = first.value; s < end; ++s)
      if (!pinned(SwapSlot(s))) free_one(SwapSlot(s));
    return true;
  }

  // The proof of `page`, to go to `slot` as page `index` of `file`. Sealed:
  // the ciphertext goes to `out` (page_size bytes); false if sealing failed.
  bool prove(uint64_t slot, PageOwner owner, std::span<const std::byte> page,
             std::span<std::byte> out, PageProof* proof) {
    if (!sealer_) {
      proof->sum_or_version = ChecksumTable::hash(page);
      return true;
    }
    SealBinding b{.where = slot, .file = owner.file, .index = owner.index};
    if (!sealer_->seal(b, page, out, &proof->tag)) return false;
    proof->sum_or_version = b.version;
    return true;
  }
  void record(uint64_t slot, const PageProof& p) {
    if (sealer_)
      seals_.set(slot, p.sum_or_version, p.tag);
    else
      sums_.set(slot, p.sum_or_version);
  }
  void clear_proof(uint64_t slot) { sealer_ ? seals_.clear(slot) : sums_.clear(slot); }
  void poison(uint64_t slot) { sealer_ ? seals_.poison(slot) : sums_.poison(slot); }
  // True for poisoned slots too: they hold bytes, just none to trust.
  bool has_data(uint64_t slot) const {
    return sealer_ ? seals_.version(slot) != 0 : sums_.has_data(slot);
  }
  bool poisoned(uint64_t slot) const {
    return sealer_ ? seals_.version(slot) == SealTable::kPoisoned : sums_.poisoned(slot);
  }
  // 0 when `page` (as read from the medium) is what was written to `slot`
  // as page `index` of `file`; sealed, it is opened in place (plaintext
  // after, undefined on failure). -ENODATA: nothing written; -EIO: it does
  // not match, or the slot is poisoned.
  int verify(uint64_t slot, PageOwner owner, std::span<std::byte> page) const {
    if (!sealer_) return sums_.verify(slot, page);
    const uint64_t v = seals_.version(slot);
    if (v == 0) return -ENODATA;
    if (v == SealTable::kPoisoned) return -EIO;
    SealBinding b{.where = slot, .file = owner.file, .index = owner.index, .version = v};
    return sealer_->open(b, page, seals_.tag(slot)) ? 0 : -EIO;
  }

  const size_t page_size_;
  const unsigned min_block_shift_;
  SlotAllocator alloc_;
  std::unique_ptr<Sealer> sealer_;  // null: checksums; replaced only by adopt_key
  ChecksumTable sums_;              // unsealed: of each slot's last write
  SealTable seals_;                 // sealed: of each slot's last write
  DeviceStats stats_;
  ErrorInjector inject_;
  std::unique_ptr<std::atomic<uint64_t>[]> pinned_;  // adopt_slot's slots, a bit each
  std::atomic<bool> keep_all_{false};                // keep_slots()
  std::atomic<bool> any_pinned_{false};              // a bit of pinned_ is set
};

}  // namespace tmpfsd::swapdev
