#!/usr/bin/env bash
# tests/mount/persist_lazy_test.sh TMPFSD: --persist DIR with the swap file
# kept as DIR/swap restores lazily (issue 32): a start binds every page to
# its slot and reads nothing (swap_ins 0, pages_swapped > 0 right after
# it), then the bytes, sizes and holes are those saved. Files are larger
# than --memory. Restored pages overwritten (whole pages and parts of
# pages, pushed out to swap) and then kill -9: the next start has the last
# clean image whole, and a clean stop after that saves the new state. Run
# with the swap sealed (the default) and with --seal off. Then a restart
# without unmounting after a lazy start, and kill -9 of the new daemon.
# Last, a byte changed in pages of the kept swap file: reads are the saved
# bytes or EIO.
set -euo pipefail
bin=$(realpath "$1")
source "$(dirname "$0")/tmpfsd_lib.sh"
tmpfsd_scratch persist-lazy mnt
mnt=$work/mnt
ctl=$(dirname "$bin")/../tools/tmpfsctl
fail=0

stat_of() { "$ctl" stats "$mnt" | awk -v k="$1" '$1 == k { print $2 }'; }
manifest() {  # contents, sizes, allocated blocks and the data map of every file
  (cd "$mnt" && for f in $(ls | LC_ALL=C sort); do
    stat -c '%n size=%s blocks=%b' -- "$f"
    sha256sum -- "$f"
    python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); off = 0; out = []
while True:
    try: d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError: break
    h = os.lseek(fd, d, os.SEEK_HOLE); out.append(f"{d}-{h}"); off = h
print("data", " ".join(out))' "$f"
  done)
}

for seal in on off; do
  state=$swapdir/state-$seal
  opts=(--memory 8M --swap 256M --swap-dir "$swapdir" --seal "$seal" --persist "$state" -o size=256M)
  tmpfsd_start "$bin" "$work/$seal.1.log" "$mnt" "${opts[@]}" || exit 1
  head -c $((40 << 20)) /dev/urandom > "$mnt/big"    # five times --memory
  printf 'head' > "$mnt/sparse"
  dd if=/dev/urandom of="$mnt/sparse" bs=4096 seek=1000 count=3 conv=notrunc status=none
  truncate -s 64M "$mnt/sparse"
  head -c 100000 < <(yes 'a line of text') > "$mnt/text"
  fallocate -l 1M "$mnt/falloc"
  manifest > "$work/m.1"
  tmpfsd_stop || fail=1
  grep -q 'the data stays in swap' "$work/$seal.1.log" ||
    { echo "FAIL [$seal]: the save did not keep the data in swap"; fail=1; }
  [ -f "$state/swap" ] || { echo "FAIL [$seal]: no $state/swap"; fail=1; }
  grep -q -a 'a line of text' "$state/image" && { echo "FAIL [$seal]: data in the lazy image"; fail=1; }

  tmpfsd_start "$bin" "$work/$seal.2.log" "$mnt" "${opts[@]}" || exit 1
  grep -q 'restored .*(lazy' "$work/$seal.2.log" || { echo "FAIL [$seal]: the start was not lazy"; fail=1; }
  ins=$(stat_of swap_ins) swapped=$(stat_of pages_swapped)
  echo "[$seal] right after the start: swap_ins=$ins pages_swapped=$swapped"
  [ "$ins" = 0 ] || { echo "FAIL [$seal]: the start read $ins pages"; fail=1; }
  [ "$swapped" -gt 10000 ] || { echo "FAIL [$seal]: only $swapped pages bound to slots"; fail=1; }
  manifest > "$work/m.2"
  diff "$work/m.1" "$work/m.2" > "$work/m.diff" ||
    { echo "FAIL [$seal]: after a lazy start the files differ:"; head -20 "$work/m.diff"; fail=1; }

  # Restored pages rewritten (whole pages, and bytes inside pages that are
  # read back and partly rewritten), pushed out by more data, then kill -9.
  dd if=/dev/urandom of="$mnt/big" bs=1M count=12 conv=notrunc status=none
  for off in 20000000 25000000 30000000 35000000; do
    printf 'partly' | dd of="$mnt/big" bs=1 seek=$off conv=notrunc status=none
  done
  printf 'X' | dd of="$mnt/sparse" bs=1 seek=4097000 conv=notrunc status=none
  head -c $((40 << 20)) /dev/urandom > "$mnt/more"
  sync "$mnt/big"
  tmpfsd_kill9
  tmpfsd_start "$bin" "$work/$seal.3.log" "$mnt" "${opts[@]}" || exit 1
  manifest > "$work/m.3"
  diff "$work/m.1" "$work/m.3" > "$work/m.diff" ||
    { echo "FAIL [$seal]: after kill -9 the last clean image was not restored whole:"; head -20 "$work/m.diff"; fail=1; }

  # A change after that start, a clean stop: the next start has it.
  printf 'partly' | dd of="$mnt/big" bs=1 seek=1000 conv=notrunc status=none
  dd if=/dev/urandom of="$mnt/big" bs=1M seek=30 count=4 conv=notrunc status=none
  manifest > "$work/m.4"
  tmpfsd_stop || fail=1
  tmpfsd_start "$bin" "$work/$seal.5.log" "$mnt" "${opts[@]}" || exit 1
  manifest > "$work/m.5"
  diff "$work/m.4" "$work/m.5" > "$work/m.diff" ||
    { echo "FAIL [$seal]: a clean stop after a crash-restored start lost changes:"; head -20 "$work/m.diff"; fail=1; }
  cp "$work/m.5" "$work/m.5.$seal"
  tmpfsd_stop || fail=1
  echo "[$seal] swap file $(du -k "$state/swap" | cut -f1) KiB used, image $(stat -c %s "$state/image") bytes"
