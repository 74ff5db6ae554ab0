// Result<T> and Status: how core/ reports failure.
//
// Errors inside core/ are values, never exceptions. An error is a positive
// errno code (ENOENT, ENOSPC, ...): that is the vocabulary a file system
// speaks, and the FUSE edge turns it into a reply without translation.
// g++ 12 has no std::expected, hence this small type.
#pragma once

#include <cassert>
#include <utility>
#include <variant>

namespace tmpfsd {

// A positive errno value; 0 is never an error.
struct Errno {
  int code;
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Errno e) : code_(e.code) { assert(e.code > 0); }  // NOLINT: implicit on purpose
  static Status ok() { return {}; }

  bool is_ok() const { return code_ == 0; }
  explicit operator bool() const { return is_ok(); }
  int code() const { return code_; }  // 0 or a positive errno

 private:
  int code_ = 0;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit on purpose
  Result(Errno e) : v_(e) { assert(e.code > 0); }  // NOLINT

  bool is_ok() const { return v_.index() == 0; }
  explicit operator bool() const { return is_ok(); }
  int code() const { return is_ok() ? 0 : std::get<1>(v_).code; }
  Status status() const { return is_ok() ? Status{} : Status{std::get<1>(v_)}; }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Errno> v_;
};

}  // namespace tmpfsd
