// observe.cc — what a Side looks at after each op, and how it summarises it.
//
// The summary of a stat keeps only what two correct tmpfs-like file systems
// must agree on: type, permission bits, link count, size, owner, rdev, whether
// any blocks are allocated (not how many: allocation granularity is private),
// and for each of atime/mtime/ctime whether it moved since this side last
// looked at the same inode. Inode numbers, st_dev, st_blksize and absolute
// times are left out on purpose.
//
// "Moved" is tracked per inode number. When an op creates an object the
// inode's history is dropped first, so a file system that reuses inode
// numbers (ext4, or a daemon with an inode table) still reports "new".
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/core.h>
#include <xxhash.h>

#include "side.h"

namespace fsdiff {
namespace {

const char* type_name(mode_t m) {
  switch (m & S_IFMT) {
    case S_IFREG:
      return "reg";
    case S_IFDIR:
      return "dir";
    case S_IFLNK:
      return "lnk";
    case S_IFIFO:
      return "fifo";
    case S_IFCHR:
      return "chr";
    case S_IFBLK:
      return "blk";
    case S_IFSOCK:
      return "sock";
  }
  return "?";
}

bool same_ts(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

bool ts_ge(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec != b.tv_sec ? a.tv_sec > b.tv_sec : a.tv_nsec >= b.tv_nsec;
}

// More than one coarse tick at any HZ the kernel may be built with.
constexpr long kTickSlackNs = 20 * 1000 * 1000;

struct timespec coarse_now() {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME_COARSE, &t);
  return t;
}

std::string parent_of(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? "." : p.substr(0, s);
}

bool uses_path(OpKind k) {
  switch (k) {
    case OpKind::Open:
    case OpKind::Truncate:
    case OpKind::Rename:
    case OpKind::Link:
    case OpKind::Unlink:
    case OpKind::Mkdir:
    case OpKind::Rmdir:
    case OpKind::Symlink:
    case OpKind::Readlink:
    case OpKind::Mkfifo:
    case OpKind::Chmod:
    case OpKind::Chown:
    case OpKind::Utimens:
    case OpKind::Setxattr:
    case OpKind::Getxattr:
    case OpKind::Listxattr:
    case OpKind::Removexattr:
    case OpKind::Statfs:
    case OpKind::Stat:
    case OpKind::Readdir:
    case OpKind::Tmpfile:  // the directory
    case OpKind::Statx:
    case OpKind::Setacl:
    case OpKind::Setflags:
    case OpKind::Getflags:
      return true;
    default:
      return false;
  }
}

bool uses_fd(OpKind k) { return !uses_path(k) && k != OpKind::Close; }

// " name=len:hash ..." for each xattr, sorted: of fd if path is empty, else
// of path itself (not following a final symlink).
std::string xattr_text(int fd, const std::string& path) {
  char list[65536];
  ssize_t l = path.empty() ? flistxattr(fd, list, sizeof list)
                           : llistxattr(path.c_str(), list, sizeof list);
  if (l < 0) return " xattrs:" + errno_name(errno);
  std::vector<std::string> xs;
  std::vector<char> v(65536);
  for (ssize_t i = 0; i < l;) {
    std::string name(list + i);
    i += ssize_t(name.size()) + 1;
    ssize_t vl = path.empty() ? fgetxattr(fd, name.c_str(), v.data(), v.size())
                              : lgetxattr(path.c_str(), name.c_str(), v.data(), v.size());
    xs.push_back(vl < 0
                     ? name + "=" + errno_name(errno)
                     : fmt::format("{}={}:{:016x}", name, vl, XXH3_64bits(v.data(), size_t(vl))));
  }
  std::sort(xs.begin(), xs.end());
  std::string s;
  for (const auto& x : xs) s += " " + x;
  return s;
}

// Hash of the first 64 MiB of a file, read through a fresh descriptor.
std::string content_hash(int dirfd, const std::string& name, off_t size) {
  int fd = openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return errno_name(errno);
  XXH3_state_t* h = XXH3_createState();
  XXH3_64bits_reset(h);
  std::vector<char> buf(1 << 20);
  off_t done = 0, limit = std::min<off_t>(size, 64 << 20);
  std::string res;
  while (done < limit) {
    ssize_t r =
        pread(fd, buf.data(), size_t(std::min<off_t>(limit - done, off_t(buf.size()))), done);
    if (r < 0) {
      res = errno_name(errno);
      break;
    }
    if (r == 0) break;
    XXH3_64bits_update(h, buf.data(), size_t(r));
    done += r;
  }
  if (res.empty()) res = fmt::format("{}:{:016x}", done, XXH3_64bits_digest(h));
  XXH3_freeState(h);
  close(fd);
  return res;
}

}  // namespace

std::string Side::summary(const struct stat& st) {
  std::string s = fmt::format("{} mode={:04o} nlink={}", type_name(st.st_mode), st.st_mode & 07777,
                              st.st_nlink);
  if (!(S_ISDIR(st.st_mode) && ignore_.dirsize)) s += fmt::format(" size={}", st.st_size);
  if (!ignore_.blocks)
    s += mmap_read(st.st_ino) ? " blocks=?" : st.st_blocks ? " blocks>0" : " blocks=0";
  s += fmt::format(" uid={} gid={}", st.st_uid, st.st_gid);
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) s += fmt::format(" rdev={:#x}", st.st_rdev);

