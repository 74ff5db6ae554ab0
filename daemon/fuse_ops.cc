// FUSE low-level ops -> Namespace calls. See fuse_ops.h.
//
// Every op follows one shape: compute a Result in core/, then reply from it
// in exactly one place. `guarded` catches anything thrown before the reply
// (allocation failure, mostly) and answers with an errno instead, so that no
// exception crosses into libfuse.
#include "daemon/fuse_ops.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/fs.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "daemon/control.h"
#include "daemon/kernel_cache.h"
#include "daemon/options.h"
#include "daemon/persist.h"
#include "daemon/wire.h"

namespace tmpfsd {
namespace {

Filesystem& fs_of(fuse_req_t req) { return *static_cast<Filesystem*>(fuse_req_userdata(req)); }
Namespace& ns_of(fuse_req_t req) { return *fs_of(req).ns; }

// Whether process `pid` has capability `cap` as the kernel's capable()
// answers for it: in its effective set (/proc/PID/status, CapEff) and held
// in our user namespace (a process in a child namespace has none in ours,
// whatever its CapEff says). Where /proc cannot say (pid 0: a process in
// another pid namespace; gone; hidden), uid 0 stands for it, as before.
// Asked only for a set-ID file (Caller::has_capability); the caller waits
// for the reply, so the pid is still its own.
bool has_capability(pid_t pid, uid_t uid, int cap) {
  if (pid <= 0) return uid == 0;
  const std::string proc = "/proc/" + std::to_string(pid);
  struct stat mine, theirs;
  if (::stat("/proc/self/ns/user", &mine) != 0 || ::stat((proc + "/ns/user").c_str(), &theirs) != 0)
    return uid == 0;
  if (mine.st_dev != theirs.st_dev || mine.st_ino != theirs.st_ino) return false;
  std::ifstream status(proc + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (!line.starts_with("CapEff:")) continue;
    uint64_t caps = std::strtoull(line.c_str() + 7, nullptr, 16);
    return (caps >> cap) & 1;
  }
  return uid == 0;
}

Caller caller_of(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  Caller who;
  who.uid = ctx->uid;
  who.gid = ctx->gid;
  who.kill_suidgid = Wire::kill_suidgid();
  who.has_capability = [pid = ctx->pid, uid = ctx->uid](int cap) {
    return has_capability(pid, uid, cap);
  };
  if (fs_of(req).wire && fs_of(req).wire->umask_left_to_us()) who.umask = ctx->umask;
  who.in_group = [req](gid_t g) {
    gid_t groups[256];
    int n = fuse_req_getgroups(req, 256, groups);
    for (int i = 0; i < n && i < 256; ++i)
      if (groups[i] == g) return true;
    return false;
  };
  return who;
}

template <class F>
void guarded(fuse_req_t req, F&& body) noexcept {
  try {
    body();
  } catch (const std::bad_alloc&) {
    fuse_reply_err(req, ENOMEM);
  } catch (const std::exception& e) {
    spdlog::error("internal error: {}", e.what());
    fuse_reply_err(req, EIO);
  } catch (...) {
    spdlog::error("internal error: unknown exception");
    fuse_reply_err(req, EIO);
  }
}

struct stat to_stat(const Attr& a, size_t page_size) {
  struct stat st {};
  st.st_ino = a.ino;
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_rdev = a.rdev;
  st.st_size = off_t(a.size);
  st.st_blocks = blkcnt_t(a.blocks);
  st.st_blksize = blksize_t(page_size);
  st.st_atim = a.atime;
  st.st_mtim = a.mtime;
  st.st_ctim = a.ctime;
  return st;
}

fuse_entry_param to_entry(fuse_req_t req, const Attr& a) {
  const Filesystem& fs = fs_of(req);
  fuse_entry_param e{};
  e.ino = a.ino;
  e.generation = a.generation;
  e.attr = to_stat(a, fs.cache->page_size());
  // Only GETATTR marks a timestamp as seen (Namespace::stamp_locked): the
  // kernel also asks for attributes before some changes, which a stat
  // served from these cached attributes would not do.
  e.attr_timeout = fs.attr_timeout;
  e.entry_timeout = fs.entry_timeout;
  return e;
}

void reply_entry(fuse_req_t req, const Result<Attr>& r) {
  if (!r) return void(fuse_reply_err(req, r.code()));
  fuse_entry_param e = to_entry(req, *r);
  fuse_reply_entry(req, &e);
}

void reply_attr(fuse_req_t req, const Result<Attr>& r) {
  if (!r) return void(fuse_reply_err(req, r.code()));
  struct stat st = to_stat(*r, fs_of(req).cache->page_size());
  fuse_reply_attr(req, &st, fs_of(req).attr_timeout);
}

void reply_status(fuse_req_t req, Status s) { fuse_reply_err(req, s.code()); }

// tmpfsctl stats: every figure, in daemon/control.h's layout.
std::string stats_text(const Filesystem& fs) {
  std::string out;
  auto line = [&out](std::string_view name, uint64_t value, std::string_view kind,
                     std::string_view what) {
    fmt::format_to(std::back_inserter(out), "{} {} {} {}\n", name, value, kind, what);
  };
  line("format", control::kFormatVersion, "gauge", "version of this layout (daemon/control.h)");
  fs.cache->stats().visit(line);
  line("inodes", fs.ns->inode_count(), "gauge", "inodes in use");
  auto up = std::chrono::steady_clock::now() - fs.started;
  line("uptime_seconds", uint64_t(std::chrono::duration_cast<std::chrono::seconds>(up).count()),
       "counter", "seconds since the mount went live");
  line("pid", uint64_t(getpid()), "gauge", "the daemon's process ID");
  line(
      "restarts_failed", fs.restarts_failed.load(), "counter",
      "restarts without unmounting (tmpfsctl restart, SIGUSR2) that failed; this daemon serves on");
  if (uint64_t bytes, age; fs.persist && fs.persist->image_info(&bytes, &age)) {
    line("persist_image_bytes", bytes, "gauge",
         "size of the --persist image restored or saved last");
    line("persist_image_age_seconds", age, "gauge", "seconds since that image was written");
  }
  if (fs.wire) {
    fs.wire->visit_requests([&](std::string_view op, uint64_t n) {
      line(fmt::format("requests_{}", op), n, "counter", "FUSE requests of this opcode");
    });
    fs.wire->visit_transport(line);
  }
  return out;
}

// tmpfsctl where: one call's runs, from the byte offset the caller asked.
Status where_reply(Namespace& ns, size_t page_size, fuse_ino_t ino, control::WhereBuffer& b) {
  std::array<PageRun, control::kWhereRuns> runs;
  auto a = ns.where(ino, b.start / page_size, runs);
  if (!a) return Status(Errno{a.code()});
  b.size = a->size;
  b.end = a->end * page_size;
  b.next = a->next * page_size;
  b.page_size = uint32_t(page_size);
  b.count = uint32_t(a->count);
  for (size_t i = 0; i < a->count; ++i) {
    b.runs[i].offset = runs[i].first * page_size;
    b.runs[i].length = runs[i].pages * page_size;
    b.runs[i].kind = control::WhereKind(runs[i].kind);
    b.runs[i].reserved = 0;
  }
  return {};
}
static_assert(uint32_t(PageKind::kRemote) == uint32_t(control::WhereKind::kRemote));
static_assert(uint32_t(PageKind::kCompressed) == uint32_t(control::WhereKind::kCompressed));

// tmpfsctl set: "size=2g,nr_inodes=10k" applied to the live mount, all or
// nothing. Returns 0 or an errno, and in *msg one line: why not, or a note.
int set_limits(const Filesystem& fs, std::string_view text, std::string* msg) {
  const uint64_t page = fs.cache->page_size();
  Limits limits;
  bool memory_unchanged = false;  // memory= given, the budget it already has
  std::string size_text;
  auto refuse = [msg](int err, std::string why) {
    *msg = std::move(why);
    return err;
  };
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string_view::npos) comma = text.size();
    const std::string opt(text.substr(pos, comma - pos));
    pos = comma + 1;
    if (opt.empty()) continue;
    const size_t eq = opt.find('=');
    const std::string key = opt.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : opt.substr(eq + 1);
    if (key == "size" && eq != std::string::npos) {
      auto v = parse_size(value, physical_memory());
      if (!v) return refuse(EINVAL, opt + ": not a size (examples: 512m, 4g, 50%)");
      limits.max_pages = *v / page + (*v % page != 0);
      size_text = value;
    } else if (key == "nr_inodes" && eq != std::string::npos) {
      auto v = value.ends_with('%') ? std::nullopt : parse_size(value, 0);
      if (!v) return refuse(EINVAL, opt + ": not a number (examples: 10000, 64k)");
      limits.max_inodes = *v;
    } else if (key == "memory" && eq != std::string::npos) {
      // The same budget again (mount(8) repeats an fstab line's memory= on
      // every remount) changes nothing; another cannot be had.
      auto v = parse_size(value, physical_memory());
      if (!v) return refuse(EINVAL, opt + ": not a size (examples: 256m, 2g, 25%)");
      if (*v / page == fs.cache->stats().frames_total) {
        memory_unchanged = true;
        continue;
      }
      return refuse(EOPNOTSUPP,
                    "memory= cannot change while mounted: the frame region is reserved at "
                    "mount with a fixed size; unmount and mount with the new --memory");
    } else {
      return refuse(EINVAL,
                    opt + ": not an option that can change while mounted (size=, nr_inodes=)");
    }
  }
  if (!limits.max_pages && !limits.max_inodes) {
    if (memory_unchanged) return 0;
    return refuse(EINVAL, "nothing to change (size=, nr_inodes=)");
  }
  if (Status s = fs.ns->set_limits(limits, msg); !s) return s.code();
  msg->clear();
  const PageCacheStats st = fs.cache->stats();
  spdlog::info("limits changed by tmpfsctl set {}: size={} bytes, nr_inodes={}", text,
               st.max_pages * page, fs.ns->statfs().files);
  // size= beyond what can be stored: fine (tmpfs allows size= beyond RAM),
  // but worth a word.
  const uint64_t cap = st.swap_slots_total != 0 ? st.swap_slots_total : st.frames_total;
  const char* what = st.swap_slots_total != 0 ? "the swap file" : "--memory (no swap file)";
  if (limits.max_pages && (*limits.max_pages == 0 || *limits.max_pages > cap))
    *msg = fmt::format("note: size={} is {} than {} holds ({} bytes): writes past that get ENOSPC",
                       size_text, *limits.max_pages == 0 ? "unlimited, more" : "more", what,
                       cap * page);
  return 0;
}

