// Namespace unit tests: names, links, rename rules, readdir offsets, lookup
// counting and limits, without FUSE. tmpfs's numbers (20-byte directory
// entries, one inode per extra hard link) are asserted where they show.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/xattr.h>

#include <atomic>
#include <future>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "core/namespace.h"
#include "core/page_cache.h"

using namespace tmpfsd;

namespace {

struct Fixture {
  explicit Fixture(uint64_t max_inodes = 0, uint64_t max_pages = 0, NamespaceConfig nc = {}) {
    PageCacheConfig pc;
    pc.memory_bytes = 64 << 20;
    pc.max_pages = max_pages;
    cache = std::move(PageCache::create(pc).value());
    nc.max_inodes = max_inodes;
    ns = std::make_unique<Namespace>(nc, *cache);
  }
  uint64_t mkfile(uint64_t parent, const std::string& name) {
    auto r = ns->mknod(parent, name, S_IFREG | 0644, 0, {});
    REQUIRE(r.is_ok());
    return r->ino;
  }
  // A new file in the root with `mode` (set-ID bits and all).
  uint64_t setid_file(const std::string& name, mode_t mode) {
    uint64_t ino = mkfile(kRootIno, name);
    SetAttr c;
    c.mode = mode;
    REQUIRE(ns->setattr(ino, c).is_ok());
    return ino;
  }
  mode_t mode_of(uint64_t ino) { return ns->getattr(ino)->mode & 07777; }
  uint64_t mkdir(uint64_t parent, const std::string& name) {
    auto r = ns->mkdir(parent, name, 0755, {});
    REQUIRE(r.is_ok());
    return r->ino;
  }
  std::unique_ptr<PageCache> cache;
  std::unique_ptr<Namespace> ns;
};

}  // namespace

TEST_CASE("directory link counts and sizes follow tmpfs", "[namespace]") {
  Fixture f;
  auto root = f.ns->getattr(kRootIno);
  REQUIRE(root->nlink == 2);
  REQUIRE(root->size == 40);
  uint64_t d = f.mkdir(kRootIno, "d");
  f.mkdir(d, "sub");
  f.mkfile(d, "file");
  CHECK(f.ns->getattr(kRootIno)->nlink == 3);
  CHECK(f.ns->getattr(d)->nlink == 3);
  CHECK(f.ns->getattr(d)->size == 80);
  CHECK(f.ns->rmdir(kRootIno, "d").code() == ENOTEMPTY);
  CHECK(f.ns->rmdir(d, "file").code() == ENOTDIR);
  CHECK(f.ns->unlink(d, "sub").code() == EISDIR);
  REQUIRE(f.ns->rmdir(d, "sub").is_ok());
  CHECK(f.ns->getattr(d)->nlink == 2);
}

TEST_CASE("names longer than 255 bytes are ENAMETOOLONG", "[namespace]") {
  Fixture f;
  CHECK(f.ns->mknod(kRootIno, std::string(255, 'a'), S_IFREG | 0644, 0, {}).is_ok());
  CHECK(f.ns->mknod(kRootIno, std::string(256, 'a'), S_IFREG | 0644, 0, {}).code() == ENAMETOOLONG);
  CHECK(f.ns->lookup(kRootIno, std::string(256, 'a')).code() == ENAMETOOLONG);
  CHECK(f.ns->mknod(kRootIno, std::string(255, 'a'), S_IFREG | 0644, 0, {}).code() == EEXIST);
}

TEST_CASE("hard links count and an unlinked open file lives until release and forget",
          "[namespace]") {
  Fixture f;
  uint64_t ino = f.mkfile(kRootIno, "a");
  REQUIRE(f.ns->link(ino, kRootIno, "b").is_ok());
  CHECK(f.ns->getattr(ino)->nlink == 2);
  REQUIRE(f.ns->open(ino, O_RDWR).is_ok());
  REQUIRE(f.ns->unlink(kRootIno, "a").is_ok());
  REQUIRE(f.ns->unlink(kRootIno, "b").is_ok());
  auto data = std::string("still here");
  REQUIRE(f.ns->write(ino, 0, std::as_bytes(std::span(data)), false).is_ok());
  CHECK(f.ns->getattr(ino)->nlink == 0);
  f.ns->release(ino);
  CHECK(f.ns->getattr(ino).is_ok());  // the kernel still holds two lookups
  f.ns->forget(ino, 2);
  CHECK(f.ns->getattr(ino).code() == ENOENT);
  CHECK(f.ns->inode_count() == 1);
}

