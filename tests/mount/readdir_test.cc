// Directory reading while entries come and go: getdents64 in small chunks,
// telldir/seekdir, rewinddir. What must hold on both mounts: no name returned
// twice in one pass, and every name that existed throughout is returned.
// Which added or removed names show up is implementation detail: it is
// reported but not compared.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "harness.h"

using mt::Side;

namespace {
struct Dirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

void touch(const char* path) {
  int fd = ::open(path, O_CREAT | O_WRONLY, 0644);
  if (fd >= 0) ::close(fd);
}
}  // namespace

TEST_CASE("readdir in small chunks while entries are added and removed", "[readdir]") {
  mt::compare([](Side& s) {
    REC(s, ::mkdir(s.p("d"), 0755));
    constexpr int kStable = 1000, kVolatile = 300;
    for (int i = 0; i < kStable; ++i) touch(s.p("d/stable" + std::to_string(i)));
    for (int i = 0; i < kVolatile; ++i) touch(s.p("d/vol" + std::to_string(i)));
    for (int i = 0; i < 20; ++i) REC(s, ::mkdir(s.p("d/sub" + std::to_string(i)), 0755));
    int fd = REC_OK(s, ::open(s.p("d"), O_RDONLY | O_DIRECTORY));
    std::map<std::string, int> seen;
    alignas(8) char buf[600];
    int chunks = 0, removed = 0, added = 0, bad_type = 0;
    for (;;) {
      long n = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
      if (n < 0) {
        s.note("getdents64", "-1 " + mt::errno_name(errno));
        break;
      }
      if (n == 0) break;
      for (long off = 0; off < n;) {
        auto* de = reinterpret_cast<Dirent64*>(buf + off);
        std::string name = de->d_name;
        ++seen[name];
        bool dir = name.rfind("sub", 0) == 0 || name == "." || name == "..";
        if (de->d_type != (dir ? DT_DIR : DT_REG)) ++bad_type;
        off += de->d_reclen;
      }
      ++chunks;
      // Change the directory between chunks.
      // Removals are bounded too, so that both sides end in the same state
      // even if one needs more chunks for the pass.
      for (int k = 0; k < 3 && removed < 150; ++k)
        if (::unlink(s.p("d/vol" + std::to_string(removed++))) != 0)
          s.note("unlink vol", mt::errno_name(errno));
      // Bounded: a directory that returns new entries forever would never end.
      for (int k = 0; k < 3 && added < 150; ++k) touch(s.p("d/new" + std::to_string(added++)));
      if (chunks > 5000) {
        s.note("getdents64", "more than 5000 chunks: the pass does not end");
        break;
      }
      if (chunks % 10 == 0 && chunks <= 50) ::rmdir(s.p("d/sub" + std::to_string(chunks / 10 + 9)));
    }
    s.note("enough chunks for every change", chunks >= 50 ? "yes" : "no");
    int dups = 0, missing = 0;
    for (auto& [name, count] : seen)
      if (count > 1) ++dups;
    for (int i = 0; i < kStable; ++i)
      if (!seen.count("stable" + std::to_string(i))) ++missing;
    for (int i = 0; i < 10; ++i)
      if (!seen.count("sub" + std::to_string(i))) ++missing;
    if (!seen.count(".") || !seen.count("..")) ++missing;
    s.note("pass while changing", "duplicates=" + std::to_string(dups) +
                                      " stable missing=" + std::to_string(missing) +
                                      " bad d_type=" + std::to_string(bad_type));
    REC(s, ::lseek(fd, 0, SEEK_SET));
    std::set<std::string> after;
    for (;;) {
      long n = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
      if (n <= 0) break;
      for (long off = 0; off < n;) {
        auto* de = reinterpret_cast<Dirent64*>(buf + off);
        after.insert(de->d_name);
        off += de->d_reclen;
      }
    }
    REC(s, ::close(fd));
    s.note("after rewind: names", std::to_string(after.size()));
    s.note("new names added during the pass", std::to_string(added));
    s.readdir("d");
  });
}

