// Attributes: timestamps as tmpfs moves them, chmod/chown and the clearing
// of set-user-ID/set-group-ID, permission errors for a non-root user,
// extended attributes.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <string>

#include "harness.h"

using mt::Side;

namespace {
constexpr uid_t kUser = 1000, kOther = 1001;
constexpr gid_t kGroup = 1000, kOtherGroup = 1001;
constexpr unsigned kAll = mt::kStatDefault | mt::kStatAtime;
}  // namespace

TEST_CASE("timestamps move as tmpfs moves them", "[times]") {
  mt::compare([](Side& s) {
    s.stat("", kAll, "dir");
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDWR, 0644));
    s.stat("", kAll, "dir");
    s.fstat(fd, "f", kAll);
    REC(s, ::write(fd, "abc", 3));
    s.fstat(fd, "f", kAll);
    s.stat("", kAll, "dir");
    REC(s, ::write(fd, "", 0));
    s.fstat(fd, "f", kAll);
    char buf[8];
    REC(s, ::pread(fd, buf, sizeof buf, 0));
    s.fstat(fd, "f", kAll);
    REC(s, ::pread(fd, buf, sizeof buf, 0));  // relatime: second read leaves atime
    s.fstat(fd, "f", kAll);
    REC(s, ::ftruncate(fd, 100));
    s.fstat(fd, "f", kAll);
    REC(s, ::ftruncate(fd, 100));
    s.fstat(fd, "f", kAll);
    REC(s, ::fchmod(fd, 0600));
    s.fstat(fd, "f", kAll);
    REC(s, ::fchown(fd, 0, 0));
    s.fstat(fd, "f", kAll);
    REC(s, ::fchown(fd, -1, -1));
    s.fstat(fd, "f", kAll);
    REC(s, ::link(s.p("f"), s.p("g")));
    s.fstat(fd, "f", kAll);
    s.stat("", kAll, "dir");
    REC(s, ::rename(s.p("g"), s.p("h")));
    s.fstat(fd, "f", kAll);
    s.stat("", kAll, "dir");
    REC(s, ::unlink(s.p("h")));
    s.fstat(fd, "f", kAll);
    s.stat("", kAll, "dir");
    REC(s, ::fsetxattr(fd, "user.t", "v", 1, 0));
    s.fstat(fd, "f", kAll);
    REC(s, ::close(fd));
    s.stat("f", kAll);
    // open(O_TRUNC) of an empty and a non-empty file.
    REC(s, ::truncate(s.p("f"), 0));
    s.stat("f", kAll);
    REC(s, ::close(::open(s.p("f"), O_WRONLY | O_TRUNC)));
    s.stat("f", kAll);
    REC(s, ::truncate(s.p("f"), 5));
    s.stat("f", kAll);
    REC(s, ::close(::open(s.p("f"), O_WRONLY | O_TRUNC)));
    s.stat("f", kAll);
    // utimensat: explicit values are compared exactly.
    struct timespec ts[2] = {{1000000000, 123456789}, {1200000000, 987654321}};
    REC(s, ::utimensat(AT_FDCWD, s.p("f"), ts, 0));
    s.stat("f", kAll | mt::kStatExactAM);
    struct timespec omit_m[2] = {{1300000000, 5}, {0, UTIME_OMIT}};
    REC(s, ::utimensat(AT_FDCWD, s.p("f"), omit_m, 0));
    s.stat("f", kAll | mt::kStatExactAM);
    struct timespec omit_both[2] = {{0, UTIME_OMIT}, {0, UTIME_OMIT}};
    REC(s, ::utimensat(AT_FDCWD, s.p("f"), omit_both, 0));
    s.stat("f", kAll | mt::kStatExactAM);
    struct timespec now_a[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    REC(s, ::utimensat(AT_FDCWD, s.p("f"), now_a, 0));
    s.stat("f", kAll);
    REC(s, ::utimensat(AT_FDCWD, s.p("f"), nullptr, 0));
    s.stat("f", kAll);
    struct timespec old[2] = {{-1, 0}, {0, 1}};  // before the epoch
    REC(s, ::utimensat(AT_FDCWD, s.p("f"), old, 0));
    s.stat("f", kAll | mt::kStatExactAM);
    struct timespec far[2] = {{4102444800LL, 999999999}, {253402300799LL, 0}};  // 2100, 9999
    REC(s, ::utimensat(AT_FDCWD, s.p("f"), far, 0));
    s.stat("f", kAll | mt::kStatExactAM);
    struct timespec bad[2] = {{0, 1000000000}, {0, 0}};
    REC(s, ::utimensat(AT_FDCWD, s.p("f"), bad, 0));
    // On a symlink itself.
    REC(s, ::symlink("f", s.p("l")));
    s.lstat("l", kAll);
    REC(s, ::utimensat(AT_FDCWD, s.p("l"), ts, AT_SYMLINK_NOFOLLOW));
    s.lstat("l", kAll | mt::kStatExactAM);
    s.stat("f", kAll | mt::kStatExactAM);
    // Directory: mkdir/rmdir inside, readdir.
    REC(s, ::mkdir(s.p("d"), 0755));
    s.stat("d", kAll);
    REC(s, ::mkdir(s.p("d/sub"), 0755));
    s.stat("d", kAll);
    s.readdir("d");
    s.stat("d", kAll);
    REC(s, ::rename(s.p("d/sub"), s.p("sub")));  // moved dir's ctime
    s.stat("d", kAll);
    s.stat("sub", kAll);
    REC(s, ::rmdir(s.p("sub")));
    s.stat("", kAll, "dir");
  });
}

