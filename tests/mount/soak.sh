#!/usr/bin/env bash
# soak.sh FSDIFF_BIN FSSTRESS_BIN TMPFSD_BIN: many processes against a
# daemonised tmpfsd with very few frames, the load that hung a daemon
# that had lost its threads in the fork (every writer in direct reclaim,
# no Reclaimer to free a frame):
#   1. fsdiff --procs 4 against kernel tmpfs, tmpfsd with --memory 2M;
#   2. xfstests' fsstress -p 8 against tmpfsd with --memory 4M.
# Each is time-bounded (a hang prints the daemon's stacks and fails) and
# reports ops, seconds, the daemon's peak RSS and its swap traffic; the
# daemon must then stop on SIGTERM. SOAK_SCALE (default 1; tools/check
# --soak sets 10) multiplies the op counts. Needs root (77: skipped).
set -u
[ "$(id -u)" -eq 0 ] || { echo "soak: needs root to mount; skipped"; exit 77; }
fsdiff=$1 fsstress=$2 tmpfsd=$3
scale=${SOAK_SCALE:-1}
here=$(cd "$(dirname "$0")" && pwd)
source "$here/tmpfsd_lib.sh"
tmpfsd_scratch soak a b
failed=0

# report NAME OPS SECONDS: one line of figures from the daemon's log.
report() {
  local name=$1 ops=$2 secs=$3 hwm=$4
  local swap
  swap=$(grep -o 'swap device: [0-9]* I/Os, [0-9]* MiB written, [0-9]* MiB read' "$tmpfsd_log" | tail -1)
  echo "soak: $name: $ops ops in ${secs}s; daemon peak RSS ${hwm} MiB; ${swap:-no swap figures}"
  grep -o 'swap-ins [0-9]*\|writebacks [0-9]*\|waited for frames [0-9]*' "$tmpfsd_log" | tail -3 | tr '\n' ' '
  echo
}

hwm_mib() { awk '/^VmHWM:/ {print int($2 / 1024)}' "/proc/$tmpfsd_pid/status" 2>/dev/null; }

# run NAME MEMORY OPS SECONDS CMD...: one daemonised mount, CMD bounded.
run() {
  local name=$1 memory=$2 ops=$3 limit=$4; shift 4
  rm -f "$work/daemon.log"
  if ! tmpfsd_start "$tmpfsd" "$work/daemon.log" "$work/b" -o size=2g,nr_inodes=200000 --memory "$memory" \
      --swap 2G --swap-dir "$swapdir"; then
    echo "soak: FAIL $name: no mount"; failed=$((failed + 1)); return
  fi
  local t0 t1 rc hwm
  t0=$(date +%s.%N)
  bounded "$limit" "$@" > "$work/out" 2>&1; rc=$?
  t1=$(date +%s.%N)
  hwm=$(hwm_mib)
  if ! tmpfsd_stop; then rc=1; fi
  local secs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  if [ $rc -eq 0 ]; then
    echo "soak: PASS $name"
  else
    echo "soak: FAIL $name (exit $rc)"; tail -40 "$work/out" | sed 's/^/    /'
    failed=$((failed + 1))
  fi
  report "$name" "$ops" "$secs" "$hwm"
}

mount -t tmpfs -o size=2g,nr_inodes=200000 none "$work/a" || exit 1
ops=$((10000 * scale))
export FSDIFF_IGNORE=${FSDIFF_IGNORE:-mmaphole,fifotimes,dirseek,atime,flagerrno}
run "fsdiff --procs 4 --memory 2M" 2M $((4 * ops)) $((300 * scale)) \
  "$fsdiff" --procs 4 --seed 7 --ops "$ops" --ignore "$FSDIFF_IGNORE" "$work/a" "$work/b"
umount "$work/a"

ops=$((20000 * scale))
run "fsstress -p 8 --memory 4M" 4M $((8 * ops)) $((300 * scale)) \
  "$fsstress" -d "$work/b/stress" -p 8 -n "$ops" -s 12
echo "soak: $((2 - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
