// Namespace: the tree of names, the inode table and every attribute; the
// part of tmpfsd that behaves like tmpfs's inode and directory operations.
//
// It knows nothing of FUSE: the daemon passes plain values (inode numbers,
// names, the caller's uid/gid) and gets Attr copies or errno Results back.
// Permission checks are the kernel's (default_permissions is always on);
// what the namespace checks itself is what the VFS leaves to a file system:
// name length, types in rename and rmdir, emptiness, limits (nr_inodes,
// size=, xattr sizes), and the kernel's reference counting of inodes.
//
// Threads: any FUSE worker calls any method. One mutex, mu_, guards the
// tree, the inode table and all attributes; data I/O does not hold it
// (see Inode::data_mu). Lock order (core/LOCKING.md): Inode::data_mu ->
// mu_, and Inode::data_mu -> FilePages; mu_ is never held across a
// FilePages call (an Inode freed under it is destroyed after it is
// dropped; FilePages::pages() is lock-free and may be read under it).
#pragma once

#include <sys/statvfs.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/image.h"
#include "core/inode.h"
#include "core/page_cache.h"
#include "core/result.h"
#include "swapdev/slot_device.h"
#include "swapdev/thread_annotations.h"

namespace tmpfsd {

inline constexpr uint64_t kRootIno = 1;
inline constexpr size_t kNameMax = 255;
inline constexpr size_t kXattrSizeMax = 65536;  // XATTR_SIZE_MAX
// tmpfs keeps a symlink target of this many bytes or more in a page.
inline constexpr size_t kShortSymlinkLen = 128;

struct NamespaceConfig {
  uint64_t max_inodes = 0;  // nr_inodes=; 0 = unlimited
  mode_t root_mode = 01777;
  uid_t root_uid = 0;
  gid_t root_gid = 0;
  // When a read or a readdir moves atime, as the mount flags say on a kernel
  // file system (the FUSE kernel client leaves atime to the daemon):
  // relatime (the default, tmpfs's), noatime (never), strictatime (always);
  // nodiratime: never for directories.
  enum class Atime { Relatime, Noatime, Strictatime };
  Atime atime = Atime::Relatime;
  bool nodiratime = false;
};

// Who is asking (from the FUSE request).
struct Caller {
  uid_t uid = 0;
  gid_t gid = 0;
  // Supplementary groups, asked for only when a rule needs them (it costs
  // the daemon a read of /proc). Null: the primary group only.
  std::function<bool(gid_t)> in_group;
  // The kernel's word on clearing set-user-ID/set-group-ID for this write,
  // truncate or O_TRUNC open (FUSE's HANDLE_KILLPRIV_V2: it knows whether
  // the caller has CAP_FSETID). Unset: the namespace decides by
  // capable(CAP_FSETID).
  std::optional<bool> kill_suidgid;
  // Whether the caller has a capability (CAP_FSETID, CAP_FOWNER), for the
  // changes the kernel sends no kill flag with (fallocate, copy_file_range,
  // chown); asked only when a set-ID bit is there to clear. Null: uid 0
  // has them all, no one else.
  std::function<bool(int cap)> has_capability;
  // The caller's umask when the kernel left it to the file system (FUSE's
  // DONT_MASK, with POSIX ACLs): a new inode's mode takes the parent's
  // default ACL if it has one, else this umask. Unset: the kernel has
  // already applied it to the mode.
  std::optional<mode_t> umask;
  bool member_of(gid_t g) const { return g == gid || (in_group && in_group(g)); }
  bool capable(int cap) const { return has_capability ? has_capability(cap) : uid == 0; }
};

// setattr: which fields change. Times given as nullopt stay; `*_now` sets
// them to the current time.
struct SetAttr {
  std::optional<mode_t> mode;
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::optional<uint64_t> size;
  bool size_from_handle = false;  // ftruncate / O_TRUNC (the kernel's ATTR_MTIME|ATTR_CTIME)
  std::optional<timespec> atime, mtime, ctime;
  bool atime_now = false, mtime_now = false;
};

struct StatFs {
  uint64_t block_size, blocks, blocks_free;
  uint64_t files, files_free;
  uint64_t name_max;
};

// Namespace::where: one call's answer for a regular file.
struct WhereAnswer {
  uint64_t size = 0;  // the file's size in bytes
  uint64_t end = 0;   // pages: the size rounded up, or the last page present + 1
  uint64_t next = 0;  // the page after the last one in the runs (== end: done)
  size_t count = 0;   // runs filled
};

// Namespace::set_limits: what changes (nullopt: stays; 0: unlimited).
struct Limits {
  std::optional<uint64_t> max_pages;   // size= in pages
  std::optional<uint64_t> max_inodes;  // nr_inodes=
};

// One directory entry handed to a readdir sink. `next` is the offset that
// continues after it.
struct DirEntryView {
  std::string_view name;
  uint64_t ino;
  mode_t mode;
  uint64_t next;
};

class Namespace {
 public:
  Namespace(const NamespaceConfig& config, PageCache& cache);
  ~Namespace();
  Namespace(const Namespace&) = delete;
  Namespace& operator=(const Namespace&) = delete;

