// Kernel tmpfs as the oracle: the same random operations on a FilePages and
// on a file in /dev/shm must give the same bytes, the same st_blocks and the
// same SEEK_DATA / SEEK_HOLE answers. Skipped when /dev/shm is not a tmpfs.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "core/page_cache.h"

namespace tmpfsd {
namespace {

using Bytes = std::vector<std::byte>;

std::optional<uint64_t> kernel_seek(int fd, uint64_t off, int whence) {
  off_t r = lseek(fd, static_cast<off_t>(off), whence);
  if (r < 0) {
    REQUIRE(errno == ENXIO);
    return std::nullopt;
  }
  return static_cast<uint64_t>(r);
}

}  // namespace

TEST_CASE("PageCache: random operations agree with kernel tmpfs") {
  struct statfs sfs;
  if (statfs("/dev/shm", &sfs) != 0 || sfs.f_type != TMPFS_MAGIC || sysconf(_SC_PAGESIZE) != 4096) {
    WARN("no 4 KiB-page tmpfs at /dev/shm: skipped");
    return;
  }
  char path[] = "/dev/shm/tmpfsd_core_test_XXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  unlink(path);

  auto created = PageCache::create({4096, 64 << 20, 0});
  REQUIRE(created);
  auto cache = std::move(created).value();
  {
    FilePages f(*cache);
    uint64_t size = 0;
    std::mt19937 rng(GENERATE(range(11u, 19u)));
    const uint64_t span = 48 * 4096;
    for (int op = 0; op < 400; ++op) {
      const int kind = rng() % 10;
      const uint64_t off = rng() % span;
      INFO("op " << op << " kind " << kind << " off " << off << " size " << size);
      if (kind < 4) {
        Bytes b(rng() % 3 == 0 ? rng() % 12000 : 1 + rng() % 300);
        for (auto& x : b) x = std::byte(1 + rng() % 255);
        REQUIRE(pwrite(fd, b.data(), b.size(), static_cast<off_t>(off)) ==
                static_cast<ssize_t>(b.size()));
        REQUIRE(f.write(off, b).is_ok());
        size = std::max<uint64_t>(size, off + b.size());
      } else if (kind < 6) {
        REQUIRE(ftruncate(fd, static_cast<off_t>(off)) == 0);
        f.truncate(size, off);
        size = off;
      } else if (kind < 8) {
        const uint64_t len = 1 + rng() % (4 * 4096);
        REQUIRE(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                          static_cast<off_t>(len)) == 0);
        f.punch_hole(off, len);
      } else {
        const uint64_t len = 1 + rng() % (4 * 4096);
        const bool keep = rng() % 2;
        REQUIRE(fallocate(fd, keep ? FALLOC_FL_KEEP_SIZE : 0, static_cast<off_t>(off),
                          static_cast<off_t>(len)) == 0);
        REQUIRE(f.allocate(off, len).is_ok());
        if (!keep) size = std::max(size, off + len);
      }
      struct stat st;
      REQUIRE(fstat(fd, &st) == 0);
      REQUIRE(static_cast<uint64_t>(st.st_size) == size);
      REQUIRE(static_cast<uint64_t>(st.st_blocks) == f.pages() * 8);

      Bytes want(size), got;
      REQUIRE(pread(fd, want.data(), size, 0) == static_cast<ssize_t>(size));
      f.read(0, size, [&](Status s, std::span<const iovec> iov) {
        REQUIRE(s.is_ok());
        for (const iovec& v : iov) {
          auto* p = static_cast<const std::byte*>(v.iov_base);
          got.insert(got.end(), p, p + v.iov_len);
        }
      });
      REQUIRE(got == want);
      for (int k = 0; k < 6; ++k) {
        const uint64_t o = rng() % (size + 4096);
        INFO("seek from " << o);
        auto num = [](std::optional<uint64_t> v) { return v ? int64_t(*v) : int64_t{-1}; };
        REQUIRE(num(f.seek_data(o, size)) == num(kernel_seek(fd, o, SEEK_DATA)));
        REQUIRE(num(f.seek_hole(o, size)) == num(kernel_seek(fd, o, SEEK_HOLE)));
      }
    }
  }
  close(fd);
  CHECK(cache->stats().frames_used == 0);
}

}  // namespace tmpfsd
