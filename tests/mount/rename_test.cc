// rename and renameat2 (RENAME_NOREPLACE, RENAME_EXCHANGE) and every error.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <string>

#include "harness.h"

using mt::Side;

namespace {
long rename2(const char* from, const char* to, unsigned flags) {
  return ::syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, flags);
}
void mkfile(Side& s, const std::string& rel, const std::string& content) {
  int fd = ::open(s.p(rel), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  ssize_t n = fd >= 0 ? ::write(fd, content.data(), content.size()) : -1;
  s.note("mkfile " + rel, fd >= 0 && n == static_cast<ssize_t>(content.size()) ? "ok" : "failed");
  if (fd >= 0) ::close(fd);
}
constexpr unsigned kNoTimes = mt::kStatDefault & ~mt::kStatTimes;
}  // namespace

TEST_CASE("rename: plain cases and directory link counts", "[rename]") {
  mt::compare([](Side& s) {
    REC(s, ::mkdir(s.p("a"), 0755));
    REC(s, ::mkdir(s.p("b"), 0755));
    mkfile(s, "a/f", "file f");
    mkfile(s, "b/g", "file g");
    s.stat("a", mt::kStatDefault);
    s.stat("b", mt::kStatDefault);
    s.stat("a/f", mt::kStatDefault, "f");
    REC(s, ::rename(s.p("a/f"), s.p("b/f")));
    s.stat("a", mt::kStatDefault);
    s.stat("b", mt::kStatDefault);
    s.stat("b/f", mt::kStatDefault, "f");
    REC(s, ::rename(s.p("b/f"), s.p("b/g")));  // replaces g
    s.read_all("b/g");
    s.readdir("b");
    REC(s, ::mkdir(s.p("a/sub"), 0755));
    REC(s, ::mkdir(s.p("a/sub/deeper"), 0755));
    s.stat("a", kNoTimes);
    s.stat("a/sub", mt::kStatDefault, "sub");
    REC(s, ::rename(s.p("a/sub"), s.p("b/sub")));  // nlink moves with the dir
    s.stat("a", kNoTimes);
    s.stat("b", kNoTimes);
    s.stat("b/sub", mt::kStatDefault, "sub");
    s.stat("b/sub/deeper/..", kNoTimes);
    REC(s, ::mkdir(s.p("a/empty"), 0755));
    REC(s, ::rename(s.p("b/sub"), s.p("a/empty")));  // replaces an empty dir
    s.stat("a", kNoTimes);
    s.stat("b", kNoTimes);
    s.readdir("a");
    s.readdir("a/empty");
    // Rename a file onto itself and onto a hard link of itself: no-op.
    REC(s, ::rename(s.p("b/g"), s.p("b/g")));
    REC(s, ::link(s.p("b/g"), s.p("b/hl")));
    REC(s, ::rename(s.p("b/g"), s.p("b/hl")));
    s.readdir("b");
    s.stat("b/g", kNoTimes);
    REC(s, ::rename(s.p("a"), s.p("a")));
    // Symlinks are renamed, not followed.
    REC(s, ::symlink("b", s.p("ln")));
    REC(s, ::rename(s.p("ln"), s.p("ln2")));
    s.readlink("ln2");
    s.readdir("");
    s.stat("", kNoTimes);
  });
}

