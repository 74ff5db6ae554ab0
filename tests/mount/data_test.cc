// File data paths: fallocate, SEEK_DATA/SEEK_HOLE, copy_file_range, shared
// mmap, the maximum file size, very sparse files.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <csignal>

#include <catch2/catch.hpp>

#include <climits>
#include <cstring>
#include <string>

#include "harness.h"

using mt::Side;

namespace {
std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 7;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    s[i] = static_cast<char>((x >> 16) | 1);  // never zero: holes are visible
  }
  return s;
}
constexpr off_t kPage = 4096;

void seek_map(Side& s, int fd, const std::string& label, off_t size) {
  for (off_t off : {off_t(0), off_t(1), kPage - 1, kPage, 2 * kPage, 3 * kPage + 5, 4 * kPage,
                    5 * kPage, 8 * kPage, size - 1, size, size + 1}) {
    if (off < 0) continue;
    errno = 0;
    off_t d = ::lseek(fd, off, SEEK_DATA);
    int ed = errno;
    errno = 0;
    off_t h = ::lseek(fd, off, SEEK_HOLE);
    int eh = errno;
    s.note("seek " + label + " from " + std::to_string(off),
           (d < 0 ? "DATA:-1 " + mt::errno_name(ed) : "DATA:" + std::to_string(d)) + " " +
               (h < 0 ? "HOLE:-1 " + mt::errno_name(eh) : "HOLE:" + std::to_string(h)));
  }
}
void write_at(Side& s, int fd, off_t off, size_t n, unsigned seed) {
  std::string d = pattern(n, seed);
  ssize_t r = ::pwrite(fd, d.data(), n, off);
  s.note("pwrite " + std::to_string(n) + " at " + std::to_string(off), std::to_string(r));
}
}  // namespace

TEST_CASE("fallocate: default, KEEP_SIZE, PUNCH_HOLE, unsupported modes", "[fallocate]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDWR, 0644));
    s.fstat(fd, "f");
    REC(s, ::fallocate(fd, 0, 0, 3 * kPage + 10));
    s.fstat(fd, "f");
    s.read_all("f");
    REC(s, ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 8 * kPage));
    s.fstat(fd, "f");
    REC(s, ::fallocate(fd, 0, kPage, 10));  // inside: size unchanged
    s.fstat(fd, "f");
    write_at(s, fd, 0, 6 * kPage, 1);
    s.fstat(fd, "f");
    REC(s, ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kPage, 2 * kPage));
    s.fstat(fd, "f");
    s.read_all("f");
    REC(s, ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4 * kPage + 100, 300));
    s.fstat(fd, "f");
    s.read_all("f");
    REC(s, ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 5 * kPage, 100 * kPage));
    s.fstat(fd, "f");
    s.read_all("f");
    REC(s, ::fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, kPage));
    REC(s, ::fallocate(fd, FALLOC_FL_ZERO_RANGE, 0, kPage));
    REC(s, ::fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, kPage));
    REC(s, ::fallocate(fd, FALLOC_FL_INSERT_RANGE, 0, kPage));
    REC(s, ::fallocate(fd, FALLOC_FL_UNSHARE_RANGE, 0, kPage));
    REC(s, ::fallocate(fd, 0, 0, 0));
    REC(s, ::fallocate(fd, 0, -1, 10));
    REC(s, ::fallocate(fd, 0, LLONG_MAX - 10, 100));
    s.fstat(fd, "f");
    REC(s, ::close(fd));
    int ro = REC_OK(s, ::open(s.p("f"), O_RDONLY));
    REC(s, ::fallocate(ro, 0, 0, kPage));
    REC(s, ::close(ro));
    int ap = REC_OK(s, ::open(s.p("f"), O_WRONLY | O_APPEND));
    REC(s, ::fallocate(ap, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, kPage));
    REC(s, ::close(ap));
    s.read_all("f");
    s.stat("f");
  });
}