TEST_CASE("rename rules", "[namespace]") {
  Fixture f;
  uint64_t a = f.mkdir(kRootIno, "a");
  uint64_t b = f.mkdir(a, "b");
  f.mkfile(kRootIno, "f");
  f.mkfile(kRootIno, "g");
  f.mkdir(kRootIno, "empty");
  uint64_t full = f.mkdir(kRootIno, "full");
  f.mkfile(full, "x");

  CHECK(f.ns->rename(kRootIno, "a", b, "inside", 0).code() == EINVAL);
  CHECK(f.ns->rename(kRootIno, "a", a, "self", 0).code() == EINVAL);
  CHECK(f.ns->rename(kRootIno, "f", kRootIno, "empty", 0).code() == EISDIR);
  CHECK(f.ns->rename(kRootIno, "empty", kRootIno, "f", 0).code() == ENOTDIR);
  CHECK(f.ns->rename(kRootIno, "a", kRootIno, "full", 0).code() == ENOTEMPTY);
  CHECK(f.ns->rename(kRootIno, "f", kRootIno, "g", RENAME_NOREPLACE).code() == EEXIST);
  CHECK(f.ns->rename(kRootIno, "f", kRootIno, "nope", RENAME_EXCHANGE).code() == ENOENT);
  CHECK(f.ns->rename(kRootIno, "missing", kRootIno, "x", 0).code() == ENOENT);

  // A directory moving between parents moves its ".." link.
  REQUIRE(f.ns->rename(a, "b", kRootIno, "b", 0).is_ok());
  CHECK(f.ns->getattr(a)->nlink == 2);
  uint64_t parent_links = f.ns->getattr(kRootIno)->nlink;
  CHECK(f.ns->lookup(b, "..")->ino == kRootIno);

  // Exchange a file and a directory across directories.
  REQUIRE(f.ns->rename(kRootIno, "f", a, "b2", 0).is_ok());
  REQUIRE(f.ns->rename(a, "b2", kRootIno, "b", RENAME_EXCHANGE).is_ok());
  CHECK(f.ns->lookup(a, "b2")->ino == b);
  CHECK(f.ns->getattr(kRootIno)->nlink == parent_links - 1);
  CHECK(f.ns->getattr(a)->nlink == 3);

  // Replacing a file frees the replaced one once forgotten.
  uint64_t g = f.ns->lookup(kRootIno, "g")->ino;
  REQUIRE(f.ns->rename(kRootIno, "b", kRootIno, "g", 0).is_ok());
  CHECK(f.ns->getattr(g)->nlink == 0);
}

TEST_CASE("readdir offsets survive insertions and removals", "[namespace]") {
  Fixture f;
  for (int i = 0; i < 50; ++i) f.mkfile(kRootIno, "f" + std::to_string(i));
  std::set<std::string> seen;
  uint64_t off = 0, pass = 0;
  int added = 0;
  for (;;) {
    std::vector<std::pair<std::string, uint64_t>> batch;
    REQUIRE(f.ns->readdir(kRootIno, off, false, &pass,
                          [&](const DirEntryView& d, const Attr*) {
                            batch.emplace_back(std::string(d.name), d.next);
                            return batch.size() < 7;
                          })
                .is_ok());
    if (batch.empty()) break;
    for (auto& [name, next] : batch) {
      CHECK(seen.insert(name).second);  // never twice
      off = next;
    }
    // Churn between batches: remove odd entries not seen yet, add new ones.
    for (int i = 1; i < 50; i += 2) {
      std::string n = "f" + std::to_string(i);
      if (!seen.count(n)) (void)f.ns->unlink(kRootIno, n);
    }
    if (added < 5)
      (void)f.ns->mknod(kRootIno, "new" + std::to_string(added++), S_IFREG | 0644, 0, {});
  }
  for (int i = 0; i < 50; i += 2) CHECK(seen.count("f" + std::to_string(i)) == 1);  // none skipped
}

TEST_CASE("readdirplus counts a lookup for every entry it returns", "[namespace]") {
  Fixture f;
  uint64_t ino = f.mkfile(kRootIno, "a");
  f.ns->forget(ino, 1);
  uint64_t pass = 0;
  REQUIRE(
      f.ns->readdir(kRootIno, 0, true, &pass, [](const DirEntryView&, const Attr*) { return true; })
          .is_ok());
  REQUIRE(f.ns->unlink(kRootIno, "a").is_ok());
  CHECK(f.ns->getattr(ino).is_ok());
  f.ns->forget(ino, 1);
  CHECK(f.ns->getattr(ino).code() == ENOENT);
}

