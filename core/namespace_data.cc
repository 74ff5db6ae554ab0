// Namespace, continued (namespace.h): open files, file data, xattrs and
// the whole file system's figures. namespace.cc has names and attributes.
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "core/acl.h"
#include "core/await.h"
#include "core/namespace.h"
#include "core/namespace_accounting.h"

namespace tmpfsd {
namespace {

// The namespaces tmpfs stores; a name that is only a prefix is EINVAL.
Status check_xattr_name(std::string_view name) {
  if (acl::is_acl_name(name)) return {};
  for (std::string_view prefix : {"user.", "trusted.", "security."}) {
    if (name.starts_with(prefix))
      return name.size() == prefix.size() ? Status{Errno{EINVAL}} : Status{};
  }
  return Errno{EOPNOTSUPP};
}

}  // namespace

// ---- open files -----------------------------------------------------------

Result<Attr> Namespace::open(uint64_t ino, int flags, const Caller& who) {
  InodeRef inode;
  {
    MutexLock lock(mu_);
    inode = get_locked(ino);
    if (!inode) return Errno{ENOENT};
    if (inode->is_dir() && (flags & O_ACCMODE) != O_RDONLY) return Errno{EISDIR};
    // may_open: an immutable inode opens read-only; an append-only one for
    // appending, never truncated.
    bool writes = (flags & O_ACCMODE) != O_RDONLY;
    if (inode->immutable() && (writes || (flags & O_TRUNC))) return Errno{EPERM};
    if (inode->append_only() && ((writes && !(flags & O_APPEND)) || (flags & O_TRUNC)))
      return Errno{EPERM};
    ++inode->opens;
  }
  // Linux truncates on O_TRUNC even with O_RDONLY (the kernel has already
  // checked write permission).
  if ((flags & O_TRUNC) && inode->is_reg()) {
    SetAttr trunc;
    trunc.size = 0;
    trunc.size_from_handle = true;
    auto r = setattr(ino, trunc, who);
    if (!r) {
      release(ino);
      return Errno{r.code()};
    }
    return r;
  }
  MutexLock lock(mu_);
  return attr_locked(*inode);
}

Result<Attr> Namespace::create(uint64_t parent, std::string_view name, mode_t mode, int /*flags*/,
                               Caller who) {
  MutexLock lock(mu_);
  auto r = make_node_locked(parent, name, S_IFREG | (mode & 07777), who,
                            [&](Inode& n) { n.pages = std::make_unique<FilePages>(cache_); });
  if (r) ++get_locked(r->ino)->opens;
  return r;
}

Result<Attr> Namespace::tmpfile(uint64_t parent, mode_t mode, int flags, Caller who) {
  MutexLock lock(mu_);
  auto dir = dir_locked(parent);
  if (!dir) return Errno{dir.code()};
  if ((*dir)->immutable()) return Errno{EPERM};
  if (auto s = reserve_inode_locked(); !s) return Errno{s.code()};
  InodeRef inode = new_inode_locked(**dir, S_IFREG | (mode & 07777), who);
  inode->pages = std::make_unique<FilePages>(cache_);
  inode->linkable = !(flags & O_EXCL);
  inode->lookups = 1;
  inode->opens = 1;
  Attr a = attr_locked(*inode);
  inodes_.emplace(inode->ino, std::move(inode));
  return a;
}

void Namespace::release(uint64_t ino) {
  InodeRef victim;  // freed after mu_ is dropped (maybe_free_locked)
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) return;
  if (inode->opens == 0) {
    spdlog::critical("release of inode {} with no open handle", ino);
    std::abort();
  }
  --inode->opens;
  maybe_free_locked(*inode, victim);
}

Status Namespace::opendir(uint64_t ino) {
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) return Errno{ENOENT};
  if (!inode->is_dir()) return Errno{ENOTDIR};
  ++inode->opens;
  return {};
}

