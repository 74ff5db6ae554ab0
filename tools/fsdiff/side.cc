// side.cc — applying one Op to one directory.
#include "side.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include <fmt/core.h>

namespace fsdiff {
namespace {

// A fault while touching a shared mapping (SIGBUS: a page the file system
// could not provide) becomes an outcome instead of killing the run.
sigjmp_buf g_fault_jmp;
volatile sig_atomic_t g_fault_armed = 0;

void on_sigbus(int) {
  if (g_fault_armed) siglongjmp(g_fault_jmp, 1);
  signal(SIGBUS, SIG_DFL);
  raise(SIGBUS);
}

void install_sigbus() {
  static bool done = false;
  if (done) return;
  struct sigaction sa = {};
  sa.sa_handler = on_sigbus;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
  done = true;
}

struct timespec to_ts(int64_t t) {
  if (t == kTimeNow) return {0, UTIME_NOW};
  if (t == kTimeOmit) return {0, UTIME_OMIT};
  return {t / 1000000000, t % 1000000000};
}

void set_result(Outcome* o, int64_t r) {
  o->ret = r < 0 ? -1 : r;
  o->err = r < 0 ? errno : 0;
}

// Returns the names in an xattr list, sorted, '\0'-separated: lists are sets.
std::vector<uint8_t> sorted_names(const char* buf, size_t n) {
  std::vector<std::string> names;
  for (size_t i = 0; i < n;) {
    size_t l = strnlen(buf + i, n - i);
    names.emplace_back(buf + i, l);
    i += l + 1;
  }
  std::sort(names.begin(), names.end());
  std::vector<uint8_t> out;
  for (const auto& s : names) {
    out.insert(out.end(), s.begin(), s.end());
    out.push_back(0);
  }
  return out;
}

}  // namespace

Side::~Side() {
  for (int& fd : fds_)
    if (fd >= 0) close(fd);
  if (rootfd_ >= 0) close(rootfd_);
}

bool Side::open(std::string* err) {
  rootfd_ = ::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (rootfd_ < 0) {
    *err = fmt::format("cannot open {}: {}", root_, strerror(errno));
    return false;
  }
  install_sigbus();
  return true;
}

namespace {

// `follow`: the inode a symlink at `rel` points to (setxattr's), not the link.
bool has_ia_flag(int rootfd, const std::string& rel, bool follow = false) {
  int fd =
      openat(rootfd, rel.c_str(), O_RDONLY | O_NONBLOCK | (follow ? 0 : O_NOFOLLOW) | O_CLOEXEC);
  if (fd < 0) return false;
  int v = 0;
  bool r = ioctl(fd, FS_IOC_GETFLAGS, &v) == 0 && (v & (FS_IMMUTABLE_FL | FS_APPEND_FL));
  close(fd);
  return r;
}

std::string parent_path(const std::string& p) {
  size_t s = p.rfind('/');
  return s == std::string::npos ? "." : p.substr(0, s);
}

// The directory the kernel looks a name up in: the parent path with a
// symlink in its last component followed (c/d with c -> a is a/d, in a).
std::string lookup_dir(const std::string& p) { return parent_path(p) + "/."; }

}  // namespace

Outcome Side::apply(const Op& op) {
  bool created = false;
  Outcome out = execute(op, &created);
  // linkat of an unlinked fd into an immutable directory: tmpfs says EPERM,
  // the FUSE client ENOENT (for the fd) without asking the daemon.
  bool link_case = op.kind == OpKind::Linkfd && (out.err == EPERM || out.err == ENOENT);
  // setxattr of an ACL on an immutable or append-only inode: tmpfs says
  // EPERM first; the FUSE client first checks the value (EINVAL) and that a
  // default ACL goes on a directory (EACCES).
  bool acl_case =
      op.kind == OpKind::Setacl && (out.err == EPERM || out.err == EINVAL || out.err == EACCES);
  // removexattr of a POSIX ACL there: tmpfs says EPERM; the FUSE client
  // answers a default ACL on a non-directory (0) or a missing one itself.
  bool acl_remove = op.kind == OpKind::Removexattr &&
                    (op.name == "system.posix_acl_access" || op.name == "system.posix_acl_default");
  if (ignore_.flagerrno && acl_remove && (out.ret == 0 || out.err == EPERM || out.err == ENODATA) &&
      has_ia_flag(rootfd_, op.path, true)) {
    out.ret = -1;
    out.err = EPERM;
    out.facts["flagerrno"] = "EPERM, or the FUSE client's own answer";
  }
  // copy_file_range into an immutable file: tmpfs says EPERM before the
  // VFS checks the sizes and the overlap; through FUSE the VFS answers
  // those itself (EOVERFLOW, EFBIG, EINVAL; 0 for a copy of nothing) and
  // never asks the daemon (known divergence 14).
  bool vfs_first = out.ret == 0 || out.err == EPERM || out.err == EINVAL || out.err == EFBIG ||
                   out.err == EOVERFLOW;
  if (ignore_.flagerrno && op.kind == OpKind::CopyRange && vfs_first && fds_[op.fd2] >= 0) {
    int v = 0;
    if (ioctl(fds_[op.fd2], FS_IOC_GETFLAGS, &v) == 0 && (v & FS_IMMUTABLE_FL)) {
      out.ret = -1;
      out.err = EPERM;
      out.facts["flagerrno"] = "EPERM, or 0 for a copy of nothing";
    }
  }
  link_case = link_case || acl_case;
  if (ignore_.flagerrno && out.ret < 0 &&
      (link_case ||
       ((out.err == EPERM || out.err == EISDIR || out.err == ENOTDIR) &&
        (op.kind == OpKind::Unlink || op.kind == OpKind::Rmdir || op.kind == OpKind::Rename)))) {
    std::vector<std::string> ps = {op.path, lookup_dir(op.path)};
    if (op.kind == OpKind::Linkfd) ps = {lookup_dir(op.path2)};
    if (acl_case) ps = {op.path};
    if (op.kind == OpKind::Rename) ps.insert(ps.end(), {op.path2, lookup_dir(op.path2)});
    for (const auto& p : ps) {
      if (has_ia_flag(rootfd_, p, acl_case)) {
        out.err = EPERM;  // tmpfs's answer; the type error is FUSE's VFS order
        out.facts["flagerrno"] =
            link_case ? "EPERM, or the FUSE client's own errno" : "EPERM, EISDIR or ENOTDIR";
        break;
      }
    }
  }
  observe(op, created, &out);
  return out;
}

Outcome Side::execute(const Op& op, bool* created) {
  Outcome o;
  const int fd = fds_[op.fd];
  errno = 0;
  switch (op.kind) {
    case OpKind::Open: {
      if (fds_[op.fd] >= 0) {
        close(fds_[op.fd]);
        fds_[op.fd] = -1;
      }
      struct stat st;
      bool existed = fstatat(rootfd_, op.path.c_str(), &st, 0) == 0 || errno != ENOENT;
      // O_NONBLOCK: opening a fifo must not wait for a peer that never comes.
      int r = openat(rootfd_, op.path.c_str(), int(op.flags) | O_NONBLOCK | O_CLOEXEC, op.mode);
      set_result(&o, r < 0 ? -1 : 0);
      if (r >= 0) {
        fds_[op.fd] = r;
        *created = !existed;
      }
      break;
    }
    case OpKind::Close:
      set_result(&o, close(fd));
      fds_[op.fd] = -1;
      break;
    case OpKind::Read:
    case OpKind::Pread: {
      std::vector<uint8_t> buf(size_t(op.len));
      ssize_t r = op.kind == OpKind::Read ? read(fd, buf.data(), buf.size())
                                          : pread(fd, buf.data(), buf.size(), op.off);
      set_result(&o, r);
      if (r >= 0) {
        buf.resize(size_t(r));
        o.data = std::move(buf);
        o.has_data = true;
      }
      break;
    }
    case OpKind::Write:
    case OpKind::Pwrite: {
      std::vector<uint8_t> buf(size_t(op.len));
      fill_pattern(op.dseed, buf.data(), buf.size());
      set_result(&o, op.kind == OpKind::Write ? write(fd, buf.data(), buf.size())
                                              : pwrite(fd, buf.data(), buf.size(), op.off));
      break;
    }
    case OpKind::Truncate:
      set_result(&o, truncate(full(op.path).c_str(), op.len));
      break;
    case OpKind::Ftruncate:
      set_result(&o, ftruncate(fd, op.len));
      break;
    case OpKind::Fallocate:
      set_result(&o, fallocate(fd, int(op.flags), op.off, op.len));
      break;
    case OpKind::Lseek:
      set_result(&o, lseek(fd, op.off, int(op.flags)));
      if (ignore_.dirseek) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
          lseek(fd, 0, SEEK_SET);  // both sides back to the start of the directory
          o = Outcome();
          break;
        }
      }
      if (op.flags == SEEK_DATA || op.flags == SEEK_HOLE) {
        struct stat st;
        if (ignore_.seekdata || (ignore_.mmaphole && fstat(fd, &st) == 0 && mmap_read(st.st_ino))) {
          // The answer is not compared, so it must not steer later reads and
          // writes either: leave the position somewhere both sides agree on.
          // (Also when one side failed: its position did not move.)
          lseek(fd, std::max<int64_t>(op.off, 0), SEEK_SET);
          o = Outcome();
        }
      }
      break;
    case OpKind::Rename:
      set_result(&o, renameat2(rootfd_, op.path.c_str(), rootfd_, op.path2.c_str(), op.flags));
      break;
    case OpKind::Link:
      set_result(&o, linkat(rootfd_, op.path.c_str(), rootfd_, op.path2.c_str(), 0));
      break;
    case OpKind::Unlink:
      set_result(&o, unlinkat(rootfd_, op.path.c_str(), 0));
      break;
    case OpKind::Mkdir:
      set_result(&o, mkdirat(rootfd_, op.path.c_str(), op.mode));
      *created = o.ret == 0;
      break;
    case OpKind::Rmdir:
      set_result(&o, unlinkat(rootfd_, op.path.c_str(), AT_REMOVEDIR));
      break;
    case OpKind::Symlink:
      set_result(&o, symlinkat(op.path2.c_str(), rootfd_, op.path.c_str()));
      *created = o.ret == 0;
      break;
    case OpKind::Readlink: {
      std::vector<uint8_t> buf(size_t(op.len));
      ssize_t r =
          readlinkat(rootfd_, op.path.c_str(), reinterpret_cast<char*>(buf.data()), buf.size());
      set_result(&o, r);
      if (r >= 0) {
        buf.resize(size_t(r));
        o.data = std::move(buf);
        o.has_data = true;
      }
      break;
    }
    case OpKind::Mkfifo:
      set_result(&o, mknodat(rootfd_, op.path.c_str(), S_IFIFO | op.mode, 0));
      *created = o.ret == 0;
      break;
    case OpKind::Chmod:
      set_result(&o, fchmodat(rootfd_, op.path.c_str(), op.mode, 0));
      break;
    case OpKind::Chown:
      set_result(&o, fchownat(rootfd_, op.path.c_str(), op.uid, op.gid, int(op.flags)));
      break;
    case OpKind::Utimens: {
      struct timespec ts[2] = {to_ts(op.atime), to_ts(op.mtime)};
      set_result(&o, utimensat(rootfd_, op.path.c_str(), ts, int(op.flags)));
      // Explicit times are the one case where absolute times must match.
      struct stat st;
      if (o.ret == 0 && fstatat(rootfd_, op.path.c_str(), &st, int(op.flags)) == 0) {
        if (op.atime >= 0)
          o.facts["utimens atime"] = fmt::format("{}.{:09}", st.st_atim.tv_sec, st.st_atim.tv_nsec);
        if (op.mtime >= 0)
          o.facts["utimens mtime"] = fmt::format("{}.{:09}", st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
      }
      break;
    }
    case OpKind::Setxattr: {
      std::vector<uint8_t> buf(size_t(op.len));
      fill_pattern(op.dseed, buf.data(), buf.size());
      set_result(&o, setxattr(full(op.path).c_str(), op.name.c_str(), buf.data(), buf.size(),
                              int(op.flags)));
      break;
    }
    case OpKind::Getxattr: {
      std::vector<uint8_t> buf(size_t(op.len));
      ssize_t r = getxattr(full(op.path).c_str(), op.name.c_str(), buf.data(), buf.size());
      set_result(&o, r);
      if (r >= 0 && op.len > 0) {
        buf.resize(size_t(r));
        o.data = std::move(buf);
        o.has_data = true;
      }
      break;
    }
    case OpKind::Listxattr: {
      std::vector<char> buf(size_t(op.len));
      ssize_t r = listxattr(full(op.path).c_str(), buf.data(), buf.size());
      set_result(&o, r);
      if (r >= 0 && op.len > 0) {
        o.data = sorted_names(buf.data(), size_t(r));
        o.has_data = true;
      }
      break;
    }
    case OpKind::Removexattr:
      set_result(&o, removexattr(full(op.path).c_str(), op.name.c_str()));
      break;
    case OpKind::MmapWrite:
    case OpKind::MmapRead: {
      // Only the part of [off, off+len) inside the file is touched: past EOF
      // a mapping faults with SIGBUS by design, on every file system.
      struct stat st;
      if (fstat(fd, &st) < 0) {
        set_result(&o, -1);
        break;
      }
      if (ignore_.mmaphole && op.kind == OpKind::MmapRead) mmap_read_.insert(st.st_ino);
      int64_t end = std::min<int64_t>(op.off + op.len, st.st_size);
      if (!S_ISREG(st.st_mode) || end <= op.off) {
        o.ret = 0;
        break;
      }
      // A shared mapping of an append-only file through a descriptor open
      // for writing: tmpfs's do_mmap says EACCES; the FUSE client never
      // sees S_APPEND and maps it, and what is written through the mapping
      // lands (known divergence 16). Under flagerrno neither side maps.
      int iflags = 0;
      if (ignore_.flagerrno && (fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDONLY &&
          ioctl(fd, FS_IOC_GETFLAGS, &iflags) == 0 && (iflags & FS_APPEND_FL)) {
        o.ret = -1;
        o.err = EACCES;
        o.facts["flagerrno"] = "EACCES without mapping (append-only)";
        break;
      }
      int64_t moff = op.off & ~int64_t(4095);
      size_t mlen = size_t(end - moff);
      bool w = op.kind == OpKind::MmapWrite;
      void* p = mmap(nullptr, mlen, w ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, moff);
      if (p == MAP_FAILED) {
        set_result(&o, -1);
        break;
      }
      uint8_t* base = static_cast<uint8_t*>(p) + (op.off - moff);
      size_t n = size_t(end - op.off);
      std::vector<uint8_t> buf(n);
      if (w) fill_pattern(op.dseed, buf.data(), n);
      if (sigsetjmp(g_fault_jmp, 1) == 0) {
        g_fault_armed = 1;
        if (w) {
          memcpy(base, buf.data(), n);
          o.ret = msync(p, mlen, MS_SYNC) == 0 ? int64_t(n) : -1;
          o.err = o.ret < 0 ? errno : 0;
        } else {
          memcpy(buf.data(), base, n);
          o.ret = int64_t(n);
          o.data = std::move(buf);
          o.has_data = true;
        }
      } else {
        o.ret = -1;
        o.err = EFAULT;
        o.facts["mmap"] = "SIGBUS";
      }
      g_fault_armed = 0;
      munmap(p, mlen);
      break;
    }
    case OpKind::Fsync:
      set_result(&o, fsync(fd));
      break;
    case OpKind::Fdatasync:
      set_result(&o, fdatasync(fd));
      break;
    case OpKind::CopyRange: {
      loff_t in = op.off, out = op.off2;
      set_result(&o, copy_file_range(fd, &in, fds_[op.fd2], &out, size_t(op.len), 0));
      break;
    }
    case OpKind::Statfs: {
      struct statfs sf;
      set_result(&o, statfs(full(op.path).c_str(), &sf));
      // Sizes and free counts differ between mounts; the name limit and
      // a sane block size are what a program may rely on.
      if (o.ret == 0)
        o.facts["statfs"] =
            fmt::format("namelen={} bsize_ok={}", sf.f_namelen, sf.f_bsize > 0 && sf.f_frsize > 0);
      break;
    }
    case OpKind::Stat:
    case OpKind::Fstat:
      o.ret = 0;  // the observation below is the outcome
      break;
    case OpKind::Readdir: {
      int dfd = openat(rootfd_, op.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      DIR* d = dfd < 0 ? nullptr : fdopendir(dfd);
      if (!d) {
        set_result(&o, -1);
        if (dfd >= 0) close(dfd);
        break;
      }
      std::vector<std::string> names;
      while (struct dirent* e = readdir(d)) {
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
          names.push_back(fmt::format("{}:{}", e->d_name, int(e->d_type)));
      }
      closedir(d);
      std::sort(names.begin(), names.end());
      std::string s;
      for (const auto& n : names) s += n + " ";
      o.ret = int64_t(names.size());
      o.data.assign(s.begin(), s.end());
      o.has_data = true;
      break;
    }
    case OpKind::Tmpfile: {
      if (fds_[op.fd] >= 0) {
        close(fds_[op.fd]);
        fds_[op.fd] = -1;
      }
      int r = openat(rootfd_, op.path.c_str(), int(op.flags) | O_TMPFILE | O_CLOEXEC, op.mode);
      set_result(&o, r < 0 ? -1 : 0);
      if (r >= 0) {
        fds_[op.fd] = r;
        *created = true;
      }
      break;
    }
    case OpKind::Linkfd:
      set_result(&o, linkat(fd, "", rootfd_, op.path2.c_str(), AT_EMPTY_PATH));
      break;
    case OpKind::Statx:
      set_result(&o, statx_btime(op.path, &o));
      break;
    case OpKind::Setacl: {
      std::vector<uint8_t> v = acl_value(op.dseed, int(op.len));
      set_result(&o, setxattr(full(op.path).c_str(), op.name.c_str(), v.data(), v.size(), 0));
      break;
    }
    case OpKind::Setflags:
    case OpKind::Getflags: {
      int f = openat(rootfd_, op.path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
      if (f < 0) {
        set_result(&o, -1);
        o.facts["flags open"] = errno_name(errno);
        break;
      }
      int v = int(op.flags);
      set_result(&o, ioctl(f, op.kind == OpKind::Setflags ? FS_IOC_SETFLAGS : FS_IOC_GETFLAGS, &v));
      if (o.ret == 0 && op.kind == OpKind::Getflags) o.facts["flags"] = fmt::format("{:#x}", v);
      close(f);
      break;
    }
    case OpKind::Count_:
      break;
  }
  return o;
}

}  // namespace fsdiff
