// side.h — one of the two directories under test, and its descriptor table.
//
// A Side applies Ops to its own directory (all paths are resolved relative to
// the run's root directory fd) and returns an Outcome. It owns a table of
// kSlots open descriptors, so files can be unlinked while still open and data
// ops reach them through the slot. It also remembers, per inode number, the
// times it last observed, so a stat can be summarised as "mtime moved / same /
// new inode" instead of absolute times, which never match across two mounts.
//
// Single-threaded: each process drives its own pair of Sides.
#pragma once

#include <sys/stat.h>

#include <string>
#include <unordered_map>
#include <unordered_set>

#include "op.h"
#include "outcome.h"

namespace fsdiff {

class Side {
 public:
  Side(std::string root, Ignore ignore) : root_(std::move(root)), ignore_(ignore) {}
  ~Side();
  Side(const Side&) = delete;
  Side& operator=(const Side&) = delete;

  // Opens the run's root directory (which must exist). False and *err on failure.
  bool open(std::string* err);

  // Applies op, then observes what it touched (paths, parents, descriptors).
  Outcome apply(const Op& op);

  // Adds one fact per entry of the whole tree: type, mode, links, size,
  // times moved, link target, xattrs, plus the sorted names of each directory.
  // With contents, also a hash of each regular file's data (its first 64 MiB):
  // costly, so the runner asks for it only at the end of a run.
  void walk(Outcome* out, bool contents);

 private:
  struct Times {
    struct timespec a, m, c;
    struct timespec seen;  // CLOCK_REALTIME_COARSE just before that observation
  };
  std::string full(const std::string& rel) const { return root_ + "/" + rel; }
  Outcome execute(const Op& op, bool* created);
  void observe(const Op& op, bool created, Outcome* out);
  void observe_path(const std::string& rel, Outcome* out);
  void observe_fd(int slot, Outcome* out);
  std::string summary(const struct stat& st);
  // statx(rel, STATX_BTIME): whether btime is reported, btime <= ctime and
  // <= mtime, and whether it is the btime this side last saw for the inode
  // (never the value: the two mounts' clocks differ). Returns statx's result.
  int statx_btime(const std::string& rel, Outcome* out);
  void forget(ino_t ino) {
    times_.erase(ino);
    btimes_.erase(ino);
  }
  void walk_dir(int dirfd, const std::string& rel, int depth, bool contents, Outcome* out);
  bool mmap_read(ino_t ino) const { return mmap_read_.count(ino) != 0; }

  std::string root_;
  Ignore ignore_;
  int rootfd_ = -1;
  int fds_[kSlots] = {-1, -1, -1, -1, -1, -1};
  std::unordered_map<ino_t, Times> times_;                    // last observed times, per inode
  std::unordered_map<ino_t, struct statx_timestamp> btimes_;  // last observed btime, per inode
  struct timespec now_ = {};             // coarse clock at the start of this observation
  std::unordered_set<ino_t> mmap_read_;  // --ignore mmaphole: inodes read through mmap
};

// Removes everything inside dir (not dir itself), staying on dir's file system
// and never following symlinks. False and *err on failure.
bool empty_dir(const std::string& dir, std::string* err);

}  // namespace fsdiff
