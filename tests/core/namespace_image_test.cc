// Tests core/namespace_image.cc and core/image.{h,cc}: a tree saved and
// loaded into a fresh namespace is the same tree, stat for stat and byte for
// byte; an image cut short, altered or too big for the mount is refused with
// its reason.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "core/namespace.h"
#include "core/page_cache.h"

using namespace tmpfsd;

namespace {

struct Mount {
  explicit Mount(uint64_t max_inodes = 0) {
    PageCacheConfig pc;
    pc.memory_bytes = 64 << 20;
    cache = std::move(PageCache::create(pc).value());
    NamespaceConfig nc;
    nc.max_inodes = max_inodes;
    ns = std::make_unique<Namespace>(nc, *cache);
  }
  std::unique_ptr<PageCache> cache;
  std::unique_ptr<Namespace> ns;
};

std::string save(Namespace& ns, bool live = false) {
  std::string out;
  ImageWriter w([&](std::span<const std::byte> b) {
    out.append(reinterpret_cast<const char*>(b.data()), b.size());
    return Status{};
  });
  REQUIRE(ns.save_image(w, live).is_ok());
  return out;
}

// Loads `image` into m; returns the status and the reader's reason.
std::pair<Status, std::string> load(Mount& m, const std::string& image) {
  size_t pos = 0;
  ImageReader r([&](std::span<std::byte> out) -> Result<size_t> {
    const size_t n = std::min(out.size(), image.size() - pos);
    std::memcpy(out.data(), image.data() + pos, n);
    pos += n;
    return n;
  });
  Status s = m.ns->load_image(r);
  return {s, r.why()};
}

std::string contents(Namespace& ns, uint64_t ino) {
  const uint64_t size = ns.getattr(ino)->size;
  std::string out;
  read_and_wait([&](FilePages::ReadDone d) { ns.read(ino, 0, size, std::move(d)); },
                [&](Status s, std::span<const iovec> iov) {
                  REQUIRE(s.is_ok());
                  for (const iovec& v : iov)
                    out.append(static_cast<const char*>(v.iov_base), v.iov_len);
                });
  return out;
}

// Everything a user sees of the tree under `ino`, path by path.
void walk(Namespace& ns, uint64_t ino, const std::string& path,
          std::map<std::string, std::string>& out) {
  Attr a = *ns.getattr(ino);
  std::string d = fmt::format(
      "ino={} gen={} mode={:o} nlink={} uid={} gid={} rdev={} size={} blocks={} a={}.{} m={}.{} "
      "c={}.{} b={}.{} flags={:x}",
      a.ino, a.generation, a.mode, a.nlink, a.uid, a.gid, a.rdev, a.size, a.blocks, a.atime.tv_sec,
      a.atime.tv_nsec, a.mtime.tv_sec, a.mtime.tv_nsec, a.ctime.tv_sec, a.ctime.tv_nsec,
      a.btime.tv_sec, a.btime.tv_nsec, a.iflags);
  auto names = ns.listxattr(ino);
  REQUIRE(names.is_ok());
  for (size_t at = 0; at < names->size();) {
    std::string n = names->c_str() + at;
    at += n.size() + 1;
    d += fmt::format(" xattr {}={}", n, *ns.getxattr(ino, n));
  }
  if (S_ISLNK(a.mode)) d += " -> " + *ns.readlink(ino);
  if (S_ISREG(a.mode)) {
    const std::string data = contents(ns, ino);
    d += fmt::format(" data={} bytes, hash {:x}", data.size(), std::hash<std::string>{}(data));
    for (uint64_t off = 0;;) {
      auto x = ns.lseek(ino, off, SEEK_DATA);
      if (!x) break;
      auto h = ns.lseek(ino, *x, SEEK_HOLE);
      d += fmt::format(" extent {}-{}", *x, *h);
      off = *h;
    }
  }
  out[path] = d;
  if (!S_ISDIR(a.mode)) return;
  REQUIRE(ns.opendir(ino).is_ok());
  uint64_t pass_end = 0;
  std::vector<std::pair<std::string, uint64_t>> kids;
  REQUIRE(ns.readdir(ino, 0, false, &pass_end, [&](const DirEntryView& e, const Attr*) {
              kids.emplace_back(std::string(e.name), e.ino);
              return true;
            }).is_ok());
  std::string order;
  for (auto& [name, child] : kids) {
    order += name + " ";
    if (name == "." || name == "..") continue;
    walk(ns, child, path + "/" + name, out);
  }
  out[path + " (order)"] = order;
  ns.release(ino);
}

// A tree with one of everything an image must keep.
void build(Namespace& ns) {
  const Caller root{};
  auto d = ns.mkdir(kRootIno, "dir", 0750, root);
  REQUIRE(d.is_ok());
  auto sub = ns.mkdir(d->ino, "sub", 02775, root);
  REQUIRE(sub.is_ok());
  auto f = ns.mknod(d->ino, "file", S_IFREG | 0640, 0, root);
  REQUIRE(f.is_ok());
  std::string text(10000, 'x');
  for (size_t i = 0; i < text.size(); ++i) text[i] = static_cast<char>('a' + i % 26);
  REQUIRE(ns.write(f->ino, 0, std::as_bytes(std::span(text)), false).is_ok());
  // A sparse file: data at 0, a hole, data at 1 MiB, a trailing hole.
  auto sparse = ns.mknod(kRootIno, "sparse", S_IFREG | 0600, 0, root);
  REQUIRE(sparse.is_ok());
  REQUIRE(ns.write(sparse->ino, 0, std::as_bytes(std::span(text.data(), 100)), false).is_ok());
  REQUIRE(
      ns.write(sparse->ino, 1 << 20, std::as_bytes(std::span(text.data(), 5000)), false).is_ok());
  SetAttr grow;
  grow.size = uint64_t{8} << 20;
  REQUIRE(ns.setattr(sparse->ino, grow).is_ok());
  auto empty = ns.mknod(sub->ino, "empty", S_IFREG | 0644, 0, root);
  REQUIRE(empty.is_ok());
  REQUIRE(ns.link(f->ino, kRootIno, "hardlink").is_ok());
  REQUIRE(ns.symlink(kRootIno, "short", "dir/file", root).is_ok());
  REQUIRE(ns.symlink(kRootIno, "long", std::string(300, 'L'), root).is_ok());
  REQUIRE(ns.mknod(kRootIno, "fifo", S_IFIFO | 0600, 0, root).is_ok());
  REQUIRE(ns.mknod(d->ino, "null", S_IFCHR | 0666, makedev(1, 3), root).is_ok());
  REQUIRE(ns.setxattr(f->ino, "user.note", "hello", 0).is_ok());
  REQUIRE(ns.setxattr(d->ino, "trusted.x", std::string("\0bin\xff", 5), 0).is_ok());
  SetAttr own;
  own.uid = 1000;
  own.gid = 100;
  own.mtime = timespec{123456789, 987654321};
  REQUIRE(ns.setattr(empty->ino, own).is_ok());
  REQUIRE(ns.set_flags(empty->ino, FS_IMMUTABLE_FL).is_ok());
  // Gone before the save: an unlinked file still open is not kept.
  auto gone = ns.create(kRootIno, "gone", S_IFREG | 0644, O_RDWR, root);
  REQUIRE(gone.is_ok());
  REQUIRE(ns.unlink(kRootIno, "gone").is_ok());
  REQUIRE(ns.unlink(kRootIno, "fifo").is_ok());
  REQUIRE(ns.mknod(kRootIno, "fifo", S_IFIFO | 0600, 0, root).is_ok());  // a later cookie
}

}  // namespace