TEST_CASE("lseek SEEK_DATA / SEEK_HOLE on sparse files", "[seek]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDWR, 0644));
    seek_map(s, fd, "empty", 0);
    write_at(s, fd, 0, 100, 1);
    write_at(s, fd, 4 * kPage + 10, 10, 2);
    REC(s, ::ftruncate(fd, 10 * kPage));
    seek_map(s, fd, "sparse", 10 * kPage);
    s.fstat(fd, "f");
    REC(s, ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, kPage));
    seek_map(s, fd, "punched", 10 * kPage);
    REC(s, ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 8 * kPage, 4 * kPage));
    seek_map(s, fd, "fallocated", 10 * kPage);
    REC(s, ::lseek(fd, -1, SEEK_DATA));
    REC(s, ::lseek(fd, LLONG_MAX, SEEK_HOLE));
    REC(s, ::close(fd));
    REC(s, ::mkdir(s.p("d"), 0755));
    int dfd = REC_OK(s, ::open(s.p("d"), O_RDONLY | O_DIRECTORY));
    s.known(mt::Known::DirSeek);
    REC(s, ::lseek(dfd, 0, SEEK_DATA));
    REC(s, ::close(dfd));
  });
}

TEST_CASE("copy_file_range: whole, partial, same file, overlapping, past EOF",
          "[copy_file_range]") {
  mt::compare([](Side& s) {
    int src = REC_OK(s, ::open(s.p("src"), O_CREAT | O_RDWR, 0644));
    write_at(s, src, 0, 3 * kPage + 123, 5);
    int dst = REC_OK(s, ::open(s.p("dst"), O_CREAT | O_RDWR, 0644));
    s.fstat(dst, "dst");
    REC(s, ::copy_file_range(src, nullptr, dst, nullptr, 1 << 20, 0));
    s.fstat(dst, "dst");
    s.read_all("dst");
    loff_t in = 100, out = 5 * kPage;
    REC(s, ::copy_file_range(src, &in, dst, &out, 5000, 0));
    s.note("offsets", std::to_string(in) + " " + std::to_string(out));
    s.fstat(dst, "dst");
    s.read_all("dst");
    // Past EOF of the source: 0 bytes.
    in = 10 * kPage;
    out = 0;
    REC(s, ::copy_file_range(src, &in, dst, &out, 100, 0));
    in = 3 * kPage + 100;
    REC(s, ::copy_file_range(src, &in, dst, &out, 100, 0));  // short: 23 bytes
    s.read_all("dst");
    // Same file, non-overlapping and overlapping ranges.
    in = 0;
    out = 2 * kPage;
    REC(s, ::copy_file_range(src, &in, src, &out, 1000, 0));
    s.read_all("src");
    in = 0;
    out = 500;
    REC(s, ::copy_file_range(src, &in, src, &out, 1000, 0));  // EINVAL: overlap
    in = 0;
    out = 8 * kPage;
    REC(s, ::copy_file_range(src, &in, src, &out, 1000, 0));  // beyond EOF: extends
    s.fstat(src, "src");
    s.read_all("src");
    REC(s, ::copy_file_range(src, nullptr, dst, nullptr, 10, 1));  // flags: EINVAL
    int ro = REC_OK(s, ::open(s.p("dst"), O_RDONLY));
    REC(s, ::copy_file_range(src, nullptr, ro, nullptr, 10, 0));  // EBADF
    int ap = REC_OK(s, ::open(s.p("dst"), O_WRONLY | O_APPEND));
    REC(s, ::copy_file_range(src, nullptr, ap, nullptr, 10, 0));  // EBADF
    REC(s, ::mkdir(s.p("d"), 0755));
    int dfd = REC_OK(s, ::open(s.p("d"), O_RDONLY | O_DIRECTORY));
    REC(s, ::copy_file_range(dfd, nullptr, dst, nullptr, 10, 0));
    // A hole copies as zeros.
    int sp = REC_OK(s, ::open(s.p("sparse"), O_CREAT | O_RDWR, 0644));
    write_at(s, sp, 5 * kPage, 10, 9);
    in = 0;
    out = 0;
    int d2 = REC_OK(s, ::open(s.p("d2"), O_CREAT | O_RDWR, 0644));
    REC(s, ::copy_file_range(sp, &in, d2, &out, 6 * kPage, 0));
    s.read_all("d2");
    s.fstat(d2, "d2");
    for (int fd : {src, dst, ro, ap, dfd, sp, d2}) ::close(fd);
  });
}