Status Namespace::readdir(uint64_t ino, uint64_t offset, bool plus, uint64_t* pass_end,
                          const std::function<bool(const DirEntryView&, const Attr*)>& sink) {
  MutexLock lock(mu_);
  InodeRef dir = get_locked(ino);
  if (!dir) return Errno{ENOENT};
  if (!dir->is_dir()) return Errno{ENOTDIR};
  if (offset == 0 || *pass_end == 0) *pass_end = dir->dir->next_cookie();
  if (offset < 1) {
    if (!sink({".", dir->ino, S_IFDIR, 1}, nullptr)) return {};
    offset = 1;
  }
  if (offset < 2) {
    if (!sink({"..", dir->dir->parent, S_IFDIR, 2}, nullptr)) return {};
    offset = 2;
  }
  for (auto it = dir->dir->after(offset); it != dir->dir->end() && it->first < *pass_end; ++it) {
    InodeRef child = get_locked(it->second.ino);
    if (!child) continue;
    DirEntryView view{it->second.name, child->ino, child->mode, it->first};
    if (plus) {
      Attr a = attr_locked(*child);
      if (!sink(view, &a)) break;
      ++child->lookups;
    } else if (!sink(view, nullptr)) {
      break;
    }
  }
  touch_atime_locked(*dir);
  return {};
}

// ---- data ------------------------------------------------------------------

// The regular file `ino` for a data operation: ENOENT when it is gone,
// EISDIR for a directory, `other` for any other kind (read and write say
// EINVAL, fallocate ENODEV, as tmpfs).
Result<Namespace::InodeRef> Namespace::regular_file(uint64_t ino, int other) {
  InodeRef inode;
  {
    MutexLock lock(mu_);
    inode = get_locked(ino);
  }
  if (!inode) return Errno{ENOENT};
  if (inode->is_dir()) return Errno{EISDIR};
  if (!inode->is_reg()) return Errno{other};
  return inode;
}

void Namespace::read(uint64_t ino, uint64_t off, size_t len, FilePages::ReadDone done) {
  Result<InodeRef> file = regular_file(ino, EINVAL);
  if (!file) return done(Errno{file.code()}, {});
  InodeRef inode = std::move(*file);
  ReaderLock data_lock(inode->data_mu);
  uint64_t size;
  {
    MutexLock lock(mu_);
    size = inode->size;
    // relatime, as tmpfs mounts by default
    touch_atime_locked(*inode);
  }
  if (off >= size) return done(Status{}, {});
  uint64_t n = std::min<uint64_t>(len, size - off);
  inode->pages->read(off, n, std::move(done));
}

Result<size_t> Namespace::write(uint64_t ino, uint64_t off, std::span<const std::byte> data,
                                bool append, const Caller& who) {
  return await_callback<Result<size_t>>(
      [&](auto done) { write_async(ino, off, data, append, who, done); });
}

void Namespace::write_async(uint64_t ino, uint64_t off, std::span<const std::byte> data,
                            bool append, const Caller& who, WriteReply done) {
  // Everything up to the pages' answer, under the inode's data lock; the
  // reply after it is dropped.
  FilePages::PendingWrite* pending = nullptr;
  bool killed = false;  // set-ID bits cleared (attrs_changed, before the reply)
  Result<size_t> r = [&]() -> Result<size_t> {
    Result<InodeRef> file = regular_file(ino, EINVAL);
    if (!file) return Errno{file.code()};
    InodeRef inode = std::move(*file);
    WriterLock data_lock(inode->data_mu);
    // As on tmpfs, chattr +i or +a leaves descriptors opened before it
    // writing where they write; open() refuses new ones.
    if (append) {
      MutexLock lock(mu_);
      off = inode->size;
    }
    if (off > kMaxFileSize) return Errno{EFBIG};
    size_t n = data.size();
    if (n > kMaxFileSize - off) {
      n = kMaxFileSize - off;  // a short write up to the limit, as the kernel does
      if (n == 0) return Errno{EFBIG};
    }
    if (n == 0) return size_t{0};
    auto w = inode->pages->start_write(off, data.first(n));
    if (!w) return Errno{w.code()};
    pending = *w;
    MutexLock lock(mu_);
    inode->size = std::max<uint64_t>(inode->size, off + n);
    inode->mtime = inode->ctime = stamp_locked(*inode);
    killed = kill_priv_locked(*inode, who);
    return n;
  }();
  if (killed) attrs_changed(ino);
  if (!pending) return done(std::move(r));
  FilePages::when_written(pending, [n = *r, done = std::move(done)](Status s) {
    if (s) {
      done(n);
    } else {
      done(Errno{s.code()});
    }
  });
}

