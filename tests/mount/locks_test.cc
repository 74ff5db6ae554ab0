// File locks, inode flags (chattr), O_DIRECT and O_SYNC opens.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>
#include <string>

#include "harness.h"

using mt::Side;

TEST_CASE("flock and fcntl record locks", "[locks]") {
  mt::compare([](Side& s) {
    int a = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDWR, 0644));
    int b = REC_OK(s, ::open(s.p("f"), O_RDWR));
    REC(s, ::flock(a, LOCK_EX));
    REC(s, ::flock(b, LOCK_EX | LOCK_NB));
    REC(s, ::flock(b, LOCK_SH | LOCK_NB));
    REC(s, ::flock(a, LOCK_UN));
    REC(s, ::flock(b, LOCK_SH | LOCK_NB));
    REC(s, ::flock(a, LOCK_SH | LOCK_NB));
    REC(s, ::flock(a, LOCK_EX | LOCK_NB));
    REC(s, ::flock(b, LOCK_UN));
    REC(s, ::flock(a, LOCK_UN));
    struct flock fl {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 100;
    REC(s, ::fcntl(a, F_SETLK, &fl));
    // Record locks are per process: a child sees the conflict.
    s.as_user(0, 0, [](Side& c) {
      int fd = REC_OK(c, ::open(c.p("f"), O_RDWR));
      struct flock l {};
      l.l_type = F_WRLCK;
      l.l_whence = SEEK_SET;
      l.l_start = 50;
      l.l_len = 10;
      REC(c, ::fcntl(fd, F_SETLK, &l));
      struct flock q = l;
      REC(c, ::fcntl(fd, F_GETLK, &q));
      c.note("F_GETLK", std::to_string(q.l_type) + " start=" + std::to_string(q.l_start) +
                            " len=" + std::to_string(q.l_len));
      l.l_start = 100;
      REC(c, ::fcntl(fd, F_SETLK, &l));
      struct flock ofd {};
      ofd.l_type = F_RDLCK;
      ofd.l_whence = SEEK_SET;
      ofd.l_start = 0;
      ofd.l_len = 10;
      REC(c, ::fcntl(fd, F_OFD_SETLK, &ofd));
      REC(c, ::close(fd));
    });
    fl.l_type = F_UNLCK;
    REC(s, ::fcntl(a, F_SETLK, &fl));
    REC(s, ::close(a));
    REC(s, ::close(b));
  });
}

