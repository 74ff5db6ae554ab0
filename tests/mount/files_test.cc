// Regular files and directories: create, open flags, read/write, truncate,
// holes, O_APPEND, name length, and the errors of unlink/rmdir/mkdir.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <string>

#include "harness.h"

using mt::Side;

namespace {
std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    s[i] = static_cast<char>(x >> 16);
  }
  return s;
}
}  // namespace

TEST_CASE("regular file: create, write, read, open flags", "[file]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_WRONLY | O_EXCL, 0640));
    s.fstat(fd, "f");
    std::string d = pattern(10000, 1);
    REC(s, ::write(fd, d.data(), d.size()));
    s.fstat(fd, "f");
    REC(s, ::pwrite(fd, "xyz", 3, 4094));
    s.fstat(fd, "f");
    REC(s, ::close(fd));
    s.read_all("f");
    s.stat("f");
    REC_OK(s, ::open(s.p("f"), O_CREAT | O_WRONLY | O_EXCL, 0640));
    REC_OK(s, ::open(s.p("f/x"), O_RDONLY));
    REC_OK(s, ::open(s.p("f"), O_RDONLY | O_DIRECTORY));
    REC_OK(s, ::open(s.p("missing"), O_RDONLY));
    REC_OK(s, ::open(s.p("missing/x"), O_CREAT | O_WRONLY, 0644));
    REC_OK(s, ::open(s.p(""), O_WRONLY));
    REC_OK(s, ::open(s.p(""), O_RDWR));
    int fd2 = REC_OK(s, ::open(s.p("f"), O_RDWR | O_TRUNC));
    s.fstat(fd2, "f");
    char buf[16];
    REC(s, ::read(fd2, buf, sizeof buf));
    REC(s, ::write(fd2, "hello", 5));
    REC(s, ::lseek(fd2, 0, SEEK_CUR));
    REC(s, ::lseek(fd2, 0, SEEK_SET));
    REC(s, ::read(fd2, buf, sizeof buf));
    REC(s, ::lseek(fd2, -1, SEEK_SET));
    REC(s, ::lseek(fd2, 0, SEEK_END));
    REC(s, ::close(fd2));
    s.read_all("f");
    // O_CREAT without O_EXCL on an existing file keeps its contents.
    int fd3 = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDONLY, 0600));
    s.fstat(fd3, "f");
    REC(s, ::write(fd3, "x", 1));
    REC(s, ::close(fd3));
    // umask applies to the creation mode.
    mode_t old = ::umask(027);
    int fd4 = REC_OK(s, ::open(s.p("g"), O_CREAT | O_WRONLY, 0777));
    ::umask(old);
    REC(s, ::close(fd4));
    s.stat("g");
    // O_TMPFILE: an unnamed file (nlink 0), linkable once with linkat.
    int fd5 = REC_OK(s, ::open(s.p(""), O_TMPFILE | O_RDWR, 0600));
    REC(s, ::write(fd5, "tmp", 3));
    s.fstat(fd5, "tmpfile");
    REC(s, ::linkat(fd5, "", AT_FDCWD, s.p("linked"), AT_EMPTY_PATH));
    s.fstat(fd5, "tmpfile");
    REC(s, ::unlink(s.p("linked")));
    REC(s, ::linkat(fd5, "", AT_FDCWD, s.p("again"), AT_EMPTY_PATH));  // ENOENT: once only
    REC(s, ::close(fd5));
    s.stat("linked");
    // O_EXCL: never linkable.
    int fd6 = REC_OK(s, ::open(s.p(""), O_TMPFILE | O_EXCL | O_WRONLY, 0644));
    REC(s, ::linkat(fd6, "", AT_FDCWD, s.p("excl"), AT_EMPTY_PATH));
    REC(s, ::close(fd6));
    // The umask applies; a file linked after writing keeps its bytes.
    old = ::umask(027);
    int fd7 = REC_OK(s, ::open(s.p(""), O_TMPFILE | O_RDWR, 0777));
    ::umask(old);
    s.fstat(fd7, "tmpfile2");
    REC(s, ::pwrite(fd7, "bytes at 5000", 13, 5000));
    REC(s, ::linkat(fd7, "", AT_FDCWD, s.p("linked2"), AT_EMPTY_PATH));
    REC(s, ::close(fd7));
    s.read_all("linked2");
    s.stat("linked2");
    // Not a directory, or a directory that does not exist.
    REC(s, ::open(s.p("linked2"), O_TMPFILE | O_RDWR, 0600));
    REC(s, ::open(s.p("nodir"), O_TMPFILE | O_RDWR, 0600));
    REC(s, ::open(s.p(""), O_TMPFILE | O_RDONLY, 0600));  // EINVAL: needs write access
    s.readdir("");
  });
}