TEST_CASE("O_TMPFILE: no name, one inode, linkable once unless O_EXCL, freed at the end",
          "[namespace][tmpfile]") {
  Fixture f(4);  // the root takes one
  uint64_t d = f.mkdir(kRootIno, "d");
  auto t = f.ns->tmpfile(d, 0640, O_RDWR, {});
  REQUIRE(t.is_ok());
  CHECK(t->nlink == 0);
  CHECK(S_ISREG(t->mode));
  CHECK((t->mode & 07777) == 0640);
  CHECK(f.ns->statfs().files_free == 1);  // it counts against nr_inodes=
  CHECK(f.ns->getattr(d)->size == 40);    // and is in no directory
  auto data = std::string("unnamed");
  REQUIRE(f.ns->write(t->ino, 0, std::as_bytes(std::span(data)), false).is_ok());
  // The first name takes over its inode: no second one is charged.
  REQUIRE(f.ns->link(t->ino, d, "named").is_ok());
  CHECK(f.ns->getattr(t->ino)->nlink == 1);
  CHECK(f.ns->statfs().files_free == 1);
  REQUIRE(f.ns->unlink(d, "named").is_ok());
  CHECK(f.ns->link(t->ino, d, "again").code() == ENOENT);  // once only
  f.ns->release(t->ino);
  f.ns->forget(t->ino, 2);  // the tmpfile's lookup and the link's
  CHECK(f.ns->getattr(t->ino).code() == ENOENT);
  CHECK(f.ns->statfs().files_free == 2);

  auto excl = f.ns->tmpfile(d, 0600, O_RDWR | O_EXCL, {});
  REQUIRE(excl.is_ok());
  CHECK(f.ns->link(excl->ino, d, "x").code() == ENOENT);
  CHECK(f.ns->tmpfile(d, 0600, O_RDWR, {}).is_ok());
  CHECK(f.ns->tmpfile(d, 0600, O_RDWR, {}).code() == ENOSPC);    // nr_inodes= used up
  CHECK(f.ns->tmpfile(999, 0600, O_RDWR, {}).code() == ENOENT);  // no such directory
}

TEST_CASE("birth time is set at creation and kept", "[namespace][statx]") {
  Fixture f;
  uint64_t a = f.mkfile(kRootIno, "a");
  auto before = f.ns->getattr(a);
  REQUIRE(before.is_ok());
  CHECK(before->btime.tv_sec != 0);
  CHECK(before->btime.tv_sec == before->ctime.tv_sec);
  CHECK(before->btime.tv_nsec == before->ctime.tv_nsec);
  SetAttr chmod;
  chmod.mode = 0600;
  REQUIRE(f.ns->setattr(a, chmod).is_ok());
  auto after = f.ns->getattr(a);
  CHECK(after->btime.tv_sec == before->btime.tv_sec);
  CHECK(after->btime.tv_nsec == before->btime.tv_nsec);
}

TEST_CASE("nr_inodes counts inodes and extra hard links like tmpfs", "[namespace]") {
  Fixture f(4);  // the root takes one
  uint64_t a = f.mkfile(kRootIno, "a");
  CHECK(f.ns->statfs().files_free == 2);
  REQUIRE(f.ns->link(a, kRootIno, "a2").is_ok());
  f.mkfile(kRootIno, "b");
  CHECK(f.ns->mknod(kRootIno, "c", S_IFREG | 0644, 0, {}).code() == ENOSPC);
  CHECK(f.ns->link(a, kRootIno, "a3").code() == ENOSPC);
  REQUIRE(f.ns->unlink(kRootIno, "a2").is_ok());
  CHECK(f.ns->statfs().files_free == 1);
}

TEST_CASE("xattrs: flags, namespaces and limits", "[namespace]") {
  Fixture f(10);
  uint64_t a = f.mkfile(kRootIno, "a");
  CHECK(f.ns->getxattr(a, "user.x").code() == ENODATA);
  CHECK(f.ns->setxattr(a, "user.x", "1", XATTR_REPLACE).code() == ENODATA);
  REQUIRE(f.ns->setxattr(a, "user.x", "1", XATTR_CREATE).is_ok());
  CHECK(f.ns->setxattr(a, "user.x", "2", XATTR_CREATE).code() == EEXIST);
  REQUIRE(f.ns->setxattr(a, "user.x", "22", XATTR_REPLACE).is_ok());
  CHECK(*f.ns->getxattr(a, "user.x") == "22");
  CHECK(f.ns->setxattr(a, "bogus.x", "1", 0).code() == EOPNOTSUPP);
  REQUIRE(f.ns->setxattr(a, "trusted.t", std::string(kXattrSizeMax, 'v'), 0).is_ok());
  CHECK(f.ns->setxattr(a, "trusted.t", std::string(kXattrSizeMax + 1, 'v'), 0).code() == E2BIG);
  CHECK(*f.ns->listxattr(a) == std::string("trusted.t\0user.x\0", 17));
  // user.* share nr_inodes' space: 10 KiB less 2 inodes' 1 KiB each.
  CHECK(f.ns->setxattr(a, "user.big", std::string(9000, 'v'), 0).code() == ENOSPC);
  REQUIRE(f.ns->removexattr(a, "user.x").is_ok());
  CHECK(f.ns->removexattr(a, "user.x").code() == ENODATA);
}

