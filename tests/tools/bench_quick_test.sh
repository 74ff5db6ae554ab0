#!/usr/bin/env bash
# bench_quick_test.sh TMPFSD TMPFSCTL: tools/bench --quick produces every
# row of its table with a figure on both sides (kernel tmpfs and tmpfsd).
# The figures themselves are not judged: CI machines differ. Needs root.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp /tmp/tmpfsd-bench-quick.XXXXXX.json)
trap 'rm -f "$out"' EXIT
rc=0
TMPFSCTL_BIN=$2 "$src/tools/bench" --quick --tmpfsd "$1" --json "$out" || rc=$?
python3 - "$out" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
expected = ["a", "b1", "b2", "c1", "c2", "d1", "d2", "e-create", "e-stat", "e-unlink", "f-untar", "f-rm"]
got = [r["row"] for r in rows]
bad = [] if got == expected else [f"rows {got}, expected {expected}"]
for r in rows:
    for side in ("tmpfs", "tmpfsd"):
        v = r[side]
        if not isinstance(v, (int, float)) or not v > 0:
            bad.append(f"{r['row']}: no figure on {side}")
    if r["problems"]:
        bad.append(f"{r['row']}: {'; '.join(r['problems'])}")
for b in bad:
    print("FAIL:", b)
sys.exit(1 if bad else 0)
PY
[ "$rc" = 0 ] || { echo "FAIL: tools/bench exited $rc"; exit 1; }
echo "ok: every row has a figure on both sides"
