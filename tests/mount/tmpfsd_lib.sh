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
