// Namespace: see namespace.h. tmpfs (mm/shmem.c) is the model for every
// number here: directory sizes grow by 20 bytes an entry (BOGO_DIRENT_SIZE),
// each inode and each extra hard link costs one inode of nr_inodes=, and
// user.* xattrs share that budget at 1 KiB an inode (BOGO_INODE_SIZE).
#include "core/namespace.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "core/acl.h"
#include "core/await.h"
#include "core/namespace_accounting.h"

namespace tmpfsd {
namespace {

constexpr uint64_t kDirentSize = 20;  // tmpfs's BOGO_DIRENT_SIZE

// tmpfs stamps changes with the coarse clock (a tick of a few ms), so that
// changes close together share one time: see Namespace::stamp_locked.
timespec now() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return ts;
}

timespec fine_now() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return ts;
}

bool before_or_equal(const timespec& a, const timespec& b) {
  return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec <= b.tv_nsec);
}

Status check_name(std::string_view name) {
  if (name.size() > kNameMax) return Errno{ENAMETOOLONG};
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos)
    return Errno{EINVAL};
  return {};
}

}  // namespace

Namespace::Namespace(const NamespaceConfig& config, PageCache& cache)
    : config_(config), cache_(cache) {
  MutexLock lock(mu_);  // for the analysis: nothing else can see it yet
  generations_.seed(std::random_device{}());
  max_inodes_ = config_.max_inodes;
  ispace_free_ = max_inodes_ * kInodeSpace;
  auto root = std::make_shared<Inode>(kRootIno, 0, S_IFDIR | (config_.root_mode & 07777));
  root->nlink = 2;
  root->uid = config_.root_uid;
  root->gid = config_.root_gid;
  root->size = 2 * kDirentSize;
  root->atime = root->mtime = root->ctime = root->btime = now();
  root->dir = std::make_unique<Directory>();
  root->dir->parent = kRootIno;
  root->lookups = 1;  // the kernel never forgets the root
  (void)reserve_inode_locked();
  inodes_.emplace(kRootIno, std::move(root));
}

Namespace::~Namespace() = default;

// The inode `name` in directory `dir` names, or null.
Namespace::InodeRef Namespace::child_locked(const Inode& dir, std::string_view name) {
  return get_locked(dir.dir->find(name));
}

Namespace::InodeRef Namespace::get_locked(uint64_t ino) {
  auto it = inodes_.find(ino);
  return it == inodes_.end() ? nullptr : it->second;
}

Namespace::InodeRef Namespace::make_inode_locked(mode_t mode) {
  uint32_t generation = uint32_t(generations_());
  return std::make_shared<Inode>(next_ino_++, generation, mode);
}

Result<Namespace::InodeRef> Namespace::dir_locked(uint64_t ino) {
  InodeRef inode = get_locked(ino);
  if (!inode) return Errno{ENOENT};
  if (!inode->is_dir()) return Errno{ENOTDIR};
  // An unlinked directory that is still open: nothing may be created in it.
  if (inode->nlink == 0) return Errno{ENOENT};
  return inode;
}

Attr Namespace::attr_locked(const Inode& inode) const {
  Attr a;
  a.ino = inode.ino;
  a.generation = inode.generation;
  a.mode = inode.mode;
  a.nlink = inode.nlink;
  a.uid = inode.uid;
  a.gid = inode.gid;
  a.rdev = inode.rdev;
  a.size = inode.size;
  if (inode.pages)
    a.blocks = inode.pages->pages() * (cache_.page_size() / 512);
  else if (inode.is_symlink() && inode.target.size() >= kShortSymlinkLen)
    a.blocks = cache_.page_size() / 512;  // tmpfs keeps a long target in a page
  a.atime = inode.atime;
  a.mtime = inode.mtime;
  a.ctime = inode.ctime;
  a.btime = inode.btime;
  a.iflags = inode.iflags;
  return a;
}

Status Namespace::reserve_inode_locked() {
  if (max_inodes_ == 0) {
    ++inodes_used_;
    return {};
  }
  if (ispace_free_ < kInodeSpace) return Errno{ENOSPC};
  ispace_free_ -= kInodeSpace;
  ++inodes_used_;
  return {};
}

void Namespace::release_inode_locked() {
  --inodes_used_;
  if (max_inodes_ != 0) ispace_free_ += kInodeSpace;
}

