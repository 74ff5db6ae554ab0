// Symlinks, hard links, fifos, unix sockets, device nodes; files that stay
// open after unlink (lookup counts); many open/unlink cycles (no leak).
#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <string>

#include "harness.h"

using mt::Side;

TEST_CASE("symlinks: readlink, lstat, long targets, empty target", "[symlink]") {
  mt::compare([](Side& s) {
    REC(s, ::symlink("target", s.p("l")));
    s.lstat("l");
    s.stat("l");
    s.readlink("l");
    REC(s, ::close(::open(s.p("target"), O_CREAT | O_WRONLY, 0600)));
    s.stat("l");
    s.lstat("l");
    REC(s, ::symlink("target", s.p("l")));
    REC(s, ::symlink("", s.p("empty")));
    s.lstat("empty");
    s.readlink("empty");
    std::string t4095(PATH_MAX - 1, 'x');
    for (size_t i = 100; i < t4095.size(); i += 100) t4095[i] = '/';
    REC(s, ::symlink(t4095.c_str(), s.p("long")));
    s.lstat("long");
    s.readlink("long");
    std::string t4096(PATH_MAX, 'y');
    REC(s, ::symlink(t4096.c_str(), s.p("toolong")));
    // Short target crossing the boundary where tmpfs stops storing inline.
    for (size_t n : {1, 2, 59, 60, 61, 127, 128, 129, 4094}) {
      std::string t(n, 'z');
      std::string name = "len" + std::to_string(n);
      REC(s, ::symlink(t.c_str(), s.p(name)));
      s.lstat(name, mt::kStatTimes);
      s.readlink(name);
    }
    // readlink with a small buffer truncates without NUL.
    char small[4];
    REC(s, ::readlink(s.p("l"), small, sizeof small));
    s.blob("small readlink", "", std::string(small, 4));
    REC(s, ::readlink(s.p("target"), small, sizeof small));
    REC(s, ::readlink(s.p("missing"), small, sizeof small));
    // Loops and dangling links.
    REC(s, ::symlink("loop2", s.p("loop1")));
    REC(s, ::symlink("loop1", s.p("loop2")));
    REC_OK(s, ::open(s.p("loop1"), O_RDONLY));
    REC_OK(s, ::open(s.p("l"), O_RDONLY | O_NOFOLLOW));
    REC(s, ::symlink("nowhere", s.p("dangling")));
    REC_OK(s, ::open(s.p("dangling"), O_RDONLY));
    REC_OK(s, ::open(s.p("dangling"), O_CREAT | O_WRONLY, 0644));  // creates "nowhere"
    s.stat("nowhere");
    // Symlink to a directory, lchown on a link.
    REC(s, ::mkdir(s.p("dir"), 0755));
    REC(s, ::symlink("dir", s.p("dl")));
    REC(s, ::close(::open(s.p("dl/inside"), O_CREAT | O_WRONLY, 0644)));
    s.readdir("dir");
    REC(s, ::lchown(s.p("dl"), 1000, 1000));
    s.lstat("dl");
    s.stat("dl");
    REC(s, ::unlink(s.p("dl")));
    s.stat("dir");
    s.readdir("");
  });
}