// ---- ops -------------------------------------------------------------------

void op_init(void* userdata, fuse_conn_info* conn) {
  Filesystem& fs = *static_cast<Filesystem*>(userdata);
  if (fs.writeback_cache && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
    conn->want |= FUSE_CAP_WRITEBACK_CACHE;
  else
    fs.writeback_cache = false;
  // Big requests: fewer round trips for large reads and writes.
  conn->max_write = 1 << 20;
  conn->max_readahead = 1 << 20;
  if (conn->capable & FUSE_CAP_ASYNC_READ) conn->want |= FUSE_CAP_ASYNC_READ;
  // O_DIRECT reads and writes from io_uring or aio (FUSE_CAP_ASYNC_DIO, on
  // by libfuse's default) and readahead are "background" requests: the
  // kernel lets at most max_background of them be outstanding, queues the
  // rest (readahead too) and blocks the submitter. Its default, 12, capped
  // a queue depth of 32 at 12 requests in the daemon (tools/bench-reclaim).
  // 64 admits two such queues. Not more: each direct write holds its frames
  // until it is applied, and with the protocol's most (65,535) hundreds of
  // them at once took every frame of a small --memory and were answered
  // ENOSPC (xfstests generic/113, aio-stress, at memory=16M). The price,
  // open: a direct write's reply may wait for a readahead of the same pages
  // (daemon/kernel_cache.h), which the kernel can queue behind 64 such
  // writes (seen with 512 AIO writes racing buffered reads of one file).
  // Above congestion_threshold (the kernel's 9 of 12 was 3/4) the kernel
  // skips async readahead. For a mount by a user other than root the
  // kernel clamps both (fuse module parameters max_user_bgreq and
  // max_user_congthresh).
  conn->max_background = 64;
  conn->congestion_threshold = 48;
  if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
  if (conn->capable & FUSE_CAP_READDIRPLUS) conn->want |= FUSE_CAP_READDIRPLUS;
  if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO) conn->want |= FUSE_CAP_READDIRPLUS_AUTO;
  // The kernel's own cache of the file's data is kept across opens: every
  // change to a file passes through this same kernel, so it cannot be stale
  // (but for what an asynchronous direct write leaves: daemon/kernel_cache.h).
  if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA) conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  // tmpfsctl's ioctl (daemon/control.h) may come on a directory too.
  if (conn->capable & FUSE_CAP_IOCTL_DIR) conn->want |= FUSE_CAP_IOCTL_DIR;
  fs.started = std::chrono::steady_clock::now();
  if (fs.on_init) fs.on_init();
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&] {
    auto r = ns_of(req).lookup(parent, name);
    if (!r && r.code() == ENOENT) {
      // A negative entry the kernel may cache: names appear only through it.
      fuse_entry_param e{};
      e.entry_timeout = fs_of(req).entry_timeout;
      fuse_reply_entry(req, &e);
      return;
    }
    reply_entry(req, r);
  });
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  ns_of(req).forget(ino, nlookup);
  fuse_reply_none(req);
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) ns_of(req).forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  guarded(req, [&] { reply_attr(req, ns_of(req).getattr(ino)); });
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  guarded(req, [&] {
    SetAttr c;
    if (to_set & FUSE_SET_ATTR_MODE) c.mode = attr->st_mode;
    if (to_set & FUSE_SET_ATTR_UID) c.uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID) c.gid = attr->st_gid;
    if (to_set & FUSE_SET_ATTR_SIZE) {
      if (attr->st_size < 0) return void(fuse_reply_err(req, EINVAL));
      c.size = uint64_t(attr->st_size);
      c.size_from_handle = fi != nullptr;
    }
    if (to_set & FUSE_SET_ATTR_ATIME_NOW)
      c.atime_now = true;
    else if (to_set & FUSE_SET_ATTR_ATIME)
      c.atime = attr->st_atim;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW)
      c.mtime_now = true;
    else if (to_set & FUSE_SET_ATTR_MTIME)
      c.mtime = attr->st_mtim;
    if (to_set & FUSE_SET_ATTR_CTIME) c.ctime = attr->st_ctim;  // the writeback cache's own ctime
    reply_attr(req, ns_of(req).setattr(ino, c, caller_of(req)));
  });
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  guarded(req, [&] {
    auto r = ns_of(req).readlink(ino);
    if (!r) return void(fuse_reply_err(req, r.code()));
    fuse_reply_readlink(req, r->c_str());
  });
}