TEST_CASE("telldir/seekdir return to the same place; rewinddir sees changes", "[readdir]") {
  mt::compare([](Side& s) {
    REC(s, ::mkdir(s.p("d"), 0755));
    for (int i = 0; i < 500; ++i) touch(s.p("d/e" + std::to_string(i)));
    DIR* d = ::opendir(s.p("d"));
    s.note("opendir", d ? "ok" : "failed");
    if (!d) return;
    std::vector<std::string> first;
    for (int i = 0; i < 200; ++i) {
      struct dirent* de = ::readdir(d);
      if (!de) break;
      first.push_back(de->d_name);
    }
    long pos = ::telldir(d);
    std::vector<std::string> next, again;
    for (int i = 0; i < 100; ++i) {
      struct dirent* de = ::readdir(d);
      if (!de) break;
      next.push_back(de->d_name);
    }
    ::seekdir(d, pos);
    for (int i = 0; i < 100; ++i) {
      struct dirent* de = ::readdir(d);
      if (!de) break;
      again.push_back(de->d_name);
    }
    s.note("seekdir(telldir) replays the same names", next == again ? "yes" : "NO");
    s.note("counts", std::to_string(first.size()) + " " + std::to_string(next.size()));
    // Position 0 via seekdir, then the whole listing.
    ::seekdir(d, 0);
    std::set<std::string> all;
    while (struct dirent* de = ::readdir(d)) all.insert(de->d_name);
    s.note("after seekdir(0)", std::to_string(all.size()) + " names");
    // Changes, then rewinddir: new name seen, removed name gone.
    touch(s.p("d/fresh"));
    ::unlink(s.p("d/e7"));
    ::rewinddir(d);
    std::set<std::string> re;
    while (struct dirent* de = ::readdir(d)) re.insert(de->d_name);
    s.note("after rewinddir", std::string(re.count("fresh") ? "fresh:yes" : "fresh:no") +
                                  (re.count("e7") ? " e7:yes " : " e7:no ") +
                                  std::to_string(re.size()));
    REC(s, ::closedir(d));
    // Reading an empty and a removed directory.
    REC(s, ::mkdir(s.p("empty"), 0755));
    s.readdir("empty");
    int fd = REC_OK(s, ::open(s.p("empty"), O_RDONLY | O_DIRECTORY));
    REC(s, ::rmdir(s.p("empty")));
    alignas(8) char buf[4096];
    REC(s, ::syscall(SYS_getdents64, fd, buf, sizeof buf));
    REC(s, ::close(fd));
    int ffd = REC_OK(s, ::open(s.p("d/e1"), O_RDONLY));
    REC(s, ::syscall(SYS_getdents64, ffd, buf, sizeof buf));
    REC(s, ::close(ffd));
  });
}

TEST_CASE("a large directory: 5000 long names, listing, lookups, removal", "[readdir][bigdir]") {
  mt::compare([](Side& s) {
    REC(s, ::mkdir(s.p("big"), 0755));
    int failed = 0;
    for (int i = 0; i < 5000; ++i) {
      std::string name = "big/" + std::to_string(i) + std::string(200, 'x');
      if (i % 5 == 0) {
        if (::mkdir(s.p(name), 0700) != 0) ++failed;
      } else {
        int fd = ::open(s.p(name), O_CREAT | O_WRONLY, 0600);
        if (fd < 0)
          ++failed;
        else
          ::close(fd);
      }
    }
    s.note("created", "failures=" + std::to_string(failed));
    s.stat("big", mt::kStatDefault & ~mt::kStatTimes);
    s.readdir("big");
    s.stat("big/4999" + std::string(200, 'x'));
    s.stat("big/5000" + std::string(200, 'x'));
    failed = 0;
    for (int i = 0; i < 5000; ++i) {
      std::string name = "big/" + std::to_string(i) + std::string(200, 'x');
      if ((i % 5 == 0 ? ::rmdir(s.p(name)) : ::unlink(s.p(name))) != 0) ++failed;
    }
    s.note("removed", "failures=" + std::to_string(failed));
    s.stat("big", mt::kStatDefault & ~mt::kStatTimes);
    s.readdir("big");
    REC(s, ::rmdir(s.p("big")));
  });
}
