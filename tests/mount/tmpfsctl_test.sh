#!/usr/bin/env bash
# tmpfsctl_test.sh TMPFSD_BIN TMPFSCTL_BIN: tmpfsctl against a daemonised
# tmpfsd (--memory 4M, 16 MiB written, so pages are in swap).
#  - stats: the figures add up (text, --json, --prometheus), a file inside
#    the mount answers for the mount.
#  - where: the runs of a file half in swap tile it, both kinds show and the
#    bytes read back; holes around a page at 1 TiB; a 1 PiB sparse file with
#    two pages is five exact runs (its time is printed, not asserted); a
#    file of 2400 alternating runs takes several ioctls and comes back
#    whole; fallocated pages evicted without a slot are "zero"; the text
#    form's bar and run lines; a directory, a fifo, kernel tmpfs and
#    another user's unreadable file are errors with their exit codes, while
#    another user may ask about a file it can read.
#  - set: size= grows and shrinks (df follows), is refused below what is in
#    use with tmpfs's words (df unchanged); nr_inodes= the same; memory= is
#    refused; a refused half leaves the other half unchanged; another user
#    is denied.
#  - each error has its own line and exit code (not a tmpfsd mount 3,
#    permission denied 4 through the daemon's own check with allow_other,
#    daemon gone 5, bad usage 2). Needs root (77: skipped).
set -u
[ "$(id -u)" -eq 0 ] || { echo "tmpfsctl: needs root to mount; skipped"; exit 77; }
tmpfsd=$1 ctl=$2
here=$(cd "$(dirname "$0")" && pwd)
source "$here/tmpfsd_lib.sh"
tmpfsd_scratch ctl m
chmod 755 "$work"  # so that another user reaches the mount, and the daemon's own checks
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
  -o size=64M,nr_inodes=1000,allow_other || exit 1
head -c $((16 << 20)) /dev/urandom >"$work/data"
bounded 60 cp "$work/data" "$work/m/f" || failed=$((failed + 1))
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

# ---- where -----------------------------------------------------------------
# wherecheck NAME FILE PYTHON: runs `where FILE --json` and the Python
# condition on `f` (the file's object) and `runs` ([(start, end, kind)]).
wherecheck() {
  local name=$1 file=$2 cond=$3
  if ! bounded 30 "$ctl" where "$file" --json >"$work/where.json" 2>"$work/where.err"; then
    echo "FAIL: $name: where exited $?: $(cat "$work/where.err")"
    failed=$((failed + 1))
    return
  fi
  if python3 - "$work/where.json" "$cond" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
f = d["files"][0]
runs = [(r["start"], r["end"], r["kind"]) for r in f["runs"]]
# Always: the runs tile [0, end) in order, merged (no two neighbours of one kind).
tiled = all(a[1] == b[0] and a[2] != b[2] for a, b in zip(runs, runs[1:]))
tiled = tiled and runs and runs[0][0] == 0 and runs[-1][1] == f["end"]
total = all(f["bytes"][k] == sum(e - s for s, e, kk in runs if kk == k) for k in f["bytes"])
if not (d["format"] == 1 and tiled and total and eval("(" + sys.argv[2] + ")")):
    print("FAIL:", json.dumps(d)[:2000])
    sys.exit(1)
PY
  then passed=$((passed + 1)); else echo "FAIL: $name"; failed=$((failed + 1)); fi
}

# f: 16 MiB through 4 MiB of frames: most of it in swap, some resident.
wherecheck "where f: resident and swapped" "$work/m/f" \
  'f["size"] == 16 << 20 and f["end"] == 16 << 20 and f["page_size"] == 4096 and
   {k for s, e, k in runs} == {"resident", "swapped"} and
   f["bytes"]["swapped"] >= 12 << 20 and 0 < f["bytes"]["resident"] <= 4 << 20'
