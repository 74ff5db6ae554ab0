#include "swapdev/compressed_swap_device.h"

#include <spdlog/spdlog.h>

#include <cassert>
#include <cstring>
#include <mutex>

namespace tmpfsd::swapdev {

// One request's callback, run once every part of it (pages kept in the pool,
// runs sent to the backing device) has finished, with the first error.
struct CompressedSwapDevice::Aggregate {
  explicit Aggregate(IoDone d) : done(std::move(d)) {}
  IoDone done;
  std::atomic<unsigned> parts{1};  // the submitting call's own part
  std::atomic<int> err{0};
  void finish(int e) {
    int none = 0;
    if (e != 0) err.compare_exchange_strong(none, e);
    if (parts.fetch_sub(1) == 1) done(err.load());
  }
};

CompressedSwapDevice::CompressedSwapDevice(std::unique_ptr<SwapDevice> backing, const Options& opt)
    : backing_(std::move(backing)),
      codec_(opt.codec),
      max_object_(opt.max_object ? opt.max_object : backing_->page_size() * 3 / 4),
      max_pages_(opt.max_pages),
      pool_only_(opt.pool_only) {}

CompressedSwapDevice::~CompressedSwapDevice() {
  // Write-backs in flight call back into this object.
  backing_->wait_until([this] { return writing_.load() == 0; });
  MutexLock lk(mu_);
  for (auto& [slot, e] : slots_) delete[] e.bounce;
  slots_.clear();
  pool_.reset();  // gives its pages back to the source, which outlives this
}

namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

SlotRun CompressedSwapDevice::allocate(uint32_t want, SwapSlot hint) {
  if (pool_only_) {
    const int64_t until = refuse_until_.load(std::memory_order_relaxed);
    if (until != 0 && now_ns() < until) return SlotRun{SwapSlot(), 0, -ENOSPC};
  }
  return backing_->allocate(want, hint);
}

void CompressedSwapDevice::missed(bool any_kept, size_t n) {
  if (!pool_only_) return;
  if (any_kept) misses_.store(0, std::memory_order_relaxed);
  if (n == 0) return;
  if (misses_.fetch_add(n, std::memory_order_relaxed) + n >= kMissesBeforeFull) {
    misses_.store(0, std::memory_order_relaxed);
    refuse_until_.store(now_ns() + std::chrono::nanoseconds(kRefuseFor).count(),
                        std::memory_order_relaxed);
  }
}

void CompressedSwapDevice::use_pages(PageSource* pages) {
  MutexLock lk(mu_);
  assert(!pool_ && pages && pages->page_size() == page_size());
  pages->keep_spare();
  pool_ = std::make_unique<ZPool>(*pages, max_pages_, max_object_);
}

bool CompressedSwapDevice::pooled(SwapSlot slot) const {
  MutexLock lk(mu_);
  auto it = slots_.find(slot.value);
  return it != slots_.end() && (it->second.h.valid() || it->second.bounce);
}

void CompressedSwapDevice::release_locked(Entry& e) {
  if (!e.h.valid()) return;
  pool_->free(e.h);
  e.h = {};
  if (e.same) --same_filled_;
  e.same = false;
}

bool CompressedSwapDevice::worth_trying(uint64_t file) {
  if (file == 0) return true;
  Streak& st = streaks_[file % kStreaks];
  if (st.file.load(std::memory_order_relaxed) != file) return true;
  const uint32_t run = st.run.load(std::memory_order_relaxed);
  if (run < kRejectsBeforeSkip || (run - kRejectsBeforeSkip) % kProbeEvery == kProbeEvery - 1)
    return true;
  st.run.store(run + 1, std::memory_order_relaxed);
  return false;
}

void CompressedSwapDevice::tried(uint64_t file, bool compressed) {
  if (file == 0) return;
  Streak& st = streaks_[file % kStreaks];
  if (st.file.load(std::memory_order_relaxed) != file) {
    if (compressed) return;  // no run to keep
    st.file.store(file, std::memory_order_relaxed);
    st.run.store(1, std::memory_order_relaxed);
    return;
  }
  st.run.store(compressed ? 0 : st.run.load(std::memory_order_relaxed) + 1,
               std::memory_order_relaxed);
}

bool CompressedSwapDevice::keep(uint64_t slot, std::span<const std::byte> page, PageOwner owner,
                                bool* full) {
  thread_local std::vector<std::byte> buf;
  buf.resize(max_object_);
  size_t n;
  const std::optional<uint64_t> word = same_filled(page);
  if (word) {
    std::memcpy(buf.data(), &*word, sizeof *word);
    n = sizeof *word;
  } else if (!worth_trying(owner.file)) {
    skipped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  } else {
    n = codec_.compress(page, buf);
    tried(owner.file, n != 0);
    if (n == 0) {
      rejects_.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  }
  const std::span<const std::byte> object{buf.data(), n};
  int err = store(slot, object, owner, word.has_value());
  if (err == -ENOSPC && !pool_only_) {
    // Full: the oldest pages go on to the swap file and this one takes
    // their room.
    write_back_oldest();
    err = store(slot, object, owner, word.has_value());
  }
  if (err == -ENOSPC) {
    full_.fetch_add(1, std::memory_order_relaxed);
    *full = true;
  }
  if (err != 0) return false;
  stored_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

int CompressedSwapDevice::store(uint64_t slot, std::span<const std::byte> object, PageOwner owner,
                                bool same) {
  MutexLock lk(mu_);
  if (!pool_) return -ENODEV;
  ZHandle h;
  if (int err = pool_->store(object, slot, &h); err != 0) return err;
  Entry& e = slots_[slot];
  release_locked(e);  // a rewrite: the older copy goes
  if (!e.inflight) {  // (one in flight is freed by its completion)
    delete[] e.bounce;
    e.bounce = nullptr;
  }
  ++e.gen;
  e.h = h;
  e.owner = owner;
  e.same = same;
  if (e.same) ++same_filled_;
  return 0;
}

int CompressedSwapDevice::load(uint64_t slot, std::span<std::byte> page) {
  thread_local std::vector<std::byte> buf;
  buf.resize(max_object_);
  size_t n;
  bool same;
  {
    MutexLock lk(mu_);
    auto it = slots_.find(slot);
    if (it == slots_.end()) return 1;
    Entry& e = it->second;
    if (!e.h.valid()) {
      if (!e.bounce) return 1;
      std::memcpy(page.data(), e.bounce, page.size());
      return 0;
    }
    n = pool_->load(e.h, buf);
    same = e.same;
  }
  loads_.fetch_add(1, std::memory_order_relaxed);
  if (same) {
    uint64_t w;
    std::memcpy(&w, buf.data(), sizeof w);
    fill_with(page, w);
    return 0;
  }
  if (codec_.decompress({buf.data(), n}, page)) return 0;
  spdlog::error("swapdev: slot {}: its compressed copy does not decompress", slot);
  std::memset(page.data(), 0, page.size());
  return -EIO;
}

bool CompressedSwapDevice::none_here(SwapSlot first, size_t n) const {
  MutexLock lk(mu_);
  if (slots_.empty()) return true;
  for (size_t i = 0; i < n; ++i)
    if (slots_.count(first.value + i)) return false;
  return true;
}

void CompressedSwapDevice::write(SwapSlot first, ConstPages pages, PageOwner owner, IoDone done) {
  bool full = false;
  std::vector<bool> kept(pages.size());
  size_t misses = 0;  // since the last page kept
  bool any_kept = false;
  for (size_t i = 0; i < pages.size(); ++i) {
    kept[i] =
        pages[i].size() == page_size() && keep(first.value + i, pages[i], owner.page(i), &full);
    any_kept |= kept[i];
    misses = kept[i] ? 0 : misses + 1;
  }
  missed(any_kept, misses);
  if (!any_kept && none_here(first, pages.size())) {
    // Nothing of it is or was pooled: the backing device's write as it is.
    backing_->write(first, pages, owner, std::move(done));
    if (full) write_back_oldest();
    return;
  }
  auto agg = std::make_shared<Aggregate>(std::move(done));
  // The rest go to their backing slots: runs of consecutive pages, a page
  // alone (deferred) when an older copy of it is still being written back.
  constexpr size_t kNone = SIZE_MAX;
  size_t run = kNone;
  auto submit_run = [&](size_t end) {
    if (run != kNone && end > run) {
      agg->parts.fetch_add(1);
      backing_->write(first + run, pages.subspan(run, end - run), owner.page(run),
                      [agg](int err) { agg->finish(err); });
    }
    run = kNone;
  };
  for (size_t i = 0; i < pages.size(); ++i) {
    if (kept[i]) {
      submit_run(i);
      continue;
    }
    bool deferred = false;
    {
      MutexLock lk(mu_);
      auto it = slots_.find(first.value + i);
      if (it != slots_.end()) {
        Entry& e = it->second;
        release_locked(e);
        ++e.gen;  // a write-back in flight now only cleans up
        if (e.inflight) {
          deferred = true;
          agg->parts.fetch_add(1);
          const SwapSlot s = first + i;
          const std::span<const std::byte> page = pages[i];
          const PageOwner o = owner.page(i);
          e.deferred = [this, s, page, o, agg] {
            backing_->write(s, {&page, 1}, o, [agg](int err) { agg->finish(err); });
          };
        } else {
          delete[] e.bounce;
          slots_.erase(it);
        }
      }
    }
    if (deferred) {
      submit_run(i);
    } else if (run == kNone) {
      run = i;
    }
  }
  submit_run(pages.size());
  if (full) write_back_oldest();
  agg->finish(0);
}

void CompressedSwapDevice::write_blocks(SwapSlot slot, std::span<const std::byte> page,
                                        PageOwner owner, uint64_t block_mask, unsigned block_shift,
                                        IoDone done) {
  // `page` is the whole new page (the blocks outside the mask equal what the
  // slot holds): for a pooled slot that is a write of the page.
  if (pooled(slot)) return write(slot, {&page, 1}, owner, std::move(done));
  backing_->write_blocks(slot, page, owner, block_mask, block_shift, std::move(done));
}

void CompressedSwapDevice::read(SwapSlot first, MutablePages pages, PageOwner owner, IoDone done) {
  if (none_here(first, pages.size())) {
    // The common read under pressure: a page that never went into the pool.
    backing_->read(first, pages, owner, std::move(done));
    return;
  }
  auto agg = std::make_shared<Aggregate>(std::move(done));
  for (size_t i = 0; i < pages.size();) {
    const int r = pages[i].size() == page_size() ? load(first.value + i, pages[i]) : 1;
    if (r <= 0) {
      if (r < 0) {
        agg->parts.fetch_add(1);
        agg->finish(r);
      }
      ++i;
      continue;
    }
    size_t j = i + 1;
    while (j < pages.size()) {
      MutexLock lk(mu_);
      if (slots_.count(first.value + j)) break;
      ++j;
    }
    agg->parts.fetch_add(1);
    backing_->read(first + i, pages.subspan(i, j - i), owner.page(i),
                   [agg](int err) { agg->finish(err); });
    i = j;
  }
  agg->finish(0);
}

void CompressedSwapDevice::free(SwapSlot first, uint32_t count) {
  bool room = false;  // a pooled page left: pages may fit again
  for (uint32_t i = 0; i < count; ++i) {
    const uint64_t slot = first.value + i;
    {
      MutexLock lk(mu_);
      auto it = slots_.find(slot);
      if (it != slots_.end()) {
        Entry& e = it->second;
        room |= e.h.valid();
        release_locked(e);
        if (e.inflight) {
          e.freed = true;  // the write-back's completion frees the slot
          continue;
        }
        delete[] e.bounce;
        slots_.erase(it);
      }
    }
    backing_->free(SwapSlot(slot), 1);
  }
  if (room && pool_only_) {
    misses_.store(0, std::memory_order_relaxed);
    refuse_until_.store(0, std::memory_order_relaxed);
  }
}

void CompressedSwapDevice::write_back_oldest() {
  struct Out {
    uint64_t slot;
    uint32_t gen;
    std::byte* bounce;
    PageOwner owner;
  };
  std::vector<Out> out;
  std::vector<std::byte> buf(max_object_);
  {
    MutexLock lk(mu_);
    if (!pool_ || pool_only_ || writing_.load() >= 4 * kWritebackBatch) return;
    while (out.size() < kWritebackBatch) {
      const ZHandle h = pool_->oldest();
      if (!h.valid()) break;
      const uint64_t slot = pool_->tag(h);
      Entry& e = slots_.at(slot);
      auto* page = new std::byte[page_size()];
      const size_t n = pool_->load(h, buf);
      bool ok = true;
      if (e.same) {
        uint64_t w;
        std::memcpy(&w, buf.data(), sizeof w);
        fill_with({page, page_size()}, w);
      } else {
        ok = codec_.decompress({buf.data(), n}, {page, page_size()});
      }
      if (!ok) {  // cannot happen unless memory was corrupted: keep it, stop
        delete[] page;
        spdlog::error("swapdev: slot {}: its compressed copy does not decompress", slot);
        break;
      }
      release_locked(e);
      delete[] e.bounce;
      e.bounce = page;
      e.inflight = true;
      writing_.fetch_add(1);
      out.push_back({slot, e.gen, page, e.owner});
    }
  }
  for (const Out& o : out) {
    const std::span<const std::byte> page{o.bounce, page_size()};
    backing_->write(SwapSlot(o.slot), {&page, 1}, o.owner,
                    [this, o](int err) { written_back(o.slot, o.gen, o.bounce, err); });
  }
}

void CompressedSwapDevice::written_back(uint64_t slot, uint32_t gen, std::byte* bounce, int err) {
  std::function<void()> deferred;
  bool free_slot = false;
  {
    MutexLock lk(mu_);
    auto it = slots_.find(slot);
    assert(it != slots_.end() && it->second.bounce == bounce);
    Entry& e = it->second;
    e.inflight = false;
    deferred = std::move(e.deferred);
    e.deferred = nullptr;
    if (e.gen == gen && !e.freed && err != 0) {
      // The page is in `bounce` alone: it stays there, serving reads, until
      // the slot is written or freed.
      spdlog::warn("swapdev: slot {}: writing a pooled page on failed: {}", slot, strerror(-err));
    } else {
      if (err == 0 && e.gen == gen) writebacks_.fetch_add(1, std::memory_order_relaxed);
      delete[] e.bounce;
      e.bounce = nullptr;
      free_slot = e.freed;
      if (!e.h.valid()) slots_.erase(it);  // the backing slot holds it, or it is gone
    }
  }
  if (free_slot) backing_->free(SwapSlot(slot), 1);
  if (deferred) deferred();
  writing_.fetch_sub(1);
}

SwapCounters CompressedSwapDevice::counters() const {
  SwapCounters c = backing_->counters();
  MutexLock lk(mu_);
  if (pool_) {
    const ZPool::Stats z = pool_->stats();
    c.zpool_pages = z.objects;
    c.zpool_bytes = z.object_bytes;
    c.zpool_frames = z.frames;
  }
  c.zpool_same_filled = same_filled_;
  c.zpool_stored = stored_.load(std::memory_order_relaxed);
  c.zpool_rejects = rejects_.load(std::memory_order_relaxed);
  c.zpool_skipped = skipped_.load(std::memory_order_relaxed);
  c.zpool_full = full_.load(std::memory_order_relaxed);
  c.zpool_writebacks = writebacks_.load(std::memory_order_relaxed);
  c.zpool_loads = loads_.load(std::memory_order_relaxed);
  return c;
}

}  // namespace tmpfsd::swapdev