TEST_CASE("rename: error cases", "[rename]") {
  mt::compare([](Side& s) {
    REC(s, ::mkdir(s.p("d"), 0755));
    REC(s, ::mkdir(s.p("d/sub"), 0755));
    REC(s, ::mkdir(s.p("full"), 0755));
    mkfile(s, "full/x", "x");
    mkfile(s, "f", "f");
    REC(s, ::mkdir(s.p("e"), 0755));
    REC(s, ::rename(s.p("d"), s.p("d/sub/inside")));  // EINVAL: into own subtree
    REC(s, ::rename(s.p("d"), s.p("d/inside")));      // EINVAL
    REC(s, ::rename(s.p("d/sub"), s.p("d/sub/x")));
    REC(s, ::rename(s.p("d/sub/.."), s.p("d/x")));
    REC(s, ::rename(s.p("d"), s.p("full")));       // ENOTEMPTY
    REC(s, ::rename(s.p("f"), s.p("d")));          // EISDIR
    REC(s, ::rename(s.p("d"), s.p("f")));          // ENOTDIR
    REC(s, ::rename(s.p("missing"), s.p("y")));    // ENOENT
    REC(s, ::rename(s.p("f"), s.p("missing/y")));  // ENOENT
    REC(s, ::rename(s.p("f"), s.p("f/y")));        // ENOTDIR
    REC(s, ::rename(s.p("f/"), s.p("g")));
    REC(s, ::rename(s.p("f"), s.p("g/")));
    REC(s, ::rename(s.p("d"), s.p("dd/")));  // a dir may take a trailing slash
    REC(s, ::rename(s.p("dd/"), s.p("d")));
    REC(s, ::rename(s.p("."), s.p("x")));
    REC(s, ::rename(s.p("d/."), s.p("x")));
    REC(s, ::rename(s.p("e"), s.p("d/sub/..")));
    REC(s, ::rename(s.p("f"), s.p(std::string(256, 'n'))));
    REC(s, rename2(s.p("f"), s.p("d"), RENAME_NOREPLACE));  // EEXIST
    REC(s, rename2(s.p("f"), s.p("nf"), RENAME_NOREPLACE));
    REC(s, rename2(s.p("nf"), s.p("e"), RENAME_NOREPLACE | RENAME_EXCHANGE));  // EINVAL
    REC(s, rename2(s.p("nf"), s.p("missing"), RENAME_EXCHANGE));               // ENOENT
    REC(s, rename2(s.p("nf"), s.p("x"), 0x80));  // EINVAL: unknown flag
    REC(s, rename2(s.p("nf"), s.p("x"), RENAME_WHITEOUT));
    REC(s, rename2(s.p("d"), s.p("d/sub"), RENAME_EXCHANGE));  // EINVAL
    REC(s, rename2(s.p("d/sub"), s.p("d"), RENAME_EXCHANGE));  // ENOTEMPTY? kernel decides
    s.readdir("");
    s.readdir("d");
  });
}

TEST_CASE("renameat2 RENAME_EXCHANGE swaps files, dirs and mixed", "[rename]") {
  mt::compare([](Side& s) {
    REC(s, ::mkdir(s.p("p"), 0755));
    REC(s, ::mkdir(s.p("q"), 0755));
    mkfile(s, "p/one", "first");
    mkfile(s, "q/two", "second!");
    s.stat("p/one", mt::kStatDefault, "one");
    s.stat("q/two", mt::kStatDefault, "two");
    s.stat("p", mt::kStatDefault);
    s.stat("q", mt::kStatDefault);
    REC(s, rename2(s.p("p/one"), s.p("q/two"), RENAME_EXCHANGE));
    s.read_all("p/one");
    s.read_all("q/two");
    s.stat("p/one", mt::kStatDefault, "two");
    s.stat("q/two", mt::kStatDefault, "one");
    s.stat("p", mt::kStatDefault);
    s.stat("q", mt::kStatDefault);
    // File <-> directory across parents: parents' nlink change.
    REC(s, ::mkdir(s.p("p/dir"), 0755));
    REC(s, ::mkdir(s.p("p/dir/child"), 0755));
    s.stat("p", kNoTimes);
    s.stat("q", kNoTimes);
    REC(s, rename2(s.p("p/dir"), s.p("q/two"), RENAME_EXCHANGE));
    s.stat("p", kNoTimes);
    s.stat("q", kNoTimes);
    s.lstat("p/dir", kNoTimes);
    s.lstat("q/two", kNoTimes);
    s.stat("q/two/child/..", kNoTimes);
    s.readdir("p");
    s.readdir("q");
    // Exchange with a symlink, and with itself.
    REC(s, ::symlink("target", s.p("p/link")));
    REC(s, rename2(s.p("p/link"), s.p("p/one"), RENAME_EXCHANGE));
    s.readlink("p/one");
    s.read_all("p/link");
    REC(s, rename2(s.p("p/one"), s.p("p/one"), RENAME_EXCHANGE));
    // Exchange a non-empty directory with an empty one.
    REC(s, ::mkdir(s.p("empty"), 0755));
    REC(s, rename2(s.p("q/two"), s.p("empty"), RENAME_EXCHANGE));
    s.readdir("empty");
    s.readdir("q/two");
    // NOREPLACE onto a missing name works like rename.
    REC(s, rename2(s.p("p/dir"), s.p("moved"), RENAME_NOREPLACE));
    s.readdir("");
    s.stat("", kNoTimes);
  });
}
