#!/usr/bin/env bash
# fsdiff_tmpfsd.sh FSDIFF_BIN TMPFSD_BIN [budget-scale] [tmpfsd options...]
# Mounts a kernel tmpfs and a tmpfsd (daemonised, as users start it) under a
# temporary directory, runs fsdiff_ci.sh on them (fsdiff seeds, --procs 2,
# fsx), and unmounts both in every exit path. A run past its time bound
# prints the daemon's thread stacks and counters and fails. Needs root
# (exit 77, a skip, otherwise).
set -u
[ "$(id -u)" -eq 0 ] || { echo "fsdiff_tmpfsd: needs root to mount; skipped"; exit 77; }
fsdiff=$1 tmpfsd=$2 scale=${3:-1}
shift $(( $# >= 3 ? 3 : $# ))
here=$(cd "$(dirname "$0")" && pwd)
source "$here/tmpfsd_lib.sh"
work=$(mktemp -d /tmp/fsdiff-tmpfsd.XXXXXX)
cleanup() {
  tmpfsd_stop || echo "fsdiff_tmpfsd: tmpfsd did not stop cleanly"
  # The daemon's figures at unmount (frames, swap-ins, writebacks).
  grep -h "unmounted\|reclaim\|swap" "$work/daemon.log" 2>/dev/null | tail -5
  mountpoint -q "$work/a" && umount "$work/a"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM  # cleanup runs from EXIT
mkdir "$work/a" "$work/b"
mount -t tmpfs -o size=1g,nr_inodes=100000 none "$work/a" || exit 1
tmpfsd_start "$tmpfsd" "$work/daemon.log" "$work/b" -o size=1g,nr_inodes=100000 "$@" || exit 1
# Known divergences FUSE cannot avoid: tools/fsdiff-known-divergences.md.
export FSDIFF_IGNORE=${FSDIFF_IGNORE:-mmaphole,fifotimes,dirseek,atime,flagerrno}
# fsdiff_ci.sh bounds each run and reports on this daemon when one hangs.
export FSDIFF_DAEMON_PID=$tmpfsd_pid FSDIFF_DAEMON_LOG=$tmpfsd_log
"$here/fsdiff_ci.sh" "$fsdiff" "$work/a" "$work/b" "$scale"
rc=$?
tmpfsd_alive || { echo "fsdiff_tmpfsd: tmpfsd died:"; tail -20 "$work/daemon.log"; rc=1; }
tmpfsd_stop || rc=1
exit $rc