TEST_CASE("image: a tree saved and loaded is the same, stat for stat and byte for byte",
          "[image]") {
  Mount a;
  build(*a.ns);
  std::map<std::string, std::string> before;
  walk(*a.ns, kRootIno, "", before);
  const std::string image = save(*a.ns);
  // A walk reads every file, which moves atimes (relatime) after it has
  // noted them: the reference is a second walk, which moves nothing more.
  // The save itself is no access and moves nothing.
  before.clear();
  walk(*a.ns, kRootIno, "", before);

  Mount b;
  auto [s, why] = load(b, image);
  INFO(why);
  REQUIRE(s.is_ok());
  std::map<std::string, std::string> after;
  walk(*b.ns, kRootIno, "", after);
  for (auto& [path, d] : before) {
    INFO(path);
    CHECK(after[path] == d);
  }
  CHECK(after.size() == before.size());
  // Without "gone" and the first "fifo", unlinked but still known to the
  // kernel (open, looked up).
  CHECK(b.ns->inode_count() == a.ns->inode_count() - 2);
  // New inodes continue the numbering: no number is used twice.
  auto n = b.ns->mknod(kRootIno, "new", S_IFREG | 0644, 0, {});
  REQUIRE(n.is_ok());
  for (auto& [path, d] : before) CHECK(d.find(fmt::format("ino={} ", n->ino)) == std::string::npos);
  // The immutable flag still holds.
  auto sub = b.ns->lookup(b.ns->lookup(kRootIno, "dir")->ino, "sub");
  REQUIRE(sub.is_ok());
  CHECK(b.ns->unlink(sub->ino, "empty").code() == EPERM);
  // A sparse file keeps its holes: its blocks are its two data pages' worth.
  auto sp = b.ns->lookup(kRootIno, "sparse");
  CHECK(sp->blocks == 2 * 4096 / 512 + 4096 / 512);  // 0..5000 at 1 MiB spans two pages
  CHECK(sp->size == uint64_t{8} << 20);
}

