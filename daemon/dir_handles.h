// DirHandles: the open directories, by number. fi->fh of an open
// directory is a number from this table, not a pointer, so that a restart
// without unmounting (daemon/restart.h) can hand every open directory's
// readdir state to the next daemon: the kernel keeps sending the same fh.
//
// A handle holds where the current readdir pass ends (Namespace::readdir).
// The kernel serialises readdir on one open file, and releases it only once
// no readdir of it runs: the pointer find() returns stays valid until
// close() of that handle.
//
// Threads: any; one mutex guards the table.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>

#include "core/image.h"

namespace tmpfsd {

class DirHandles {
 public:
  uint64_t open() {
    std::lock_guard lk(mu_);
    const uint64_t id = next_++;
    handles_.emplace(id, 0);
    return id;
  }
  // The pass end of handle `id`; null when the table has no such handle.
  uint64_t* find(uint64_t id) {
    std::lock_guard lk(mu_);
    auto it = handles_.find(id);
    return it == handles_.end() ? nullptr : &it->second;
  }
  void close(uint64_t id) {
    std::lock_guard lk(mu_);
    handles_.erase(id);
  }

  // The whole table, for the next daemon; taken while no request runs.
  void save(ImageWriter& w) {
    std::lock_guard lk(mu_);
    w.u64(next_);
    w.u64(handles_.size());
    for (const auto& [id, pass_end] : handles_) {
      w.u64(id);
      w.u64(pass_end);
    }
  }
  bool load(ImageReader& r) {
    std::lock_guard lk(mu_);
    uint64_t count;
    if (!r.u64(&next_) || !r.u64(&count)) return false;
    for (uint64_t i = 0; i < count; ++i) {
      uint64_t id, pass_end;
      if (!r.u64(&id) || !r.u64(&pass_end)) return false;
      if (id >= next_) return r.fail("a directory handle beyond the table's next number");
      handles_[id] = pass_end;
    }
    return true;
  }

 private:
  std::mutex mu_;
  std::map<uint64_t, uint64_t> handles_;  // id -> pass end; guarded by mu_
  uint64_t next_ = 1;                     // guarded by mu_
};

}  // namespace tmpfsd
