// The control channel between tmpfsctl and a running tmpfsd: ioctls on an
// open descriptor of any file or directory of the mount. The kernel forwards them
// as FUSE_IOCTL (restricted ioctls: the reply's size is in the command
// number), so no socket or path is needed, the channel goes where the
// mount goes (namespaces, containers), and the daemon sees the caller's
// uid: only root and the user who mounted may use it (EPERM otherwise).
// A file system that is not tmpfsd answers ENOTTY.
#pragma once

#include <linux/ioctl.h>

#include <cstddef>

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

}  // namespace tmpfsd::control
