#!/usr/bin/env bash
# tests/mount/seal_test.sh TMPFSD: the swap file holds none of what was
# written through the mount (issue 17, sealed swap). A file of 24 MiB made
# of a random marker line goes through --memory 4M, so most of it must be
# in the swap file; the test reads the daemon's (nameless) swap file
# through /proc/PID/fd and searches it for the marker. With --seal on
# (the default) it must not be there; with --seal off it must be, which
# shows the search can fail. Both mounts read the file back byte for byte.
set -euo pipefail
bin=$(realpath "$1")
source "$(dirname "$0")/tmpfsd_lib.sh"
tmpfsd_scratch seal mnt
mnt=$work/mnt
marker="tmpfsd-seal-probe-$(od -An -tx8 -N16 /dev/urandom | tr -d ' \n')"
size=$((24 << 20))
fail=0

swap_file_of() {  # the daemon's descriptor of its swap file
  local fd
  for fd in /proc/"$tmpfsd_pid"/fd/*; do
    case $(readlink "$fd") in "$swapdir"/*) echo "$fd"; return 0 ;; esac
  done
  return 1
}

for seal in on off; do
  tmpfsd_start "$bin" "$work/daemon.$seal.log" "$mnt" --memory 4M --swap 64M \
    --swap-dir "$swapdir" --seal "$seal" -o size=64M || exit 1
  grep -q "swap: .*$([ $seal = on ] && echo '(O_DIRECT\|buffered), sealed' || echo 'not sealed')" \
    "$work/daemon.$seal.log" || { echo "FAIL: the log does not say seal $seal"; fail=1; }
  bounded 60 sh -c "yes '$marker' | head -c $size > '$mnt/f'" || exit 1
  f=$(swap_file_of) || { echo "FAIL: no swap file open in the daemon"; exit 1; }
  found=$(grep -a -c -F -- "$marker" "$f" || true)
  echo "seal $seal: marker lines in the swap file: $found"
  if [ "$seal" = on ] && [ "$found" -ne 0 ]; then
    echo "FAIL: --seal on: the plaintext is in the swap file"; fail=1
  fi
  if [ "$seal" = off ] && [ "$found" -eq 0 ]; then
    echo "FAIL: --seal off: the plaintext is not in the swap file (did nothing swap out?)"; fail=1
  fi
  # O_DIRECT: past the kernel's page cache, so the daemon swaps pages in.
  bounded 60 bash -c "dd if='$mnt/f' bs=1M iflag=direct status=none | cmp - <(yes '$marker' | head -c $size)" ||
    { echo "FAIL: seal $seal: the file does not read back"; fail=1; }
  tmpfsd_stop || fail=1
  # The daemon counts the swap-ins the read-back needed: proof it paged.
  ins=$(sed -n 's/.*swap-ins \([0-9]*\).*/\1/p' "$work/daemon.$seal.log" | tail -1)
  echo "seal $seal: swap-ins ${ins:-?}"
  [ "${ins:-0}" -gt 0 ] || { echo "FAIL: seal $seal: no swap-ins"; fail=1; }
  grep -q "seal does not open\|checksum mismatch" "$work/daemon.$seal.log" &&
    { echo "FAIL: seal $seal: verification failures in the log"; fail=1; }
done
[ $fail = 0 ] && echo "seal_test: ok"
exit $fail