  // Kernel references. lookup() and every call that returns a new entry
  // (create, mkdir, mknod, symlink, link) count one lookup; forget() drops
  // them. Dropping more than were counted is a bug and aborts.
  //
  // lookup() of "." and ".." is how the kernel resolves a file handle
  // (FUSE_EXPORT_SUPPORT): "." finds the inode `parent` names, whatever
  // its type, ".." a directory's parent (the root's is the root). An inode
  // the kernel has forgotten is still found by its number while it has a
  // name. ESTALE: the number names no inode (never made, or freed), or
  // one with no name left, as tmpfs answers a handle of a deleted file.
  Result<Attr> lookup(uint64_t parent, std::string_view name);
  void forget(uint64_t ino, uint64_t nlookup);

  Result<Attr> getattr(uint64_t ino);
  Result<Attr> setattr(uint64_t ino, const SetAttr& change, const Caller& who = {});

  // mknod covers regular files, fifos, sockets and device nodes.
  Result<Attr> mknod(uint64_t parent, std::string_view name, mode_t mode, dev_t rdev, Caller who);
  Result<Attr> mkdir(uint64_t parent, std::string_view name, mode_t mode, Caller who);
  Result<Attr> symlink(uint64_t parent, std::string_view name, std::string_view target, Caller who);
  Result<Attr> link(uint64_t ino, uint64_t new_parent, std::string_view new_name);
  Status unlink(uint64_t parent, std::string_view name);
  Status rmdir(uint64_t parent, std::string_view name);
  // flags: 0, RENAME_NOREPLACE, RENAME_EXCHANGE (RENAME_WHITEOUT: EINVAL).
  Status rename(uint64_t parent, std::string_view name, uint64_t new_parent,
                std::string_view new_name, unsigned flags);
  Result<std::string> readlink(uint64_t ino);

  // open/create of a regular file: counts an open handle. O_TRUNC truncates.
  Result<Attr> open(uint64_t ino, int flags, const Caller& who = {});
  // create = mknod + open in one step (counts a lookup and an open).
  Result<Attr> create(uint64_t parent, std::string_view name, mode_t mode, int flags, Caller who);
  // O_TMPFILE: a regular file in no directory (nlink 0), counted against
  // nr_inodes= like any other, with one lookup and one open handle; it goes
  // at its last release and forget unless link() gives it a name first,
  // which it may once unless `flags` has O_EXCL. The parent's set-group-ID
  // bit applies as for create.
  Result<Attr> tmpfile(uint64_t parent, mode_t mode, int flags, Caller who);
  void release(uint64_t ino);
  Status opendir(uint64_t ino);

  // Calls `sink` for entries after `offset` until it returns false (the
  // reply buffer is full). With `plus`, each entry the sink accepted counts
  // a lookup, as readdirplus requires.
  //
  // `*pass_end` bounds one pass over the directory, as tmpfs does: entries
  // created after the pass began (offset 0, which sets it) are not
  // returned, so a listing ends even while another process keeps adding.
  Status readdir(uint64_t ino, uint64_t offset, bool plus, uint64_t* pass_end,
                 const std::function<bool(const DirEntryView&, const Attr*)>& sink);

  // Data. read() clamps to the size and calls done exactly once (maybe
  // from another thread) with iovecs over frame memory.
  void read(uint64_t ino, uint64_t off, size_t len, FilePages::ReadDone done);
  // Returns the bytes written; with `append` the offset is the size.
  Result<size_t> write(uint64_t ino, uint64_t off, std::span<const std::byte> data, bool append,
                       const Caller& who = {});
  // The same for FUSE: `done` runs exactly once, with the bytes written or
  // an error, before write_async returns, or -- a write into part of a page
  // being read from swap (FilePages::start_write) -- from that read's
  // completion, after the size and times are already updated (EIO there:
  // the swap read failed; that page keeps its old bytes). `data` is copied
  // before write_async returns. `done` takes no Inode lock.
  using WriteReply = std::function<void(Result<size_t>)>;
  void write_async(uint64_t ino, uint64_t off, std::span<const std::byte> data, bool append,
                   const Caller& who, WriteReply done);
  Status fallocate(uint64_t ino, int mode, uint64_t off, uint64_t len, const Caller& who = {});
  Result<uint64_t> lseek(uint64_t ino, uint64_t off, int whence);  // SEEK_DATA / SEEK_HOLE
  // copy_file_range: copies through frames without a round trip to the kernel.
  // EPERM into an immutable file, whatever the descriptor (the VFS's
  // generic_copy_file_checks, which never sees a FUSE inode's flags).
  Result<size_t> copy_range(uint64_t src, uint64_t src_off, uint64_t dst, uint64_t dst_off,
                            size_t len, const Caller& who = {});