TEST_CASE(
    "setattr times follow tmpfs: truncate(2) to the same size of an empty file moves nothing, "
    "ftruncate does",
    "[namespace]") {
  Fixture f;
  uint64_t a = f.mkfile(kRootIno, "a");
  auto moved = [](const Attr& x, const Attr& y) {
    return x.ctime.tv_sec != y.ctime.tv_sec || x.ctime.tv_nsec != y.ctime.tv_nsec;
  };
  (void)f.ns->getattr(a);  // a stat: the next change gets a fine-grained time
  auto before = *f.ns->getattr(a);
  SetAttr same;
  same.size = 0;
  CHECK_FALSE(moved(*f.ns->setattr(a, same), before));
  same.size_from_handle = true;
  auto after = *f.ns->setattr(a, same);
  CHECK(moved(after, before));
  CHECK((after.mtime.tv_sec == after.ctime.tv_sec && after.mtime.tv_nsec == after.ctime.tv_nsec));
  // A file with pages: truncate(2) to its own size goes through the page
  // truncation and stamps the times.
  auto data = std::string("x");
  REQUIRE(f.ns->write(a, 0, std::as_bytes(std::span(data)), false).is_ok());
  before = *f.ns->getattr(a);
  same.size = 1;
  same.size_from_handle = false;
  CHECK(moved(*f.ns->setattr(a, same), before));
}

TEST_CASE(
    "a write by another user clears set-user-ID and, without group execute, set-group-ID outside "
    "the group",
    "[namespace]") {
  Fixture f;
  uint64_t a = f.mkfile(kRootIno, "a");
  SetAttr m;
  m.mode = 06666;
  REQUIRE(f.ns->setattr(a, m).is_ok());
  auto data = std::string("x");
  Caller member;  // in the file's group (gid 0)
  member.uid = 1000;
  REQUIRE(f.ns->write(a, 0, std::as_bytes(std::span(data)), false, member).is_ok());
  CHECK((f.ns->getattr(a)->mode & 07777) == 02666);
  Caller stranger;
  stranger.uid = stranger.gid = 1000;
  REQUIRE(f.ns->write(a, 0, std::as_bytes(std::span(data)), false, stranger).is_ok());
  CHECK((f.ns->getattr(a)->mode & 07777) == 0666);
  REQUIRE(f.ns->setattr(a, m).is_ok());
  REQUIRE(f.ns->write(a, 0, std::as_bytes(std::span(data)), false, Caller{})
              .is_ok());  // root keeps them
  CHECK((f.ns->getattr(a)->mode & 07777) == 06666);
}

// Regression tests for divergences fsdiff found against kernel tmpfs.

namespace {
bool same_time(const timespec& a, const timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}
std::span<const std::byte> bytes(const std::string& s) { return std::as_bytes(std::span(s)); }
}  // namespace

TEST_CASE("fsdiff: open(O_RDONLY|O_TRUNC) truncates, as Linux does", "[namespace][fsdiff]") {
  Fixture f;
  uint64_t a = f.mkfile(kRootIno, "a");
  REQUIRE(f.ns->write(a, 0, bytes(std::string(859, 'x')), false).is_ok());
  auto r = f.ns->open(a, O_RDONLY | O_TRUNC);
  REQUIRE(r.is_ok());
  CHECK(r->size == 0);
  CHECK(f.ns->getattr(a)->blocks == 0);
  f.ns->release(a);
}

TEST_CASE(
    "fsdiff: pages fallocated past the end go with a truncate to the same size and with a punch",
    "[namespace][fsdiff]") {
  Fixture f;
  uint64_t a = f.mkfile(kRootIno, "a");
  REQUIRE(f.ns->fallocate(a, FALLOC_FL_KEEP_SIZE, 0, 5 * 4096).is_ok());
  CHECK(f.ns->getattr(a)->size == 0);
  CHECK(f.ns->getattr(a)->blocks == 40);
  SetAttr zero;
  zero.size = 0;
  REQUIRE(f.ns->setattr(a, zero).is_ok());
  CHECK(f.ns->getattr(a)->blocks == 0);

  REQUIRE(f.ns->write(a, 0, bytes(std::string(4096, 'y')), false).is_ok());
  REQUIRE(f.ns->fallocate(a, FALLOC_FL_KEEP_SIZE, 4096, 100 * 4096).is_ok());
  CHECK(f.ns->getattr(a)->blocks == 101 * 8);
  REQUIRE(
      f.ns->fallocate(a, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 5 * 4096, 100 * 4096).is_ok());
  CHECK(f.ns->getattr(a)->blocks == 5 * 8);  // pages 0..4 stay, the rest past EOF are punched
}

TEST_CASE("fsdiff: fallocate moves mtime and ctime in every mode, as tmpfs's file_modified",
          "[namespace][fsdiff]") {
  Fixture f;
  uint64_t a = f.mkfile(kRootIno, "a");
  REQUIRE(f.ns->write(a, 0, bytes(std::string(10000, 'z')), false).is_ok());
  for (int mode : {0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE}) {
    auto before = *f.ns->getattr(a);  // a stat: the change after it must show
    REQUIRE(f.ns->fallocate(a, mode, 0, 4096).is_ok());
    auto after = *f.ns->getattr(a);
    CHECK_FALSE(same_time(after.ctime, before.ctime));
    CHECK(same_time(after.mtime, after.ctime));
    CHECK(after.size == 10000);
  }
}