TEST_CASE("shared writable mmap and read/write see the same bytes", "[mmap]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDWR, 0644));
    REC(s, ::ftruncate(fd, 3 * kPage));
    s.fstat(fd, "f");
    void* m = ::mmap(nullptr, 3 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    s.note("mmap shared", m == MAP_FAILED ? "-1 " + mt::errno_name(errno) : "ok");
    if (m == MAP_FAILED) return;
    char* p = static_cast<char*>(m);
    std::string d = pattern(3 * kPage, 11);
    std::memcpy(p, d.data(), 5000);
    REC(s, ::msync(p, 3 * kPage, MS_SYNC));
    s.pread(fd, 0, 6000, "after msync");
    s.fstat(fd, "f");
    std::memcpy(p + 5000, d.data() + 5000, 3 * kPage - 5000);  // no msync: still coherent
    s.pread(fd, 4000, 4 * kPage, "no msync");
    write_at(s, fd, 100, 50, 12);
    write_at(s, fd, 2 * kPage + 1, 4000, 13);
    s.blob("mapping after pwrite", "", std::string(p, 3 * kPage));
    REC(s, ::ftruncate(fd, 2 * kPage + 10));
    s.blob("mapping after truncate (2 pages)", "", std::string(p, 2 * kPage));
    s.blob("partial page tail", "", std::string(p + 2 * kPage, kPage));
    REC(s, ::munmap(m, 3 * kPage));
    s.read_all("f");
    s.fstat(fd, "f");
    // Private mapping: writes do not reach the file.
    void* pm = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    s.note("mmap private", pm == MAP_FAILED ? "-1 " + mt::errno_name(errno) : "ok");
    if (pm != MAP_FAILED) {
      std::memset(pm, 'P', 100);
      s.pread(fd, 0, 200, "under private");
      ::munmap(pm, kPage);
    }
    // A read-only fd cannot be mapped shared writable.
    int ro = REC_OK(s, ::open(s.p("f"), O_RDONLY));
    void* bad = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0);
    s.note("mmap rw on O_RDONLY", bad == MAP_FAILED ? "-1 " + mt::errno_name(errno) : "ok");
    if (bad != MAP_FAILED) ::munmap(bad, kPage);
    REC(s, ::close(ro));
    REC(s, ::close(fd));
    // Map, close the fd, unlink, keep writing through the mapping.
    int fd2 = REC_OK(s, ::open(s.p("g"), O_CREAT | O_RDWR, 0644));
    REC(s, ::ftruncate(fd2, kPage));
    void* m2 = ::mmap(nullptr, kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
    int fd3 = REC_OK(s, ::open(s.p("g"), O_RDONLY));
    REC(s, ::close(fd2));
    REC(s, ::unlink(s.p("g")));
    if (m2 != MAP_FAILED) {
      std::memcpy(m2, "through an unlinked mapping", 27);
      REC(s, ::msync(m2, kPage, MS_SYNC));
      s.pread(fd3, 0, 40, "unlinked");
      ::munmap(m2, kPage);
    }
    REC(s, ::close(fd3));
  });
}

TEST_CASE("maximum file size: EFBIG, 250 GB sparse write, petabyte truncate", "[bigfile]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDWR, 0644));
    const off_t kMax = LLONG_MAX;
    REC(s, ::pwrite(fd, "x", 1, kMax));
    REC(s, ::pwrite(fd, "xy", 2, kMax - 1));  // pos + count overflows: EINVAL
    REC(s, ::pwrite(fd, "z", 1, kMax - 1));   // the very last byte a file can have
    s.fstat(fd, "f");
    s.pread(fd, kMax - 1, 10, "last byte", true);
    REC(s, ::pwrite(fd, "x", 1, -1));
    REC(s, ::lseek(fd, kMax, SEEK_SET));
    REC(s, ::write(fd, "x", 1));
    REC(s, ::ftruncate(fd, 0));
    REC(s, ::lseek(fd, 0, SEEK_SET));
    const off_t k250G = 250LL * 1000 * 1000 * 1000;
    REC(s, ::pwrite(fd, "far away", 8, k250G));
    s.fstat(fd, "f");
    s.pread(fd, k250G - 4, 16, "250G", true);
    s.pread(fd, k250G / 2, 16, "hole in the middle", true);
    REC(s, ::lseek(fd, 0, SEEK_DATA));
    REC(s, ::lseek(fd, 0, SEEK_HOLE));
    const off_t kPB = 1LL << 50;
    REC(s, ::ftruncate(fd, kPB));
    s.fstat(fd, "f");
    s.pread(fd, kPB - 8, 16, "end of PB", true);
    s.pread(fd, k250G, 8, "250G still there", true);
    REC(s, ::ftruncate(fd, kMax));
    s.fstat(fd, "f");
    REC(s, ::ftruncate(fd, 10));
    s.fstat(fd, "f");
    s.read_all("f");
    REC(s, ::close(fd));
    s.statfs("", false);
    // O_LARGEFILE is implied on 64-bit; a write that crosses the limit.
    int fd2 = REC_OK(s, ::open(s.p("g"), O_CREAT | O_RDWR, 0644));
    std::string d(8192, 'e');
    REC(s, ::pwrite(fd2, d.data(), d.size(), kMax - 4096));
    REC(s, ::pwrite(fd2, d.data(), 4096, kMax - 4096));
    REC(s, ::pwrite(fd2, d.data(), 4096, kMax - 4096 - 100));
    s.fstat(fd2, "g");
    s.pread(fd2, kMax - 4200, 300, "tail", true);
    REC(s, ::close(fd2));
    REC(s, ::unlink(s.p("g")));
  });
}

