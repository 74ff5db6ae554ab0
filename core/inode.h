// Inode: one file system object and its attributes.
//
// An Inode lives in the Namespace's table from creation until it has no
// name (nlink == 0), the kernel has forgotten every lookup, and no file
// handle is open. Its number is never reused in the life of a mount, so a
// stale number from the kernel finds nothing instead of another file.
//
// The number is also the FUSE node ID, and with the generation it is what
// a file handle (name_to_handle_at, NFS) holds: a handle outlives the
// kernel's inode, and the table finds the Inode again by its number while
// it has a name. The generation is random (32 bits, all the kernel keeps),
// as tmpfs's i_generation, so that a handle kept across a new mount, where
// the numbers start again, is stale rather than another file; the root's
// is 0, which the kernel requires of FUSE's root.
//
// Locks: `ino`, `generation` and `type` are constant; every field below
// `data_mu` is guarded by Namespace::mu_.
// `data_mu` orders data operations on a regular file: write, truncate and
// fallocate hold it exclusively (so size and pages agree), read shares it.
// Lock order (core/LOCKING.md): data_mu -> Namespace::mu_, and data_mu ->
// FilePages' own lock; Namespace::mu_ is never held across a FilePages call.
#pragma once

#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <cstdint>
#include <map>
#include <memory>
#include <shared_mutex>
#include <string>

#include "core/directory.h"
#include "core/page_cache.h"
#include "swapdev/thread_annotations.h"

namespace tmpfsd {

// What getattr reports; a copy, taken under Namespace::mu_.
struct Attr {
  uint64_t ino = 0;
  uint64_t generation = 0;
  mode_t mode = 0;
  nlink_t nlink = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  dev_t rdev = 0;
  uint64_t size = 0;
  uint64_t blocks = 0;  // 512-byte units
  timespec atime{}, mtime{}, ctime{};
  timespec btime{};     // birth: set at creation, never changed (statx)
  uint32_t iflags = 0;  // FS_*_FL (chattr)
};

class Inode {
 public:
  Inode(uint64_t number, uint64_t gen, mode_t type_and_mode)
      : ino(number), generation(gen), type(type_and_mode & S_IFMT), mode(type_and_mode) {}
  Inode(const Inode&) = delete;
  Inode& operator=(const Inode&) = delete;

  // The file type never changes, so these need no lock (they read `type`,
  // not `mode`, which chmod rewrites under Namespace::mu_).
  bool is_dir() const { return S_ISDIR(type); }
  bool is_reg() const { return S_ISREG(type); }
  bool is_symlink() const { return S_ISLNK(type); }
  // chattr +i / +a (under Namespace::mu_). The VFS refuses changes to such
  // an inode by itself on a local file system, but the FUSE kernel client
  // never sets S_IMMUTABLE/S_APPEND, so the namespace refuses them.
  bool immutable() const { return iflags & FS_IMMUTABLE_FL; }
  bool append_only() const { return iflags & FS_APPEND_FL; }
  // Neither its names nor its attributes may change (may_delete, vfs_link,
  // notify_change and xattr_permission refuse an immutable or append-only
  // inode alike).
  bool immutable_or_append() const { return iflags & (FS_IMMUTABLE_FL | FS_APPEND_FL); }

  const uint64_t ino;
  const uint64_t generation;
  const mode_t type;  // S_IFMT bits: the file type, fixed at creation

  SharedMutex data_mu;  // see above; regular files only

  // Guarded by Namespace::mu_.
  mode_t mode;        // type (always == `type`) and permission bits
  nlink_t nlink = 0;  // names (+ "." and subdirectories' ".." for dirs)
  uid_t uid = 0;
  gid_t gid = 0;
  dev_t rdev = 0;     // device nodes
  uint64_t size = 0;  // bytes; dirs: tmpfs's 20 bytes an entry
  timespec atime{}, mtime{}, ctime{};
  timespec btime{};            // creation time (statx's btime)
  uint64_t lookups = 0;        // kernel references (lookup, create, readdirplus)
  uint32_t opens = 0;          // open file handles
  bool ctime_queried = false;  // getattr has shown ctime since it last changed (multigrain)
  bool linkable = false;       // an O_TMPFILE file that link() may still name once
  uint32_t iflags = 0;         // FS_*_FL set with chattr (Namespace::set_flags)
  std::string target;          // symlinks
  std::map<std::string, std::string> xattrs;  // name -> value
  size_t xattr_bytes = 0;                     // names + values, for limits
  std::unique_ptr<Directory> dir;             // directories
  std::unique_ptr<FilePages> pages;           // regular files
};

}  // namespace tmpfsd