TEST_CASE("inode flags: FS_IOC_GETFLAGS/SETFLAGS append-only and immutable", "[chattr]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDWR, 0644));
    REC(s, ::write(fd, "abc", 3));
    int flags = -1;
    REC(s, ::ioctl(fd, FS_IOC_GETFLAGS, &flags));
    s.note("flags", std::to_string(flags));
    struct fsxattr fx {};
    REC(s, ::ioctl(fd, FS_IOC_FSGETXATTR, &fx));
    REC(s, ::ioctl(fd, FS_IOC_FSSETXATTR, &fx));  // tmpfs: EOPNOTSUPP
    int bogus = FS_COMPR_FL;
    REC(s, ::ioctl(fd, FS_IOC_SETFLAGS, &bogus));  // not a tmpfs flag: EOPNOTSUPP
    int ap = FS_APPEND_FL;
    REC(s, ::ioctl(fd, FS_IOC_SETFLAGS, &ap));
    REC(s, ::ioctl(fd, FS_IOC_GETFLAGS, &flags));
    s.note("flags", std::to_string(flags));
    REC(s, ::ioctl(fd, FS_IOC_FSGETXATTR, &fx));
    s.note("xflags", std::to_string(fx.fsx_xflags));
    struct statx sx {};
    REC(s, ::statx(AT_FDCWD, s.p("f"), 0, STATX_BASIC_STATS, &sx));
    s.known(mt::Known::StatxAttrFlags);
    s.note("statx attributes",
           std::to_string(sx.stx_attributes & (STATX_ATTR_APPEND | STATX_ATTR_IMMUTABLE)));
    REC(s, ::write(fd, "x", 1));  // opened without O_APPEND before the flag came
    REC(s, ::pwrite(fd, "y", 1, 0));
    REC(s, ::close(fd));
    // Append-only: opens for appending only, never truncated; no renames,
    // links, attribute or xattr changes; appends work.
    REC_OK(s, ::open(s.p("f"), O_WRONLY));
    REC_OK(s, ::open(s.p("f"), O_RDWR | O_APPEND | O_TRUNC));
    int afd = REC_OK(s, ::open(s.p("f"), O_WRONLY | O_APPEND));
    REC(s, ::write(afd, "d", 1));
    REC(s, ::unlink(s.p("f")));
    REC(s, ::rename(s.p("f"), s.p("f2")));
    REC(s, ::link(s.p("f"), s.p("g")));
    REC(s, ::truncate(s.p("f"), 0));
    REC(s, ::chmod(s.p("f"), 0600));
    REC(s, ::chown(s.p("f"), 1, 1));
    REC(s, ::setxattr(s.p("f"), "user.x", "1", 1, 0));
    REC(s, ::fallocate(afd, 0, 0, 8192));
    REC(s, ::fallocate(afd, FALLOC_FL_KEEP_SIZE, 0, 8192));
    struct timespec two[2] = {{1, 0}, {2, 0}};
    REC(s, ::utimensat(AT_FDCWD, s.p("f"), two, 0));
    REC(s, ::utimensat(AT_FDCWD, s.p("f"), nullptr, 0));  // touch: allowed
    struct timespec now_omit[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    REC(s, ::utimensat(AT_FDCWD, s.p("f"), now_omit, 0));  // one of them: EPERM
    // tmpfs refuses to drop O_APPEND; the FUSE client does not, but the
    // daemon keeps appending for that descriptor.
    s.known(mt::Known::AppendFcntl);
    REC(s, ::fcntl(afd, F_SETFL, 0));
    REC(s, ::pwrite(afd, "z", 1, 0));
    // Immutable: nothing changes any more.
    int im = FS_IMMUTABLE_FL;
    REC(s, ::ioctl(afd, FS_IOC_SETFLAGS, &im));
    REC(s, ::fcntl(afd, F_SETFL, O_APPEND));
    REC(s, ::write(afd, "e", 1));
    REC_OK(s, ::open(s.p("f"), O_RDONLY | O_TRUNC));
    REC(s, ::close(::open(s.p("f"), O_RDONLY)));
    REC(s, ::chmod(s.p("f"), 0600));
    REC(s, ::utimensat(AT_FDCWD, s.p("f"), nullptr, 0));
    REC(s, ::utimensat(AT_FDCWD, s.p("f"), now_omit, 0));
    REC(s, ::link(s.p("f"), s.p("g")));
    REC(s, ::unlink(s.p("f")));
    REC(s, ::removexattr(s.p("f"), "user.x"));
    REC(s, ::fallocate(afd, FALLOC_FL_KEEP_SIZE, 0, 8192));
    int none = 0;
    REC(s, ::ioctl(afd, FS_IOC_SETFLAGS, &none));
    REC(s, ::close(afd));
    s.read_all("f");
    REC(s, ::unlink(s.p("f")));
  });
}