TEST_CASE("RLIMIT_FSIZE: EFBIG past the limit, short write across it", "[bigfile]") {
  mt::compare([](Side& s) {
    REC(s, ::close(::open(s.p("f"), O_CREAT | O_WRONLY, 0666)));
    s.as_user(0, 0, [](Side& c) {
      ::signal(SIGXFSZ, SIG_IGN);
      struct rlimit rl {
        1 << 20, 1 << 20
      };
      REC(c, ::setrlimit(RLIMIT_FSIZE, &rl));
      int fd = REC_OK(c, ::open(c.p("f"), O_WRONLY));
      std::string d(8192, 'r');
      REC(c, ::pwrite(fd, d.data(), d.size(), 1 << 20));
      REC(c, ::pwrite(fd, d.data(), d.size(), (1 << 20) - 100));
      REC(c, ::ftruncate(fd, 2 << 20));
      REC(c, ::fallocate(fd, 0, 0, 2 << 20));
      c.fstat(fd, "f");
      REC(c, ::close(fd));
    });
    s.stat("f");
    s.read_all("f");
  });
}

TEST_CASE("data read back cold, after the kernel's cache is dropped", "[data][cold]") {
  mt::compare([](Side& s) {
    int fd = REC_OK(s, ::open(s.p("f"), O_CREAT | O_RDWR, 0644));
    std::string d = pattern(5 * kPage + 77, 21);
    REC(s, ::pwrite(fd, d.data(), d.size(), 0));
    s.pread(fd, 0, d.size() + 10, "all", true);
    s.pread(fd, kPage - 3, 10, "across a page boundary", true);
    // Overwrite parts of pages, extend, punch, truncate: each read cold.
    REC(s, ::pwrite(fd, "XYZ", 3, 2 * kPage - 1));
    s.pread(fd, 2 * kPage - 4, 10, "after small overwrite", true);
    write_at(s, fd, 9 * kPage + 5, 100, 22);
    s.pread(fd, 0, 10 * kPage, "after extend", true);
    REC(s, ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, kPage + 10, 2 * kPage));
    s.pread(fd, 0, 10 * kPage, "after punch", true);
    REC(s, ::ftruncate(fd, 3 * kPage + 1));
    REC(s, ::ftruncate(fd, 6 * kPage));
    s.pread(fd, 0, 10 * kPage, "after truncate down and up", true);
    // Through a shared mapping.
    void* m = ::mmap(nullptr, 2 * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m != MAP_FAILED) {
      std::memset(static_cast<char*>(m) + 100, 'M', 5000);
      REC(s, ::msync(m, 2 * kPage, MS_SYNC));
      REC(s, ::munmap(m, 2 * kPage));
    }
    s.pread(fd, 0, 3 * kPage, "after mmap write", true);
    REC(s, ::close(fd));
    // Many small appends.
    int ap = REC_OK(s, ::open(s.p("log"), O_CREAT | O_WRONLY | O_APPEND, 0644));
    for (int i = 0; i < 2000; ++i) {
      std::string line = "line " + std::to_string(i) + "\n";
      if (::write(ap, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
        s.note("append", "failed at " + std::to_string(i));
        break;
      }
    }
    REC(s, ::close(ap));
    s.read_all("log");
    s.stat("log");
  });
}
