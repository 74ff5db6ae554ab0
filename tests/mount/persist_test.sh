#!/usr/bin/env bash
# tests/mount/persist_test.sh TMPFSD: --persist DIR keeps the file system
# across a stop and a start (issue 32). A tree with one of everything
# (data larger than --memory, a sparse file, hard links, symlinks, a fifo,
# xattrs, an ACL, an immutable file, set times and owners) is written, and
# its manifest taken (stat fields to the nanosecond and inode numbers,
# sha256 of every file, xattrs, lsattr); the daemon stops (SIGTERM, then
# umount(8) with an immediate new start, which must wait for the old
# daemon's save); every start must show the same manifest. Then: a change
# followed by kill -9 restores the last clean image (the change is gone),
# and so does a kill -9 in the middle of a save;
# a second daemon on the same DIR does not mount while the first holds it;
# an image with one byte changed is refused with the reason and nothing is
# mounted. With --persist-key the image is sealed: no plaintext in it, and
# without its key, with another key, altered or cut, it is refused.
set -euo pipefail
bin=$(realpath "$1")
source "$(dirname "$0")/tmpfsd_lib.sh"
tmpfsd_scratch persist mnt mnt2
mnt=$work/mnt
state=$work/state
opts=(--memory 8M --swap 256M --swap-dir "$swapdir" --persist "$state" -o size=256M)
fail=0

manifest() { tmpfsd_manifest "$mnt"; }

tmpfsd_start "$bin" "$work/daemon.1.log" "$mnt" "${opts[@]}" || exit 1
tmpfsd_tree "$mnt"                    # tmpfsd_lib.sh: one of everything
setfacl -m u:1234:rx "$mnt/dir/sub"
chattr +i "$mnt/dir/sub/empty"
manifest > /dev/null             # reads every file: atimes move once (relatime)
manifest > "$work/m.before"

tmpfsd_stop || fail=1   # SIGTERM: a clean stop saves
grep -q 'persist: saved' "$work/daemon.1.log" || { echo "FAIL: no save in the log"; fail=1; }
tmpfsd_start "$bin" "$work/daemon.2.log" "$mnt" "${opts[@]}" || exit 1
grep -q 'persist: restored' "$work/daemon.2.log" || { echo "FAIL: no restore in the log"; fail=1; }
# tmpfsctl stats shows the image restored: its size, and an age.
ctl=$(dirname "$bin")/../tools/tmpfsctl
if [ -x "$ctl" ]; then
  img=$("$ctl" stats "$mnt" | awk '$1 == "persist_image_bytes" { print $2 }')
  [ "$img" = "$(stat -c %s "$state/image")" ] ||
    { echo "FAIL: tmpfsctl stats: persist_image_bytes '$img', the image has $(stat -c %s "$state/image")"; fail=1; }
  "$ctl" stats "$mnt" | awk '$1 == "persist_image_age_seconds" && $2 ~ /^[0-9]+$/ { ok = 1 } END { exit !ok }' ||
    { echo "FAIL: tmpfsctl stats: no persist_image_age_seconds"; fail=1; }
fi
manifest > "$work/m.after"
if ! diff "$work/m.before" "$work/m.after" > "$work/m.diff"; then
  echo "FAIL: after SIGTERM and a start, the tree differs:"; head -40 "$work/m.diff"; fail=1
fi
echo "stop and start: $(wc -l < "$work/m.before") manifest lines, $(grep -c '' "$work/m.diff" || true) differing"
# Reads that reach this daemon (the kernel's cache is cold) may move atimes
# once more: the reference for what it saves is taken after them.
manifest > /dev/null
manifest > "$work/m.saved"

# umount(8), then a start at once: the old daemon may still be saving.
umount "$mnt"
tmpfsd_mnt=
tmpfsd_start "$bin" "$work/daemon.3.log" "$mnt" "${opts[@]}" || exit 1
grep -q 'persist: saved' "$work/daemon.2.log" || { echo "FAIL: the new daemon started before the old one saved"; fail=1; }
manifest > "$work/m.cycle"
diff -q "$work/m.saved" "$work/m.cycle" > /dev/null ||
  { echo "FAIL: after umount and mount, the tree differs:"; diff "$work/m.saved" "$work/m.cycle" | head -20; fail=1; }

# A second daemon on the same DIR waits (and so does not mount); it is
# stopped by its pid while it waits.
"$bin" --log-file "$work/daemon.second.log" --pid-file "$work/second.pid" "${opts[@]}" \
  "$work/mnt2" > /dev/null 2>&1 &
starter=$!
sleep 2
second=$(cat "$work/second.pid" 2>/dev/null || true)
if mountpoint -q "$work/mnt2"; then
  echo "FAIL: a second daemon mounted with the same --persist DIR"; fail=1
fi
grep -q 'waiting for the tmpfsd that holds' "$work/daemon.second.log" ||
  { echo "FAIL: the second daemon did not say it waits for the lock"; fail=1; }
[ -n "$second" ] && kill -KILL "$second" 2>/dev/null
wait "$starter" 2>/dev/null || true
mountpoint -q "$work/mnt2" && umount -l "$work/mnt2"

# A change, then kill -9: the next start has the last clean image.
echo changed > "$mnt/after-image"
tmpfsd_kill9
tmpfsd_start "$bin" "$work/daemon.4.log" "$mnt" "${opts[@]}" || exit 1
[ -e "$mnt/after-image" ] && { echo "FAIL: a change after the last image came back after kill -9"; fail=1; }
manifest > "$work/m.killed"
diff -q "$work/m.saved" "$work/m.killed" > /dev/null ||
  { echo "FAIL: after kill -9 the last clean image was not restored whole"; fail=1; }