  // Extended attributes. flags: XATTR_CREATE / XATTR_REPLACE.
  // system.posix_acl_access and system.posix_acl_default are POSIX ACLs
  // (core/acl.h), kept as tmpfs keeps them: an access ACL and the mode bits
  // follow each other (setting one, by a caller outside the file's group,
  // also clears set-group-ID), and new inodes inherit a directory's default
  // ACL. The kernel checks who may set them and enforces them.
  Status setxattr(uint64_t ino, std::string_view name, std::string_view value, int flags,
                  const Caller& who = {});
  Result<std::string> getxattr(uint64_t ino, std::string_view name);
  Result<std::string> listxattr(uint64_t ino, const Caller& who = {});  // NUL-separated names
  Status removexattr(uint64_t ino, std::string_view name, const Caller& who = {});

  // chattr / lsattr: the inode flags tmpfs supports, kInodeFlags (immutable,
  // append-only, nodump, noatime); any other is EOPNOTSUPP. The kernel has
  // checked ownership and CAP_LINUX_IMMUTABLE; every operation here refuses
  // with EPERM what an immutable or append-only inode forbids.
  static constexpr uint32_t kInodeFlags =
      FS_IMMUTABLE_FL | FS_APPEND_FL | FS_NODUMP_FL | FS_NOATIME_FL;
  Result<uint32_t> get_flags(uint64_t ino);
  Status set_flags(uint64_t ino, uint32_t flags);

  // Where the pages of a regular file are, from page `first` on (tmpfsctl
  // where; FilePages::where): EISDIR for a directory, EINVAL for another
  // non-regular file. Shares the inode's data lock, as a read does.
  Result<WhereAnswer> where(uint64_t ino, uint64_t first, std::span<PageRun> out);

  // Changes size= and nr_inodes= at run time (tmpfsctl set), both or
  // neither, as tmpfs's remount does: EINVAL with `*why` set to tmpfs's
  // words ("Too small a size for current use", "Too few inodes for current
  // use", "Cannot retroactively limit size", "... inodes") when a limit is
  // below what is in use or the mount was unlimited; nothing changes then.
  Status set_limits(const Limits& limits, std::string* why);
  // The limits now (both set; 0: unlimited), as set_limits takes them.
  Limits limits();

  StatFs statfs();

  // Hibernation (core/namespace_image.cc, docs/design.md "Surviving a
  // restart"). save_image writes every inode that has a name, its
  // attributes, xattrs, entries and data; nothing else may use the
  // namespace meanwhile (the daemon calls it once it serves no more). EIO: a
  // page could not be read; the writer's sink error otherwise.
  //
  // A live image (`live`, for a restart without unmounting: the kernel
  // keeps its references across it) also keeps every inode the kernel
  // still holds without a name (unlinked, open or not yet forgotten) and,
  // for each inode, its lookup count, open handles and O_TMPFILE linkability,
  // so that FORGET and RELEASE find what they expect in the next daemon.
  //
  // With `lazy` (--persist with the swap file DIR/swap) the image holds no
  // data: each page's slot and the proof the device needs to read it back
  // (and a sealed device's key and counter); pages only in memory are
  // written to slots of their own first, and lazy->sync makes the swap
  // file durable before the image ends. Its load binds the pages to their
  // slots and reads nothing.
  struct LazyImage {
    swapdev::SlotDevice* dev = nullptr;
    std::function<Status()> sync;  // fdatasync of the swap file
  };
  Status save_image(ImageWriter& w, bool live = false, const LazyImage* lazy = nullptr);
  // Fills a namespace that has served nothing yet from an image (either
  // kind: the header says which). On failure
  // (EINVAL with r.why() saying what is wrong, ENOSPC when the image does
  // not fit this mount's limits) the namespace may hold part of it and must
  // be discarded.
  // A lazy image needs `lazy` (the device its slots are in): without it,
  // EINVAL with the reason.
  Status load_image(ImageReader& r, const LazyImage* lazy = nullptr);
  // True when the image read by the last load_image was lazy.
  bool loaded_lazy() const { return loaded_lazy_; }

