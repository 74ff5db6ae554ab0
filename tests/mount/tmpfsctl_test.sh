#!/usr/bin/env bash
# tmpfsctl_test.sh TMPFSD_BIN TMPFSCTL_BIN: `tmpfsctl stats` against a
# daemonised tmpfsd (--memory 4M, 16 MiB written, so pages are in swap):
# the figures add up (text, --json, --prometheus), a file inside the mount
# answers for the mount, and each error has its own line and exit code
# (not a tmpfsd mount 3, permission denied 4 through the daemon's own check
# with allow_other, daemon gone 5, bad usage 2). Needs root (77: skipped).
set -u
[ "$(id -u)" -eq 0 ] || { echo "tmpfsctl: needs root to mount; skipped"; exit 77; }
tmpfsd=$1 ctl=$2
here=$(cd "$(dirname "$0")" && pwd)
source "$here/tmpfsd_lib.sh"
tmpfsd_scratch ctl m
failed=0 passed=0
check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); else echo "FAIL: $name"; failed=$((failed + 1)); fi
}
# expect_exit NAME CODE MESSAGE CMD...: CMD exits CODE, prints one line
# containing MESSAGE on stderr and nothing on stdout.
expect_exit() {
  local name=$1 code=$2 msg=$3; shift 3
  "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [ $rc -ne "$code" ] || [ -s "$work/out" ] || [ "$(wc -l <"$work/err")" -ne 1 ] ||
     ! grep -q -- "$msg" "$work/err"; then
    echo "FAIL: $name: exit $rc (want $code); stdout: $(cat "$work/out"); stderr: $(cat "$work/err")"
    failed=$((failed + 1))
  else
    passed=$((passed + 1))
  fi
}

tmpfsd_start "$tmpfsd" "$work/log" "$work/m" --memory 4M --swap 64M --swap-dir "$swapdir" \
  -o size=64M,allow_other || exit 1
bounded 60 dd if=/dev/urandom of="$work/m/f" bs=1M count=16 status=none || failed=$((failed + 1))
mkdir "$work/m/d"

bounded 30 "$ctl" stats "$work/m" >"$work/text" || { echo "FAIL: stats exited $?"; failed=$((failed + 1)); }
bounded 30 "$ctl" stats "$work/m/f" --json >"$work/json" || { echo "FAIL: stats --json exited $?"; failed=$((failed + 1)); }
bounded 30 "$ctl" stats "$work/m/d" --prometheus >"$work/prom" || { echo "FAIL: stats --prometheus exited $?"; failed=$((failed + 1)); }

# The figures, from JSON: 16 MiB is 4096 pages; 4 MiB is 1024 frames; what
# is not resident is in swap; the daemon's PID is the one that runs.
if python3 - "$work/json" "$work/m" "$tmpfsd_pid" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["stats"]
want = {"format": d["format"] == 1, "mountpoint": d["mountpoint"] == sys.argv[2],
        "page_size": s["page_size"] == 4096, "pages_allocated": s["pages_allocated"] == 4096,
        "frames_total": s["frames_total"] == 1024, "max_pages": s["max_pages"] == 16384,
        "resident+swapped": s["pages_resident"] + s["pages_swapped"] == 4096,
        "swapped": s["pages_swapped"] >= 4096 - 1024,
        "writebacks": s["writebacks"] >= s["pages_swapped"],
        "swap written": s["swap_bytes_written"] >= 4096 * s["pages_swapped"],
        "inodes": s["inodes"] == 3, "pid": s["pid"] == int(sys.argv[3]),
        "no errors": s["swap_errors"] == 0 and s["writeback_errors"] == 0}
bad = [k for k, ok in want.items() if not ok]
if bad:
    print("FAIL: stats --json:", ", ".join(bad), json.dumps(d))
    sys.exit(1)
PY
then passed=$((passed + 1)); else failed=$((failed + 1)); fi

# Text: a header naming the mount, a line per figure, the same pages.
check "text header" grep -qx "tmpfsd at $work/m" "$work/text"
check "text pages_allocated" grep -Eq '^  pages_allocated +4096  counted against size=' "$work/text"
check "text frames_total" grep -Eq '^  frames_total +1024  ' "$work/text"
# Prometheus: HELP and TYPE for each, counters end in _total, the mount is a label.
check "prometheus gauge" grep -qx "tmpfsd_pages_allocated{mountpoint=\"$work/m\"} 4096" "$work/prom"
check "prometheus TYPE" grep -qx '# TYPE tmpfsd_swap_ins_total counter' "$work/prom"
check "prometheus HELP" grep -qx '# HELP tmpfsd_frames_total --memory in frames' "$work/prom"
nsamples=$(grep -vc '^#' "$work/prom")
check "prometheus: a HELP and a TYPE per sample" [ "$(grep -c '^# HELP' "$work/prom")" -eq "$nsamples" ]

expect_exit "not a tmpfsd mount" 3 "not on a tmpfsd mount" "$ctl" stats "$work"
expect_exit "no such path" 1 "No such file or directory" "$ctl" stats "$work/m/none"
# allow_other: nobody reaches the daemon, which refuses (EPERM), not the kernel.
expect_exit "another user" 4 "permission denied" setpriv --reuid=65534 --regid=65534 --clear-groups "$ctl" stats "$work/m"
"$ctl" stats >/dev/null 2>&1; rc=$?
check "no PATH is bad usage (exit $rc)" [ $rc -eq 2 ]
"$ctl" stats "$work/m" --json --prometheus >/dev/null 2>&1; rc=$?
check "--json with --prometheus is bad usage (exit $rc)" [ $rc -eq 2 ]

# The daemon gone: SIGKILL leaves the mount without its daemon (ENOTCONN).
kill -KILL "$tmpfsd_pid"
for i in $(seq 50); do kill -0 "$tmpfsd_pid" 2>/dev/null || break; sleep 0.1; done
tmpfsd_pid=
expect_exit "daemon gone" 5 "daemon of this mount is gone" "$ctl" stats "$work/m"
umount -l "$work/m"

echo "tmpfsctl: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
