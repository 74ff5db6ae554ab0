// fsx.cc — single-file exerciser checked against a model.
//
// The model is the file's size plus its contents as a sparse map of 64 KiB
// chunks (absent chunk = zeros), so a write near 1 GiB costs one chunk, not a
// gigabyte. Invariant: every model byte at or beyond `size` is zero, which
// makes "extend" (truncate up, fallocate, write past EOF) need no zeroing.
//
// Every op is applied to the file and the model; every read (read(2) and
// through a MAP_SHARED mapping) is compared byte for byte, the file size is
// compared after every op, and SEEK_HOLE answers are checked to cover only
// bytes the model says are zero. On the first mismatch the last 30 ops are
// printed with the first bad offset.
#include "fsx.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "op.h"

namespace fsdiff {
namespace {

constexpr int64_t kChunk = 64 * 1024;
constexpr int64_t kFar = 1LL << 30;

class Model {
 public:
  int64_t size() const { return size_; }

  void read(int64_t off, int64_t len, uint8_t* out) const {
    while (len > 0) {
      int64_t ci = off / kChunk, co = off % kChunk, n = std::min(len, kChunk - co);
      auto it = chunks_.find(ci);
      if (it == chunks_.end())
        memset(out, 0, size_t(n));
      else
        memcpy(out, it->second.data() + co, size_t(n));
      off += n, out += n, len -= n;
    }
  }

  void write(int64_t off, const uint8_t* in, int64_t len) {
    size_ = std::max(size_, off + len);
    while (len > 0) {
      int64_t ci = off / kChunk, co = off % kChunk, n = std::min(len, kChunk - co);
      auto& c = chunks_[ci];
      if (c.empty()) c.assign(size_t(kChunk), 0);
      memcpy(c.data() + co, in, size_t(n));
      off += n, in += n, len -= n;
    }
  }

  void zero(int64_t off, int64_t len) {
    while (len > 0) {
      int64_t ci = off / kChunk, co = off % kChunk, n = std::min(len, kChunk - co);
      auto it = chunks_.find(ci);
      if (it != chunks_.end()) {
        if (n == kChunk)
          chunks_.erase(it);
        else
          memset(it->second.data() + co, 0, size_t(n));
      }
      off += n, len -= n;
    }
  }

  void truncate(int64_t n) {
    if (n < size_) {
      // Keep the invariant: bytes past EOF are zero.
      zero(n, std::min(size_, (n / kChunk + 1) * kChunk) - n);
      chunks_.erase(chunks_.upper_bound(n / kChunk), chunks_.end());
      if (n % kChunk == 0) chunks_.erase(n / kChunk);
    }
    size_ = n;
  }

  void extend(int64_t n) { size_ = std::max(size_, n); }

 private:
  int64_t size_ = 0;
  std::map<int64_t, std::vector<uint8_t>> chunks_;
};

class Fsx {
 public:
  explicit Fsx(const FsxOptions& o) : opt_(o), rng_(o.seed) {}
  int run();

 private:
  uint64_t below(uint64_t n) { return n ? rng_() % n : 0; }
  bool chance(int pct) { return below(100) < uint64_t(pct); }
  int64_t pick_off(bool within_size);
  int64_t pick_len() {
    return chance(80) ? int64_t(below(16384)) + 1 : int64_t(below(256 * 1024)) + 1;
  }
  void log(std::string s) {
    if (recent_.size() == 30) recent_.pop_front();
    recent_.push_back(fmt::format("{:7} {}", step_, s));
  }
  bool fail(const std::string& what);
  bool check_bytes(const char* what, int64_t off, const uint8_t* got, int64_t n);
  bool check_size();
  bool sys(bool ok, const char* what) {
    return ok || fail(fmt::format("{} failed: {}", what, strerror(errno)));
  }

  bool do_read();
  bool do_write();
  bool do_mapread();
  bool do_mapwrite();
  bool do_truncate();
  bool do_fallocate();
  bool do_seek();
  bool do_reopen();

