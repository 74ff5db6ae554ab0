#include "swapdev/swap_file.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>

namespace tmpfsd::swapdev {

namespace {

constexpr size_t kProbe = 4096;

SwapFile fail(int fd, int err, std::string msg) {
  if (fd >= 0) ::close(fd);
  SwapFile f;
  f.err = err;
  f.error = std::move(msg);
  return f;
}

std::string human(uint64_t b) {
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int i = 0;
  while (v >= 1024 && i < 4) v /= 1024, ++i;
  return fmt::format("{:.1f} {}", v, unit[i]);
}

// O_TMPFILE first; where the file system lacks it, a random name that is
// unlinked at once (the window in which it has a name is a few syscalls).
int open_nameless(const SwapFileOptions& opt, int flags, bool& used_tmpfile) {
  const std::string& dir = opt.dir;
  if ((flags & O_DIRECT) && opt.test_refuse_direct_open) {
    errno = EINVAL;
    return -1;
  }
  if (!opt.name.empty())  // named and kept: what it holds is the slots' data
    return ::open((dir + "/" + opt.name).c_str(), O_CREAT | O_RDWR | O_CLOEXEC | flags, 0600);
  used_tmpfile = true;
  int fd = -1;
  if (opt.test_no_tmpfile)
    errno = EOPNOTSUPP;
  else
    fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC | flags, 0600);
  if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR)) return fd;
  used_tmpfile = false;
  std::random_device rd;
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string path = fmt::format("{}/.tmpfsd-swap-{:016x}", dir, (uint64_t{rd()} << 32) | rd());
    fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | flags, 0600);
    if (fd >= 0) {
      ::unlink(path.c_str());
      return fd;
    }
    if (errno != EEXIST) return -1;
  }
  return -1;
}

}  // namespace

SwapFile create_swap_file(const SwapFileOptions& opt) noexcept {
  const std::string& dir = opt.dir;
  struct statfs fs {};
  if (::statfs(dir.c_str(), &fs) != 0) {
    int e = errno;
    return fail(-1, -e, fmt::format("swap directory {}: {}", dir, std::strerror(e)));
  }
  if ((fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC) && !opt.allow_tmpfs)
    return fail(-1, -EINVAL,
                fmt::format("swap directory {} is on a tmpfs/ramfs: swapping memory into memory "
                            "gains nothing; give a directory on a disk file system (--swap-dir)",
                            dir));

  bool direct = opt.direct_io;
  bool used_tmpfile = true;
  int fd = open_nameless(opt, direct ? O_DIRECT : 0, used_tmpfile);
  if (fd < 0 && direct && errno == EINVAL) {
    direct = false;
    fd = open_nameless(opt, 0, used_tmpfile);
  }
  if (fd < 0) {
    int e = errno;
    return fail(-1, -e,
                fmt::format("cannot create the swap file in {}: {}", dir, std::strerror(e)));
  }
  if (!used_tmpfile && opt.name.empty())
    spdlog::info("swapdev: {} lacks O_TMPFILE; used create+unlink", dir);
  // The probes below write and punch one page: the first slot's in a new
  // file, one past the slots in a named one, whose slots hold data.
  const off_t probe = opt.name.empty() ? 0 : static_cast<off_t>(opt.size_bytes);
  ::fchmod(fd, 0600);  // O_TMPFILE applies the umask; be explicit

  if (::fallocate(fd, 0, 0, static_cast<off_t>(opt.size_bytes)) != 0) {
    int e = errno;
    uint64_t avail = uint64_t{fs.f_bavail} * fs.f_bsize;
    if (e == ENOSPC || e == EDQUOT || e == EFBIG)
      return fail(fd, -e,
                  fmt::format("not enough room in {} for a {} swap file ({} available): {}", dir,
                              human(opt.size_bytes), human(avail), std::strerror(e)));
    if (e == EOPNOTSUPP)
      return fail(fd, -e,
                  fmt::format("the file system of {} cannot reserve space (fallocate): "
                              "choose another --swap-dir",
                              dir));
    return fail(
        fd, -e,
        fmt::format("cannot reserve {} in {}: {}", human(opt.size_bytes), dir, std::strerror(e)));
  }

  SwapFile f;
  // Discard support: punch the first page and see.
  if (probe != 0 && ::fallocate(fd, 0, probe, kProbe) != 0) {
    const int e = errno;
    return fail(fd, -e,
                fmt::format("cannot reserve {} in {}: {}", human(opt.size_bytes + kProbe), dir,
                            std::strerror(e)));
  }
  if (::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, probe, kProbe) != 0) {
    f.can_punch = false;
    spdlog::warn("swapdev: {} cannot punch holes ({}); freed swap space is not given back", dir,
                 std::strerror(errno));
  } else {
    ::fallocate(fd, 0, probe, kProbe);  // reserve it again
  }

  // Some file systems accept O_DIRECT at open and refuse it at I/O time.
  if (direct) {
    void* buf = std::aligned_alloc(kProbe, kProbe);
    std::memset(buf, 0, kProbe);
    ssize_t n = ::pwrite(fd, buf, kProbe, probe);
    int e = errno;
    if (opt.test_refuse_direct_io) n = -1, e = EINVAL;
    std::free(buf);
    if (n != static_cast<ssize_t>(kProbe)) {
      if (n < 0 && e != EINVAL)
        return fail(fd, -e,
                    fmt::format("cannot write the swap file in {}: {}", dir, std::strerror(e)));
      int fl = ::fcntl(fd, F_GETFL);
      ::fcntl(fd, F_SETFL, fl & ~O_DIRECT);
      direct = false;
    }
  }
  // The smallest block O_DIRECT takes here (partial page writes,
  // write_blocks): try 512 B and up inside the probe page, which is
  // reserved and holds no slot's data yet.
  if (direct) {
    void* buf = std::aligned_alloc(kProbe, kProbe);
    std::memset(buf, 0, kProbe);
    for (size_t b = 512; b <= kProbe; b *= 2) {
      if (::pwrite(fd, buf, b, probe + static_cast<off_t>(kProbe - b)) == static_cast<ssize_t>(b)) {
        f.dio_shift = static_cast<unsigned>(std::countr_zero(b));
        break;
      }
    }
    std::free(buf);
  }
  if (opt.direct_io && !direct)
    spdlog::warn(
        "swapdev: {} does not support O_DIRECT; the swap file uses buffered I/O "
        "(pages are cached twice, by us and by the kernel)",
        dir);
  if (probe != 0 && ::ftruncate(fd, probe) != 0) {
    const int e = errno;
    return fail(fd, -e, fmt::format("cannot size the swap file in {}: {}", dir, std::strerror(e)));
  }
  f.fd = fd;
  f.direct = direct;
  return f;
}

}  // namespace tmpfsd::swapdev