TEST_CASE("fsdiff: copy_file_range within one file moves its atime after the copy",
          "[namespace][fsdiff]") {
  Fixture f;
  uint64_t a = f.mkfile(kRootIno, "a");
  REQUIRE(f.ns->write(a, 0, bytes(std::string(50000, 'q')), false).is_ok());
  // A read first, so that relatime alone would leave atime where it is.
  f.ns->read(a, 0, 10, [](Status, std::span<const iovec>) {});
  auto before = *f.ns->getattr(a);
  REQUIRE(before.atime.tv_sec >= before.mtime.tv_sec);
  auto copied = f.ns->copy_range(a, 34185, a, 12288, 2459);
  REQUIRE(copied.is_ok());
  CHECK(*copied == 2459);
  auto after = *f.ns->getattr(a);
  CHECK_FALSE(same_time(after.mtime, before.mtime));
  CHECK_FALSE(same_time(after.atime, before.atime));
}

TEST_CASE("atime follows the mount's atime options: relatime, noatime, strictatime, nodiratime",
          "[namespace]") {
  using A = NamespaceConfig::Atime;
  struct Case {
    A atime;
    bool nodiratime;
    bool past_moves, future_moves, dir_moves;
  };
  const std::vector<Case> cases = {
      {A::Relatime, false, true, false, true},   {A::Noatime, false, false, false, false},
      {A::Strictatime, false, true, true, true}, {A::Relatime, true, true, false, false},
      {A::Strictatime, true, true, true, false},
  };
  const timespec past{978307200, 0};     // 2001
  const timespec future{1893456000, 0};  // 2030
  for (const Case& c : cases) {
    NamespaceConfig nc;
    nc.atime = c.atime;
    nc.nodiratime = c.nodiratime;
    Fixture f(0, 0, nc);
    INFO("atime mode " << int(c.atime) << ", nodiratime " << c.nodiratime);
    uint64_t a = f.mkfile(kRootIno, "a");
    uint64_t b = f.mkfile(kRootIno, "b");
    uint64_t d = f.mkdir(kRootIno, "d");
    f.mkfile(d, "x");
    std::string data(100, 'z');
    for (uint64_t ino : {a, b})
      REQUIRE(f.ns->write(ino, 0, std::as_bytes(std::span(data)), false).is_ok());
    SetAttr old_atime, new_atime;
    old_atime.atime = past;
    new_atime.atime = future;
    REQUIRE(f.ns->setattr(a, old_atime).is_ok());
    REQUIRE(f.ns->setattr(b, new_atime).is_ok());
    REQUIRE(f.ns->setattr(d, old_atime).is_ok());
    f.ns->read(a, 0, 10, [](Status, std::span<const iovec>) {});
    f.ns->read(b, 0, 10, [](Status, std::span<const iovec>) {});
    uint64_t pass_end = 0;
    REQUIRE(
        f.ns->readdir(d, 0, false, &pass_end, [](const DirEntryView&, const Attr*) { return true; })
            .is_ok());
    CHECK((f.ns->getattr(a)->atime.tv_sec != past.tv_sec) == c.past_moves);
    CHECK((f.ns->getattr(b)->atime.tv_sec != future.tv_sec) == c.future_moves);
    CHECK((f.ns->getattr(d)->atime.tv_sec != past.tv_sec) == c.dir_moves);
  }
}