void Namespace::maybe_free_locked(Inode& inode, InodeRef& victim) {
  if (inode.nlink != 0 || inode.lookups != 0 || inode.opens != 0) return;
  if (inode.ino == kRootIno) return;
  for (auto& [name, value] : inode.xattrs)
    if (is_user_xattr(name) && max_inodes_ != 0) ispace_free_ += xattr_space(name, value.size());
  release_inode_locked();
  // The caller's `victim` keeps the Inode alive until mu_ is dropped:
  // ~FilePages frees pages and waits for pins, never under mu_.
  auto it = inodes_.find(inode.ino);
  victim = std::move(it->second);
  inodes_.erase(it);
}

// ---- lookup and attributes -------------------------------------------------

Result<Attr> Namespace::lookup(uint64_t parent, std::string_view name) {
  if (name.size() > kNameMax) return Errno{ENAMETOOLONG};
  MutexLock lock(mu_);
  InodeRef node = get_locked(parent);
  if (!node) return Errno{ESTALE};
  InodeRef child;
  if (name == "." || name == "..") {
    // A file handle's node, or the parent of a directory the kernel is
    // reconnecting to the tree. A node with no name left is gone for a
    // handle, even while an open file keeps it (the kernel, which holds
    // it then, does not ask).
    if (node->nlink == 0) return Errno{ESTALE};
    if (name == "..") {
      if (!node->is_dir()) return Errno{ENOTDIR};
      child = get_locked(node->dir->parent);
    } else {
      child = node;
    }
    if (!child) return Errno{ESTALE};
  } else {
    auto dir = dir_locked(parent);
    if (!dir) return Errno{dir.code()};
    child = child_locked(**dir, name);
  }
  if (!child) return Errno{ENOENT};
  ++child->lookups;
  return attr_locked(*child);
}

void Namespace::forget(uint64_t ino, uint64_t nlookup) {
  InodeRef victim;  // freed after mu_ is dropped (maybe_free_locked)
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) {
    spdlog::critical("forget of unknown inode {}", ino);
    std::abort();
  }
  if (inode->ino == kRootIno) return;
  if (nlookup > inode->lookups) {
    spdlog::critical("lookup count underflow on inode {}: {} < {}", ino, inode->lookups, nlookup);
    std::abort();
  }
  inode->lookups -= nlookup;
  maybe_free_locked(*inode, victim);
}

Result<Attr> Namespace::getattr(uint64_t ino) {
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) return Errno{ENOENT};
  inode->ctime_queried = true;
  return attr_locked(*inode);
}