void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  guarded(req,
          [&] { reply_entry(req, ns_of(req).mknod(parent, name, mode, rdev, caller_of(req))); });
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  guarded(req, [&] { reply_entry(req, ns_of(req).mkdir(parent, name, mode, caller_of(req))); });
}

void op_symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  guarded(req, [&] { reply_entry(req, ns_of(req).symlink(parent, name, target, caller_of(req))); });
}

void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name) {
  guarded(req, [&] { reply_entry(req, ns_of(req).link(ino, new_parent, new_name)); });
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&] { reply_status(req, ns_of(req).unlink(parent, name)); });
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  guarded(req, [&] { reply_status(req, ns_of(req).rmdir(parent, name)); });
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent,
               const char* new_name, unsigned int flags) {
  guarded(req,
          [&] { reply_status(req, ns_of(req).rename(parent, name, new_parent, new_name, flags)); });
}

// The file handle of an open made while the file was append-only (the
// kernel required O_APPEND then): its writes go to the end even after
// fcntl() drops O_APPEND, which tmpfs refuses and the FUSE client allows.
constexpr uint64_t kAppendOnlyHandle = 1;

void set_open_flags(fuse_req_t req, fuse_file_info* fi) {
  // Reads the kernel serves from its cache never reach the daemon, so they
  // cannot move atime; strictatime asks that every read does, so there each
  // open drops the cache and its first read comes here.
  fi->keep_cache = !fs_of(req).strict_atime;
  // close() flushes the kernel's cached writes, so that what another process
  // sees after it (st_blocks, the data) is what tmpfs would show.
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&] {
    auto r = ns_of(req).open(ino, fi->flags, caller_of(req));
    if (!r) return void(fuse_reply_err(req, r.code()));
    set_open_flags(req, fi);
    fi->fh = (r->iflags & FS_APPEND_FL) ? kAppendOnlyHandle : 0;
    if (fuse_reply_open(req, fi) != 0)
      ns_of(req).release(ino);  // interrupted: no release will come
  });
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) {
  guarded(req, [&] {
    auto r = ns_of(req).create(parent, name, mode, fi->flags, caller_of(req));
    if (!r) return void(fuse_reply_err(req, r.code()));
    set_open_flags(req, fi);
    fuse_entry_param e = to_entry(req, *r);
    if (fuse_reply_create(req, &e, fi) != 0) {
      ns_of(req).release(r->ino);
      ns_of(req).forget(r->ino, 1);
    }
  });
}