TEST_CASE("hard links and nlink", "[link]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_WRONLY, 0644));
    REC(s, ::write(fd, "data", 4));
    s.fstat(fd, "f");
    REC(s, ::link(s.p("f"), s.p("g")));
    s.fstat(fd, "f");
    s.stat("", mt::kStatDefault, "dir");
    REC(s, ::link(s.p("f"), s.p("g")));
    REC(s, ::link(s.p("missing"), s.p("h")));
    REC(s, ::link(s.p("f"), s.p("missing/h")));
    REC(s, ::mkdir(s.p("d"), 0755));
    REC(s, ::link(s.p("d"), s.p("dlink")));
    REC(s, ::link(s.p("f"), s.p("d/h")));
    s.stat("g");
    REC(s, ::write(fd, "more", 4));
    s.read_all("g");
    s.read_all("d/h");
    REC(s, ::unlink(s.p("f")));
    s.fstat(fd, "f");
    s.stat("g");
    REC(s, ::unlink(s.p("g")));
    s.fstat(fd, "f");
    REC(s, ::unlink(s.p("d/h")));
    s.fstat(fd, "f");
    REC(s, ::close(fd));
    // Links to symlinks (not followed by link(2)), to fifos.
    REC(s, ::symlink("target", s.p("sl")));
    REC(s, ::link(s.p("sl"), s.p("sl2")));
    s.lstat("sl2");
    REC(s, ::mkfifo(s.p("fifo"), 0600));
    REC(s, ::link(s.p("fifo"), s.p("fifo2")));
    s.lstat("fifo");
    REC(s, ::linkat(AT_FDCWD, s.p("sl"), AT_FDCWD, s.p("followed"), AT_SYMLINK_FOLLOW));
    s.readdir("");
    s.stat("", mt::kStatDefault, "dir");
  });
}

TEST_CASE("fifos, unix sockets and device nodes", "[special]") {
  mt::compare([](Side& s) {
    REC(s, ::mkfifo(s.p("fifo"), 0640));
    s.lstat("fifo");
    REC(s, ::mkfifo(s.p("fifo"), 0640));
    int r = REC_OK(s, ::open(s.p("fifo"), O_RDONLY | O_NONBLOCK));
    int w = REC_OK(s, ::open(s.p("fifo"), O_WRONLY | O_NONBLOCK));
    REC(s, ::write(w, "through", 7));
    char buf[16] = {};
    REC(s, ::read(r, buf, sizeof buf));
    s.blob("fifo data", "", std::string(buf, 7));
    REC(s, ::close(w));
    REC(s, ::close(r));
    s.known(mt::Known::FifoTimes);
    s.lstat("fifo");
    REC(s, ::mknod(s.p("fifo2"), S_IFIFO | 0600, 0));
    s.lstat("fifo2");

    int sock = REC_OK(s, ::socket(AF_UNIX, SOCK_STREAM, 0));
    struct sockaddr_un addr {};
    addr.sun_family = AF_UNIX;
    std::string path = s.p("sock");
    if (path.size() < sizeof addr.sun_path) {
      std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
      REC(s, ::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr));
      REC(s, ::listen(sock, 1));
      s.lstat("sock", mt::kStatDefault & ~mt::kStatTimes);
      int c = REC_OK(s, ::socket(AF_UNIX, SOCK_STREAM, 0));
      REC(s, ::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof addr));
      REC(s, ::close(c));
      int sock2 = ::socket(AF_UNIX, SOCK_STREAM, 0);
      REC(s, ::bind(sock2, reinterpret_cast<sockaddr*>(&addr), sizeof addr));
      ::close(sock2);
    } else {
      s.note("socket path", "too long for sun_path");
    }
    REC(s, ::close(sock));
    REC(s, ::mknod(s.p("sock2"), S_IFSOCK | 0755, 0));
    s.lstat("sock2");

    REC(s, ::mknod(s.p("chr"), S_IFCHR | 0620, makedev(1, 3)));
    s.lstat("chr");
    REC(s, ::mknod(s.p("blk"), S_IFBLK | 0660, makedev(7, 42)));
    s.lstat("blk");
    REC(s, ::mknod(s.p("big"), S_IFCHR | 0600, makedev(4095, 1048575)));
    s.lstat("big");
    REC(s, ::mknod(s.p("reg"), S_IFREG | 0600, 0));
    s.lstat("reg");
    REC(s, ::mknod(s.p("bad"), S_IFMT | 0600, 0));
    REC(s, ::mknod(s.p("dir"), S_IFDIR | 0755, 0));
    REC(s, ::mknod(s.p("chr"), S_IFCHR | 0600, makedev(1, 3)));
    REC(s, ::chmod(s.p("chr"), 0444));
    s.lstat("chr");
    REC(s, ::truncate(s.p("fifo"), 0));
    REC(s, ::rename(s.p("chr"), s.p("chr2")));
    s.lstat("chr2");
    s.readdir("");
    s.stat("", mt::kStatDefault & ~mt::kStatTimes);
  });
}