// tmpfsctl where: runs of one kind, holes by arithmetic, in pieces when the
// caller's array is small; EISDIR/EINVAL for what is not a regular file.
TEST_CASE("where: the runs of a sparse file, in pieces, and of what is not a file",
          "[namespace][where]") {
  Fixture f;
  const uint64_t ino = f.mkfile(kRootIno, "f");
  const std::vector<char> page(4096, 'x');
  auto bytes = std::as_bytes(std::span(page));
  REQUIRE(f.ns->write(ino, 4096, bytes, false).is_ok());
  REQUIRE(f.ns->write(ino, 8192, bytes, false).is_ok());
  const uint64_t far = uint64_t{1} << 49;  // 512 TiB
  REQUIRE(f.ns->write(ino, far, bytes, false).is_ok());
  SetAttr grow;
  grow.size = uint64_t{1} << 50;
  REQUIRE(f.ns->setattr(ino, grow).is_ok());

  std::vector<PageRun> runs(8);
  auto a = f.ns->where(ino, 0, runs);
  REQUIRE(a.is_ok());
  CHECK(a->size == uint64_t{1} << 50);
  CHECK(a->end == (uint64_t{1} << 50) / 4096);
  CHECK(a->next == a->end);
  REQUIRE(a->count == 5);
  const uint64_t p = far / 4096;
  CHECK((runs[0].first == 0 && runs[0].pages == 1 && runs[0].kind == PageKind::kHole));
  CHECK((runs[1].first == 1 && runs[1].pages == 2 && runs[1].kind == PageKind::kResident));
  CHECK((runs[2].first == 3 && runs[2].pages == p - 3 && runs[2].kind == PageKind::kHole));
  CHECK((runs[3].first == p && runs[3].pages == 1 && runs[3].kind == PageKind::kResident));
  CHECK((runs[4].first == p + 1 && runs[4].kind == PageKind::kHole));
  CHECK(runs[4].first + runs[4].pages == a->end);

  // 1 to 4 runs at a time: the caller goes on from `next` and gets the
  // same runs, none twice (a full array may stop after a hole, before the
  // page that follows it, or before the hole).
  for (size_t room = 1; room <= 4; ++room) {
    std::vector<PageRun> all;
    uint64_t from = 0;
    for (int calls = 0; calls < 10 && from < a->end; ++calls) {
      std::vector<PageRun> some(room);
      auto b = f.ns->where(ino, from, some);
      REQUIRE(b.is_ok());
      REQUIRE(b->next > from);
      for (size_t i = 0; i < b->count; ++i) {
        if (!all.empty() && all.back().kind == some[i].kind &&
            all.back().first + all.back().pages == some[i].first)
          all.back().pages += some[i].pages;  // split by the call's end only
        else
          all.push_back(some[i]);
      }
      from = b->next;
    }
    INFO("runs per call: " << room);
    REQUIRE(all.size() == 5);
    for (size_t i = 0; i < 5; ++i)
      CHECK((all[i].first == runs[i].first && all[i].pages == runs[i].pages &&
             all[i].kind == runs[i].kind));
  }

  const uint64_t d = f.mkdir(kRootIno, "d");
  CHECK(f.ns->where(d, 0, runs).code() == EISDIR);
  auto fifo = f.ns->mknod(kRootIno, "p", S_IFIFO | 0644, 0, {});
  REQUIRE(fifo.is_ok());
  CHECK(f.ns->where(fifo->ino, 0, runs).code() == EINVAL);
  CHECK(f.ns->where(999999, 0, runs).code() == ENOENT);
}

// tmpfsctl set and mount -o remount: tmpfs's rules, all or nothing.
TEST_CASE("set_limits: grow, shrink, refuse below use, all or nothing", "[namespace][limits]") {
  Fixture f(10, 16);
  const uint64_t ino = f.mkfile(kRootIno, "f");
  const std::vector<char> data(4 * 4096, 'y');
  REQUIRE(f.ns->write(ino, 0, std::as_bytes(std::span(data)), false).is_ok());
  std::string why;
  CHECK(f.ns->set_limits({.max_pages = 32, .max_inodes = std::nullopt}, &why).is_ok());
  CHECK(f.ns->statfs().blocks == 32);
  CHECK(f.ns->set_limits({.max_pages = 4, .max_inodes = std::nullopt}, &why).is_ok());
  CHECK(f.ns->statfs().blocks_free == 0);
  auto s = f.ns->set_limits({.max_pages = 3, .max_inodes = std::nullopt}, &why);
  CHECK(s.code() == EINVAL);
  CHECK(why == "Too small a size for current use");
  CHECK(f.ns->statfs().blocks == 4);
  // Two inodes in use (the root and f): 1 is too few, and size= stays too.
  s = f.ns->set_limits({.max_pages = 64, .max_inodes = 1}, &why);
  CHECK(s.code() == EINVAL);
  CHECK(why == "Too few inodes for current use");
  CHECK(f.ns->statfs().blocks == 4);
  CHECK(f.ns->statfs().files == 10);
  REQUIRE(f.ns->set_limits({.max_pages = 64, .max_inodes = 3}, &why).is_ok());
  CHECK(f.ns->statfs().files == 3);
  CHECK(f.ns->statfs().files_free == 1);
  f.mkfile(kRootIno, "g");
  CHECK(f.ns->mknod(kRootIno, "h", S_IFREG | 0644, 0, {}).code() == ENOSPC);
  // 0: unlimited; a limit cannot come back, as on tmpfs.
  REQUIRE(f.ns->set_limits({.max_pages = 0, .max_inodes = 0}, &why).is_ok());
  CHECK(f.ns->statfs().blocks == 0);
  f.mkfile(kRootIno, "h");
  CHECK(f.ns->set_limits({.max_pages = 64, .max_inodes = std::nullopt}, &why).code() == EINVAL);
  CHECK(why == "Cannot retroactively limit size");
  CHECK(f.ns->set_limits({.max_pages = std::nullopt, .max_inodes = 64}, &why).code() == EINVAL);
  CHECK(why == "Cannot retroactively limit inodes");
}