void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  ns_of(req).release(ino);
  fuse_reply_err(req, 0);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  guarded(req, [&] {
    if (off < 0) return void(fuse_reply_err(req, EINVAL));
    KernelCache* kernel_cache = fs_of(req).kernel_cache;
    if (kernel_cache && !Wire::direct_io()) kernel_cache->note_cached(ino);
    ns_of(req).read(ino, uint64_t(off), size, [req](Status s, std::span<const iovec> iov) {
      if (!s) return void(fuse_reply_err(req, s.code()));
      // Straight from frame memory to the kernel: the frames are pinned
      // until this callback returns.
      fuse_reply_iov(req, iov.data(), int(iov.size()));
    });
  });
}

void op_write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
              fuse_file_info* fi) {
  guarded(req, [&] {
    if (off < 0) return void(fuse_reply_err(req, EINVAL));
    auto data = std::span(reinterpret_cast<const std::byte*>(buf), size);
    // With the writeback cache the kernel has already turned O_APPEND into an offset.
    bool append =
        (!fs_of(req).writeback_cache && (fi->flags & O_APPEND)) || fi->fh == kAppendOnlyHandle;
    // The kernel caches what a buffered write carries; a direct write it
    // completes may leave older pages cached (daemon/kernel_cache.h): the
    // reply waits until they are dropped. Whether there may be any is
    // asked once the bytes are in place.
    KernelCache* kernel_cache = fs_of(req).kernel_cache;
    bool direct = Wire::direct_io();
    if (kernel_cache && !direct) kernel_cache->note_cached(ino);
    // Replied now, or from a swap read's completion (Namespace::write_async).
    ns_of(req).write_async(
        ino, uint64_t(off), data, append, caller_of(req),
        [req, ino, off, append, direct, kernel_cache](Result<size_t> r) {
          if (!r) return void(fuse_reply_err(req, r.code()));
          size_t n = *r;
          if (!direct || n == 0 || !kernel_cache || !kernel_cache->may_cache(ino))
            return void(fuse_reply_write(req, n));
          // An append's offset is the daemon's: drop the whole file.
          kernel_cache->after_dropping(ino, append ? 0 : uint64_t(off), append ? 0 : n,
                                       [req, n] { fuse_reply_write(req, n); });
        });
  });
}