Result<Attr> Namespace::setattr(uint64_t ino, const SetAttr& change, const Caller& who) {
  InodeRef inode;
  {
    MutexLock lock(mu_);
    inode = get_locked(ino);
    if (!inode) return Errno{ENOENT};
  }
  // A size change holds data_mu so that it cannot interleave with a write.
  std::unique_lock<SharedMutex> data_lock;  // conditional: not analysed
  if (change.size) {
    if (inode->is_dir()) return Errno{EISDIR};
    if (!inode->is_reg()) return Errno{EINVAL};
    if (*change.size > kMaxFileSize) return Errno{EFBIG};
    data_lock = std::unique_lock(inode->data_mu);
  }
  UniqueLock lock(mu_);
  // notify_change, do_truncate and utimes(NULL) on an immutable or
  // append-only inode.
  // ftruncate() of a descriptor opened before chattr +i still works there.
  if (inode->immutable_or_append() &&
      (change.mode || change.uid || change.gid || change.atime || change.mtime))
    return Errno{EPERM};
  if (change.size && (inode->append_only() || (inode->immutable() && !change.size_from_handle)))
    return Errno{EPERM};
  // Times set to now: never on an immutable inode; on an append-only one
  // only both at once (utimes(NULL), "touch"), as tmpfs answers.
  if (inode->immutable() && (change.atime_now || change.mtime_now)) return Errno{EPERM};
  if (inode->append_only() && change.atime_now != change.mtime_now) return Errno{EPERM};
  // tmpfs's times on truncate: ftruncate and O_TRUNC always move them;
  // truncate(2) when the size changes, or when it keeps the size of a file
  // that has pages (shmem_setattr goes through shmem_truncate_range, which
  // stamps them).
  bool size_moves_times = false;
  std::optional<uint64_t> truncate_from;  // the old size, when the size is set
  if (change.size) {
    uint64_t old_size = inode->size;
    size_moves_times = change.size_from_handle || *change.size != old_size ||
                       (*change.size < old_size || inode->pages->pages() > 0);
  }
  bool other = change.mode || change.uid || change.gid || change.atime || change.atime_now ||
               change.mtime || change.mtime_now || change.ctime;
  // A setattr that changes nothing is chown(f, -1, -1), or the kernel's
  // file_remove_privs before a write to a set-ID file (the FUSE client
  // strips the kill flags and the mode change they imply): tmpfs moves
  // ctime, and clears set-ID bits as chown does. The two look alike here.
  // (With the writeback cache chown(-1, -1) brings the kernel's own ctime,
  // which no other request brings alone.) From a caller who may not chmod
  // the file (not its owner, no CAP_FOWNER), tmpfs's chown(-1, -1) is EPERM
  // and changes nothing; so nothing changes here either (the write that
  // may follow clears the bits and moves the times), and the answer is 0
  // (known divergence 15).
  const bool nothing = !change.size && !change.mode && !change.uid && !change.gid &&
                       !change.atime && !change.atime_now && !change.mtime && !change.mtime_now;
  const bool setid = !inode->is_dir() && (inode->mode & (S_ISUID | S_ISGID));
  if (nothing && setid && who.uid != inode->uid && !who.capable(CAP_FOWNER))
    return attr_locked(*inode);
  const bool chown = change.uid || change.gid || nothing;
  if (nothing) other = true;
  if (change.size && !size_moves_times && !other) return attr_locked(*inode);
  timespec t = stamp_locked(*inode);
  bool killed = false;  // set-ID bits cleared: the kernel's cached mode is stale
  if (change.size) {
    uint64_t old_size = inode->size;
    truncate_from = old_size;
    inode->size = *change.size;
    if (size_moves_times) inode->mtime = t;
    killed = kill_priv_locked(*inode, who);
  }
  if (change.mode) {
    inode->mode = (inode->mode & S_IFMT) | (*change.mode & 07777);
    // posix_acl_chmod: the access ACL follows the new mode.
    auto it = inode->xattrs.find(std::string(acl::kAccess));
    if (it != inode->xattrs.end()) {
      if (auto a = acl::parse(it->second)) {
        acl::chmod(*a, inode->mode);
        it->second = acl::format(*a);
      }
    }
  }
  if (chown && !change.mode) killed = chown_kill_locked(*inode, change.gid, who) || killed;
  if (change.uid) inode->uid = *change.uid;
  if (change.gid) inode->gid = *change.gid;
  if (change.atime_now)
    inode->atime = t;
  else if (change.atime)
    inode->atime = *change.atime;
  if (change.mtime_now)
    inode->mtime = t;
  else if (change.mtime)
    inode->mtime = *change.mtime;
  if (change.ctime)
    inode->ctime = *change.ctime;
  else if (size_moves_times || other)
    inode->ctime = t;
  if (truncate_from) {
    // Shrinking or keeping the size drops every page past it, including
    // pages fallocated with KEEP_SIZE beyond the end (shmem_setattr). Not
    // under mu_ (LOCKING.md): it may fault a swapped tail page in and
    // reclaim. data_mu, held exclusive, keeps every reader and writer of
    // the pages out until it is done; getattr meanwhile may see the new
    // size with the old page count.
    lock.unlock();
    inode->pages->truncate(*truncate_from, *change.size);
    lock.lock();
  }
  Attr a = attr_locked(*inode);
  lock.unlock();
  if (data_lock.owns_lock()) data_lock.unlock();
  // The reply carries the new mode, but an O_TRUNC open's does not.
  if (killed) attrs_changed(ino);
  return a;
}

// ---- creating and removing names --------------------------------------------

void Namespace::add_link_locked(Inode& dir, std::string_view name, Inode& child) {
  dir.dir->insert(name, child.ino);
  dir.size += kDirentSize;
  ++child.nlink;
  if (child.is_dir()) {
    ++dir.nlink;  // the child's ".."
    child.dir->parent = dir.ino;
  }
}