TEST_CASE("chmod/chown as root clear set-ID bits as the kernel does", "[perm][setid]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDWR, 0644));
    REC(s, ::fchmod(fd, 06755));
    s.fstat(fd, "f");
    REC(s, ::fchown(fd, kUser, kGroup));  // chown clears S_ISUID and S_ISGID (g+x)
    s.fstat(fd, "f");
    REC(s, ::fchmod(fd, 06745));
    REC(s, ::fchown(fd, -1, kOtherGroup));
    s.fstat(fd, "f");
    REC(s, ::fchmod(fd, 02745));  // S_ISGID without g+x: mandatory-locking bit, kept
    REC(s, ::fchown(fd, 0, 0));
    s.fstat(fd, "f");
    REC(s, ::write(fd, "root write", 10));  // CAP_FSETID: nothing cleared
    REC(s, ::fchmod(fd, 06755));
    REC(s, ::write(fd, "root write", 10));
    s.fstat(fd, "f");
    REC(s, ::close(fd));
    REC(s, ::chmod(s.p("f"), 07777));
    s.stat("f");
    REC(s, ::chmod(s.p("f"), 0170777));  // file type bits ignored
    s.stat("f");
    REC(s, ::mkdir(s.p("d"), 0755));
    REC(s, ::chmod(s.p("d"), 07755));
    REC(s, ::chown(s.p("d"), kUser, kGroup));  // directories keep set-ID bits
    s.stat("d");
    REC(s, ::chown(s.p("missing"), 1, 1));
    REC(s, ::chown(s.p("f"), 4294967294u, 4294967294u));
    s.stat("f");
  });
}