TEST_CASE("lookup counts: an unlinked file stays usable through its fd", "[lookup]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDWR, 0644));
    std::string d(20000, 'q');
    REC(s, ::write(fd, d.data(), d.size()));
    int fd2 = REC_OK(s, ::open(s.p("f"), O_RDONLY));
    REC(s, ::unlink(s.p("f")));
    s.stat("f");
    s.fstat(fd, "f");
    REC(s, ::pwrite(fd, "after-unlink", 12, 19990));
    s.fstat(fd, "f");
    s.pread(fd2, 0, 30000, "fd2");
    REC(s, ::ftruncate(fd, 8192));
    REC(s, ::fchmod(fd, 0600));
    s.fstat(fd2, "f");
    REC(s, ::close(fd));
    s.pread(fd2, 8000, 1000, "fd2");
    // A new file of the same name is a different file.
    int fd3 = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDWR, 0644));
    REC(s, ::write(fd3, "new", 3));
    s.pread(fd2, 0, 5, "fd2");
    s.read_all("f");
    REC(s, ::close(fd2));
    REC(s, ::close(fd3));
    // Rename over an open file: the old one stays readable.
    REC(s, ::close(::open(s.p("g"), O_CREAT | O_WRONLY, 0644)));
    int fg = REC_OK(s, ::open(s.p("g"), O_RDWR));
    REC(s, ::write(fg, "old g", 5));
    REC(s, ::rename(s.p("f"), s.p("g")));
    s.fstat(fg, "g");
    s.pread(fg, 0, 10, "old g");
    s.read_all("g");
    REC(s, ::close(fg));
    // An unlinked directory kept open.
    REC(s, ::mkdir(s.p("d"), 0755));
    int dfd = REC_OK(s, ::open(s.p("d"), O_RDONLY | O_DIRECTORY));
    REC(s, ::rmdir(s.p("d")));
    s.fstat(dfd, "d", mt::kStatDefault & ~mt::kStatTimes);
    REC(s, ::fchmod(dfd, 0700));
    REC(s, ::close(dfd));
    s.statfs("", false);
  });
}

TEST_CASE("many files opened, closed and unlinked: no leak", "[lookup][leak]") {
  mt::MountOptions o;
  o.size = "64m";
  o.nr_inodes = 2000;
  mt::compare(o, [](Side& s) {
    s.statfs("", true);
    for (int round = 0; round < 5; ++round) {
      std::vector<int> fds;
      int failures = 0;
      for (int i = 0; i < 1500; ++i) {
        std::string n = s.p("f" + std::to_string(i));
        int fd = ::open(n.c_str(), O_CREAT | O_RDWR, 0644);
        if (fd < 0) {
          ++failures;
          continue;
        }
        if (::write(fd, n.data(), n.size()) != static_cast<ssize_t>(n.size())) ++failures;
        if (i % 3 == 0)
          fds.push_back(fd);
        else
          ::close(fd);
        if (::unlink(n.c_str()) != 0) ++failures;
      }
      for (int fd : fds) {
        char b[8];
        if (::pread(fd, b, 8, 0) != 8) ++failures;
        ::close(fd);
      }
      s.note("round " + std::to_string(round), "failures=" + std::to_string(failures));
    }
    // The kernel may release the last reference asynchronously (FUSE
    // FORGET is sent in batches): allow it a moment.
    for (int i = 0; i < 100; ++i) {
      struct statfs sf {};
      ::statfs(s.p(""), &sf);
      if (sf.f_ffree + 2 >= sf.f_files) break;
      Side::tick();
    }
    s.statfs("", true);
    s.readdir("");
    REC(s, ::close(::open(s.p("still-answers"), O_CREAT | O_WRONLY, 0644)));
    s.stat("still-answers");
  });
}