  auto it = times_.find(st.st_ino);
  if (S_ISFIFO(st.st_mode) && ignore_.fifotimes) {
    s += " times=ignored";
  } else if (it == times_.end()) {
    s += " times=new";
  } else {
    // The kernel stamps many changes with the coarse clock (one tick, 4 ms at
    // HZ=250), so a change made in the same tick as the time it replaces does
    // not show. Any stamp written since the last look is >= the coarse clock
    // read before that look; so an unchanged time older than that is a sure
    // "same", and a newer one is "same?", which compare_outcomes() accepts
    // against either answer.
    const Times& t = it->second;
    auto mv = [&](const struct timespec& old, const struct timespec& now) {
      return !same_ts(old, now) ? "moved" : ts_ge(old, t.seen) ? "same?" : "same";
    };
    if (!ignore_.mtime) s += fmt::format(" m={}", mv(t.m, st.st_mtim));
    if (!ignore_.ctime) s += fmt::format(" c={}", mv(t.c, st.st_ctim));
    // relatime updates atime only while atime <= mtime or ctime; when those
    // were stamped within a tick or so of each other, whether they compared
    // equal was a matter of timing, so the answer is not evidence either way.
    if (!ignore_.atime) {
      const struct timespec& mc = ts_ge(t.m, t.c) ? t.m : t.c;
      struct timespec lim = {mc.tv_sec, mc.tv_nsec + kTickSlackNs};
      if (lim.tv_nsec >= 1000000000) lim = {lim.tv_sec + 1, lim.tv_nsec - 1000000000};
      s += fmt::format(" a={}", ts_ge(lim, t.a) ? "any?" : mv(t.a, st.st_atim));
    }
  }
  times_[st.st_ino] = Times{st.st_atim, st.st_mtim, st.st_ctim, now_};
  return s;
}

int Side::statx_btime(const std::string& rel, Outcome* out) {
  struct statx sx;
  int r = statx(rootfd_, rel.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS | STATX_BTIME, &sx);
  if (r < 0) return r;
  std::string s;
  if (!(sx.stx_mask & STATX_BTIME)) {
    s = "btime=none";
  } else {
    auto le = [](const struct statx_timestamp& a, const struct statx_timestamp& b) {
      return a.tv_sec != b.tv_sec ? a.tv_sec < b.tv_sec : a.tv_nsec <= b.tv_nsec;
    };
    const struct statx_timestamp& b = sx.stx_btime;
    auto it = btimes_.find(sx.stx_ino);
    const char* seen = it == btimes_.end()                                                ? "new"
                       : it->second.tv_sec == b.tv_sec && it->second.tv_nsec == b.tv_nsec ? "same"
                                                                                          : "moved";
    if (S_ISFIFO(sx.stx_mode) && ignore_.fifotimes)  // its m/ctime do not move on tmpfsd (6)
      s = fmt::format("btime b={} (fifo: times ignored)", seen);
    else
      s = fmt::format("btime b<=c={} b<=m={} b={}", le(b, sx.stx_ctime), le(b, sx.stx_mtime), seen);
    btimes_[sx.stx_ino] = b;
  }
  // stx_attributes is left out on purpose: the FUSE client does not pass the
  // inode flag bits on (fsdiff-known-divergences.md, 9).
  out->facts["statx " + rel] = s;
  return 0;
}

