#!/usr/bin/env bash
# fsdiff_tmpfsd.sh FSDIFF_BIN TMPFSD_BIN [budget-scale] [tmpfsd options...]
# Mounts a kernel tmpfs and a tmpfsd under a temporary directory, runs
# fsdiff_ci.sh on them (fsdiff seeds, --procs 2, fsx), and unmounts both in
# every exit path. Needs root (exit 77, a skip, otherwise).
set -u
[ "$(id -u)" -eq 0 ] || { echo "fsdiff_tmpfsd: needs root to mount; skipped"; exit 77; }
fsdiff=$1 tmpfsd=$2 scale=${3:-1}
shift $(( $# >= 3 ? 3 : $# ))
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/fsdiff-tmpfsd.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    # The daemon's figures at unmount (frames, swap-ins, writebacks).
    grep -h "unmounted\|reclaim\|swap" "$work/daemon.log" 2>/dev/null | tail -5
  fi
  mountpoint -q "$work/b" && umount -l "$work/b"
  mountpoint -q "$work/a" && umount "$work/a"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM  # cleanup runs from EXIT
mkdir "$work/a" "$work/b"
mount -t tmpfs -o size=1g,nr_inodes=100000 none "$work/a" || exit 1
"$tmpfsd" -f -o size=1g,nr_inodes=100000 "$@" "$work/b" 2>"$work/daemon.log" &
pid=$!
for _ in $(seq 200); do mountpoint -q "$work/b" && break; kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
if ! mountpoint -q "$work/b"; then
  echo "fsdiff_tmpfsd: tmpfsd did not mount:"; cat "$work/daemon.log"; exit 1
fi
# Known divergences FUSE cannot avoid: tools/fsdiff-known-divergences.md.
export FSDIFF_IGNORE=${FSDIFF_IGNORE:-mmaphole,fifotimes,dirseek,atime}
"$here/fsdiff_ci.sh" "$fsdiff" "$work/a" "$work/b" "$scale"
rc=$?
kill -0 "$pid" 2>/dev/null || { echo "fsdiff_tmpfsd: tmpfsd died:"; tail -20 "$work/daemon.log"; rc=1; }
exit $rc
