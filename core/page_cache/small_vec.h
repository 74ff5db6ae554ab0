// SmallVec: a vector whose first N elements live inline, so that the common
// case (a read of a few pages) allocates nothing. Only what the page cache
// needs: push_back, back, size, data, span. T must be trivially copyable.
// Threads: none; a local variable.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <type_traits>
#include <vector>

namespace tmpfsd {

template <class T, size_t N>
class SmallVec {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  void push_back(const T& v) {
    if (n_ < N) {
      inline_[n_] = v;
    } else {
      if (n_ == N) heap_.assign(inline_.begin(), inline_.end());
      heap_.push_back(v);
    }
    ++n_;
  }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  T* data() { return n_ <= N ? inline_.data() : heap_.data(); }
  const T* data() const { return n_ <= N ? inline_.data() : heap_.data(); }
  T& back() { return data()[n_ - 1]; }
  std::span<T> span() { return {data(), n_}; }
  std::span<const T> span() const { return {data(), n_}; }

 private:
  std::array<T, N> inline_;
  std::vector<T> heap_;  // all elements once n_ > N
  size_t n_ = 0;
};

}  // namespace tmpfsd