// generic_copy_file_checks: EPERM into an immutable file even through a
// descriptor that may still write(2) (generic/553), EBADF into a descriptor
// with O_APPEND; neither end is otherwise restricted.
TEST_CASE("inode flags: copy_file_range and O_DIRECT writes", "[chattr]") {
  mt::compare([](Side& s) {
    int src = REC_OK(s, ::open(s.p("src"), O_CREAT | O_RDWR, 0644));
    REC(s, ::write(src, "0123456789", 10));
    int im = REC_OK(s, ::open(s.p("im"), O_CREAT | O_RDWR, 0644));
    REC(s, ::write(im, "abc", 3));
    int direct = REC_OK(s, ::open(s.p("im"), O_WRONLY | O_DIRECT));
    int flags = FS_IMMUTABLE_FL;
    REC(s, ::ioctl(im, FS_IOC_SETFLAGS, &flags));
    off64_t in = 0, out = 0;
    REC(s, ::copy_file_range(src, &in, im, &out, 5, 0));
    REC(s, ::lseek(src, 0, SEEK_SET));
    REC(s, ::copy_file_range(src, nullptr, im, nullptr, 5, 0));
    // The VFS refuses before it looks at the length; the FUSE client
    // returns 0 for a copy of nothing first.
    in = 0, out = 0;
    s.known(mt::Known::CopyNothingImmutable);
    REC(s, ::copy_file_range(src, &in, im, &out, 0, 0));
    in = 20, out = 0;
    s.known(mt::Known::CopyNothingImmutable);
    REC(s, ::copy_file_range(src, &in, im, &out, 5, 0));
    // Descriptors from before chattr +i still write, direct or not.
    REC(s, ::pwrite(im, "x", 1, 0));
    void* buf = nullptr;
    REQUIRE(::posix_memalign(&buf, 4096, 4096) == 0);
    std::memset(buf, 'd', 4096);
    REC(s, ::pwrite(direct, buf, 4096, 4096));
    std::free(buf);
    // From an immutable file: allowed.
    in = 0, out = 0;
    REC(s, ::copy_file_range(im, &in, src, &out, 2, 0));
    flags = 0;
    REC(s, ::ioctl(im, FS_IOC_SETFLAGS, &flags));
    REC(s, ::close(direct));
    REC(s, ::close(im));

    // Append-only: a descriptor from before chattr +a copies where it is
    // told; one opened since has O_APPEND, and copy_file_range refuses it.
    int ap = REC_OK(s, ::open(s.p("ap"), O_CREAT | O_RDWR, 0644));
    REC(s, ::write(ap, "abcdefgh", 8));
    flags = FS_APPEND_FL;
    REC(s, ::ioctl(ap, FS_IOC_SETFLAGS, &flags));
    in = 0, out = 2;
    REC(s, ::copy_file_range(src, &in, ap, &out, 3, 0));
    int apo = REC_OK(s, ::open(s.p("ap"), O_WRONLY | O_APPEND));
    in = 0, out = 0;
    REC(s, ::copy_file_range(src, &in, apo, &out, 3, 0));
    REC(s, ::lseek(src, 0, SEEK_SET));
    REC(s, ::copy_file_range(src, nullptr, apo, nullptr, 3, 0));
    // tmpfs keeps O_APPEND; the FUSE client drops it, and the daemon still
    // refuses the copy for that descriptor.
    s.known(mt::Known::AppendFcntl);
    REC(s, ::fcntl(apo, F_SETFL, 0));
    in = 0, out = 0;
    REC(s, ::copy_file_range(src, &in, apo, &out, 3, 0));
    in = 0, out = 0;
    REC(s, ::copy_file_range(ap, &in, src, &out, 3, 0));  // from it: allowed
    flags = 0;
    REC(s, ::ioctl(ap, FS_IOC_SETFLAGS, &flags));
    REC(s, ::close(apo));
    REC(s, ::close(ap));
    REC(s, ::close(src));
    s.read_all("src");
    s.read_all("im");
    s.read_all("ap");
    s.stat("src");
    s.stat("im");
    s.stat("ap");
  });
}