# kill -9 in the middle of a save (160 MiB to write, killed once image.new
# has bytes): the next start has the previous image, whole.
head -c $((160 << 20)) /dev/urandom > "$mnt/mid-save"
image_before=$(stat -c '%i %Y' "$state/image")
kill -TERM "$tmpfsd_pid"
for _ in $(seq 2000); do
  [ -s "$state/image.new" ] && break
  sleep 0.005
done
tmpfsd_kill9
# (A lazy save writes little and may end before kill -9 lands; the log
# line may then be lost with the process: the image's rename says it.)
if grep -q 'persist: saved' "$work/daemon.4.log" ||
   [ "$(stat -c '%i %Y' "$state/image")" != "$image_before" ]; then
  echo "note: the save finished before kill -9 reached it; mid-save case not exercised"
else
  echo "killed mid-save with $(stat -c %s "$state/image.new" 2>/dev/null || echo 0) bytes of image.new written"
  tmpfsd_start "$bin" "$work/daemon.4b.log" "$mnt" "${opts[@]}" || exit 1
  [ -e "$mnt/mid-save" ] && { echo "FAIL: a half-saved image was restored"; fail=1; }
  manifest > "$work/m.midsave"
  diff -q "$work/m.saved" "$work/m.midsave" > /dev/null ||
    { echo "FAIL: after kill -9 mid-save the previous image was not restored whole"; fail=1; }
fi
tmpfsd_stop || fail=1

# One byte of the image changed: refused with the reason, nothing mounted.
size=$(stat -c %s "$state/image")
printf 'X' | dd of="$state/image" bs=1 seek=$((size / 2)) conv=notrunc status=none
if out=$("$bin" --log-file "$work/daemon.5.log" "${opts[@]}" "$mnt" 2>&1); then
  echo "FAIL: a damaged image was accepted"; tmpfsd_mnt=$mnt; fail=1
else
  echo "damaged image refused: $out"
  case $out in *"checksum mismatch"*) ;; *) echo "FAIL: the reason is not given"; fail=1 ;; esac
fi
mountpoint -q "$mnt" && { echo "FAIL: mounted from a damaged image"; umount -l "$mnt"; fail=1; }

# The data is not in the image but in DIR/swap (a lazy image), unless DIR
# cannot hold the swap file; then the unsealed image holds it as written
# (so the search below can find plaintext when it is there).
if [ -f "$state/swap" ]; then
  grep -q -a 'a line of text' "$state/image" && { echo "FAIL: data in the lazy image"; fail=1; }
else
  grep -q -a 'a line of text' "$state/image" || { echo "FAIL: no plaintext in the unsealed image"; fail=1; }
fi

# --persist-key: the image is sealed. It holds no plaintext, opens with its
# key only, and one changed byte or a cut is refused.
sstate=$work/sealed
head -c 32 /dev/urandom > "$work/key"
head -c 32 /dev/urandom > "$work/other-key"
chmod 600 "$work/key" "$work/other-key"
sopts=(--memory 8M --swap 64M --swap-dir "$swapdir" --persist "$sstate" -o size=64M)
marker="tmpfsd-persist-probe-$(od -An -tx8 -N16 /dev/urandom | tr -d ' \n')"
tmpfsd_start "$bin" "$work/daemon.s1.log" "$mnt" "${sopts[@]}" --persist-key "$work/key" || exit 1
head -c $((3 << 20)) < <(yes "$marker") > "$mnt/secret"
sum=$(sha256sum < "$mnt/secret")
tmpfsd_stop || fail=1
grep -q 'saved .*(sealed)' "$work/daemon.s1.log" || { echo "FAIL: the save does not say sealed"; fail=1; }
if grep -q -a -F -- "$marker" "$sstate/image"; then
  echo "FAIL: --persist-key: the plaintext is in the image"; fail=1
fi
if [ -f "$sstate/swap" ] && grep -q -a -F -- "$marker" "$sstate/swap"; then
  echo "FAIL: --persist-key: the plaintext is in the swap file"; fail=1
fi
tmpfsd_start "$bin" "$work/daemon.s2.log" "$mnt" "${sopts[@]}" --persist-key "$work/key" || exit 1
[ "$(sha256sum < "$mnt/secret")" = "$sum" ] || { echo "FAIL: the sealed image did not restore the data"; fail=1; }
tmpfsd_stop || fail=1
refused() {  # refused WHAT EXPECTED-TEXT ARGS...: the start fails with the text, nothing mounted
  local what=$1 text=$2 out
  shift 2
  if out=$("$bin" --log-file "$work/daemon.refused.log" "${sopts[@]}" "$@" "$mnt" 2>&1); then
    echo "FAIL: $what: accepted"; tmpfsd_mnt=$mnt; tmpfsd_stop; fail=1; return
  fi
  case $out in *"$text"*) echo "$what: refused: $out" ;; *) echo "FAIL: $what: the reason is not given: $out"; fail=1 ;; esac
  if mountpoint -q "$mnt"; then echo "FAIL: $what: mounted"; umount -l "$mnt"; fail=1; fi
}
refused "no key" "is sealed: start with its --persist-key"
refused "another key" "does not open" --persist-key "$work/other-key"
cp "$sstate/image" "$work/image.good"
size=$(stat -c %s "$sstate/image")
printf 'X' | dd of="$sstate/image" bs=1 seek=$((size / 2)) conv=notrunc status=none
refused "a changed byte" "does not open" --persist-key "$work/key"
head -c $((size / 2)) "$work/image.good" > "$sstate/image"
refused "half an image" "ends too soon" --persist-key "$work/key"

[ $fail -eq 0 ] && echo "persist: all checks passed"
exit $fail