TEST_CASE("set-ID bits cleared by a non-owner's write, truncate and chmod",
          "[perm][setid][nonroot]") {
  mt::compare([](Side& s) {
    REC(s, ::chmod(s.p(""), 0777));
    for (const char* n : {"w", "t", "sgid-noexec", "owned"}) {
      REC(s, ::close(::open(s.p(n), O_CREAT | O_WRONLY, 0644)));
    }
    REC(s, ::chmod(s.p("w"), 06777));
    REC(s, ::chmod(s.p("t"), 06777));
    REC(s, ::chmod(s.p("sgid-noexec"), 02666));
    REC(s, ::chown(s.p("owned"), kUser, kOtherGroup));
    REC(s, ::chmod(s.p("owned"), 0755));
    s.as_user(kUser, kGroup, [](Side& c) {
      int fd = REC_OK(c, ::open(c.p("w"), O_WRONLY));
      REC(c, ::write(fd, "user", 4));
      c.fstat(fd, "w");
      REC(c, ::close(fd));
      REC(c, ::truncate(c.p("t"), 10));
      c.stat("t");
      int fd2 = REC_OK(c, ::open(c.p("sgid-noexec"), O_WRONLY));
      REC(c, ::write(fd2, "x", 1));
      c.fstat(fd2, "sgid-noexec");
      REC(c, ::close(fd2));
      // Owner but not in the group: chmod g+s is silently dropped.
      REC(c, ::chmod(c.p("owned"), 02755));
      c.stat("owned");
      REC(c, ::chmod(c.p("owned"), 04755));
      c.stat("owned");
      int fd3 = REC_OK(c, ::open(c.p("owned"), O_WRONLY));
      REC(c, ::write(fd3, "own", 3));  // owner's write clears S_ISUID too
      c.fstat(fd3, "owned");
      REC(c, ::close(fd3));
      // Not the owner: EPERM.
      REC(c, ::chmod(c.p("w"), 0777));
      REC(c, ::chown(c.p("owned"), kOther, -1));
      REC(c, ::chown(c.p("owned"), -1, kGroup));  // to own group: allowed
      c.stat("owned");
      REC(c, ::chown(c.p("owned"), -1, kOtherGroup));  // not a member: EPERM
      REC(c, ::chown(c.p("owned"), kUser, -1));        // no-op chown: allowed
      REC(c, ::chown(c.p("w"), kUser, -1));
    });
    s.stat("w");
    s.stat("t");
    s.stat("sgid-noexec");
    s.stat("owned");
  });
}

TEST_CASE("set-group-ID directories pass their group on", "[perm][setid][nonroot]") {
  mt::compare([](Side& s) {
    REC(s, ::mkdir(s.p("g"), 0777));
    REC(s, ::chown(s.p("g"), 0, kOtherGroup));
    s.stat("g");  // umask applied
    REC(s, ::chmod(s.p("g"), 02777));
    s.stat("g");
    REC(s, ::mkdir(s.p("g/root-sub"), 0755));
    s.stat("g/root-sub");
    s.as_user(kUser, kGroup, [](Side& c) {
      REC(c, ::close(::open(c.p("g/file"), O_CREAT | O_WRONLY, 02755)));
      c.stat("g/file");  // S_ISGID dropped: not a member of the group
      REC(c, ::mkdir(c.p("g/sub"), 0755));
      c.stat("g/sub");
      REC(c, ::mknod(c.p("g/fifo"), S_IFIFO | 0644, 0));
      c.stat("g/fifo");
      REC(c, ::symlink("x", c.p("g/link")));
      c.lstat("g/link");
    });
  });
}