void op_fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { fuse_reply_err(req, 0); }

// One open directory: a number in fs.dir_handles (daemon/dir_handles.h),
// owned by the kernel's open file until releasedir.
void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  guarded(req, [&] {
    if (auto s = ns_of(req).opendir(ino); !s) return void(fuse_reply_err(req, s.code()));
    DirHandles& handles = fs_of(req).dir_handles;
    fi->cache_readdir = 0;
    fi->fh = handles.open();
    if (fuse_reply_open(req, fi) != 0) {
      handles.close(fi->fh);
      ns_of(req).release(ino);
    }
  });
}

void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, bool plus,
                fuse_file_info* fi) {
  guarded(req, [&] {
    std::vector<char> buf(size);
    size_t used = 0;
    auto sink = [&](const DirEntryView& d, const Attr* a) {
      std::string name(d.name);
      size_t need;
      if (plus) {
        fuse_entry_param e{};
        if (a) {
          e = to_entry(req, *a);
        } else {  // "." and "..": no lookup is counted, so no entry for the kernel to keep
          e.attr.st_ino = d.ino;
          e.attr.st_mode = d.mode;
        }
        need = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e,
                                      off_t(d.next));
      } else {
        struct stat st {};
        st.st_ino = d.ino;
        st.st_mode = d.mode;
        need = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st,
                                 off_t(d.next));
      }
      if (need > size - used) return false;
      used += need;
      return true;
    };
    uint64_t unknown = 0;  // a handle the table lacks: a pass of its own
    uint64_t* pass_end = fs_of(req).dir_handles.find(fi->fh);
    Status s = ns_of(req).readdir(ino, uint64_t(off), plus, pass_end ? pass_end : &unknown, sink);
    if (!s) return void(fuse_reply_err(req, s.code()));
    fuse_reply_buf(req, buf.data(), used);
  });
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  do_readdir(req, ino, size, off, false, fi);
}
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  do_readdir(req, ino, size, off, true, fi);
}
void op_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  fs_of(req).dir_handles.close(fi->fh);
  ns_of(req).release(ino);
  fuse_reply_err(req, 0);
}
void op_fsyncdir(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) { fuse_reply_err(req, 0); }

