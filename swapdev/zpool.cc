#include "swapdev/zpool.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace tmpfsd::swapdev {

ZPool::ZPool(PageSource& frames, uint64_t max_frames, size_t max_object)
    : pool_(frames),
      max_frames_(max_frames),
      max_object_(std::min({max_object, frames.page_size(), size_t{UINT16_MAX}})),
      frame_size_(frames.page_size()) {
  MutexLock lk(mu_);
  classes_.resize(class_of(max_object_) + 1);
  for (size_t k = 0; k < classes_.size(); ++k) {
    Class& c = classes_[k];
    c.slot_size = static_cast<uint32_t>((k + 1) * kAlign);
    // The fewest frames whose waste, as a share of the span's bytes, is
    // within 1/kWasteSlack of the least. At most max_frames frames a
    // span: a tiny pool must still take every class.
    const unsigned most =
        static_cast<unsigned>(std::clamp<uint64_t>(max_frames_, 1, kMaxSpanFrames));
    // A span has at most UINT16_MAX slots (large pages, small classes).
    auto capacity = [&](unsigned n) {
      return std::min<size_t>(n * frame_size_ / c.slot_size, UINT16_MAX);
    };
    auto waste = [&](unsigned n) {  // the share of the span's bytes
      const double bytes = double(n) * double(frame_size_);
      return (bytes - double(capacity(n) * c.slot_size)) / bytes;
    };
    double least = 1;
    for (unsigned n = 1; n <= most; ++n) least = std::min(least, waste(n));
    for (unsigned n = 1; n <= most; ++n) {
      if (waste(n) > least + 1.0 / kWasteSlack) continue;
      c.frames = static_cast<uint16_t>(n);
      c.capacity = static_cast<uint16_t>(capacity(n));
      break;
    }
  }
}

ZPool::~ZPool() {
  MutexLock lk(mu_);
  for (uint32_t s = 0; s < spans_.size(); ++s)
    if (spans_[s].frames[0] != nullptr) free_span_locked(s);
  assert(frames_held_ == 0);
}

std::pair<size_t, unsigned> ZPool::class_shape(size_t object_size) const {
  MutexLock lk(mu_);
  const Class& c = classes_.at(class_of(object_size));
  return {c.slot_size, c.frames};
}

ZPool::Entry& ZPool::entry_locked(ZHandle h) {
  assert(h.valid() && h.value <= entries_.size() && entries_[h.value - 1].span != kNone);
  return entries_[h.value - 1];
}
const ZPool::Entry& ZPool::entry_locked(ZHandle h) const {
  assert(h.valid() && h.value <= entries_.size() && entries_[h.value - 1].span != kNone);
  return entries_[h.value - 1];
}

template <class F>
void ZPool::for_pieces_locked(const Span& s, const Class& c, uint16_t slot, size_t len,
                              F&& f) const {
  size_t off = size_t{slot} * c.slot_size;
  for (size_t done = 0; done < len;) {
    const size_t at = off % frame_size_;
    const size_t n = std::min(len - done, frame_size_ - at);
    f(s.frames[off / frame_size_] + at, done, n);
    done += n;
    off += n;
  }
}

void ZPool::write_locked(const Span& s, const Class& c, uint16_t slot,
                         std::span<const std::byte> in) {
  for_pieces_locked(s, c, slot, in.size(), [&](std::byte* mem, size_t done, size_t n) {
    std::memcpy(mem, in.data() + done, n);
  });
}

void ZPool::read_locked(const Span& s, const Class& c, uint16_t slot,
                        std::span<std::byte> out) const {
  for_pieces_locked(s, c, slot, out.size(), [&](std::byte* mem, size_t done, size_t n) {
    std::memcpy(out.data() + done, mem, n);
  });
}

uint32_t ZPool::new_span_locked(uint16_t cls) {
  const Class& c = classes_[cls];
  if (frames_held_ + c.frames > max_frames_) return kNone;
  std::byte* got[kMaxSpanFrames] = {};
  for (unsigned i = 0; i < c.frames; ++i) {
    if ((got[i] = pool_.take()) != nullptr) continue;
    for (unsigned j = 0; j < i; ++j) pool_.give(got[j]);
    return kNone;
  }
  uint32_t id;
  if (!free_spans_.empty()) {
    id = free_spans_.back();
    free_spans_.pop_back();
  } else {
    id = static_cast<uint32_t>(spans_.size());
    spans_.emplace_back();
  }
  Span& s = spans_[id];
  s.cls = cls;
  s.used = 0;
  for (unsigned i = 0; i < c.frames; ++i) s.frames[i] = got[i];
  s.slots.assign(c.capacity, kNone);
  s.first_free = 0;
  frames_held_ += c.frames;
  return id;
}

void ZPool::free_span_locked(uint32_t id) {
  Span& s = spans_[id];
  for (std::byte*& f : s.frames) {
    if (f == nullptr) continue;
    pool_.give(f);
    f = nullptr;
    --frames_held_;
  }
  classes_[s.cls].partial.erase({s.used, id});
  s.used = 0;
  s.slots = {};
  free_spans_.push_back(id);
}

void ZPool::set_used_locked(uint32_t id, uint16_t used) {
  Span& s = spans_[id];
  Class& c = classes_[s.cls];
  if (s.used > 0 && s.used < c.capacity) c.partial.erase({s.used, id});
  s.used = used;
  if (used > 0 && used < c.capacity) c.partial.insert({used, id});
}

