#!/usr/bin/env bash
# tests/mount/compress_test.sh TMPFSD TMPFSCTL: the compressed pool
# (--compress) at mount level, daemonised. A working set of 4x --memory
# (24 MiB through --memory 6M): compressible text, a file of zeros, and
# random bytes, written and then read back byte for byte with O_DIRECT (so
# the daemon pages it in), for lz4 and zstd. tmpfsctl stats must show
# pages kept compressed, same-filled pages, random pages rejected, the full
# pool writing its oldest on, and reads served from the pool; the swap file
# must have taken less than the data written. tmpfsctl where must show the
# text and the zeros partly compressed ('C' or 'c' in the bar, "compressed" runs),
# the random bytes not.
# Then the pool alone (--swap 0): 24 MiB of log lines (4x --memory, about
# 6:1 with lz4) are held and read back byte for byte; random bytes past
# --memory get ENOSPC, and every byte written before reads back.
set -euo pipefail
bin=$(realpath "$1")
ctl=$(realpath "$2")
source "$(dirname "$0")/tmpfsd_lib.sh"
tmpfsd_scratch compress mnt
mnt=$work/mnt
fail=0
python3 - "$work" <<'PY'
import os, random, sys
d = sys.argv[1]
random.seed(7)
words = [''.join(random.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(random.randint(2, 9))) for _ in range(400)]
with open(os.path.join(d, 'text'), 'w') as f:
    n = 0
    while n < (14 << 20):
        line = ' '.join(random.choice(words) for _ in range(12)) + '\n'
        f.write(line); n += len(line)
with open(os.path.join(d, 'zeros'), 'wb') as f: f.write(bytes(4 << 20))
with open(os.path.join(d, 'random'), 'wb') as f: f.write(os.urandom(6 << 20))
with open(os.path.join(d, 'log'), 'w') as f:
    n = i = 0
    while n < (24 << 20):
        line = '2026-12-07 21:%02d:%02d INFO tmpfsd: request %08d served from the page cache\n' % (i // 60 % 60, i % 60, i)
        f.write(line); n += len(line); i += 1
PY
for codec in lz4 zstd; do
  tmpfsd_start "$bin" "$work/daemon.$codec.log" "$mnt" --memory 6M --swap 128M \
    --swap-dir "$swapdir" --compress "$codec" -o size=128M || exit 1
  grep -q "compressed pool: $codec" "$work/daemon.$codec.log" || { echo "FAIL: the log does not name $codec"; fail=1; }
  for f in text zeros random; do
    bounded 60 dd if="$work/$f" of="$mnt/$f" bs=1M status=none || { echo "FAIL: writing $f"; fail=1; }
  done
  for f in text zeros random; do
    bounded 30 "$ctl" where "$mnt/$f" > "$work/where.$f" || { echo "FAIL: tmpfsctl where $f"; fail=1; }
    echo "$codec: $(sed -n 2p "$work/where.$f")"
  done
  for f in text zeros; do
    grep -q '^  \[.*[Cc].*\] .* compressed$' "$work/where.$f" && grep -q ' compressed$' <(sed 1,2d "$work/where.$f") ||
      { echo "FAIL: $codec: tmpfsctl where shows no compressed pages of $f"; cat "$work/where.$f"; fail=1; }
  done
  ! grep -q ' compressed$' "$work/where.random" ||
    { echo "FAIL: $codec: tmpfsctl where shows random bytes compressed"; fail=1; }
  for f in text zeros random; do
    bounded 60 dd if="$mnt/$f" of="$work/back" bs=1M iflag=direct status=none || fail=1
    cmp -s "$work/$f" "$work/back" || { echo "FAIL: $codec: $f did not read back byte for byte"; fail=1; }
  done
  bounded 30 "$ctl" stats "$mnt" > "$work/stats" || { echo "FAIL: tmpfsctl stats"; fail=1; }
  stat_of() { awk -v k="$1" '$1 == k || $1 == k":" { print $2 }' "$work/stats"; }
  echo "$codec: $(for k in zpool_pages zpool_bytes zpool_frames zpool_same_filled zpool_stored zpool_rejects zpool_full zpool_writebacks zpool_loads swap_bytes_written; do printf '%s=%s ' $k "$(stat_of $k)"; done)"
  for k in zpool_stored zpool_same_filled zpool_rejects zpool_full zpool_writebacks zpool_loads; do
    [ "$(stat_of $k)" -gt 0 ] || { echo "FAIL: $codec: $k is 0"; fail=1; }
  done
  [ "$(stat_of swap_bytes_written)" -lt $((24 << 20)) ] ||
    { echo "FAIL: $codec: the swap file took all the data"; fail=1; }
  # --compress-pool: 90 % by default, but the page cache keeps a quarter of
  # a --memory this small.
  frames_max=$(( (6 << 20) / 4096 * 3 / 4 ))
  [ "$(stat_of zpool_frames)" -le "$frames_max" ] || { echo "FAIL: the pool holds more than its share"; fail=1; }
  tmpfsd_stop || fail=1
done

tmpfsd_start "$bin" "$work/daemon.alone.log" "$mnt" --memory 6M --swap 0 --compress lz4 \
  -o size=128M || exit 1
grep -q "no swap file: the pool alone" "$work/daemon.alone.log" || { echo "FAIL: the log does not say the pool is alone"; fail=1; }
bounded 60 dd if="$work/log" of="$mnt/log" bs=1M status=none || { echo "FAIL: alone: writing 4x --memory of log lines"; fail=1; }
bounded 60 dd if="$mnt/log" of="$work/back" bs=1M iflag=direct status=none || fail=1
cmp -s "$work/log" "$work/back" || { echo "FAIL: alone: the log lines did not read back byte for byte"; fail=1; }
bounded 30 "$ctl" where "$mnt/log" > "$work/where.alone" || fail=1
echo "alone: $(sed -n 2p "$work/where.alone")"
grep -q ' compressed$' <(sed 1,2d "$work/where.alone") || { echo "FAIL: alone: no compressed pages"; fail=1; }
if bounded 60 dd if="$work/random" of="$mnt/random" bs=64k status=none 2> "$work/dd.err"; then
  echo "FAIL: alone: 6 MiB of random bytes past --memory were taken"; fail=1
fi
grep -q "No space left on device" "$work/dd.err" || { echo "FAIL: alone: not ENOSPC: $(cat "$work/dd.err")"; fail=1; }
held=$(stat -c %s "$mnt/random")
echo "alone: random bytes taken before ENOSPC: $held"
bounded 60 dd if="$mnt/random" of="$work/back" bs=64k iflag=direct status=none || fail=1
cmp -s -n "$held" "$work/random" "$work/back" && [ "$(stat -c %s "$work/back")" -eq "$held" ] ||
  { echo "FAIL: alone: the random bytes taken did not read back"; fail=1; }
bounded 60 dd if="$mnt/log" of="$work/back" bs=1M iflag=direct status=none || fail=1
cmp -s "$work/log" "$work/back" || { echo "FAIL: alone: the log lines changed after ENOSPC"; fail=1; }
bounded 30 "$ctl" stats "$mnt" > "$work/stats" || fail=1
echo "alone: $(for k in pages_allocated zpool_pages zpool_bytes zpool_frames zpool_full zpool_rejects writeback_errors; do printf '%s=%s ' $k "$(awk -v k=$k '$1 == k { print $2 }' "$work/stats")"; done)"
tmpfsd_stop || fail=1
[ $fail -eq 0 ] && echo "compress: all checks passed"
exit $fail
