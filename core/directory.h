// Directory: the entries of one directory, with readdir offsets that stay
// valid while entries come and go.
//
// Every entry gets a cookie from a per-directory counter that only grows;
// readdir offsets are cookies ("continue after cookie N"). An entry added
// during a readdir gets a larger cookie than any returned so far, so it may
// or may not be seen; an entry that exists throughout is returned exactly
// once, because removing other entries never renumbers it. Cookies 1 and 2
// are "." and "..".
//
// Not thread-safe: guarded by Namespace::mu_.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>

namespace tmpfsd {

class Directory {
 public:
  static constexpr uint64_t kFirstCookie = 3;  // 1 = ".", 2 = ".."

  struct Entry {
    std::string name;
    uint64_t ino;
  };

  // 0 when absent.
  uint64_t find(std::string_view name) const {
    auto it = by_name_.find(std::string(name));
    return it == by_name_.end() ? 0 : by_cookie_.at(it->second).ino;
  }
  void insert(std::string_view name, uint64_t ino) {
    uint64_t cookie = next_cookie_++;
    by_cookie_.emplace(cookie, Entry{std::string(name), ino});
    by_name_.emplace(std::string(name), cookie);
  }
  // Points an existing name at another inode, keeping its cookie (rename
  // over an existing entry, RENAME_EXCHANGE).
  void replace(std::string_view name, uint64_t ino) {
    by_cookie_.at(by_name_.at(std::string(name))).ino = ino;
  }
  void erase(std::string_view name) {
    auto it = by_name_.find(std::string(name));
    by_cookie_.erase(it->second);
    by_name_.erase(it);
  }
  bool empty() const { return by_name_.empty(); }
  // The cookie the next entry will get: a bound for one pass of readdir.
  uint64_t next_cookie() const { return next_cookie_; }
  size_t size() const { return by_name_.size(); }

  // Entries with a cookie greater than `after`, in cookie order.
  std::map<uint64_t, Entry>::const_iterator after(uint64_t cookie) const {
    return by_cookie_.upper_bound(cookie);
  }
  std::map<uint64_t, Entry>::const_iterator end() const { return by_cookie_.end(); }

  uint64_t parent = 0;  // ino of "..": the directory's own parent

 private:
  std::map<uint64_t, Entry> by_cookie_;
  std::unordered_map<std::string, uint64_t> by_name_;
  uint64_t next_cookie_ = kFirstCookie;
};

}  // namespace tmpfsd
