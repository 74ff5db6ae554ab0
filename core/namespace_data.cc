// Namespace, continued (namespace.h): open files, file data, xattrs and
// the whole file system's figures. namespace.cc has names and attributes.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "core/await.h"
#include "core/namespace.h"
#include "core/namespace_accounting.h"

namespace tmpfsd {
namespace {

// The namespaces tmpfs stores; a name that is only a prefix is EINVAL.
Status check_xattr_name(std::string_view name) {
  for (std::string_view prefix : {"user.", "trusted.", "security."}) {
    if (name.starts_with(prefix))
      return name.size() == prefix.size() ? Status{Errno{EINVAL}} : Status{};
  }
  return Errno{EOPNOTSUPP};
}

// tmpfs has POSIX ACLs; tmpfsd cannot (FUSE 7.38 without posix_acl keeps
// permission checks on the mode bits), so a file simply never has one.
bool is_acl_xattr(std::string_view name) {
  return name == "system.posix_acl_access" || name == "system.posix_acl_default";
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
  Result<size_t> r = [&]() -> Result<size_t> {
    Result<InodeRef> file = regular_file(ino, EINVAL);
    if (!file) return Errno{file.code()};
    InodeRef inode = std::move(*file);
    WriterLock data_lock(inode->data_mu);
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
    kill_priv_locked(*inode, who);
    return n;
  }();
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
  uint64_t size;
  {
    MutexLock lock(mu_);
    size = inode->size;
  }
  (void)size;
  if (mode & FALLOC_FL_PUNCH_HOLE) {
    // Pages preallocated past the end are punched too, as on tmpfs.
    inode->pages->punch_hole(off, len);
  } else if (auto s = inode->pages->allocate(off, len); !s) {
    return s;
  }
  MutexLock lock(mu_);
  if (!(mode & (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) && off + len > inode->size)
    inode->size = off + len;
  // tmpfs's fallocate starts with file_modified(): the times always move.
  inode->mtime = inode->ctime = stamp_locked(*inode);
  kill_priv_locked(*inode, who);
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
                                     size_t len) {
  // Through a bounce buffer a chunk at a time: the source's frames are only
  // pinned inside the read callback, and the destination may be the same file.
  constexpr size_t kChunk = 1 << 20;
  std::vector<std::byte> buf;
  size_t copied = 0;
  while (copied < len) {
    size_t want = std::min(kChunk, len - copied);
    Status rs;
    size_t got = 0;
    buf.resize(want);
    read_and_wait([&](FilePages::ReadDone d) { read(src, src_off + copied, want, std::move(d)); },
                  [&](Status s, std::span<const iovec> iov) {
                    rs = s;
                    if (!s) return;
                    for (const iovec& v : iov) {
                      std::memcpy(buf.data() + got, v.iov_base, v.iov_len);
                      got += v.iov_len;
                    }
                  });
    if (!rs) return copied ? Result<size_t>(copied) : Errno{rs.code()};
    if (got == 0) break;
    auto w = write(dst, dst_off + copied, std::span(buf.data(), got), false);
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

Status Namespace::setxattr(uint64_t ino, std::string_view name, std::string_view value, int flags) {
  if (auto s = check_xattr_name(name); !s) return s;
  if (name.size() > XATTR_NAME_MAX) return Errno{ERANGE};
  if (value.size() > kXattrSizeMax) return Errno{E2BIG};
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) return Errno{ENOENT};
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

Result<std::string> Namespace::getxattr(uint64_t ino, std::string_view name) {
  if (auto s = check_xattr_name(name); !s) return Errno{is_acl_xattr(name) ? ENODATA : s.code()};
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
  for (auto& [name, value] : inode->xattrs) {
    // As simple_xattr_list(): trusted.* only for CAP_SYS_ADMIN (root here).
    if (who.uid != 0 && name.starts_with("trusted.")) continue;
    out += name;
    out.push_back('\0');
  }
  return out;
}

Status Namespace::removexattr(uint64_t ino, std::string_view name) {
  if (auto s = check_xattr_name(name); !s) return is_acl_xattr(name) ? Status{Errno{ENODATA}} : s;
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) return Errno{ENOENT};
  auto it = inode->xattrs.find(std::string(name));
  if (it == inode->xattrs.end()) return Errno{ENODATA};
  if (is_user_xattr(name) && max_inodes_ != 0) ispace_free_ += xattr_space(name, it->second.size());
  inode->xattrs.erase(it);
  inode->ctime = stamp_locked(*inode);
  return {};
}

Result<WhereAnswer> Namespace::where(uint64_t ino, uint64_t first, std::span<PageRun> out) {
  InodeRef inode;
  {
    MutexLock lock(mu_);
    inode = get_locked(ino);
  }
  if (!inode) return Errno{ENOENT};
  if (inode->is_dir()) return Errno{EISDIR};
  if (!inode->is_reg()) return Errno{EINVAL};
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
