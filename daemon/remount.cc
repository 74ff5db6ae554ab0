#include "daemon/remount.h"

#include <sys/mount.h>

#include <cerrno>
#include <cstring>

namespace tmpfsd {

unsigned long remount_flags(const Options& o) {
  unsigned long flags = MS_REMOUNT;
  if (o.read_only) flags |= MS_RDONLY;
  if (o.nosuid) flags |= MS_NOSUID;
  if (o.nodev) flags |= MS_NODEV;
  if (o.noexec) flags |= MS_NOEXEC;
  if (o.sync) flags |= MS_SYNCHRONOUS;
  if (o.dirsync) flags |= MS_DIRSYNC;
  if (o.atime == "noatime")
    flags |= MS_NOATIME;
  else if (o.atime == "strictatime")
    flags |= MS_STRICTATIME;
  else
    flags |= MS_RELATIME;
  if (o.nodiratime) flags |= MS_NODIRATIME;
  return flags;
}

int remount(const Options& o, std::string& error) {
  // The source and type are not used by a remount; the kernel finds the
  // super block by the mount point.
  if (::mount(o.source.c_str(), o.mountpoint.c_str(), "fuse.tmpfsd", remount_flags(o), nullptr) ==
      0)
    return 0;
  int err = errno;
  error = "tmpfsd: remount " + o.mountpoint + ": " + std::strerror(err);
  if (err == EINVAL) error += " (not a mount point, or not a tmpfsd mount?)";
  return 1;
}

}  // namespace tmpfsd