TEST_CASE("directories: mkdir, rmdir, unlink errors, nlink", "[dir]") {
  mt::compare([](Side& s) {
    s.stat("", mt::kStatDefault, "dir");
    REC(s, ::mkdir(s.p("d"), 0755));
    s.stat("", mt::kStatDefault, "dir");
    s.stat("d");
    REC(s, ::mkdir(s.p("d"), 0755));
    REC(s, ::mkdir(s.p("d/a"), 0700));
    REC(s, ::mkdir(s.p("d/b"), 01777));
    REC(s, ::mkdir(s.p("d/c"), 0));
    s.stat("d");
    s.stat("d/b");
    s.stat("d/c");
    REC(s, ::close(::open(s.p("d/file"), O_CREAT | O_WRONLY, 0644)));
    s.stat("d");
    REC(s, ::rmdir(s.p("d")));
    REC(s, ::rmdir(s.p("d/file")));
    REC(s, ::unlink(s.p("d/a")));
    REC(s, ::rmdir(s.p("d/a/.")));
    REC(s, ::rmdir(s.p("d/a/..")));
    REC(s, ::rmdir(s.p("d/missing")));
    REC(s, ::unlink(s.p("d/missing")));
    REC(s, ::mkdir(s.p("d/file/x"), 0755));
    REC(s, ::mkdir(s.p("d/missing/x"), 0755));
    REC(s, ::rmdir(s.p("d/a")));
    s.stat("d");
    REC(s, ::unlink(s.p("d/file")));
    s.stat("d");
    s.readdir("d");
    REC(s, ::rmdir(s.p("d/b")));
    REC(s, ::rmdir(s.p("d/c")));
    s.stat("d");
    REC(s, ::rmdir(s.p("d")));
    s.stat("", mt::kStatDefault, "dir");
    s.stat("d");
    // A removed directory that is still the cwd of an open fd.
    REC(s, ::mkdir(s.p("gone"), 0755));
    int dfd = REC_OK(s, ::open(s.p("gone"), O_RDONLY | O_DIRECTORY));
    REC(s, ::rmdir(s.p("gone")));
    s.fstat(dfd, "gone", mt::kStatDefault & ~mt::kStatTimes);
    REC(s, ::openat(dfd, "new", O_CREAT | O_WRONLY, 0644));
    REC(s, ::mkdirat(dfd, "new", 0755));
    REC(s, ::close(dfd));
  });
}

TEST_CASE("directory link count is 2 + subdirectories", "[dir]") {
  mt::compare([](Side& s) {
    REC(s, ::mkdir(s.p("top"), 0755));
    for (int i = 0; i < 10; ++i) {
      REC(s, ::mkdir(s.p("top/d" + std::to_string(i)), 0755));
      REC(s, ::close(::open(s.p("top/f" + std::to_string(i)), O_CREAT | O_WRONLY, 0644)));
      REC(s, ::symlink("x", s.p("top/l" + std::to_string(i))));
    }
    s.stat("top", mt::kStatDefault & ~mt::kStatTimes);
    REC(s, ::rename(s.p("top/d0"), s.p("top/d1/sub")));
    s.stat("top", mt::kStatDefault & ~mt::kStatTimes);
    s.stat("top/d1", mt::kStatDefault & ~mt::kStatTimes);
    REC(s, ::rmdir(s.p("top/d2")));
    REC(s, ::unlink(s.p("top/f2")));
    s.stat("top", mt::kStatDefault & ~mt::kStatTimes);
    s.readdir("top");
    s.stat("", mt::kStatDefault & ~mt::kStatTimes);
  });
}

