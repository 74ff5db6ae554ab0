#!/usr/bin/env bash
# finds_divergence.sh FSDIFF_BIN — proves fsdiff can fail, and fails only
# when it should:
#   kernel tmpfs vs kernel tmpfs          -> exit 0
#   kernel tmpfs vs a directory on /var/tmp (ext4) -> exit 1 with a report
#   --minimize on a deeper divergence, then --replay of the saved sequence
#   reproduces it (and the same sequence passes on tmpfs vs tmpfs).
# Needs root to mount; exits 77 (meson: skipped) otherwise.
set -u
bin=$1
[ "$(id -u)" -eq 0 ] || { echo "not root: skipping"; exit 77; }

work=$(mktemp -d) || exit 1
mnt_a=$work/a mnt_b=$work/b
mkdir "$mnt_a" "$mnt_b"
disk=$(mktemp -d /var/tmp/fsdiff-test.XXXXXX) || exit 1
mounted=()
cleanup() {
  local m i
  for m in "${mounted[@]}"; do
    # Another process briefly looking into the mount makes umount fail with
    # EBUSY; retry, then detach it lazily rather than leave it mounted.
    for i in 1 2 3 4 5; do umount "$m" 2>/dev/null && continue 2; sleep 0.3; done
    umount -l "$m"
  done
  rmdir "$mnt_a" "$mnt_b" 2>/dev/null
  rm -rf --one-file-system "$work" "$disk"
}
trap cleanup EXIT
for m in "$mnt_a" "$mnt_b"; do
  mount -t tmpfs -o size=256m fsdiff-test "$m" || { echo "cannot mount tmpfs: skipping"; exit 77; }
  mounted+=("$m")
  [ "$(stat -f -c %T "$m")" = tmpfs ] || { echo "FAIL: $m is not a tmpfs after mounting"; exit 1; }
done
if [ "$(stat -f -c %T "$disk")" = tmpfs ]; then
  echo "/var/tmp is tmpfs here; need a disk file system: skipping"
  exit 77
fi

fail() { echo "FAIL: $*"; exit 1; }

echo "== tmpfs vs tmpfs must agree"
"$bin" --seed 1 --ops 3000 "$mnt_a" "$mnt_b"; rc=$?
[ $rc -eq 0 ] || fail "tmpfs vs tmpfs: exit $rc, expected 0"

echo "== tmpfs vs $(stat -f -c %T "$disk") must diverge"
out=$("$bin" --seed 1 --ops 3000 "$mnt_a" "$disk"); rc=$?
echo "$out"
[ $rc -eq 1 ] || fail "tmpfs vs disk: exit $rc, expected 1"
grep -q '^DIVERGENCE seed=1 ' <<<"$out" || fail "no divergence report printed"

echo "== --minimize a deeper divergence, then --replay it"
# Directory sizes and st_blocks differ at once; ignoring them (and times,
# whose answers can depend on timing) makes the
# first divergence hundreds of ops deep, which is what minimizing is for.
seq_file=$work/min.ops
out=$("$bin" --seed 1 --ops 3000 --ignore dirsize,blocks,atime,mtime,ctime --minimize --minimize-budget 60 \
        --save "$seq_file" "$mnt_a" "$disk"); rc=$?
echo "$out"
[ $rc -eq 1 ] || fail "minimize run: exit $rc, expected 1"
[ -s "$seq_file" ] || fail "no sequence saved"
n=$(grep -vc '^#' "$seq_file")
deep=$(sed -n 's/^DIVERGENCE seed=1 proc=0 step=\([0-9]*\)$/\1/p' <<<"$out" | head -1)
echo "minimized to $n ops (first divergence was at step $deep)"
[ "$n" -lt "$((deep + 1))" ] || fail "minimize did not shrink the sequence"
cat "$seq_file"

out=$("$bin" --replay "$seq_file" --ignore dirsize,blocks,atime,mtime,ctime "$mnt_a" "$disk"); rc=$?
echo "$out"
[ $rc -eq 1 ] || fail "replay: exit $rc, expected 1"
grep -q '^DIVERGENCE replay=' <<<"$out" || fail "replay printed no divergence"

"$bin" --replay "$seq_file" --ignore dirsize,blocks,atime,mtime,ctime "$mnt_a" "$mnt_b"; rc=$?
[ $rc -eq 0 ] || fail "replay on tmpfs vs tmpfs: exit $rc, expected 0"

echo "== usage errors exit 2"
"$bin" --ops 10 "$mnt_a" >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "missing DIR_B: exit $rc, expected 2"
"$bin" --no-such-option "$mnt_a" "$mnt_b" >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] || fail "bad option: exit $rc, expected 2"
echo "PASS"