TEST_CASE("image: an image cut short, altered or grown is refused with the reason", "[image]") {
  Mount a;
  build(*a.ns);
  const std::string image = save(*a.ns);
  {
    Mount b;
    auto [s, why] = load(b, image.substr(0, image.size() / 2));
    CHECK(s.code() == EINVAL);
    CHECK(why.find("ends too soon") != std::string::npos);
  }
  {
    // One byte of file data flipped: only the checksum can tell.
    std::string bad = image;
    const size_t at = bad.find("abcdefghij");
    REQUIRE(at != std::string::npos);
    bad[at + 3] = 'X';
    Mount b;
    auto [s, why] = load(b, bad);
    CHECK(s.code() == EINVAL);
    CHECK(why.find("checksum mismatch") != std::string::npos);
  }
  {
    Mount b;
    auto [s, why] = load(b, image + "more");
    CHECK(s.code() == EINVAL);
    CHECK(why.find("after the image's trailer") != std::string::npos);
  }
  {
    Mount b;
    auto [s, why] = load(b, "not an image at all, but long enough to hold a header");
    CHECK(s.code() == EINVAL);
    CHECK(why == "not a tmpfsd image");
  }
  {
    Mount b;
    REQUIRE(b.ns->mkdir(kRootIno, "used", 0755, {}).is_ok());
    auto [s, why] = load(b, image);
    CHECK(s.code() == EBUSY);
  }
  {
    Mount b(/*max_inodes=*/4);
    auto [s, why] = load(b, image);
    CHECK(s.code() == ENOSPC);
    CHECK(why.find("more than nr_inodes=4") != std::string::npos);
  }
}

// A live image (a restart without unmounting) keeps what the kernel holds:
// the unlinked file still open, with its data; every lookup count and open
// count, so that the kernel's FORGETs and RELEASEs balance in the next
// daemon (an underflow would abort), and the unlinked file goes at the last.
TEST_CASE("image: a live image keeps unlinked open inodes, lookups and opens", "[image]") {
  Mount a;
  build(*a.ns);
  const Caller root{};
  auto held = a.ns->create(kRootIno, "held", S_IFREG | 0644, O_RDWR, root);  // 1 lookup, 1 open
  REQUIRE(held.is_ok());
  const std::string data(20000, 'q');
  REQUIRE(a.ns->write(held->ino, 0, std::as_bytes(std::span(data)), false).is_ok());
  REQUIRE(a.ns->unlink(kRootIno, "held").is_ok());
  auto dir = a.ns->lookup(kRootIno, "dir");  // a second lookup of dir (mkdir made the first)
  REQUIRE(dir.is_ok());
  REQUIRE(a.ns->opendir(dir->ino).is_ok());
  auto gone_dir = a.ns->mkdir(kRootIno, "gone-dir", 0755, root);  // removed while open
  REQUIRE(gone_dir.is_ok());
  REQUIRE(a.ns->opendir(gone_dir->ino).is_ok());
  REQUIRE(a.ns->rmdir(kRootIno, "gone-dir").is_ok());
  const uint64_t count = a.ns->inode_count();
  const std::string image = save(*a.ns, /*live=*/true);

  Mount b;
  auto [s, why] = load(b, image);
  INFO(why);
  REQUIRE(s.is_ok());
  CHECK(b.ns->inode_count() == count);
  CHECK(contents(*b.ns, held->ino) == data);
  CHECK(b.ns->getattr(held->ino)->nlink == 0);
  // What the kernel would send: the counts it holds, no more.
  b.ns->forget(dir->ino, 2);
  b.ns->release(dir->ino);
  b.ns->release(gone_dir->ino);
  b.ns->forget(gone_dir->ino, 1);
  b.ns->release(held->ino);
  CHECK(b.ns->getattr(held->ino).is_ok());  // a lookup still holds it
  b.ns->forget(held->ino, 1);
  CHECK(!b.ns->getattr(held->ino).is_ok());  // freed
  CHECK(!b.ns->getattr(gone_dir->ino).is_ok());
  CHECK(b.ns->inode_count() == count - 2);
}