  FsxOptions opt_;
  std::mt19937_64 rng_;
  Model model_;
  int fd_ = -1;
  size_t step_ = 0;
  bool zero_range_ok_ = true;  // tmpfs has no FALLOC_FL_ZERO_RANGE: stop after EOPNOTSUPP
  std::deque<std::string> recent_;
  std::vector<uint8_t> buf_, want_;
};

int64_t Fsx::pick_off(bool within_size) {
  int64_t limit = within_size ? model_.size() : opt_.max_dense;
  if (limit <= 0) return 0;
  if (within_size && model_.size() > opt_.max_dense && chance(80))
    limit = opt_.max_dense;  // mostly stay in the dense region of a far-extended file
  int64_t off = int64_t(below(uint64_t(limit)));
  if (chance(20)) off &= ~int64_t(4095);  // page-aligned edges matter for mmap and holes
  return off;
}

bool Fsx::fail(const std::string& what) {
  std::string s = fmt::format("fsx: FAILURE at op {} (seed={} file={}): {}\nfsx: last {} ops:\n",
                              step_, opt_.seed, opt_.file, what, recent_.size());
  for (const auto& r : recent_) s += "  " + r + "\n";
  fwrite(s.data(), 1, s.size(), stdout);
  fflush(stdout);
  return false;
}

bool Fsx::check_bytes(const char* what, int64_t off, const uint8_t* got, int64_t n) {
  want_.resize(size_t(n));
  model_.read(off, n, want_.data());
  if (memcmp(want_.data(), got, size_t(n)) == 0) return true;
  int64_t i = 0;
  while (want_[size_t(i)] == got[size_t(i)]) i++;
  int64_t j = i;
  while (j < n && want_[size_t(j)] != got[size_t(j)]) j++;
  return fail(
      fmt::format("{}: first bad byte at offset {} (op range {}+{}): expected {:#04x} got {:#04x}, "
                  "{} bad bytes in a row; page {} offset-in-page {}",
                  what, off + i, off, n, want_[size_t(i)], got[size_t(i)], j - i, (off + i) / 4096,
                  (off + i) % 4096));
}

bool Fsx::check_size() {
  struct stat st;
  if (!sys(fstat(fd_, &st) == 0, "fstat")) return false;
  if (st.st_size != model_.size())
    return fail(fmt::format("size is {}, expected {}", st.st_size, model_.size()));
  return true;
}

bool Fsx::do_read() {
  int64_t off = pick_off(true), len = pick_len();
  log(fmt::format("read    {:#x} +{:#x}", off, len));
  buf_.resize(size_t(len));
  ssize_t r = pread(fd_, buf_.data(), size_t(len), off);
  if (!sys(r >= 0, "pread")) return false;
  int64_t want = std::max<int64_t>(0, std::min(len, model_.size() - off));
  if (r != want) return fail(fmt::format("pread returned {}, expected {}", r, want));
  return check_bytes("read", off, buf_.data(), r);
}

bool Fsx::do_write() {
  int64_t off = chance(1) ? kFar + int64_t(below(1 << 20)) : pick_off(false);
  int64_t len = pick_len();
  log(fmt::format("write   {:#x} +{:#x}", off, len));
  buf_.resize(size_t(len));
  fill_pattern(rng_(), buf_.data(), buf_.size());
  ssize_t r = pwrite(fd_, buf_.data(), size_t(len), off);
  if (!sys(r == len, "pwrite")) return false;
  model_.write(off, buf_.data(), len);
  return true;
}

bool Fsx::do_mapread() {
  if (model_.size() == 0) return true;
  int64_t off = pick_off(true);
  int64_t len = std::min(pick_len(), model_.size() - off);
  log(fmt::format("mapread {:#x} +{:#x}", off, len));
  int64_t moff = off & ~int64_t(4095);
  size_t mlen = size_t(off + len - moff);
  void* p = mmap(nullptr, mlen, PROT_READ, MAP_SHARED, fd_, moff);
  if (!sys(p != MAP_FAILED, "mmap")) return false;
  bool ok = check_bytes("mapread", off, static_cast<uint8_t*>(p) + (off - moff), len);
  munmap(p, mlen);
  return ok;
}

bool Fsx::do_mapwrite() {
  int64_t off = pick_off(false), len = pick_len();
  log(fmt::format("mapwrite {:#x} +{:#x}", off, len));
  if (off + len > model_.size()) {
    // A mapping cannot extend a file: grow it first, as fsx does.
    if (!sys(ftruncate(fd_, off + len) == 0, "ftruncate before mapwrite")) return false;
    model_.extend(off + len);
  }
  int64_t moff = off & ~int64_t(4095);
  size_t mlen = size_t(off + len - moff);
  void* p = mmap(nullptr, mlen, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, moff);
  if (!sys(p != MAP_FAILED, "mmap")) return false;
  buf_.resize(size_t(len));
  fill_pattern(rng_(), buf_.data(), buf_.size());
  memcpy(static_cast<uint8_t*>(p) + (off - moff), buf_.data(), size_t(len));
  bool ok = sys(msync(p, mlen, MS_SYNC) == 0, "msync");
  munmap(p, mlen);
  model_.write(off, buf_.data(), len);
  return ok;
}

bool Fsx::do_truncate() {
  int64_t n = chance(2) ? kFar + int64_t(below(1 << 20)) : int64_t(below(uint64_t(opt_.max_dense)));
  log(fmt::format("truncate {:#x} -> {:#x}", model_.size(), n));
  if (!sys(ftruncate(fd_, n) == 0, "ftruncate")) return false;
  model_.truncate(n);
  return true;
}

bool Fsx::do_fallocate() {
  int64_t off = pick_off(chance(70)), len = pick_len();
  int kind = int(below(zero_range_ok_ ? 5 : 4));
  int mode = kind == 0   ? 0
             : kind == 1 ? FALLOC_FL_KEEP_SIZE
             : kind <= 3 ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
                         : FALLOC_FL_ZERO_RANGE | (chance(50) ? FALLOC_FL_KEEP_SIZE : 0);
  log(fmt::format("falloc  {:#x} +{:#x} mode={:#x}", off, len, mode));
  if (fallocate(fd_, mode, off, len) < 0) {
    if ((mode & FALLOC_FL_ZERO_RANGE) && errno == EOPNOTSUPP) {
      zero_range_ok_ = false;
      return true;
    }
    return sys(false, "fallocate");
  }
  int64_t end = off + len;
  if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))
    model_.zero(off, std::max<int64_t>(0, std::min(end, model_.size()) - off));
  if (!(mode & FALLOC_FL_KEEP_SIZE)) model_.extend(end);
  return true;
}