TEST_CASE("permission errors for a non-root user", "[perm][nonroot]") {
  mt::compare([](Side& s) {
    REC(s, ::chmod(s.p(""), 0755));
    REC(s, ::close(::open(s.p("secret"), O_CREAT | O_WRONLY, 0600)));
    REC(s, ::close(::open(s.p("readable"), O_CREAT | O_WRONLY, 0644)));
    REC(s, ::mkdir(s.p("closed"), 0700));
    REC(s, ::close(::open(s.p("closed/inner"), O_CREAT | O_WRONLY, 0666)));
    REC(s, ::mkdir(s.p("noexec"), 0666));
    REC(s, ::mkdir(s.p("sticky"), 01777));
    REC(s, ::mkdir(s.p("open"), 0777));
    REC(s, ::chmod(s.p("noexec"), 0666));  // mkdir's mode went through the umask
    REC(s, ::chmod(s.p("sticky"), 01777));
    REC(s, ::chmod(s.p("open"), 0777));
    s.as_user(kOther, kOtherGroup, [](Side& c) {
      REC(c, ::close(::open(c.p("sticky/his"), O_CREAT | O_WRONLY, 0666)));
      REC(c, ::mkdir(c.p("sticky/hisdir"), 0777));
      REC(c, ::close(::open(c.p("open/his"), O_CREAT | O_WRONLY, 0644)));
    });
    s.as_user(kUser, kGroup, [](Side& c) {
      REC_OK(c, ::open(c.p("secret"), O_RDONLY));
      REC_OK(c, ::open(c.p("readable"), O_RDONLY));
      REC_OK(c, ::open(c.p("readable"), O_WRONLY));
      REC_OK(c, ::open(c.p("readable"), O_RDONLY | O_TRUNC));
      REC(c, ::access(c.p("secret"), R_OK));
      REC(c, ::access(c.p("readable"), R_OK));
      REC(c, ::access(c.p("readable"), W_OK));
      REC(c, ::access(c.p("readable"), X_OK));
      REC(c, ::access(c.p("closed/inner"), F_OK));
      REC_OK(c, ::open(c.p("closed/inner"), O_RDONLY));
      c.stat("closed/inner");
      c.readdir("closed");
      c.readdir("noexec");
      c.stat("noexec/x");
      REC_OK(c, ::open(c.p("new"), O_CREAT | O_WRONLY, 0644));
      REC(c, ::mkdir(c.p("newdir"), 0755));
      REC(c, ::unlink(c.p("readable")));
      REC(c, ::rename(c.p("readable"), c.p("open/x")));
      REC(c, ::truncate(c.p("readable"), 0));
      REC(c, ::utimensat(AT_FDCWD, c.p("readable"), nullptr, 0));
      struct timespec ts[2] = {{1, 0}, {2, 0}};
      REC(c, ::utimensat(AT_FDCWD, c.p("readable"), ts, 0));
      // Sticky directory: only the owner of the file (or dir) may remove it.
      REC(c, ::unlink(c.p("sticky/his")));
      REC(c, ::rename(c.p("sticky/his"), c.p("sticky/mine")));
      REC(c, ::rmdir(c.p("sticky/hisdir")));
      REC(c, ::close(::open(c.p("sticky/mine"), O_CREAT | O_WRONLY, 0644)));
      REC(c, ::rename(c.p("sticky/mine"), c.p("sticky/his")));
      REC(c, ::unlink(c.p("sticky/mine")));
      // Non-sticky world-writable: may remove others' files.
      REC(c, ::rename(c.p("open/his"), c.p("open/taken")));
      REC(c, ::unlink(c.p("open/taken")));
      c.readdir("open");
      c.readdir("sticky");
      REC(c, ::setxattr(c.p("readable"), "user.x", "1", 1, 0));
      REC(c, ::setxattr(c.p("sticky/his"), "user.x", "1", 1, 0));
      REC(c, ::mknod(c.p("open/dev"), S_IFCHR | 0600, 0x0103));
      REC(c, ::mknod(c.p("open/fifo"), S_IFIFO | 0600, 0));
    });
    s.readdir("sticky");
    s.stat("readable");
  });
}