void Namespace::drop_name_locked(Inode& dir, std::string_view name, Inode& child) {
  dir.dir->erase(name);
  dir.size -= kDirentSize;
  if (child.is_dir()) {
    --dir.nlink;
    child.nlink = 0;  // its "." goes with its name
  } else {
    if (child.nlink > 1) release_inode_locked();  // an extra hard link's inode
    --child.nlink;
  }
}

Namespace::InodeRef Namespace::new_inode_locked(const Inode& dir, mode_t mode, const Caller& who) {
  InodeRef inode = make_inode_locked(mode);
  inode->uid = who.uid;
  inode->gid = who.gid;
  // A setgid directory passes its group on, and its setgid bit to subdirectories.
  if (dir.mode & S_ISGID) {
    inode->gid = dir.gid;
    if (S_ISDIR(mode)) inode->mode |= S_ISGID;
  }
  timespec t = now();
  if (before_or_equal(t, time_floor_)) t = time_floor_;
  inode->atime = inode->mtime = inode->ctime = inode->btime = t;
  // tmpfs's SHMEM_FL_INHERITED: nodump and noatime pass from a directory to
  // what is made in it.
  inode->iflags = dir.iflags & (FS_NODUMP_FL | FS_NOATIME_FL);
  // posix_acl_create: the directory's default ACL, else the umask (when the
  // kernel left it to us). Symlinks take neither.
  if (S_ISLNK(mode)) return inode;
  auto def = dir.xattrs.find(std::string(acl::kDefault));
  std::optional<acl::Acl> inherited;
  if (def != dir.xattrs.end()) inherited = acl::parse(def->second);
  if (inherited) {
    mode_t m = inode->mode;
    if (acl::create_masq(*inherited, &m))
      inode->xattrs.emplace(acl::kAccess, acl::format(*inherited));
    inode->mode = m;
    if (S_ISDIR(mode)) inode->xattrs.emplace(acl::kDefault, def->second);
  } else if (who.umask) {
    inode->mode &= ~(*who.umask & 0777);
  }
  return inode;
}

Result<Attr> Namespace::make_node_locked(uint64_t parent, std::string_view name, mode_t mode,
                                         Caller who, const std::function<void(Inode&)>& init) {
  if (auto s = check_name(name); !s) return Errno{s.code()};
  auto dir = dir_locked(parent);
  if (!dir) return Errno{dir.code()};
  Inode& d = **dir;
  if (d.dir->find(name) != 0) return Errno{EEXIST};
  if (d.immutable()) return Errno{EPERM};
  if (auto s = reserve_inode_locked(); !s) return Errno{s.code()};

  InodeRef inode = new_inode_locked(d, mode, who);
  init(*inode);
  add_link_locked(d, name, *inode);
  d.mtime = d.ctime = stamp_locked(d);
  inode->lookups = 1;
  Attr a = attr_locked(*inode);
  inodes_.emplace(inode->ino, std::move(inode));
  return a;
}

Result<Attr> Namespace::mknod(uint64_t parent, std::string_view name, mode_t mode, dev_t rdev,
                              Caller who) {
  mode_t type = mode & S_IFMT;
  if (type == 0)
    mode |= S_IFREG;
  else if (type != S_IFREG && type != S_IFIFO && type != S_IFSOCK && type != S_IFCHR &&
           type != S_IFBLK)
    return Errno{EINVAL};
  MutexLock lock(mu_);
  return make_node_locked(parent, name, mode, who, [&](Inode& n) {
    if (S_ISREG(n.mode)) n.pages = std::make_unique<FilePages>(cache_);
    if (S_ISCHR(n.mode) || S_ISBLK(n.mode)) n.rdev = rdev;
  });
}

Result<Attr> Namespace::mkdir(uint64_t parent, std::string_view name, mode_t mode, Caller who) {
  MutexLock lock(mu_);
  return make_node_locked(parent, name, S_IFDIR | (mode & 07777), who, [&](Inode& n) {
    n.dir = std::make_unique<Directory>();
    n.nlink = 1;  // "."; the name adds the second
    n.size = 2 * kDirentSize;
  });
}

