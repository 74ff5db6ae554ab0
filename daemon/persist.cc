#include "daemon/persist.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <optional>
#include <thread>

#include <spdlog/spdlog.h>

#include "core/image.h"
#include "core/namespace.h"
#include "daemon/fd_io.h"
#include "daemon/image_seal.h"
#include "daemon/notify.h"
#include "swapdev/uring_swap_device.h"

namespace tmpfsd {

namespace {

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

// While a save writes, systemd is asked for this much more stop time, again
// every kStopExtensionEvery.
constexpr std::chrono::seconds kStopExtension{60};
constexpr std::chrono::seconds kStopExtensionEvery{5};

}  // namespace

Persist::Persist(std::string dir, int dir_fd, int lock_fd, std::unique_ptr<ImageKey> key)
    : dir_(std::move(dir)), dir_fd_(dir_fd), lock_fd_(lock_fd), key_(std::move(key)) {}

std::unique_ptr<Persist> Persist::open(const std::string& dir, const std::string& key_file,
                                       std::string* why, int inherited_lock) {
  std::unique_ptr<ImageKey> key;
  if (!key_file.empty() && !(key = ImageKey::load(key_file, why))) return nullptr;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    *why = errno_text("cannot create " + dir);
    return nullptr;
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    *why = errno_text(dir);
    return nullptr;
  }
  if (inherited_lock >= 0) ::fcntl(inherited_lock, F_SETFD, FD_CLOEXEC);
  const int lfd = inherited_lock >= 0 ? inherited_lock
                                      : ::openat(dfd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lfd < 0) {
    *why = errno_text(dir + "/lock");
    ::close(dfd);
    return nullptr;
  }
  // A daemon that has just been unmounted may still be saving: wait for it.
  const auto deadline = std::chrono::steady_clock::now() + kLockWait;
  bool said = false;
  while (::flock(lfd, LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK && errno != EINTR) {
      *why = errno_text("cannot lock " + dir + "/lock");
      ::close(lfd);
      ::close(dfd);
      return nullptr;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      *why = dir + " is in use by another tmpfsd (its lock was held for " +
             std::to_string(kLockWait.count()) + " s)";
      ::close(lfd);
      ::close(dfd);
      return nullptr;
    }
    if (!said) spdlog::info("persist: waiting for the tmpfsd that holds {}/lock", dir);
    said = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return std::unique_ptr<Persist>(new Persist(dir, dfd, lfd, std::move(key)));
}

Persist::~Persist() {
  ::close(lock_fd_);  // releases the flock
  ::close(dir_fd_);
}

bool Persist::image_info(uint64_t* bytes, uint64_t* age_seconds) const {
  struct stat st;
  if (::fstatat(dir_fd_, "image", &st, 0) != 0) return false;
  *bytes = static_cast<uint64_t>(st.st_size);
  const time_t now = ::time(nullptr);
  *age_seconds = now > st.st_mtime ? static_cast<uint64_t>(now - st.st_mtime) : 0;
  return true;
}

bool Persist::load(Namespace& ns, std::string* why) {
  const int fd = ::openat(dir_fd_, "image", O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    spdlog::info("persist: no image in {}: an empty file system", dir_);
    return true;
  }
  if (fd < 0) {
    *why = errno_text(dir_ + "/image");
    return false;
  }
  const auto start = std::chrono::steady_clock::now();
  const bool sealed = is_sealed_image(fd);
  if (sealed && !key_) {
    ::close(fd);
    *why = dir_ + "/image is sealed: start with its --persist-key";
    return false;
  }
  if (!sealed && key_)
    spdlog::info("persist: {}/image is not sealed; the next save seals it", dir_);
  std::optional<SealedImageReader> opener;
  if (sealed) opener.emplace(fd, *key_);
  ImageReader r([fd, &opener](std::span<std::byte> out) -> Result<size_t> {
    return opener ? opener->read(out) : read_full(fd, out);
  });
  Namespace::LazyImage lazy{.dev = swap_, .sync = {}};
  const Status s = ns.load_image(r, swap_ ? &lazy : nullptr);
  ::close(fd);
  if (!s) {
    const std::string& reason = opener && !opener->why().empty() ? opener->why() : r.why();
    *why = dir_ + "/image: " + (reason.empty() ? std::strerror(s.code()) : reason);
    return false;
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
  spdlog::info("persist: restored {} inodes from {}/image in {} ms{}", ns.inode_count(), dir_, ms,
               ns.loaded_lazy() ? " (lazy: pages bound to their slots in swap, none read)" : "");
  return true;
}

bool Persist::save(Namespace& ns, std::string* why) {
  const auto start = std::chrono::steady_clock::now();
  const int fd = ::openat(dir_fd_, "image.new", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    *why = errno_text(dir_ + "/image.new");
    return false;
  }
  uint64_t bytes = 0;
  std::optional<SealedImageWriter> sealer;
  if (key_) sealer.emplace(fd, *key_);
  // Under systemd the save runs after STOPPING=1, within the unit's
  // TimeoutStopSec: a save that is writing asks for more time as it goes.
  notify::extend_timeout(kStopExtension.count());
  auto asked = start;
  ImageWriter w([fd, &bytes, &sealer, &asked](std::span<const std::byte> b) {
    bytes += b.size();
    if (const auto now = std::chrono::steady_clock::now(); now - asked >= kStopExtensionEvery) {
      notify::extend_timeout(kStopExtension.count());
      asked = now;
    }
    return sealer ? sealer->write(b) : write_all(fd, b);
  });
  swapdev::UringSwapDevice* dev = swap_;
  Namespace::LazyImage lazy{.dev = dev, .sync = [dev]() -> Status {
                              if (::fdatasync(dev->fd()) != 0) return Errno{errno};
                              return {};
                            }};
  Status s = ns.save_image(w, false, dev ? &lazy : nullptr);
  if (s && sealer) s = sealer->finish();
  if (s && ::fsync(fd) != 0) s = Errno{errno};
  if (::close(fd) != 0 && s) s = Errno{errno};
  if (s && ::renameat(dir_fd_, "image.new", dir_fd_, "image") != 0) s = Errno{errno};
  if (s && ::fsync(dir_fd_) != 0) s = Errno{errno};
  if (!s) {
    *why = dir_ + "/image: " + std::strerror(s.code()) + " (the previous image, if any, stays)";
    ::unlinkat(dir_fd_, "image.new", 0);
    return false;
  }
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::steady_clock::now() - start)
                      .count();
  spdlog::info("persist: saved {} inodes, {} bytes, to {}/image{}{} in {} ms", ns.inode_count(),
               bytes, dir_, key_ ? " (sealed)" : "", dev ? " (the data stays in swap)" : "", ms);
  return true;
}

}  // namespace tmpfsd
