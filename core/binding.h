// Binding: where the data of one named page is now (DESIGN.md, "weak
// binding"). One tagged machine word:
//
//   none    0                      no data: the page reads as zeros
//   frame   Frame* (low bits 00)   resident in a frame of the FramePool
//   swap    (slot << 2) | 01       in the swap file, slot = swapdev::SwapSlot::value
//   remote  (key  << 2) | 10       remote memory (later)
//
// A Binding is a value; the Pmap that holds it decides when it changes
// (pmap.h has the state table). Frames are at least 8-byte aligned
// (FramePool allocates their descriptors in an array of 8-aligned structs),
// so a frame pointer never has its low two bits set.
//
// Threads: none of its own; guarded by whoever holds the Pmap.
#pragma once

#include <cassert>
#include <cstdint>

namespace tmpfsd {

class Frame;

class Binding {
 public:
  enum class Kind : uint8_t { kNone, kFrame, kSwap, kRemote };

  constexpr Binding() = default;
  static Binding none() { return Binding(); }
  static Binding frame(Frame* f) {
    auto w = reinterpret_cast<uintptr_t>(f);
    assert(f != nullptr && (w & kTagMask) == 0);
    return Binding(w);
  }
  // `slot` is a swapdev::SwapSlot::value; at most 2^62 - 1.
  static Binding swap(uint64_t slot) {
    assert(slot < (uint64_t{1} << 62));
    return Binding((slot << 2) | kSwapTag);
  }
  static Binding remote(uint64_t key) {
    assert(key < (uint64_t{1} << 62));
    return Binding((key << 2) | kRemoteTag);
  }

  Kind kind() const {
    if (word_ == 0) return Kind::kNone;
    switch (word_ & kTagMask) {
      case 0: return Kind::kFrame;
      case kSwapTag: return Kind::kSwap;
      default: return Kind::kRemote;
    }
  }
  bool is_none() const { return word_ == 0; }
  bool is_frame() const { return kind() == Kind::kFrame; }
  Frame* frame() const {
    assert(is_frame());
    return reinterpret_cast<Frame*>(word_);
  }
  uint64_t swap_slot() const {
    assert(kind() == Kind::kSwap);
    return word_ >> 2;
  }
  uint64_t remote_key() const {
    assert(kind() == Kind::kRemote);
    return word_ >> 2;
  }
  uintptr_t raw() const { return word_; }

  friend bool operator==(Binding, Binding) = default;

 private:
  static constexpr uintptr_t kTagMask = 3;
  static constexpr uintptr_t kSwapTag = 1;
  static constexpr uintptr_t kRemoteTag = 2;
  constexpr explicit Binding(uintptr_t w) : word_(w) {}
  uintptr_t word_ = 0;
};

static_assert(sizeof(Binding) == 8);

}  // namespace tmpfsd