Result<Attr> Namespace::symlink(uint64_t parent, std::string_view name, std::string_view target,
                                Caller who) {
  if (target.empty()) return Errno{ENOENT};
  if (target.size() >= PATH_MAX) return Errno{ENAMETOOLONG};
  MutexLock lock(mu_);
  return make_node_locked(parent, name, S_IFLNK | 0777, who, [&](Inode& n) {
    n.target = std::string(target);
    n.size = target.size();
  });
}

Result<Attr> Namespace::link(uint64_t ino, uint64_t new_parent, std::string_view new_name) {
  if (auto s = check_name(new_name); !s) return Errno{s.code()};
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) return Errno{ENOENT};
  if (inode->is_dir()) return Errno{EPERM};
  auto dir = dir_locked(new_parent);
  if (!dir) return Errno{dir.code()};
  if ((*dir)->dir->find(new_name) != 0) return Errno{EEXIST};
  if ((*dir)->immutable() || inode->immutable_or_append()) return Errno{EPERM};
  // linkat() of an unlinked file is ENOENT, except an O_TMPFILE file's first
  // name (the VFS's I_LINKABLE), which takes over the inode it already has.
  if (inode->nlink == 0 && !inode->linkable) return Errno{ENOENT};
  if (inode->nlink != 0)
    if (auto s = reserve_inode_locked(); !s) return Errno{s.code()};
  inode->linkable = false;
  add_link_locked(**dir, new_name, *inode);
  inode->ctime = stamp_locked(*inode);
  (*dir)->mtime = (*dir)->ctime = stamp_locked(**dir);
  ++inode->lookups;
  return attr_locked(*inode);
}

Status Namespace::unlink(uint64_t parent, std::string_view name) {
  return remove_name(parent, name, Removing::kNonDirectory);
}

Status Namespace::rmdir(uint64_t parent, std::string_view name) {
  if (name == ".") return Errno{EINVAL};
  if (name == "..") return Errno{ENOTEMPTY};
  return remove_name(parent, name, Removing::kEmptyDirectory);
}

Status Namespace::remove_name(uint64_t parent, std::string_view name, Removing what) {
  if (name.size() > kNameMax) return Errno{ENAMETOOLONG};
  InodeRef victim;  // freed after mu_ is dropped (maybe_free_locked)
  MutexLock lock(mu_);
  auto dir = dir_locked(parent);
  if (!dir) return Errno{dir.code()};
  InodeRef child = child_locked(**dir, name);
  if (!child) return Errno{ENOENT};
  if ((*dir)->immutable_or_append() || child->immutable_or_append())
    return Errno{EPERM};  // may_delete
  if (what == Removing::kNonDirectory && child->is_dir()) return Errno{EISDIR};
  if (what == Removing::kEmptyDirectory) {
    if (!child->is_dir()) return Errno{ENOTDIR};
    if (!child->dir->empty()) return Errno{ENOTEMPTY};
  }
  drop_name_locked(**dir, name, *child);
  child->ctime = stamp_locked(*child);
  (*dir)->mtime = (*dir)->ctime = stamp_locked(**dir);
  maybe_free_locked(*child, victim);
  return {};
}

// A write, truncate or fallocate by someone without CAP_FSETID clears
// set-user-ID, and set-group-ID when the file is group-executable or the
// writer is not in its group: the kernel's setattr_should_drop_suidgid(),
// which FUSE's HANDLE_KILLPRIV_V2 hands to us. Whether the caller has
// CAP_FSETID is the kernel's word where the request carries one, else the
// caller's own (Caller::capable).
bool Namespace::kill_priv_locked(Inode& inode, const Caller& who) {
  if (!inode.is_reg() || !(inode.mode & (S_ISUID | S_ISGID))) return false;
  if (who.kill_suidgid ? !*who.kill_suidgid : who.capable(CAP_FSETID)) return false;
  mode_t kill = inode.mode & S_ISUID;
  if ((inode.mode & S_ISGID) && ((inode.mode & S_IXGRP) || !who.member_of(inode.gid)))
    kill |= S_ISGID;
  inode.mode &= ~kill;
  return kill != 0;
}

