// Mount options and limits: statfs figures, size= (ENOSPC on data),
// nr_inodes= (ENOSPC on create), mode=/uid=/gid= of the root.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cstdio>
#include <string>

#include "harness.h"

using mt::Side;

namespace {
// Waits until statfs free inode/block counts stop changing (FUSE may release
// inodes a little after the last close: FORGET is asynchronous).
void settle(Side& s) {
  struct statfs prev {};
  ::statfs(s.p(""), &prev);
  for (int i = 0; i < 50; ++i) {
    Side::tick();
    struct statfs cur {};
    ::statfs(s.p(""), &cur);
    if (cur.f_ffree == prev.f_ffree && cur.f_bfree == prev.f_bfree) return;
    prev = cur;
  }
}
}  // namespace

TEST_CASE("statfs: sizes, counts and free counts after known files", "[statfs]") {
  mt::MountOptions o;
  o.size = "16m";
  o.nr_inodes = 500;
  mt::compare(o, [](Side& s) {
    s.statfs("", true);
    {
      // f_type is not compared: a FUSE mount always reports FUSE_SUPER_MAGIC.
      struct statfs a {};
      REC(s, ::statfs(s.root_p(""), &a));
    }
    std::string page(4096, 'p');
    for (int i = 0; i < 10; ++i) {
      int fd = ::open(s.p("f" + std::to_string(i)), O_CREAT | O_WRONLY, 0644);
      for (int k = 0; k <= i; ++k) ::write(fd, page.data(), page.size());
      ::close(fd);
    }
    settle(s);
    s.statfs("", true);
    for (int i = 0; i < 5; ++i) REC(s, ::mkdir(s.p("d" + std::to_string(i)), 0755));
    REC(s, ::symlink("short", s.p("l1")));
    REC(s, ::link(s.p("f0"), s.p("hard")));
    settle(s);
    s.statfs("", true);
    int fd = REC_OK(s, ::open(s.p("sparse"), O_CREAT | O_WRONLY, 0644));
    REC(s, ::ftruncate(fd, 10 << 20));
    REC(s, ::pwrite(fd, "x", 1, 5 << 20));
    REC(s, ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 1 << 20));
    REC(s, ::close(fd));
    settle(s);
    s.statfs("", true);
    for (int i = 0; i < 10; ++i) ::unlink(s.p("f" + std::to_string(i)));
    ::unlink(s.p("hard"));
    ::unlink(s.p("sparse"));
    settle(s);
    s.statfs("", true);
    s.readdir("");
  });
}

TEST_CASE("size= is enforced: ENOSPC, earlier data intact, space comes back", "[limits][enospc]") {
  mt::MountOptions o;
  o.size = "1m";
  o.nr_inodes = 100;
  mt::compare(o, [](Side& s) {
    s.statfs("", true);
    int fd = REC_OK(s, ::open(s.p("big"), O_CREAT | O_RDWR, 0644));
    std::string chunk(64 * 1024, '\0');
    for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>('a' + i % 26);
    for (int i = 0; i < 20; ++i) {
      chunk[0] = static_cast<char>('A' + i);
      errno = 0;
      ssize_t n = ::write(fd, chunk.data(), chunk.size());
      s.note("write 64K #" + std::to_string(i),
             n < 0 ? "-1 " + mt::errno_name(errno) : std::to_string(n));
      if (n < 0) break;
    }
    REC(s, ::fsync(fd));
    s.fstat(fd, "big");
    REC(s, ::close(fd));
    s.read_all("big");
    int fd2 = REC_OK(s, ::open(s.p("second"), O_CREAT | O_WRONLY, 0644));
    REC(s, ::write(fd2, "x", 1));
    REC(s, ::fsync(fd2));
    REC(s, ::close(fd2));
    REC(s, ::truncate(s.p("second"), 100 << 20));  // sparse: fine
    s.stat("second");
    int fd3 = REC_OK(s, ::open(s.p("falloc"), O_CREAT | O_WRONLY, 0644));
    REC(s, ::fallocate(fd3, 0, 0, 2 << 20));
    REC(s, ::close(fd3));
    s.stat("falloc");
    REC(s, ::unlink(s.p("big")));
    settle(s);
    s.statfs("", true);
    int fd4 = REC_OK(s, ::open(s.p("again"), O_CREAT | O_WRONLY, 0644));
    REC(s, ::write(fd4, chunk.data(), chunk.size()));
    REC(s, ::close(fd4));
    s.read_all("again");
    // Many small files each taking a page.
    int made = 0;
    for (int i = 0; i < 300; ++i) {
      int f = ::open(s.p("small" + std::to_string(i)), O_CREAT | O_WRONLY, 0644);
      if (f < 0) break;
      ssize_t n = ::write(f, "s", 1);
      int e = errno;
      int c = ::close(f);
      if (n != 1 || c != 0) {
        s.note("small file " + std::to_string(i), "write " + std::to_string(n) + " close " +
                                                      std::to_string(c) + " " + mt::errno_name(e));
        break;
      }
      ++made;
    }
    s.note("small files with data", std::to_string(made));
  });
}

TEST_CASE("nr_inodes= is enforced: ENOSPC on create (tmpfs charges hard links too)",
          "[limits][enospc]") {
  mt::MountOptions o;
  o.size = "8m";
  o.nr_inodes = 20;
  mt::compare(o, [](Side& s) {
    s.statfs("", true);
    int made = 0;
    int err = 0;
    for (int i = 0; i < 40; ++i) {
      int fd = ::open(s.p("f" + std::to_string(i)), O_CREAT | O_WRONLY, 0644);
      if (fd < 0) {
        err = errno;
        break;
      }
      ::close(fd);
      ++made;
    }
    s.note("files created", std::to_string(made) + " then " + mt::errno_name(err));
    s.statfs("", true);
    REC(s, ::mkdir(s.p("d"), 0755));
    REC(s, ::symlink("t", s.p("l")));
    REC(s, ::mknod(s.p("p"), S_IFIFO | 0644, 0));
    REC_OK(s, ::open(s.p(""), O_TMPFILE | O_RDWR, 0600));
    REC(s, ::link(s.p("f0"), s.p("hard")));
    REC(s, ::rename(s.p("f1"), s.p("renamed")));
    REC(s, ::unlink(s.p("f2")));
    settle(s);
    REC(s, ::mkdir(s.p("d"), 0755));
    REC(s, ::mkdir(s.p("d2"), 0755));
    s.statfs("", true);
    s.readdir("");
  });
}

TEST_CASE("mode=, uid=, gid= set the root directory", "[limits][options]") {
  mt::MountOptions o;
  o.size = "4m";
  o.nr_inodes = 50;
  o.mode = 01770;
  o.uid = 1000;
  o.gid = 2000;
  mt::compare(o, [](Side& s) {
    struct stat st {};
    REC(s, ::stat(s.root_p(""), &st));
    char buf[128];
    std::snprintf(buf, sizeof buf, "mode=%04o uid=%u gid=%u nlink=%lu", st.st_mode & 07777,
                  st.st_uid, st.st_gid, static_cast<unsigned long>(st.st_nlink));
    s.note("root", buf);
    s.as_user(1000, 2000, [](Side& c) {
      REC(c, ::close(::open(c.root_p("by-owner"), O_CREAT | O_WRONLY, 0644)));
      REC(c, ::unlink(c.root_p("by-owner")));
    });
    s.as_user(3000, 3000, [](Side& c) {
      REC_OK(c, ::open(c.root_p("by-stranger"), O_CREAT | O_WRONLY, 0644));
    });
  });
}