  // Called with an inode number, without mu_, when an operation changed
  // attributes the kernel's cached copy does not expect it to: set-ID bits
  // cleared by a write, fallocate, copy_file_range or truncate (the kernel
  // invalidates only size and times after those). The daemon drops the
  // kernel's cached attributes, before it replies. Set before the first
  // request; null: nobody to tell.
  void set_attr_hook(std::function<void(uint64_t ino)> hook) { attr_hook_ = std::move(hook); }

  // For tests and stats.
  size_t inode_count();

 private:
  using InodeRef = std::shared_ptr<Inode>;

  InodeRef get_locked(uint64_t ino) REQUIRES(mu_);
  // A new inode's number and generation: see Inode.
  InodeRef make_inode_locked(mode_t mode) REQUIRES(mu_);
  InodeRef child_locked(const Inode& dir, std::string_view name) REQUIRES(mu_);
  Result<InodeRef> dir_locked(uint64_t ino) REQUIRES(mu_);
  Result<InodeRef> regular_file(uint64_t ino, int other) EXCLUDES(mu_);
  // unlink() and rmdir(): the name goes, and the inode with its last link
  // and lookup (after mu_ is dropped).
  enum class Removing { kNonDirectory, kEmptyDirectory };
  Status remove_name(uint64_t parent, std::string_view name, Removing what) EXCLUDES(mu_);
  Attr attr_locked(const Inode& inode) const REQUIRES(mu_);
  // A new inode (not yet in the table) created in `dir` by `who`: owner,
  // group (the directory's when it is set-group-ID) and all four times.
  InodeRef new_inode_locked(const Inode& dir, mode_t mode, const Caller& who) REQUIRES(mu_);
  Result<Attr> make_node_locked(uint64_t parent, std::string_view name, mode_t mode, Caller who,
                                const std::function<void(Inode&)>& init) REQUIRES(mu_);
  void add_link_locked(Inode& dir, std::string_view name, Inode& child) REQUIRES(mu_);
  void drop_name_locked(Inode& dir, std::string_view name, Inode& child) REQUIRES(mu_);
  // Erases an inode nothing refers to any more from the table, moving its
  // last reference into `victim`, which the caller declares before taking
  // mu_ so that the Inode (and its FilePages) is destroyed after mu_ is
  // dropped.
  void maybe_free_locked(Inode& inode, InodeRef& victim) REQUIRES(mu_);
  bool is_ancestor_locked(uint64_t maybe_ancestor, uint64_t ino) REQUIRES(mu_);
  timespec stamp_locked(Inode& inode) REQUIRES(mu_);
  void touch_atime_locked(Inode& inode) REQUIRES(mu_);
  // Clears set-ID bits as a write by `who` does; true when the mode changed.
  bool kill_priv_locked(Inode& inode, const Caller& who) REQUIRES(mu_);
  // The same for chown (uid/gid given, or neither: chown(f, -1, -1)).
  bool chown_kill_locked(Inode& inode, std::optional<gid_t> new_gid, const Caller& who)
      REQUIRES(mu_);
  void attrs_changed(uint64_t ino) EXCLUDES(mu_) {
    if (attr_hook_) attr_hook_(ino);
  }
  Status set_acl_locked(Inode& inode, std::string_view name, std::string_view value,
                        const Caller& who) REQUIRES(mu_);
  Status reserve_inode_locked() REQUIRES(mu_);
  void release_inode_locked() REQUIRES(mu_);

  const NamespaceConfig config_;  // max_inodes: see max_inodes_
  PageCache& cache_;
  std::function<void(uint64_t)> attr_hook_;  // set before serving (set_attr_hook)

  Status load_bindings(ImageReader& r, const LazyImage& lazy);  // namespace_image.cc
  bool loaded_lazy_ = false;                                    // see loaded_lazy()
  Mutex mu_;
  std::unordered_map<uint64_t, InodeRef> inodes_ GUARDED_BY(mu_);
  uint64_t next_ino_ GUARDED_BY(mu_) = kRootIno + 1;
  std::mt19937 generations_ GUARDED_BY(mu_);  // seeded from std::random_device
  uint64_t max_inodes_ GUARDED_BY(mu_) = 0;   // nr_inodes= now (set_limits); 0 = unlimited
  uint64_t inodes_used_ GUARDED_BY(mu_) = 0;  // tmpfs counts each extra hard link too
  // tmpfs's free_ispace: nr_inodes KiB shared by inodes (1 KiB
  // each) and user.* xattrs; meaningless when nr_inodes is unlimited.
  uint64_t ispace_free_ GUARDED_BY(mu_) = 0;
  timespec time_floor_ GUARDED_BY(mu_){};  // the latest fine-grained time (stamp_locked)
};

}  // namespace tmpfsd