// chown of a non-directory, whoever asks (chown_common, notify_change and
// setattr_copy_mode; FUSE's HANDLE_KILLPRIV_V2 leaves it to us): set-user-ID
// goes; set-group-ID when the file is group-executable or the caller is
// neither in its group nor has CAP_FSETID; and when the mode changed at all,
// set-group-ID also goes if the caller is neither in the new group nor has
// CAP_FSETID. Called before the new owner and group are set.
bool Namespace::chown_kill_locked(Inode& inode, std::optional<gid_t> new_gid, const Caller& who) {
  if (inode.is_dir() || !(inode.mode & (S_ISUID | S_ISGID))) return false;
  std::optional<bool> capable;  // asked at most once, and only when needed
  auto in_group_or_capable = [&](gid_t g) {
    if (who.member_of(g)) return true;
    if (!capable) capable = who.capable(CAP_FSETID);
    return *capable;
  };
  mode_t kill = inode.mode & S_ISUID;
  if ((inode.mode & S_ISGID) && ((inode.mode & S_IXGRP) || !in_group_or_capable(inode.gid)))
    kill |= S_ISGID;
  if (kill == 0) return false;
  mode_t mode = inode.mode & ~kill;
  if ((mode & S_ISGID) && !in_group_or_capable(new_gid.value_or(inode.gid))) mode &= ~S_ISGID;
  inode.mode = mode;
  return true;
}

// The kernel's multigrain timestamps (6.13+, tmpfs has them): a change takes
// the coarse clock, unless the inode's ctime has been looked at since it
// last changed and the coarse clock has not passed it; then a fine-grained
// time, so that a change after a stat always shows as a change.
// Like the kernel, every fine-grained time handed out raises a floor under
// the coarse clock, so that times never go backwards from one change to the
// next, on any inode.
timespec Namespace::stamp_locked(Inode& inode) {
  timespec t = now();
  if (before_or_equal(t, time_floor_)) t = time_floor_;
  if (inode.ctime_queried && before_or_equal(t, inode.ctime)) {
    t = fine_now();
    if (before_or_equal(t, inode.ctime)) {
      t = inode.ctime;
      if (++t.tv_nsec == 1000000000) {
        t.tv_nsec = 0;
        ++t.tv_sec;
      }
    }
    time_floor_ = t;
  }
  inode.ctime_queried = false;
  return t;
}

// relatime, as tmpfs is mounted by default: atime moves when it is not
// newer than mtime or ctime, or is a day old. noatime, strictatime and
// nodiratime as the mount was asked for (config_.atime, .nodiratime).
void Namespace::touch_atime_locked(Inode& inode) {
  if (config_.atime == NamespaceConfig::Atime::Noatime) return;
  if (inode.iflags & FS_NOATIME_FL) return;
  if (config_.nodiratime && inode.is_dir()) return;
  timespec t = now();
  if (before_or_equal(t, time_floor_)) t = time_floor_;
  if (config_.atime == NamespaceConfig::Atime::Strictatime) {
    inode.atime = t;
    return;
  }
  if (before_or_equal(inode.atime, inode.mtime) || before_or_equal(inode.atime, inode.ctime) ||
      t.tv_sec - inode.atime.tv_sec >= 24 * 3600)
    inode.atime = t;
}

bool Namespace::is_ancestor_locked(uint64_t maybe_ancestor, uint64_t ino) {
  // Walk up from ino through ".." until the root.
  for (uint64_t cur = ino;;) {
    if (cur == maybe_ancestor) return true;
    if (cur == kRootIno) return false;
    InodeRef inode = get_locked(cur);
    if (!inode || !inode->dir) return false;
    cur = inode->dir->parent;
  }
}

