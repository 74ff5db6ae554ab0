// File locks, inode flags (chattr), O_DIRECT and O_SYNC opens.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
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
    int flags = 0;
    s.known(mt::Known::InodeFlags);
    REC(s, ::ioctl(fd, FS_IOC_GETFLAGS, &flags));
    // Setting the flags a file already has changes nothing on A, so B's
    // answer to SETFLAGS can be checked without the two diverging.
    int same = flags;
    s.known(mt::Known::InodeFlags);
    REC(s, ::ioctl(fd, FS_IOC_SETFLAGS, &same));
    if (!s.dependent_steps_run(mt::Known::InodeFlags)) {
      REC(s, ::close(fd));
      s.read_all("f");
      REC(s, ::unlink(s.p("f")));
      return;
    }
    s.note("flags", std::to_string(flags));
    int ap = flags | FS_APPEND_FL;
    REC(s, ::ioctl(fd, FS_IOC_SETFLAGS, &ap));
    REC(s, ::close(fd));
    REC_OK(s, ::open(s.p("f"), O_WRONLY));
    int afd = REC_OK(s, ::open(s.p("f"), O_WRONLY | O_APPEND));
    REC(s, ::write(afd, "d", 1));
    REC(s, ::unlink(s.p("f")));
    REC(s, ::truncate(s.p("f"), 0));
    int im = FS_IMMUTABLE_FL;
    REC(s, ::ioctl(afd, FS_IOC_SETFLAGS, &im));
    REC(s, ::write(afd, "e", 1));
    REC(s, ::chmod(s.p("f"), 0600));
    REC(s, ::link(s.p("f"), s.p("g")));
    int none = 0;
    REC(s, ::ioctl(afd, FS_IOC_SETFLAGS, &none));
    REC(s, ::close(afd));
    s.read_all("f");
    REC(s, ::unlink(s.p("f")));
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