Status Namespace::fallocate(uint64_t ino, int mode, uint64_t off, uint64_t len, const Caller& who) {
  Result<InodeRef> file = regular_file(ino, ENODEV);
  if (!file) return Errno{file.code()};
  InodeRef inode = std::move(*file);
  if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) return Errno{EOPNOTSUPP};
  if ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE)) return Errno{EOPNOTSUPP};
  if (len == 0) return Errno{EINVAL};
  if (off > kMaxFileSize || len > kMaxFileSize - off) return Errno{EFBIG};
  WriterLock data_lock(inode->data_mu);
  {
    MutexLock lock(mu_);
    // vfs_fallocate: nothing on an immutable file, only KEEP_SIZE
    // preallocation on an append-only one.
    if (inode->immutable() || (inode->append_only() && (mode & ~FALLOC_FL_KEEP_SIZE)))
      return Errno{EPERM};
  }
  if (mode & FALLOC_FL_PUNCH_HOLE) {
    // Pages preallocated past the end are punched too, as on tmpfs.
    inode->pages->punch_hole(off, len);
  } else if (auto s = inode->pages->allocate(off, len); !s) {
    return s;
  }
  bool killed;
  {
    MutexLock lock(mu_);
    if (!(mode & (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) && off + len > inode->size)
      inode->size = off + len;
    // tmpfs's fallocate starts with file_modified(): the times always move,
    // and set-ID bits go as on a write (the kernel sends no kill flag).
    inode->mtime = inode->ctime = stamp_locked(*inode);
    killed = kill_priv_locked(*inode, who);
  }
  if (killed) attrs_changed(ino);
  return {};
}

Result<uint64_t> Namespace::lseek(uint64_t ino, uint64_t off, int whence) {
  InodeRef inode;
  {
    MutexLock lock(mu_);
    inode = get_locked(ino);
  }
  if (!inode) return Errno{ENOENT};
  if (!inode->is_reg()) return Errno{EINVAL};
  ReaderLock data_lock(inode->data_mu);
  uint64_t size;
  {
    MutexLock lock(mu_);
    size = inode->size;
  }
  if (off >= size) return Errno{ENXIO};
  std::optional<uint64_t> r =
      whence == SEEK_DATA ? inode->pages->seek_data(off, size) : inode->pages->seek_hole(off, size);
  if (!r) return Errno{ENXIO};
  return *r;
}

Result<size_t> Namespace::copy_range(uint64_t src, uint64_t src_off, uint64_t dst, uint64_t dst_off,
                                     size_t len, const Caller& who) {
  {
    MutexLock lock(mu_);
    InodeRef out = get_locked(dst);
    if (!out) return Errno{ENOENT};
    // generic_copy_file_checks: an immutable destination, even through a
    // descriptor opened before chattr +i (which write() may still use).
    if (out->immutable()) return Errno{EPERM};
  }
  // Through a bounce buffer a chunk at a time: the source's frames are only
  // pinned inside the read callback, and the destination may be the same file.
  constexpr size_t kChunk = 1 << 20;
  std::vector<std::byte> buf;
  size_t copied = 0;
  while (copied < len) {
    size_t want = std::min(kChunk, len - copied);
    size_t got = 0;
    buf.resize(want);
    const Status rs = read_into(
        [&](FilePages::ReadDone d) { read(src, src_off + copied, want, std::move(d)); }, buf, &got);
    if (!rs) return copied ? Result<size_t>(copied) : Errno{rs.code()};
    if (got == 0) break;
    // A write by `who`: set-ID bits go as on write(2) (the kernel's
    // file_modified() leaves them to us and sends no kill flag).
    auto w = write(dst, dst_off + copied, std::span(buf.data(), got), false, who);
    if (!w) return copied ? Result<size_t>(copied) : Errno{w.code()};
    copied += *w;
    if (*w < got) break;
  }
  // The kernel's copy (splice) marks the source accessed after the data has
  // moved: for a copy within one file, after its mtime moved.
  MutexLock lock(mu_);
  if (InodeRef in = get_locked(src)) touch_atime_locked(*in);
  return copied;
}