done

# Restart without unmounting after a lazy start: the new daemon has the
# bytes (the live state carries them); kill -9 of it leaves the last
# clean image (state-off's, saved by the loop's last stop) whole.
state=$swapdir/state-off
opts=(--transport dev --memory 8M --swap 256M --swap-dir "$swapdir" --seal off --persist "$state" -o size=256M)  # restart: not over the rings
tmpfsd_start "$bin" "$work/r.1.log" "$mnt" "${opts[@]}" || exit 1
dd if=/dev/urandom of="$mnt/big" bs=1M count=3 seek=5 conv=notrunc status=none
sum=$(sha256sum < "$mnt/big")
"$ctl" restart "$mnt" > /dev/null || { echo "FAIL: tmpfsctl restart after a lazy start"; fail=1; }
tmpfsd_pid=$(cat "$work/r.1.log.pid")
[ "$(sha256sum < "$mnt/big")" = "$sum" ] || { echo "FAIL: after a restart the bytes differ"; fail=1; }
dd if=/dev/urandom of="$mnt/big" bs=1M count=3 seek=20 conv=notrunc status=none
tmpfsd_kill9
tmpfsd_start "$bin" "$work/r.2.log" "$mnt" "${opts[@]}" || exit 1
manifest > "$work/m.r"
diff "$work/m.5" "$work/m.r" > "$work/m.diff" ||
  { echo "FAIL: kill -9 after a restart: the last clean image was not restored whole:"; head -20 "$work/m.diff"; fail=1; }
tmpfsd_stop || fail=1

# Damaged pages in the kept swap file: one byte changed in 16 pages spread
# over its data. The start binds them as it binds any; a read of a file
# then gives its saved bytes or EIO, never other bytes, and some read is EIO.
for seal in on off; do
  state=$swapdir/state-$seal
  python3 - "$state/swap" <<'PYEOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
extents, off = [], 0
while True:
    try: d = os.lseek(fd, off, os.SEEK_DATA)
    except OSError: break
    h = os.lseek(fd, d, os.SEEK_HOLE); extents.append((d, h)); off = h
pages = [p for d, h in extents for p in range(d // 4096, h // 4096)]
for p in pages[len(pages) // 32 :: max(1, len(pages) // 16)][:16]:
    b = os.pread(fd, 1, p * 4096 + 2000)
    os.pwrite(fd, bytes([b[0] ^ 0x5A]), p * 4096 + 2000)
os.close(fd)
PYEOF
  opts=(--memory 8M --swap 256M --swap-dir "$swapdir" --seal "$seal" --persist "$state" -o size=256M)
  if ! tmpfsd_start "$bin" "$work/d.$seal.log" "$mnt" "${opts[@]}" > "$work/d.out"; then
    echo "FAIL [$seal]: damaged pages in the swap file stopped the start: $(head -1 "$work/d.out")"; fail=1
    continue
  fi
  out=$(cd "$mnt" && python3 - "$work/m.5.$seal" <<'PYEOF'
import errno, hashlib, sys
want = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) == 2 and len(parts[0]) == 64:
        want[parts[1]] = parts[0]
eio = wrong = ok = 0
for name, digest in sorted(want.items()):
    try:
        with open(name, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        if e.errno != errno.EIO: raise
        eio += 1
        continue
    if got == digest: ok += 1
    else: wrong += 1; print("wrong bytes in", name)
print(f"{ok} whole, {eio} EIO, {wrong} with other bytes")
PYEOF
  )
  echo "[$seal] damaged swap file: $out"
  case $out in
    *", 0 with other bytes") ;;
    *) echo "FAIL [$seal]: a damaged page read as other bytes"; fail=1 ;;
  esac
  case $out in *" 0 EIO,"*) echo "FAIL [$seal]: no read saw the damage"; fail=1 ;; esac
  tmpfsd_stop || fail=1
done

[ $fail -eq 0 ] && echo "persist_lazy: all checks passed"
exit $fail