TEST_CASE("file handles: lookup of \".\" and \"..\" by node number, ESTALE once gone",
          "[namespace][handle]") {
  Fixture f;
  uint64_t d = f.mkdir(kRootIno, "d");
  uint64_t file = f.mkfile(d, "file");
  // The kernel forgets both (drop_caches): they keep their names, so a
  // handle still finds them, and each lookup counts again.
  f.ns->forget(file, 1);
  f.ns->forget(d, 1);
  auto self = f.ns->lookup(file, ".");
  REQUIRE(self.is_ok());
  CHECK(self->ino == file);
  CHECK(S_ISREG(self->mode));
  CHECK(self->generation == f.ns->getattr(file)->generation);
  CHECK(f.ns->lookup(d, ".")->ino == d);
  CHECK(f.ns->lookup(d, "..")->ino == kRootIno);
  CHECK(f.ns->lookup(kRootIno, "..")->ino == kRootIno);
  CHECK(f.ns->lookup(kRootIno, ".")->ino == kRootIno);
  CHECK(f.ns->lookup(file, "..").code() == ENOTDIR);
  // Numbers never made, and a forged one: ESTALE, whatever the name.
  CHECK(f.ns->lookup(0, ".").code() == ESTALE);
  CHECK(f.ns->lookup(~uint64_t(0), ".").code() == ESTALE);
  CHECK(f.ns->lookup(file + 1000, "..").code() == ESTALE);
  CHECK(f.ns->lookup(file + 1000, "name").code() == ESTALE);

  // Deleted while the kernel still holds it (the lookup of "." above):
  // ESTALE for a handle, as tmpfs, which counts nothing; the inode is
  // freed at the kernel's forget.
  REQUIRE(f.ns->unlink(d, "file").is_ok());
  CHECK(f.ns->lookup(file, ".").code() == ESTALE);
  CHECK(f.ns->getattr(file).is_ok());
  f.ns->forget(file, 1);
  CHECK(f.ns->getattr(file).code() == ENOENT);
  CHECK(f.ns->lookup(file, ".").code() == ESTALE);
  REQUIRE(f.ns->rmdir(kRootIno, "d").is_ok());
  CHECK(f.ns->lookup(d, ".").code() == ESTALE);
  CHECK(f.ns->lookup(d, "..").code() == ESTALE);
  f.ns->forget(d, 1);
  CHECK(f.ns->lookup(d, ".").code() == ESTALE);
  CHECK(f.ns->inode_count() == 1);
}

TEST_CASE("file handles: generations are random, the root's is 0", "[namespace][handle]") {
  // Two mounts number their inodes alike; a handle of the first must not
  // open the second's file of the same number (tmpfs: random i_generation).
  Fixture one, two;
  CHECK(one.ns->getattr(kRootIno)->generation == 0);
  std::set<uint64_t> generations;
  for (int i = 0; i < 8; ++i) {
    std::string name = "f" + std::to_string(i);
    auto a = one.ns->getattr(one.mkfile(kRootIno, name));
    auto b = two.ns->getattr(two.mkfile(kRootIno, name));
    REQUIRE(a->ino == b->ino);
    CHECK(a->generation <= UINT32_MAX);  // all the kernel keeps
    generations.insert(a->generation);
    generations.insert(b->generation);
  }
  // 16 draws of 32 bits: a collision has odds near 3e-8.
  CHECK(generations.size() == 16);
}

// chmod rewrites an inode's mode under the namespace lock while reads and
// writes ask for its file type without it: the type must not be read from
// the mode they share (ThreadSanitizer runs this case in the concurrency
// suite).
TEST_CASE("chmod racing reads and writes: the file type is read without a race",
          "[namespace][threads]") {
  Fixture f;
  uint64_t ino = f.mkfile(kRootIno, "f");
  std::vector<std::byte> data(4096, std::byte{0x5a});
  std::atomic<bool> stop{false};
  std::atomic<int> chmod_failures{0};  // Catch2 asserts on the test's thread only
  std::thread chmodder([&] {
    for (int i = 0; !stop.load(); ++i) {
      SetAttr change;
      change.mode = (i & 1) ? 04755 : 0644;
      if (!f.ns->setattr(ino, change).is_ok()) chmod_failures++;
    }
  });
  for (int i = 0; i < 2000; ++i) {
    auto w = f.ns->write(ino, uint64_t(i % 8) * 4096, data, false);
    REQUIRE(w.is_ok());
    CHECK(*w == data.size());
    std::promise<size_t> got;
    f.ns->read(ino, 0, 4096, [&](Status st, std::span<const iovec> iov) {
      size_t n = 0;
      for (const iovec& v : iov) n += v.iov_len;
      got.set_value(st.is_ok() ? n : 0);
    });
    CHECK(got.get_future().get() == 4096);
  }
  stop = true;
  chmodder.join();
  CHECK(chmod_failures == 0);
  CHECK((f.ns->getattr(ino)->mode & S_IFMT) == S_IFREG);
}