void op_statfs(fuse_req_t req, fuse_ino_t) {
  guarded(req, [&] {
    StatFs s = ns_of(req).statfs();
    struct statvfs v {};
    v.f_bsize = s.block_size;
    v.f_frsize = s.block_size;
    v.f_blocks = s.blocks;
    v.f_bfree = s.blocks_free;
    v.f_bavail = s.blocks_free;
    v.f_files = s.files;
    v.f_ffree = s.files_free;
    v.f_favail = s.files_free;
    v.f_namemax = s.name_max;
    fuse_reply_statfs(req, &v);
  });
}

void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int flags) {
  guarded(req, [&] {
    reply_status(
        req, ns_of(req).setxattr(ino, name, std::string_view(value, size), flags, caller_of(req)));
  });
}

void reply_xattr_value(fuse_req_t req, const Result<std::string>& r, size_t size) {
  if (!r) return void(fuse_reply_err(req, r.code()));
  if (size == 0) return void(fuse_reply_xattr(req, r->size()));
  if (r->size() > size) return void(fuse_reply_err(req, ERANGE));
  fuse_reply_buf(req, r->data(), r->size());
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  guarded(req, [&] { reply_xattr_value(req, ns_of(req).getxattr(ino, name), size); });
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  guarded(req, [&] { reply_xattr_value(req, ns_of(req).listxattr(ino, caller_of(req)), size); });
}

void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  guarded(req, [&] { reply_status(req, ns_of(req).removexattr(ino, name, caller_of(req))); });
}

void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info*) {
  guarded(req, [&] {
    if (off < 0 || len <= 0) return void(fuse_reply_err(req, EINVAL));
    reply_status(req,
                 ns_of(req).fallocate(ino, mode, uint64_t(off), uint64_t(len), caller_of(req)));
  });
}

// The flags change ctime, which the kernel's fileattr code does not know:
// its cached attributes go, as after a setattr.
void reply_flags_set(fuse_req_t req, fuse_ino_t ino, uint32_t flags) {
  if (auto s = ns_of(req).set_flags(ino, flags); !s) return (void)fuse_reply_err(req, s.code());
  if (fs_of(req).session) fuse_lowlevel_notify_inval_inode(fs_of(req).session, ino, -1, 0);
  fuse_reply_ioctl(req, 0, nullptr, 0);
}