bool Fsx::do_seek() {
  // A hole the file system reports must read as zeros; data may be anywhere.
  if (!opt_.check_holes) return true;
  int64_t off = pick_off(true);
  if (off >= model_.size()) return true;
  log(fmt::format("seekhole {:#x}", off));
  off_t h = lseek(fd_, off, SEEK_HOLE);
  if (!sys(h >= 0, "lseek SEEK_HOLE")) return false;
  if (h < off || h > model_.size())
    return fail(fmt::format("SEEK_HOLE from {} returned {} (size {})", off, h, model_.size()));
  if (h == model_.size()) return true;
  off_t d = lseek(fd_, h, SEEK_DATA);
  int64_t end = d < 0 ? model_.size() : d;
  if (d < 0 && errno != ENXIO) return sys(false, "lseek SEEK_DATA");
  int64_t n = std::min<int64_t>(end - h, 256 * 1024);
  std::vector<uint8_t> zeros(size_t(n), 0);
  return check_bytes("hole reported by SEEK_HOLE/SEEK_DATA", h, zeros.data(), n);
}

bool Fsx::do_reopen() {
  log("reopen");
  if (chance(50) && !sys(fsync(fd_) == 0, "fsync")) return false;
  close(fd_);
  fd_ = open(opt_.file.c_str(), O_RDWR | O_CLOEXEC);
  return sys(fd_ >= 0, "reopen");
}

int Fsx::run() {
  fd_ = open(opt_.file.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    fmt::print("fsx: cannot create {}: {}\n", opt_.file, strerror(errno));
    return 2;
  }
  fmt::print("fsx: {} ops on {}, seed={}\n", opt_.ops, opt_.file, opt_.seed);
  for (step_ = 0; step_ < opt_.ops; step_++) {
    uint64_t r = below(100);
    bool ok = r < 22   ? do_read()
              : r < 44 ? do_write()
              : r < 54 ? do_mapread()
              : r < 64 ? do_mapwrite()
              : r < 74 ? do_truncate()
              : r < 90 ? do_fallocate()
              : r < 98 ? do_seek()
                       : do_reopen();
    if (!ok || !check_size()) {
      close(fd_);
      return 1;
    }
  }
  // A final full read-back, in case something went bad where no read looked.
  int64_t dense = std::min(model_.size(), opt_.max_dense);
  buf_.resize(size_t(dense));
  ssize_t r = pread(fd_, buf_.data(), size_t(dense), 0);
  if (r != dense || !check_bytes("final read-back", 0, buf_.data(), dense)) {
    if (r != dense) fail(fmt::format("final read-back returned {}", r));
    close(fd_);
    return 1;
  }
  close(fd_);
  unlink(opt_.file.c_str());
  fmt::print("fsx: {} ops passed\n", opt_.ops);
  return 0;
}

}  // namespace

int fsx_main(const FsxOptions& opt) {
  Fsx f(opt);
  return f.run();
}

}  // namespace fsdiff