Status Namespace::rename(uint64_t parent, std::string_view name, uint64_t new_parent,
                         std::string_view new_name, unsigned flags) {
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT)) return Errno{EINVAL};
  if ((flags & RENAME_EXCHANGE) && (flags & (RENAME_NOREPLACE | RENAME_WHITEOUT)))
    return Errno{EINVAL};
  if (name.size() > kNameMax || new_name.size() > kNameMax) return Errno{ENAMETOOLONG};
  if (auto s = check_name(new_name); !s) return s.code() == EINVAL ? Errno{EBUSY} : s;
  InodeRef victim;  // freed after mu_ is dropped (maybe_free_locked)
  MutexLock lock(mu_);
  auto odir_r = dir_locked(parent);
  if (!odir_r) return Errno{odir_r.code()};
  auto ndir_r = dir_locked(new_parent);
  if (!ndir_r) return Errno{ndir_r.code()};
  Inode& odir = **odir_r;
  Inode& ndir = **ndir_r;
  InodeRef src = get_locked(odir.dir->find(name));
  if (!src) return Errno{ENOENT};
  InodeRef dst = get_locked(ndir.dir->find(new_name));

  if (flags & RENAME_EXCHANGE) {
    if (!dst) return Errno{ENOENT};
  } else if (dst && (flags & RENAME_NOREPLACE)) {
    return Errno{EEXIST};
  }
  if (dst == src) return {};  // the same inode under both names: nothing to do
  // A directory cannot move below itself; nor can a target directory that
  // is an ancestor of the source be replaced.
  if (src->is_dir() && is_ancestor_locked(src->ino, ndir.ino)) return Errno{EINVAL};
  if (dst && dst->is_dir() && is_ancestor_locked(dst->ino, odir.ino))
    return (flags & RENAME_EXCHANGE) ? Errno{EINVAL} : Errno{ENOTEMPTY};
  // may_delete of the source (and of the target it replaces), may_create
  // in the new directory.
  if (odir.immutable_or_append() || src->immutable_or_append()) return Errno{EPERM};
  if (dst ? (ndir.immutable_or_append() || dst->immutable_or_append()) : ndir.immutable())
    return Errno{EPERM};

  timespec t = now();
  if (flags & RENAME_EXCHANGE) {
    odir.dir->replace(name, dst->ino);
    ndir.dir->replace(new_name, src->ino);
    if (src->is_dir() != dst->is_dir() && &odir != &ndir) {
      // The directory among the two changes parent: move its ".." link.
      Inode& moved_dir = src->is_dir() ? *src : *dst;
      Inode& from = src->is_dir() ? odir : ndir;
      Inode& to = src->is_dir() ? ndir : odir;
      --from.nlink;
      ++to.nlink;
      moved_dir.dir->parent = to.ino;
    } else if (src->is_dir() && dst->is_dir()) {
      src->dir->parent = ndir.ino;
      dst->dir->parent = odir.ino;
    }
    src->ctime = stamp_locked(*src);
    dst->ctime = stamp_locked(*dst);
    odir.mtime = odir.ctime = stamp_locked(odir);
    ndir.mtime = ndir.ctime = stamp_locked(ndir);
    return {};
  }

  if (dst) {
    if (src->is_dir() && !dst->is_dir()) return Errno{ENOTDIR};
    if (!src->is_dir() && dst->is_dir()) return Errno{EISDIR};
    if (dst->is_dir() && !dst->dir->empty()) return Errno{ENOTEMPTY};
  }
  if (flags & RENAME_WHITEOUT) {
    if (auto s = reserve_inode_locked(); !s) return s;
  }
  if (dst) {
    drop_name_locked(ndir, new_name, *dst);
    dst->ctime = stamp_locked(*dst);
  }
  // Moving keeps the inode's link count; drop_name/add_link would count it
  // twice, so adjust the directories by hand.
  odir.dir->erase(name);
  odir.size -= kDirentSize;
  ndir.dir->insert(new_name, src->ino);
  ndir.size += kDirentSize;
  if (src->is_dir() && &odir != &ndir) {
    --odir.nlink;
    ++ndir.nlink;
    src->dir->parent = ndir.ino;
  }
  src->ctime = stamp_locked(*src);
  odir.mtime = odir.ctime = stamp_locked(odir);
  ndir.mtime = ndir.ctime = stamp_locked(ndir);
  if (dst) maybe_free_locked(*dst, victim);
  if (flags & RENAME_WHITEOUT) {
    // The old name becomes a whiteout: a character device 0:0 (overlayfs).
    InodeRef w = make_inode_locked(S_IFCHR);
    w->uid = src->uid;
    w->gid = src->gid;
    w->atime = w->mtime = w->ctime = t;
    add_link_locked(odir, name, *w);
    inodes_.emplace(w->ino, std::move(w));
  }
  return {};
}

Result<std::string> Namespace::readlink(uint64_t ino) {
  MutexLock lock(mu_);
  InodeRef inode = get_locked(ino);
  if (!inode) return Errno{ENOENT};
  if (!inode->is_symlink()) return Errno{EINVAL};
  touch_atime_locked(*inode);
  return inode->target;
}

}  // namespace tmpfsd