// chattr and lsattr. The kernel's fileattr code (fs/fuse/ioctl.c) sends
// these itself, with the sizes of its own structures: an unsigned int of
// FS_*_FL for GETFLAGS/SETFLAGS, a struct fsxattr for FSGETXATTR (which it
// reads first, to check CAP_LINUX_IMMUTABLE against the old flags) and
// FSSETXATTR.
void reply_inode_flags(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, const void* in_buf,
                       size_t in_size, size_t out_size) {
  if (cmd == FS_IOC_SETFLAGS) {
    uint32_t flags;
    if (in_size != sizeof flags) return (void)fuse_reply_err(req, EINVAL);
    std::memcpy(&flags, in_buf, sizeof flags);
    return reply_flags_set(req, ino, flags);
  }
  if (cmd == FS_IOC_FSSETXATTR) {
    // Only the xflags that are inode flags, as fileattr_has_fsx() allows tmpfs.
    struct fsxattr fa;
    if (in_size != sizeof fa) return (void)fuse_reply_err(req, EINVAL);
    std::memcpy(&fa, in_buf, sizeof fa);
    constexpr uint32_t kCommon =
        FS_XFLAG_SYNC | FS_XFLAG_IMMUTABLE | FS_XFLAG_APPEND | FS_XFLAG_NODUMP | FS_XFLAG_NOATIME;
    if ((fa.fsx_xflags & ~kCommon) || fa.fsx_extsize || fa.fsx_projid || fa.fsx_cowextsize)
      return (void)fuse_reply_err(req, EOPNOTSUPP);
    uint32_t flags = 0;
    if (fa.fsx_xflags & FS_XFLAG_SYNC) flags |= FS_SYNC_FL;
    if (fa.fsx_xflags & FS_XFLAG_IMMUTABLE) flags |= FS_IMMUTABLE_FL;
    if (fa.fsx_xflags & FS_XFLAG_APPEND) flags |= FS_APPEND_FL;
    if (fa.fsx_xflags & FS_XFLAG_NODUMP) flags |= FS_NODUMP_FL;
    if (fa.fsx_xflags & FS_XFLAG_NOATIME) flags |= FS_NOATIME_FL;
    return reply_flags_set(req, ino, flags);
  }
  auto r = ns_of(req).get_flags(ino);
  if (!r) return (void)fuse_reply_err(req, r.code());
  if (cmd == FS_IOC_GETFLAGS) {
    uint32_t flags = *r;
    if (out_size != sizeof flags) return (void)fuse_reply_err(req, EINVAL);
    return (void)fuse_reply_ioctl(req, 0, &flags, sizeof flags);
  }
  struct fsxattr fa {};  // FS_IOC_FSGETXATTR: the flags as xflags, as fileattr_fill_flags
  if (*r & FS_IMMUTABLE_FL) fa.fsx_xflags |= FS_XFLAG_IMMUTABLE;
  if (*r & FS_APPEND_FL) fa.fsx_xflags |= FS_XFLAG_APPEND;
  if (*r & FS_NODUMP_FL) fa.fsx_xflags |= FS_XFLAG_NODUMP;
  if (*r & FS_NOATIME_FL) fa.fsx_xflags |= FS_XFLAG_NOATIME;
  if (out_size != sizeof fa) return (void)fuse_reply_err(req, EINVAL);
  fuse_reply_ioctl(req, 0, &fa, sizeof fa);
}

// The control channel (daemon/control.h) and the inode flags; every other
// ioctl is ENOTTY, as before there was an ioctl op (the kernel turned
// ENOSYS into ENOTTY). The stats and the limits are the mount's, whichever
// of its files or directories asks; where and the flags are the file's own.
void op_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void*, fuse_file_info*, unsigned,
              const void* in_buf, size_t in_size, size_t out_size) {
  guarded(req, [&] {
    switch (cmd) {
      case FS_IOC_GETFLAGS:
      case FS_IOC_SETFLAGS:
      case FS_IOC_FSGETXATTR:
      case FS_IOC_FSSETXATTR:
        return reply_inode_flags(req, ino, cmd, in_buf, in_size, out_size);
      default:
        break;
    }
    const fuse_ctx* ctx = fuse_req_ctx(req);
    const bool owner = ctx->uid == 0 || ctx->uid == geteuid();
    Filesystem& fs = fs_of(req);
    switch (cmd) {
      case control::kStatsIoctl: {
        if (!owner) return (void)fuse_reply_err(req, EPERM);
        std::string text = stats_text(fs);
        if (text.size() + 1 > out_size) return (void)fuse_reply_err(req, EOVERFLOW);
        return (void)fuse_reply_ioctl(req, 0, text.c_str(), text.size() + 1);
      }
      case control::kWhereIoctl: {
        // Anyone who could open the file: the kernel checked at open.
        if (in_size < sizeof(control::WhereBuffer) || out_size < sizeof(control::WhereBuffer))
          return (void)fuse_reply_err(req, EINVAL);
        auto b = std::make_unique<control::WhereBuffer>();
        std::memcpy(&b->start, in_buf, sizeof b->start);
        if (Status s = where_reply(*fs.ns, fs.cache->page_size(), ino, *b); !s)
          return (void)fuse_reply_err(req, s.code());
        return (void)fuse_reply_ioctl(req, 0, b.get(), sizeof *b);
      }
      case control::kSetIoctl: {
        if (!owner) return (void)fuse_reply_err(req, EPERM);
        if (in_size < sizeof(control::SetBuffer) || out_size < sizeof(control::SetBuffer))
          return (void)fuse_reply_err(req, EINVAL);
        auto b = std::make_unique<control::SetBuffer>();
        std::memcpy(b.get(), in_buf, sizeof *b);
        const std::string text(b->text, strnlen(b->text, sizeof b->text));
        std::string msg;
        b->error = set_limits(fs, text, &msg);
        std::memset(b->text, 0, sizeof b->text);
        std::memcpy(b->text, msg.data(), std::min(msg.size(), sizeof b->text - 1));
        return (void)fuse_reply_ioctl(req, 0, b.get(), sizeof *b);
      }
      case control::kRestartIoctl: {
        if (!owner) return (void)fuse_reply_err(req, EPERM);
        if (in_size < sizeof(control::RestartBuffer) || out_size < sizeof(control::RestartBuffer))
          return (void)fuse_reply_err(req, EINVAL);
        auto b = std::make_unique<control::RestartBuffer>();
        std::memcpy(b.get(), in_buf, sizeof *b);
        const std::string binary(b->text, strnlen(b->text, sizeof b->text));
        std::string why = "this daemon offers no restart";
        b->error = fs.request_restart ? fs.request_restart(binary, &why) : EOPNOTSUPP;
        std::memset(b->text, 0, sizeof b->text);
        if (b->error != 0)
          std::memcpy(b->text, why.data(), std::min(why.size(), sizeof b->text - 1));
        fuse_reply_ioctl(req, 0, b.get(), sizeof *b);
        // Answered: the restart (daemon/restart.h) waits for no request of
        // ours. The stats thread takes the signal (daemon/main.cc).
        if (b->error == 0) ::kill(::getpid(), SIGUSR2);
        return;
      }
      default:
        return (void)fuse_reply_err(req, ENOTTY);
    }
  });
}