check "where f: the bytes read back" bounded 60 cmp "$work/data" "$work/m/f"
bounded 30 "$ctl" where "$work/m/f" >"$work/where.txt"
check "where text: header" grep -qx "$work/m/f: 16777216 bytes, 4096 pages of 4096 bytes" "$work/where.txt"
check "where text: bar and totals" grep -Eq '^  \[[OoSs]{60}\] [0-9]+/4096 pages resident, [0-9]+ swapped, 0 hole$' "$work/where.txt"
check "where text: run lines" grep -Eq '^  [0-9]+-[0-9]+ swapped$' "$work/where.txt"

# h: a page at 0 and one at 1 TiB, the rest a hole.
printf a | dd of="$work/m/h" bs=1 conv=notrunc status=none
printf b | dd of="$work/m/h" bs=1 seek=$((1 << 40)) conv=notrunc status=none
wherecheck "where h: holes around a page at 1 TiB" "$work/m/h" \
  'f["size"] == (1 << 40) + 1 and len(runs) == 3 and runs[1] == (4096, 1 << 40, "hole") and
   runs[0][1] == 4096 and runs[2][0] == 1 << 40 and runs[2][1] == (1 << 40) + 4096 and
   runs[0][2] in ("resident", "swapped") and runs[2][2] in ("resident", "swapped")'

# p: truncated to 1 PiB, two pages written: five runs, whatever the size.
truncate -s 1P "$work/m/p"
printf c | dd of="$work/m/p" bs=1 seek=4096 conv=notrunc status=none
printf d | dd of="$work/m/p" bs=1 seek=$((1 << 49)) conv=notrunc status=none
t0=$(date +%s%N)
timeout 30 "$ctl" where "$work/m/p" --json >/dev/null
echo "tmpfsctl where on the 1 PiB file, wall clock (process start included): $((($(date +%s%N) - t0) / 1000)) us"
wherecheck "where p: a 1 PiB sparse file, two pages" "$work/m/p" \
  'f["size"] == 1 << 50 and f["end"] == 1 << 50 and [(s, e, k) for s, e, k in runs if k == "hole"] ==
   [(0, 4096, "hole"), (8192, 1 << 49, "hole"), ((1 << 49) + 4096, 1 << 50, "hole")] and len(runs) == 5 and
   f["bytes"]["hole"] == (1 << 50) - 8192'

# r: 2400 alternating runs (a page written, a page not), more than one
# reply holds (daemon/control.h kWhereRuns): several calls, one answer.
python3 - "$work/m/r" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
for i in range(0, 2400, 2):
    os.pwrite(fd, b"x" * 4096, i * 4096)
os.ftruncate(fd, 2400 * 4096)
os.close(fd)
PY
wherecheck "where r: 2400 runs over several calls" "$work/m/r" \
  'len(runs) == 2400 and all(e - s == 4096 for s, e, k in runs) and
   all((k == "hole") == (i % 2 == 1) for i, (s, e, k) in enumerate(runs))'

# z: fallocated with a swap device: zero pages (no frame, no slot) until written.
fallocate -l 64K "$work/m/z"
wherecheck "where z: fallocated pages are zero" "$work/m/z" \
  'runs == [(0, 65536, "zero")] and f["bytes"]["zero"] == 65536'

# Two files: one JSON object, the totals add up.
bounded 30 "$ctl" where "$work/m/h" "$work/m/z" --json >"$work/two.json"
check "where two files: totals" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(not (len(d["files"]) == 2 and d["total"]["zero"] == 65536 and
              d["total"]["hole"] == d["files"][0]["bytes"]["hole"]))' "$work/two.json"

expect_exit "where: a directory" 1 "Is a directory" "$ctl" where "$work/m/d"
mkfifo "$work/m/fifo"
expect_exit "where: a fifo" 1 "not a regular file" "$ctl" where "$work/m/fifo"
kfile=$(mktemp /dev/shm/tmpfsctl-test.XXXXXX)
expect_exit "where: kernel tmpfs (/dev/shm)" 3 "not on a tmpfsd mount" "$ctl" where "$kfile"
rm -f "$kfile"
chmod 600 "$work/m/h"
expect_exit "where: another user, unreadable file" 4 "permission denied" \
  setpriv --reuid=65534 --regid=65534 --clear-groups "$ctl" where "$work/m/h"