// ---- xattrs ---------------------------------------------------------------

Status Namespace::setxattr(uint64_t ino, std::string_view name, std::string_view value, int flags,
                           const Caller& who) {
  if (auto s = check_xattr_name(name); !s) return s;
  if (name.size() > XATTR_NAME_MAX) return Errno{ERANGE};
  if (value.size() > kXattrSizeMax) return Errno{E2BIG};
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) return Errno{ENOENT};
  if (inode->immutable_or_append()) return Errno{EPERM};  // xattr_permission
  if (acl::is_acl_name(name)) return set_acl_locked(*inode, name, value, who);
  auto it = inode->xattrs.find(std::string(name));
  if ((flags & XATTR_CREATE) && it != inode->xattrs.end()) return Errno{EEXIST};
  if ((flags & XATTR_REPLACE) && it == inode->xattrs.end()) return Errno{ENODATA};
  if (is_user_xattr(name) && max_inodes_ != 0) {
    uint64_t need = xattr_space(name, value.size());
    uint64_t freed = it == inode->xattrs.end() ? 0 : xattr_space(name, it->second.size());
    if (need > ispace_free_ + freed) return Errno{ENOSPC};
    ispace_free_ = ispace_free_ + freed - need;
  }
  if (it == inode->xattrs.end())
    inode->xattrs.emplace(std::string(name), std::string(value));
  else
    it->second.assign(value);
  inode->ctime = stamp_locked(*inode);
  return {};
}

// posix_acl_update_mode for an access ACL; a default ACL is kept as given
// (the VFS allows one on directories only). An empty value removes the ACL.
Status Namespace::set_acl_locked(Inode& inode, std::string_view name, std::string_view value,
                                 const Caller& who) {
  std::optional<acl::Acl> a;
  if (!value.empty()) {
    a = acl::parse(value);
    if (!a) return Errno{EINVAL};
  }
  std::string key(name);
  if (name == acl::kAccess) {
    mode_t mode = inode.mode;
    if (a && !acl::to_mode(*a, &mode)) a.reset();  // the mode says it all
    if ((mode & S_ISGID) && !who.member_of(inode.gid) && !who.capable(CAP_FSETID))
      mode &= ~mode_t(S_ISGID);
    inode.mode = mode;
  }
  if (a)
    inode.xattrs[key] = acl::format(*a);
  else
    inode.xattrs.erase(key);
  inode.ctime = stamp_locked(inode);
  return {};
}

Result<std::string> Namespace::getxattr(uint64_t ino, std::string_view name) {
  if (auto s = check_xattr_name(name); !s) return Errno{s.code()};
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) return Errno{ENOENT};
  auto it = inode->xattrs.find(std::string(name));
  if (it == inode->xattrs.end()) return Errno{ENODATA};
  return it->second;
}

Result<std::string> Namespace::listxattr(uint64_t ino, const Caller& who) {
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) return Errno{ENOENT};
  std::string out;
  // As simple_xattr_list(): the ACLs first, then the others; trusted.* only
  // for CAP_SYS_ADMIN (root here).
  for (std::string_view name : {acl::kAccess, acl::kDefault}) {
    if (inode->xattrs.contains(std::string(name))) {
      out += name;
      out.push_back('\0');
    }
  }
  for (auto& [name, value] : inode->xattrs) {
    if (acl::is_acl_name(name)) continue;
    if (who.uid != 0 && name.starts_with("trusted.")) continue;
    out += name;
    out.push_back('\0');
  }
  return out;
}

