// Remount: `mount -o remount,ro DIR` on a tmpfsd mount.
//
// mount(8) runs a file system's helper for a remount too: mount.fuse3 then
// runs `tmpfsd SOURCE DIR -o remount,ro,...`. That is no new mount and no
// new daemon: the daemon already serving DIR stays, and only the kernel
// mount's flags change, as mount(8) would change them itself with
// mount(2)'s MS_REMOUNT (the FUSE kernel client accepts a remount and
// keeps the connection; see fuse_reconfigure in fs/fuse/inode.c).
//
// What changes: ro/rw, nosuid, nodev, noexec, sync, dirsync, and the atime
// flags of the kernel mount (findmnt shows them). What does not: the
// daemon's own options (size=, memory=, ... and when the daemon moves
// atime), which only a new mount sets; they are accepted and ignored, since
// mount(8) may repeat the options of the first mount.
//
// Threads: called from main() before anything is started; no daemon.
#pragma once

#include <string>

#include "daemon/options.h"

namespace tmpfsd {

// The mount(2) flags for a remount with these options (MS_REMOUNT and the
// generic flags asked for).
unsigned long remount_flags(const Options& o);

// Remounts o.mountpoint with remount_flags(o). Returns 0, or 1 and sets
// `error` to one line naming the mount point and the reason.
int remount(const Options& o, std::string& error);

}  // namespace tmpfsd