TEST_CASE("inode flags on directories; nodump and noatime; a user without the capability",
          "[chattr][nonroot]") {
  mt::compare([](Side& s) {
    REC(s, ::chmod(s.p(""), 0777));
    REC(s, ::mkdir(s.p("d"), 0777));
    REC(s, ::close(::open(s.p("d/old"), O_CREAT | O_WRONLY, 0644)));
    int dfd = REC_OK(s, ::open(s.p("d"), O_RDONLY | O_DIRECTORY));
    int ap = FS_APPEND_FL;
    REC(s, ::ioctl(dfd, FS_IOC_SETFLAGS, &ap));
    REC(s, ::close(::open(s.p("d/new"), O_CREAT | O_WRONLY, 0644)));  // creating: fine
    REC(s, ::mkdir(s.p("d/sub"), 0755));
    REC(s, ::unlink(s.p("d/old")));  // removing: EPERM
    REC(s, ::rename(s.p("d/old"), s.p("moved")));
    REC(s, ::rename(s.p("d/new"), s.p("d/new2")));
    int im = FS_IMMUTABLE_FL;
    REC(s, ::ioctl(dfd, FS_IOC_SETFLAGS, &im));
    REC(s, ::close(::open(s.p("d/newer"), O_CREAT | O_WRONLY, 0644)));
    REC(s, ::mkdir(s.p("d/sub2"), 0755));
    REC(s, ::symlink("x", s.p("d/l")));
    REC(s, ::open(s.p("d"), O_TMPFILE | O_RDWR, 0600));
    REC(s, ::rename(s.p("moved"), s.p("d/in")));
    REC(s, ::link(s.p("d/old"), s.p("d/old2")));
    REC(s, ::rmdir(s.p("d/sub")));
    REC(s, ::close(::open(s.p("d/old"), O_WRONLY)));  // the files inside are not immutable
    int none = 0;
    REC(s, ::ioctl(dfd, FS_IOC_SETFLAGS, &none));
    REC(s, ::close(dfd));
    s.readdir("d");
    // nodump and noatime are kept; noatime stops atime.
    REC(s, ::close(::open(s.p("n"), O_CREAT | O_RDWR, 0666)));
    int nfd = REC_OK(s, ::open(s.p("n"), O_RDWR));
    int nd = FS_NODUMP_FL | FS_NOATIME_FL;
    s.stat("n", mt::kStatDefault, "n");
    Side::tick();
    REC(s, ::ioctl(nfd, FS_IOC_SETFLAGS, &nd));
    s.stat("n", mt::kStatDefault, "n");  // ctime moved, and the kernel knows
    // A directory passes nodump and noatime on to what is made in it.
    REC(s, ::mkdir(s.p("nd"), 0777));
    int ndfd = REC_OK(s, ::open(s.p("nd"), O_RDONLY | O_DIRECTORY));
    REC(s, ::ioctl(ndfd, FS_IOC_SETFLAGS, &nd));
    REC(s, ::close(ndfd));
    REC(s, ::close(::open(s.p("nd/f"), O_CREAT | O_WRONLY, 0644)));
    REC(s, ::mkdir(s.p("nd/sub"), 0755));
    for (const char* n : {"nd/f", "nd/sub"}) {
      int g = REC_OK(s, ::open(s.p(n), O_RDONLY));
      int inherited = -1;
      REC(s, ::ioctl(g, FS_IOC_GETFLAGS, &inherited));
      s.note(std::string("inherited flags of ") + n, std::to_string(inherited));
      REC(s, ::close(g));
    }
    int got = 0;
    REC(s, ::ioctl(nfd, FS_IOC_GETFLAGS, &got));
    s.note("flags", std::to_string(got));
    REC(s, ::write(nfd, "data", 4));
    REC(s, ::close(nfd));
    s.stat("n", mt::kStatDefault | mt::kStatAtime);
    Side::tick();
    s.read_all("n");
    s.stat("n", mt::kStatDefault | mt::kStatAtime);
    s.as_user(1000, 1000, [](Side& c) {
      REC(c, ::close(::open(c.p("mine"), O_CREAT | O_WRONLY, 0644)));
      int fd = REC_OK(c, ::open(c.p("mine"), O_RDONLY));
      int f = FS_NODUMP_FL;
      REC(c, ::ioctl(fd, FS_IOC_SETFLAGS, &f));  // the owner: fine
      int i = FS_IMMUTABLE_FL;
      REC(c, ::ioctl(fd, FS_IOC_SETFLAGS, &i));  // no CAP_LINUX_IMMUTABLE: EPERM
      REC(c, ::close(fd));
      int nfd2 = REC_OK(c, ::open(c.p("n"), O_RDONLY));
      int z = 0;
      REC(c, ::ioctl(nfd2, FS_IOC_SETFLAGS, &z));  // not the owner: EPERM
      REC(c, ::close(nfd2));
    });
  });
}

TEST_CASE("O_DIRECT and O_SYNC opens", "[file][direct]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDWR | O_DIRECT, 0644));
    if (fd >= 0) {
      void* buf = nullptr;
      if (::posix_memalign(&buf, 4096, 8192) == 0) {
        std::memset(buf, 'D', 8192);
        REC(s, ::pwrite(fd, buf, 8192, 0));
        REC(s, ::pwrite(fd, buf, 4096, 4096 * 3));
        std::memset(buf, 0, 8192);
        REC(s, ::pread(fd, buf, 8192, 4096));
        s.blob("O_DIRECT read", "", std::string(static_cast<char*>(buf), 8192));
        REC(s, ::pwrite(fd, static_cast<char*>(buf) + 1, 100, 1));  // unaligned
        std::free(buf);
      }
      REC(s, ::close(fd));
    }
    s.read_all("f");
    int sfd = REC_OK(s, ::open(s.p("g"), O_CREAT | O_WRONLY | O_SYNC | O_DSYNC, 0644));
    REC(s, ::write(sfd, "sync", 4));
    REC(s, ::close(sfd));
    s.read_all("g");
  });
}