void Side::observe_path(const std::string& rel, Outcome* out) {
  struct stat st;
  std::string key = "lstat " + rel;
  if (fstatat(rootfd_, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0)
    out->facts[key] = errno_name(errno);
  else
    out->facts[key] = summary(st);
}

void Side::observe_fd(int slot, Outcome* out) {
  if (fds_[slot] < 0) return;
  struct stat st;
  std::string key = fmt::format("fstat fd{}", slot);
  if (fstat(fds_[slot], &st) < 0)
    out->facts[key] = errno_name(errno);
  else
    out->facts[key] = summary(st);
}

void Side::observe(const Op& op, bool created, Outcome* out) {
  now_ = coarse_now();
  if (created) {
    // A new object: forget whatever an earlier inode with the same number did.
    // (O_TMPFILE names a directory that is not new: only its file is.)
    struct stat st;
    if (op.kind != OpKind::Tmpfile &&
        fstatat(rootfd_, op.path.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
      forget(st.st_ino);
    if ((op.kind == OpKind::Open || op.kind == OpKind::Tmpfile) && fstat(fds_[op.fd], &st) == 0)
      forget(st.st_ino);
  }
  if (uses_path(op.kind)) {
    std::vector<std::string> paths = {op.path, parent_of(op.path)};
    if (op.kind == OpKind::Rename || op.kind == OpKind::Link) {
      paths.push_back(op.path2);
      paths.push_back(parent_of(op.path2));
    }
    std::sort(paths.begin(), paths.end());
    paths.erase(std::unique(paths.begin(), paths.end()), paths.end());
    for (const auto& p : paths) observe_path(p, out);
  }
  if (op.kind == OpKind::Linkfd) {
    observe_path(op.path2, out);
    observe_path(parent_of(op.path2), out);
  }
  if (uses_fd(op.kind) || op.kind == OpKind::Open || op.kind == OpKind::Tmpfile)
    observe_fd(op.fd, out);
  if (op.kind == OpKind::CopyRange && op.fd2 != op.fd) observe_fd(op.fd2, out);
}

void Side::walk(Outcome* out, bool contents) {
  now_ = coarse_now();
  int dfd = openat(rootfd_, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    out->facts["walk ."] = errno_name(errno);
    return;
  }
  walk_dir(dfd, "", 0, contents, out);  // closes dfd
}

void Side::walk_dir(int dirfd, const std::string& rel, int depth, bool contents, Outcome* out) {
  struct stat st;
  std::string here = rel.empty() ? "." : rel;
  if (fstat(dirfd, &st) == 0)
    out->facts["walk " + here] = summary(st) + (ignore_.xattr ? "" : xattr_text(dirfd, ""));
  DIR* d = fdopendir(dirfd);
  if (!d) {
    close(dirfd);
    return;
  }
  std::vector<std::string> names;
  while (struct dirent* e = readdir(d))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names.push_back(e->d_name);
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    std::string p = rel.empty() ? n : rel + "/" + n;
    if (fstatat(dirfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) {
      out->facts["walk " + p] = errno_name(errno);
      continue;
    }
    if (S_ISDIR(st.st_mode) && depth < 8) {
      int sub = openat(dirfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub >= 0)
        walk_dir(sub, p, depth + 1, contents, out);
      else
        out->facts["walk " + p] = "open: " + errno_name(errno);
      continue;
    }
    std::string s = summary(st);
    if (S_ISLNK(st.st_mode)) {
      char buf[4096];
      ssize_t l = readlinkat(dirfd, n.c_str(), buf, sizeof buf);
      s += " -> " + (l < 0 ? errno_name(errno) : std::string(buf, size_t(l)));
    }
    if (contents && S_ISREG(st.st_mode)) s += " data=" + content_hash(dirfd, n, st.st_size);
    if (!ignore_.xattr && !S_ISLNK(st.st_mode))
      s += xattr_text(-1, fmt::format("/proc/self/fd/{}/{}", dirfd, n));  // l* calls need a path
    out->facts["walk " + p] = s;
  }
  closedir(d);
}

namespace {

// An immutable or append-only inode cannot be unlinked, nor can anything in
// such a directory: emptying clears every inode's flags first (setflags may
// have set them). Symlinks, fifos and the like carry no flags.
void clear_flags_at(int dfd, const char* name) {
  int fd = openat(dfd, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  int v = 0;
  if (ioctl(fd, FS_IOC_GETFLAGS, &v) == 0 && v != 0) {
    v = 0;
    ioctl(fd, FS_IOC_SETFLAGS, &v);
  }
  close(fd);
}

bool empty_at(int dfd, dev_t dev, const std::string& where, std::string* err) {
  DIR* d = fdopendir(dfd);
  if (!d) {
    *err = fmt::format("cannot read {}: {}", where, strerror(errno));
    close(dfd);
    return false;
  }
  bool ok = true;
  std::vector<std::string> names;
  while (struct dirent* e = readdir(d))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names.push_back(e->d_name);
  for (const auto& n : names) {
    struct stat st;
    if (fstatat(dfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) continue;
    if ((S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) && st.st_dev == dev)
      clear_flags_at(dfd, n.c_str());
    if (S_ISDIR(st.st_mode)) {
      if (st.st_dev != dev) {
        // Never descend into another mount: emptying must stay inside the target.
        *err = fmt::format("{}/{} is a mount point; not emptying it", where, n);
        ok = false;
        continue;
      }
      int sub = openat(dfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0 || !empty_at(sub, dev, where + "/" + n, err)) {
        if (sub < 0) *err = fmt::format("cannot open {}/{}: {}", where, n, strerror(errno));
        ok = false;
        continue;
      }
      if (unlinkat(dfd, n.c_str(), AT_REMOVEDIR) < 0) {
        *err = fmt::format("cannot remove {}/{}: {}", where, n, strerror(errno));
        ok = false;
      }
    } else if (unlinkat(dfd, n.c_str(), 0) < 0) {
      *err = fmt::format("cannot remove {}/{}: {}", where, n, strerror(errno));
      ok = false;
    }
  }
  closedir(d);
  return ok;
}

}  // namespace

bool empty_dir(const std::string& dir, std::string* err) {
  int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  struct stat st;
  if (dfd < 0 || fstat(dfd, &st) < 0) {
    *err = fmt::format("cannot open {}: {}", dir, strerror(errno));
    if (dfd >= 0) close(dfd);
    return false;
  }
  clear_flags_at(dfd, ".");
  return empty_at(dfd, st.st_dev, dir, err);
}

}  // namespace fsdiff