TEST_CASE("xattrs: user, trusted, security namespaces and errors", "[xattr]") {
  mt::compare([](Side& s) {
    REC(s, ::close(::open(s.p("f"), O_CREAT | O_WRONLY, 0666)));
    s.listxattr("f");
    REC(s, ::setxattr(s.p("f"), "user.a", "alpha", 5, 0));
    REC(s, ::setxattr(s.p("f"), "user.a", "again", 5, XATTR_CREATE));
    REC(s, ::setxattr(s.p("f"), "user.b", "beta", 4, XATTR_REPLACE));
    REC(s, ::setxattr(s.p("f"), "user.a", "AL", 2, XATTR_REPLACE));
    REC(s, ::setxattr(s.p("f"), "user.b", "beta", 4, XATTR_CREATE));
    REC(s, ::setxattr(s.p("f"), "user.empty", "", 0, 0));
    REC(s, ::setxattr(s.p("f"), "user.x", "v", 1, XATTR_CREATE | XATTR_REPLACE));
    REC(s, ::setxattr(s.p("f"), "trusted.t", "tee", 3, 0));
    REC(s, ::setxattr(s.p("f"), "security.s", "sec", 3, 0));
    REC(s, ::setxattr(s.p("f"), "unknown.ns", "u", 1, 0));
    REC(s, ::setxattr(s.p("f"), "user.", "u", 1, 0));
    REC(s, ::setxattr(s.p("f"), "", "u", 1, 0));
    REC(s, ::setxattr(s.p("f"), ("user." + std::string(250, 'n')).c_str(), "u", 1, 0));
    REC(s, ::setxattr(s.p("f"), ("user." + std::string(251, 'n')).c_str(), "u", 1, 0));
    s.listxattr("f");
    s.getxattr("f", "user.a", 100);
    s.getxattr("f", "user.a", 0);
    s.getxattr("f", "user.a", 1);
    s.getxattr("f", "user.a", 2);
    s.getxattr("f", "user.empty", 10);
    s.getxattr("f", "user.empty", 0);
    s.getxattr("f", "user.missing", 10);
    s.getxattr("f", "trusted.t", 10);
    s.getxattr("f", "security.s", 10);
    s.getxattr("f", "system.posix_acl_access", 100);
    char small[4];
    REC(s, ::listxattr(s.p("f"), small, sizeof small));
    REC(s, ::listxattr(s.p("f"), nullptr, 0));
    REC(s, ::removexattr(s.p("f"), "user.b"));
    REC(s, ::removexattr(s.p("f"), "user.b"));
    REC(s, ::removexattr(s.p("f"), "trusted.t"));
    s.listxattr("f");
    // Value sizes.
    for (size_t n : {size_t(4000), size_t(4096), size_t(8192), size_t(65535), size_t(65536),
                     size_t(65537), size_t(1 << 20)}) {
      std::string v(n, 'v');
      v[0] = 'S';
      v[n - 1] = 'E';
      REC(s, ::setxattr(s.p("f"), ("user.big" + std::to_string(n)).c_str(), v.data(), n, 0));
      s.getxattr("f", "user.big" + std::to_string(n), 70000);
    }
    s.listxattr("f");
    // Many attributes.
    int ok = 0;
    for (int i = 0; i < 200; ++i)
      if (::setxattr(s.p("f"), ("user.many" + std::to_string(i)).c_str(), "m", 1, 0) == 0) ++ok;
    s.note("200 setxattr", std::to_string(ok) + " ok");
    s.listxattr("f");
    // Other file types.
    REC(s, ::mkdir(s.p("d"), 0755));
    REC(s, ::setxattr(s.p("d"), "user.d", "dir", 3, 0));
    s.getxattr("d", "user.d", 10);
    REC(s, ::symlink("f", s.p("l")));
    REC(s, ::lsetxattr(s.p("l"), "user.l", "link", 4, 0));
    REC(s, ::lsetxattr(s.p("l"), "trusted.l", "link", 4, 0));
    s.listxattr("l");
    REC(s, ::mkfifo(s.p("p"), 0644));
    REC(s, ::setxattr(s.p("p"), "user.p", "fifo", 4, 0));
    REC(s, ::setxattr(s.p("p"), "trusted.p", "fifo", 4, 0));
    s.listxattr("p");
    REC(s, ::setxattr(s.p("missing"), "user.m", "m", 1, 0));
    // Non-root: trusted.* is invisible, user.* follows file permissions.
    REC(s, ::setxattr(s.p("f"), "trusted.t2", "tee", 3, 0));
    s.as_user(kUser, kGroup, [](Side& c) {
      c.listxattr("f");
      c.getxattr("f", "trusted.t2", 10);
      c.getxattr("f", "user.a", 10);
      REC(c, ::setxattr(c.p("f"), "user.nr", "nr", 2, 0));
      REC(c, ::setxattr(c.p("f"), "trusted.nr", "nr", 2, 0));
      REC(c, ::setxattr(c.p("d"), "user.nr", "nr", 2, 0));
      REC(c, ::removexattr(c.p("f"), "user.a"));
    });
    s.listxattr("f");
    // xattrs survive rename and hard links, go with unlink.
    REC(s, ::rename(s.p("f"), s.p("g")));
    REC(s, ::link(s.p("g"), s.p("h")));
    s.getxattr("h", "user.a", 10);
  });
}