uint16_t ZPool::take_slot_locked(uint32_t id, uint32_t e) {
  Span& s = spans_[id];
  auto it = std::find(s.slots.begin() + s.first_free, s.slots.end(), kNone);
  assert(it != s.slots.end());
  *it = e;
  const auto slot = static_cast<uint16_t>(it - s.slots.begin());
  s.first_free = static_cast<uint16_t>(slot + 1);
  set_used_locked(id, static_cast<uint16_t>(s.used + 1));
  return slot;
}

void ZPool::release_slot_locked(const Entry& e) {
  Span& s = spans_[e.span];
  s.slots[e.slot] = kNone;
  s.first_free = std::min(s.first_free, e.slot);
  set_used_locked(e.span, static_cast<uint16_t>(s.used - 1));
  if (s.used == 0) free_span_locked(e.span);
}

void ZPool::unlink_locked(uint32_t i) {
  Entry& e = entries_[i];
  (e.older == kNone ? oldest_ : entries_[e.older].newer) = e.newer;
  (e.newer == kNone ? newest_ : entries_[e.newer].older) = e.older;
  e.older = e.newer = kNone;
}

int ZPool::store(std::span<const std::byte> data, uint64_t tag, ZHandle* out) {
  if (data.empty() || data.size() > max_object_) return -EINVAL;
  const auto cls = static_cast<uint16_t>(class_of(data.size()));
  MutexLock lk(mu_);
  Class& c = classes_[cls];
  uint32_t span;
  if (!c.partial.empty()) {
    span = c.partial.rbegin()->second;  // the fullest
  } else {
    span = new_span_locked(cls);
    if (span == kNone) return -ENOSPC;
  }
  uint32_t i;
  if (!free_entries_.empty()) {
    i = free_entries_.back();
    free_entries_.pop_back();
  } else {
    i = static_cast<uint32_t>(entries_.size());
    entries_.emplace_back();
  }
  Entry& e = entries_[i];
  e.span = span;
  e.slot = take_slot_locked(span, i);
  e.size = static_cast<uint16_t>(data.size());
  e.tag = tag;
  e.newer = kNone;
  e.older = newest_;
  (newest_ == kNone ? oldest_ : entries_[newest_].newer) = i;
  newest_ = i;
  write_locked(spans_[span], c, e.slot, data);
  ++objects_;
  object_bytes_ += data.size();
  *out = ZHandle{i + 1};
  return 0;
}

size_t ZPool::load(ZHandle h, std::span<std::byte> out) const {
  MutexLock lk(mu_);
  const Entry& e = entry_locked(h);
  assert(out.size() >= e.size);
  const Span& s = spans_[e.span];
  read_locked(s, classes_[s.cls], e.slot, out.first(e.size));
  return e.size;
}

uint32_t ZPool::size(ZHandle h) const {
  MutexLock lk(mu_);
  return entry_locked(h).size;
}

uint64_t ZPool::tag(ZHandle h) const {
  MutexLock lk(mu_);
  return entry_locked(h).tag;
}

void ZPool::free(ZHandle h) {
  MutexLock lk(mu_);
  Entry& e = entry_locked(h);
  release_slot_locked(e);
  unlink_locked(h.value - 1);
  --objects_;
  object_bytes_ -= e.size;
  e = Entry{};
  free_entries_.push_back(h.value - 1);
}

ZHandle ZPool::oldest() const {
  MutexLock lk(mu_);
  return oldest_ == kNone ? ZHandle{} : ZHandle{oldest_ + 1};
}

uint64_t ZPool::compact() {
  MutexLock lk(mu_);
  const uint64_t before = frames_held_;
  std::vector<std::byte> buf(max_object_);
  for (Class& c : classes_) {
    // Empty the emptiest partial span into the fullest while the others
    // have room for all it holds.
    while (c.partial.size() >= 2) {
      const auto [low_used, low] = *c.partial.begin();
      uint64_t room = 0;
      for (auto it = std::next(c.partial.begin()); it != c.partial.end(); ++it)
        room += c.capacity - it->first;
      if (room < low_used) break;
      Span& from = spans_[low];
      for (uint16_t slot = 0; slot < from.slots.size(); ++slot) {
        const uint32_t i = from.slots[slot];
        if (i == kNone) continue;
        Entry& e = entries_[i];
        std::span<std::byte> bytes{buf.data(), e.size};
        read_locked(from, c, slot, bytes);
        const uint32_t to = c.partial.rbegin()->second;
        const bool last = spans_[low].used == 1;
        release_slot_locked(e);  // frees `from` with its last object
        e.span = to;
        e.slot = take_slot_locked(to, i);
        write_locked(spans_[to], c, e.slot, bytes);
        ++moved_;
        if (last) break;
      }
    }
  }
  return before - frames_held_;
}

ZPool::Stats ZPool::stats() const {
  MutexLock lk(mu_);
  Stats st;
  st.objects = objects_;
  st.object_bytes = object_bytes_;
  st.frames = frames_held_;
  st.spans = spans_.size() - free_spans_.size();
  st.moved = moved_;
  uint64_t slot_tables = 0;
  for (const Span& s : spans_) slot_tables += s.slots.capacity() * sizeof(uint32_t);
  st.metadata_bytes = entries_.capacity() * sizeof(Entry) + spans_.capacity() * sizeof(Span) +
                      slot_tables + (free_spans_.capacity() + free_entries_.capacity()) * 4;
  return st;
}

}  // namespace tmpfsd::swapdev
