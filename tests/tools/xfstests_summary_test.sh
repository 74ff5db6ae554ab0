#!/usr/bin/env bash
# tools/xfstests counts from check's own lines: a test check lists under
# "Ran:" and also under "Not run:" or "Failures:" did not pass. The fixture
# is the check.out of a real run on tmpfsd (generic/001 passed, 008 and 009
# not run, 394 failed).
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
fixture=$top/tests/tools/xfstests-check.out
fails=0

# expect NAME WANT_STATUS WANT_OUTPUT ARGS...
expect() {
  local name=$1 want_rc=$2 want=$3; shift 3
  local got rc
  got=$("$top/tools/xfstests" "$@")
  rc=$?
  if [ "$got" != "$want" ] || [ "$rc" -ne "$want_rc" ]; then
    echo "FAIL $name: exit $rc (want $want_rc)"
    diff <(echo "$want") <(echo "$got")
    fails=$((fails + 1))
  else
    echo "ok   $name"
  fi
}

expect "a failure, two not run" 1 "xfstests: 1 passed, 1 failed, 2 not run
passed: generic/001
failed: generic/394
not run: generic/008 generic/009" --summary-only "$fixture"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The same run without the failure: passes, but not under --strict.
grep -v -e '^Failures:' -e '^Failed ' "$fixture" |
  sed 's/^Ran: .*/Ran: generic\/001 generic\/008 generic\/009/' > "$work/notrun.out"
notrun="xfstests: 1 passed, 0 failed, 2 not run
passed: generic/001
failed: 
not run: generic/008 generic/009"
expect "not run is no failure" 0 "$notrun" --summary-only "$work/notrun.out"
expect "not run fails --strict" 1 "$notrun" --strict --summary-only "$work/notrun.out"
# Nothing passed: a run that ran nothing is no success.
printf 'Ran: generic/008\nNot run: generic/008\n' > "$work/none.out"
expect "nothing passed" 1 "xfstests: 0 passed, 0 failed, 1 not run
passed: 
failed: 
not run: generic/008" --summary-only "$work/none.out"

[ "$fails" -eq 0 ]
