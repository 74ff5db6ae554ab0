#!/usr/bin/env bash
# transport_test.sh TMPFSD_BIN TMPFSCTL_BIN: --transport (issue 33), with
# the fuse module's enable_uring parameter set each way by the test and put
# back as it was found on every exit.
#  - enable_uring N: --transport uring refuses to mount with one line that
#    names the parameter; auto mounts on /dev/fuse and says so in one log
#    line; tmpfsctl stats counts no ring request.
#  - enable_uring Y: auto (the default) uses the rings: the bytes written
#    read back (buffered, O_DIRECT), tmpfsctl stats names the transport and
#    counts the requests of each; --transport dev stays on /dev/fuse.
#  - nothing hangs on the rings: umount ends the daemon, SIGTERM ends the
#    daemon and the mount, SIGKILL in the middle of requests leaves
#    processes that get an error, and a mount that umount removes. The same
#    with a daemon stopped (SIGSTOP) while requests wait in its rings.
# Needs root (77: skipped); 77 too when the kernel has no enable_uring.
set -u
[ "$(id -u)" -eq 0 ] || { echo "transport: needs root to mount; skipped"; exit 77; }
tmpfsd=$1 ctl=$2
param=/sys/module/fuse/parameters/enable_uring
[ -e "$param" ] || { echo "transport: no $param in this kernel; skipped"; exit 77; }
here=$(cd "$(dirname "$0")" && pwd)
source "$here/tmpfsd_lib.sh"
tmpfsd_scratch transport m
old_param=$(cat "$param")
trap 'echo "$old_param" >"$param"; tmpfsd_scratch_cleanup' EXIT
failed=0 passed=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); else echo "FAIL: $name"; failed=$((failed + 1)); fi
}
stat_of() {  # stat_of NAME: the figure NAME of tmpfsctl stats (text)
  "$ctl" stats "$work/m" 2>/dev/null | awk -v n="$1" '$1 == n {print $2}'
}
workload() {  # a little of everything, checked against a copy
  head -c $((4 << 20)) /dev/urandom >"$work/data" &&
    cp "$work/data" "$work/m/f" && cmp "$work/data" "$work/m/f" &&
    dd if="$work/m/f" of="$work/direct" bs=4k iflag=direct status=none &&
    cmp "$work/data" "$work/direct" && mkdir "$work/m/d" && touch "$work/m/d/a" &&
    [ "$(ls "$work/m/d")" = a ] && rm -r "$work/m/d" "$work/m/f"
}

# ---- enable_uring N -------------------------------------------------------
echo N >"$param"
out=$(timeout 30 "$tmpfsd" --transport uring --log-file "$work/log-refused" "$work/m" 2>&1)
rc=$?
check "uring without enable_uring: refused (exit $rc, output: $out)" \
  test $rc -ne 0 -a "$(printf '%s\n' "$out" | wc -l)" -eq 1
check "uring without enable_uring: the line names the parameter: $out" \
  grep -q "$param" <<<"$out"
check "uring without enable_uring: nothing mounted" eval '! mountpoint -q "$work/m"'

tmpfsd_start "$tmpfsd" "$work/log-auto-n" "$work/m" || exit 1
check "auto without enable_uring: workload" bounded 60 workload
check "auto without enable_uring: one log line says /dev/fuse" \
  test "$(grep -c 'transport: /dev/fuse' "$work/log-auto-n")" -eq 1
check "auto without enable_uring: transport_uring 0" test "$(stat_of transport_uring)" = 0
check "auto without enable_uring: no ring request" test "$(stat_of transport_requests_uring)" = 0
check "auto without enable_uring: SIGTERM" tmpfsd_stop

# ---- enable_uring Y -------------------------------------------------------
echo Y >"$param"
tmpfsd_start "$tmpfsd" "$work/log-dev" "$work/m" -o transport=dev || exit 1
check "dev: workload" bounded 60 workload
check "dev: transport_uring 0" test "$(stat_of transport_uring)" = 0
check "dev: no ring request" test "$(stat_of transport_requests_uring)" = 0
check "dev: SIGTERM" tmpfsd_stop

tmpfsd_start "$tmpfsd" "$work/log-auto" "$work/m" --memory 4M --swap 64M --swap-dir "$swapdir" ||
  exit 1
check "auto: workload through swap" bounded 60 workload
check "auto: transport_uring 1" test "$(stat_of transport_uring)" = 1
n_uring=$(stat_of transport_requests_uring) n_dev=$(stat_of transport_requests_dev)
check "auto: requests went over the rings ($n_uring on the rings, $n_dev on /dev/fuse)" \
  test "${n_uring:-0}" -gt 100 -a "${n_dev:-0}" -lt "${n_uring:-0}"
check "auto: one log line says io_uring" test "$(grep -c 'transport: io_uring' "$work/log-auto")" -eq 1
# umount by the user: the daemon sees the connection end and exits.
pid=$tmpfsd_pid
check "auto: umount" bounded 10 umount "$work/m"
for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
check "auto: the daemon exits after umount" eval '! kill -0 $pid 2>/dev/null'
grep -q 'unmounted ' "$work/log-auto" || { echo "FAIL: no unmount line in the log"; failed=$((failed + 1)); }
tmpfsd_pid=

# SIGKILL while requests run: the processes get an error, the mount goes.
killed() {  # killed STOP_FIRST
  tmpfsd_start "$tmpfsd" "$work/log-kill" "$work/m" --transport uring || return 1
  head -c $((1 << 20)) /dev/urandom >"$work/m/f"
  local pids=() i
  for i in 1 2 3 4; do
    (while dd if="$work/m/f" of=/dev/null bs=4k iflag=direct status=none 2>/dev/null &&
      stat "$work/m/f" >/dev/null 2>&1; do :; done) &
    pids+=($!)
  done
  sleep 0.5
  [ "$1" = stop ] && kill -STOP "$tmpfsd_pid" && sleep 0.3
  kill -KILL "$tmpfsd_pid"
  local ok=0
  for i in $(seq 100); do
    ok=1
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && ok=0; done
    [ $ok = 1 ] && break
    sleep 0.1
  done
  if [ $ok != 1 ]; then
    echo "processes still blocked 10 s after the daemon was killed:"
    for p in "${pids[@]}"; do cat "/proc/$p/stack" 2>/dev/null; done
    kill -KILL "${pids[@]}" 2>/dev/null
    umount -l "$work/m"
    tmpfsd_pid= tmpfsd_mnt=
    return 1
  fi
  wait "${pids[@]}" 2>/dev/null
  tmpfsd_pid=
  bounded 10 umount "$work/m" || { umount -l "$work/m"; tmpfsd_mnt=; return 1; }
  tmpfsd_mnt=
}
check "uring: SIGKILL mid-request" killed run
check "uring: SIGKILL of a stopped daemon with requests waiting" killed stop

tmpfsd_start "$tmpfsd" "$work/log-term" "$work/m" --transport uring || exit 1
touch "$work/m/f"
(while stat "$work/m/f" >/dev/null 2>&1; do :; done) &
loop=$!
sleep 0.3
check "uring: SIGTERM under load" tmpfsd_stop
for i in $(seq 100); do kill -0 $loop 2>/dev/null || break; sleep 0.1; done
check "uring: a process on the mount ends after SIGTERM" eval '! kill -0 $loop 2>/dev/null'
kill -KILL $loop 2>/dev/null

echo "transport: $passed passed, $failed failed"
[ $failed -eq 0 ]
