// Namespace::save_image and load_image: the tree, every attribute and every
// byte of data in a hibernation image (core/image.h gives the framing), and
// back. docs/design.md, "Surviving a restart", says what is kept and why.
//
// Layout after the header (kImageMagic, kImageVersion, next inode number,
// inode count): one record per inode that has a name (the root first, then
// by number): number, generation, mode, nlink, owner, rdev, size, the four
// times, inode flags, symlink target, xattrs, and for a directory its
// parent and entries in readdir order. Then the data: (inode, offset,
// length, bytes) for every data extent (SEEK_DATA to SEEK_HOLE) of every
// regular file, in chunks of at most kDataChunk, ended by inode 0.
//
// An inode with no name (unlinked, still open) is not kept: after a restart
// no descriptor can reach it. Nor is what the kernel holds (lookups, open
// handles): a new mount starts with none. A live image (header flag
// kLiveImage, written for a restart without unmounting) keeps both: every
// inode, and after each record its lookups, opens and linkable flag.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <vector>

#include <fmt/core.h>

#include "core/image.h"
#include "core/namespace.h"
#include "core/namespace_accounting.h"

namespace tmpfsd {

namespace {
constexpr uint64_t kImageMagic = 0x31496473666d7074ULL;  // "tmpfsdI1"
constexpr uint32_t kImageVersion = 1;                    // the data inline
constexpr uint32_t kLazyVersion = 2;  // each page's slot in the swap file instead
constexpr size_t kDataChunk = size_t{1} << 20;
constexpr size_t kXattrNameMax = 255;
constexpr size_t kTargetMax = 4096;  // PATH_MAX
constexpr uint32_t kLiveImage = 1;   // header flag: the kernel's references follow each inode

void put_time(ImageWriter& w, const timespec& t) {
  w.u64(static_cast<uint64_t>(t.tv_sec));
  w.u64(static_cast<uint64_t>(t.tv_nsec));
}

bool get_time(ImageReader& r, timespec* t) {
  uint64_t s, ns;
  if (!r.u64(&s) || !r.u64(&ns)) return false;
  if (ns >= 1000000000) return r.fail("a time with more than 10^9 nanoseconds");
  t->tv_sec = static_cast<time_t>(s);
  t->tv_nsec = static_cast<long>(ns);
  return true;
}

}  // namespace

// Writes the pages of `bs` that are only in memory (kCopy) to slots of
// their own, runs of consecutive pages read and written together (at most
// kDataChunk each, the runs' writes in flight at once), and binds them.
static Status copy_to_slots(swapdev::SlotDevice& dev, Inode& inode,
                            std::vector<FilePages::Binding>& bs) {
  const size_t ps = dev.page_size();
  const size_t max_run = kDataChunk / ps;
  const uint64_t serial = inode.pages->serial();
  std::vector<std::byte> buf;
  for (size_t i = 0; i < bs.size();) {
    if (bs[i].kind != FilePages::Binding::kCopy) {
      ++i;
      continue;
    }
    size_t n = 1;
    while (i + n < bs.size() && n < max_run && bs[i + n].kind == FilePages::Binding::kCopy &&
           bs[i + n].page == bs[i].page + n)
      ++n;
    buf.resize(n * ps);
    size_t got = 0;
    const Status rs = read_into(
        [&](FilePages::ReadDone d) { inode.pages->read(bs[i].page * ps, n * ps, std::move(d)); },
        buf, &got);
    if (!rs) return rs;  // EIO: a page the swap file lost
    if (got != n * ps) return Errno{EIO};
    std::atomic<size_t> pending{0};
    std::atomic<int> err{0};
    std::vector<std::span<const std::byte>> spans;
    for (size_t done = 0; done < n;) {
      const swapdev::SlotRun run = dev.allocate(static_cast<uint32_t>(n - done));
      if (run.count == 0) {
        err.store(-ENOSPC);
        break;
      }
      spans.clear();
      for (uint32_t k = 0; k < run.count; ++k) {
        spans.emplace_back(buf.data() + (done + k) * ps, ps);
        bs[i + done + k].slot = run.first + k;
        bs[i + done + k].kind = FilePages::Binding::kSlot;
      }
      pending.fetch_add(1, std::memory_order_seq_cst);
      dev.write(run.first, spans, swapdev::PageOwner{serial, bs[i + done].page},
                [&pending, &err](int e) {
                  if (e != 0) err.store(e, std::memory_order_seq_cst);
                  pending.fetch_sub(1, std::memory_order_seq_cst);
                });
      done += run.count;
    }
    dev.wait_until([&pending] { return pending.load(std::memory_order_seq_cst) == 0; });
    if (const int e = err.load(); e != 0) return Errno{e == -ENOSPC ? ENOSPC : EIO};
    i += n;
  }
  return {};
}

// The bindings section of a lazy image, after the inodes: per regular
// file with pages, (inode, file serial, page count) then per page (index,
// kind, and for a slot: slot, checksum word or seal version, seal tag),
// inode 0 ending it; then whether the swap file is sealed and, if so, its
// key and seal counter.
static Status save_bindings(ImageWriter& w,
                            const std::vector<std::pair<std::shared_ptr<Inode>, uint64_t>>& files,
                            const Namespace::LazyImage& lazy) {
  swapdev::SlotDevice& dev = *lazy.dev;
  // Nothing the namespace frees from here on is reused or discarded: the
  // slots this image names stay as they are after the daemon is gone.
  dev.keep_slots();
  std::vector<FilePages::Binding> bs;
  for (const auto& file : files) {
    Inode& inode = *file.first;
    bs.clear();
    inode.pages->bindings(&bs);
    if (bs.empty()) continue;
    if (const Status st = copy_to_slots(dev, inode, bs); !st) return st;
    w.u64(inode.ino);
    w.u64(inode.pages->serial());
    w.u64(bs.size());
    for (const FilePages::Binding& b : bs) {
      w.u64(b.page);
      w.u32(b.kind);
      if (b.kind != FilePages::Binding::kSlot) continue;
      swapdev::PageProof proof;
      if (!dev.slot_proof(b.slot, &proof)) return Errno{EIO};
      w.u64(b.slot.value);
      w.u64(proof.sum_or_version);
      w.bytes(proof.tag.data(), proof.tag.size());
    }
  }
  w.u64(0);
  if (const Status st = lazy.sync(); !st) return st;
  const swapdev::Sealer* sealer = dev.sealer();
  w.u32(sealer ? 1 : 0);
  if (sealer) {
    std::array<std::byte, swapdev::Sealer::kKeyBytes> key;
    sealer->copy_key(key);
    w.bytes(key.data(), key.size());
    explicit_bzero(key.data(), key.size());
    w.u64(sealer->counter());
  }
  return w.finish();
}

Status Namespace::save_image(ImageWriter& w, bool live, const LazyImage* lazy) {
  std::vector<std::pair<InodeRef, uint64_t>> files;  // regular files, their sizes
  {
    MutexLock lock(mu_);
    std::vector<const Inode*> keep;
    for (const auto& [ino, inode] : inodes_)
      if (live || inode->nlink > 0 || ino == kRootIno) keep.push_back(inode.get());
    std::sort(keep.begin(), keep.end(),
              [](const Inode* a, const Inode* b) { return a->ino < b->ino; });
    w.u64(kImageMagic);
    w.u32(lazy ? kLazyVersion : kImageVersion);
    w.u32(live ? kLiveImage : 0);
    w.u64(next_ino_);
    w.u64(keep.size());
    for (const Inode* n : keep) {
      w.u64(n->ino);
      w.u64(n->generation);
      w.u32(n->mode);
      w.u32(static_cast<uint32_t>(n->nlink));
      w.u32(n->uid);
      w.u32(n->gid);
      w.u64(n->rdev);
      w.u64(n->size);
      for (const timespec* t : {&n->atime, &n->mtime, &n->ctime, &n->btime}) put_time(w, *t);
      w.u32(n->iflags);
      w.str(n->target);
      w.u32(static_cast<uint32_t>(n->xattrs.size()));
      for (const auto& [name, value] : n->xattrs) {
        w.str(name);
        w.str(value);
      }
      if (n->dir) {
        w.u64(n->dir->parent);
        w.u64(n->dir->size());
        for (auto it = n->dir->after(0); it != n->dir->end(); ++it) {
          w.str(it->second.name);
          w.u64(it->second.ino);
        }
      }
      if (live) {
        w.u64(n->lookups);
        w.u32(n->opens);
        w.u32(n->linkable ? 1 : 0);
      }
      if (n->is_reg() && n->size > 0) files.emplace_back(inodes_.at(n->ino), n->size);
    }
  }
  if (lazy) return save_bindings(w, files, *lazy);
  // The data, read from the pages without moving atime (a hibernation is
  // no access), with no lock of ours held.
  std::vector<std::byte> buf;
  for (const auto& file : files) {
    // Not a structured binding: the read's lambda captures it (clang
    // before 16 refuses to capture those).
    const InodeRef& inode = file.first;
    const uint64_t size = file.second;
    const uint64_t ino = inode->ino;
    for (uint64_t off = 0; off < size;) {
      auto data = lseek(ino, off, SEEK_DATA);
      if (!data) {
        if (data.code() == ENXIO) break;  // only a hole from here on
        return Errno{data.code()};
      }
      auto hole = lseek(ino, *data, SEEK_HOLE);
      if (!hole) return Errno{hole.code()};
      for (off = *data; off < *hole;) {
        const size_t want = static_cast<size_t>(std::min<uint64_t>(kDataChunk, *hole - off));
        buf.resize(want);
        size_t got = 0;
        const Status rs = read_into(
            [&](FilePages::ReadDone d) { inode->pages->read(off, want, std::move(d)); }, buf, &got);
        if (!rs) return rs;  // EIO: a page the swap file lost
        if (got != want) return Errno{EIO};
        w.u64(ino);
        w.u64(off);
        w.u64(got);
        w.bytes(buf.data(), got);
        off += got;
      }
    }
  }
  w.u64(0);
  return w.finish();
}

Status Namespace::load_image(ImageReader& r, const LazyImage* lazy) {
  auto bad = [&r](std::string why, int code = EINVAL) -> Status {
    r.fail(std::move(why));
    return Errno{code};
  };
  struct Saved {
    uint64_t size;
    timespec atime, mtime, ctime;
  };
  std::map<uint64_t, Saved> files;  // regular files: what the data's writes change
  {
    MutexLock lock(mu_);
    if (inodes_.size() != 1 || next_ino_ != kRootIno + 1)
      return bad("load_image on a namespace already in use", EBUSY);
    uint64_t magic, next, count;
    uint32_t version, flags;
    if (!r.u64(&magic) || !r.u32(&version) || !r.u32(&flags) || !r.u64(&next) || !r.u64(&count))
      return Errno{EINVAL};
    const bool live = flags & kLiveImage;
    if (magic != kImageMagic) return bad("not a tmpfsd image");
    if (version != kImageVersion && version != kLazyVersion)
      return bad(fmt::format("image version {}, this tmpfsd reads {} and {}", version,
                             kImageVersion, kLazyVersion));
    loaded_lazy_ = version == kLazyVersion;
    if (loaded_lazy_ && (live || !lazy))
      return bad(
          "the image names slots of the swap file (DIR/swap) it was saved with, and "
          "this start has none (--swap 0, --remote, --zpool, or DIR on a tmpfs?)");
    decltype(inodes_) table;
    uint64_t extra_links = 0, user_xattr_space = 0;
    for (uint64_t i = 0; i < count; ++i) {
      uint64_t ino, gen, rdev, size;
      uint32_t mode, nlink, uid, gid, iflags, nx;
      if (!r.u64(&ino) || !r.u64(&gen) || !r.u32(&mode) || !r.u32(&nlink) || !r.u32(&uid) ||
          !r.u32(&gid) || !r.u64(&rdev) || !r.u64(&size))
        return Errno{EINVAL};
      if (ino < kRootIno || ino >= next || table.count(ino))
        return bad(fmt::format("inode number {} out of range or repeated", ino));
      if ((ino == kRootIno) != (i == 0) || (ino == kRootIno && !S_ISDIR(mode)))
        return bad("the root is not the first inode, or not a directory");
      auto n = std::make_shared<Inode>(ino, gen, static_cast<mode_t>(mode));
      n->nlink = nlink;
      n->uid = uid;
      n->gid = gid;
      n->rdev = static_cast<dev_t>(rdev);
      n->size = size;
      for (timespec* t : {&n->atime, &n->mtime, &n->ctime, &n->btime})
        if (!get_time(r, t)) return Errno{EINVAL};
      if (!r.u32(&iflags) || !r.str(&n->target, kTargetMax) || !r.u32(&nx)) return Errno{EINVAL};
      n->iflags = iflags;
      for (uint32_t x = 0; x < nx; ++x) {
        std::string name, value;
        if (!r.str(&name, kXattrNameMax + 32) || !r.str(&value, kXattrSizeMax))
          return Errno{EINVAL};
        if (is_user_xattr(name)) user_xattr_space += xattr_space(name, value.size());
        n->xattrs.emplace(std::move(name), std::move(value));
      }
      if (n->is_dir()) {
        n->dir = std::make_unique<Directory>();
        uint64_t entries;
        if (!r.u64(&n->dir->parent) || !r.u64(&entries)) return Errno{EINVAL};
        for (uint64_t e = 0; e < entries; ++e) {
          std::string name;
          uint64_t child;
          if (!r.str(&name, kNameMax) || !r.u64(&child)) return Errno{EINVAL};
          if (name.empty() || name == "." || name == ".." || name.find('/') != name.npos ||
              n->dir->find(name) != 0)
            return bad(fmt::format("directory {}: a bad or repeated name", ino));
          n->dir->insert(name, child);
        }
      } else if (n->is_reg()) {
        n->pages = std::make_unique<FilePages>(cache_);
        files[ino] = Saved{size, n->atime, n->mtime, n->ctime};
        if (nlink > 1) extra_links += nlink - 1;
      } else if (nlink > 1) {
        extra_links += nlink - 1;
      }
      if (live) {
        uint32_t opens, linkable;
        if (!r.u64(&n->lookups) || !r.u32(&opens) || !r.u32(&linkable)) return Errno{EINVAL};
        n->opens = opens;
        n->linkable = linkable != 0;
        if (n->nlink == 0 && n->lookups == 0 && n->opens == 0 && ino != kRootIno)
          return bad(fmt::format("inode {} has no name and no reference", ino));
      }
      table.emplace(ino, std::move(n));
    }
    // Every name names an inode of the image, and every inode has as many
    // names as its nlink says (a directory: its name, "." and its
    // subdirectories' "..").
    std::map<uint64_t, uint64_t> names;
    for (const auto& [ino, n] : table) {
      if (!n->dir) continue;
      for (auto it = n->dir->after(0); it != n->dir->end(); ++it) {
        auto c = table.find(it->second.ino);
        if (c == table.end() || c->first == kRootIno)
          return bad(fmt::format("directory {} names an inode the image lacks", ino));
        if (c->second->dir && c->second->dir->parent != ino)
          return bad(fmt::format("directory {}'s parent is not {}", c->first, ino));
        ++names[c->first];
        if (c->second->dir) ++names[ino];  // its ".."
      }
    }
    for (const auto& [ino, n] : table) {
      if (live && n->nlink == 0) continue;  // unlinked, held by the kernel
      const uint64_t expect = n->dir ? names[ino] + (ino == kRootIno ? 2 : 1) : names[ino];
      if (n->nlink != expect)
        return bad(fmt::format("inode {} has nlink {} and {} names", ino, n->nlink, expect));
    }
    // The budget: as if each inode, extra link and user xattr were made now.
    const uint64_t inodes = table.size() + extra_links;
    if (max_inodes_ != 0 && inodes * kInodeSpace + user_xattr_space > max_inodes_ * kInodeSpace)
      return bad(fmt::format("the image holds {} inodes and links, more than nr_inodes={}", inodes,
                             max_inodes_),
                 ENOSPC);
    if (!live) table[kRootIno]->lookups = 1;  // the kernel never forgets the root
    inodes_ = std::move(table);
    next_ino_ = next;
    inodes_used_ = inodes;
    if (max_inodes_ != 0)
      ispace_free_ = max_inodes_ * kInodeSpace - inodes * kInodeSpace - user_xattr_space;
  }
  if (loaded_lazy_) return load_bindings(r, *lazy);
  // The data, written as a writer would; then what those writes moved is
  // put back.
  std::vector<std::byte> buf;
  for (;;) {
    uint64_t ino, off, len;
    if (!r.u64(&ino)) return Errno{EINVAL};
    if (ino == 0) break;
    if (!r.u64(&off) || !r.u64(&len)) return Errno{EINVAL};
    auto f = files.find(ino);
    if (f == files.end() || len == 0 || len > kDataChunk || off > f->second.size ||
        len > f->second.size - off)
      return bad(fmt::format("data for inode {} outside a regular file", ino));
    buf.resize(len);
    if (!r.bytes(buf.data(), len)) return Errno{EINVAL};
    auto wr = write(ino, off, buf, false);
    if (!wr)
      return bad(fmt::format("inode {}: writing its data back: {}", ino, std::strerror(wr.code())),
                 wr.code());
  }
  if (!r.finish()) return Errno{EINVAL};
  MutexLock lock(mu_);
  for (const auto& [ino, s] : files) {
    Inode& n = *inodes_.at(ino);
    n.size = s.size;
    n.atime = s.atime;
    n.mtime = s.mtime;
    n.ctime = s.ctime;
  }
  return {};
}

Status Namespace::load_bindings(ImageReader& r, const LazyImage& lazy) {
  auto bad = [&r](std::string why, int code = EINVAL) -> Status {
    r.fail(std::move(why));
    return Errno{code};
  };
  swapdev::SlotDevice& dev = *lazy.dev;
  struct File {
    FilePages* pages;
    std::vector<FilePages::Binding> bs;
    std::vector<swapdev::PageProof> proofs;  // one per kSlot binding, in order
  };
  std::vector<File> named;
  for (;;) {
    uint64_t ino, serial, count;
    if (!r.u64(&ino)) return Errno{EINVAL};
    if (ino == 0) break;
    if (!r.u64(&serial) || !r.u64(&count)) return Errno{EINVAL};
    File& f = named.emplace_back();
    {
      MutexLock lock(mu_);
      auto it = inodes_.find(ino);
      if (it == inodes_.end() || !it->second->is_reg() || serial == 0 ||
          it->second->pages->pages() != 0 || count > kMaxFileSize)
        return bad(fmt::format("slots for inode {}, not a regular file or named twice", ino));
      it->second->pages = std::make_unique<FilePages>(cache_, serial);
      f.pages = it->second->pages.get();
    }
    for (uint64_t i = 0; i < count; ++i) {
      FilePages::Binding b;
      uint32_t kind;
      if (!r.u64(&b.page) || !r.u32(&kind)) return Errno{EINVAL};
      if ((i > 0 && b.page <= f.bs.back().page) || kind > FilePages::Binding::kZeroUptodate ||
          kind == FilePages::Binding::kCopy)
        return bad(fmt::format("inode {}: a bad page binding", ino));
      b.kind = static_cast<FilePages::Binding::Kind>(kind);
      if (b.kind == FilePages::Binding::kSlot) {
        swapdev::PageProof& proof = f.proofs.emplace_back();
        if (!r.u64(&b.slot.value) || !r.u64(&proof.sum_or_version) ||
            !r.bytes(proof.tag.data(), proof.tag.size()))
          return Errno{EINVAL};
      }
      f.bs.push_back(b);
    }
  }
  uint32_t sealed;
  if (!r.u32(&sealed)) return Errno{EINVAL};
  std::array<std::byte, swapdev::Sealer::kKeyBytes> key{};
  uint64_t counter = 0;
  if (sealed && (!r.bytes(key.data(), key.size()) || !r.u64(&counter))) return Errno{EINVAL};
  const bool whole = r.finish();
  struct Wipe {
    std::array<std::byte, swapdev::Sealer::kKeyBytes>& k;
    ~Wipe() { explicit_bzero(k.data(), k.size()); }
  } wipe{key};
  if (!whole) return Errno{EINVAL};
  if ((sealed != 0) != dev.sealed())
    return bad(sealed ? "the swap file was sealed and this start has --seal off"
                      : "the swap file was not sealed (--seal off) and this start seals");
  // The counter was read before the old daemon's last writes (the
  // reclaimer may still have sealed pages after the save): a nonce must
  // never be drawn twice under the key, so the new one starts far past it.
  constexpr uint64_t kCounterGap = uint64_t{1} << 32;
  if (sealed && (counter == 0 || counter > UINT64_MAX / 2))
    return bad("the swap file's seal counter is out of range");
  if (std::string why; sealed && !dev.adopt_key(key, counter + kCounterGap, &why))
    return bad("the swap file's seal key: " + why, EIO);
  for (const File& f : named) {
    size_t p = 0;
    for (const FilePages::Binding& b : f.bs) {
      if (b.kind != FilePages::Binding::kSlot) continue;
      if (!dev.adopt_slot(b.slot, f.proofs[p++]))
        return bad(fmt::format("slot {} is outside the swap file, named twice, or has no proof",
                               b.slot.value));
    }
    if (const Status st = f.pages->adopt(f.bs); !st)
      return bad(fmt::format("binding pages to slots: {}", std::strerror(st.code())), st.code());
  }
  return {};
}

}  // namespace tmpfsd