chmod 644 "$work/m/z"
setpriv --reuid=65534 --regid=65534 --clear-groups "$ctl" where "$work/m/z" >/dev/null 2>&1; rc=$?
check "where: another user may ask about a file it can read (exit $rc)" [ $rc -eq 0 ]
"$ctl" where >/dev/null 2>&1; rc=$?
check "where: no FILE is bad usage (exit $rc)" [ $rc -eq 2 ]

# ---- set --------------------------------------------------------------------
df_size() { df -B1 --output=size "$work/m" | tail -1 | tr -d ' '; }
df_inodes() { df --output=itotal "$work/m" | tail -1 | tr -d ' '; }
check "df before set: 64 MiB" [ "$(df_size)" = $((64 << 20)) ]
bounded 30 "$ctl" set "$work/m" size=48M >"$work/out" 2>"$work/err"; rc=$?
check "set size=48M: exit $rc, quiet, df 48 MiB" eval '[ $rc -eq 0 ] && [ ! -s "$work/out" ] && [ ! -s "$work/err" ] && [ "$(df_size)" = $((48 << 20)) ]'
bounded 30 "$ctl" set "$work/m" size=128M >"$work/out" 2>"$work/err"; rc=$?
check "set size=128M: exit $rc, df 128 MiB, a note that the swap file holds less" eval '[ $rc -eq 0 ] && [ "$(df_size)" = $((128 << 20)) ] && grep -q "swap file" "$work/err"'
expect_exit "set size=4M: below use" 1 "Too small a size for current use" "$ctl" set "$work/m" size=4M
check "df after a refused set: still 128 MiB" [ "$(df_size)" = $((128 << 20)) ]
expect_exit "set size=1%,nr_inodes=2: refused whole" 1 "Too few inodes for current use" "$ctl" set "$work/m" size=1%,nr_inodes=2
check "df after a refused pair: size still 128 MiB, inodes 1000" eval '[ "$(df_size)" = $((128 << 20)) ] && [ "$(df_inodes)" = 1000 ]'
bounded 30 "$ctl" set "$work/m" nr_inodes=2k size=64m >/dev/null 2>&1; rc=$?
check "set nr_inodes=2k size=64m: exit $rc, df 2048 inodes, 64 MiB" eval '[ $rc -eq 0 ] && [ "$(df_inodes)" = 2048 ] && [ "$(df_size)" = $((64 << 20)) ]'
expect_exit "set memory=" 1 "memory= cannot change while mounted" "$ctl" set "$work/m" memory=8M
expect_exit "set bad size" 1 "not a size" "$ctl" set "$work/m" size=12q
expect_exit "set unknown option" 1 "not an option that can change" "$ctl" set "$work/m" mode=700
expect_exit "set: another user" 4 "permission denied" setpriv --reuid=65534 --regid=65534 --clear-groups "$ctl" set "$work/m" size=1G
check "df after the refusals: 64 MiB" [ "$(df_size)" = $((64 << 20)) ]
"$ctl" set "$work/m" >/dev/null 2>&1; rc=$?
check "set: no option is bad usage (exit $rc)" [ $rc -eq 2 ]
expect_exit "set: not a tmpfsd mount" 3 "not on a tmpfsd mount" "$ctl" set "$work" size=1G

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
expect_exit "where: daemon gone" 5 "daemon of this mount is gone" "$ctl" where "$work/m/f"
expect_exit "set: daemon gone" 5 "daemon of this mount is gone" "$ctl" set "$work/m" size=1G
umount -l "$work/m"

echo "tmpfsctl: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
