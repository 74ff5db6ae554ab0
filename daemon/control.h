// The control channel between tmpfsctl and a running tmpfsd: ioctls on an
// open descriptor of any file or directory of the mount. The kernel forwards them
// as FUSE_IOCTL (restricted ioctls: the sizes of the request and the reply
// are in the command number), so no socket or path is needed, the channel
// goes where the mount goes (namespaces, containers), and the daemon sees
// the caller's uid. kStatsIoctl, kSetIoctl and kRestartIoctl: only root and the user who
// mounted (EPERM otherwise). kWhereIoctl: anyone who could open the file
// (the kernel checked that at open). A file system that is not tmpfsd
// answers ENOTTY.
#pragma once

#include <fcntl.h>
#include <linux/ioctl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

namespace tmpfsd::control {

// The reply of kStatsIoctl: NUL-terminated text, one figure a line,
//   NAME VALUE KIND WHAT
// NAME is [a-z0-9_]+, VALUE a decimal uint64, KIND "counter" (grows only
// while the daemon runs) or "gauge", WHAT the rest of the line. The first
// line is "format 1 gauge ...", the version of this layout; a later version
// only adds lines.
constexpr size_t kStatsBytes = 8192;
struct StatsReply {
  char text[kStatsBytes];
};
constexpr unsigned kStatsIoctl = _IOR('t', 0x51, StatsReply);
constexpr unsigned kFormatVersion = 1;

// tmpfsctl where: where the pages of one regular file are, on that file's
// own descriptor (EISDIR on a directory, EINVAL on anything else). The
// caller sets `start` (a byte offset; the daemon rounds it down to a page)
// and the daemon fills the rest: runs of pages of one kind, in order,
// adjacent, merged, from `start` to `end`, at most kWhereRuns of them; then
// `next` is where the following call starts (== end: done). `end` is the
// file size rounded up to a page, or further when pages were fallocated
// past the size (FALLOC_FL_KEEP_SIZE). The daemon's cost is in the runs
// and the pages present, never in the size: a hole of a petabyte is one
// step. Each call is a snapshot under the file's lock; pages may move
// between calls.
enum class WhereKind : uint32_t {
  kHole = 0,        // never written, or punched: reads as zeros, no memory
  kResident = 1,    // in a frame (--memory), maybe with a copy in swap too
  kSwapped = 2,     // in the swap file only
  kZero = 3,        // fallocated, evicted without a slot: reads as zeros
  kRemote = 4,      // in the remote pool (--remote): a clean page, sealed, no frame
  kCompressed = 5,  // in the compressed pool (--compress), same-filled pages too: no frame
};
constexpr unsigned kWhereKinds = 6;
struct WhereRun {
  uint64_t offset;  // bytes
  uint64_t length;  // bytes, a multiple of page_size
  WhereKind kind;
  uint32_t reserved;
};
constexpr size_t kWhereRuns = 500;
struct WhereBuffer {
  uint64_t start;  // in
  uint64_t next;   // out, and the rest
  uint64_t end;
  uint64_t size;  // the file's size in bytes
  uint32_t page_size;
  uint32_t count;  // runs[0, count) are filled
  WhereRun runs[kWhereRuns];
};
static_assert(sizeof(WhereBuffer) < (1u << _IOC_SIZEBITS));
constexpr unsigned kWhereIoctl = _IOWR('t', 0x52, WhereBuffer);

// tmpfsctl set: change limits of the live mount. In: `text`, the options
// as for mount -o ("size=2g,nr_inodes=10k"). Out: `error` 0 and in `text`
// a line with the limits now; or an errno (EINVAL: malformed, or a limit
// below what is in use; EOPNOTSUPP: memory=) and in `text` one line saying
// why, and nothing was changed.
constexpr size_t kSetBytes = 2048;
struct SetBuffer {
  int32_t error;
  uint32_t reserved;
  char text[kSetBytes - 8];
};
constexpr unsigned kSetIoctl = _IOWR('t', 0x53, SetBuffer);

// The client's side of kSetIoctl (tmpfsctl set, tmpfsd's -o remount).
struct SetOutcome {
  int sys_error = 0;  // errno of open() (from_ioctl false) or the ioctl; 0: answered
  bool from_ioctl = false;
  int error = 0;        // the daemon's answer: 0 or an errno
  std::string message;  // the daemon's line (why not, or a note); may be empty
};
inline SetOutcome request_set(const std::string& path, const std::string& options) {
  SetOutcome out;
  auto b = std::make_unique<SetBuffer>();
  if (options.size() >= sizeof b->text) {
    out.error = E2BIG;
    out.message = "the options are too long";
    return out;
  }
  std::memcpy(b->text, options.c_str(), options.size() + 1);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) {
    out.sys_error = errno;
    return out;
  }
  const int r = ::ioctl(fd, kSetIoctl, b.get());
  out.sys_error = r < 0 ? errno : 0;
  out.from_ioctl = true;
  ::close(fd);
  if (r < 0) return out;
  b->text[sizeof b->text - 1] = '\0';
  out.error = b->error;
  out.message = b->text;
  return out;
}

// tmpfsctl restart: in `text` the binary to restart into (empty: the one
// the daemon was started from, as installed now); out `error` (0: the
// restart starts once this reply is sent) and in `text` why not. Whether it
// then succeeded shows in kStatsIoctl's figures: `pid` changes, or
// `restarts_failed` grows (the reason is in the daemon's log).
struct RestartBuffer {
  int32_t error;
  uint32_t reserved;
  char text[kSetBytes - 8];
};
constexpr unsigned kRestartIoctl = _IOWR('t', 0x54, RestartBuffer);

}  // namespace tmpfsd::control
