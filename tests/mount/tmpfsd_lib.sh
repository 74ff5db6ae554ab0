# Sourced by the mount-level shell tests: start and stop tmpfsd the way
# users do (daemonised: the command returns once the mount is live and
# prints nothing), and bound a command's time with a hang report.
#
#   tmpfsd_start BIN LOG MOUNTPOINT [tmpfsd options...]
#       the daemon logs to LOG (its pid file: LOG.pid); sets tmpfsd_pid and
#       tmpfsd_log; returns 1 with the reason on stdout if the start failed
#       or printed anything.
#   tmpfsd_stop
#       SIGTERM; the daemon must be gone and the mount with it within 10 s,
#       else a hang report, SIGKILL, umount -l, and return 1. Idempotent.
#   tmpfsd_scratch NAME DIR...
#       makes $work (a directory under /tmp, with DIR... in it, for mounts)
#       and $swapdir (one under /var/tmp, for swap files); at exit (and on
#       INT/TERM) the daemon is stopped, DIR... unmounted, both removed.
#   bounded SECONDS CMD...
#       runs CMD; past SECONDS prints the daemon's hang report, kills CMD,
#       and returns 124.
#   tmpfsd_kill9
#       kill -9 of the daemon (a crash): waits until it is gone and detaches
#       the mount it leaves; then no daemon is current.
#   tmpfsd_manifest DIR [NAME...]
#       everything a user would compare, path by path, sorted: stat fields
#       (times to the nanosecond, inode numbers), sha256 of each file, link
#       targets, xattrs, lsattr flags; top-level entries NAME... left out.
#   tmpfsd_tree DIR
#       writes a tree with one of everything into DIR: 24 MiB of random
#       data (three times a --memory 8M), text, a hard link, short and long
#       symlinks, a fifo, a sparse file with data in its middle, an empty
#       file with a set owner and mtime, xattrs in user. and trusted., a
#       set-group-ID directory.
tmpfsd_pid= tmpfsd_log= tmpfsd_mnt=
tmpfsd_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

tmpfsd_start() {
  local bin=$1 mnt=$3
  tmpfsd_log=$2 tmpfsd_mnt=$3
  shift 3
  local out
  out=$(timeout 30 "$bin" --log-file "$tmpfsd_log" --pid-file "$tmpfsd_log.pid" "$@" "$mnt" 2>&1)
  local rc=$?
  tmpfsd_pid=$(cat "$tmpfsd_log.pid" 2>/dev/null)
  if [ $rc -ne 0 ] || ! mountpoint -q "$mnt"; then
    echo "tmpfsd did not mount (exit $rc): $out"
    tail -20 "$tmpfsd_log" 2>/dev/null
    return 1
  fi
  if [ -n "$out" ]; then
    echo "tmpfsd printed on success: $out"
    return 1
  fi
}

tmpfsd_alive() { [ -n "$tmpfsd_pid" ] && kill -0 "$tmpfsd_pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$tmpfsd_pid/status" 2>/dev/null; }

tmpfsd_stop() {
  local rc=0
  if [ -n "$tmpfsd_pid" ]; then
    kill -TERM "$tmpfsd_pid" 2>/dev/null
    local i
    for i in $(seq 200); do tmpfsd_alive || break; sleep 0.05; done
    if tmpfsd_alive; then
      echo "tmpfsd did not exit within 10 s of SIGTERM:"
      "$tmpfsd_lib_dir/hang_report.sh" "$tmpfsd_pid" "$tmpfsd_log"
      kill -KILL "$tmpfsd_pid" 2>/dev/null
      rc=1
    fi
    tmpfsd_pid=
  fi
  if [ -n "$tmpfsd_mnt" ] && mountpoint -q "$tmpfsd_mnt"; then
    echo "the mount outlived the daemon (detached)"
    umount -l "$tmpfsd_mnt"
    rc=1
  fi
  tmpfsd_mnt=
  return $rc
}