TEST_CASE("names: 255 bytes is fine, 256 is ENAMETOOLONG", "[names]") {
  mt::compare([](Side& s) {
    std::string n255(255, 'a'), n256(256, 'b');
    REC(s, ::close(::open(s.p(n255), O_CREAT | O_WRONLY, 0644)));
    s.stat(n255);
    REC_OK(s, ::open(s.p(n256), O_CREAT | O_WRONLY, 0644));
    REC(s, ::mkdir(s.p(n256), 0755));
    REC(s, ::mkdir(s.p(std::string(255, 'd')), 0755));
    REC(s, ::symlink("t", s.p(n256)));
    REC(s, ::link(s.p(n255), s.p(n256)));
    REC(s, ::rename(s.p(n255), s.p(n256)));
    struct stat st;
    REC(s, ::stat(s.p(n256), &st));
    REC(s, ::mknod(s.p(n256), S_IFIFO | 0644, 0));
    std::string utf8 = "\xc3\xa9t\xc3\xa9-\xe2\x82\xac";
    REC(s, ::close(::open(s.p(utf8), O_CREAT | O_WRONLY, 0644)));
    REC(s, ::close(::open(s.p("with space and\nnewline"), O_CREAT | O_WRONLY, 0644)));
    s.readdir("");
    // A long path of many components.
    std::string deep;
    for (int i = 0; i < 40; ++i) {
      deep += (i ? "/" : "") + std::string(100, 'p');
      if (REC(s, ::mkdir(s.p(deep), 0755)) != 0) break;
    }
    REC_OK(s, ::open(s.p(deep + "/f"), O_CREAT | O_WRONLY, 0644));
  });
}

TEST_CASE("truncate up and down; sparse files read zeros", "[file][truncate]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDWR, 0644));
    std::string d = pattern(3 * 4096 + 100, 2);
    REC(s, ::write(fd, d.data(), d.size()));
    s.fstat(fd, "f");
    REC(s, ::ftruncate(fd, 5000));
    s.fstat(fd, "f");
    s.read_all("f");
    REC(s, ::ftruncate(fd, 100000));
    s.fstat(fd, "f");
    s.read_all("f");
    REC(s, ::truncate(s.p("f"), 4097));
    s.fstat(fd, "f");
    REC(s, ::truncate(s.p("f"), 4097));  // same size: times still move
    s.fstat(fd, "f");
    REC(s, ::ftruncate(fd, -1));
    REC(s, ::truncate(s.p(""), 0));
    REC(s, ::truncate(s.p("missing"), 0));
    // Truncate down into a page, then extend: the tail of that page reads zeros.
    REC(s, ::ftruncate(fd, 1000));
    REC(s, ::ftruncate(fd, 9000));
    s.pread(fd, 990, 50, "f");
    s.read_all("f");
    // Sparse: write far out, read the hole.
    REC(s, ::pwrite(fd, "end", 3, 1 << 20));
    s.fstat(fd, "f");
    s.pread(fd, 500000, 64, "f");
    s.pread(fd, (1 << 20) - 2, 10, "f");
    s.read_all("f");
    REC(s, ::ftruncate(fd, 0));
    s.fstat(fd, "f");
    s.pread(fd, 0, 10, "f");
    REC(s, ::close(fd));
    int ro = REC_OK(s, ::open(s.p("f"), O_RDONLY));
    REC(s, ::ftruncate(ro, 10));
    REC(s, ::close(ro));
  });
}

TEST_CASE("O_APPEND writes go to the end", "[file]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_WRONLY | O_APPEND, 0644));
    REC(s, ::write(fd, "one\n", 4));
    REC(s, ::lseek(fd, 0, SEEK_SET));
    REC(s, ::write(fd, "two\n", 4));
    REC(s, ::lseek(fd, 0, SEEK_CUR));
    REC(s, ::pwrite(fd, "PW", 2, 0));  // Linux: pwrite with O_APPEND appends
    int other = REC_OK(s, ::open(s.p("f"), O_WRONLY));
    REC(s, ::write(other, "X", 1));
    REC(s, ::ftruncate(other, 100));
    REC(s, ::write(fd, "three\n", 6));
    REC(s, ::close(other));
    s.fstat(fd, "f");
    REC(s, ::close(fd));
    s.read_all("f");
    // fcntl can drop O_APPEND.
    int fd2 = REC_OK(s, ::open(s.p("f"), O_WRONLY | O_APPEND));
    REC(s, ::fcntl(fd2, F_SETFL, 0));
    REC(s, ::write(fd2, "Z", 1));
    REC(s, ::close(fd2));
    s.read_all("f");
  });
}