// Who clears set-ID bits, and that the daemon hears of it (the
// kernel's cached mode is stale after a write, fallocate or copy).
TEST_CASE("set-ID bits: writes, fallocate and copies by a caller without CAP_FSETID",
          "[namespace][setid]") {
  Fixture f;
  std::vector<uint64_t> told;
  f.ns->set_attr_hook([&](uint64_t ino) { told.push_back(ino); });
  uint64_t src = f.mkfile(kRootIno, "src");
  REQUIRE(f.ns->write(src, 0, std::as_bytes(std::span("hello", 5)), false).is_ok());
  Caller user;
  user.uid = 1000;
  user.gid = 1000;
  Caller root_without_fsetid;  // uid 0, but capable() says no
  root_without_fsetid.has_capability = [](int) { return false; };
  auto data = std::as_bytes(std::span("x", 1));

  uint64_t a = f.setid_file("a", 06666);
  REQUIRE(f.ns->write(a, 0, data, false).is_ok());  // root: kept
  CHECK(f.mode_of(a) == 06666);
  CHECK(told.empty());
  REQUIRE(f.ns->write(a, 0, data, false, user).is_ok());
  CHECK(f.mode_of(a) == 0666);  // not in group 0: set-group-ID goes too
  CHECK(told == std::vector<uint64_t>{a});

  uint64_t b = f.setid_file("b", 06766);
  REQUIRE(f.ns->fallocate(b, 0, 0, 4096, root_without_fsetid).is_ok());
  CHECK(f.mode_of(b) == 02766);  // in group 0, not group-executable: kept
  uint64_t c = f.setid_file("c", 06676);
  REQUIRE(f.ns->copy_range(src, 0, c, 0, 5, root_without_fsetid).is_ok());
  CHECK(f.mode_of(c) == 0676);
  // The kernel's word wins where the request carries it.
  uint64_t d = f.setid_file("d", 06666);
  Caller kernel_says_keep = user;
  kernel_says_keep.kill_suidgid = false;
  REQUIRE(f.ns->write(d, 0, data, false, kernel_says_keep).is_ok());
  CHECK(f.mode_of(d) == 06666);
  CHECK(told == std::vector<uint64_t>{a, b, c});
}

TEST_CASE("set-ID bits: chown, chown(-1, -1) and a non-owner's empty setattr",
          "[namespace][setid]") {
  Fixture f;
  Caller root_without_fsetid;
  root_without_fsetid.has_capability = [](int) { return false; };
  Caller user;
  user.uid = 1000;
  user.gid = 1000;
  SetAttr nothing;
  // chown(-1, -1) by root: set-user-ID goes; set-group-ID stays on a file
  // that is not group-executable.
  uint64_t a = f.setid_file("a", 06666);
  REQUIRE(f.ns->setattr(a, nothing).is_ok());
  CHECK(f.mode_of(a) == 02666);
  // chgrp by root without CAP_FSETID to a group it is not in: the mode
  // changes (set-user-ID), so set-group-ID goes against the new group.
  uint64_t b = f.setid_file("b", 06666);
  SetAttr chgrp;
  chgrp.gid = 1000;
  REQUIRE(f.ns->setattr(b, chgrp, root_without_fsetid).is_ok());
  CHECK(f.mode_of(b) == 0666);
  uint64_t c = f.setid_file("c", 02666);  // no mode change: set-group-ID stays
  REQUIRE(f.ns->setattr(c, chgrp, root_without_fsetid).is_ok());
  CHECK(f.mode_of(c) == 02666);
  // A non-owner's empty setattr changes nothing, ctime included.
  uint64_t d = f.setid_file("d", 06777);
  timespec before = f.ns->getattr(d)->ctime;
  REQUIRE(f.ns->setattr(d, nothing, user).is_ok());
  CHECK(f.mode_of(d) == 06777);
  CHECK(f.ns->getattr(d)->ctime.tv_nsec == before.tv_nsec);
  CHECK(f.ns->getattr(d)->ctime.tv_sec == before.tv_sec);
}

TEST_CASE("copy_file_range into an immutable file is EPERM", "[namespace][chattr]") {
  Fixture f;
  uint64_t src = f.mkfile(kRootIno, "src");
  uint64_t dst = f.mkfile(kRootIno, "dst");
  REQUIRE(f.ns->write(src, 0, std::as_bytes(std::span("hello", 5)), false).is_ok());
  REQUIRE(f.ns->set_flags(dst, FS_IMMUTABLE_FL).is_ok());
  CHECK(f.ns->copy_range(src, 0, dst, 0, 5).code() == EPERM);
  CHECK(f.ns->copy_range(dst, 0, src, 0, 5).is_ok());  // from it: allowed
  REQUIRE(f.ns->set_flags(dst, FS_APPEND_FL).is_ok());
  CHECK(f.ns->copy_range(src, 0, dst, 0, 5).is_ok());  // where told: the daemon refuses O_APPEND
}