tmpfsd_scratch() {
  local name=$1 d
  shift
  work=$(mktemp -d "/tmp/tmpfsd-$name.XXXXXX")
  swapdir=$(mktemp -d "/var/tmp/tmpfsd-$name-swap.XXXXXX")
  tmpfsd_scratch_dirs=("$@")
  for d in "$@"; do mkdir "$work/$d"; done
  trap tmpfsd_scratch_cleanup EXIT
  trap 'exit 1' INT TERM  # so that the EXIT trap runs on a signal too
}

tmpfsd_scratch_cleanup() {
  local d
  tmpfsd_stop >/dev/null 2>&1
  for d in "${tmpfsd_scratch_dirs[@]}"; do
    if mountpoint -q "$work/$d"; then umount -l "$work/$d"; fi
  done
  rm -rf "$work" "$swapdir"
}

bounded() {
  local secs=$1; shift
  "$@" &
  local cmd=$! waited=0
  while kill -0 "$cmd" 2>/dev/null; do
    if [ "$waited" -ge $((secs * 10)) ]; then
      echo "TIMEOUT: ${secs}s passed: $*"
      [ -n "$tmpfsd_pid" ] && "$tmpfsd_lib_dir/hang_report.sh" "$tmpfsd_pid" "$tmpfsd_log"
      pkill -KILL -P "$cmd" 2>/dev/null
      kill -KILL "$cmd" 2>/dev/null
      wait "$cmd" 2>/dev/null
      return 124
    fi
    sleep 0.1
    waited=$((waited + 1))
  done
  wait "$cmd"
}

tmpfsd_tree() {
  local d=$1
  mkdir -p "$d/dir/sub"
  head -c $((24 << 20)) /dev/urandom > "$d/dir/big"
  head -c 100000 < <(yes 'a line of text') > "$d/dir/text"
  ln "$d/dir/text" "$d/hardlink"
  ln -s dir/text "$d/short"
  ln -s "$(printf 'L%.0s' $(seq 300))" "$d/long"
  mkfifo "$d/fifo"
  printf 'head' > "$d/sparse"
  dd if=/dev/urandom of="$d/sparse" bs=4096 seek=1000 count=3 conv=notrunc status=none
  truncate -s 64M "$d/sparse"
  : > "$d/dir/sub/empty"
  setfattr -n user.note -v hello "$d/dir/text"
  setfattr -n trusted.bin -v 0x00ff10 "$d/dir"
  chown 1000:100 "$d/dir/sub/empty"
  chmod 2751 "$d/dir/sub"
  touch -m -d '2001-02-03 04:05:06.123456789' "$d/dir/sub/empty"
}

tmpfsd_kill9() {
  kill -KILL "$tmpfsd_pid" 2>/dev/null || true
  while tmpfsd_alive; do sleep 0.05; done
  tmpfsd_pid=
  if [ -n "$tmpfsd_mnt" ] && grep -q " $tmpfsd_mnt " /proc/self/mounts; then umount -l "$tmpfsd_mnt"; fi
  tmpfsd_mnt=
}

tmpfsd_manifest() {
  local d=$1 n
  shift
  local prune=(-false)
  for n in "$@"; do prune+=(-o -path "./$n"); done
  (cd "$d" && find . \( "${prune[@]}" \) -prune -o -printf '%p\n' | LC_ALL=C sort | while read -r p; do
    stat -c '%n type=%F mode=%a nlink=%h uid=%u gid=%g size=%s blocks=%b ino=%i rdev=%t:%T a=%.9X m=%.9Y c=%.9Z' -- "$p"
    [ -f "$p" ] && [ ! -L "$p" ] && sha256sum -- "$p"
    [ -L "$p" ] && echo "-> $(readlink -- "$p")"
    [ ! -L "$p" ] && [ ! -p "$p" ] && { getfattr -h -d -m - -e hex -- "$p" 2>/dev/null | grep -v '^#' || true; }
    [ -f "$p" ] && [ ! -L "$p" ] && lsattr -d -- "$p" | cut -d' ' -f1
    true
  done)
}
