#!/usr/bin/env bash
# fsdiff_ci.sh FSDIFF_BIN DIR_A DIR_B [budget-scale]
#
# The differential part of the mount tests: DIR_A is a reference file system
# (kernel tmpfs), DIR_B the one under test (a tmpfsd mount); both are mounted
# by the caller, and their contents are removed. Runs
#   - fsdiff, 20 seeds x 5,000 ops,
#   - fsdiff --procs 2, 20,000 ops per process,
#   - fsx, 100,000 ops on one file in DIR_B,
# prints one line per run, then exactly "fsdiff: N passed, N failed", and
# exits non-zero if any run failed. budget-scale (default 1) multiplies every
# op count, e.g. 0.1 for a quick pass. Seeds are fixed (FSDIFF_SEED, default
# 1, is the first), so a failure reproduces with the command it prints.
# Fields listed in tools/fsdiff-known-divergences.md can be skipped with
# FSDIFF_IGNORE (passed to --ignore). Each run is killed after FSDIFF_TIMEOUT
# seconds (default 600) and counts as failed.
set -u

if [ $# -lt 3 ] || [ $# -gt 4 ]; then
  echo "usage: $0 FSDIFF_BIN DIR_A DIR_B [budget-scale]" >&2
  exit 2
fi
bin=$1 dir_a=$2 dir_b=$3 scale=${4:-1}
seed0=${FSDIFF_SEED:-1}
ignore=${FSDIFF_IGNORE:-}
run_timeout=${FSDIFF_TIMEOUT:-600}
for d in "$dir_a" "$dir_b"; do
  [ -d "$d" ] || { echo "fsdiff_ci: $d is not a directory" >&2; exit 2; }
done
[ -x "$bin" ] || { echo "fsdiff_ci: $bin is not executable" >&2; exit 2; }

scaled() { awk -v n="$1" -v s="$scale" 'BEGIN { v = int(n * s); print (v < 1 ? 1 : v) }'; }
ops_seq=$(scaled 5000)
ops_par=$(scaled 20000)
ops_fsx=$(scaled 100000)
extra=()
[ -n "$ignore" ] && extra+=(--ignore "$ignore")
save_dir=${TMPDIR:-/tmp}

# bounded (tests/mount/tmpfsd_lib.sh): past the bound, the hang report of
# the daemon the caller named, then the kill.
source "$(cd "$(dirname "$0")" && pwd)/tmpfsd_lib.sh"
tmpfsd_pid=${FSDIFF_DAEMON_PID:-} tmpfsd_log=${FSDIFF_DAEMON_LOG:-}

passed=0 failed=0
start_all=$(date +%s.%N)

# run NAME SAVED CMD...: runs one check, prints one line, and on failure its
# output; if the failing run saved its op sequence (SAVED, or SAVED.pK for
# --procs), replays it once and says whether the divergence reproduces: one
# that does not is timing-dependent (a race, or a clock effect fsdiff does
# not yet tolerate), which is still a failure but calls for a different hunt.
run() {
  local name=$1 saved=$2; shift 2
  local t0 t1 out rc
  t0=$(date +%s.%N)
  # A hung file system must fail the run with evidence, not hang CI: past
  # the bound, the stacks and counters of the daemon under test
  # (FSDIFF_DAEMON_PID, FSDIFF_DAEMON_LOG) are printed before the kill.
  out=$(bounded "$run_timeout" "$@" 2>&1); rc=$?
  [ $rc -eq 124 ] && out="$out
fsdiff_ci: timed out after ${run_timeout}s (FSDIFF_TIMEOUT)"
  t1=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  if [ $rc -eq 0 ]; then
    passed=$((passed + 1))
    echo "fsdiff: PASS $name (${secs}s)"
  else
    failed=$((failed + 1))
    echo "fsdiff: FAIL $name (exit $rc, ${secs}s); reproduce: $*"
    printf '%s\n' "$out" | sed 's/^/    /' | head -80
    local f
    for f in "$saved" "$saved".p*; do
      [ -f "$f" ] || continue
      if "$bin" --replay "$f" "${extra[@]}" "$dir_a" "$dir_b" >/dev/null 2>&1; then
        echo "    replay of $f: does NOT reproduce (timing-dependent)"
      else
        echo "    replay of $f: reproduces; fsdiff --replay $f ${extra[*]} DIR_A DIR_B"
      fi
    done
  fi
}

for i in $(seq 0 19); do
  s=$((seed0 + i))
  f=$save_dir/fsdiff-ci-seed$s.ops
  rm -f "$f"
  run "seed=$s ops=$ops_seq" "$f" "$bin" --seed "$s" --ops "$ops_seq" "${extra[@]}" \
    --save "$f" "$dir_a" "$dir_b"
done
f=$save_dir/fsdiff-ci-procs.ops
rm -f "$f".p*
run "procs=2 seed=$seed0 ops=$ops_par" "$f" "$bin" --procs 2 --seed "$seed0" --ops "$ops_par" \
  "${extra[@]}" --save "$f" "$dir_a" "$dir_b"
run "fsx seed=$seed0 ops=$ops_fsx" "" "$bin" --fsx "$dir_b/fsdiff-fsx.file" --seed "$seed0" --ops "$ops_fsx" \
  "${extra[@]}"

end_all=$(date +%s.%N)
echo "fsdiff: total $(awk -v a="$start_all" -v b="$end_all" 'BEGIN { printf "%.1f", b - a }')s"
echo "fsdiff: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