Status Namespace::removexattr(uint64_t ino, std::string_view name, const Caller& who) {
  if (auto s = check_xattr_name(name); !s) return s;
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) return Errno{ENOENT};
  if (inode->immutable_or_append()) return Errno{EPERM};  // xattr_permission
  // Removing an ACL is setting none (tmpfs: success even when there was none).
  if (acl::is_acl_name(name)) return set_acl_locked(*inode, name, {}, who);
  auto it = inode->xattrs.find(std::string(name));
  if (it == inode->xattrs.end()) return Errno{ENODATA};
  if (is_user_xattr(name) && max_inodes_ != 0) ispace_free_ += xattr_space(name, it->second.size());
  inode->xattrs.erase(it);
  inode->ctime = stamp_locked(*inode);
  return {};
}

// ---- inode flags (chattr) -----------------------------------------------------

Result<uint32_t> Namespace::get_flags(uint64_t ino) {
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) return Errno{ENOENT};
  return inode->iflags;
}

Status Namespace::set_flags(uint64_t ino, uint32_t flags) {
  if (flags & ~kInodeFlags) return Errno{EOPNOTSUPP};  // shmem_fileattr_set
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) return Errno{ENOENT};
  inode->iflags = flags;
  inode->ctime = stamp_locked(*inode);
  return {};
}

Result<WhereAnswer> Namespace::where(uint64_t ino, uint64_t first, std::span<PageRun> out) {
  Result<InodeRef> file = regular_file(ino, EINVAL);
  if (!file) return Errno{file.code()};
  InodeRef inode = std::move(*file);
  ReaderLock data_lock(inode->data_mu);
  WhereAnswer a;
  {
    MutexLock lock(mu_);
    a.size = inode->size;
  }
  const uint64_t page = cache_.page_size();
  a.end = std::max(a.size / page + (a.size % page != 0), inode->pages->end_present());
  a.next = inode->pages->where(first, a.end, out, &a.count);
  return a;
}

// ---- the whole file system ----------------------------------------------------

Status Namespace::set_limits(const Limits& limits, std::string* why) {
  MutexLock lock(mu_);  // no inode comes or goes meanwhile
  // nr_inodes= first, checked only: size= may still refuse.
  uint64_t ispace_used = 0;
  if (limits.max_inodes) {
    const uint64_t n = *limits.max_inodes;
    ispace_used = max_inodes_ * kInodeSpace - ispace_free_;
    if (n != 0 && max_inodes_ == 0) {
      *why = "Cannot retroactively limit inodes";
      return Errno{EINVAL};
    }
    if (n != 0 && (n > UINT64_MAX / kInodeSpace || n * kInodeSpace < ispace_used)) {
      *why = n > UINT64_MAX / kInodeSpace ? "Too many inodes" : "Too few inodes for current use";
      return Errno{EINVAL};
    }
  }
  if (limits.max_pages) {
    switch (cache_.set_max_pages(*limits.max_pages)) {
      case PageCache::Resize::kDone:
        break;
      case PageCache::Resize::kTooSmall:
        *why = "Too small a size for current use";
        return Errno{EINVAL};
      case PageCache::Resize::kUnlimited:
        *why = "Cannot retroactively limit size";
        return Errno{EINVAL};
    }
  }
  if (limits.max_inodes) {
    max_inodes_ = *limits.max_inodes;
    // Unlimited: the budget is not kept (as on tmpfs), and cannot come back.
    ispace_free_ = max_inodes_ == 0 ? 0 : max_inodes_ * kInodeSpace - ispace_used;
  }
  return {};
}

Limits Namespace::limits() {
  const uint64_t max_pages = cache_.stats().max_pages;  // as statfs(): not under mu_
  MutexLock lock(mu_);
  return Limits{max_pages, max_inodes_};
}

StatFs Namespace::statfs() {
  PageCacheStats ps = cache_.stats();
  StatFs s{};
  s.block_size = ps.page_size;
  s.blocks = ps.max_pages;
  s.blocks_free = ps.max_pages > ps.pages_allocated ? ps.max_pages - ps.pages_allocated : 0;
  MutexLock lock(mu_);
  s.files = max_inodes_;
  s.files_free = max_inodes_ ? ispace_free_ / kInodeSpace : 0;
  s.name_max = kNameMax;
  return s;
}

size_t Namespace::inode_count() {
  MutexLock lock(mu_);
  return inodes_.size();
}

}  // namespace tmpfsd