TEST_CASE("large file contents survive byte for byte", "[file][data]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("big"), O_CREAT | O_RDWR, 0644));
    std::string d = pattern(8 << 20, 3);
    // Unaligned chunks.
    size_t off = 0, chunk = 12345;
    while (off < d.size()) {
      size_t n = std::min(chunk, d.size() - off);
      if (::pwrite(fd, d.data() + off, n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
        s.note("pwrite chunk", "short or failed");
        break;
      }
      off += n;
      chunk = chunk * 7 % 200000 + 1;
    }
    s.fstat(fd, "big");
    REC(s, ::fsync(fd));
    REC(s, ::fdatasync(fd));
    REC(s, ::close(fd));
    s.read_all("big");
    REC(s, ::unlink(s.p("big")));
  });
}

TEST_CASE("statx fields and masks; fsync on directories", "[file][statx]") {
  mt::compare([](Side& s) {
    REC(s, ::close(::open(s.p("f"), O_CREAT | O_WRONLY, 0640)));
    struct statx sx {};
    REC(s, ::statx(AT_FDCWD, s.p("f"), 0, STATX_ALL, &sx));
    s.note("statx mask (basic stats)", std::to_string(sx.stx_mask & STATX_BASIC_STATS));
    s.note("statx btime reported", (sx.stx_mask & STATX_BTIME) ? "yes" : "no");
    // Birth time: set at creation, not moved by writes, chmod or rename.
    struct statx later {};
    mt::Side::tick();
    int wfd = REC_OK(s, ::open(s.p("f"), O_WRONLY));
    REC(s, ::write(wfd, "x", 1));
    REC(s, ::fchmod(wfd, 0600));
    REC(s, ::close(wfd));
    REC(s, ::rename(s.p("f"), s.p("f2")));
    REC(s, ::statx(AT_FDCWD, s.p("f2"), 0, STATX_ALL, &later));
    auto ns = [](const statx_timestamp& t) { return int64_t(t.tv_sec) * 1000000000 + t.tv_nsec; };
    s.note("btime unchanged",
           ns(later.stx_btime) == ns(sx.stx_btime) && ns(sx.stx_btime) != 0 ? "yes" : "no");
    s.note("btime before mtime", ns(later.stx_btime) < ns(later.stx_mtime) ? "yes" : "no");
    REC(s, ::rename(s.p("f2"), s.p("f")));
    // The bits a file system fills itself (inode flags, fscrypt, verity) are
    // a known divergence; those the VFS fills (mount root, automount, DAX)
    // are compared.
    constexpr uint64_t kFsBits = STATX_ATTR_COMPRESSED | STATX_ATTR_IMMUTABLE | STATX_ATTR_APPEND |
                                 STATX_ATTR_NODUMP | STATX_ATTR_ENCRYPTED | STATX_ATTR_VERITY;
    s.note("statx attributes_mask (VFS bits)", std::to_string(sx.stx_attributes_mask & ~kFsBits));
    s.known(mt::Known::StatxAttrFlags);
    s.note("statx attributes_mask (file system bits)",
           std::to_string(sx.stx_attributes_mask & kFsBits));
    s.note("statx mode/nlink", std::to_string(sx.stx_mode) + " " + std::to_string(sx.stx_nlink));
    REC(s, ::statx(AT_FDCWD, s.p("missing"), 0, STATX_BASIC_STATS, &sx));
    REC(s, ::statx(AT_FDCWD, s.p("f"), AT_STATX_DONT_SYNC, STATX_SIZE, &sx));
    REC(s, ::mkdir(s.p("d"), 0755));
    int dfd = REC_OK(s, ::open(s.p("d"), O_RDONLY | O_DIRECTORY));
    REC(s, ::fsync(dfd));
    REC(s, ::fdatasync(dfd));
    REC(s, ::syncfs(dfd));
    REC(s, ::close(dfd));
  });
}