void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info*) {
  guarded(req, [&] {
    if (whence != SEEK_DATA && whence != SEEK_HOLE) return void(fuse_reply_err(req, EINVAL));
    if (off < 0) return void(fuse_reply_err(req, ENXIO));
    auto r = ns_of(req).lseek(ino, uint64_t(off), whence);
    if (!r) return void(fuse_reply_err(req, r.code()));
    fuse_reply_lseek(req, off_t(*r));
  });
}

void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info*,
                        fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                        int flags) {
  guarded(req, [&] {
    if (flags != 0 || off_in < 0 || off_out < 0) return void(fuse_reply_err(req, EINVAL));
    // A descriptor opened while the file was append-only had O_APPEND, which
    // on tmpfs it keeps (known divergence 11): copy_file_range refuses it.
    if (fi_out && fi_out->fh == kAppendOnlyHandle) return void(fuse_reply_err(req, EBADF));
    auto r = ns_of(req).copy_range(ino_in, uint64_t(off_in), ino_out, uint64_t(off_out), len,
                                   caller_of(req));
    if (!r) return void(fuse_reply_err(req, r.code()));
    fuse_reply_write(req, *r);
  });
}

fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.readlink = op_readlink;
  ops.mknod = op_mknod;
  ops.mkdir = op_mkdir;
  ops.symlink = op_symlink;
  ops.link = op_link;
  ops.unlink = op_unlink;
  ops.rmdir = op_rmdir;
  ops.rename = op_rename;
  ops.open = op_open;
  ops.create = op_create;
  ops.read = op_read;
  ops.write = op_write;
  // No flush: libfuse answers ENOSYS to the first FLUSH and the kernel
  // sends none again (fc->no_flush), which saves a round trip on every
  // close(). The kernel still writes its dirty pages back at close before
  // it looks at no_flush; the daemon keeps nothing per open file to flush,
  // and POSIX locks are the kernel's own (no lock ops here).
  ops.fsync = op_fsync;
  ops.release = op_release;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.readdirplus = op_readdirplus;
  ops.releasedir = op_releasedir;
  ops.fsyncdir = op_fsyncdir;
  ops.statfs = op_statfs;
  ops.setxattr = op_setxattr;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.removexattr = op_removexattr;
  ops.fallocate = op_fallocate;
  ops.lseek = op_lseek;
  ops.ioctl = op_ioctl;
  ops.copy_file_range = op_copy_file_range;
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& fuse_operations() {
  static const fuse_lowlevel_ops ops = make_ops();
  return ops;
}

}  // namespace tmpfsd
